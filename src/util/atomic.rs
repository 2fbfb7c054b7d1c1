//! Files that appear whole or not at all: every output and cache entry is written under a
//! temporary name next to its final one (`.<name>.tmp-<pid>-<n>`), fsynced, renamed into
//! place, and its directory fsynced, so a reader (or a power cut) sees the old file or the new
//! one, never a torn one. Dropping an uncommitted file removes the temporary.
//!
//! A signal that ends the process removes the temporaries too (`super::cleanup`); what a
//! SIGKILL leaves carries the process id in its name, for the next build to remove.
//!
//! Files are created with mode 0644 less the umask: outputs are served by web servers that
//! run as other users, so a private 0600 (what `tempfile` makes) would be wrong for them.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// The mode of new files, before the umask.
pub const FILE_MODE: u32 = 0o644;

/// A temporary name beside `final_path`, unique within this process (threads of one build
/// may write the same cache entry at once); [`temp_owner`] reads the process id back.
pub fn temp_path_for(final_path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = final_path
        .file_name()
        .with_context(|| format!("{} has no file name", final_path.display()))?
        .to_string_lossy();
    let dir = final_path.parent().unwrap_or(Path::new(""));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

/// The process id in a name made by [`temp_path_for`] (`.<name>.tmp-<pid>-<n>`), if it is one.
pub fn temp_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether process `pid` is alive (or is not ours to signal, which also means alive).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Creates (truncating) `path` read-write with [`FILE_MODE`].
pub fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Fsyncs `file`, renames `temp` to `final_path` and fsyncs the directory.
pub fn publish(file: &File, temp: &Path, final_path: &Path) -> Result<()> {
    file.sync_all()
        .with_context(|| format!("syncing {}", temp.display()))?;
    std::fs::rename(temp, final_path)
        .with_context(|| format!("renaming {} to {}", temp.display(), final_path.display()))?;
    sync_parent(final_path);
    Ok(())
}

/// Fsyncs the directory holding `path` so a rename survives a power cut. Best effort: some
/// filesystems refuse fsync on directories, and the data itself is already synced.
pub fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// A file being written under a temporary name; [`AtomicFile::commit`] publishes it.
pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    temp_path: PathBuf,
    final_path: PathBuf,
    /// Removes the temporary if a signal ends the process first.
    _registered: super::cleanup::Registered,
}

impl AtomicFile {
    pub fn create(final_path: &Path) -> Result<AtomicFile> {
        let temp_path = temp_path_for(final_path)?;
        let _registered = super::cleanup::register(&temp_path);
        let file = create_file(&temp_path)?;
        Ok(AtomicFile {
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            temp_path,
            final_path: final_path.to_path_buf(),
            _registered,
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Flushes, fsyncs and renames into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.temp_path.display()))?;
        publish(&file, &self.temp_path, &self.final_path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer
            .as_mut()
            .expect("writer present until commit")
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer
            .as_mut()
            .expect("writer present until commit")
            .flush()
    }
}

impl std::io::Seek for AtomicFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.writer
            .as_mut()
            .expect("writer present until commit")
            .seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Writes `data` to `path` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()
}

/// Copies the file `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut f = AtomicFile::create(to)?;
    std::io::copy(&mut src, &mut f)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    f.commit()
}

/// Writes the concatenation of `parts` to `path` atomically, creating its directory. For
/// cache entries, where a failure only costs the next build time.
pub fn store(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut f = AtomicFile::create(path).map_err(std::io::Error::other)?;
    for p in parts {
        f.write_all(p)?;
    }
    f.commit().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn umask() -> u32 {
        // SAFETY: umask only swaps a process-wide integer; it is put back at once.
        unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m as u32
        }
    }

    #[test]
    fn outputs_are_readable_by_others_and_appear_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        write_atomic(&p, b"{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE & !umask());
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        // Nothing but the file itself is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("SHA256SUMS");
        write_atomic(&p, b"old").unwrap();
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"new, half written").unwrap();
        assert!(f.temp_path().exists());
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_names_differ_within_a_process() {
        let p = Path::new("/x/a.xz");
        assert_ne!(temp_path_for(p).unwrap(), temp_path_for(p).unwrap());
    }

    #[test]
    fn temporary_names_carry_their_owner() {
        let t = temp_path_for(Path::new("/x/a.img.xz")).unwrap();
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(name), Some(std::process::id()));
        assert!(process_alive(std::process::id()));
        assert_eq!(temp_owner("a.img.xz"), None);
        assert_eq!(temp_owner(".a.tmp-x-1"), None);
        assert_eq!(temp_owner(".a.tmp-12-"), None);
    }
}
