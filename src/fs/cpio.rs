//! The initramfs: a "newc" cpio archive (the format the kernel unpacks), optionally compressed.
//!
//! Written by hand rather than with a crate: the format is a fixed ASCII header per entry, and
//! writing it ourselves keeps file-type bits, device numbers and inode numbers exactly as the
//! tree says (see FACTS.md on the `cpio` crate).

use std::io::{self, Write};

use thiserror::Error;

use crate::tree::{Kind, Tree, TreePath};

/// The magic of the "new ASCII" format without checksums.
const NEWC_MAGIC: &str = "070701";
/// The fixed part of a newc header: the magic plus 13 fields of 8 hex digits.
const HEADER_LEN: usize = 6 + 13 * 8;
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, Error)]
pub enum CpioError {
    #[error("{path}: {what} is {value}, more than a newc cpio archive can hold (4 GiB - 1)")]
    TooLarge {
        path: String,
        what: &'static str,
        value: u64,
    },
    #[error("{path}: the cpio format has no room for a socket; remove it from the initramfs tree")]
    Socket { path: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> CpioError {
    let context = context.into();
    move |source| CpioError::Io { context, source }
}

/// How the initramfs is compressed. The kernel's decompressors for all of them are built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    None,
}

/// Writes `tree` as a newc cpio archive into `out` and returns `out`, so that the caller can
/// finish a compressor wrapped around it.
///
/// Entries come in tree order (every directory before its content); the root is `.`, the
/// others are named without a leading `/`. Every entry gets `mtime` (deterministic output),
/// sequential inode numbers from 1, and its owner and mode from the tree.
pub fn write_newc<W: Write>(tree: &Tree, mut out: W, mtime: u64) -> Result<W, CpioError> {
    let mtime32 = fit_u32("/", "the mtime", mtime)?;
    for (ino, (path, entry)) in (1u32..).zip(tree.iter()) {
        let name = member_name(path);
        let (data, nlink, rdev): (Vec<u8>, u32, (u32, u32)) = match &entry.kind {
            Kind::Dir => (Vec::new(), 2, (0, 0)),
            Kind::File(content) => {
                let bytes = content
                    .read_all()
                    .map_err(io_err(format!("reading the content of {path}")))?;
                (bytes.to_vec(), 1, (0, 0))
            }
            Kind::Symlink(target) => (target.as_bytes().to_vec(), 1, (0, 0)),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                (Vec::new(), 1, (*major, *minor))
            }
            Kind::Fifo => (Vec::new(), 1, (0, 0)),
            Kind::Socket => {
                return Err(CpioError::Socket {
                    path: path.to_string(),
                })
            }
        };
        let header = Header {
            ino,
            mode: entry.st_mode(),
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime: mtime32,
            filesize: fit_u32(&path.to_string(), "the size", data.len() as u64)?,
            rdev,
        };
        write_entry(&mut out, &header, &name, &data)
            .map_err(io_err(format!("writing {path} into the cpio archive")))?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev: (0, 0),
    };
    write_entry(&mut out, &trailer, TRAILER, &[]).map_err(io_err("writing the cpio trailer"))?;
    Ok(out)
}

/// The whole initramfs in memory, compressed as asked. Deterministic: gzip carries no time
/// or name, xz uses a CRC32 check (the kernel's xz decoder knows no other), zstd is
/// single-threaded.
pub fn write_initramfs(
    tree: &Tree,
    compression: Compression,
    mtime: u64,
) -> Result<Vec<u8>, CpioError> {
    let finishing = |what: &str| io_err(format!("finishing the {what} stream of the initramfs"));
    match compression {
        Compression::None => write_newc(tree, Vec::new(), mtime),
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            write_newc(tree, gz, mtime)?
                .finish()
                .map_err(finishing("gzip"))
        }
        Compression::Zstd => {
            let enc = zstd::stream::Encoder::new(Vec::new(), 19)
                .map_err(io_err("starting the zstd encoder"))?;
            write_newc(tree, enc, mtime)?
                .finish()
                .map_err(finishing("zstd"))
        }
        Compression::Xz => {
            let stream =
                liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)
                    .map_err(|e| CpioError::Io {
                        context: "starting the xz encoder".into(),
                        source: e.into(),
                    })?;
            let enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            write_newc(tree, enc, mtime)?
                .finish()
                .map_err(finishing("xz"))
        }
    }
}

