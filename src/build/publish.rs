//! How a build's outputs reach the output folder: nothing lost (a reader always finds one whole
//! set), nothing leaked (no scratch or temporary file outlives the build that made it).
//!
//! ## Layout
//!
//! A *set* is what one build publishes in one folder: the image set in `<out>/` (`.img`,
//! `.img.xz`, `.bmap`, SBOM, Imager list, `manifest.json`, `SHA256SUMS`) and, for `--format
//! all`, the network boot set in `<out>/pxe/` (each folder has its own `SHA256SUMS` and
//! `manifest.json`; for `--format pxe` the network boot set is the one in `<out>/`). A folder
//! with a set holds:
//!
//! ```text
//! <folder>/.edgeimg/g-<pid>-<n>/...        the files of the published generation
//! <folder>/.edgeimg/current -> g-<pid>-<n> the one rename(2) that publishes
//! <folder>/.edgeimg/lock                   flock: one publish or clean-up at a time
//! <folder>/<name> -> .edgeimg/current/<name>   every output under its usual name
//! ```
//!
//! The names users, docs and tools use (`out/x86-64-worker.img`, `out/SHA256SUMS`,
//! `out/pxe/node/default/index`) are relative symlinks through `current`; everything that
//! opens them (sha256sum, bmaptool, Imager, `edgeimg flash`, `serve`, cp, web servers) follows
//! them. Per-machine folders that users add (`pxe/node/<mac>/`) are plain folders and stay.
//!
//! ## A build
//!
//! 1. At its start, [`clean_stale`] removes what earlier builds left when they were killed:
//!    staging folders whose lock is free (their owner is gone, whatever its pid became),
//!    temporaries `.<name>.tmp-<pid>-<n>` of processes that are no longer alive, spill
//!    folders of edgeimg versions before this one, generations other than `current`, and
//!    symlinks of ours that lead nowhere.
//! 2. Everything is written inside `<out>/.edgeimg-staging-<pid>-<n>/` ([`Staging`], flocked
//!    while the build runs): the spill folder, every output and every output's temporary.
//!    SIGINT, SIGTERM and SIGHUP remove the folder (`util::cleanup`); an error or a panic
//!    removes it on drop.
//! 3. [`Staging::publish`], per set, under the folder's lock: moves the finished set into
//!    `.edgeimg/` as a new generation; adds the symlinks of names the folder did not have (they
//!    lead nowhere until step 4, so they show as absent); renames a new `current` symlink over
//!    the old one (**the** publishing step); then removes symlinks of names only the old set
//!    had, and the old generation. Files, the store and every renamed-in folder are fsynced
//!    before the rename that follows them.
//!
//! ## The guarantee
//!
//! At every instant (during a build, after it failed, after SIGINT/SIGTERM/SIGHUP, after
//! SIGKILL or a power cut at any step), every name in a set's folder resolves into one
//! generation: all of them into the previous set or all of them into the new one, and a name
//! that only the other set has is absent. So a reader that opens its files at one instant
//! (`sha256sum -c SHA256SUMS`, bmaptool with the `.bmap` beside the `.img.xz`, Imager with
//! its list naming the `.img.xz` and its digest, iPXE fetching kernel, initramfs and the root
//! whose digest is on the kernel command line) always gets files that match each other. A
//! reader whose opens straddle a publish may get the old `SHA256SUMS` and the new image:
//! `sha256sum` then says FAILED, it never passes a mix. For a view that stays put, read from
//! `readlink -f <folder>/.edgeimg/current`: that folder stays whole until the next publish
//! removes it (files already open stay readable even then).
//!
//! One exception, once per folder: a folder that an edgeimg before this layout wrote holds
//! plain files. Its first publish first moves the plain `SHA256SUMS` into the store (it still
//! names the old set, should that publish be stopped), removes the plain `*.json` files and
//! the plain files that `SHA256SUMS` names and the new set lacks, then turns the other plain
//! names into symlinks that lead nowhere until `current` appears: meanwhile a reader finds
//! part of the old set without anything describing it (never a `SHA256SUMS` or manifest that
//! names a file which is not there as named), then the new set.
//!
//! Not covered: filesystems without symlinks (FAT, exFAT) fail at publish with a message
//! saying so; a concurrent build into the same folder is safe (publishes take turns under the
//! lock; the last one wins).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use crate::util::atomic::{process_alive, sync_parent, temp_owner, temp_path_for};
use crate::util::cleanup::{self, Registered};

