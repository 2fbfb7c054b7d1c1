//! edgeimg: builds bootable, immutable OS images for edge Kubernetes (k0s) nodes, without root.
//!
//! The modules follow the data of a build: `profile` reads boards and roles and `node` the
//! node config; `plan` resolves them into one hashed plan; `source` fetches and verifies every
//! input; `tree` holds file trees in memory; `rootfs` assembles the trees from packages,
//! `overlay` and `postinst`; `kmod` picks kernel modules; `fs` encodes the trees; `disk` lays
//! them out into an image; `build` runs the whole sequence; `qemu` and `smoke` boot the result;
//! `cli` is the only place that prints.
pub mod artifact;
pub mod artifact_closure;
pub mod artifact_root;
pub mod build;
pub mod cli;
pub mod configure;
pub mod digest;
pub mod disk;
pub mod elf_deps;
pub mod flash;
pub mod fs;
pub mod host_dir;
pub mod inspect;
pub mod inventory;
pub mod kmod;
pub mod memstat;
pub mod node;
pub mod overlay;
pub mod overlay_guard;
pub mod plan;
pub mod postinst;
pub mod profile;
pub mod profile_check;
pub mod progress;
pub mod pxe;
pub mod qemu;
pub mod repro;
pub mod rootfs;
pub mod rpi;
pub mod sbom;
pub mod serve;
pub mod smoke;
pub mod source;
pub mod spill;
pub mod tree;
pub mod verity_root;
