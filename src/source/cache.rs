//! The content-addressed download cache.
//!
//! Verified files live at `<root>/sha256/<hex>`; a file only ever appears under that name after
//! its digest was checked, because it is written to a temporary file in the same directory and
//! renamed at the end. Things whose digest is not known in advance (a suite's `InRelease`) live
//! at `<root>/url/<sha256 of the URL>` and are checked by their own means (a signature).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::download;
use super::stamp::{Stamp, Stamps};
use crate::progress::Reporter;

/// How many downloads run at once in [`Cache::fetch_many`]: enough to hide latency, few enough
/// to be polite to a mirror.
const PARALLEL_FETCHES: usize = 4;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("{label}: not in the cache ({url}); run without --offline to download it")]
    Offline { label: String, url: String },
    #[error("{label}: sha256 mismatch for {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        label: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{label}: {url} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        label: String,
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{label}: {digest:?} is not a sha256 digest (64 hex digits expected)")]
    BadDigest { label: String, digest: String },
}

/// One file to fetch with [`Cache::fetch_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchItem {
    pub url: String,
    /// Expected sha256, lowercase hex.
    pub sha256: String,
    pub size: Option<u64>,
    pub label: String,
}

/// The download cache. Shared between threads by reference (`&Cache` is `Sync`).
pub struct Cache {
    root: PathBuf,
    offline: bool,
    /// Re-fetch URL-keyed entries (indexes) whatever their age (`--refresh`).
    refresh: bool,
    agent: ureq::Agent,
    /// Digests already re-hashed by this process: each cached input is checked once.
    verified: Mutex<HashSet<String>>,
    /// Verified-stamps of `sha256/` entries: an entry untouched since it was checked by an
    /// earlier build is not hashed again (see `stamp`).
    stamps: Stamps,
    downloads: AtomicUsize,
}

impl Cache {
    /// Opens (and creates) a cache rooted at `root`. With `offline`, nothing is downloaded and a
    /// missing entry is an error.
    pub fn new(root: PathBuf, offline: bool) -> Result<Cache> {
        for sub in ["sha256", "url"] {
            let d = root.join(sub);
            fs::create_dir_all(&d)
                .with_context(|| format!("creating cache directory {}", d.display()))?;
        }
        Ok(Cache {
            root: root.clone(),
            offline,
            refresh: false,
            agent: download::http_agent(),
            verified: Mutex::new(HashSet::new()),
            stamps: Stamps::new(root.join("stamps")),
            downloads: AtomicUsize::new(0),
        })
    }