/// The folder of generations inside a set's folder.
pub const STORE: &str = ".edgeimg";
/// The symlink in [`STORE`] naming the published generation.
pub const CURRENT: &str = "current";
const LOCK: &str = "lock";
/// The plain `SHA256SUMS` of an older layout while its folder is being converted.
const LEGACY_SUMS: &str = "legacy-SHA256SUMS";
const STAGING_PREFIX: &str = ".edgeimg-staging-";
/// Spill folders of edgeimg versions that put them straight into the output folder.
const LEGACY_SPILL_PREFIX: &str = ".edgeimg-spill-";

/// Where a build writes before it publishes (see the module documentation).
pub struct Staging {
    dir: PathBuf,
    /// Holds the flock that tells [`clean_stale`] the folder is in use.
    _lock: File,
    registered: Option<Registered>,
    sets: usize,
}

impl Staging {
    /// Creates `<out>/.edgeimg-staging-<pid>-<n>/`, locked and registered for removal.
    pub fn begin(out: &Path) -> Result<Staging> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{STAGING_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = out.join(name);
        let registered = cleanup::register(&dir);
        std::fs::create_dir(&dir).with_context(|| {
            format!(
                "creating {}: check that the output folder is writable",
                dir.display()
            )
        })?;
        let lock = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        if !try_flock(&lock)? {
            bail!("{} is locked by another process", dir.display());
        }
        Ok(Staging {
            dir,
            _lock: lock,
            registered: Some(registered),
            sets: 0,
        })
    }

    /// The staging folder: scratch space (the spill folder goes here).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A new, empty folder for the files of one set.
    pub fn new_set(&mut self) -> Result<PathBuf> {
        let p = self.dir.join(format!("set-{}", self.sets));
        self.sets += 1;
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }

    /// Publishes the files `names` (paths relative to `staged`, a folder from
    /// [`Staging::new_set`]) in `folder` as one set. Returns the published paths.
    pub fn publish(&self, staged: &Path, folder: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
        let done = publish_set(staged, folder, names, &mut Steps::all())?;
        debug_assert!(done);
        Ok(names.iter().map(|n| folder.join(n)).collect())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.registered.take());
    }
}

/// Counts the steps of a publish that change the file system, and stops after `limit` of them
/// (a test stands in for a process killed there).
pub(crate) struct Steps {
    done: usize,
    limit: Option<usize>,
}

impl Steps {
    pub(crate) fn all() -> Steps {
        Steps {
            done: 0,
            limit: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn stop_after(n: usize) -> Steps {
        Steps {
            done: 0,
            limit: Some(n),
        }
    }

    /// Whether the next step may run (and counts it).
    fn go(&mut self) -> bool {
        if Some(self.done) == self.limit {
            return false;
        }
        self.done += 1;
        true
    }
}

/// Stops a publish (returning `Ok(false)`) when its steps have run out.
macro_rules! step {
    ($steps:expr) => {
        if !$steps.go() {
            return Ok(false);
        }
    };
}

/// A name that says what the other files are: removed first, linked last.
fn describes(name: &str) -> bool {
    name == "SHA256SUMS" || name.ends_with(".json")
}

/// The symlink target of `name` in its set's folder: `../` per folder level, then the store.
fn link_target(name: &str) -> PathBuf {
    let depth = name.matches('/').count();
    let mut t = PathBuf::new();
    for _ in 0..depth {
        t.push("..");
    }
    t.join(STORE).join(CURRENT).join(name)
}

/// Whether `path` (the place of `name` in its folder) is our symlink for it.
fn is_our_link(path: &Path, name: &str) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t == link_target(name))
}

fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || name.starts_with('.');
    if bad {
        bail!("{name:?} cannot be published: give a plain relative path");
    }
    Ok(())
}

/// Opens (creating) and flocks the lock of `folder`'s store, waiting for another publish.
fn lock_store(store: &Path) -> Result<File> {
    let path = store.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(lock)
}

