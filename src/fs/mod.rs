//! Encoders from a [`crate::tree::Tree`] to the file system formats an image is made of: `fat`
//! (the boot partition, also read back and edited in place), `cpio` (the initramfs) and
//! `squashfs` (the read-only root). Each is checked in its tests by the standard reader of
//! its format.

pub mod cpio;
pub mod fat;
pub mod squashfs;
pub mod squashfs_bench;
pub mod squashfs_par;
pub mod verity;
