//! The kernel module index: what `depmod` would have written, computed from the tree.
//!
//! Debian's kernel packages ship modules as `.ko.xz` without `modules.dep`/`modules.alias`
//! (depmod runs in the package's postinst, which edgeimg never runs). So edgeimg reads every
//! module's `.modinfo` section itself, resolves load order for the initramfs, and writes the
//! index files that busybox's `modprobe` (text `modules.dep`) and kmod's `modprobe` (binary
//! `modules.*.bin` tries) read.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use thiserror::Error;

use crate::tree::{Content, Entry, Kind, Tree, TreePath};

/// Where module trees live, relative to the tree root (merged /usr).
pub const MODULES_ROOT: &str = "usr/lib/modules";
/// The pre-merged-/usr location, looked at when the tree has no `usr/lib/modules`.
const LEGACY_MODULES_ROOT: &str = "lib/modules";

/// Files shipped with the kernel package that are copied along with the modules.
const SHIPPED_INDEX_FILES: [&str; 3] = [
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

#[derive(Debug, Error)]
pub enum KmodError {
    #[error("module '{name}' is not in linux {kver}: check the board's `initramfs_modules` (boards/*.toml) for a typo, or whether this kernel has the driver")]
    UnknownModule { name: String, kver: String },
    #[error("module '{module}' depends on '{dep}', which is not in linux {kver}: the kernel package looks incomplete")]
    MissingDependency {
        module: String,
        dep: String,
        kver: String,
    },
    #[error("{path}: not a kernel module: {reason}")]
    BadModule { path: String, reason: String },
    #[error("no kernel in the tree: {MODULES_ROOT}/ has no version directory (is the linux-image package in the package list?)")]
    NoKernel,
    #[error("several kernels in the tree ({0}): keep one linux-image package in the package list")]
    SeveralKernels(String),
    #[error("kernel {0}: {MODULES_ROOT}/{0}/ does not exist in the tree")]
    NoModulesDir(String),
    #[error("kernel index key or value {0:?} has a non-ASCII or control character (kmod's index format cannot hold it)")]
    BadIndexString(String),
}

/// One loadable module as read from its `.modinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module name with underscores (`nf_conntrack`), as the kernel knows it.
    pub name: String,
    /// Where the file is in the tree (`usr/lib/modules/<kver>/kernel/.../x.ko.xz`).
    pub path: TreePath,
    /// Direct dependencies (module names), in `.modinfo` order.
    pub depends: Vec<String>,
    /// `alias=` patterns (may hold shell wildcards).
    pub aliases: Vec<String>,
    /// `softdep=pre:` names: module names or aliases to load before this one.
    pub softdep_pre: Vec<String>,
    /// `softdep=post:` names.
    pub softdep_post: Vec<String>,
}

/// Every module of one kernel, by name.
#[derive(Clone, Debug)]
pub struct ModuleIndex {
    pub kver: String,
    /// `usr/lib/modules/<kver>` as found in the tree.
    dir: TreePath,
    modules: BTreeMap<String, ModuleInfo>,
    builtin: BTreeSet<String>,
    /// Aliases of built-in modules (`crypto-crc32c` where crc32c is compiled in), normalized.
    builtin_aliases: BTreeSet<String>,
    /// Position of each module in `modules.order` (depmod's priority); unknown ones sort last.
    order: HashMap<String, usize>,
}

/// Module names treat `-` and `_` as the same character; the kernel uses `_`.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name a file name stands for: `crc32c-intel.ko.xz` -> `crc32c_intel`.
fn name_from_file(file: &str) -> Option<String> {
    let stem = file
        .strip_suffix(".xz")
        .or_else(|| file.strip_suffix(".zst"))
        .or_else(|| file.strip_suffix(".gz"));
    let stem = stem.unwrap_or(file).strip_suffix(".ko")?;
    Some(normalize_name(stem))
}

/// The single kernel version in the tree: the one directory under `usr/lib/modules/`.
pub fn kernel_version(tree: &Tree) -> Result<String> {
    let root = find_modules_root(tree).ok_or(KmodError::NoKernel)?;
    let versions: Vec<String> = tree
        .children(&root)
        .filter(|(_, e)| e.is_dir())
        .map(|(p, _)| p.file_name().to_string())
        .collect();
    match versions.len() {
        0 => Err(KmodError::NoKernel.into()),
        1 => Ok(versions.into_iter().next().unwrap_or_default()),
        _ => Err(KmodError::SeveralKernels(versions.join(", ")).into()),
    }
}

/// A per-kernel file of the kernel packages, `vmlinuz` or `config`: Debian's kernels up to
/// trixie put it at `boot/<name>-<kver>`; the split packages of newer ones (trixie-backports)
/// at `usr/lib/modules/<kver>/<name>`. The first found is returned.
pub fn kernel_file(tree: &Tree, kver: &str, name: &str) -> Option<std::sync::Arc<[u8]>> {
    tree.read(&format!("boot/{name}-{kver}")).or_else(|| {
        [MODULES_ROOT, LEGACY_MODULES_ROOT]
            .iter()
            .find_map(|r| tree.read(&format!("{r}/{kver}/{name}")))
    })
}

/// Modules renamed upstream, (old, new): a list naming the old one gets the new one in the
/// kernels that have only it. Linux 6.15 made `crc32c_generic` (the crypto API's crc32c,
/// which jbd2 asks for with `softdep: pre: crypto-crc32c`) `crc32c_cryptoapi`.
const RENAMED: &[(&str, &str)] = &[("crc32c_generic", "crc32c_cryptoapi")];

