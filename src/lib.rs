//! edgeimg: builds bootable, immutable OS images for edge Kubernetes (k0s) nodes, without root.
//!
//! The modules follow the data of a build: `profile` reads boards, roles and node configs;
//! `plan` resolves them into one hashed plan; `source` fetches and verifies every input;
//! `tree` holds file trees in memory; `rootfs` assembles the trees; `fs` encodes them;
//! `disk` lays them out into an image; `build` runs the whole sequence.
pub mod tree;
pub mod progress;
pub mod node;
