//! The write-once FAT32 encoder.
//!
//! Two passes: first a plan (short names, LFN entries and a contiguous cluster run for every
//! directory and file, in tree order, the root first at cluster 2), then the writes, in
//! increasing offset order. Nothing that is zero on a fresh volume is written, so a sparse
//! image file keeps its holes.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::dirent::{
    check_long_name, dot_entries, exact_short_name, lfn_entries, short_entry, ShortName,
    ShortNames, ATTR_ARCHIVE, ATTR_DIR, ATTR_VOLUME_ID, ENTRY_SIZE,
};
use super::layout::{encode_label, reserved_sectors, Geometry, EOC, MEDIA, SECTOR};
use super::{io_err, FatError, FatParams, FatStats};
use crate::tree::{Entry, Kind, Tree, TreePath};

/// Most entries one directory may have (its size is limited to 2 MiB).
pub(super) const MAX_DIR_ENTRIES: usize = 65536;

/// Writes `tree` as a FAT32 volume of `params.size` bytes at byte offset `base` of `out`.
///
/// `out` must read as zeros over the volume (a freshly sized sparse file, as the disk layout
/// hands over): only the boot sectors, FSInfo, the used part of both FATs, directories and
/// file data are written. Every entry must be a directory or a regular file.
pub fn write_fat32<W: Write + Seek>(
    tree: &Tree,
    params: &FatParams,
    out: &mut W,
    base: u64,
) -> Result<FatStats, FatError> {
    let geom = Geometry::for_size(params.size)?;
    let label = encode_label(&params.label)?;
    let has_label = label != [b' '; 11];
    let plan = Plan::new(tree, &geom, has_label)?;
    let used = plan.next_cluster - 2;
    let free = geom.cluster_count - used;
    let next_free = if free > 0 {
        plan.next_cluster
    } else {
        u32::MAX
    };

    let mut sink = Sink {
        out,
        base,
        written: 0,
    };
    for (sector, bytes) in reserved_sectors(
        &geom,
        params.volume_id,
        &label,
        params.hidden_sectors,
        free,
        next_free,
    ) {
        sink.write_at(
            u64::from(sector) * SECTOR,
            &bytes,
            "writing the FAT32 boot sectors",
        )?;
    }
    let fat = plan.fat_bytes();
    for copy in 0..geom.num_fats {
        sink.write_at(
            geom.fat_offset(copy),
            &fat,
            "writing the file allocation table",
        )?;
    }
    for (path, entry) in tree.iter() {
        let alloc = plan.allocs[path];
        match &entry.kind {
            Kind::Dir => {
                let bytes = plan.dir_bytes(
                    path,
                    &geom,
                    if path.is_root() { Some(&label) } else { None },
                    params.mtime,
                );
                sink.write_at(
                    geom.cluster_offset(alloc.first),
                    &bytes,
                    &format!("writing directory {path}"),
                )?;
            }
            Kind::File(content) if alloc.clusters > 0 => {
                let reader = content
                    .open()
                    .map_err(io_err(format!("reading {path} for the FAT volume")))?;
                sink.copy_at(
                    geom.cluster_offset(alloc.first),
                    reader,
                    content.len(),
                    path,
                )?;
            }
            _ => {}
        }
    }
    sink.out
        .flush()
        .map_err(io_err("flushing the FAT volume"))?;
    Ok(FatStats {
        clusters_total: geom.cluster_count,
        clusters_used: used,
        bytes_written: sink.written,
    })
}

/// A contiguous run of clusters; `first` is 0 for an empty file.
#[derive(Clone, Copy)]
struct Alloc {
    first: u32,
    clusters: u32,
}

/// One child in its parent directory.
pub(super) struct Child<'a> {
    pub(super) path: &'a TreePath,
    pub(super) short: ShortName,
    pub(super) lfn: Vec<[u8; ENTRY_SIZE]>,
    pub(super) attr: u8,
    pub(super) size: u32,
}

