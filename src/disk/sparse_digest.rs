//! sha256 of a sparse file without reading its holes: data ranges are read, holes are fed
//! to the hasher from one zero buffer (the digest is that of the full file, zeros included).
//! On a 1.2 GB image with 30 MB of data this saves the kernel zero-filling 1.2 GB of reads.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const PIECE: usize = 1 << 20;

/// The sha256 of the file at `path` as lowercase hex, same as `sha256sum`.
pub fn sha256_sparse(path: &Path) -> Result<String> {
    let super::image::SparseFile { file, len, data } = super::image::SparseFile::open(path)?;
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; PIECE];
    let mut buf = vec![0u8; PIECE];
    let mut pos = 0u64;
    let feed_zeros = |hasher: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(PIECE as u64) as usize;
            hasher.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    for &(start, end) in &data {
        let (start, end) = (start.max(pos), end.min(len));
        if start >= end {
            continue;
        }
        feed_zeros(&mut hasher, start - pos);
        let mut at = start;
        while at < end {
            let k = (end - at).min(PIECE as u64) as usize;
            file.read_exact_at(&mut buf[..k], at)
                .with_context(|| format!("reading {}", path.display()))?;
            hasher.update(&buf[..k]);
            at += k as u64;
        }
        pos = end;
    }
    feed_zeros(&mut hasher, len - pos);
    Ok(hex::encode(hasher.finalize()))
}

/// [`sha256_sparse`] on another thread, so that it overlaps other work.
pub fn spawn_sha256_sparse(path: &Path) -> JoinHandle<Result<String>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || sha256_sparse(&path))
}

/// Waits for a digest started by [`spawn_sha256_sparse`].
pub fn join(handle: JoinHandle<Result<String>>) -> Result<String> {
    handle
        .join()
        .unwrap_or_else(|_| anyhow::bail!("the image digest thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn sparse_digest_equals_the_plain_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.img");
        let f = File::create(&p).unwrap();
        f.set_len(9 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&vec![7u8; 3 << 20], (2 << 20) + 5).unwrap();
        f.write_all_at(b"tail", (9 << 20) - 4).unwrap();
        drop(f);
        let want = crate::util::digest::sha256_file(&p).unwrap();
        assert_eq!(sha256_sparse(&p).unwrap(), want);
        assert_eq!(join(spawn_sha256_sparse(&p)).unwrap(), want);
        // All holes, and empty.
        let q = dir.path().join("h.img");
        File::create(&q).unwrap().set_len(5 << 20).unwrap();
        assert_eq!(
            sha256_sparse(&q).unwrap(),
            crate::util::digest::sha256_file(&q).unwrap()
        );
        let e = dir.path().join("e.img");
        File::create(&e).unwrap();
        assert_eq!(
            sha256_sparse(&e).unwrap(),
            crate::util::digest::sha256_file(&e).unwrap()
        );
        assert!(sha256_sparse(&dir.path().join("none")).is_err());
    }
}
