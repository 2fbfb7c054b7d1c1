//! `edgeimg configure`: rewrites the node config on the boot partition of an image file or a
//! block device in place, without mounting and without root for image files.
//!
//! The boot partition is found from the partition table (partition 1, FAT32), the files under
//! `edgeimg/` are removed and the new rendering is written through [`FatVolume`], which
//! changes only the FAT sectors, directory entries and clusters the edit touches. Everything
//! is validated and rendered before the disk is opened for writing, and the free space is
//! checked before the first change, so bad input leaves the disk as it was.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::disk::read::{read_table, FoundTable};
use crate::fs::fat::FatVolume;
use crate::node::{NodeConfig, RenderedNode};

/// The directory of the node files on the boot partition.
pub use crate::node::contract::BOOT_DIR as NODE_DIR;
/// Per-MAC node configs: `edgeimg/nodes/<mac>/...` (MAC lower case, `-` separated: FAT
/// names cannot hold `:`).
pub use crate::node::contract::NODES_DIR;
/// The boot partition's number (device contract).
pub const BOOT_PARTITION: u32 = 1;

/// What to write onto the boot partition.
#[derive(Debug, Clone)]
pub struct NodeSet {
    /// The node config read by a device without a per-MAC config of its own.
    pub default: Option<NodeConfig>,
    /// `(mac, config)`: one `edgeimg/nodes/<mac>/` directory each.
    pub per_mac: Vec<(String, NodeConfig)>,
}

/// What `configure` did.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigureReport {
    pub target: PathBuf,
    /// Byte offset of the boot partition.
    pub boot_offset: u64,
    /// Files removed from the boot partition (paths under it).
    pub removed: Vec<String>,
    /// Files written, with their sizes.
    pub written: Vec<(String, u64)>,
    /// Whether a join token was written (never its value).
    pub token: bool,
    pub hostname: Option<String>,
    pub role: Option<String>,
    /// Per-MAC configs written.
    pub macs: Vec<String>,
    pub seconds: f64,
}

/// Renders every config of `set` into `(path under the boot partition, content)`.
pub fn render_set(set: &NodeSet) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    if let Some(cfg) = &set.default {
        files.extend(cfg.render()?.files);
    }
    for (mac, cfg) in &set.per_mac {
        let RenderedNode { files: rendered } = cfg
            .render()
            .with_context(|| format!("rendering the node config for MAC {mac}"))?;
        for (p, c) in rendered {
            let rest = p
                .strip_prefix(&format!("{NODE_DIR}/"))
                .expect("rendered under edgeimg/");
            files.push((
                format!(
                    "{NODES_DIR}/{}/{rest}",
                    crate::node::inventory::mac_dir(mac)
                ),
                c,
            ));
        }
    }
    Ok(files)
}

/// The mtime given to the written entries: `SOURCE_DATE_EPOCH` when set (reproducible), else now.
fn edit_time() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

/// Finds the boot partition of an opened image or device.
pub fn boot_partition(file: &File, what: &str) -> Result<(FoundTable, u64, u64)> {
    let table = read_table(file, what).with_context(|| {
        format!("{what} is not an edgeimg image or a card written from one (no readable partition table)")
    })?;
    let p = table.partition(BOOT_PARTITION).with_context(|| {
        format!("{what} has no partition {BOOT_PARTITION} (the boot partition of an edgeimg image)")
    })?;
    let (offset, size) = (p.offset(), p.size());
    Ok((table, offset, size))
}

/// Rewrites the node files on the boot partition of `target` (an image file or a device).
pub fn configure(target: &Path, set: &NodeSet) -> Result<ConfigureReport> {
    // Everything that can fail on bad input happens before the disk is opened for writing.
    render_set(set)?;
    let what = target.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .with_context(|| {
            format!("opening {what} for writing (a device needs write permission: check its group, e.g. `disk`)")
        })?;
    configure_open(&file, target, set)
}

