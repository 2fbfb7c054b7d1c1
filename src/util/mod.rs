//! Small helpers that every stage uses and that know nothing of images: digests, files that
//! appear whole or not at all, sorted host directory listings, memory statistics.
pub mod atomic;
pub mod cleanup;
pub mod digest;
pub mod guid;
pub mod host_dir;
pub mod memstat;
#[cfg(test)]
pub(crate) mod test_tools;
pub mod window;
