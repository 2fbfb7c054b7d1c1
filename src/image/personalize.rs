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
use clap::Args;
use serde::Serialize;

use crate::disk::read::{read_table, FoundTable};
use crate::fs::fat::FatVolume;
use crate::node::{NodeConfig, NodeOverrides, RenderedNode, Role, WifiConfig};
use crate::progress::Reporter;

/// The directory of the node files on the boot partition.
pub const NODE_DIR: &str = "edgeimg";
/// Per-MAC node configs: `edgeimg/nodes/<mac>/...` (MAC lower case, `-` separated: FAT
/// names cannot hold `:`).
pub const NODES_DIR: &str = "edgeimg/nodes";
/// The boot partition's number (device contract).
pub const BOOT_PARTITION: u32 = 1;

/// Where the node config comes from: a file and/or flags (shared by `configure` and `flash`).
#[derive(Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// Node config file: TOML, or `#cloud-config` YAML (common subset).
    #[arg(long, value_name = "FILE")]
    pub node: Option<PathBuf>,
    /// Inventory TOML (defaults + one table per node); pick the node with --node-name.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The node of the inventory to apply.
    #[arg(long, value_name = "NAME", requires = "inventory")]
    pub node_name: Option<String>,
    /// Write every inventory node that has a `mac` side by side (edgeimg/nodes/<mac>/); the
    /// device picks its own by MAC at boot.
    #[arg(long, requires = "inventory", conflicts_with_all = ["node_name", "hostname", "address"])]
    pub all_nodes: bool,
    /// Hostname of the node.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Node role: controller, worker, controller+worker or single.
    #[arg(long)]
    pub role: Option<Role>,
    /// File holding the k0s join token (it goes onto the boot partition only).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// SSH public key file or key line to authorize (repeatable).
    #[arg(long, value_name = "KEY")]
    pub ssh_key: Vec<String>,
    /// Static address in CIDR form (switches the network to static).
    #[arg(long, value_name = "CIDR")]
    pub address: Option<String>,
    /// Default gateway (with --address).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// DNS server (repeatable; replaces the config's list).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// Kubernetes node label `key=value` (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Kubernetes node taint `key[=value]:Effect` (repeatable).
    #[arg(long, value_name = "TAINT")]
    pub taint: Vec<String>,
    /// NTP server (repeatable; replaces the config's list).
    #[arg(long, value_name = "HOST")]
    pub ntp: Vec<String>,
    /// Disable NTP.
    #[arg(long, conflicts_with = "ntp")]
    pub no_ntp: bool,
    /// Extra argument for k0s (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub k0s_arg: Vec<String>,
    /// k0s config file (k0s.yaml) for controllers.
    #[arg(long, value_name = "FILE")]
    pub k0s_config: Option<PathBuf>,
    /// Wi-Fi network name.
    #[arg(long, value_name = "SSID")]
    pub wifi_ssid: Option<String>,
    /// File holding the Wi-Fi passphrase (kept off the command line and shell history).
    #[arg(long, value_name = "FILE", requires = "wifi_ssid")]
    pub wifi_psk_file: Option<PathBuf>,
    /// Wi-Fi country code (regulatory domain), e.g. DE.
    #[arg(long, value_name = "CC", requires = "wifi_ssid")]
    pub wifi_country: Option<String>,
}

/// `edgeimg configure`.
#[derive(Args, Debug)]
pub struct ConfigureArgs {
    /// The image file (.img) or block device to personalize.
    pub target: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// What to write onto the boot partition.
#[derive(Debug, Clone)]
pub struct NodeSet {
    /// The node config read by a device without a per-MAC config of its own.
    pub default: Option<NodeConfig>,
    /// `(mac, config)`: one `edgeimg/nodes/<mac>/` directory each.
    pub per_mac: Vec<(String, NodeConfig)>,
}

impl NodeArgs {
    /// Whether any node setting was given.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.inventory.is_none()
            && self.hostname.is_none()
            && self.role.is_none()
            && self.token_file.is_none()
            && self.ssh_key.is_empty()
            && self.address.is_none()
            && self.gateway.is_none()
            && self.dns.is_empty()
            && self.label.is_empty()
            && self.taint.is_empty()
            && self.ntp.is_empty()
            && !self.no_ntp
            && self.k0s_arg.is_empty()
            && self.k0s_config.is_none()
            && self.wifi_ssid.is_none()
    }