/// The variable fields of one newc header (the ones always zero are written as such).
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
}

fn write_entry<W: Write>(out: &mut W, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
    let namesize = name.len() as u32 + 1; // with its NUL
    let fields = [
        h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, 0,
        0, // devmajor/minor: of the archive's own fs
        h.rdev.0, h.rdev.1, namesize, 0, // check: unused in newc (070701)
    ];
    let mut header = String::with_capacity(HEADER_LEN);
    header.push_str(NEWC_MAGIC);
    for f in fields {
        header.push_str(&format!("{f:08X}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(HEADER_LEN + namesize as usize)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

/// Bytes of zero padding that bring `len` to a multiple of 4.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn fit_u32(path: &str, what: &'static str, value: u64) -> Result<u32, CpioError> {
    u32::try_from(value).map_err(|_| CpioError::TooLarge {
        path: path.to_string(),
        what,
        value,
    })
}

/// The name an entry gets in the archive (used by tests and by callers that list an initramfs).
pub fn member_name(path: &TreePath) -> String {
    if path.is_root() {
        ".".to_string()
    } else {
        path.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;
    use crate::util::test_tools::run_with_stdin;
    use std::process::Command;

    fn sample_tree() -> Tree {
        let mut t = Tree::new();
        t.add_dir("bin", 0o755).unwrap();
        t.add_file("bin/busybox", vec![0x7f, b'E', b'L', b'F', 1, 2, 3], 0o755)
            .unwrap();
        t.add_symlink("bin/sh", "busybox").unwrap();
        t.add_file("init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .unwrap();
        t.add_file("etc/empty", Vec::<u8>::new(), 0o600).unwrap();
        t.add_file("etc/odd", b"12345".to_vec(), 0o644).unwrap();
        let secret =
            Entry::file(crate::tree::Content::bytes(b"s3cret".to_vec()), 0o640).owned(1000, 42);
        t.insert(&TreePath::new("etc/secret").unwrap(), secret)
            .unwrap();
        let mut console = Entry::dir(0o600);
        console.kind = Kind::CharDevice { major: 5, minor: 1 };
        t.insert(&TreePath::new("dev/console").unwrap(), console)
            .unwrap();
        let mut sda = Entry::dir(0o660);
        sda.kind = Kind::BlockDevice {
            major: 8,
            minor: 300,
        };
        t.insert(&TreePath::new("dev/sdx").unwrap(), sda).unwrap();
        t
    }

    fn require(tool: &str) {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "this test needs `{tool}` on PATH (apt-get install cpio xz-utils zstd gzip)"
        );
    }

    #[test]
    fn headers_and_padding_are_aligned() {
        let archive = write_newc(&sample_tree(), Vec::new(), 1_700_000_000).unwrap();
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(archive.len() % 4, 0);
        // The first entry is the root, named ".".
        assert_eq!(&archive[HEADER_LEN..HEADER_LEN + 2], b".\0");
        let tail = String::from_utf8_lossy(&archive[archive.len() - 16..]).to_string();
        assert!(tail.contains(TRAILER), "{tail:?}");
    }

    #[test]
    fn gnu_cpio_lists_modes_owners_links_and_devices() {
        require("cpio");
        let archive = write_newc(&sample_tree(), Vec::new(), 1_700_000_000).unwrap();
        let out = run_with_stdin(
            Command::new("cpio").args(["-itv", "--numeric-uid-gid"]),
            &archive,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
                .unwrap_or_else(|| panic!("{name} missing in:\n{listing}"))
                .to_string()
        };
        assert!(line(".").starts_with("drwxr-xr-x"));
        assert!(line("bin/busybox").starts_with("-rwxr-xr-x"));
        assert!(
            line("bin/sh").starts_with("lrwxrwxrwx")
                && line("bin/sh").ends_with("bin/sh -> busybox")
        );
        let secret = line("etc/secret");
        assert!(secret.starts_with("-rw-r-----"), "{secret}");
        assert!(
            secret.contains(" 1000 ") && secret.contains(" 42 "),
            "{secret}"
        );
        let console = line("dev/console");
        assert!(
            console.starts_with("crw-------") && console.contains("5,"),
            "{console}"
        );
        let sdx = line("dev/sdx");
        assert!(
            sdx.starts_with("brw-rw----") && sdx.contains("8,") && sdx.contains("300"),
            "{sdx}"
        );
        assert_eq!(listing.lines().count(), sample_tree().len());
    }

    #[test]
    fn gnu_cpio_extracts_identical_bytes() {
        require("cpio");
        let tree = sample_tree();
        // Devices cannot be created without root: extract a tree without them.
        let mut plain = tree.clone();
        plain.retain(|_, e| !matches!(e.kind, Kind::CharDevice { .. } | Kind::BlockDevice { .. }));
        let archive = write_newc(&plain, Vec::new(), 1_700_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = run_with_stdin(
            Command::new("cpio")
                .args(["-idm", "--no-absolute-filenames", "--quiet"])
                .current_dir(dir.path()),
            &archive,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (path, entry) in plain.iter() {
            let host = dir.path().join(path.as_str());
            match &entry.kind {
                Kind::File(c) => assert_eq!(
                    std::fs::read(&host).unwrap(),
                    &c.read_all().unwrap()[..],
                    "{path}"
                ),
                Kind::Symlink(t) => {
                    assert_eq!(std::fs::read_link(&host).unwrap().to_str().unwrap(), t)
                }
                Kind::Dir => assert!(host.is_dir(), "{path}"),
                _ => {}
            }
        }
        let meta = std::fs::symlink_metadata(dir.path().join("init")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert_eq!(meta.mode() & 0o7777, 0o755);
    }

    #[test]
    fn compressed_forms_pass_their_tools_and_are_deterministic() {
        for (compression, tool, args) in [
            (Compression::Gzip, "gzip", vec!["-t"]),
            (Compression::Zstd, "zstd", vec!["-t", "-q"]),
            (Compression::Xz, "xz", vec!["-t"]),
        ] {
            require(tool);
            let a = write_initramfs(&sample_tree(), compression, 1_700_000_000).unwrap();
            let b = write_initramfs(&sample_tree(), compression, 1_700_000_000).unwrap();
            assert_eq!(a, b, "{compression:?} output differs between runs");
            let out = run_with_stdin(Command::new(tool).args(&args), &a);
            assert!(
                out.status.success(),
                "{tool} -t: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // xz: the kernel needs a CRC32 check (byte 7 of the stream header holds the check type).
        let xz = write_initramfs(&sample_tree(), Compression::Xz, 0).unwrap();
        assert_eq!(xz[7], 0x01, "xz check type must be CRC32");
        let raw = write_initramfs(&sample_tree(), Compression::None, 0).unwrap();
        assert_eq!(raw, write_newc(&sample_tree(), Vec::new(), 0).unwrap());
    }

    #[test]
    fn sockets_and_huge_mtimes_are_refused() {
        let mut t = Tree::new();
        let mut s = Entry::dir(0o755);
        s.kind = Kind::Socket;
        t.insert(&TreePath::new("run/sock").unwrap(), s).unwrap();
        assert!(matches!(
            write_newc(&t, Vec::new(), 0),
            Err(CpioError::Socket { .. })
        ));
        assert!(matches!(
            write_newc(&Tree::new(), Vec::new(), 1 << 40),
            Err(CpioError::TooLarge { .. })
        ));
    }
}
