//! `edgeimg inspect`: what an image, an `.img.xz` or a device holds: partitions, boot files,
//! the node config (secrets, the join token and the Wi-Fi key, shown as present or absent,
//! never their values), per-MAC configs, a summary of the root squashfs, and the manifest
//! when one sits beside the image.
//!
//! The values are the image's as they are (a hostile image may hold any text): the printer
//! escapes what it shows.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::disk::read::FoundTable;
use crate::fs::fat::FatVolume;
use crate::image::personalize::{boot_partition, list_files, NODES_DIR, NODE_DIR};
use crate::manifest::Manifest;
use crate::node::{limits, secrets};

/// Largest boot file read for its text (a loader entry, cmdline.txt, node.env, node.toml).
const MAX_TEXT_FILE: u64 = limits::NODE_FILE;

/// Largest UKI read for its sections (a kernel and an initramfs are tens of MiB).
const MAX_UKI: u64 = 512 * 1024 * 1024;

/// A small file of the volume, listed in `files` with its size; `None` when absent or
/// larger than [`MAX_TEXT_FILE`] (a hostile image may hold a file of gigabytes).
fn read_small<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    files: &[(String, u64)],
    path: &str,
) -> Result<Option<Vec<u8>>> {
    let listed = files
        .iter()
        .find(|(p, _)| p.trim_start_matches('/') == path.trim_start_matches('/'));
    match listed {
        Some((_, size)) if *size <= MAX_TEXT_FILE => Ok(vol.read_file(path)?),
        _ => Ok(None),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub target: PathBuf,
    pub size: u64,
    pub table: FoundTable,
    pub boot: BootInfo,
    /// The node config every device without a per-MAC config uses.
    pub node: Option<NodeInfo>,
    /// Per-MAC configs (`edgeimg/nodes/<mac>/`), by MAC.
    pub per_mac: BTreeMap<String, NodeInfo>,
    pub root: Option<SquashfsInfo>,
    /// The two root slots: version, bootable, on trial, active (empty for a single-root
    /// image of an older build).
    pub slots: Vec<crate::image::slots::SlotInfo>,
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootInfo {
    /// What switches the root slots (None: neither EFI/ nor config.txt).
    pub loader: Option<crate::image::slots::Loader>,
    pub label: String,
    pub volume_id: String,
    pub cluster_bytes: u64,
    pub clusters_total: u32,
    pub clusters_free: u32,
    /// Every file except the node config's, with its size.
    pub files: Vec<(String, u64)>,
    /// The kernel command line from the UKI's `.cmdline`, the loader entry or cmdline.txt.
    pub cmdline: Option<String>,
    /// The active slot's Unified Kernel Image (`EFI/Linux/edgeimg-a.efi`): signed or not, and by whom.
    pub uki: Option<crate::manifest::UkiInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// node.env's variables, secrets ([`crate::node::contract::SECRET_ENV_VARS`]) shown as
    /// [`secrets::PRESENT`] or empty (absent). The token is a file of its own.
    pub env: BTreeMap<String, String>,
    pub hostname: Option<String>,
    pub role: Option<String>,
    /// Whether a join token file is on the boot partition (never its value).
    pub token_present: bool,
    pub wifi_ssid: Option<String>,
    /// Whether a Wi-Fi key is set (never its value).
    pub wifi_psk_present: bool,
    pub files: Vec<(String, u64)>,
    /// node.toml with its secrets shown as present or absent ([`secrets::hide_in_toml`]).
    pub node_toml: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SquashfsInfo {
    pub partition: u32,
    pub inodes: u32,
    pub block_size: u32,
    pub compression: String,
    pub bytes_used: u64,
    pub mkfs_time: u32,
    pub listing: Option<RootListing>,
}

/// A summary of the root file system's tree.
#[derive(Debug, Clone, Serialize)]
pub struct RootListing {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub other: u64,
    /// Total bytes of regular files.
    pub file_bytes: u64,
    /// Entries directly under `/`.
    pub top_level: Vec<String>,
    /// `/etc/edgeimg/build.env`: the image's board, default role, k0s and kernel versions.
    pub build_env: BTreeMap<String, String>,
    /// Size of `/usr/local/bin/k0s` when present.
    pub k0s_bytes: Option<u64>,
}

/// The (lower-case) path of the `cmdline.txt` the Pi firmware reads on a normal boot:
/// `config.txt`'s `os_prefix` folder (the firmware's own rules); None without a config.txt.
fn pi_cmdline_path<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    files: &[(String, u64)],
) -> Result<Option<String>> {
    let config = crate::boot::rpi::CONFIG_TXT;
    if !files.iter().any(|(p, _)| p.eq_ignore_ascii_case(config)) {
        return Ok(None);
    }
    let lower: Vec<String> = files.iter().map(|(p, _)| p.to_ascii_lowercase()).collect();
    let text = read_small(vol, files, config)?
        .map(|d| String::from_utf8_lossy(&d).to_string())
        .unwrap_or_default();
    let exists = |p: &str| lower.iter().any(|l| *l == p.to_ascii_lowercase());
    let read = |p: &str| (p == config).then(|| text.clone());
    // The DTB is the board's; only the kernel decides here.
    let load = crate::boot::rpi::firmware_load(&exists, &read, false, "all", "kernel8.img", None)?;
    Ok(Some(load.cmdline.to_ascii_lowercase()))
}

/// Reads everything `inspect` shows from an image file or device (not compressed).
pub fn inspect_file(path: &Path, shown_as: &Path) -> Result<Inspection> {
    let what = shown_as.display().to_string();
    let file = File::open(path).with_context(|| format!("opening {what}"))?;
    let size = file_size(&file).with_context(|| format!("reading the size of {what}"))?;
    let (table, offset, boot_size) = boot_partition(&file, &what)?;
    let mut vol = FatVolume::open_partition(&file, offset, boot_size)
        .with_context(|| format!("{what}: partition 1 is not a usable FAT32 boot partition"))?;
    let mut files = list_files(&vol, "").with_context(|| format!("{what}: partition 1"))?;
    for f in &mut files {
        f.0 = f.0.trim_start_matches('/').to_string();
    }
    files.retain(|(p, _)| !p.starts_with(&format!("{NODE_DIR}/")));
    let mut cmdline = None;
    // A Pi card: the cmdline.txt of the slot config.txt boots (its os_prefix folder).
    let pi_cmdline = pi_cmdline_path(&mut vol, &files)?;
    for (p, _) in &files {
        let lower = p.to_ascii_lowercase();
        let is_pi_cmdline = pi_cmdline.as_deref() == Some(lower.as_str());
        if (lower.starts_with("loader/entries/") && lower.ends_with(".conf")) || is_pi_cmdline {
            if let Some(data) = read_small(&mut vol, &files, p)? {
                let text = String::from_utf8_lossy(&data).to_string();
                cmdline = text
                    .lines()
                    .find_map(|l| l.strip_prefix("options "))
                    .map(|s| s.trim().to_string())
                    .or_else(|| is_pi_cmdline.then(|| text.trim().to_string()));
            }
        }
    }
    // Every UKI of the slots, with its .osrel IMAGE_VERSION.
    let mut ukis = Vec::new();
    let mut uki_infos = Vec::new();
    for (p, size) in &files {
        let name = p.rsplit('/').next().unwrap_or(p);
        let in_dir = p.to_ascii_lowercase().starts_with(&format!(
            "{}/",
            crate::boot::uefi::UKI_DIR.to_ascii_lowercase()
        ));
        if !in_dir || crate::image::slots::parse_uki_name(name).is_none() {
            continue;
        }
        if *size > MAX_UKI {
            continue;
        }
        let data = vol
            .read_file(p)
            .with_context(|| format!("{what}: reading {p}"))?
            .with_context(|| format!("{what}: {p} is listed but cannot be read"))?;
        let info = crate::manifest::UkiInfo::of(p, &data).with_context(|| what.clone())?;
        ukis.push(crate::image::slots::UkiFile {
            path: p.clone(),
            version: uki_image_version(&data),
        });
        uki_infos.push(info);
    }
    let slot_parts = [2u32, 3u32];
    let mut roots = Vec::new();
    for n in slot_parts {
        roots.push(match table.partition(n) {
            Some(p) if table.partitions.len() >= 4 => squashfs_info(&file, p.offset(), n)?,
            _ => None,
        });
    }
    let root_versions = [0, 1].map(|i: usize| {
        roots[i]
            .as_ref()
            .and_then(|r| r.listing.as_ref())
            .and_then(|l| l.build_env.get("IMAGE_VERSION").cloned())
    });
    use crate::image::slots::Loader;
    let loader = Loader::of(files.iter().map(|(p, _)| p.as_str()));
    let as_text = |d: Option<Vec<u8>>| d.map(|d| String::from_utf8_lossy(&d).to_string());
    let has_kernel = crate::disk::layout::Slot::ALL.map(|s| {
        let prefix = format!("slot-{s}/");
        files.iter().any(|(p, _)| {
            let l = p.to_ascii_lowercase();
            l.starts_with(&prefix) && (l.contains("kernel") || l.contains("vmlinuz"))
        })
    });
    let slots = match loader {
        _ if table.partitions.len() < 4 => Vec::new(),
        Some(Loader::SystemdBoot) => {
            crate::image::slots::uefi_slots(&ukis, slot_parts, root_versions)
        }
        Some(Loader::UBoot) => {
            let slots_txt = as_text(read_small(&mut vol, &files, crate::boot::rpi::SLOTS_TXT)?);
            let trial_txt = as_text(read_small(&mut vol, &files, crate::boot::rpi::TRIAL_TXT)?);
            crate::image::slots::uboot_slots(
                slots_txt.as_deref(),
                trial_txt.as_deref(),
                has_kernel,
                slot_parts,
                root_versions,
            )
        }
        Some(Loader::PiFirmware) | None => {
            let config = as_text(read_small(&mut vol, &files, "config.txt")?);
            let tryboot = as_text(read_small(&mut vol, &files, "tryboot.txt")?);
            crate::image::slots::rpi_slots(
                config.as_deref(),
                tryboot.as_deref(),
                has_kernel,
                slot_parts,
                root_versions,
            )
        }
    };
    let active = slots.iter().find(|s| s.active);
    let uki = match active.and_then(|s| s.boot_file.as_ref()) {
        Some(f) => uki_infos.iter().find(|u| &u.path == f).cloned(),
        None => uki_infos.into_iter().next(),
    };
    if let Some(u) = &uki {
        cmdline = Some(u.cmdline.clone());
    }
    let boot = BootInfo {
        loader,
        label: vol.label().to_string(),
        volume_id: format!(
            "{:04X}-{:04X}",
            vol.volume_id() >> 16,
            vol.volume_id() & 0xffff
        ),
        cluster_bytes: vol.cluster_bytes(),
        clusters_total: vol.clusters_total(),
        clusters_free: vol.clusters_free(),
        files,
        cmdline,
        uki,
    };
    let node = node_info(&mut vol, NODE_DIR)?;
    let mut per_mac = BTreeMap::new();
    if let Ok(entries) = vol.list(NODES_DIR) {
        for e in entries.into_iter().filter(|e| e.is_dir) {
            if let Some(info) = node_info(&mut vol, &format!("{NODES_DIR}/{}", e.name))? {
                per_mac.insert(e.name.replace('-', ":"), info);
            }
        }
    }
    let root_part = active.map_or(2, |s| s.partition);
    let root = match (table.partitions.len() >= 4, table.partition(root_part)) {
        (true, Some(_)) => roots[usize::from(root_part == 3)].clone(),
        (false, Some(p)) => squashfs_info(&file, p.offset(), root_part)?,
        _ => None,
    };
    let manifest_path = shown_as.with_file_name(crate::manifest::MANIFEST_FILE);
    let manifest = if shown_as.starts_with("/dev/") || !manifest_path.is_file() {
        None
    } else {
        Some(Manifest::read(&manifest_path)?)
    };
    Ok(Inspection {
        target: shown_as.to_path_buf(),
        size,
        table,
        boot,
        node,
        per_mac,
        root,
        slots,
        manifest,
    })
}

/// Inspects an image, an `.img.xz` (unpacked to a sparse temporary file first) or a device.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let mut src = crate::disk::source::ImageSource::open(path)?;
    if !src.compressed {
        return inspect_file(path, path);
    }
    let tmp = tempfile::NamedTempFile::new()
        .context("creating a temporary file for the unpacked image")?;
    crate::disk::source::write_image(
        &mut src,
        None,
        tmp.as_file(),
        "the unpacked image",
        true,
        &crate::progress::Silent,
    )?;
    inspect_file(tmp.path(), path)
}

fn file_size(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    // A block device's metadata length is 0: seek to its end instead.
    let mut f = f;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

fn node_info<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<F>,
    dir: &str,
) -> Result<Option<NodeInfo>> {
    let files = list_files(vol, dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let env = match read_small(vol, &files, &format!("{dir}/node.env"))? {
        Some(data) => crate::node::parse_node_env(&String::from_utf8_lossy(&data))
            .map_err(|e| anyhow::anyhow!("{dir}/node.env: {e}"))?,
        None => BTreeMap::new(),
    };
    let node_toml = read_small(vol, &files, &format!("{dir}/node.toml"))?
        .map(|d| secrets::hide_in_toml(&String::from_utf8_lossy(&d)));
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(Some(NodeInfo {
        hostname: get("NODE_HOSTNAME"),
        role: get("NODE_ROLE"),
        wifi_ssid: get("WIFI_SSID"),
        wifi_psk_present: get("WIFI_PSK").is_some(),
        token_present: files.iter().any(|(p, _)| p == &format!("{dir}/token")),
        env: secrets::hide_in_env(&env),
        files,
        node_toml,
    }))
}

/// IMAGE_VERSION of a UKI's `.osrel`.
fn uki_image_version(data: &[u8]) -> Option<String> {
    let pe = crate::efi::pe::Pe::parse(data).ok()?;
    let osrel = String::from_utf8_lossy(pe.section_data(data, ".osrel")?).to_string();
    osrel.lines().find_map(|l| {
        l.strip_prefix("IMAGE_VERSION=")
            .map(|v| v.trim().trim_matches('"').to_string())
    })
}

fn squashfs_info(file: &File, offset: u64, partition: u32) -> Result<Option<SquashfsInfo>> {
    let mut sb = [0u8; 96];
    file.read_exact_at(&mut sb, offset)
        .context("reading the root partition's superblock")?;
    if &sb[0..4] != b"hsqs" {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(sb[o..o + 2].try_into().expect("2 bytes"));
    let compression = match u16_at(20) {
        1 => "gzip",
        2 => "lzma",
        3 => "lzo",
        4 => "xz",
        5 => "lz4",
        6 => "zstd",
        _ => "unknown",
    };
    let listing = root_listing(file, offset).ok();
    Ok(Some(SquashfsInfo {
        listing,
        partition,
        inodes: u32_at(4),
        mkfs_time: u32_at(8),
        block_size: u32_at(12),
        compression: compression.into(),
        bytes_used: u64::from_le_bytes(sb[40..48].try_into().expect("8 bytes")),
    }))
}

/// A small file (at most `max` bytes) of the squashfs at `offset` of `file`, by absolute path.
pub fn read_root_file(file: &File, offset: u64, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
    use backhand::{FilesystemReader, InnerNode};
    use std::io::Read;
    let reader = std::io::BufReader::new(file.try_clone().context("reopening the image")?);
    let fs = FilesystemReader::from_reader_with_offset(reader, offset)
        .map_err(|e| anyhow::anyhow!("reading the root squashfs: {e}"))?;
    for node in fs.files() {
        if node.fullpath != Path::new(path) {
            continue;
        }
        if let InnerNode::File(f) = &node.inner {
            if f.file_len() as u64 > max {
                anyhow::bail!("{path} in the root is larger than {max} bytes");
            }
            let mut data = Vec::new();
            fs.file(f)
                .reader()
                .read_to_end(&mut data)
                .with_context(|| format!("reading {path} from the root"))?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Walks the squashfs at `offset` (metadata only, plus build.env).
fn root_listing(file: &File, offset: u64) -> Result<RootListing> {
    use backhand::{FilesystemReader, InnerNode};
    use std::io::Read;
    let reader = std::io::BufReader::new(file.try_clone().context("reopening the image")?);
    let fs = FilesystemReader::from_reader_with_offset(reader, offset)
        .map_err(|e| anyhow::anyhow!("reading the root squashfs: {e}"))?;
    let mut l = RootListing {
        files: 0,
        directories: 0,
        symlinks: 0,
        other: 0,
        file_bytes: 0,
        top_level: Vec::new(),
        build_env: BTreeMap::new(),
        k0s_bytes: None,
    };
    for node in fs.files() {
        let path = node.fullpath.to_string_lossy().to_string();
        if path != "/" && node.fullpath.parent() == Some(Path::new("/")) {
            l.top_level.push(path.trim_start_matches('/').to_string());
        }
        match &node.inner {
            InnerNode::File(f) => {
                l.files += 1;
                l.file_bytes += f.file_len() as u64;
                if path == "/usr/local/bin/k0s" {
                    l.k0s_bytes = Some(f.file_len() as u64);
                }
                if path == "/etc/edgeimg/build.env" && f.file_len() < 64 * 1024 {
                    let mut text = String::new();
                    fs.file(f)
                        .reader()
                        .read_to_string(&mut text)
                        .context("reading /etc/edgeimg/build.env")?;
                    if let Ok(env) = crate::node::parse_node_env(&text) {
                        l.build_env = env;
                    }
                }
            }
            InnerNode::Dir(_) => l.directories += 1,
            InnerNode::Symlink(_) => l.symlinks += 1,
            _ => l.other += 1,
        }
    }
    Ok(l)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::disk::{write_table, PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
    use crate::fs::fat::{write_fat32, FatParams};
    use crate::image::personalize::{configure, NodeSet};
    use crate::node::{NodeConfig, WifiConfig};

    /// A GPT image with a 40 MiB FAT32 boot partition (a loader entry on it) and an empty
    /// root partition: enough to configure and inspect.
    pub(crate) fn synthetic_image(path: &Path) {
        let specs = [
            PartitionSpec {
                role: PartRole::Boot,
                name: "boot".into(),
                ptype: PartType::Esp,
                size: 40 << 20,
                bootable: true,
            },
            PartitionSpec {
                role: PartRole::Root(crate::disk::layout::Slot::A),
                name: "root".into(),
                ptype: PartType::LinuxRootX86_64,
                size: 1 << 20,
                bootable: false,
            },
        ];
        let plan = PartitionPlan::new(TableKind::Gpt, &specs, b"inspect-tests").unwrap();
        let mut f = File::create(path).unwrap();
        f.set_len(plan.disk_size).unwrap();
        write_table(&plan, &mut f).unwrap();
        let mut tree = crate::tree::Tree::new();
        tree.add_file(
            "loader/entries/edgeimg.conf",
            b"title edgeimg\noptions console=ttyS0\n".to_vec(),
            0o644,
        )
        .unwrap();
        // What a build leaves there: the rendered default node config (configure refuses a
        // FAT without one as not edgeimg's).
        tree.overlay(
            &crate::node::NodeConfig::default()
                .render()
                .unwrap()
                .into_tree()
                .unwrap(),
        )
        .unwrap();
        let boot = plan.get(PartRole::Boot);
        let params = FatParams {
            size: boot.size(),
            volume_id: 0x1234_5678,
            label: "EDGEIMG".into(),
            hidden_sectors: boot.start_lba as u32,
            mtime: 0,
        };
        write_fat32(&tree, &params, &mut f, boot.offset()).unwrap();
    }

    fn with_wifi(hostname: &str, psk: &str) -> NodeConfig {
        let mut cfg = NodeConfig::from_toml_str(
            &format!("hostname = \"{hostname}\"\n"),
            Path::new("node.toml"),
        )
        .unwrap();
        cfg.wifi = Some(WifiConfig {
            ssid: "edge-net".into(),
            psk: Some(psk.into()),
            country: Some("DE".into()),
        });
        cfg
    }

    #[test]
    fn secrets_are_shown_as_present_or_absent_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        synthetic_image(&img);
        let pass = "correct horse \"battery\" #staple";
        let raw = "00112233445566778899aabbccddeeff".repeat(2);
        let set = NodeSet {
            default: Some(with_wifi("edge-01", pass)),
            per_mac: vec![
                ("dc:a6:32:00:00:07".into(), with_wifi("edge-07", &raw)),
                ("dc:a6:32:00:00:08".into(), {
                    let mut open = with_wifi("edge-08", "unused-pass");
                    open.wifi.as_mut().unwrap().psk = None;
                    open
                }),
            ],
        };
        configure(&img, &set).unwrap();
        let i = inspect_file(&img, &img).unwrap();
        let json = serde_json::to_string(&i).unwrap();
        let pmk = crate::node::wifi_pmk("edge-net", pass);
        for secret in [pass, "correct horse", &pmk, &pmk[..16], &raw, &raw[..16]] {
            assert!(!json.contains(secret), "inspect shows {secret:?}: {json}");
        }
        let node = i.node.as_ref().unwrap();
        let seven = &i.per_mac["dc:a6:32:00:00:07"];
        let eight = &i.per_mac["dc:a6:32:00:00:08"];
        for (n, present) in [(node, true), (seven, true), (eight, false)] {
            let shown = if present { secrets::PRESENT } else { "" };
            assert_eq!(n.env["WIFI_PSK"], shown, "{n:?}");
            assert_eq!(n.env["WIFI_SSID"], "edge-net");
            assert_eq!(n.wifi_psk_present, present);
            let toml = n.node_toml.as_deref().unwrap();
            assert_eq!(
                toml.contains(&format!("psk = \"{}\"", secrets::PRESENT)),
                present,
                "{toml}"
            );
            assert!(toml.contains("ssid = \"edge-net\""), "{toml}");
        }
    }
}
