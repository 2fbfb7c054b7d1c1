//! Reading and editing an existing FAT32 volume in place, through any `Read + Write + Seek`
//! (an image file at the partition's offset, or a block device).
//!
//! The whole FAT is held in memory (8 MiB for a 32 GiB card with 16 KiB clusters); an edit
//! writes back only the FAT sectors it changed, in every FAT copy, the directory entries it
//! touched, the clusters it filled and the FSInfo counters. Allocation is first-fit from
//! cluster 2, so the same edit on the same volume gives the same bytes.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};

use super::dirent::{
    check_long_name, dot_entries, lfn_entries, parse_dir, set_cluster, set_times, short_entry,
    DirItem, ShortNames, ATTR_ARCHIVE, ATTR_DIR, DELETED, ENTRY_SIZE,
};
use super::layout::{le32, update_fsinfo, Geometry, ENTRY_MASK, EOC, EOC_MIN, SECTOR};
use super::{io_err, FatError};
use crate::tree::{Content, Entry, Tree, TreePath};

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
        let mut file = file;
        let mut boot = [0u8; 512];
        read_exact_at(&mut file, base, &mut boot, "reading the FAT boot sector")?;
        let (geom, volume_id, label) = Geometry::parse(&boot)?;
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
        let data = self.read_dir(cluster)?;
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

    /// A file's content, or `None` when nothing has that path.
    pub fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, FatError> {
        let Some(found) = self.locate(path)? else {
            return Ok(None);
        };
        if found.item.is_dir() {
            return Err(FatError::IsADirectory(path.to_string()));
        }
        self.read_content(&found.item, path).map(Some)
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
            Some(l) => self.chain(l.item.first_cluster)?.len() as u32,
            None => 0,
        };
        self.check_room(&parents, data.len() as u64, reclaimable)?;
        let dir_cluster = self.make_dirs(&parents, path)?;
        let dir = self.read_dir(dir_cluster)?;
        let existing = parse_dir(&dir.bytes)
            .items
            .into_iter()
            .find(|i| i.matches(name));
        if let Some(item) = &existing {
            self.free_chain(item.first_cluster, path)?;
        }
        let first = self.allocate(self.clusters_for(data.len() as u64))?;
        self.write_chain(first, data, path)?;
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
    /// that path.
    pub fn remove(&mut self, path: &str) -> Result<bool, FatError> {
        let Some(found) = self.locate(path)? else {
            return Ok(false);
        };
        if found.item.is_dir() {
            self.free_subtree(found.item.first_cluster, path)?;
        }
        self.free_chain(found.item.first_cluster, path)?;
        let dir = self.read_dir(found.dir_cluster)?;
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
        let root = self.geom.root_cluster;
        self.read_tree_into(&mut tree, &TreePath::root(), root, 0)?;
        Ok(tree)
    }

    fn read_tree_into(
        &mut self,
        tree: &mut Tree,
        dir: &TreePath,
        cluster: u32,
        depth: usize,
    ) -> Result<(), FatError> {
        if depth > 64 {
            return Err(FatError::Corrupt(format!(
                "directories nested deeper than 64 levels at {dir}"
            )));
        }
        let data = self.read_dir(cluster)?;
        for item in parse_dir(&data.bytes).items {
            let path = dir
                .join(&item.name)
                .map_err(|_| FatError::Corrupt(format!("bad name {:?} in {dir}", item.name)))?;
            let mut entry = if item.is_dir() {
                Entry::dir(0o755)
            } else {
                Entry::file(
                    Content::bytes(self.read_content(&item, path.as_str())?),
                    0o644,
                )
            };
            entry.mtime = item.mtime;
            tree.insert(&path, entry)
                .map_err(|e| FatError::Corrupt(format!("{path}: {e}")))?;
            if item.is_dir() {
                self.read_tree_into(tree, &path, item.first_cluster, depth + 1)?;
            }
        }
        Ok(())
    }

    /// The clusters of the file or directory at `path` (tests check edits against them).
    #[cfg(test)]
    pub(crate) fn clusters_of(&self, path: &str) -> Result<Vec<u32>, FatError> {
        if split_path(path)?.1.is_empty() {
            return self.chain(self.geom.root_cluster);
        }
        let found = self
            .locate(path)?
            .ok_or_else(|| FatError::NotFound(path.to_string()))?;
        self.chain(found.item.first_cluster)
    }

    // ---- lookups ----

    /// The first cluster of the directory at `path`.
    fn dir_cluster(&self, path: &str) -> Result<u32, FatError> {
        if split_path(path)?.1.is_empty() {
            return Ok(self.geom.root_cluster);
        }
        match self.locate(path)? {
            Some(l) if l.item.is_dir() => Ok(self.dir_start(l.item.first_cluster)),
            Some(_) => Err(FatError::NotADirectory(path.to_string())),
            None => Err(FatError::NotFound(path.to_string())),
        }
    }

    /// `..` entries and first-level directories use 0 for the root directory.
    fn dir_start(&self, cluster: u32) -> u32 {
        if cluster == 0 {
            self.geom.root_cluster
        } else {
            cluster
        }
    }

    fn locate(&self, path: &str) -> Result<Option<Located>, FatError> {
        let (parents, name) = split_path(path)?;
        if name.is_empty() {
            return Err(FatError::IsADirectory("/".into()));
        }
        let mut cluster = self.geom.root_cluster;
        for (i, part) in parents.iter().enumerate() {
            let data = self.read_dir(cluster)?;
            match parse_dir(&data.bytes)
                .items
                .into_iter()
                .find(|it| it.matches(part))
            {
                Some(it) if it.is_dir() => cluster = self.dir_start(it.first_cluster),
                Some(_) => return Err(FatError::NotADirectory(parents[..=i].join("/"))),
                None => return Ok(None),
            }
        }
        let data = self.read_dir(cluster)?;
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

    /// The clusters of the chain starting at `first` (empty for 0), checked for loops, free
    /// or out-of-range links.
    fn chain(&self, first: u32) -> Result<Vec<u32>, FatError> {
        let mut out = Vec::new();
        let mut c = first;
        if c == 0 {
            return Ok(out);
        }
        loop {
            if !self.geom.is_valid_cluster(c) {
                return Err(FatError::Corrupt(format!(
                    "a cluster chain from {first} reaches invalid cluster {c}"
                )));
            }
            if out.len() > self.geom.cluster_count as usize {
                return Err(FatError::Corrupt(format!(
                    "the cluster chain from {first} loops"
                )));
            }
            out.push(c);
            let next = self.entry(c);
            if next >= EOC_MIN {
                return Ok(out);
            }
            c = next;
        }
    }

    fn clusters_for(&self, bytes: u64) -> u32 {
        bytes.div_ceil(self.geom.cluster_bytes()) as u32
    }

    /// Allocates `n` clusters as one chain and returns its first cluster (0 for none): the
    /// first contiguous run of free clusters that is long enough, else the first free ones.
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

    fn free_chain(&mut self, first: u32, path: &str) -> Result<(), FatError> {
        let chain = self
            .chain(first)
            .map_err(|e| FatError::Corrupt(format!("{path}: {e}")))?;
        for c in &chain {
            self.set_entry(*c, 0);
        }
        self.free += chain.len() as u32;
        Ok(())
    }

    /// Frees everything below the directory at `cluster` (not the directory itself).
    fn free_subtree(&mut self, cluster: u32, path: &str) -> Result<(), FatError> {
        let data = self.read_dir(cluster)?;
        for item in parse_dir(&data.bytes).items {
            let child = format!("{path}/{}", item.name);
            if item.is_dir() {
                self.free_subtree(item.first_cluster, &child)?;
            }
            self.free_chain(item.first_cluster, &child)?;
        }
        Ok(())
    }

    // ---- directories ----

    fn read_dir(&self, first: u32) -> Result<DirData, FatError> {
        let chain = self.chain(first)?;
        let cb = self.geom.cluster_bytes() as usize;
        if chain.len() as u64 * cb as u64 > MAX_DIR_BYTES.max(cb as u64) {
            return Err(FatError::Corrupt(format!(
                "the directory at cluster {first} is larger than 2 MiB"
            )));
        }
        let mut bytes = vec![0u8; chain.len() * cb];
        for (i, c) in chain.iter().enumerate() {
            self.read_at(
                self.geom.cluster_offset(*c),
                &mut bytes[i * cb..(i + 1) * cb],
                "reading a directory",
            )?;
        }
        Ok(DirData { chain, bytes })
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
            let data = self.read_dir(cluster)?;
            cluster = match parse_dir(&data.bytes)
                .items
                .into_iter()
                .find(|it| it.matches(part))
            {
                Some(it) if it.is_dir() => self.dir_start(it.first_cluster),
                Some(_) => return Err(FatError::NotADirectory(parents[..=i].join("/"))),
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
        let mut dir = self.read_dir(dir_cluster)?;
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
                let new_chain = self.chain(new)?;
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

    fn read_content(&self, item: &DirItem, path: &str) -> Result<Vec<u8>, FatError> {
        let chain = self
            .chain(item.first_cluster)
            .map_err(|e| FatError::Corrupt(format!("{path}: {e}")))?;
        let size = item.size as usize;
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

    /// Fills the chain from `first` with `data`, zero-padding its last cluster.
    fn write_chain(&mut self, first: u32, data: &[u8], path: &str) -> Result<(), FatError> {
        let cb = self.geom.cluster_bytes() as usize;
        let chain = self.chain(first)?;
        for (i, c) in chain.iter().enumerate() {
            let mut piece = data[i * cb..((i + 1) * cb).min(data.len())].to_vec();
            piece.resize(cb, 0);
            self.write_at(
                self.geom.cluster_offset(*c),
                &piece,
                &format!("writing {path}"),
            )?;
        }
        Ok(())
    }

    /// Writes the changed FAT sectors to every FAT copy and updates the FSInfo counters.
    fn flush(&mut self) -> Result<(), FatError> {
        let dirty = std::mem::take(&mut self.dirty_fat_sectors);
        for s in dirty {
            let bytes: Vec<u8> = self.fat
                [s * FAT_ENTRIES_PER_SECTOR..(s + 1) * FAT_ENTRIES_PER_SECTOR]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            for copy in 0..self.geom.num_fats {
                let at = self.geom.fat_offset(copy) + s as u64 * SECTOR;
                self.write_at(at, &bytes, "writing the file allocation table")?;
            }
        }
        if let Some(sector) = self.geom.fsinfo_sector {
            let at = u64::from(sector) * SECTOR;
            let mut info = [0u8; 512];
            self.read_at(at, &mut info, "reading the FSInfo sector")?;
            let next_free = (2..self.geom.cluster_count + 2)
                .find(|&c| self.entry(c) == 0)
                .unwrap_or(u32::MAX);
            if update_fsinfo(&mut info, self.free, next_free) {
                self.write_at(at, &info, "writing the FSInfo sector")?;
            }
        }
        self.file
            .get_mut()
            .flush()
            .map_err(io_err("flushing the FAT volume"))
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