/// `usr/lib/modules`, or `lib/modules` in a tree without merged /usr.
fn find_modules_root(tree: &Tree) -> Option<TreePath> {
    [MODULES_ROOT, LEGACY_MODULES_ROOT].iter().find_map(|r| {
        let p = TreePath::new(r).ok()?;
        let p = tree.resolve_all(&p).ok()?;
        tree.get_path(&p).filter(|e| e.is_dir()).map(|_| p)
    })
}

impl ModuleIndex {
    /// Reads every `*.ko{,.xz,.zst,.gz}` under `usr/lib/modules/<kver>/` (in parallel) and the
    /// shipped `modules.builtin` / `modules.order`.
    pub fn scan(tree: &Tree, kver: &str) -> Result<ModuleIndex> {
        let root =
            find_modules_root(tree).ok_or_else(|| KmodError::NoModulesDir(kver.to_string()))?;
        let dir = root.join(kver)?;
        if !tree.get_path(&dir).is_some_and(|e| e.is_dir()) {
            return Err(KmodError::NoModulesDir(kver.to_string()).into());
        }
        let prefix = format!("{}/", dir.as_str());
        let files: Vec<(TreePath, Content)> = tree
            .iter()
            .filter(|(p, _)| {
                p.as_str().starts_with(&prefix) && name_from_file(p.file_name()).is_some()
            })
            .filter_map(|(p, e)| match &e.kind {
                Kind::File(c) => Some((p.clone(), c.clone())),
                _ => None,
            })
            .collect();
        let infos: Vec<ModuleInfo> = files
            .par_iter()
            .map(|(p, c)| read_module(p, c).with_context(|| format!("reading kernel module {p}")))
            .collect::<Result<_>>()?;

        let mut modules = BTreeMap::new();
        // Sorted by path, so when two files claim one name the first path wins, every time.
        for info in infos {
            modules.entry(info.name.clone()).or_insert(info);
        }
        let builtin = read_lines(tree, &dir, "modules.builtin")
            .iter()
            .filter_map(|l| name_from_file(l.rsplit('/').next().unwrap_or(l)))
            .collect();
        let builtin_aliases = builtin_aliases(tree, &dir)?
            .into_iter()
            .map(|(_, alias)| normalize_name(&alias))
            .collect();
        let order = read_lines(tree, &dir, "modules.order")
            .iter()
            .filter_map(|l| name_from_file(l.rsplit('/').next().unwrap_or(l)))
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        Ok(ModuleIndex {
            kver: kver.to_string(),
            dir,
            modules,
            builtin,
            builtin_aliases,
            order,
        })
    }

