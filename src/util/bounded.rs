//! Reading a file a user named, within a size limit: the one way edgeimg reads its inputs
//! (node configs, cloud-configs, inventories, join tokens, SSH keys, Wi-Fi passphrases, k0s
//! configs, manifests, boards and profiles).
//!
//! The path must name a regular file: a device, FIFO, socket or directory is refused before
//! it is opened (opening a FIFO waits for a writer; a device may never end, /dev/zero grows a
//! buffer until memory runs out). The opened file is checked again with fstat, and a file
//! whose size is over the limit is refused from its size alone. Files that report a wrong
//! size (/proc) are still read at most `limit + 1` bytes.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why an input file was not read.
#[derive(Debug, Error)]
pub enum Cause {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is {0}, not a regular file")]
    NotAFile(&'static str),
    #[error("is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("is not UTF-8 text")]
    NotText,
}

/// A file that could not be read as an input: `{what} {path}: {cause}`.
#[derive(Debug, Error)]
pub struct InputError {
    /// What the file is for, e.g. "token file", "node config".
    pub what: String,
    pub path: PathBuf,
    pub cause: Cause,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.what,
            super::text::shown(&self.path.display().to_string(), 200),
            self.cause
        )
    }
}

impl InputError {
    /// Whether the file was not there (for a hint about relative paths).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.cause, Cause::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a file of this type is, in words ("a directory", "a FIFO", ...); `None` for a
/// regular file.
fn not_regular(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Reads the regular file at `path` (symlinks followed), at most `limit` bytes.
pub fn read_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, InputError> {
    read(path, limit).map_err(|cause| InputError {
        what: what.to_string(),
        path: path.to_path_buf(),
        cause,
    })
}

/// [`read_file`] for text: the content must be UTF-8.
pub fn read_text(path: &Path, limit: u64, what: &str) -> Result<String, InputError> {
    let data = read_file(path, limit, what)?;
    String::from_utf8(data).map_err(|_| InputError {
        what: what.to_string(),
        path: path.to_path_buf(),
        cause: Cause::NotText,
    })
}

fn read(path: &Path, limit: u64) -> Result<Vec<u8>, Cause> {
    // Judged before opening: opening is what blocks (FIFO) or acts (some devices).
    if let Some(kind) = not_regular(std::fs::metadata(path)?.file_type()) {
        return Err(Cause::NotAFile(kind));
    }
    // Non-blocking and no controlling terminal, in case the path was swapped for something
    // else since: fstat below judges what was opened.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if let Some(kind) = not_regular(meta.file_type()) {
        return Err(Cause::NotAFile(kind));
    }
    if meta.len() > limit {
        return Err(Cause::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut data = Vec::with_capacity(meta.len() as usize + 1);
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        // Grown since fstat, or a file that reports no size: at least this much.
        return Err(Cause::TooLarge {
            size: data.len() as u64,
            limit,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(path: &Path, limit: u64) -> String {
        read_file(path, limit, "test file").unwrap_err().to_string()
    }

    #[test]
    fn regular_files_are_read_whole_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_file(&p, 5, "f").unwrap(), b"12345");
        assert_eq!(read_text(&p, 100, "f").unwrap(), "12345");
        let e = err(&p, 4);
        assert!(
            e.contains("is 5 bytes, more than the limit of 4 bytes"),
            "{e}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_file(&link, 5, "f").unwrap(), b"12345");
        std::fs::write(&p, b"\xff").unwrap();
        let e = read_text(&p, 5, "f").unwrap_err().to_string();
        assert!(e.ends_with(": is not UTF-8 text"), "{e}");
    }

    #[test]
    fn what_is_not_a_regular_file_is_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        for (p, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/null"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            let e = err(p, 1 << 20);
            assert_eq!(
                e,
                format!("test file {}: is {kind}, not a regular file", p.display())
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let e = err(&dir.path().join("missing"), 1);
        assert!(e.contains("No such file"), "{e}");
        assert!(read_file(&dir.path().join("missing"), 1, "x")
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_huge_sparse_file_is_refused_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        File::create(&p).unwrap().set_len(1 << 40).unwrap();
        let started = std::time::Instant::now();
        let e = err(&p, 64 * 1024);
        assert!(
            e.contains(&format!(
                "is {} bytes, more than the limit of 65536",
                1u64 << 40
            )),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_file_reporting_no_size_is_still_bounded() {
        // /proc files report size 0; this one is larger than 16 bytes.
        let e = err(Path::new("/proc/self/maps"), 16);
        assert!(e.contains("is 17 bytes, more than the limit of 16"), "{e}");
    }
}
