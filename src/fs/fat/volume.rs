//! Reading and editing an existing FAT32 volume in place, through any `Read + Write + Seek`
//! (an image file at the partition's offset, or a block device).
//!
//! The whole FAT is held in memory (8 MiB for a 32 GiB card with 16 KiB clusters); an edit
//! writes back only the FAT sectors it changed, in every FAT copy, the directory entries it
//! touched, the clusters it filled and the FSInfo counters. Allocation is first-fit from
//! cluster 2, so the same edit on the same volume gives the same bytes.
//!
//! Every walk is bounded: a cluster chain may not loop or outgrow what its entry needs (a
//! file its size, a directory 2 MiB), a directory entry may not point at the root, at itself
//! or at any directory already seen, and no cluster may belong to two entries. A damaged
//! volume is an error naming the path, never an endless walk.
//!
//! [`FatVolume::replace_dir`] (in `replace.rs`) swaps a whole directory for a new one so that
//! an interruption at any write leaves the old or the new directory, each whole.

mod replace;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};

use super::dirent::{
    check_long_name, dot_entries, lfn_entries, parse_dir, set_cluster, set_times, short_entry,
    DirItem, ShortNames, ATTR_ARCHIVE, ATTR_DIR, DELETED, ENTRY_SIZE,
};
use super::layout::{le32, update_fsinfo, Geometry, BAD, ENTRY_MASK, EOC, EOC_MIN, SECTOR};
use super::{io_err, FatError};
use crate::tree::{Content, Entry, Tree, TreePath};
use crate::util::window::OffsetWriter;

pub use replace::ReplaceStats;

/// Entries per FAT sector.
const FAT_ENTRIES_PER_SECTOR: usize = (SECTOR / 4) as usize;
/// Most bytes one directory may hold (65536 entries).
const MAX_DIR_BYTES: u64 = 65536 * ENTRY_SIZE as u64;

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryInfo {
    /// The long name when there is one, else the 8.3 name.
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// One entry found by [`FatVolume::walk`], its cluster chain checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkEntry {
    /// From the volume's root, `/`-separated, without a leading `/`.
    pub path: String,
    pub is_dir: bool,
    /// Bytes of a file (0 for a directory).
    pub size: u64,
    /// The entry's cluster chain.
    pub(crate) clusters: Vec<u32>,
}

/// An open FAT32 volume. Paths are `/`-separated from the volume's root, looked up
/// case-insensitively by long or short name.
pub struct FatVolume<F: Read + Write + Seek> {
    file: RefCell<F>,
    base: u64,
    geom: Geometry,
    volume_id: u32,
    label: String,
    /// Raw FAT entries (the reserved top 4 bits kept as found), whole sectors of them.
    fat: Vec<u32>,
    dirty_fat_sectors: BTreeSet<usize>,
    free: u32,
    mtime: u64,
}

/// Where an entry lives: its directory (first cluster) and its entry there.
struct Located {
    dir_cluster: u32,
    item: DirItem,
}

/// A directory's raw content.
struct DirData {
    chain: Vec<u32>,
    bytes: Vec<u8>,
}

impl<F: Read + Write + Seek> FatVolume<F> {
    /// Opens the FAT32 volume that starts at byte `base` of `file`, checking its boot sector.
    pub fn open(file: F, base: u64) -> Result<Self, FatError> {
        Self::open_within(file, base, None)
    }

    fn open_within(file: F, base: u64, limit: Option<u64>) -> Result<Self, FatError> {
        let mut file = file;
        let mut boot = [0u8; 512];
        read_exact_at(&mut file, base, &mut boot, "reading the FAT boot sector")?;
        let (geom, volume_id, label) = Geometry::parse(&boot)?;
        if let Some(limit) = limit {
            geom.check_within(limit)?;
        }
        // Whole sectors of entries, so that a changed sector is written back from memory.
        let sectors = (geom.cluster_count as usize + 2).div_ceil(FAT_ENTRIES_PER_SECTOR);
        let mut raw = vec![0u8; sectors * SECTOR as usize];
        let what = "reading the file allocation table";
        read_exact_at(&mut file, base + geom.fat_offset(0), &mut raw, what)?;
        let fat: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        // Counted rather than taken from FSInfo, which is only a hint.
        let free = (2..geom.cluster_count + 2)
            .filter(|&c| fat[c as usize] & ENTRY_MASK == 0)
            .count() as u32;
        Ok(FatVolume {
            file: RefCell::new(file),
            base,
            geom,
            volume_id,
            label,
            fat,
            dirty_fat_sectors: BTreeSet::new(),
            free,
            mtime: 0,
        })
    }

