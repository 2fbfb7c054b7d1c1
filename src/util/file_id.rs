//! What an opened file is, judged by `fstat` of the open descriptor and never by the text of
//! its path: `null` in /dev, a symlink, `../../dev/sda`, a hard link or a bind mount all reach
//! some object, and only that object tells what it is and whether two paths meet in it.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// The identity two paths share when they reach the same file: a device node by its device
/// number (two nodes of one disk are one disk), anything else by filesystem and inode (the
/// same on every hard link and bind mount of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileId {
    Device { rdev: u64 },
    Inode { dev: u64, ino: u64 },
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        let t = meta.file_type();
        if t.is_block_device() || t.is_char_device() {
            FileId::Device { rdev: meta.rdev() }
        } else {
            FileId::Inode {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        }
    }
}

/// The kind of file, as an error message names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Symlink,
}

impl FileKind {
    pub fn of(meta: &Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Symlink
        }
    }

    /// `a character device`, `a directory`, ...
    pub fn described(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::BlockDevice => "a block device",
            FileKind::CharDevice => "a character device",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::Symlink => "a symbolic link",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_identities_come_from_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&a, &hard).unwrap();
        let soft = dir.path().join("soft");
        std::os::unix::fs::symlink(&a, &soft).unwrap();
        let id = |p: &std::path::Path| FileId::of(&std::fs::metadata(p).unwrap());
        assert_eq!(id(&a), id(&hard));
        assert_eq!(id(&a), id(&soft));
        std::fs::write(dir.path().join("b"), b"x").unwrap();
        assert_ne!(id(&a), id(&dir.path().join("b")));
        let kind = |p: &str| FileKind::of(&std::fs::metadata(p).unwrap());
        assert_eq!(kind("/dev/null"), FileKind::CharDevice);
        assert_eq!(kind("/"), FileKind::Directory);
        assert_eq!(
            FileKind::of(&std::fs::symlink_metadata(&soft).unwrap()),
            FileKind::Symlink
        );
        assert!(matches!(
            id(std::path::Path::new("/dev/null")),
            FileId::Device { .. }
        ));
    }
}