    /// Reads and validates the node config(s) these arguments describe. Warnings (a token
    /// file others can read) go to `rep`.
    pub fn resolve(&self, rep: &dyn Reporter) -> Result<NodeSet> {
        if self.all_nodes {
            let inv_path = self.inventory.as_deref().expect("clap: requires inventory");
            let inv = crate::node::inventory::Inventory::from_file(inv_path)?;
            let mut per_mac = Vec::new();
            for name in inv.names() {
                let (mut cfg, mac) = inv.node(&name)?;
                let Some(mac) = mac else { continue };
                self.apply_flags(&mut cfg)?;
                for w in cfg.check()?.into_iter().chain(build_time_only(&cfg)) {
                    rep.warn(&format!("{name}: {w}"));
                }
                per_mac.push((mac, cfg));
            }
            if per_mac.is_empty() {
                bail!(
                    "{}: no node has a `mac`: --all-nodes writes one config per MAC address",
                    inv_path.display()
                );
            }
            let default = if self.node.is_some() {
                Some(self.single(rep)?)
            } else {
                None
            };
            return Ok(NodeSet { default, per_mac });
        }
        Ok(NodeSet {
            default: Some(self.single(rep)?),
            per_mac: Vec::new(),
        })
    }

    fn single(&self, rep: &dyn Reporter) -> Result<NodeConfig> {
        let mut cfg = match (&self.inventory, &self.node_name, &self.node) {
            (Some(inv), Some(name), _) => {
                let inv = crate::node::inventory::Inventory::from_file(inv)?;
                inv.node(name)?.0
            }
            (Some(inv), None, _) if !self.all_nodes => bail!(
                "--inventory {}: name the node with --node-name (or use --all-nodes)",
                inv.display()
            ),
            (_, _, Some(p)) => read_node_file(p)?,
            // Named in messages as where the values came from.
            _ => NodeConfig::from_toml_str("", Path::new("command line"))?,
        };
        self.apply_flags(&mut cfg)?;
        for w in cfg.check()?.into_iter().chain(build_time_only(&cfg)) {
            rep.warn(&w);
        }
        Ok(cfg)
    }

    /// Applies the flags over a config (flags win).
    pub fn apply_flags(&self, cfg: &mut NodeConfig) -> Result<()> {
        let overrides = NodeOverrides {
            hostname: self.hostname.clone(),
            role: self.role,
            token_file: self.token_file.clone(),
            ssh_keys: read_ssh_keys(&self.ssh_key)?,
            k0s_args: self.k0s_arg.clone(),
            labels: self.label.clone(),
            ntp: if self.no_ntp {
                Some(Vec::new())
            } else if self.ntp.is_empty() {
                None
            } else {
                Some(self.ntp.clone())
            },
            address: self.address.clone(),
            gateway: self.gateway.clone(),
            dns: (!self.dns.is_empty()).then(|| self.dns.clone()),
        };
        cfg.apply(&overrides);
        cfg.k0s.taints.extend(self.taint.iter().cloned());
        if let Some(c) = &self.k0s_config {
            cfg.k0s.config_file = Some(c.clone());
        }
        if let Some(ssid) = &self.wifi_ssid {
            let psk = match &self.wifi_psk_file {
                Some(p) => {
                    let t = std::fs::read_to_string(p).with_context(|| {
                        format!("reading the Wi-Fi passphrase file {}", p.display())
                    })?;
                    Some(t.trim_end_matches(['\n', '\r']).to_string())
                }
                None => None,
            };
            cfg.wifi = Some(WifiConfig {
                ssid: ssid.clone(),
                psk,
                country: self.wifi_country.clone(),
            });
        }
        Ok(())
    }
}

