//! The Debian archive chain: APT sources, the signed `InRelease`, `Packages` indexes,
//! dependency resolution and `.deb` unpacking.

pub mod apt;
pub mod control;
pub mod version;

pub use control::{Dep, Package};
pub use version::Op;
pub use apt::apt_mirror;