    /// `usr/lib/modules/<kver>` in the scanned tree.
    pub fn dir(&self) -> &TreePath {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<&ModuleInfo> {
        self.modules.get(&normalize_name(name))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// All modules, by name.
    pub fn modules(&self) -> impl Iterator<Item = &ModuleInfo> {
        self.modules.values()
    }

    /// Whether `name` is compiled into the kernel (listed in `modules.builtin`).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// The named modules plus everything they need (`depends`, and `softdep pre:` modules that
    /// exist), dependencies first. Built-in modules are skipped; an unknown name is an error.
    /// A name that is no module may be an exact alias (`crc32c`); see [`Self::resolve_alias`].
    pub fn closure(&self, names: &[&str]) -> Result<Vec<String>> {
        let mut walk = Walk::default();
        for name in names {
            let Some(module) = self.resolve_request(name)? else {
                continue;
            };
            self.visit(&module, &mut walk)?;
        }
        Ok(walk.order)
    }

    /// A requested name: a module, a built-in (None), or an exact alias of a module.
    fn resolve_request(&self, name: &str) -> Result<Option<String>> {
        match self.lookup(name) {
            Lookup::Module(m) => Ok(Some(m)),
            Lookup::Builtin => Ok(None),
            Lookup::Unknown => Err(KmodError::UnknownModule {
                name: name.to_string(),
                kver: self.kver.clone(),
            }
            .into()),
        }
    }

    /// What a name or exact alias stands for in this kernel.
    fn lookup(&self, name: &str) -> Lookup {
        let n = normalize_name(name);
        if self.modules.contains_key(&n) {
            return Lookup::Module(n);
        }
        if self.builtin.contains(&n) || self.builtin_aliases.contains(&n) {
            return Lookup::Builtin;
        }
        if let Some(m) = self.resolve_alias(name) {
            return Lookup::Module(m);
        }
        // A module the kernel renamed: the profiles name it as the older kernels do.
        match RENAMED.iter().find(|(old, _)| *old == n) {
            Some((_, new)) if self.modules.contains_key(*new) => Lookup::Module(new.to_string()),
            _ => Lookup::Unknown,
        }
    }

    /// The module an exact (wildcard-free) alias names. When several modules carry it
    /// (`crc32c`: crc32c_generic and crc32c_intel), the `_generic` one wins because it loads
    /// on every CPU; otherwise the first by name, so the choice is stable.
    pub fn resolve_alias(&self, alias: &str) -> Option<String> {
        let want = normalize_name(alias);
        let matches: Vec<&String> = self
            .modules
            .values()
            .filter(|m| m.aliases.iter().any(|a| normalize_name(a) == want))
            .map(|m| &m.name)
            .collect();
        matches
            .iter()
            .find(|n| n.ends_with("_generic"))
            .or(matches.first())
            .map(|n| n.to_string())
    }

    /// Depth-first post-order: a module comes after everything it needs.
    fn visit(&self, name: &str, walk: &mut Walk) -> Result<()> {
        if !walk.seen.insert(name.to_string()) {
            return Ok(()); // done, or in progress through a softdep cycle
        }
        let info = &self.modules[name];
        for pre in &info.softdep_pre {
            // A soft dependency is optional by nature: load it when this kernel has it as a
            // module (a built-in one is already there).
            if let Lookup::Module(t) = self.lookup(pre) {
                self.visit(&t, walk)?;
            }
        }
        for dep in &info.depends {
            if self.builtin.contains(dep) {
                continue;
            }
            if !self.modules.contains_key(dep) {
                return Err(KmodError::MissingDependency {
                    module: name.to_string(),
                    dep: dep.clone(),
                    kver: self.kver.clone(),
                }
                .into());
            }
            self.visit(dep, walk)?;
        }
        walk.order.push(name.to_string());
        Ok(())
    }

    /// Hard dependencies only (what `modules.dep` lists), transitively, dependencies first.
    fn hard_deps(&self, name: &str) -> Result<Vec<String>> {
        fn go(
            ix: &ModuleIndex,
            name: &str,
            seen: &mut BTreeSet<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            for dep in &ix.modules[name].depends {
                if ix.modules.contains_key(dep) && seen.insert(dep.clone()) {
                    go(ix, dep, seen, out)?;
                    out.push(dep.clone());
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        go(self, name, &mut BTreeSet::new(), &mut out)?;
        Ok(out)
    }

    /// Path of a module relative to the modules directory, as index files name it.
    fn rel_path(&self, info: &ModuleInfo) -> String {
        let full = info.path.as_str();
        full.strip_prefix(self.dir.as_str())
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_string()
    }

    /// Copies the closure of `modules` from `src` into `dst` (same paths, same metadata), the
    /// shipped `modules.builtin*`/`modules.order`, and writes the generated index files:
    /// `modules.dep`, `modules.alias`, `modules.softdep` (text, for busybox and humans) and
    /// `modules.dep.bin`, `modules.alias.bin`, `modules.builtin.bin`, `modules.builtin.alias.bin`
    /// (kmod's binary tries, which kmod's `modprobe` requires). Calling it again on the same
    /// `dst` adds modules: the index files then cover both sets.
    pub fn install(&self, src: &Tree, dst: &mut Tree, modules: &[String]) -> Result<()> {
        let names: Vec<&str> = modules.iter().map(String::as_str).collect();
        let mut wanted: BTreeSet<String> = self.closure(&names)?.into_iter().collect();
        // Modules a previous install put there stay in the index files written now.
        wanted.extend(
            self.modules
                .values()
                .filter(|m| dst.get_path(&m.path).is_some())
                .map(|m| m.name.clone()),
        );
        let mut chosen: Vec<&ModuleInfo> = wanted.iter().map(|n| &self.modules[n]).collect();
        // depmod's order: modules.order first, then the rest by path.
        chosen.sort_by_key(|m| {
            (
                self.order.get(&m.name).copied().unwrap_or(usize::MAX),
                m.path.clone(),
            )
        });

        for m in &chosen {
            let entry = src
                .get_path(&m.path)
                .with_context(|| format!("module {} vanished from the tree", m.path))?;
            dst.insert(&m.path, entry.clone())?;
        }
        for f in SHIPPED_INDEX_FILES {
            let p = self.dir.join(f)?;
            if let Some(e) = src.get_path(&p) {
                dst.insert(&p, e.clone())?;
            }
        }
        let files = self.index_files(&chosen, src)?;
        for (name, data) in files {
            let p = self.dir.join(name)?;
            dst.insert(&p, Entry::file(Content::bytes(data), 0o644))?;
        }
        Ok(())
    }

    /// The generated index files for `chosen` (already in depmod order).
    fn index_files(
        &self,
        chosen: &[&ModuleInfo],
        src: &Tree,
    ) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let mut dep_txt = String::new();
        let mut dep_bin = Trie::default();
        let mut alias_txt = String::from("# Aliases extracted from modules themselves.\n");
        let mut alias_bin = Trie::default();
        let mut softdep_txt =
            String::from("# Soft dependencies extracted from modules themselves.\n");
        for (prio, m) in chosen.iter().enumerate() {
            let prio = prio as u32;
            // depmod lists dependencies in reverse load order; modprobe loads them from the end.
            let deps: Vec<String> = self
                .hard_deps(&m.name)?
                .iter()
                .rev()
                .map(|d| self.rel_path(&self.modules[d]))
                .collect();
            let mut line = format!("{}:", self.rel_path(m));
            for d in &deps {
                line.push(' ');
                line.push_str(d);
            }
            dep_txt.push_str(&line);
            dep_txt.push('\n');
            dep_bin.insert(&m.name, &line, prio)?;
            for a in &m.aliases {
                alias_txt.push_str(&format!("alias {a} {}\n", m.name));
                alias_bin.insert(&normalize_alias(a), &m.name, prio)?;
            }
            if !m.softdep_pre.is_empty() || !m.softdep_post.is_empty() {
                let mut s = format!("softdep {}", m.name);
                if !m.softdep_pre.is_empty() {
                    s.push_str(&format!(" pre: {}", m.softdep_pre.join(" ")));
                }
                if !m.softdep_post.is_empty() {
                    s.push_str(&format!(" post: {}", m.softdep_post.join(" ")));
                }
                softdep_txt.push_str(&s);
                softdep_txt.push('\n');
            }
        }
        let mut builtin_bin = Trie::default();
        for b in &self.builtin {
            builtin_bin.insert(b, "", 0)?;
        }
        let mut builtin_alias_bin = Trie::default();
        for (module, alias) in builtin_aliases(src, &self.dir)? {
            builtin_alias_bin.insert(&normalize_alias(&alias), &module, 0)?;
        }
        Ok(vec![
            ("modules.dep", dep_txt.into_bytes()),
            ("modules.dep.bin", dep_bin.encode()),
            ("modules.alias", alias_txt.into_bytes()),
            ("modules.alias.bin", alias_bin.encode()),
            ("modules.softdep", softdep_txt.into_bytes()),
            ("modules.builtin.bin", builtin_bin.encode()),
            ("modules.builtin.alias.bin", builtin_alias_bin.encode()),
        ])
    }
}

enum Lookup {
    Module(String),
    Builtin,
    Unknown,
}

#[derive(Default)]
struct Walk {
    seen: BTreeSet<String>,
    order: Vec<String>,
}

/// Lines of a shipped text file in the modules directory (empty when absent).
fn read_lines(tree: &Tree, dir: &TreePath, name: &str) -> Vec<String> {
    let Ok(p) = dir.join(name) else {
        return Vec::new();
    };
    let Some(data) = tree.get_path(&p).and_then(|e| match &e.kind {
        Kind::File(c) => c.read_all().ok(),
        _ => None,
    }) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&data)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `(module, alias)` pairs of built-in modules from `modules.builtin.modinfo`
/// (`ext4.alias=fs-ext4\0...`).
fn builtin_aliases(tree: &Tree, dir: &TreePath) -> Result<Vec<(String, String)>> {
    let p = dir.join("modules.builtin.modinfo")?;
    let Some(Entry {
        kind: Kind::File(c),
        ..
    }) = tree.get_path(&p)
    else {
        return Ok(Vec::new());
    };
    let data = c.read_all().with_context(|| format!("reading {p}"))?;
    let mut out = Vec::new();
    for rec in data.split(|b| *b == 0) {
        let rec = String::from_utf8_lossy(rec);
        let Some((module, rest)) = rec.split_once('.') else {
            continue;
        };
        if let Some(alias) = rest.strip_prefix("alias=") {
            out.push((normalize_name(module), alias.to_string()));
        }
    }
    Ok(out)
}

/// kmod's alias normalization for index keys: `-` becomes `_` outside `[...]` classes.
fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_class = false;
    for c in alias.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            '-' if !in_class => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Decompresses one module file and reads its `.modinfo`.
fn read_module(path: &TreePath, content: &Content) -> Result<ModuleInfo> {
    let raw = content
        .read_all()
        .with_context(|| format!("reading {path}"))?;
    let elf = decompress(path.file_name(), &raw)?;
    let bad = |reason: String| KmodError::BadModule {
        path: path.to_string(),
        reason,
    };
    let file = object::File::parse(&elf[..]).map_err(|e| bad(format!("not ELF ({e})")))?;
    use object::{Object, ObjectSection};
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let data = section
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo ({e})")))?;
    let fallback = name_from_file(path.file_name()).unwrap_or_default();
    Ok(parse_modinfo(data, path.clone(), &fallback))
}

fn decompress(file: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    if file.ends_with(".xz") {
        liblzma::read::XzDecoder::new(raw)
            .read_to_end(&mut out)
            .with_context(|| format!("{file}: bad xz data"))?;
    } else if file.ends_with(".zst") {
        zstd::stream::read::Decoder::new(raw)?
            .read_to_end(&mut out)
            .with_context(|| format!("{file}: bad zstd data"))?;
    } else if file.ends_with(".gz") {
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .with_context(|| format!("{file}: bad gzip data"))?;
    } else {
        out.extend_from_slice(raw);
    }
    Ok(out)
}

/// Parses `.modinfo`: NUL-separated `key=value` strings.
fn parse_modinfo(data: &[u8], path: TreePath, fallback_name: &str) -> ModuleInfo {
    let mut info = ModuleInfo {
        name: String::new(),
        path,
        depends: Vec::new(),
        aliases: Vec::new(),
        softdep_pre: Vec::new(),
        softdep_post: Vec::new(),
    };
    for rec in data.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8_lossy(rec);
        let Some((key, value)) = rec.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = normalize_name(value),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(normalize_name),
            ),
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => parse_softdep(value, &mut info.softdep_pre, &mut info.softdep_post),
            _ => {}
        }
    }
    if info.name.is_empty() {
        info.name = fallback_name.to_string();
    }
    info
}

/// `pre: a b post: c` (either part optional, in any order).
fn parse_softdep(value: &str, pre: &mut Vec<String>, post: &mut Vec<String>) {
    let mut target: Option<&mut Vec<String>> = None;
    for tok in value.split_whitespace() {
        match tok {
            "pre:" => target = Some(&mut *pre),
            "post:" => target = Some(&mut *post),
            t => {
                if let Some(v) = target.as_deref_mut() {
                    v.push(t.to_string());
                }
            }
        }
    }
}

// ---- kmod's binary index (libkmod-index / depmod's index_write), big-endian ----

const INDEX_MAGIC: u32 = 0xB007_F457;
const INDEX_VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;

/// A radix trie node exactly as depmod builds it: the edge character is not part of the
/// child's prefix; values are kept sorted by priority (stable for equal priorities).
#[derive(Default)]
struct Trie {
    prefix: Vec<u8>,
    children: BTreeMap<u8, Trie>,
    values: Vec<(u32, String)>,
}

impl Trie {
    fn insert(&mut self, key: &str, value: &str, priority: u32) -> Result<()> {
        for s in [key, value] {
            if s.bytes().any(|b| !(0x20..0x80).contains(&b) && b != b'\t') {
                return Err(KmodError::BadIndexString(s.to_string()).into());
            }
        }
        if key.is_empty() {
            bail!("empty key in a kernel module index");
        }
        let key = key.as_bytes();
        let mut node = self;
        let mut i = 0;
        loop {
            // Split the node where its prefix stops matching the key.
            let common = node
                .prefix
                .iter()
                .zip(&key[i..])
                .take_while(|(a, b)| a == b)
                .count();
            if common < node.prefix.len() {
                let edge = node.prefix[common];
                let child = Trie {
                    prefix: node.prefix[common + 1..].to_vec(),
                    children: std::mem::take(&mut node.children),
                    values: std::mem::take(&mut node.values),
                };
                node.prefix.truncate(common);
                node.children.insert(edge, child);
            }
            i += common;
            let Some(&ch) = key.get(i) else {
                let at = node
                    .values
                    .iter()
                    .position(|(p, _)| *p > priority)
                    .unwrap_or(node.values.len());
                node.values.insert(at, (priority, value.to_string()));
                return Ok(());
            };
            node = match node.children.entry(ch) {
                MapEntry::Vacant(slot) => {
                    // A new leaf holds the whole rest of the key as its prefix.
                    slot.insert(Trie {
                        prefix: key[i + 1..].to_vec(),
                        children: BTreeMap::new(),
                        values: vec![(priority, value.to_string())],
                    });
                    return Ok(());
                }
                MapEntry::Occupied(child) => child.into_mut(),
            };
            i += 1;
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let root = self.write(&mut out);
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    /// Children first, then the node; returns the node's offset with its flag bits.
    fn write(&self, out: &mut Vec<u8>) -> u32 {
        let mut child_offsets = Vec::new();
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            for ch in first..=last {
                child_offsets.push(self.children.get(&ch).map_or(0, |c| c.write(out)));
            }
        }
        let mut offset = out.len() as u32;
        if !self.prefix.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.push(0);
            offset |= NODE_PREFIX;
        }
        if !child_offsets.is_empty() {
            out.push(*self.children.keys().next().unwrap_or(&0));
            out.push(*self.children.keys().next_back().unwrap_or(&0));
            for o in child_offsets {
                out.extend_from_slice(&o.to_be_bytes());
            }
            offset |= NODE_CHILDS;
        }
        if !self.values.is_empty() {
            out.extend_from_slice(&(self.values.len() as u32).to_be_bytes());
            for (prio, v) in &self.values {
                out.extend_from_slice(&prio.to_be_bytes());
                out.extend_from_slice(v.as_bytes());
                out.push(0);
            }
            offset |= NODE_VALUES;
        }
        offset
    }
}

#[cfg(test)]
pub(crate) mod testkernel {
    //! A real Debian kernel for tests: fetched once through `source::debian` from the host's
    //! APT mirror (read from the host's APT sources, never written down) and cached.

    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use anyhow::{anyhow, Context, Result};

