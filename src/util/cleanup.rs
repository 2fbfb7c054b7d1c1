//! Scratch paths that must not outlive the process, also when it is stopped by SIGINT,
//! SIGTERM or SIGHUP.
//!
//! Code that makes a temporary file or folder registers its path ([`register`]) and drops the
//! [`Registered`] guard when the path is gone or has become an output. On an error or a panic
//! the owners' `Drop` removes their own paths; this module covers the signals, which would
//! otherwise end the process at once and leave everything behind.
//!
//! [`install`] (the binary calls it first thing, before any thread starts) blocks the three
//! signals in the calling thread, so every thread started later has them blocked too, and
//! starts one thread that waits for them with `sigwait`. That thread, in ordinary thread
//! context (no async-signal-safety limits), takes the registry lock, removes every registered
//! path, and then ends the process by the same signal with its default action, so the exit
//! status still says "killed by SIGINT" to the shell. A step that turns a registered path into
//! an output (a rename into place) runs under the same lock ([`locked`]), so the signal thread
//! sees it either before (and removes the scratch path) or after (and leaves the output).
//!
//! SIGKILL and power cuts cannot be caught: what they leave is named with the owner's process
//! id or held under a lock, and the next build removes it (`build::publish::clean_stale`).
//! Child processes get a clean signal mask (the standard library resets it on spawn).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The signals that clean up before ending the process.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Registered paths, by registration number.
#[derive(Default)]
pub struct Registry {
    paths: BTreeMap<u64, PathBuf>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn lock() -> MutexGuard<'static, Registry> {
    // A panic while the lock was held leaves plain data: keep using it.
    registry().lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered path; dropping it forgets the path (without removing it).
#[derive(Debug)]
pub struct Registered(u64);

/// Registers `path` (a file or a folder) for removal if a signal ends the process.
pub fn register(path: &Path) -> Registered {
    lock().register(path)
}

impl Registry {
    /// [`register`] inside [`locked`].
    pub fn register(&mut self, path: &Path) -> Registered {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        self.paths.insert(id, path.to_path_buf());
        Registered(id)
    }

    /// Forgets `r` (the path became an output) inside [`locked`].
    pub fn forget(&mut self, r: Registered) {
        self.paths.remove(&r.0);
        std::mem::forget(r);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock().paths.remove(&self.0);
    }
}

/// Runs `f` with the registry locked: the signal thread cannot clean up in the middle of it.
/// `f` must not call [`register`] or drop a [`Registered`] (use the `Registry` it is given).
pub fn locked<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut lock())
}

/// Removes every registered path (the signal thread's work; also for tests).
fn remove_all(reg: &mut Registry) {
    for path in reg.paths.values() {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => remove_dir_while_written(path),
            Ok(_) => {
                let _ = std::fs::remove_file(path);
            }
            Err(_) => {}
        }
    }
    reg.paths.clear();
}

/// Removes a folder that other threads of the process may still be writing into (the signal
/// thread does not stop them): a file created after `remove_dir_all` listed a folder makes
/// its rmdir fail. So the folder is first renamed aside, which makes every later create by
/// path under the old name fail, and then removed, again while anything is left.
fn remove_dir_while_written(path: &Path) {
    let mut doomed = path.as_os_str().to_owned();
    doomed.push(".removing");
    let doomed = PathBuf::from(doomed);
    let target = if std::fs::rename(path, &doomed).is_ok() {
        doomed
    } else {
        path.to_path_buf()
    };
    for _ in 0..50 {
        if std::fs::remove_dir_all(&target).is_ok() || !target.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and the ones it starts later, and starts
/// the thread that cleans up and ends the process when one comes. Call it before any other
/// thread is started; calling it again does nothing.
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: plain libc calls on a sigset_t we own; pthread_sigmask changes this thread's
        // mask only.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait on a set this closure owns.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                // Held until the process ends: no rename into place can start after this.
                let mut reg = lock();
                remove_all(&mut reg);
                // SAFETY: back to the default action, unblocked in this thread, then raised
                // here: the process ends by `sig` as it would have without us.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    let mut one: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut one);
                    libc::sigaddset(&mut one, sig);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                    libc::raise(sig);
                    libc::_exit(128 + sig);
                }
            });
        if spawned.is_err() {
            // Without the thread, a blocked signal would be ignored: unblock them again.
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_and_forgotten_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let (f, dir, kept) = (d.path().join("f"), d.path().join("d"), d.path().join("k"));
        std::fs::write(&f, b"x").unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x"), b"x").unwrap();
        std::fs::write(&kept, b"x").unwrap();
        let rf = register(&f);
        let rd = register(&dir);
        let rk = register(&kept);
        locked(|reg| {
            reg.forget(rk);
            // Only this test's paths: other tests register their own concurrently.
            let mine: Registry = Registry {
                paths: reg
                    .paths
                    .iter()
                    .filter(|(_, p)| p.starts_with(d.path()))
                    .map(|(k, p)| (*k, p.clone()))
                    .collect(),
            };
            let mut mine = mine;
            remove_all(&mut mine);
        });
        assert!(!f.exists() && !dir.exists() && kept.exists());
        drop((rf, rd));
        assert!(lock().paths.values().all(|p| !p.starts_with(d.path())));
    }

    /// The signal thread removes a folder while the build's threads still write files into
    /// it (the spill folder in the staging folder): nothing may be left.
    #[test]
    fn a_folder_still_written_into_is_removed_whole() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("staging");
        let spill = dir.join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let (spill, stop) = (spill.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = std::fs::write(spill.join(format!("{t}-{n}")), [0u8; 512]);
                        n += 1;
                    }
                })
            })
            .collect();
        // Let the writers fill the folder first.
        while std::fs::read_dir(&spill).unwrap().count() < 2000 {
            std::thread::yield_now();
        }
        let mut reg = Registry::default();
        let _r = reg.register(&dir);
        remove_all(&mut reg);
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