    /// Checks that every FAT copy holds the same entries as the first (the one this editor
    /// reads and keeps the others equal to).
    pub fn check_fat_copies(&self) -> Result<(), FatError> {
        let len = (self.geom.cluster_count as usize + 2) * 4;
        let first: Vec<u8> = self.fat.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut other = vec![0u8; len];
        for copy in 1..self.geom.num_fats {
            self.read_at(
                self.geom.fat_offset(copy),
                &mut other,
                "reading a copy of the file allocation table",
            )?;
            if let Some(i) =
                (0..len / 4).find(|&i| other[i * 4..i * 4 + 4] != first[i * 4..i * 4 + 4])
            {
                return Err(FatError::Corrupt(format!(
                    "FAT copy {} differs from the first at cluster {i} (as after a card pulled \
                     out while mounted)",
                    copy + 1
                )));
            }
        }
        Ok(())
    }

    /// The time given to entries this editor creates or changes (Unix seconds).
    pub fn set_mtime(&mut self, mtime: u64) {
        self.mtime = mtime;
    }

    pub fn volume_id(&self) -> u32 {
        self.volume_id
    }

    /// The label from the boot sector, without padding ("" when there is none).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.geom.cluster_bytes()
    }

    pub fn clusters_total(&self) -> u32 {
        self.geom.cluster_count
    }

    pub fn clusters_free(&self) -> u32 {
        self.free
    }

    /// Gives back the underlying file.
    pub fn into_inner(self) -> F {
        self.file.into_inner()
    }

    /// The entries of directory `dir` ("/" or "" for the root), in on-disk order.
    pub fn list(&self, dir: &str) -> Result<Vec<DirEntryInfo>, FatError> {
        let cluster = self.dir_cluster(dir)?;
        let data = self.read_dir(cluster, dir)?;
        Ok(parse_dir(&data.bytes)
            .items
            .into_iter()
            .map(|i| DirEntryInfo {
                is_dir: i.is_dir(),
                size: u64::from(i.size),
                name: i.name,
            })
            .collect())
    }

    /// Every entry below directory `dir` ("" for the whole volume), parents before their
    /// children. Checks, before returning anything, every cluster chain on the way (in the
    /// volume, in use, no loop, exactly as long as a file's size needs), that no directory
    /// entry points at the root, at itself or at a directory already seen, and that no
    /// cluster belongs to two entries. Errors name the path.
    pub fn walk(&self, dir: &str) -> Result<Vec<WalkEntry>, FatError> {
        let start = self.dir_cluster(dir)?;
        let top = normalize(dir);
        let mut used = vec![0u64; (self.geom.cluster_count as usize + 2).div_ceil(64)];
        let mut owners: Vec<(String, Vec<u32>)> = Vec::new();
        let top_chain = self.chain_of(start, self.dir_max_clusters(), &top)?;
        self.claim(&mut used, &owners, &top, &top_chain)?;
        owners.push((top.clone(), top_chain.clone()));
        let mut seen: HashMap<u32, String> = HashMap::new();
        seen.insert(start, top.clone());
        seen.entry(self.geom.root_cluster).or_default();
        let mut out = Vec::new();
        // Depth first, each directory's entries in on-disk order, without recursion: a stack
        // of directories being listed, each with its entries and the next one to take.
        let first = parse_dir(&self.read_dir_chain(&top_chain, &top)?.bytes).items;
        let mut stack = vec![(top, first.into_iter())];
        while let Some((dir_path, items)) = stack.last_mut() {
            let Some(item) = items.next() else {
                stack.pop();
                continue;
            };
            let dir_path = dir_path.clone();
            if item.name.contains('/') || item.name.is_empty() {
                return Err(FatError::Corrupt(format!(
                    "{}: an entry named {:?}",
                    display_path(&dir_path),
                    item.name
                )));
            }
            let path = join(&dir_path, &item.name);
            let clusters = if item.is_dir() {
                let c = item.first_cluster;
                if c == 0 || c == self.geom.root_cluster {
                    return Err(FatError::Corrupt(format!(
                        "{path}: the directory entry points at the root directory \
                         (a directory loop)"
                    )));
                }
                if let Some(other) = seen.get(&c) {
                    return Err(FatError::Corrupt(format!(
                        "{path}: the directory entry points at cluster {c}, which is the \
                         directory {} (a directory loop)",
                        display_path(other)
                    )));
                }
                seen.insert(c, path.clone());
                self.chain_of(c, self.dir_max_clusters(), &path)?
            } else {
                self.file_chain(&item, &path)?
            };
            self.claim(&mut used, &owners, &path, &clusters)?;
            owners.push((path.clone(), clusters.clone()));
            let children = if item.is_dir() {
                Some(parse_dir(&self.read_dir_chain(&clusters, &path)?.bytes).items)
            } else {
                None
            };
            out.push(WalkEntry {
                path: path.clone(),
                is_dir: item.is_dir(),
                size: u64::from(item.size),
                clusters,
            });
            if let Some(children) = children {
                stack.push((path, children.into_iter()));
            }
        }
        Ok(out)
    }

    /// Marks `chain` as `path`'s; a cluster already marked is a cross-link.
    fn claim(
        &self,
        used: &mut [u64],
        owners: &[(String, Vec<u32>)],
        path: &str,
        chain: &[u32],
    ) -> Result<(), FatError> {
        for &c in chain {
            let (word, bit) = (c as usize / 64, 1u64 << (c % 64));
            if used[word] & bit != 0 {
                let other = owners
                    .iter()
                    .find(|(_, ch)| ch.contains(&c))
                    .map(|(p, _)| display_path(p))
                    .unwrap_or_else(|| path.to_string());
                return Err(FatError::Corrupt(format!(
                    "{} and {other} both use cluster {c} (cross-linked)",
                    display_path(path)
                )));
            }
            used[word] |= bit;
        }
        Ok(())
    }

    /// A file's content, or `None` when nothing has that path.
    pub fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, FatError> {
        let Some(found) = self.locate(path)? else {
            return Ok(None);
        };
        if found.item.is_dir() {
            return Err(FatError::IsADirectory(path.to_string()));
        }
        let chain = self.file_chain(&found.item, path)?;
        self.read_content(&chain, u64::from(found.item.size), path)
            .map(Some)
    }

    /// Creates or replaces a file, creating missing parent directories. A replaced file keeps
    /// its directory entry (and name); its old clusters are freed first, so a file that
    /// shrinks or grows in place ends up in the lowest free clusters.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        let size = u32::try_from(data.len()).map_err(|_| FatError::FileTooLarge {
            path: path.to_string(),
            size: data.len() as u64,
        })?;
        let (parents, name) = split_path(path)?;
        for part in parents.iter().chain([&name]) {
            check_long_name(part).map_err(|reason| FatError::InvalidName {
                path: path.to_string(),
                reason,
            })?;
        }
        let reclaimable = match self.locate(path)? {
            Some(l) if l.item.is_dir() => return Err(FatError::IsADirectory(path.to_string())),
            Some(l) => self.file_chain(&l.item, path)?.len() as u32,
            None => 0,
        };
        self.check_room(&parents, data.len() as u64, reclaimable)?;
        let dir_cluster = self.make_dirs(&parents, path)?;
        let dir = self.read_dir(dir_cluster, path)?;
        let existing = parse_dir(&dir.bytes)
            .items
            .into_iter()
            .find(|i| i.matches(name));
        if let Some(item) = &existing {
            let chain = self.file_chain(item, path)?;
            self.free_clusters(&chain);
        }
        let first = self.allocate(self.clusters_for(data.len() as u64))?;
        let chain = self.chain_of(first, u64::from(self.geom.cluster_count), path)?;
        self.write_runs(&chain, data, &format!("writing {path}"))?;
        match existing {
            Some(item) => {
                let at = self.slot_offset(&dir.chain, item.short_slot);
                let mut e = [0u8; ENTRY_SIZE];
                self.read_at(at, &mut e, &format!("reading the entry of {path}"))?;
                set_cluster(&mut e, first);
                e[28..32].copy_from_slice(&size.to_le_bytes());
                set_times(&mut e, self.mtime);
                self.write_at(at, &e, &format!("updating the entry of {path}"))?;
            }
            None => self.add_entry(dir_cluster, name, ATTR_ARCHIVE, first, size, path)?,
        }
        self.flush()
    }

    /// Refuses an edit that might not fit before anything is changed, so that a full volume
    /// never ends up with a directory entry pointing at an unallocated cluster. Counts the
    /// worst case: the data, plus for every directory level a new directory cluster and two
    /// clusters of growth for the new entries (a 255-character name needs 21 entries).
    /// `reclaimable` counts the clusters of the file being replaced.
    fn check_room(&self, parents: &[&str], len: u64, reclaimable: u32) -> Result<(), FatError> {
        let worst = self.clusters_for(len) + 3 * (parents.len() as u32 + 1);
        let free = self.free + reclaimable;
        if worst > free {
            return Err(FatError::VolumeFull {
                needed: worst,
                free,
            });
        }
        Ok(())
    }

    /// Removes a file or a directory with everything in it. Returns false when nothing has
    /// that path. Everything is walked (and checked) before the first change.
    pub fn remove(&mut self, path: &str) -> Result<bool, FatError> {
        let Some(found) = self.locate(path)? else {
            return Ok(false);
        };
        let mut clusters = if found.item.is_dir() {
            self.dir_chain(&found.item, path)?
        } else {
            self.file_chain(&found.item, path)?
        };
        if found.item.is_dir() {
            for e in self.walk(path)? {
                clusters.extend(e.clusters);
            }
        }
        let dir = self.read_dir(found.dir_cluster, path)?;
        self.free_clusters(&clusters);
        for slot in found.item.first_slot..=found.item.short_slot {
            let at = self.slot_offset(&dir.chain, slot);
            self.write_at(at, &[DELETED], &format!("deleting the entry of {path}"))?;
        }
        self.flush()?;
        Ok(true)
    }

    /// The whole volume as a tree: directories 0755, files 0644, mtimes from the entries.
    pub fn read_tree(&mut self) -> Result<Tree, FatError> {
        let mut tree = Tree::new();
        let entries = self.walk("")?;
        let mut mtimes = HashMap::new();
        self.collect_mtimes("", &mut mtimes, &entries)?;
        for e in entries {
            let path = TreePath::new(&e.path)
                .map_err(|_| FatError::Corrupt(format!("bad name {:?}", e.path)))?;
            let mut entry = if e.is_dir {
                Entry::dir(0o755)
            } else {
                Entry::file(
                    Content::bytes(self.read_content(&e.clusters, e.size, &e.path)?),
                    0o644,
                )
            };
            entry.mtime = mtimes.get(&e.path).copied().unwrap_or(0);
            tree.insert(&path, entry)
                .map_err(|err| FatError::Corrupt(format!("{}: {err}", e.path)))?;
        }
        Ok(tree)
    }

    /// The mtime of every entry of a walk, from the directories already checked by it.
    fn collect_mtimes(
        &self,
        top: &str,
        out: &mut HashMap<String, u64>,
        entries: &[WalkEntry],
    ) -> Result<(), FatError> {
        let mut dirs = vec![(top.to_string(), self.dir_cluster(top)?)];
        dirs.extend(
            entries
                .iter()
                .filter(|e| e.is_dir)
                .map(|e| (e.path.clone(), e.clusters[0])),
        );
        for (dir, first) in dirs {
            let data = self.read_dir(first, &dir)?;
            for item in parse_dir(&data.bytes).items {
                out.insert(join(&dir, &item.name), item.mtime);
            }
        }
        Ok(())
    }

    /// The clusters of the file or directory at `path` (tests check edits against them).
    #[cfg(test)]
    pub(crate) fn clusters_of(&self, path: &str) -> Result<Vec<u32>, FatError> {
        if split_path(path)?.1.is_empty() {
            return self.chain_of(self.geom.root_cluster, self.dir_max_clusters(), "/");
        }
        let found = self
            .locate(path)?
            .ok_or_else(|| FatError::NotFound(path.to_string()))?;
        if found.item.is_dir() {
            self.dir_chain(&found.item, path)
        } else {
            self.file_chain(&found.item, path)
        }
    }

    /// Whether `cluster` is free in the FAT (tests check edits against it).
    #[cfg(test)]
    pub(crate) fn is_free(&self, cluster: u32) -> bool {
        self.entry(cluster) == 0
    }

    // ---- lookups ----

    /// The first cluster of the directory at `path`.
    fn dir_cluster(&self, path: &str) -> Result<u32, FatError> {
        if split_path(path)?.1.is_empty() {
            return Ok(self.geom.root_cluster);
        }
        match self.locate(path)? {
            Some(l) if l.item.is_dir() => self.subdir_start(&l.item, path),
            Some(_) => Err(FatError::NotADirectory(path.to_string())),
            None => Err(FatError::NotFound(path.to_string())),
        }
    }

    /// The first cluster of a subdirectory's entry: never 0 (which `..` uses for the root)
    /// nor the root's own cluster, either of which would make the tree a loop.
    fn subdir_start(&self, item: &DirItem, path: &str) -> Result<u32, FatError> {
        let c = item.first_cluster;
        if c == 0 || c == self.geom.root_cluster {
            return Err(FatError::Corrupt(format!(
                "{}: the directory entry points at the root directory (a directory loop)",
                display_path(path)
            )));
        }
        Ok(c)
    }

    fn locate(&self, path: &str) -> Result<Option<Located>, FatError> {
        let (parents, name) = split_path(path)?;
        if name.is_empty() {
            return Err(FatError::IsADirectory("/".into()));
        }
        let mut cluster = self.geom.root_cluster;
        for (i, part) in parents.iter().enumerate() {
            let here = parents[..=i].join("/");
            let data = self.read_dir(cluster, &here)?;
            match parse_dir(&data.bytes)
                .items
                .into_iter()
                .find(|it| it.matches(part))
            {
                Some(it) if it.is_dir() => cluster = self.subdir_start(&it, &here)?,
                Some(_) => return Err(FatError::NotADirectory(here)),
                None => return Ok(None),
            }
        }
        let data = self.read_dir(cluster, &parents.join("/"))?;
        Ok(parse_dir(&data.bytes)
            .items
            .into_iter()
            .find(|it| it.matches(name))
            .map(|item| Located {
                dir_cluster: cluster,
                item,
            }))
    }

    // ---- clusters ----

    fn entry(&self, cluster: u32) -> u32 {
        self.fat[cluster as usize] & ENTRY_MASK
    }

    fn set_entry(&mut self, cluster: u32, value: u32) {
        let slot = &mut self.fat[cluster as usize];
        *slot = (*slot & !ENTRY_MASK) | (value & ENTRY_MASK);
        self.dirty_fat_sectors
            .insert(cluster as usize / FAT_ENTRIES_PER_SECTOR);
    }

    /// Most clusters a directory may have (2 MiB of entries).
    fn dir_max_clusters(&self) -> u64 {
        (MAX_DIR_BYTES / self.geom.cluster_bytes()).max(1)
    }

    /// The clusters of the chain starting at `first` (empty for 0), at most `max` of them:
    /// every link inside the volume and in use, no loop. `path` names the chain's owner in
    /// errors.
    fn chain_of(&self, first: u32, max: u64, path: &str) -> Result<Vec<u32>, FatError> {
        let mut out: Vec<u32> = Vec::new();
        if first == 0 {
            return Ok(out);
        }
        let who = display_path(path);
        let mut c = first;
        loop {
            let at = |c: u32| {
                if out.is_empty() {
                    format!("it starts at cluster {c}")
                } else {
                    format!("its cluster chain reaches cluster {c}")
                }
            };
            if !self.geom.is_valid_cluster(c) {
                return Err(FatError::Corrupt(format!(
                    "{who}: {}, outside the volume's {} clusters",
                    at(c),
                    self.geom.cluster_count
                )));
            }
            let next = self.entry(c);
            if next == 0 || next == BAD {
                let what = if next == 0 { "free" } else { "bad" };
                return Err(FatError::Corrupt(format!(
                    "{who}: {}, which is marked {what}",
                    at(c)
                )));
            }
            if out.len() as u64 >= max {
                return Err(FatError::Corrupt(match out.iter().position(|&x| x == c) {
                    Some(_) => format!(
                        "{who}: its cluster chain loops (cluster {} links back to cluster {c})",
                        out.last().expect("not empty")
                    ),
                    None => format!(
                        "{who}: its cluster chain is longer than the {max} clusters it may have"
                    ),
                }));
            }
            out.push(c);
            if next >= EOC_MIN {
                return Ok(out);
            }
            c = next;
        }
    }

    /// A file's chain: exactly the clusters its size needs.
    fn file_chain(&self, item: &DirItem, path: &str) -> Result<Vec<u32>, FatError> {
        let needed = u64::from(item.size).div_ceil(self.geom.cluster_bytes());
        if needed > u64::from(self.geom.cluster_count) {
            return Err(FatError::Corrupt(format!(
                "{}: {} bytes, more than the volume holds",
                display_path(path),
                item.size
            )));
        }
        let chain = self.chain_of(item.first_cluster, needed, path)?;
        if (chain.len() as u64) < needed {
            return Err(FatError::Corrupt(format!(
                "{}: {} bytes need {needed} clusters but its cluster chain has {}",
                display_path(path),
                item.size,
                chain.len()
            )));
        }
        Ok(chain)
    }

    /// A subdirectory's chain.
    fn dir_chain(&self, item: &DirItem, path: &str) -> Result<Vec<u32>, FatError> {
        let first = self.subdir_start(item, path)?;
        self.chain_of(first, self.dir_max_clusters(), path)
    }

    fn clusters_for(&self, bytes: u64) -> u32 {
        bytes.div_ceil(self.geom.cluster_bytes()) as u32
    }

    /// Allocates `n` clusters as one chain and returns its first cluster (0 for none): the
    /// first contiguous run of free clusters that is long enough, else the first free ones.
    /// Only the in-memory FAT changes; [`Self::commit_fat`] writes it.
    fn allocate(&mut self, n: u32) -> Result<u32, FatError> {
        if n == 0 {
            return Ok(0);
        }
        if n > self.free {
            return Err(FatError::VolumeFull {
                needed: n,
                free: self.free,
            });
        }
        let end = self.geom.cluster_count + 2;
        let mut run_start = 2;
        let mut picked: Option<Vec<u32>> = None;
        for c in 2..end {
            if self.entry(c) != 0 {
                run_start = c + 1;
            } else if c + 1 - run_start == n {
                picked = Some((run_start..=c).collect());
                break;
            }
        }
        let clusters = picked.unwrap_or_else(|| {
            (2..end)
                .filter(|&c| self.entry(c) == 0)
                .take(n as usize)
                .collect()
        });
        for pair in clusters.windows(2) {
            self.set_entry(pair[0], pair[1]);
        }
        self.set_entry(*clusters.last().expect("n > 0"), EOC);
        self.free -= n;
        Ok(clusters[0])
    }

    /// Marks `clusters` free in the in-memory FAT.
    fn free_clusters(&mut self, clusters: &[u32]) {
        for &c in clusters {
            self.set_entry(c, 0);
        }
        self.free += clusters.len() as u32;
    }

    // ---- directories ----

    fn read_dir(&self, first: u32, path: &str) -> Result<DirData, FatError> {
        let chain = self.chain_of(first, self.dir_max_clusters(), path)?;
        self.read_dir_chain(&chain, path)
    }

    fn read_dir_chain(&self, chain: &[u32], path: &str) -> Result<DirData, FatError> {
        let cb = self.geom.cluster_bytes() as usize;
        let mut bytes = vec![0u8; chain.len() * cb];
        for (i, c) in chain.iter().enumerate() {
            self.read_at(
                self.geom.cluster_offset(*c),
                &mut bytes[i * cb..(i + 1) * cb],
                &format!("reading the directory {}", display_path(path)),
            )?;
        }
        Ok(DirData {
            chain: chain.to_vec(),
            bytes,
        })
    }

    fn slot_offset(&self, chain: &[u32], slot: usize) -> u64 {
        let cb = self.geom.cluster_bytes();
        let byte = slot as u64 * ENTRY_SIZE as u64;
        self.geom.cluster_offset(chain[(byte / cb) as usize]) + byte % cb
    }

    /// Walks `parents` from the root, creating missing directories; returns the first
    /// cluster of the last one.
    fn make_dirs(&mut self, parents: &[&str], path: &str) -> Result<u32, FatError> {
        let mut cluster = self.geom.root_cluster;
        for (i, part) in parents.iter().enumerate() {
            let here = parents[..=i].join("/");
            let data = self.read_dir(cluster, &here)?;
            cluster = match parse_dir(&data.bytes)
                .items
                .into_iter()
                .find(|it| it.matches(part))
            {
                Some(it) if it.is_dir() => self.subdir_start(&it, &here)?,
                Some(_) => return Err(FatError::NotADirectory(here)),
                None => {
                    let new = self.allocate(1)?;
                    let parent_ref = if cluster == self.geom.root_cluster {
                        0
                    } else {
                        cluster
                    };
                    let mut bytes = vec![0u8; self.geom.cluster_bytes() as usize];
                    for (j, e) in dot_entries(new, parent_ref, self.mtime).iter().enumerate() {
                        bytes[j * ENTRY_SIZE..(j + 1) * ENTRY_SIZE].copy_from_slice(e);
                    }
                    self.write_at(
                        self.geom.cluster_offset(new),
                        &bytes,
                        &format!("creating directory {part}"),
                    )?;
                    self.add_entry(cluster, part, ATTR_DIR, new, 0, path)?;
                    new
                }
            };
        }
        Ok(cluster)
    }

    /// Adds the entries for `name` to the directory at `dir_cluster`: in the first run of
    /// free slots long enough, else at its end, growing the directory by zeroed clusters.
    fn add_entry(
        &mut self,
        dir_cluster: u32,
        name: &str,
        attr: u8,
        first: u32,
        size: u32,
        path: &str,
    ) -> Result<(), FatError> {
        let mut dir = self.read_dir(dir_cluster, path)?;
        let parsed = parse_dir(&dir.bytes);
        let mut names = ShortNames::default();
        for item in &parsed.items {
            names.reserve(item.short);
        }
        let (short, needs_lfn) = names.assign(name);
        let mut entries = if needs_lfn {
            lfn_entries(name, &short)
        } else {
            Vec::new()
        };
        entries.push(short_entry(&short, attr, first, size, self.mtime));

        let slots = dir.bytes.len() / ENTRY_SIZE;
        // Past the end marker every slot counts as free, whatever it holds.
        let is_free = |s: usize| s >= parsed.end || dir.bytes[s * ENTRY_SIZE] == DELETED;
        let mut start = None;
        let mut run = 0;
        for s in 0..slots {
            run = if is_free(s) { run + 1 } else { 0 };
            if run == entries.len() {
                start = Some(s + 1 - run);
                break;
            }
        }
        let start = match start {
            Some(s) => s,
            None => {
                // `run` is the free tail; grow the directory by enough clusters for the rest.
                let missing = (entries.len() - run) * ENTRY_SIZE;
                let grow = self.clusters_for(missing as u64);
                if (dir.chain.len() as u64 + u64::from(grow)) * self.geom.cluster_bytes()
                    > MAX_DIR_BYTES
                {
                    return Err(FatError::DirectoryFull {
                        dir: path.to_string(),
                    });
                }
                let new = self.allocate(grow)?;
                let zero = vec![0u8; self.geom.cluster_bytes() as usize];
                let new_chain = self.chain_of(new, u64::from(grow), path)?;
                for c in &new_chain {
                    self.write_at(
                        self.geom.cluster_offset(*c),
                        &zero,
                        &format!("growing the directory of {path}"),
                    )?;
                }
                let last = *dir
                    .chain
                    .last()
                    .expect("a directory has at least one cluster");
                self.set_entry(last, new);
                dir.chain.extend(new_chain);
                dir.bytes.resize(dir.chain.len() * zero.len(), 0);
                slots - run
            }
        };
        for (k, e) in entries.iter().enumerate() {
            let at = self.slot_offset(&dir.chain, start + k);
            self.write_at(at, e, &format!("writing the entry of {path}"))?;
        }
        // Entries placed past the old end marker need a new one right after them.
        let after = start + entries.len();
        if after > parsed.end
            && after < dir.bytes.len() / ENTRY_SIZE
            && dir.bytes[after * ENTRY_SIZE] != 0
        {
            let at = self.slot_offset(&dir.chain, after);
            self.write_at(
                at,
                &[0u8; ENTRY_SIZE],
                &format!("ending the directory of {path}"),
            )?;
        }
        Ok(())
    }

    // ---- data ----

    /// `size` bytes from the clusters of `chain` (a checked file chain).
    fn read_content(&self, chain: &[u32], size: u64, path: &str) -> Result<Vec<u8>, FatError> {
        let size = size as usize;
        let cb = self.geom.cluster_bytes() as usize;
        if chain.len() * cb < size {
            return Err(FatError::Corrupt(format!(
                "{path}: {size} bytes but only {} clusters",
                chain.len()
            )));
        }
        let mut out = vec![0u8; size];
        for (i, c) in chain.iter().enumerate() {
            let from = i * cb;
            if from >= size {
                break;
            }
            let to = (from + cb).min(size);
            self.read_at(
                self.geom.cluster_offset(*c),
                &mut out[from..to],
                &format!("reading {path}"),
            )?;
        }
        Ok(out)
    }

    /// Fills the clusters of `chain` with `data`, zero-padding the last one: one write for
    /// each run of consecutive clusters.
    fn write_runs(&self, chain: &[u32], data: &[u8], what: &str) -> Result<(), FatError> {
        let cb = self.geom.cluster_bytes() as usize;
        let mut i = 0;
        while i < chain.len() {
            let mut j = i + 1;
            while j < chain.len() && chain[j] == chain[j - 1] + 1 {
                j += 1;
            }
            let from = (i * cb).min(data.len());
            let to = (j * cb).min(data.len());
            let mut piece = data[from..to].to_vec();
            piece.resize((j - i) * cb, 0);
            self.write_at(self.geom.cluster_offset(chain[i]), &piece, what)?;
            i = j;
        }
        Ok(())
    }

    /// Writes the changed FAT sectors to every FAT copy and updates the FSInfo counters.
    fn flush(&mut self) -> Result<(), FatError> {
        self.commit_fat()?;
        self.write_fsinfo(Some(self.free))?;
        self.file
            .get_mut()
            .flush()
            .map_err(io_err("flushing the FAT volume"))
    }

    /// Writes the FAT sectors changed in memory into every FAT copy with ONE write: the
    /// copies lie back to back, so the span from the first changed sector of the first copy
    /// to the last changed sector of the last copy holds them all; what lies between is
    /// written back as read. A write that does not happen (a kill, a failed call) leaves
    /// every copy as it was, one that does changes them all alike.
    fn commit_fat(&mut self) -> Result<(), FatError> {
        let dirty = std::mem::take(&mut self.dirty_fat_sectors);
        let (Some(&lo), Some(&hi)) = (dirty.first(), dirty.last()) else {
            return Ok(());
        };
        let last = self.geom.num_fats - 1;
        let start = self.geom.fat_offset(0) + lo as u64 * SECTOR;
        let end = self.geom.fat_offset(last) + (hi as u64 + 1) * SECTOR;
        let mut span = vec![0u8; (end - start) as usize];
        self.read_at(start, &mut span, "reading the file allocation tables")?;
        for copy in 0..=last {
            for &s in &dirty {
                let at = (self.geom.fat_offset(copy) + s as u64 * SECTOR - start) as usize;
                let entries =
                    &self.fat[s * FAT_ENTRIES_PER_SECTOR..(s + 1) * FAT_ENTRIES_PER_SECTOR];
                for (k, v) in entries.iter().enumerate() {
                    span[at + 4 * k..at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        self.write_at(start, &span, "writing the file allocation tables")
    }

    /// Sets the FSInfo free count (None: unknown, which every FAT driver then counts itself)
    /// and the next-free hint.
    fn write_fsinfo(&self, free: Option<u32>) -> Result<(), FatError> {
        let Some(sector) = self.geom.fsinfo_sector else {
            return Ok(());
        };
        let at = u64::from(sector) * SECTOR;
        let mut info = [0u8; 512];
        self.read_at(at, &mut info, "reading the FSInfo sector")?;
        let next_free = match free {
            Some(_) => (2..self.geom.cluster_count + 2)
                .find(|&c| self.entry(c) == 0)
                .unwrap_or(u32::MAX),
            None => u32::MAX,
        };
        if update_fsinfo(&mut info, free.unwrap_or(u32::MAX), next_free) {
            self.write_at(at, &info, "writing the FSInfo sector")?;
        }
        Ok(())
    }

    // ---- raw I/O ----

    fn read_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), FatError> {
        read_exact_at(&mut *self.file.borrow_mut(), self.base + offset, buf, what)
    }

    fn write_at(&self, offset: u64, buf: &[u8], what: &str) -> Result<(), FatError> {
        let mut f = self.file.borrow_mut();
        f.seek(SeekFrom::Start(self.base + offset))
            .map_err(io_err(what))?;
        f.write_all(buf).map_err(io_err(what))
    }
}

impl<F: Read + Write + Seek> FatVolume<OffsetWriter<F>> {
    /// Opens the FAT32 volume of a partition: `size` bytes at byte `offset` of `file`. The
    /// geometry of the boot sector must lie within the partition, and nothing this volume
    /// reads or writes can reach past it.
    pub fn open_partition(file: F, offset: u64, size: u64) -> Result<Self, FatError> {
        let window = OffsetWriter::bounded(file, offset, size)
            .map_err(io_err("seeking to the FAT partition"))?;
        Self::open_within(window, 0, Some(size))
    }
}

fn read_exact_at<F: Read + Seek>(
    f: &mut F,
    pos: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), FatError> {
    f.seek(SeekFrom::Start(pos)).map_err(io_err(what))?;
    f.read_exact(buf).map_err(io_err(what))
}

/// Splits a volume path into its parent components and its last name ("" for the root).
/// `.` components are dropped; `..` is refused, as nothing here needs it.
fn split_path(path: &str) -> Result<(Vec<&str>, &str), FatError> {
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(FatError::InvalidName {
            path: path.to_string(),
            reason: "\"..\" is not allowed".into(),
        });
    }
    let name = parts.pop().unwrap_or("");
    Ok((parts, name))
}

/// `path` without leading, trailing or doubled `/` ("" for the root).
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A path for messages: "/" for the root.
fn display_path(path: &str) -> String {
    let p = normalize(path);
    if p.is_empty() {
        "/".into()
    } else {
        p
    }
}