struct Plan<'a> {
    dirs: BTreeMap<&'a TreePath, Vec<Child<'a>>>,
    allocs: BTreeMap<&'a TreePath, Alloc>,
    next_cluster: u32,
}

impl<'a> Plan<'a> {
    fn new(tree: &'a Tree, geom: &Geometry, has_label: bool) -> Result<Plan<'a>, FatError> {
        let mut dirs = BTreeMap::new();
        for (path, entry) in tree.iter() {
            check_entry(path, entry)?;
            if entry.is_dir() {
                dirs.insert(path, plan_dir(tree, path)?);
            }
        }
        let cluster_bytes = geom.cluster_bytes();
        let mut allocs = BTreeMap::new();
        let mut next = 2u64;
        for (path, entry) in tree.iter() {
            let bytes = match &entry.kind {
                Kind::Dir => {
                    let fixed = if path.is_root() {
                        usize::from(has_label)
                    } else {
                        2
                    };
                    let slots = fixed + dirs[path].iter().map(|c| c.lfn.len() + 1).sum::<usize>();
                    if slots > MAX_DIR_ENTRIES {
                        return Err(FatError::DirectoryFull {
                            dir: path.to_string(),
                        });
                    }
                    // A directory always owns at least one cluster, even when empty.
                    (slots * ENTRY_SIZE).max(1) as u64
                }
                Kind::File(c) => c.len(),
                _ => 0,
            };
            let clusters = bytes.div_ceil(cluster_bytes);
            let first = if clusters > 0 { next } else { 0 };
            next += clusters;
            // Clamped: an overflowing plan is refused below before anything uses these.
            allocs.insert(
                path,
                Alloc {
                    first: first.min(u64::from(u32::MAX)) as u32,
                    clusters: clusters as u32,
                },
            );
        }
        let needed_clusters = next - 2;
        if needed_clusters > u64::from(geom.cluster_count) {
            return Err(FatError::ContentTooBig {
                size: u64::from(geom.total_sectors) * SECTOR,
                needed: needed_clusters * cluster_bytes,
                available: u64::from(geom.cluster_count) * cluster_bytes,
                needed_clusters,
                available_clusters: geom.cluster_count,
                cluster_bytes: cluster_bytes as u32,
            });
        }
        Ok(Plan {
            dirs,
            allocs,
            next_cluster: next as u32,
        })
    }

    /// Both FATs' used part: media and end-of-chain markers in entries 0 and 1, then every
    /// run chained to its next cluster. Padded to whole sectors.
    fn fat_bytes(&self) -> Vec<u8> {
        let mut fat = vec![0u32; self.next_cluster as usize];
        fat[0] = 0x0FFF_FF00 | u32::from(MEDIA);
        fat[1] = EOC;
        for a in self.allocs.values().filter(|a| a.clusters > 0) {
            let last = a.first + a.clusters - 1;
            for c in a.first..last {
                fat[c as usize] = c + 1;
            }
            fat[last as usize] = EOC;
        }
        let mut bytes: Vec<u8> = fat.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize((bytes.len() as u64).next_multiple_of(SECTOR) as usize, 0);
        bytes
    }

    /// The whole content of a directory's clusters, zeros after the last entry included.
    fn dir_bytes(
        &self,
        dir: &TreePath,
        geom: &Geometry,
        label: Option<&[u8; 11]>,
        mtime: u64,
    ) -> Vec<u8> {
        let alloc = self.allocs[dir];
        let mut out = Vec::with_capacity(alloc.clusters as usize * geom.cluster_bytes() as usize);
        if let Some(label) = label.filter(|l| **l != [b' '; 11]) {
            out.extend_from_slice(&short_entry(label, ATTR_VOLUME_ID, 0, 0, mtime));
        }
        if let Some(parent) = dir.parent() {
            // `..` of a first-level directory points at cluster 0, not at the root's cluster.
            let parent_cluster = if parent.is_root() {
                0
            } else {
                self.allocs[&parent].first
            };
            for e in dot_entries(alloc.first, parent_cluster, mtime) {
                out.extend_from_slice(&e);
            }
        }
        for child in &self.dirs[dir] {
            for e in &child.lfn {
                out.extend_from_slice(e);
            }
            let first = self.allocs[child.path].first;
            out.extend_from_slice(&short_entry(
                &child.short,
                child.attr,
                first,
                child.size,
                mtime,
            ));
        }
        out.resize(alloc.clusters as usize * geom.cluster_bytes() as usize, 0);
        out
    }
}

pub(super) fn check_entry(path: &TreePath, entry: &Entry) -> Result<(), FatError> {
    let kind = match &entry.kind {
        Kind::Dir => return Ok(()),
        Kind::File(c) if c.len() > u64::from(u32::MAX) => {
            return Err(FatError::FileTooLarge {
                path: path.to_string(),
                size: c.len(),
            })
        }
        Kind::File(_) => return Ok(()),
        Kind::Symlink(_) => "symbolic link",
        Kind::CharDevice { .. } => "character device",
        Kind::BlockDevice { .. } => "block device",
        Kind::Fifo => "FIFO",
        Kind::Socket => "socket",
    };
    Err(FatError::Unsupported {
        path: path.to_string(),
        kind,
    })
}

/// Names the children of `dir`: exact 8.3 names are reserved first so that a generated
/// `~N` name can never take a name a later entry has as its own.
pub(super) fn plan_dir<'a>(tree: &'a Tree, dir: &TreePath) -> Result<Vec<Child<'a>>, FatError> {
    let kids: Vec<(&TreePath, &Entry)> = tree.children(dir).collect();
    let mut folded: HashMap<String, &str> = HashMap::new();
    let mut names = ShortNames::default();
    for (path, _) in &kids {
        let name = path.file_name();
        check_long_name(name).map_err(|reason| FatError::InvalidName {
            path: path.to_string(),
            reason,
        })?;
        if let Some(first) = folded.insert(name.to_uppercase(), name) {
            return Err(FatError::CaseConflict {
                dir: dir.to_string(),
                first: first.to_string(),
                second: name.to_string(),
            });
        }
        if let Some(short) = exact_short_name(name) {
            names.reserve(short);
        }
    }
    Ok(kids
        .into_iter()
        .map(|(path, entry)| {
            let name = path.file_name();
            let (short, needs_lfn) = names.assign(name);
            let lfn = if needs_lfn {
                lfn_entries(name, &short)
            } else {
                Vec::new()
            };
            let (attr, size) = match &entry.kind {
                Kind::File(c) => (ATTR_ARCHIVE, c.len() as u32),
                _ => (ATTR_DIR, 0),
            };
            Child {
                path,
                short,
                lfn,
                attr,
                size,
            }
        })
        .collect())
}

