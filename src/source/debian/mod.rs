//! The Debian archive chain: APT sources, the signed `InRelease`, `Packages` indexes,
//! dependency resolution and `.deb` unpacking.

pub mod apt;
pub mod control;
pub mod release;
pub mod version;

pub use control::{Dep, Package};
pub use version::Op;
pub use apt::apt_mirror;

/// Helpers for tests that use the real archive through the build host's APT mirror.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;

    use crate::source::Cache;

    /// The host's mirror, or `None` (after saying why) when the host has none: such tests skip.
    pub fn mirror_or_skip(test: &str) -> Option<String> {
        match super::apt_mirror(Path::new("/")) {
            Ok(Some(m)) => Some(m),
            _ => {
                eprintln!("SKIPPED {test}: no Debian mirror in /etc/apt (configure one to run this test)");
                None
            }
        }
    }

    /// A cache kept between test runs so the archive is downloaded once per machine.
    pub fn shared_cache() -> Cache {
        Cache::new(std::env::temp_dir().join("edgeimg-test-cache"), false).unwrap()
    }
}
