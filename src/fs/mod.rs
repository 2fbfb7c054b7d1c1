pub mod squashfs;