/// Reads a node file: `#cloud-config` YAML or TOML.
/// `[boot]` settings are baked into the boot files when the image is built (the root hash
/// shares the kernel command line with them); configure writes the node files only, so it says
/// that it leaves them as built rather than appearing to apply them.
fn build_time_only(cfg: &NodeConfig) -> Option<String> {
    let mut keys = Vec::new();
    if !cfg.boot.kernel_args.is_empty() {
        keys.push("[boot] kernel_args");
    }
    if !cfg.boot.config_txt.is_empty() {
        keys.push("[boot] config_txt");
    }
    if keys.is_empty() {
        return None;
    }
    Some(format!(
        "{} not applied: configure writes the node files only and leaves the kernel command line \
         and config.txt as built; set them at build time (edgeimg build --node FILE)",
        keys.join(" and ")
    ))
}

pub fn read_node_file(path: &Path) -> Result<NodeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading node config {}", path.display()))?;
    if crate::node::cloud_config::is_cloud_config(&text) {
        return crate::node::cloud_config::from_cloud_config(&text, path);
    }
    Ok(NodeConfig::from_toml_str(&text, path)?)
}

/// `--ssh-key` takes a key line or a file holding key lines.
pub fn read_ssh_keys(args: &[String]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for a in args {
        let p = Path::new(a);
        if p.is_file() {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            keys.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        } else if a.contains(' ') {
            keys.push(a.clone());
        } else {
            bail!("--ssh-key {a}: neither a readable file nor a key line");
        }
    }
    Ok(keys)
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
    let started = Instant::now();
    // Everything that can fail on bad input happens before the disk is opened for writing.
    let files = render_set(set)?;
    let what = target.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .with_context(|| {
            format!("opening {what} for writing (a device needs write permission: check its group, e.g. `disk`)")
        })?;
    let (_, offset, _) = boot_partition(&file, &what)?;
    let mut vol = FatVolume::open(&file, offset).with_context(|| {
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

/// Every file under `dir` on the volume (recursively), with its size; empty when `dir` is absent.
pub fn list_files<F: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &FatVolume<F>,
    dir: &str,
) -> Result<Vec<(String, u64)>> {
    let entries = match vol.list(dir) {
        Ok(e) => e,
        Err(crate::fs::fat::FatError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for e in entries {
        let p = format!("{dir}/{}", e.name);
        if e.is_dir {
            out.extend(list_files(vol, &p)?);
        } else {
            out.push((p, e.size));
        }
    }
    Ok(out)
}

/// `edgeimg configure`: the command's handler (prints, like the other command handlers).
pub fn configure_cmd(json: bool, quiet: bool, a: &ConfigureArgs, rep: &dyn Reporter) -> Result<()> {
    let (target, args) = (&a.target, &a.node);
    if args.is_empty() {
        bail!("configure needs a node config: --node FILE, --inventory FILE --node-name NAME, or flags such as --hostname");
    }
    let set = args.resolve(rep)?;
    let report = configure(target, &set)?;
    print_report(json, quiet, &report)
}

pub fn print_report(json: bool, quiet: bool, report: &ConfigureReport) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    println!(
        "configured {} in {:.3} s: {} file(s) written, {} removed{}{}{}",
        report.target.display(),
        report.seconds,
        report.written.len(),
        report.removed.len(),
        report
            .hostname
            .as_ref()
            .map(|h| format!(", hostname {h}"))
            .unwrap_or_default(),
        report
            .role
            .as_ref()
            .map(|r| format!(", role {r}"))
            .unwrap_or_default(),
        if report.token {
            ", join token present"
        } else {
            ""
        }
    );
    for m in &report.macs {
        println!("  per-MAC config for {m}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_settings_are_reported_as_not_applied() {
        let with = NodeConfig::from_toml_str(
            "[boot]\nkernel_args = [\"quiet\"]\nconfig_txt = [\"arm_freq=1500\"]\n",
            Path::new("n.toml"),
        )
        .unwrap();
        let w = build_time_only(&with).expect("a warning");
        assert!(
            w.contains("[boot] kernel_args and [boot] config_txt not applied"),
            "{w}"
        );
        let without = NodeConfig::from_toml_str("hostname = \"a\"\n", Path::new("n.toml")).unwrap();
        assert_eq!(build_time_only(&without), None);
    }
}