/// Positioned writes relative to the volume start, counting what is written.
struct Sink<'w, W> {
    out: &'w mut W,
    base: u64,
    written: u64,
}

impl<W: Write + Seek> Sink<'_, W> {
    fn write_at(&mut self, offset: u64, bytes: &[u8], what: &str) -> Result<(), FatError> {
        self.out
            .seek(SeekFrom::Start(self.base + offset))
            .map_err(io_err(what))?;
        self.out.write_all(bytes).map_err(io_err(what))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Copies exactly `len` bytes of a file's content; a source that changed size since the
    /// tree was made is an error rather than a silently wrong file.
    fn copy_at(
        &mut self,
        offset: u64,
        reader: impl Read,
        len: u64,
        path: &TreePath,
    ) -> Result<(), FatError> {
        let what = || format!("writing {path} into the FAT volume");
        self.out
            .seek(SeekFrom::Start(self.base + offset))
            .map_err(io_err(what()))?;
        let copied = io::copy(&mut reader.take(len + 1), self.out).map_err(io_err(what()))?;
        if copied != len {
            return Err(FatError::Io {
                context: what(),
                source: io::Error::other(format!(
                    "expected {len} bytes of content, found {copied}; did it change?"
                )),
            });
        }
        self.written += copied;
        Ok(())
    }
}
