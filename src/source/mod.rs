//! Every input of a build, fetched and verified: a content-addressed download cache
//! ([`cache`]), the signed Debian archive chain ([`debian`]) and the k0s release asset ([`k0s`]).

pub mod cache;
pub mod debian;
pub mod download;
pub mod k0s;
pub mod stamp;

pub use cache::{Cache, CacheError, FetchItem};
