//! The in-memory file tree every encoder reads from.
//!
//! Ownership, modes and device nodes live here, never on the host filesystem: that is how
//! edgeimg builds a root filesystem without root. Paths are normalized on the way in and can
//! never leave the tree: `..` stops at the top and symlinks met on the way are resolved inside
//! the tree, the way the kernel resolves them inside a chroot.

pub mod spill;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

/// How many symlinks a single lookup may follow before it is called a loop.
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Error)]
pub enum TreeError {
    #[error("path {0:?} is not a valid path inside the tree")]
    InvalidPath(String),
    #[error("{0}: a parent of this path is not a directory")]
    NotADirectory(String),
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(String),
}

/// A normalized path inside the tree: no leading `/`, no `.` or `..`, no empty components.
/// The empty path is the root directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TreePath(String);

impl TreePath {
    /// The root directory.
    pub fn root() -> Self {
        TreePath(String::new())
    }

    /// Normalizes `p` lexically. `..` never climbs above the root (as in a chroot), so the
    /// result always names something inside the tree. NUL bytes are refused.
    pub fn new(p: &str) -> Result<Self, TreeError> {
        if p.contains('\0') {
            return Err(TreeError::InvalidPath(p.to_string()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        Ok(TreePath(parts.join("/")))
    }

    /// Like [`TreePath::new`], but refuses any `..` component instead of clamping it: used for
    /// archive members and user-supplied paths, where `..` is a sign of a hostile input.
    pub fn strict(p: &str) -> Result<Self, TreeError> {
        if p.split('/').any(|c| c == "..") {
            return Err(TreeError::InvalidPath(p.to_string()));
        }
        Self::new(p)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path with a leading `/`, as seen on the device.
    pub fn absolute(&self) -> String {
        format!("/{}", self.0)
    }

    pub fn parent(&self) -> Option<TreePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => TreePath(self.0[..i].to_string()),
            None => TreePath::root(),
        })
    }

    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    pub fn join(&self, name: &str) -> Result<TreePath, TreeError> {
        TreePath::new(&format!("{}/{}", self.0, name))
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Depth below the root: the root is 0, `usr` is 1, `usr/bin` is 2.
    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Where a regular file's bytes are. Large inputs that already sit in the cache (the k0s
/// binary) stay there instead of being read into memory.
#[derive(Clone)]
pub enum Content {
    Bytes(Arc<[u8]>),
    /// A file on the host whose content is taken as it is when the tree is encoded.
    HostFile {
        path: PathBuf,
        size: u64,
    },
}

impl Content {
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Content::Bytes(Arc::from(data.into().into_boxed_slice()))
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::HostFile { size, .. } => *size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader over the content.
    pub fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send + '_>> {
        match self {
            Content::Bytes(b) => Ok(Box::new(std::io::Cursor::new(&b[..]))),
            Content::HostFile { path, .. } => Ok(Box::new(std::fs::File::open(path)?)),
        }
    }

    /// The whole content in memory (host files are read).
    pub fn read_all(&self) -> std::io::Result<Arc<[u8]>> {
        match self {
            Content::Bytes(b) => Ok(b.clone()),
            Content::HostFile { path, .. } => {
                Ok(Arc::from(std::fs::read(path)?.into_boxed_slice()))
            }
        }
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Content::HostFile { path, size } => {
                write!(f, "HostFile({}, {size} bytes)", path.display())
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// One entry: what it is plus its metadata. `mode` holds the permission bits only
/// (including setuid/setgid/sticky, `0o7777`), never the file-type bits.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl Entry {
    pub fn dir(mode: u32) -> Self {
        Entry {
            kind: Kind::Dir,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    pub fn file(content: Content, mode: u32) -> Self {
        Entry {
            kind: Kind::File(content),
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    pub fn symlink(target: &str) -> Self {
        Entry {
            kind: Kind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    pub fn owned(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }

    /// The file-type bits as in `st_mode` (`S_IFREG`, ...).
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDevice { .. } => 0o020000,
            Kind::BlockDevice { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// The full `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.type_bits() | (self.mode & 0o7777)
    }
}

/// A file tree, sorted by path so that every encoder sees the same order (determinism), and so
/// that a directory always comes before what it contains.
#[derive(Clone, Debug)]
pub struct Tree {
    entries: BTreeMap<TreePath, Entry>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// An empty tree holding only its root directory (0755 root:root).
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(TreePath::root(), Entry::dir(0o755));
        Tree { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// Entries in path order; the root comes first, each directory before its children.
    pub fn iter(&self) -> impl Iterator<Item = (&TreePath, &Entry)> {
        self.entries.iter()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        let p = TreePath::new(path).ok()?;
        self.entries.get(&p)
    }

    pub fn get_path(&self, path: &TreePath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The direct children of a directory, in order.
    pub fn children<'a>(
        &'a self,
        dir: &TreePath,
    ) -> impl Iterator<Item = (&'a TreePath, &'a Entry)> + 'a {
        let depth = dir.depth() + 1;
        self.below(dir).filter(move |(p, _)| p.depth() == depth)
    }

    /// Resolves the parent directories of `path` through symlinks inside the tree, so that an
    /// entry for `lib/modules/x` lands in `usr/lib/modules/x` when `lib -> usr/lib`. The last
    /// component itself is not followed. Missing parents are left as they are.
    pub fn resolve_parents(&self, path: &TreePath) -> Result<TreePath, TreeError> {
        let Some(parent) = path.parent() else {
            return Ok(TreePath::root());
        };
        let parent = self.resolve(&parent, 0)?;
        parent.join(path.file_name())
    }

    /// Resolves every component of `path`, following symlinks, clamped inside the tree.
    pub fn resolve_all(&self, path: &TreePath) -> Result<TreePath, TreeError> {
        self.resolve(path, 0)
    }

    fn resolve(&self, path: &TreePath, hops: usize) -> Result<TreePath, TreeError> {
        let mut done = TreePath::root();
        let mut hops = hops;
        let comps: Vec<&str> = path.components().collect();
        let mut i = 0;
        let mut pending: Vec<String> = comps.iter().map(|s| s.to_string()).collect();
        while i < pending.len() {
            let next = done.join(&pending[i])?;
            match self.entries.get(&next).map(|e| &e.kind) {
                Some(Kind::Symlink(target)) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(TreeError::SymlinkLoop(path.to_string()));
                    }
                    let base = if target.starts_with('/') {
                        TreePath::root()
                    } else {
                        done.clone()
                    };
                    let rest = pending[i + 1..].join("/");
                    let joined = TreePath::new(&format!("{}/{}", base.as_str(), target))?;
                    // Restart resolution of the target from the top, then keep the remainder.
                    done = TreePath::root();
                    pending = joined.components().map(String::from).collect();
                    pending.extend(TreePath::new(&rest)?.components().map(String::from));
                    i = 0;
                }
                _ => {
                    done = next;
                    i += 1;
                }
            }
        }
        Ok(done)
    }

    /// Inserts or replaces an entry. Parents are resolved through symlinks in the tree and any
    /// missing parent directory is created (0755 root:root). A directory inserted over an
    /// existing directory keeps the existing children and takes the new metadata.
    pub fn insert(&mut self, path: &TreePath, entry: Entry) -> Result<TreePath, TreeError> {
        if path.is_root() {
            if entry.is_dir() {
                self.entries.insert(TreePath::root(), entry);
                return Ok(TreePath::root());
            }
            return Err(TreeError::InvalidPath("/".into()));
        }
        let target = self.resolve_parents(path)?;
        self.mkdir_p(&target.parent().unwrap_or_default())?;
        if !entry.is_dir() {
            // A non-directory replacing a directory takes its children with it.
            if self.entries.get(&target).is_some_and(|e| e.is_dir()) {
                self.remove_subtree(&target);
            }
        }
        self.entries.insert(target.clone(), entry);
        Ok(target)
    }

    /// Convenience: inserts a regular file from bytes.
    pub fn add_file(
        &mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<TreePath, TreeError> {
        self.insert(
            &TreePath::new(path)?,
            Entry::file(Content::bytes(data), mode),
        )
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<TreePath, TreeError> {
        self.insert(&TreePath::new(path)?, Entry::dir(mode))
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<TreePath, TreeError> {
        self.insert(&TreePath::new(path)?, Entry::symlink(target))
    }

    /// Creates `dir` and its missing parents as 0755 root:root directories.
    pub fn mkdir_p(&mut self, dir: &TreePath) -> Result<(), TreeError> {
        let mut cur = TreePath::root();
        for c in dir.components() {
            cur = cur.join(c)?;
            match self.entries.get(&cur) {
                Some(e) if e.is_dir() => {}
                Some(Entry {
                    kind: Kind::Symlink(_),
                    ..
                }) => {
                    cur = self.resolve(&cur, 0)?;
                    if !self.entries.get(&cur).is_some_and(|e| e.is_dir()) {
                        self.mkdir_p(&cur)?;
                    }
                }
                Some(_) => return Err(TreeError::NotADirectory(cur.to_string())),
                None => {
                    self.entries.insert(cur.clone(), Entry::dir(0o755));
                }
            }
        }
        Ok(())
    }

    /// Removes an entry and, for a directory, everything below it. Returns whether it existed.
    pub fn remove(&mut self, path: &str) -> bool {
        let Ok(p) = TreePath::new(path) else {
            return false;
        };
        if p.is_root() {
            return false;
        }
        let existed = self.entries.contains_key(&p);
        self.remove_subtree(&p);
        existed
    }

    fn remove_subtree(&mut self, p: &TreePath) {
        let below: Vec<TreePath> = self.below(p).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.entries.remove(&k);
        }
        self.entries.remove(p);
    }

    /// Every entry strictly below directory `dir`. All keys that start with `dir/` sort in
    /// the half-open range [`dir/`, `dir0`) because `0` follows `/` in ASCII.
    fn below<'a>(&'a self, dir: &TreePath) -> impl Iterator<Item = (&'a TreePath, &'a Entry)> + 'a {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let bounds = if dir.is_root() {
            (Excluded(TreePath::root()), Unbounded)
        } else {
            (
                Included(TreePath(format!("{}/", dir.0))),
                Excluded(TreePath(format!("{}0", dir.0))),
            )
        };
        self.entries.range(bounds)
    }

    /// Keeps only the entries for which `keep` is true (the root always stays), then drops
    /// directories left empty that `keep` also rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&TreePath, &Entry) -> bool) {
        self.entries.retain(|p, e| p.is_root() || keep(p, e));
    }

    /// Lays `other` over this tree: its entries win, directories merge.
    pub fn overlay(&mut self, other: &Tree) -> Result<(), TreeError> {
        for (p, e) in other.iter() {
            if p.is_root() {
                continue;
            }
            self.insert(p, e.clone())?;
        }
        Ok(())
    }

    /// Sets every entry's mtime (deterministic output).
    pub fn set_all_mtimes(&mut self, mtime: u64) {
        for e in self.entries.values_mut() {
            e.mtime = mtime;
        }
    }

    /// The total size of all regular files' content.
    pub fn content_size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(c) => c.len(),
                _ => 0,
            })
            .sum()
    }

    /// Reads a regular file's content (following no symlinks).
    pub fn read(&self, path: &str) -> Option<Arc<[u8]>> {
        match &self.get(path)?.kind {
            Kind::File(c) => c.read_all().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotdot_is_clamped_or_refused() {
        assert_eq!(
            TreePath::new("/../../etc/passwd").unwrap().as_str(),
            "etc/passwd"
        );
        assert_eq!(TreePath::new("./a//b/./c/..").unwrap().as_str(), "a/b");
        assert!(TreePath::strict("a/../../etc").is_err());
        assert!(TreePath::new("a\0b").is_err());
    }

    #[test]
    fn inserts_create_parents_and_follow_symlinked_dirs() {
        let mut t = Tree::new();
        t.add_symlink("lib", "usr/lib").unwrap();
        let at = t
            .add_file("lib/modules/x.ko", b"k".to_vec(), 0o644)
            .unwrap();
        assert_eq!(at.as_str(), "usr/lib/modules/x.ko");
        assert!(t.get("usr/lib").unwrap().is_dir());
        assert!(t.get("lib/modules/x.ko").is_none());
    }

    #[test]
    fn symlink_escaping_the_tree_stays_inside() {
        let mut t = Tree::new();
        t.add_symlink("evil", "../../../../tmp").unwrap();
        let at = t.add_file("evil/owned", b"x".to_vec(), 0o644).unwrap();
        assert_eq!(at.as_str(), "tmp/owned");
    }

    #[test]
    fn symlink_loops_are_detected() {
        let mut t = Tree::new();
        t.add_symlink("a", "b").unwrap();
        t.add_symlink("b", "a").unwrap();
        assert!(matches!(
            t.add_file("a/x", b"".to_vec(), 0o644),
            Err(TreeError::SymlinkLoop(_))
        ));
    }

    #[test]
    fn file_replacing_dir_removes_children_only_of_that_dir() {
        let mut t = Tree::new();
        t.add_file("a/b", b"1".to_vec(), 0o644).unwrap();
        t.add_file("a-b/c", b"2".to_vec(), 0o644).unwrap();
        t.add_file("a", b"3".to_vec(), 0o644).unwrap();
        assert!(t.get("a/b").is_none());
        assert!(t.get("a-b/c").is_some());
        assert!(t.remove("a-b"));
        assert!(t.get("a-b/c").is_none());
    }

    #[test]
    fn iteration_puts_directories_before_children() {
        let mut t = Tree::new();
        t.add_file("z/y/x", b"".to_vec(), 0o644).unwrap();
        t.add_file("a", b"".to_vec(), 0o644).unwrap();
        let order: Vec<String> = t.iter().map(|(p, _)| p.as_str().to_string()).collect();
        assert_eq!(order, vec!["", "a", "z", "z/y", "z/y/x"]);
        let kids: Vec<String> = t
            .children(&TreePath::new("z").unwrap())
            .map(|(p, _)| p.as_str().to_string())
            .collect();
        assert_eq!(kids, vec!["z/y"]);
    }
}