    /// `$XDG_CACHE_HOME/edgeimg`, else `$HOME/.cache/edgeimg`, else `.cache/edgeimg` here.
    pub fn default_dir() -> PathBuf {
        let nonempty = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(x) = nonempty("XDG_CACHE_HOME") {
            return x.join("edgeimg");
        }
        match nonempty("HOME") {
            Some(h) => h.join(".cache").join("edgeimg"),
            None => PathBuf::from(".cache").join("edgeimg"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// With `refresh`, URL-keyed entries (a suite's `InRelease`) are fetched again whatever
    /// their age; verified content-addressed files are never fetched again (they cannot be
    /// stale). Ignored when offline.
    pub fn set_refresh(&mut self, refresh: bool) {
        self.refresh = refresh;
    }

    /// Number of fetches (network or local file) this cache has made so far.
    pub fn downloads_made(&self) -> usize {
        self.downloads.load(Ordering::Relaxed)
    }

    /// Where a verified file with this digest lives (whether or not it exists yet).
    pub fn path_for_digest(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// Returns the path of a file whose sha256 is `sha256`, downloading it from `url` if the
    /// cache does not hold it. A cached file is re-hashed once per process; a corrupt one is
    /// reported, deleted and fetched again.
    pub fn fetch_verified(
        &self,
        url: &str,
        sha256: &str,
        size: Option<u64>,
        label: &str,
        rep: &dyn Reporter,
    ) -> Result<PathBuf> {
        let digest = normalize_digest(sha256, label)?;
        let path = self.path_for_digest(&digest);
        if self.is_verified(&digest) && path.exists() {
            return Ok(path);
        }
        if path.exists() {
            if self.stamps.is_current(&digest, &path) {
                self.mark_verified(&digest);
                return Ok(path);
            }
            let before = Stamp::of(&path).ok();
            let actual = sha256_file(&path)?;
            if actual == digest {
                self.stamps.record(&digest, &path, before);
                self.mark_verified(&digest);
                return Ok(path);
            }
            self.stamps.forget(&digest);
            rep.warn(&format!(
                "{label}: cached file {} is corrupt (sha256 {actual}, expected {digest}); fetching it again",
                path.display()
            ));
            fs::remove_file(&path)
                .with_context(|| format!("removing corrupt cache entry {}", path.display()))?;
        }
        if self.offline {
            return Err(CacheError::Offline {
                label: label.into(),
                url: url.into(),
            }
            .into());
        }
        let dir = self.root.join("sha256");
        let (tmp, actual, len) = self.download_to_temp(url, &dir, label, rep)?;
        if let Some(expected) = size {
            if expected != len {
                return Err(CacheError::SizeMismatch {
                    label: label.into(),
                    url: url.into(),
                    expected,
                    actual: len,
                }
                .into());
            }
        }
        if actual != digest {
            // `tmp` is deleted when dropped: nothing is left in the cache.
            return Err(CacheError::DigestMismatch {
                label: label.into(),
                url: url.into(),
                expected: digest,
                actual,
            }
            .into());
        }
        persist(tmp, &path)?;
        self.stamps.record(&digest, &path, None);
        self.mark_verified(&digest);
        Ok(path)
    }

    /// Copies a file that has no pinned digest into the cache and returns its cached path and
    /// sha256 (used for `--k0s-binary`: the content used is the content recorded).
    pub fn import_unpinned(
        &self,
        url: &str,
        label: &str,
        rep: &dyn Reporter,
    ) -> Result<(PathBuf, String)> {
        // A local file imported before and untouched since (same size, times, inode) is not
        // copied and hashed again, provided its cache entry is untouched too.
        let local = Path::new(url);
        let source = (local.is_absolute() || local.is_file())
            .then(|| fs::canonicalize(local).ok())
            .flatten()
            .map(|p| {
                let name = format!(
                    "source-{}",
                    hex::encode(Sha256::digest(p.as_os_str().as_encoded_bytes()))
                );
                (p, name)
            });
        if let Some((src, name)) = &source {
            if let Some(digest) = self.stamps.source_digest(name, src) {
                let path = self.path_for_digest(&digest);
                if self.stamps.is_current(&digest, &path) {
                    self.mark_verified(&digest);
                    return Ok((path, digest));
                }
            }
        }
        let before = source.as_ref().and_then(|(src, _)| Stamp::of(src).ok());
        let dir = self.root.join("sha256");
        let (tmp, digest, _) = self.download_to_temp(url, &dir, label, rep)?;
        let path = self.path_for_digest(&digest);
        persist(tmp, &path)?;
        self.stamps.record(&digest, &path, None);
        if let Some((src, name)) = &source {
            self.stamps.record_source(name, &digest, src, before);
        }
        self.mark_verified(&digest);
        Ok((path, digest))
    }

    /// Fetches a file whose digest is not known in advance, keyed by its URL. A cached copy is
    /// reused when it is younger than `max_age` (`None`: always), or always when offline. If a
    /// refresh fails but a stale copy exists, the stale copy is used with a warning: whatever
    /// uses it verifies it by other means (a signature).
    pub fn fetch_url(
        &self,
        url: &str,
        label: &str,
        max_age: Option<Duration>,
        rep: &dyn Reporter,
    ) -> Result<PathBuf> {
        let path = self
            .root
            .join("url")
            .join(hex::encode(Sha256::digest(url.as_bytes())));
        let age = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
        if let Some(age) = age {
            let fresh = !self.refresh && max_age.is_none_or(|max| age < max);
            if self.offline || fresh {
                return Ok(path);
            }
        } else if self.offline {
            return Err(CacheError::Offline {
                label: label.into(),
                url: url.into(),
            }
            .into());
        }
        let dir = self.root.join("url");
        match self.download_to_temp(url, &dir, label, rep) {
            Ok((tmp, _, _)) => {
                persist(tmp, &path)?;
                Ok(path)
            }
            Err(e) if age.is_some() => {
                rep.warn(&format!(
                    "{label}: could not refresh ({e:#}); using the cached copy"
                ));
                Ok(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches several files at once (a few threads); results are in the order of `items`.
    /// The first failure (in item order) is returned after all workers stop.
    pub fn fetch_many(&self, items: &[FetchItem], rep: &dyn Reporter) -> Result<Vec<PathBuf>> {
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Result<PathBuf>>>> =
            items.iter().map(|_| Mutex::new(None)).collect();
        let workers = PARALLEL_FETCHES.min(items.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(it) = items.get(i) else { break };
                    let r = self.fetch_verified(&it.url, &it.sha256, it.size, &it.label, rep);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| Err(anyhow::anyhow!("download worker stopped early")))
            })
            .collect()
    }

    fn is_verified(&self, digest: &str) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }

    fn mark_verified(&self, digest: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string());
    }

    /// Streams `url` into a new temporary file in `dir`, hashing on the way.
    fn download_to_temp(
        &self,
        url: &str,
        dir: &Path,
        label: &str,
        rep: &dyn Reporter,
    ) -> Result<(tempfile::NamedTempFile, String, u64)> {
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let (digest, len) = {
            let mut w = HashingWriter {
                inner: io::BufWriter::new(tmp.as_file()),
                hasher: Sha256::new(),
                len: 0,
            };
            download::copy_url(&self.agent, url, &mut w, label, rep)?;
            w.inner
                .flush()
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            (hex::encode(w.hasher.finalize()), w.len)
        };
        Ok((tmp, digest, len))
    }
}

fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file().sync_all().ok();
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("moving a download into {}", path.display()))?;
    Ok(())
}

/// Lowercases and checks a hex sha256 digest.
pub fn normalize_digest(sha256: &str, label: &str) -> Result<String> {
    let d = sha256.trim().to_ascii_lowercase();
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CacheError::BadDigest {
            label: label.into(),
            digest: sha256.into(),
        }
        .into());
    }
    Ok(d)
}

