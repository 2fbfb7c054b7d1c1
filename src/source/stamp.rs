//! Verified-stamps: a small record beside a content-addressed cache entry of the file's
//! size, mtime, ctime, inode and device at the moment its sha256 was checked. A later build
//! that finds the entry with the very same metadata skips hashing it again.
//!
//! Anything that writes to a file, replaces it or links it changes its ctime (which no
//! unprivileged call can set back), so an entry that was rewritten or swapped after it was
//! checked no longer matches its stamp and is hashed again. What a stamp does not catch is
//! damage below the filesystem (a medium flipping bits without a write); the root artifact
//! cache checks its own files on every use.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The metadata a stamp records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

const VERSION: &str = "edgeimg-stamp-v1";

impl Stamp {
    /// The stamp of the file at `path` now (not following symlinks: a cache entry is a file).
    pub fn of(path: &Path) -> io::Result<Stamp> {
        let m = fs::symlink_metadata(path)?;
        if !m.file_type().is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(Stamp {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        })
    }

    fn render(&self, digest: &str) -> String {
        format!(
            "{VERSION} {digest} {} {} {} {} {}\n",
            self.size, self.mtime_ns, self.ctime_ns, self.ino, self.dev
        )
    }

    /// The digest and stamp a record holds.
    fn parse(text: &str) -> Option<(String, Stamp)> {
        let f: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        if f.len() != 7 || f[0] != VERSION {
            return None;
        }
        let stamp = Stamp {
            size: f[2].parse().ok()?,
            mtime_ns: f[3].parse().ok()?,
            ctime_ns: f[4].parse().ok()?,
            ino: f[5].parse().ok()?,
            dev: f[6].parse().ok()?,
        };
        Some((f[1].to_string(), stamp))
    }
}

/// Stamps of the entries of one cache directory, kept in `dir`.
pub struct Stamps {
    dir: PathBuf,
}

impl Stamps {
    pub fn new(dir: PathBuf) -> Stamps {
        Stamps { dir }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest)
    }

    /// Whether `file` (the entry of `digest`) is exactly as it was when it was last checked.
    pub fn is_current(&self, digest: &str, file: &Path) -> bool {
        let Ok(text) = fs::read_to_string(self.path(digest)) else {
            return false;
        };
        match (Stamp::parse(&text), Stamp::of(file)) {
            (Some((d, recorded)), Ok(now)) => d == digest && recorded == now,
            _ => false,
        }
    }

    /// For a file outside the cache (`--k0s-binary`), recorded under `name`: the digest it
    /// had when it was last imported, if it is exactly as it was then.
    pub fn source_digest(&self, name: &str, file: &Path) -> Option<String> {
        let text = fs::read_to_string(self.path(name)).ok()?;
        let (digest, recorded) = Stamp::parse(&text)?;
        (Stamp::of(file).ok()? == recorded).then_some(digest)
    }

    /// Records that `file` (outside the cache, recorded under `name`) hashed to `digest`;
    /// nothing is recorded if it changed since `before` was taken.
    pub fn record_source(&self, name: &str, digest: &str, file: &Path, before: Option<Stamp>) {
        let Ok(now) = Stamp::of(file) else { return };
        if before != Some(now) {
            return;
        }
        let _ = crate::util::atomic::store(&self.path(name), &[now.render(digest).as_bytes()]);
    }

    /// Records that `file` was found to hash to `digest`; `before` is its stamp taken before
    /// hashing: if the file changed meanwhile, nothing is recorded. Best effort.
    pub fn record(&self, digest: &str, file: &Path, before: Option<Stamp>) {
        let Ok(now) = Stamp::of(file) else { return };
        if before.is_some_and(|b| b != now) {
            return;
        }
        let _ = crate::util::atomic::store(&self.path(digest), &[now.render(digest).as_bytes()]);
    }

    /// Forgets the stamp of `digest` (its entry is being removed).
    pub fn forget(&self, digest: &str) {
        let _ = fs::remove_file(self.path(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn setup() -> (tempfile::TempDir, Stamps, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let s = Stamps::new(dir.path().join("stamps"));
        let f = dir.path().join("entry");
        fs::write(&f, b"content").unwrap();
        (dir, s, f)
    }

    #[test]
    fn an_untouched_entry_matches_its_stamp() {
        let (_d, s, f) = setup();
        assert!(!s.is_current(D, &f), "no stamp yet");
        s.record(D, &f, Stamp::of(&f).ok());
        assert!(s.is_current(D, &f));
        assert!(!s.is_current(&D.replace('0', "1"), &f), "another digest");
        s.forget(D);
        assert!(!s.is_current(D, &f));
    }

    #[test]
    fn a_rewritten_entry_does_not_match_even_with_size_and_mtime_restored() {
        let (_d, s, f) = setup();
        s.record(D, &f, None);
        let before = fs::metadata(&f).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"CONTENT").unwrap(); // same size
                                            // Put the old mtime back, as a careless (or hostile) tool might: ctime still moves.
        let times = fs::FileTimes::new().set_modified(before.modified().unwrap());
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_times(times)
            .unwrap();
        assert_eq!(fs::metadata(&f).unwrap().len(), before.len());
        assert!(!s.is_current(D, &f));
    }

    #[test]
    fn a_replaced_or_linked_entry_does_not_match() {
        let (d, s, f) = setup();
        s.record(D, &f, None);
        let other = d.path().join("other");
        fs::write(&other, b"content").unwrap();
        fs::rename(&other, &f).unwrap();
        assert!(!s.is_current(D, &f), "another inode");
        s.record(D, &f, None);
        assert!(s.is_current(D, &f));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::hard_link(&f, d.path().join("link")).unwrap();
        assert!(!s.is_current(D, &f), "a new link changes ctime");
    }

    #[test]
    fn a_change_during_hashing_records_nothing() {
        let (_d, s, f) = setup();
        let before = Stamp::of(&f).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"changed").unwrap();
        s.record(D, &f, Some(before));
        assert!(!s.is_current(D, &f));
    }

    #[test]
    fn a_source_file_is_known_until_it_changes() {
        let (d, s, f) = setup();
        let name = "source-1";
        assert_eq!(s.source_digest(name, &f), None);
        s.record_source(name, D, &f, Stamp::of(&f).ok());
        assert_eq!(s.source_digest(name, &f).as_deref(), Some(D));
        assert_eq!(s.source_digest(name, &d.path().join("none")), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"other").unwrap();
        assert_eq!(s.source_digest(name, &f), None);
        s.record_source(name, D, &f, None);
        assert_eq!(
            s.source_digest(name, &f),
            None,
            "no stamp taken before: nothing recorded"
        );
    }

    #[test]
    fn a_damaged_stamp_is_no_stamp() {
        let (_d, s, f) = setup();
        s.record(D, &f, None);
        fs::write(s.path(D), "edgeimg-stamp-v1 garbage").unwrap();
        assert!(!s.is_current(D, &f));
    }
}
