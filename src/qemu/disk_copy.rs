//! The files one VM works on: a temporary directory, and the sparse copy of the user's image
//! grown to the size of a real card or disk (the first boot grows the data partition to fill
//! it). The image itself is never written.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::DiskInterface;

/// A work directory for one VM: the vars copy, and the disk copy for smoke.
pub(super) fn work_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("edgeimg-qemu-")
        .tempdir()
        .context("creating a temporary directory for QEMU")
}

/// The size of a test disk for `image`: `wanted`, at least the image's own size, and a power
/// of two for an SD card (QEMU's SD card model wants one).
pub(super) fn copy_size(image: &Path, disk: DiskInterface, wanted: u64) -> Result<u64> {
    let len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let size = wanted.max(len);
    Ok(if disk == DiskInterface::Sd {
        size.next_power_of_two()
    } else {
        size
    })
}

/// Copies `src` to `dst` keeping holes (SEEK_DATA/SEEK_HOLE), then grows `dst` to `size`.
pub(super) fn sparse_copy(src: &Path, dst: &Path, size: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::io::AsRawFd;
    let mut from =
        std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = from
        .metadata()
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let mut to =
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    to.set_len(len)
        .with_context(|| format!("sizing {}", dst.display()))?;
    let fd = from.as_raw_fd();
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while pos < len {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data (ENXIO): the rest is a hole
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let (start, end) = (data as u64, if hole < 0 { len } else { hole as u64 });
        from.seek(SeekFrom::Start(start))?;
        to.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let n = buf.len().min(left as usize);
            from.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", src.display()))?;
            to.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dst.display()))?;
            left -= n as u64;
        }
        pos = end;
    }
    if size > len {
        to.set_len(size)
            .with_context(|| format!("growing {}", dst.display()))?;
    }
    to.sync_all()
        .with_context(|| format!("writing {}", dst.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_holes_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        {
            let mut f = std::fs::File::create(&src).unwrap();
            f.set_len(8 << 20).unwrap();
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(4 << 20)).unwrap();
            f.write_all(b"payload").unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(b"head").unwrap();
        }
        let dst = dir.path().join("dst.img");
        sparse_copy(&src, &dst, 32 << 20).unwrap();
        let d = std::fs::read(&dst).unwrap();
        assert_eq!(d.len(), 32 << 20);
        assert_eq!(&d[..4], b"head");
        assert_eq!(&d[4 << 20..(4 << 20) + 7], b"payload");
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&dst).unwrap().blocks() * 512 < 4 << 20,
            "the copy is not sparse"
        );
    }

    #[test]
    fn a_test_disk_is_at_least_the_image_and_a_power_of_two_for_sd() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("in.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        assert_eq!(
            copy_size(&img, DiskInterface::Virtio, 5 << 20).unwrap(),
            5 << 20
        );
        assert_eq!(copy_size(&img, DiskInterface::Usb, 1).unwrap(), 3 << 20);
        assert_eq!(
            copy_size(&img, DiskInterface::Sd, 5 << 20).unwrap(),
            8 << 20
        );
        assert_eq!(copy_size(&img, DiskInterface::Sd, 1).unwrap(), 4 << 20);
    }
}