pub use crate::util::digest::sha256_file;

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use std::sync::atomic::AtomicUsize;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Records warnings so tests can check that corruption is reported.
    #[derive(Default)]
    struct Warnings(Mutex<Vec<String>>, AtomicUsize);
    impl Reporter for Warnings {
        fn step(&self, _: &str) {}
        fn task(&self, _: &str, _: u64) -> Box<dyn crate::progress::Task> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Silent.task("", 0)
        }
        fn warn(&self, m: &str) {
            self.0.lock().unwrap().push(m.to_string());
        }
    }

    fn setup(data: &[u8]) -> (tempfile::TempDir, PathBuf, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("input.bin");
        fs::write(&src, data).unwrap();
        let cache = Cache::new(dir.path().join("cache"), false).unwrap();
        (dir, src, cache)
    }

    #[test]
    fn local_file_is_verified_stored_and_reused() {
        let (_d, src, cache) = setup(b"hello");
        let url = format!("file://{}", src.display());
        let p = cache
            .fetch_verified(&url, &sha(b"hello"), Some(5), "hello", &Silent)
            .unwrap();
        assert_eq!(p, cache.root().join("sha256").join(sha(b"hello")));
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        fs::remove_file(&src).unwrap();
        let again = cache
            .fetch_verified(&url, &sha(b"hello").to_uppercase(), None, "hello", &Silent)
            .unwrap();
        assert_eq!(again, p);
        assert_eq!(cache.downloads_made(), 1);
        // A fresh Cache on the same root re-hashes, finds it good, and makes no download.
        let cache2 = Cache::new(cache.root().to_path_buf(), true).unwrap();
        cache2
            .fetch_verified(&url, &sha(b"hello"), None, "hello", &Silent)
            .unwrap();
        assert_eq!(cache2.downloads_made(), 0);
    }

    #[test]
    fn mismatch_is_an_error_and_leaves_nothing() {
        let (_d, src, cache) = setup(b"evil");
        let want = sha(b"good");
        let err = cache
            .fetch_verified(src.to_str().unwrap(), &want, None, "thing", &Silent)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&want) && msg.contains(&sha(b"evil")) && msg.contains("thing"),
            "{msg}"
        );
        let left: Vec<_> = fs::read_dir(cache.root().join("sha256")).unwrap().collect();
        assert!(left.is_empty(), "cache not empty: {left:?}");
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let (_d, src, cache) = setup(b"abc");
        let err = cache
            .fetch_verified(src.to_str().unwrap(), &sha(b"abc"), Some(4), "x", &Silent)
            .unwrap_err();
        assert!(err.to_string().contains("expected 4"), "{err}");
    }

    #[test]
    fn corrupt_entry_is_reported_and_refetched() {
        let (_d, src, cache) = setup(b"payload");
        let digest = sha(b"payload");
        fs::write(cache.path_for_digest(&digest), b"rotten").unwrap();
        let rep = Warnings::default();
        let p = cache
            .fetch_verified(src.to_str().unwrap(), &digest, None, "payload", &rep)
            .unwrap();
        assert_eq!(fs::read(p).unwrap(), b"payload");
        let w = rep.0.lock().unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("corrupt"), "{}", w[0]);
        assert_eq!(cache.downloads_made(), 1);
    }

    #[test]
    fn a_later_build_trusts_a_stamped_entry_but_not_a_rewritten_one() {
        let (_d, src, cache) = setup(b"payload");
        let digest = sha(b"payload");
        let url = src.to_str().unwrap().to_string();
        let p = cache
            .fetch_verified(&url, &digest, None, "payload", &Silent)
            .unwrap();
        assert!(cache.stamps.is_current(&digest, &p), "stamped when stored");
        // A later build (new Cache) takes the stamped entry without hashing it.
        let later = Cache::new(cache.root().to_path_buf(), true).unwrap();
        later
            .fetch_verified(&url, &digest, None, "payload", &Silent)
            .unwrap();
        assert_eq!(later.downloads_made(), 0);
        // Rewritten in place with the same size: the stamp no longer matches, the entry is
        // hashed, found corrupt, and fetched again.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, b"PAYLOAD").unwrap();
        let third = Cache::new(cache.root().to_path_buf(), false).unwrap();
        let rep = Warnings::default();
        third
            .fetch_verified(&url, &digest, None, "payload", &rep)
            .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"payload");
        assert!(rep.0.lock().unwrap()[0].contains("corrupt"));
        assert_eq!(third.downloads_made(), 1);
    }

    #[test]
    fn an_untouched_local_file_is_imported_once() {
        let (_d, src, cache) = setup(b"binary");
        let url = src.to_str().unwrap().to_string();
        let (p, digest) = cache.import_unpinned(&url, "k0s", &Silent).unwrap();
        assert_eq!(digest, sha(b"binary"));
        let later = Cache::new(cache.root().to_path_buf(), false).unwrap();
        assert_eq!(later.import_unpinned(&url, "k0s", &Silent).unwrap().0, p);
        assert_eq!(later.downloads_made(), 0, "not copied again");
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&src, b"BINARY").unwrap();
        let third = Cache::new(cache.root().to_path_buf(), false).unwrap();
        let (_, d3) = third.import_unpinned(&url, "k0s", &Silent).unwrap();
        assert_eq!(d3, sha(b"BINARY"), "a changed file is imported again");
        assert_eq!(third.downloads_made(), 1);
    }

    #[test]
    fn offline_missing_entry_says_what_to_do() {
        let (d, src, _) = setup(b"x");
        let cache = Cache::new(d.path().join("offline"), true).unwrap();
        let err = cache
            .fetch_verified(src.to_str().unwrap(), &sha(b"x"), None, "pkg foo", &Silent)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pkg foo") && msg.contains("run without --offline"),
            "{msg}"
        );
        // A corrupt entry offline is deleted and then reported as missing: never used.
        fs::write(cache.path_for_digest(&sha(b"x")), b"y").unwrap();
        assert!(cache
            .fetch_verified(src.to_str().unwrap(), &sha(b"x"), None, "pkg foo", &Silent)
            .is_err());
        assert!(!cache.path_for_digest(&sha(b"x")).exists());
    }

    #[test]
    fn url_entries_respect_max_age_and_offline() {
        let (d, src, cache) = setup(b"v1");
        let url = src.to_str().unwrap().to_string();
        let p = cache
            .fetch_url(&url, "rel", Some(Duration::from_secs(3600)), &Silent)
            .unwrap();
        fs::write(&src, b"v2").unwrap();
        cache
            .fetch_url(&url, "rel", Some(Duration::from_secs(3600)), &Silent)
            .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"v1", "young entry reused");
        cache
            .fetch_url(&url, "rel", Some(Duration::ZERO), &Silent)
            .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"v2", "old entry refreshed");
        assert_eq!(cache.downloads_made(), 2);
        let mut refreshing = Cache::new(cache.root().to_path_buf(), false).unwrap();
        refreshing.set_refresh(true);
        fs::write(&src, b"v3").unwrap();
        refreshing.fetch_url(&url, "rel", None, &Silent).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"v3", "--refresh re-downloads");
        let off = Cache::new(cache.root().to_path_buf(), true).unwrap();
        assert_eq!(
            off.fetch_url(&url, "rel", Some(Duration::ZERO), &Silent)
                .unwrap(),
            p
        );
        let other = d.path().join("nope");
        assert!(off
            .fetch_url(other.to_str().unwrap(), "rel", None, &Silent)
            .is_err());
    }

    #[test]
    fn fetch_many_keeps_order_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("c"), false).unwrap();
        let mut items = Vec::new();
        for i in 0..9u8 {
            let f = dir.path().join(format!("f{i}"));
            fs::write(&f, [i; 10]).unwrap();
            items.push(FetchItem {
                url: f.display().to_string(),
                sha256: sha(&[i; 10]),
                size: Some(10),
                label: format!("f{i}"),
            });
        }
        let paths = cache.fetch_many(&items, &Silent).unwrap();
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(fs::read(p).unwrap(), vec![i as u8; 10]);
        }
        items[4].sha256 = sha(b"other");
        let err = cache.fetch_many(&items, &Silent).unwrap_err();
        assert!(err.to_string().contains("f4"), "{err}");
    }

    #[test]
    fn bad_digest_strings_are_refused() {
        let (_d, src, cache) = setup(b"x");
        assert!(cache
            .fetch_verified(src.to_str().unwrap(), "abc", None, "x", &Silent)
            .is_err());
    }
}