/// [`configure`] on a target already open for reading and writing (`flash` personalizes the
/// very file or device it wrote, not whatever its path names by then); `target` names it.
pub fn configure_open(file: &File, target: &Path, set: &NodeSet) -> Result<ConfigureReport> {
    let started = Instant::now();
    let files = render_set(set)?;
    let what = target.display().to_string();
    let (_, offset, _) = boot_partition(file, &what)?;
    let mut vol = FatVolume::open(file, offset).with_context(|| {
        format!("{what}: partition {BOOT_PARTITION} at byte {offset} is not the FAT32 boot partition of an edgeimg image")
    })?;
    vol.set_mtime(edit_time());

    let old = list_files(&vol, NODE_DIR).with_context(|| format!("{what}: reading {NODE_DIR}/"))?;
    // Room: the new files may not need more clusters than are free plus what the old ones free.
    let cb = vol.cluster_bytes();
    let clusters = |n: u64| n.div_ceil(cb).max(1);
    let reclaim: u64 = old.iter().map(|(_, s)| clusters(*s)).sum();
    let dirs = files
        .iter()
        .filter_map(|(p, _)| Path::new(p).parent())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let needed: u64 = files
        .iter()
        .map(|(_, c)| clusters(c.len() as u64))
        .sum::<u64>()
        + 3 * (dirs + 1);
    if needed > u64::from(vol.clusters_free()) + reclaim {
        bail!(
            "{what}: the boot partition has {} free clusters of {cb} bytes; the node config needs {needed}: \
             remove files from it or shorten the node config",
            u64::from(vol.clusters_free()) + reclaim
        );
    }

    let mut removed = Vec::new();
    for entry in vol
        .list(NODE_DIR)
        .or_else(|e| match e {
            crate::fs::fat::FatError::NotFound(_) => Ok(Vec::new()),
            e => Err(e),
        })
        .with_context(|| format!("{what}: listing {NODE_DIR}/"))?
    {
        let p = format!("{NODE_DIR}/{}", entry.name);
        vol.remove(&p)
            .with_context(|| format!("{what}: removing {p} from the boot partition"))?;
    }
    for (p, _) in &old {
        removed.push(p.clone());
    }
    let mut written = Vec::new();
    for (p, c) in &files {
        vol.write_file(p, c)
            .with_context(|| format!("{what}: writing {p} on the boot partition"))?;
        written.push((p.clone(), c.len() as u64));
    }
    drop(vol);
    file.sync_all()
        .with_context(|| format!("flushing {what} to disk"))?;
    let token = files.iter().any(|(p, _)| p.ends_with("/token"));
    let default = set.default.as_ref();
    Ok(ConfigureReport {
        target: target.to_path_buf(),
        boot_offset: offset,
        removed,
        written,
        token,
        hostname: default.and_then(|c| c.hostname.clone()),
        role: default.and_then(|c| c.role()).map(|r| r.to_string()),
        macs: set.per_mac.iter().map(|(m, _)| m.clone()).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Deepest directory nesting and most files [`list_files`] walks: a boot partition has a few
/// levels and hundreds of files; a damaged or hostile one may loop (a directory whose
/// cluster is an ancestor's) and must not take the stack or all memory.
const MAX_DIR_DEPTH: usize = 16;
const MAX_LISTED_FILES: usize = 100_000;

/// Every file under `dir` on the volume (recursively), with its size; empty when `dir` is absent.
pub fn list_files<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &FatVolume<F>,
    dir: &str,
) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(vol, dir, 0, &mut out)?;
    Ok(out)
}

fn walk<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &FatVolume<F>,
    dir: &str,
    depth: usize,
    out: &mut Vec<(String, u64)>,
) -> Result<()> {
    if depth > MAX_DIR_DEPTH {
        bail!(
            "{}: directories nested deeper than {MAX_DIR_DEPTH} levels: the boot partition is damaged",
            crate::util::text::shown(dir, 200)
        );
    }
    let entries = match vol.list(dir) {
        Ok(e) => e,
        Err(crate::fs::fat::FatError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let p = format!("{dir}/{}", e.name);
        if e.is_dir {
            walk(vol, &p, depth + 1, out)?;
        } else {
            out.push((p, e.size));
        }
        if out.len() > MAX_LISTED_FILES {
            bail!("the boot partition lists more than {MAX_LISTED_FILES} files: it is damaged");
        }
    }
    Ok(())
}
