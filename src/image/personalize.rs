//! `edgeimg configure`: rewrites the node config on the boot partition of an image file or a
//! block device in place, without mounting and without root for image files.
//!
//! The boot partition is found from the partition table (partition 1, FAT32) and opened as a
//! bounded window of it: nothing read or written can reach past the partition, and a FAT
//! whose own geometry claims more than the partition is refused. Everything is checked before
//! the first write: the new config is rendered, the partition must be edgeimg's (label
//! `EDGEIMG`, boot files, `edgeimg/node.env`), the FAT copies must agree, the whole directory
//! tree and its cluster chains must be sound, `edgeimg/` may hold only files edgeimg renders
//! (it is replaced whole, and nothing edgeimg did not write is ever deleted) and the A/B
//! update's state (`edgeimg/update/`, carried into the new folder unchanged), and the new
//! files must fit beside the old ones.
//!
//! The new `edgeimg/` is then written beside the old one and switched to with one write of
//! one directory entry ([`FatVolume::replace_dir`]): a kill or power cut at any moment
//! leaves the old config or the new one, whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::disk::read::{read_table, FoundTable};
use crate::fs::fat::{FatError, FatVolume};
use crate::node::contract::{is_node_path, is_slot_state_path};
use crate::node::{NodeConfig, RenderedNode};
use crate::tree::Tree;

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
    /// Files of the A/B update's state, carried over unchanged (paths under it).
    pub kept: Vec<String>,
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

