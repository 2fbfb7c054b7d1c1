//! edgeimg: builds bootable, immutable OS images for edge Kubernetes (k0s) nodes, without root.
//!
//! The modules are listed in the order the data flows through a build; a module may use only
//! those above it (`tests/layering.rs` keeps it so; `src/layering.rs` holds the table):
//!
//! - `util`, `progress`: small helpers every stage uses (digests, atomic files, the
//!   [`progress::Reporter`] through which work reports without printing).
//! - `tree`: file trees in memory (ownership, modes and device nodes live here, never on the
//!   host), and the scratch folder large files spill to.
//! - `node`: the node config (hostname, role, token, network, ...) and the device contract,
//!   the agreement between this build and the scripts that run on the device.
//! - `profile`: boards, the OS profile and roles (`boards/*.toml`, `profiles/*.toml`).
//! - `plan`: everything above resolved into one hashed, printable plan.
//! - `source`: downloads and verification (Debian's signed chain, k0s).
//! - `kmod`: the kernel modules a tree needs, with their dependency files.
//! - `rootfs`: the root, initramfs and common trees from packages, overlays and what
//!   maintainer scripts would have done.
//! - `fs`: encoders from a tree (squashfs, cpio, FAT, dm-verity).
//! - `disk`: partition tables, sparse images, xz, bmap, checksums.
//! - `efi`: PE images (Unified Kernel Images, Authenticode), Secure Boot keys.
//! - `boot`: one module per boot method (UEFI, Raspberry Pi firmware, network boot).
//! - `cache`: artifacts reused across builds (package closure, root and initramfs).
//! - `manifest`: the typed manifest every output folder carries, the SBOM, the Imager list.
//! - `build`: the build as numbered steps.
//! - `image`: personalizing and inspecting finished images and cards.
//! - `flash`: writing cards safely.
//! - `qemu`: booting images in QEMU and judging the console.
//! - `serve`: a small read-only HTTP server for network boot.
//! - `cli`, `commands`: the command line (clap types only) and one handler per command, the
//!   only place that prints or prompts.
pub mod boot;
pub mod build;
pub mod bundle;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod disk;
pub mod efi;
pub mod flash;
pub mod fs;
pub mod image;
pub mod kmod;
#[cfg(test)]
mod layering;
pub mod manifest;
pub mod node;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod rootfs;
pub mod serve;
pub mod source;
pub mod tree;
pub mod update;
pub mod util;
