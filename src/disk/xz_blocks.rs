//! Encoded xz blocks kept in the artifact cache (`<cache>/artifacts/xz/`), keyed by the sha256
//! of the block's input bytes and the encoder settings, so an unchanged region of an image is
//! not compressed twice. Checked against a recorded digest every time one is used.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One cached `.xz` block: the encoded bytes (header to check) and its index record.
pub struct CachedBlock {
    pub bytes: Vec<u8>,
    pub unpadded: u64,
    pub uncompressed: u64,
}

/// Encoded xz blocks, one file per input digest: the block bytes, then a 48-byte trailer
/// (sha256 of the block bytes, unpadded size, uncompressed size, little-endian).
pub struct BlockCache {
    dir: PathBuf,
}

const TRAILER: usize = 32 + 8 + 8;

impl BlockCache {
    pub fn new(dir: &Path) -> BlockCache {
        BlockCache {
            dir: dir.to_path_buf(),
        }
    }

    /// The key of a block: its input bytes and the encoder settings.
    pub fn key(&self, preset: u32, input: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(b"edgeimg xz block v2 (2 MiB dictionary)\0");
        h.update(preset.to_le_bytes());
        h.update((input.len() as u64).to_le_bytes());
        h.update(input);
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// The block stored under `key`, if present and intact.
    pub fn get(&self, key: &str) -> Option<CachedBlock> {
        let mut data = std::fs::read(self.path(key)).ok()?;
        if data.len() < TRAILER {
            return None;
        }
        let body = data.len() - TRAILER;
        let trailer = data[body..].to_vec();
        data.truncate(body);
        if Sha256::digest(&data)[..] != trailer[..32] {
            return None;
        }
        let unpadded = u64::from_le_bytes(trailer[32..40].try_into().ok()?);
        let uncompressed = u64::from_le_bytes(trailer[40..48].try_into().ok()?);
        if unpadded > data.len() as u64 {
            return None;
        }
        Some(CachedBlock {
            bytes: data,
            unpadded,
            uncompressed,
        })
    }

    /// Stores a block (best effort).
    pub fn put(&self, key: &str, bytes: &[u8], unpadded: u64, uncompressed: u64) {
        let digest = Sha256::digest(bytes);
        let _ = crate::util::atomic::store(
            &self.path(key),
            &[
                bytes,
                &digest,
                &unpadded.to_le_bytes(),
                &uncompressed.to_le_bytes(),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_a_damaged_one_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlockCache::new(dir.path());
        let key = c.key(6, b"input");
        assert_ne!(key, c.key(9, b"input"), "settings are part of the key");
        assert!(c.get(&key).is_none());
        c.put(&key, b"encoded-bytes", 10, 5);
        let b = c.get(&key).unwrap();
        assert_eq!(
            (b.bytes.as_slice(), b.unpadded, b.uncompressed),
            (&b"encoded-bytes"[..], 10, 5)
        );
        let path = c.path(&key);
        let mut data = std::fs::read(&path).unwrap();
        data[3] ^= 1;
        std::fs::write(&path, &data).unwrap();
        assert!(c.get(&key).is_none(), "a flipped bit is detected");
        std::fs::write(&path, b"short").unwrap();
        assert!(c.get(&key).is_none());
    }
}