    use crate::progress::Silent;
    use crate::source::debian::deb::unpack_deb;
    use crate::source::debian::{fetch_debs, Archive};
    use crate::tree::{Tree, TreePath};

    const SUITE: &str = "trixie";

    /// The kernel `.deb` of the suite's `linux-image-amd64`, through edgeimg's own verified
    /// chain (signed InRelease, Packages by sha256, the .deb by sha256) from the host's APT
    /// mirror, cached between runs.
    pub fn kernel_deb() -> Result<PathBuf> {
        let mirror = crate::source::debian::apt_mirror(Path::new("/"))?
            .ok_or_else(|| anyhow!("no Debian mirror in the host's APT sources (/etc/apt)"))?;
        let cache = crate::source::debian::testutil::shared_cache();
        let archive = Archive::load(&cache, &mirror, SUITE, "amd64", &["main"], &Silent)?;
        let meta = archive
            .get("linux-image-amd64")
            .ok_or_else(|| anyhow!("no linux-image-amd64 in {SUITE}"))?;
        // The metapackage depends on the versioned kernel package.
        let kernel = meta
            .depends
            .iter()
            .flatten()
            .find(|d| d.name.starts_with("linux-image-") && d.name != "linux-image-amd64")
            .and_then(|d| archive.get(&d.name))
            .ok_or_else(|| anyhow!("linux-image-amd64 in {SUITE} names no kernel package"))?;
        let debs = fetch_debs(
            &cache,
            &archive.mirror,
            std::slice::from_ref(kernel),
            &Silent,
        )?;
        Ok(debs[0].path.clone())
    }

