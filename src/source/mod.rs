//! Every input of a build, fetched and verified: a content-addressed download cache
//! ([`cache`]), the signed Debian archive chain ([`debian`]), the k0s release asset ([`k0s`])
//! and the k0s airgap bundle ([`airgap`]).

pub mod airgap;
pub mod cache;
pub mod debian;
pub mod download;
pub mod k0s;
pub mod stamp;

pub use cache::{Cache, CacheError, FetchItem};