/// The label edgeimg's builds give the boot partition.
pub const BOOT_LABEL: &str = "EDGEIMG";

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
    let (_, offset, size) = boot_partition(file, &what)?;
    let mut barrier = || file.sync_data();
    let applied = apply(file, offset, size, &what, &files, &mut barrier)?;
    file.sync_all()
        .with_context(|| format!("flushing {what} to disk"))?;
    let token = files.iter().any(|(p, _)| p.ends_with("/token"));
    let default = set.default.as_ref();
    Ok(ConfigureReport {
        target: target.to_path_buf(),
        boot_offset: offset,
        removed: applied.removed,
        kept: applied.kept,
        written: files
            .iter()
            .map(|(p, c)| (p.clone(), c.len() as u64))
            .collect(),
        token,
        hostname: default.and_then(|c| c.hostname.clone()),
        role: default.and_then(|c| c.role()).map(|r| r.to_string()),
        macs: set.per_mac.iter().map(|(m, _)| m.clone()).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What [`apply`] changed.
pub(crate) struct Applied {
    /// The old node files, by path under the boot partition.
    pub removed: Vec<String>,
    /// The update state's files, written into the new folder as they were.
    pub kept: Vec<String>,
}

/// Checks the boot partition (`size` bytes at `offset` of `io`) and replaces its node folder
/// by `files` (paths under the boot partition, all under [`NODE_DIR`]). `barrier` makes the
/// writes so far durable; it is called between the phases of the switch.
pub(crate) fn apply<F: Read + Write + Seek>(
    io: F,
    offset: u64,
    size: u64,
    what: &str,
    files: &[(String, Vec<u8>)],
    barrier: &mut dyn FnMut() -> io::Result<()>,
) -> Result<Applied> {
    let part = format!("{what}: partition {BOOT_PARTITION} (at byte {offset}, {size} bytes)");
    let mut vol = FatVolume::open_partition(io, offset, size).map_err(|e| match e {
        FatError::BeyondPartition { .. } => anyhow::anyhow!(
            "{part}: {e}. Nothing was written: configure would have written outside the \
             partition. Write the image to the card again, or make the partition as big as \
             its file system"
        ),
        e => anyhow::anyhow!(
            "{part} is not the FAT32 boot partition of an edgeimg image: {e}; nothing was written"
        ),
    })?;
    vol.set_mtime(edit_time());
    let found = check_boot_partition(&vol, &part)?;

    let mut tree = Tree::new();
    let prefix = format!("{NODE_DIR}/");
    for (p, c) in files {
        let rel = p
            .strip_prefix(&prefix)
            .with_context(|| format!("{p}: a node file outside {NODE_DIR}/"))?;
        tree.add_file(rel, c.clone(), 0o644)
            .with_context(|| format!("{p}: not a path for the boot partition"))?;
    }
    // A trial armed on this card, or the record of one that failed, must still be there on
    // the next boot: the node reports it and the updater finishes it.
    for p in &found.kept {
        let content = vol
            .read_file(p)
            .map_err(anyhow::Error::from)
            .and_then(|c| c.context("it went missing"))
            .with_context(|| format!("{part}: reading {p}, the update's state, to keep it"))?;
        tree.add_file(&p[prefix.len()..], content, 0o644)
            .with_context(|| format!("{p}: not a path for the boot partition"))?;
    }
    let cluster_bytes = vol.cluster_bytes();
    vol.replace_dir(NODE_DIR, &tree, barrier)
        .map_err(|e| match e {
            FatError::VolumeFull { needed, free } => anyhow::anyhow!(
                "{part}: the new node config needs {needed} clusters of {} bytes beside the old \
             one (which stays until the new one is complete), but only {free} are free: remove \
             files from the boot partition or shorten the node config; nothing was changed",
                cluster_bytes
            ),
            e => anyhow::anyhow!("{part}: {e}; run configure again"),
        })?;
    Ok(Applied {
        removed: found.node_files.into_iter().map(|(p, _)| p).collect(),
        kept: found.kept,
    })
}

/// What [`check_boot_partition`] found under the node folder.
struct NodeFolder {
    /// The node files edgeimg rendered there, with their sizes.
    node_files: Vec<(String, u64)>,
    /// The A/B update's state files.
    kept: Vec<String>,
}

/// Everything checked before configure writes: edgeimg's boot partition, FAT copies that
/// agree, a sound directory tree, nothing under `edgeimg/` that edgeimg did not render or
/// that is not the update's state.
fn check_boot_partition<F: Read + Write + Seek>(
    vol: &FatVolume<F>,
    part: &str,
) -> Result<NodeFolder> {
    let damaged = |e: FatError| {
        anyhow::anyhow!(
            "{part}: {e}. Nothing was changed; repair it first with `fsck.fat -a` (on the \
             unmounted partition, or on a copy of it), or write the image again"
        )
    };
    // Whose FAT is it? Nothing here may be edited unless it is edgeimg's.
    let exists = |p: &str, dir: bool| match vol.list(p.rsplit_once('/').map_or("", |x| x.0)) {
        Ok(entries) => {
            let name = p.rsplit('/').next().unwrap_or(p);
            entries
                .iter()
                .any(|e| e.is_dir == dir && e.name.eq_ignore_ascii_case(name))
        }
        Err(_) => false,
    };
    let mut foreign = Vec::new();
    if !vol.label().eq_ignore_ascii_case(BOOT_LABEL) {
        foreign.push(format!("its label is {:?}, not {BOOT_LABEL}", vol.label()));
    }
    if !exists(crate::boot::uefi::ENTRY, false)
        && !exists(crate::boot::uefi::UKI, false)
        && !exists(crate::boot::rpi::CONFIG_TXT, false)
    {
        foreign.push(format!(
            "it has no boot files ({}, {} or config.txt)",
            crate::boot::uefi::UKI,
            crate::boot::uefi::ENTRY
        ));
    }
    if !exists(&format!("{NODE_DIR}/node.env"), false) {
        foreign.push(format!("it has no {NODE_DIR}/node.env"));
    }
    if !foreign.is_empty() {
        bail!(
            "{part} is not the boot partition of an edgeimg image: {}. configure edits only \
             the boot partitions of edgeimg images, and changed nothing",
            foreign.join("; ")
        );
    }
    vol.check_fat_copies().map_err(damaged)?;
    // The whole tree: loops, chains and cross-links anywhere would make freeing the old
    // node files' clusters unsafe.
    let all = vol.walk("").map_err(damaged)?;
    let mut found = NodeFolder {
        node_files: Vec::new(),
        kept: Vec::new(),
    };
    for e in all
        .iter()
        .filter(|e| e.path.starts_with(&format!("{NODE_DIR}/")))
    {
        let rel = &e.path[NODE_DIR.len() + 1..];
        if is_slot_state_path(rel, e.is_dir) {
            if !e.is_dir {
                found.kept.push(e.path.clone());
            }
            continue;
        }
        if !is_node_path(rel, e.is_dir) {
            bail!(
                "{part}: {} is not {} edgeimg writes there. configure replaces the whole \
                 {NODE_DIR}/ folder, so move it off the boot partition first; nothing was \
                 changed",
                e.path,
                if e.is_dir { "a folder" } else { "a file" }
            );
        }
        if !e.is_dir {
            found.node_files.push((e.path.clone(), e.size));
        }
    }
    Ok(found)
}

/// Every file under `dir` on the volume (recursively, checked by [`FatVolume::walk`]), with
/// its size; empty when `dir` is absent.
pub fn list_files<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &FatVolume<F>,
    dir: &str,
) -> Result<Vec<(String, u64)>> {
    let entries = match vol.walk(dir) {
        Ok(e) => e,
        Err(FatError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(entries
        .into_iter()
        .filter(|e| !e.is_dir)
        .map(|e| (e.path, e.size))
        .collect())
}