    /// `usr/lib/modules` of the kernel package, unpacked with edgeimg's .deb reader.
    pub fn unpack_modules(deb: &Path) -> Result<Tree> {
        let mut tree = Tree::new();
        tree.add_dir("usr/lib", 0o755)?;
        tree.add_symlink("lib", "usr/lib")?;
        let mut keep = |p: &TreePath| {
            p.as_str().starts_with("usr/lib/modules/") || p.as_str().starts_with("lib/modules/")
        };
        unpack_deb(deb, &mut tree, &mut keep)?;
        Ok(tree)
    }

    /// The real kernel's modules, unpacked once per test process.
    pub fn modules_tree() -> Result<&'static Tree> {
        static TREE: OnceLock<std::result::Result<Tree, String>> = OnceLock::new();
        TREE.get_or_init(|| {
            kernel_deb()
                .and_then(|d| unpack_modules(&d))
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("preparing the test kernel: {e}"))
    }

    /// Writes the tree's files below `usr/lib/modules` to `<base>/lib/modules` (depmod's -b
    /// layout on the host; kmod 30 looks under `<base>/lib/modules`).
    pub fn write_modules(tree: &Tree, base: &Path) -> Result<()> {
        for (p, e) in tree.iter() {
            let Some(rest) = p.as_str().strip_prefix("usr/lib/modules") else {
                continue;
            };
            let dst = base.join(format!("lib/modules{rest}"));
            match &e.kind {
                crate::tree::Kind::Dir => std::fs::create_dir_all(&dst)?,
                crate::tree::Kind::File(c) => {
                    if let Some(parent) = dst.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&dst, c.read_all()?)
                        .with_context(|| format!("writing {}", dst.display()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;

    fn info(name: &str, depends: &[&str], aliases: &[&str], pre: &[&str]) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            path: TreePath::new(&format!("usr/lib/modules/9.9/kernel/{name}.ko.xz")).unwrap(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            softdep_pre: pre.iter().map(|s| s.to_string()).collect(),
            softdep_post: Vec::new(),
        }
    }

    fn synthetic() -> ModuleIndex {
        let mods = [
            info(
                "ext4",
                &["jbd2", "mbcache", "crc16"],
                &["fs-ext4"],
                &["crypto-crc32c"],
            ),
            info("jbd2", &[], &[], &["crypto-crc32c"]),
            info("mbcache", &[], &[], &[]),
            info("crc16", &[], &[], &[]),
            info("crc32c_intel", &[], &["crypto-crc32c", "crc32c"], &[]),
            info("crc32c_generic", &[], &["crypto-crc32c", "crc32c"], &[]),
            info(
                "needs_builtin",
                &["unix"],
                &[],
                &["nonexistent", "net-pf-1"],
            ),
        ];
        ModuleIndex {
            kver: "9.9".into(),
            dir: TreePath::new("usr/lib/modules/9.9").unwrap(),
            modules: mods.into_iter().map(|m| (m.name.clone(), m)).collect(),
            builtin: ["unix".to_string()].into_iter().collect(),
            builtin_aliases: ["net_pf_1".to_string()].into_iter().collect(),
            order: HashMap::new(),
        }
    }

    #[test]
    fn modinfo_is_parsed_with_names_normalized() {
        let raw = b"license=GPL\0depends=mbcache,jbd2,crc-16\0alias=fs-ext4\0alias=ext3\0softdep=pre: crc32c post: foo\0name=ext4\0vermagic=6.12\0";
        let m = parse_modinfo(raw, TreePath::new("x/ext4.ko").unwrap(), "fallback");
        assert_eq!(m.name, "ext4");
        assert_eq!(m.depends, vec!["mbcache", "jbd2", "crc_16"]);
        assert_eq!(m.aliases, vec!["fs-ext4", "ext3"]);
        assert_eq!(m.softdep_pre, vec!["crc32c"]);
        assert_eq!(m.softdep_post, vec!["foo"]);
        let empty = parse_modinfo(b"depends=\0", TreePath::root(), "crc32c_intel");
        assert_eq!(empty.name, "crc32c_intel");
        assert!(empty.depends.is_empty());
    }

    #[test]
    fn file_names_and_aliases_normalize_like_kmod() {
        assert_eq!(
            name_from_file("crc32c-intel.ko.xz").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(name_from_file("ext4.ko").as_deref(), Some("ext4"));
        assert_eq!(name_from_file("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(name_from_file("modules.dep"), None);
        assert_eq!(normalize_alias("crypto-crc32c"), "crypto_crc32c");
        assert_eq!(
            normalize_alias("pci:v00001AF4d[0-9]*"),
            "pci:v00001AF4d[0-9]*"
        );
    }

    #[test]
    fn closure_puts_dependencies_first_and_resolves_softdeps() {
        let ix = synthetic();
        let c = ix.closure(&["ext4"]).unwrap();
        assert_eq!(
            c,
            vec!["crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"]
        );
        // Asking twice, or for a dependency again, adds nothing.
        assert_eq!(ix.closure(&["ext4", "jbd2", "ext4"]).unwrap(), c);
        // Built-ins are skipped; a missing softdep target is fine.
        assert_eq!(
            ix.closure(&["unix", "needs-builtin"]).unwrap(),
            vec!["needs_builtin"]
        );
        assert!(
            ix.closure(&["net-pf-1"]).unwrap().is_empty(),
            "alias of a built-in"
        );
        // An exact alias resolves, preferring the generic implementation.
        assert_eq!(ix.closure(&["crc32c"]).unwrap(), vec!["crc32c_generic"]);
    }

    #[test]
    fn unknown_module_error_names_module_and_kernel() {
        let err = synthetic()
            .closure(&["ext4", "nosuchfs"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'nosuchfs'")
                && err.contains("linux 9.9")
                && err.contains("initramfs_modules"),
            "{err}"
        );
    }

    #[test]
    fn kernel_version_needs_exactly_one() {
        let mut t = Tree::new();
        assert!(kernel_version(&t).is_err());
        t.add_dir("usr/lib/modules/6.1.0-1-amd64", 0o755).unwrap();
        assert_eq!(kernel_version(&t).unwrap(), "6.1.0-1-amd64");
        t.add_dir("usr/lib/modules/6.2.0-1-amd64", 0o755).unwrap();
        let err = kernel_version(&t).unwrap_err().to_string();
        assert!(err.contains("6.1.0-1-amd64, 6.2.0-1-amd64"), "{err}");
    }

    /// Looks a key up in an encoded index the way libkmod's index_search does.
    fn trie_lookup(buf: &[u8], key: &str) -> Vec<(u32, String)> {
        let be = |o: usize| u32::from_be_bytes(buf[o..o + 4].try_into().unwrap());
        let cstr = |o: usize| {
            let end = o + buf[o..].iter().position(|b| *b == 0).unwrap();
            (String::from_utf8(buf[o..end].to_vec()).unwrap(), end + 1)
        };
        assert_eq!(be(0), INDEX_MAGIC);
        let key = key.as_bytes();
        let mut off = be(8);
        let mut i = 0;
        loop {
            let mut pos = (off & 0x0FFF_FFFF) as usize;
            if off & NODE_PREFIX != 0 {
                let (p, next) = cstr(pos);
                if !key[i..].starts_with(p.as_bytes()) {
                    return Vec::new();
                }
                i += p.len();
                pos = next;
            }
            let mut child = 0;
            if off & NODE_CHILDS != 0 {
                let (first, last) = (buf[pos], buf[pos + 1]);
                if i < key.len() && (first..=last).contains(&key[i]) {
                    child = be(pos + 2 + 4 * (key[i] - first) as usize);
                }
                pos += 2 + 4 * (last - first + 1) as usize;
            }
            if i == key.len() {
                let mut out = Vec::new();
                if off & NODE_VALUES != 0 {
                    let n = be(pos);
                    pos += 4;
                    for _ in 0..n {
                        let prio = be(pos);
                        let (v, next) = cstr(pos + 4);
                        out.push((prio, v));
                        pos = next;
                    }
                }
                return out;
            }
            if child == 0 {
                return Vec::new();
            }
            off = child;
            i += 1;
        }
    }

    #[test]
    fn trie_splits_prefixes_and_keeps_values_by_priority() {
        let mut t = Trie::default();
        for (k, v, p) in [
            ("ext4", "e", 3),
            ("ext2", "x", 1),
            ("ex", "short", 2),
            ("crc32c", "b", 5),
            ("crc32c", "a", 4),
        ] {
            t.insert(k, v, p).unwrap();
        }
        let buf = t.encode();
        assert_eq!(&buf[4..8], &INDEX_VERSION.to_be_bytes());
        assert_eq!(trie_lookup(&buf, "ext4"), vec![(3, "e".to_string())]);
        assert_eq!(trie_lookup(&buf, "ext2"), vec![(1, "x".to_string())]);
        assert_eq!(trie_lookup(&buf, "ex"), vec![(2, "short".to_string())]);
        assert_eq!(
            trie_lookup(&buf, "crc32c"),
            vec![(4, "a".to_string()), (5, "b".to_string())]
        );
        assert!(trie_lookup(&buf, "ext").is_empty());
        assert!(trie_lookup(&buf, "ext44").is_empty());
        assert!(t.insert("bad\u{e9}", "v", 0).is_err());
    }

    // ---- against the real Debian kernel and the real depmod/modprobe ----

    fn real_index() -> (&'static Tree, &'static ModuleIndex) {
        static INDEX: OnceLock<ModuleIndex> = OnceLock::new();
        let tree = testkernel::modules_tree().expect("test kernel");
        let ix = INDEX.get_or_init(|| {
            let kver = kernel_version(tree).expect("kernel version");
            ModuleIndex::scan(tree, &kver).expect("scan")
        });
        (tree, ix)
    }

    fn need_tool(tool: &str) {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .chain(["/usr/sbin".into(), "/sbin".into()])
                    .any(|d| d.join(tool).exists())
            })
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: install it with `apt-get install -y kmod`"
        );
    }

    /// depmod's modules.dep as `module name -> set of dependency names`.
    fn dep_sets(modules_dep: &str) -> BTreeMap<String, BTreeSet<String>> {
        let name = |p: &str| name_from_file(p.rsplit('/').next().unwrap()).unwrap();
        modules_dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(m, deps)| (name(m), deps.split_whitespace().map(name).collect()))
            .collect()
    }

    fn reference_depmod(kver: &str) -> &'static str {
        static DEP: OnceLock<String> = OnceLock::new();
        DEP.get_or_init(|| {
            need_tool("depmod");
            let (tree, _) = real_index();
            let base = tempfile::tempdir().unwrap();
            testkernel::write_modules(tree, base.path()).unwrap();
            let out = Command::new("depmod")
                .arg("-b")
                .arg(base.path())
                .arg(kver)
                .output()
                .expect("running depmod");
            assert!(
                out.status.success(),
                "depmod: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::read_to_string(base.path().join(format!("lib/modules/{kver}/modules.dep")))
                .unwrap()
        })
    }

    #[test]
    fn real_kernel_scan_and_closures() {
        let (_, ix) = real_index();
        assert!(ix.len() > 3000, "only {} modules", ix.len());
        assert!(ix.is_builtin("unix") || !ix.builtin.is_empty());
        let ext4 = ix.closure(&["ext4"]).unwrap();
        assert_eq!(ext4.last().map(String::as_str), Some("ext4"));
        for m in ["crc16", "mbcache", "jbd2", "crc32c_generic"] {
            assert!(ext4.contains(&m.to_string()), "{m} missing from {ext4:?}");
        }
        assert!(!ext4.contains(&"crc32c_intel".to_string()), "{ext4:?}");
        let pos = |m: &str| ext4.iter().position(|x| x == m).unwrap();
        assert!(pos("jbd2") < pos("ext4") && pos("crc32c_generic") < pos("jbd2"));
        // Dashes and underscores are the same name; the order is the same each time.
        let nvme = ix.closure(&["nvme", "nvme-core"]).unwrap();
        assert_eq!(nvme, ix.closure(&["nvme", "nvme_core"]).unwrap());
        assert!(nvme.iter().position(|m| m == "nvme_core") < nvme.iter().position(|m| m == "nvme"));
        let err = ix.closure(&["no_such_module"]).unwrap_err().to_string();
        assert!(err.contains(&ix.kver), "{err}");
    }

    /// Every module's dependency set equals real depmod's, over the whole kernel.
    #[test]
    fn real_kernel_dependencies_match_depmod() {
        let (tree, ix) = real_index();
        let mut dst = Tree::new();
        let all: Vec<String> = ix.modules().map(|m| m.name.clone()).collect();
        ix.install(tree, &mut dst, &all).unwrap();
        let ours = String::from_utf8(
            dst.read(&format!("{}/modules.dep", ix.dir()))
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let theirs = dep_sets(reference_depmod(&ix.kver));
        let ours = dep_sets(&ours);
        assert_eq!(ours.len(), theirs.len());
        for (m, deps) in &theirs {
            assert_eq!(ours.get(m), Some(deps), "dependencies of {m}");
        }
    }

    /// An initramfs-sized install works with kmod's modprobe (binary indexes) and has
    /// busybox-compatible text files.
    #[test]
    fn real_kernel_install_works_with_modprobe() {
        need_tool("modprobe");
        let (tree, ix) = real_index();
        let wanted = [
            "squashfs",
            "overlay",
            "ext4",
            "virtio_blk",
            "virtio_net",
            "br_netfilter",
            "nf_conntrack",
        ];
        let closure = ix.closure(&wanted).unwrap();
        let mut dst = Tree::new();
        ix.install(tree, &mut dst, &closure).unwrap();
        let dir = ix.dir().as_str();
        for m in &closure {
            assert!(
                dst.get_path(&ix.get(m).unwrap().path).is_some(),
                "{m} not installed"
            );
        }
        assert!(dst.get(&format!("{dir}/modules.builtin")).is_some());
        let installed_modules = dst
            .iter()
            .filter(|(p, _)| p.as_str().contains(".ko"))
            .count();
        assert_eq!(installed_modules, closure.len());
        // A second install adds to the first; the index covers both.
        let mut twice = dst.clone();
        ix.install(tree, &mut twice, &["vfat".to_string()]).unwrap();
        let dep2 =
            String::from_utf8(twice.read(&format!("{dir}/modules.dep")).unwrap().to_vec()).unwrap();
        assert!(
            dep2.contains("kernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz"),
            "{dep2}"
        );
        assert!(
            dep2.contains("kernel/fs/ext4/ext4.ko.xz:"),
            "the first install's modules were dropped"
        );

        let dep =
            String::from_utf8(dst.read(&format!("{dir}/modules.dep")).unwrap().to_vec()).unwrap();
        let theirs = dep_sets(reference_depmod(&ix.kver));
        for (m, deps) in dep_sets(&dep) {
            assert_eq!(Some(&deps), theirs.get(&m), "dependencies of {m}");
        }
        assert!(
            dep.lines()
                .any(|l| l.starts_with("kernel/fs/ext4/ext4.ko.xz: ")),
            "{dep}"
        );
        let alias =
            String::from_utf8(dst.read(&format!("{dir}/modules.alias")).unwrap().to_vec()).unwrap();
        assert!(
            alias.lines().any(|l| l == "alias fs-ext4 ext4"),
            "no fs-ext4 alias"
        );

        let base = tempfile::tempdir().unwrap();
        testkernel::write_modules(&dst, base.path()).unwrap();
        let show = |what: &str| -> String {
            let out = Command::new("modprobe")
                .arg("-d")
                .arg(base.path())
                .args(["-S", &ix.kver, "--show-depends", what])
                .output()
                .expect("running modprobe");
            assert!(
                out.status.success(),
                "modprobe {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let loads = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("insmod "))
                .map(|p| {
                    name_from_file(Path::new(p.trim()).file_name().unwrap().to_str().unwrap())
                        .unwrap()
                })
                .collect()
        };
        // kmod loads what our modules.dep.bin lists, in an order where dependencies come first.
        for m in ["ext4", "br_netfilter", "nf_conntrack"] {
            let order = loads(&show(m));
            assert_eq!(order.last().map(String::as_str), Some(m), "{order:?}");
            // kmod also reads our modules.softdep, so it loads the softdep modules too.
            let want: BTreeSet<String> = ix.closure(&[m]).unwrap().into_iter().collect();
            assert_eq!(
                order.iter().cloned().collect::<BTreeSet<_>>(),
                want,
                "modprobe --show-depends {m}"
            );
            for (i, x) in order.iter().enumerate() {
                for d in &ix.get(x).unwrap().depends {
                    let at = order.iter().position(|y| y == d).unwrap();
                    assert!(at < i, "{d} loads after {x}: {order:?}");
                }
            }
        }
        // Aliases resolve through modules.alias.bin, built-ins through modules.builtin.bin.
        assert_eq!(
            loads(&show("fs-ext4")).last().map(String::as_str),
            Some("ext4")
        );
        assert!(loads(&show("crypto-crc32c")).contains(&"crc32c_generic".to_string()));
        let builtin = ix.builtin.iter().next().unwrap().clone();
        assert!(show(&builtin).contains("builtin"), "built-in {builtin}");
    }
}
