//! Replacing a whole directory so that an interruption at any write (a kill, a failed write,
//! a power cut) leaves either the old directory or the new one, each whole.
//!
//! FAT has no rename that is atomic across two entries, but the 32-byte short entry of a
//! directory lies within one sector, and its first cluster is all that says where the
//! directory's content is. So the new tree is written beside the old one and one write of
//! that entry switches from one to the other:
//!
//! 1. Checks, before the first write: the whole volume is walked (every chain and
//!    directory checked, no cluster shared, see [`FatVolume::walk`]) and the new tree is
//!    planned and must fit in the free clusters beside the old one.
//! 2. The new files and directories (with `.` and `..` pointing at their new clusters) are
//!    written into free clusters. Nothing points at them: any reader, fsck.fat included,
//!    still sees the old tree and free clusters. Barrier (`fdatasync`).
//! 3. Their chains are allocated in every FAT copy, with one write (see
//!    [`FatVolume::commit_fat`]); FSInfo's free count is set to unknown. Barrier.
//! 4. The switch: the old directory's short entry is rewritten in place with the first
//!    cluster of the new directory (and the time of the edit). Its long-name entries stay:
//!    their checksum covers the short name only, which does not change. Barrier.
//! 5. FSInfo gets the final free count, the old tree's chains are freed in every FAT copy
//!    (one write), and the old clusters are zeroed (a join token or Wi-Fi passphrase of the
//!    old config stays nowhere on the card). Barrier.
//!
//! Between 3 and 4 the new clusters, and between 4 and 5 the old ones, are allocated but
//! reached by no entry: FAT allows no allocation or release without such a moment (the FAT
//! and the directory are different sectors). `fsck.fat -n` then reports "Reclaimed N unused
//! clusters" (and, around the switch, that the free count is unknown, which it leaves alone)
//! and nothing else; `fsck.fat -a` frees them, and the directory holds one config, whole.
//! Everywhere else fsck.fat finds nothing at all. After a failed call the in-memory FAT no
//! longer matches the disk: drop the volume.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};

use super::super::dirent::{dot_entries, set_cluster, set_times, short_entry, ENTRY_SIZE};
use super::super::writer::{check_entry, plan_dir, Child, MAX_DIR_ENTRIES};
use super::super::{io_err, FatError};
use super::{display_path, normalize, FatVolume};
use crate::tree::{Kind, Tree, TreePath};

/// What [`FatVolume::replace_dir`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaceStats {
    /// Clusters the new tree uses.
    pub clusters_written: u32,
    /// Clusters of the old tree, freed and zeroed.
    pub clusters_freed: u32,
}

/// One planned directory or file of the new tree.
struct Planned<'a> {
    path: &'a TreePath,
    clusters: u32,
    first: u32,
}