/// Takes the exclusive flock of `f` if it is free.
fn try_flock(f: &File) -> Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e).context("flock")
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fsyncs every file and folder under `dir` (the files were synced when written; this makes
/// the folders' entries durable before the set is renamed into the store).
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_tree(&e.path())?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Makes a symlink `path -> target` (replacing what is there) through a temporary name.
fn put_link(target: &Path, path: &Path) -> Result<()> {
    let tmp = temp_path_for(path)?;
    std::os::unix::fs::symlink(target, &tmp).with_context(|| {
        format!(
            "creating the symlink {}: the output folder must be on a filesystem with symlinks \
             (not FAT or exFAT); build elsewhere and copy the files",
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

/// The steps of [`Staging::publish`]; `Ok(false)`: stopped by `steps` (tests).
pub(crate) fn publish_set(
    staged: &Path,
    folder: &Path,
    names: &[String],
    steps: &mut Steps,
) -> Result<bool> {
    for n in names {
        check_name(n)?;
        if !staged.join(n).is_file() {
            bail!("{} is missing from the set", staged.join(n).display());
        }
    }
    let store = folder.join(STORE);
    if !store.is_dir() {
        step!(steps);
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        sync_parent(&store);
    }
    let _lock = lock_store(&store)?;
    sync_tree(staged)?;

    // The set becomes a generation in the store (not visible yet).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let gen_name = format!(
        "g-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let gen = store.join(&gen_name);
    step!(steps);
    let mut registered: Vec<Registered> = cleanup::locked(|reg| -> Result<_> {
        std::fs::rename(staged, &gen)
            .with_context(|| format!("moving {} to {}", staged.display(), gen.display()))?;
        Ok(vec![reg.register(&gen)])
    })?;
    sync_dir(&store);

    // What a failure before the swap takes back: the generation and the new links.
    let mut made = vec![gen.clone()];
    let prepared = link_names(folder, &store, names, steps, &mut registered, &mut made);
    match prepared {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(e) => {
            for p in made.iter().rev() {
                let _ = remove_any(p);
            }
            return Err(e);
        }
    }

    // The swap: one rename, under the cleanup lock so a signal sees it whole or not at all.
    let current = store.join(CURRENT);
    let old = std::fs::read_link(&current).ok();
    let tmp = temp_path_for(&current)?;
    step!(steps);
    made.push(tmp.clone());
    let swapped = std::os::unix::fs::symlink(&gen_name, &tmp)
        .with_context(|| format!("creating the symlink {}", tmp.display()))
        .and_then(|()| {
            if !steps.go() {
                return Ok(false);
            }
            cleanup::locked(|reg| -> Result<bool> {
                std::fs::rename(&tmp, &current).with_context(|| {
                    format!("renaming {} to {}", tmp.display(), current.display())
                })?;
                for r in registered.drain(..) {
                    reg.forget(r);
                }
                Ok(true)
            })
        });
    match swapped {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(e) => {
            for p in made.iter().rev() {
                let _ = remove_any(p);
            }
            return Err(e);
        }
    }
    sync_dir(&store);

    // Names only the old set had, then the old generation.
    if !prune_links(folder, folder, steps, &mut Vec::new())? {
        return Ok(false);
    }
    let legacy = store.join(LEGACY_SUMS);
    if legacy.exists() {
        step!(steps);
        std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
    }
    if let Some(old) = old.filter(|o| *o != Path::new(&gen_name)) {
        let p = store.join(old);
        if p.is_dir() {
            step!(steps);
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(true)
}

/// The steps of [`publish_set`] between moving the set into the store and the swap: plain
/// files of an older layout out of the way, then symlinks for the names the folder lacks (each
/// new one registered, and listed in `made` for the caller to take back on an error).
fn link_names(
    folder: &Path,
    store: &Path,
    names: &[String],
    steps: &mut Steps,
    registered: &mut Vec<Registered>,
    made: &mut Vec<PathBuf>,
) -> Result<bool> {
    // A folder of an older layout: its plain SHA256SUMS goes into the store first (out of
    // sight, and still naming the old set), then the other plain describers, then the plain
    // files it names that the new set does not have.
    let legacy = store.join(LEGACY_SUMS);
    let sums = folder.join("SHA256SUMS");
    if std::fs::symlink_metadata(&sums).is_ok_and(|m| m.is_file()) {
        step!(steps);
        std::fs::rename(&sums, &legacy)
            .with_context(|| format!("moving {} to {}", sums.display(), legacy.display()))?;
    }
    let mut plain: Vec<String> = names.iter().filter(|n| describes(n)).cloned().collect();
    if let Ok(text) = std::fs::read_to_string(&legacy) {
        let listed = text
            .lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(_, n)| n);
        plain.extend(
            listed
                .filter(|n| check_name(n).is_ok() && !names.iter().any(|m| m == n))
                .map(String::from),
        );
    }
    plain.sort_by_key(|n| !describes(n));
    for n in &plain {
        let p = folder.join(n);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            step!(steps);
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // Symlinks for names the folder lacks: they lead nowhere until the swap.
    let mut order: Vec<&String> = names.iter().collect();
    order.sort_by_key(|n| (describes(n), n.as_str()));
    let mut linked_in: std::collections::BTreeSet<PathBuf> = [folder.to_path_buf()].into();
    for n in order {
        let p = folder.join(n);
        if is_our_link(&p, n) {
            continue;
        }
        if let Some(parent) = p.parent().filter(|d| !d.is_dir()) {
            step!(steps);
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            bail!(
                "{} is a folder; the new set has a file of that name",
                p.display()
            );
        }
        let new = std::fs::symlink_metadata(&p).is_err();
        step!(steps);
        put_link(&link_target(n), &p)?;
        if new {
            registered.push(cleanup::register(&p));
            made.push(p.clone());
        }
        // Its folder and the folders above it, up to `folder`.
        linked_in.extend(
            p.ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(folder) && *a != folder)
                .map(Path::to_path_buf),
        );
    }
    // The links (and folders made for them) are durable before the swap makes them lead
    // somewhere.
    for d in linked_in.iter().rev() {
        sync_dir(d);
    }

    Ok(true)
}

/// Removes our symlinks under `dir` (part of `folder`) that lead nowhere, and folders that
/// this leaves empty. Hidden entries (the store, staging folders) are not entered.
fn prune_links(
    folder: &Path,
    dir: &Path,
    steps: &mut Steps,
    removed: &mut Vec<PathBuf>,
) -> Result<bool> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(true);
    };
    let mut removed_any = false;
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            if !prune_links(folder, &p, steps, removed)? {
                return Ok(false);
            }
            continue;
        }
        if !ft.is_symlink() || p.exists() {
            continue;
        }
        let Ok(rel) = p.strip_prefix(folder) else {
            continue;
        };
        if is_our_link(&p, &rel.to_string_lossy()) {
            step!(steps);
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            removed.push(p);
            removed_any = true;
        }
    }
    if removed_any && dir != folder && std::fs::read_dir(dir)?.next().is_none() {
        step!(steps);
        let _ = std::fs::remove_dir(dir);
    }
    Ok(true)
}

/// What [`clean_stale`] removed.
#[derive(Debug, Default, PartialEq)]
pub struct Cleaned {
    pub paths: Vec<PathBuf>,
}

/// Removes what killed builds left in `folder` (see the module documentation). Safe while
/// other builds run: their staging folders are locked, their temporaries carry a live pid,
/// and the store is cleaned under its lock.
pub fn clean_stale(folder: &Path) -> Result<Cleaned> {
    clean_stale_with(folder, &process_alive)
}

/// [`clean_stale`] with another test of whether a process lives (tests stand in for a
/// killed process with their own, living, one).
pub(crate) fn clean_stale_with(folder: &Path, alive: &dyn Fn(u32) -> bool) -> Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    let Ok(rd) = std::fs::read_dir(folder) else {
        return Ok(cleaned);
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let stale = if name.starts_with(STAGING_PREFIX) {
            match File::open(&p) {
                Ok(f) => try_flock(&f)?,
                Err(_) => false,
            }
        } else if name.starts_with(LEGACY_SPILL_PREFIX) {
            true
        } else {
            temp_owner(&name).is_some_and(|pid| !alive(pid))
        };
        if stale {
            remove_any(&p)?;
            cleaned.paths.push(p);
        }
    }
    let store = folder.join(STORE);
    if store.is_dir() {
        let _lock = lock_store(&store)?;
        let current = std::fs::read_link(store.join(CURRENT)).ok();
        for e in std::fs::read_dir(&store)? {
            let e = e?;
            let name = e.file_name();
            // The plain SHA256SUMS of a conversion stopped before its swap is kept for the next
            // publish; after the swap it is done with.
            if name == CURRENT
                || name == LOCK
                || (name == LEGACY_SUMS && current.is_none())
                || current.as_deref() == Some(Path::new(&name))
            {
                continue;
            }
            remove_any(&e.path())?;
            cleaned.paths.push(e.path());
        }
        clean_temps(folder, folder, alive, &mut cleaned)?;
        prune_links(folder, folder, &mut Steps::all(), &mut cleaned.paths)?;
    }
    Ok(cleaned)
}

/// Temporaries of dead processes in the set's subfolders (the top level is done by the
/// caller).
fn clean_temps(
    folder: &Path,
    dir: &Path,
    alive: &dyn Fn(u32) -> bool,
    cleaned: &mut Cleaned,
) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() && !name.starts_with('.') {
            clean_temps(folder, &e.path(), alive, cleaned)?;
        } else if dir != folder && temp_owner(&name).is_some_and(|pid| !alive(pid)) {
            remove_any(&e.path())?;
            cleaned.paths.push(e.path());
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => return Ok(()),
    };
    r.with_context(|| format!("removing {}", p.display()))
}

#[cfg(test)]
mod tests;
