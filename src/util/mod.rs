//! Small helpers that every stage uses and that know nothing of images: digests, files that
//! appear whole or not at all, what an opened file is, input files read within a size limit,
//! user text made safe for a terminal, sorted host directory listings, memory statistics.
pub mod atomic;
pub mod bounded;
pub mod cleanup;
pub mod digest;
pub mod file_id;
pub mod guid;
pub mod host_dir;
pub mod memstat;
#[cfg(test)]
pub(crate) mod test_tools;
pub mod text;
pub mod version;
pub mod window;