impl<F: Read + Write + Seek> FatVolume<F> {
    /// Replaces everything in the existing directory `dir` by `content` (a tree whose root
    /// is `dir`), so that every moment of it leaves the old or the new tree, each whole (see
    /// the module's documentation). `barrier` makes the writes so far durable (`fdatasync`
    /// for a file or a device); it is called between the phases.
    pub fn replace_dir(
        &mut self,
        dir: &str,
        content: &Tree,
        barrier: &mut dyn FnMut() -> io::Result<()>,
    ) -> Result<ReplaceStats, FatError> {
        let dir = normalize(dir);
        let shown = display_path(&dir);
        // 1. Everything that can be wrong is found before the first write.
        let found = self
            .locate(&dir)?
            .ok_or_else(|| FatError::NotFound(dir.clone()))?;
        if !found.item.is_dir() {
            return Err(FatError::NotADirectory(dir.clone()));
        }
        // The whole volume is walked: a cluster of the old tree that some other entry also
        // used would be freed under it.
        let below = format!("{dir}/");
        let mut old = Vec::new();
        for e in self.walk("")? {
            if e.path == dir || e.path.starts_with(&below) {
                old.extend(e.clusters);
            }
        }
        let parent_path = dir.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let parent = self.read_dir(found.dir_cluster, parent_path)?;
        let entry_at = self.slot_offset(&parent.chain, found.item.short_slot);
        let parent_ref = if found.dir_cluster == self.geom.root_cluster {
            0
        } else {
            found.dir_cluster
        };

        let cb = self.geom.cluster_bytes();
        let mut children: BTreeMap<&TreePath, Vec<Child>> = BTreeMap::new();
        let mut plan: Vec<Planned> = Vec::new();
        for (path, entry) in content.iter() {
            check_entry(path, entry)?;
            let clusters = match &entry.kind {
                Kind::Dir => {
                    let kids = plan_dir(content, path)?;
                    let slots = 2 + kids.iter().map(|c| c.lfn.len() + 1).sum::<usize>();
                    if slots > MAX_DIR_ENTRIES {
                        return Err(FatError::DirectoryFull {
                            dir: format!("{shown}{path}"),
                        });
                    }
                    children.insert(path, kids);
                    ((slots * ENTRY_SIZE) as u64).div_ceil(cb) as u32
                }
                Kind::File(c) => c.len().div_ceil(cb) as u32,
                _ => unreachable!("check_entry allows directories and files only"),
            };
            plan.push(Planned {
                path,
                clusters,
                first: 0,
            });
        }
        let needed: u32 = plan.iter().map(|p| p.clusters).sum();
        if needed > self.free {
            return Err(FatError::VolumeFull {
                needed,
                free: self.free,
            });
        }

        // 2. The new tree, into free clusters (allocated in memory only).
        let before = |e: FatError| FatError::Interrupted {
            state: format!("nothing a reader sees has changed: {shown} holds the old files"),
            source: Box::new(e),
        };
        for p in &mut plan {
            p.first = self.allocate(p.clusters).map_err(before)?;
        }
        let firsts: BTreeMap<&TreePath, u32> = plan.iter().map(|p| (p.path, p.first)).collect();
        let new_top = firsts[&TreePath::root()];
        for p in &plan {
            let chain = self
                .chain_of(p.first, u64::from(p.clusters), &dir)
                .map_err(before)?;
            let entry = content.get_path(p.path).expect("planned from the tree");
            let bytes = match &entry.kind {
                Kind::Dir => {
                    let up = match p.path.parent() {
                        None => parent_ref,
                        Some(parent) => firsts[&parent],
                    };
                    let mut out = Vec::new();
                    for e in dot_entries(p.first, up, self.mtime) {
                        out.extend_from_slice(&e);
                    }
                    for child in &children[p.path] {
                        for e in &child.lfn {
                            out.extend_from_slice(e);
                        }
                        out.extend_from_slice(&short_entry(
                            &child.short,
                            child.attr,
                            firsts[child.path],
                            child.size,
                            self.mtime,
                        ));
                    }
                    out
                }
                Kind::File(c) => c
                    .read_all()
                    .map_err(io_err(format!("reading {shown}{}", p.path)))?
                    .to_vec(),
                _ => unreachable!("checked above"),
            };
            self.write_runs(&chain, &bytes, &format!("writing {shown}{}", p.path))
                .map_err(before)?;
        }
        barrier()
            .map_err(io_err("flushing the new files to the disk"))
            .map_err(before)?;

        // 3. Allocated in every FAT copy at once; the free count unknown until the end.
        let unreached = |e: FatError| FatError::Interrupted {
            state: format!(
                "{shown} still holds the old files; clusters of the new ones may be marked \
                 used though no file has them (`fsck.fat -a` frees them)"
            ),
            source: Box::new(e),
        };
        self.commit_fat().map_err(unreached)?;
        self.write_fsinfo(None).map_err(unreached)?;
        barrier()
            .map_err(io_err("flushing the file allocation tables to the disk"))
            .map_err(unreached)?;

        // 4. The switch: one 32-byte entry, within one sector.
        let mut e = [0u8; ENTRY_SIZE];
        self.read_at(entry_at, &mut e, &format!("reading the entry of {shown}"))
            .map_err(unreached)?;
        if e[..11] != found.item.short {
            return Err(unreached(FatError::Corrupt(format!(
                "the entry of {shown} changed while it was being replaced"
            ))));
        }
        set_cluster(&mut e, new_top);
        set_times(&mut e, self.mtime);
        self.write_at(entry_at, &e, &format!("switching {shown} to its new files"))
            .map_err(|err| FatError::Interrupted {
                state: format!(
                    "{shown} holds either the old or the new files, each whole; \
                     `fsck.fat -a` frees the clusters of the others"
                ),
                source: Box::new(err),
            })?;
        let after = |e: FatError| FatError::Interrupted {
            state: format!(
                "{shown} holds the new files; clusters of the old ones may still be marked \
                 used though no file has them (`fsck.fat -a` frees them)"
            ),
            source: Box::new(e),
        };
        barrier()
            .map_err(io_err("flushing the switched entry to the disk"))
            .map_err(after)?;

        // 5. The old tree's clusters: counted, freed, zeroed. The count first: fsck.fat
        // counts clusters no entry reaches as free whatever the FAT says, so from the switch
        // on the true count is the final one.
        old.sort_unstable();
        self.free_clusters(&old);
        self.write_fsinfo(Some(self.free)).map_err(after)?;
        self.commit_fat().map_err(after)?;
        self.write_runs(&old, &[], "erasing the old files' clusters")
            .map_err(after)?;
        self.file
            .get_mut()
            .flush()
            .map_err(io_err("flushing the FAT volume"))
            .map_err(after)?;
        barrier()
            .map_err(io_err("flushing the freed clusters to the disk"))
            .map_err(after)?;
        Ok(ReplaceStats {
            clusters_written: needed,
            clusters_freed: old.len() as u32,
        })
    }
}
