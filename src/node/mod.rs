//! The node config: what makes one device of a fleet itself (hostname, role, join token,
//! network, SSH keys, files, commands).
//!
//! Users write it in TOML (`node.toml`, cloud-init-like). edgeimg validates it on the host,
//! where an error can still name the file and line, and renders it onto the boot partition
//! as plain files a busybox shell can read (`edgeimg/node.env` and friends, see
//! [`NodeConfig::render`]). The device never parses TOML.

mod check;
pub mod cloud_config;
pub mod contract;
pub mod inventory;
mod render;
mod schema;
pub mod secrets;
pub mod token;
mod wifi;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::util::bounded::{self, InputError};
use crate::util::text::{q, shown};

pub use check::looks_like_private_key;
pub use render::{parse_node_env, shell_quote, RenderedNode};
pub use schema::{
    BootConfig, ContentEncoding, FileMode, FileSpec, InstallConfig, K0sConfig, Labels, NetMode,
    NetworkConfig, SshConfig, StorageConfig, TimeConfig, UpdateConfig, WifiConfig,
};
pub use wifi::{is_raw_key, wifi_pmk};

/// Longest value accepted for one file's content, the token or the k0s config file.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Longest total of everything rendered onto the boot partition for one node.
pub const MAX_TOTAL_BYTES: usize = 1024 * 1024;

/// The largest input files read, in bytes. Each is read through [`bounded::read_file`]:
/// refused from its size, never read whole first.
pub mod limits {
    use super::{MAX_FILE_BYTES, MAX_TOTAL_BYTES};
    /// A node file (TOML or cloud-config): what it renders is at most [`MAX_TOTAL_BYTES`];
    /// comments and escapes may make the text longer.
    pub const NODE_FILE: u64 = 4 * MAX_TOTAL_BYTES as u64;
    /// An inventory: a fleet of node tables.
    pub const INVENTORY: u64 = 16 * MAX_TOTAL_BYTES as u64;
    /// A join token file (a k0s token is about 2 KiB).
    pub const TOKEN_FILE: u64 = MAX_FILE_BYTES as u64;
    /// A k0s.yaml.
    pub const K0S_CONFIG: u64 = 4 * MAX_FILE_BYTES as u64;
    /// A file of SSH public keys (`authorized_keys`, `id_ed25519.pub`).
    pub const SSH_KEY_FILE: u64 = MAX_TOTAL_BYTES as u64;
    /// A file holding one Wi-Fi passphrase (at most 64 characters and a line break).
    pub const WIFI_PSK_FILE: u64 = 1024;
}

/// The k0s role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "controller")]
    Controller,
    #[serde(rename = "worker")]
    Worker,
    #[serde(rename = "controller+worker")]
    ControllerWorker,
    #[serde(rename = "single")]
    Single,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Controller,
        Role::Worker,
        Role::ControllerWorker,
        Role::Single,
    ];

    /// The name used in configs, file names and on the device.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Worker => "worker",
            Role::ControllerWorker => "controller+worker",
            Role::Single => "single",
        }
    }

    /// Whether the node cannot start without a join token. A controller may have one (to
    /// join an existing cluster) but starts a new cluster without it.
    pub fn needs_token(&self) -> bool {
        matches!(self, Role::Worker)
    }

    /// Whether the node runs a kubelet (and so imports airgap bundles): all but a plain
    /// controller.
    pub fn runs_worker(&self) -> bool {
        !matches!(self, Role::Controller)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = NodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| NodeError::UnknownRole(s.to_string()))
    }
}

/// One problem found by validation, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `network.address` or `files[2].path`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    /// The key may hold user text (a label's name): it is shown escaped and cut.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", shown(&self.key, 200), self.message)
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    /// The node file itself could not be read.
    #[error("{0}")]
    Read(InputError),
    /// TOML syntax, unknown key or wrong type: `file:line:col: message`.
    #[error("{}:{line}:{column}: {message}", shown(&origin.display().to_string(), 200))]
    Parse {
        origin: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: invalid node config:\n{}", shown(&origin.display().to_string(), 200), list(problems))]
    Invalid {
        origin: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("unknown role {}: expected one of controller, worker, controller+worker, single", q(.0))]
    UnknownRole(String),
    /// A file the node config names (token, k0s config) could not be read.
    #[error("{0}{hint}", hint = if .0.is_not_found() { " (check the path; relative paths are relative to the node config's directory)" } else { "" })]
    ReadReferenced(InputError),
    #[error("{what} {}: {message}", shown(&path.display().to_string(), 200))]
    BadReferenced {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the rendered node config is {size} bytes, more than the limit of {limit} bytes: shorten files, commands or keys")]
    TooLarge { size: usize, limit: usize },
    #[error("serializing the node config: {0}")]
    Serialize(String),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole node config. Every table is optional; an empty file is a valid config (the
/// image's defaults apply: the image's role, DHCP, a hostname derived on the device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// RFC 1123 label. Absent: the device derives `edgeimg-<mac>` from its first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Commands run once, on the first boot with this config (per `CONFIG_GENERATION`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_cmd: Vec<String>,
    /// Commands run on every boot, before k0s starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "K0sConfig::is_empty")]
    pub k0s: K0sConfig,
    #[serde(default, skip_serializing_if = "NetworkConfig::is_default")]
    pub network: NetworkConfig,
    #[serde(default, skip_serializing_if = "SshConfig::is_empty")]
    pub ssh: SshConfig,
    #[serde(default, skip_serializing_if = "TimeConfig::is_default")]
    pub time: TimeConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<WifiConfig>,
    #[serde(default, skip_serializing_if = "BootConfig::is_empty")]
    pub boot: BootConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    #[serde(default, skip_serializing_if = "StorageConfig::is_default")]
    pub storage: StorageConfig,
    #[serde(default, skip_serializing_if = "InstallConfig::is_default")]
    pub install: InstallConfig,
    #[serde(default, skip_serializing_if = "UpdateConfig::is_default")]
    pub update: UpdateConfig,
    /// Where the config came from (for messages); not part of the config.
    #[serde(skip)]
    origin: PathBuf,
    /// A cluster's share for this node (`--cluster`): made on the host, never in node.toml.
    #[serde(skip)]
    pub secrets: NodeSecrets,
}

/// What a cluster folder issues one node (`edgeimg ... --cluster DIR`). Everything here is
/// secret but `k0s_yaml`; the device moves it off the boot partition on the first boot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSecrets {
    /// The join token, instead of `k0s.token_file`.
    pub token: Option<String>,
    /// The k0s config, instead of `k0s.config_file`.
    pub k0s_yaml: Option<Vec<u8>>,
    /// Files for k0s's data dir by path under it (`pki/ca.crt`,
    /// `manifests/edgeimg-tokens/...`), rendered under [`contract::K0S_DATA_FILES`].
    pub data_files: Vec<(String, Vec<u8>)>,
}

impl NodeSecrets {
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.k0s_yaml.is_none() && self.data_files.is_empty()
    }
}

/// Values given on the command line that win over the node file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOverrides {
    pub hostname: Option<String>,
    pub role: Option<Role>,
    /// Relative to the current directory (as any command-line path).
    pub token_file: Option<PathBuf>,
    /// Added to the file's keys.
    pub ssh_keys: Vec<String>,
    /// Added to the file's k0s args.
    pub k0s_args: Vec<String>,
    /// `k=v`, added to (and winning over) the file's labels.
    pub labels: Vec<String>,
    /// Replaces the NTP server list (an empty list given explicitly disables NTP).
    pub ntp: Option<Vec<String>>,
    /// A CIDR address: switches the network to static.
    pub address: Option<String>,
    pub gateway: Option<String>,
    /// Replaces the DNS server list.
    pub dns: Option<Vec<String>>,
}

impl NodeConfig {
    /// Reads, parses and validates a node file. Relative paths inside it (`token_file`,
    /// `config_file`) are taken relative to the file's directory.
    pub fn from_toml_file(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = read_node_text(path)?;
        Self::from_toml_str(&text, path)
    }

    /// Reads a node file of either kind: `#cloud-config` YAML (see [`cloud_config`]) or
    /// TOML. Every command that takes `--node` reads it through here, so they all accept the
    /// same files.
    pub fn from_file(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = read_node_text(path)?;
        if cloud_config::is_cloud_config(&text) {
            return cloud_config::from_cloud_config(&text, path);
        }
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates node config text. `origin` names it in errors, and its
    /// directory anchors relative paths.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<NodeConfig, NodeError> {
        let mut cfg: NodeConfig =
            toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
        cfg.origin = origin.to_path_buf();
        let base = origin.parent().unwrap_or(Path::new(""));
        cfg.k0s.token_file = cfg.k0s.token_file.take().map(|p| base.join(p));
        cfg.k0s.config_file = cfg.k0s.config_file.take().map(|p| base.join(p));
        cfg.check()?;
        Ok(cfg)
    }

    /// The file this config was read from (empty for a config built in code).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The role the node config asks for, if any (otherwise the image's role applies).
    pub fn role(&self) -> Option<Role> {
        self.k0s.role
    }

    /// Applies command-line overrides. Call [`NodeConfig::check`] afterwards.
    pub fn apply(&mut self, o: &NodeOverrides) {
        if let Some(h) = &o.hostname {
            self.hostname = Some(h.clone());
        }
        if let Some(r) = o.role {
            self.k0s.role = Some(r);
        }
        if let Some(t) = &o.token_file {
            self.k0s.token_file = Some(t.clone());
        }
        self.ssh.authorized_keys.extend(o.ssh_keys.iter().cloned());
        self.k0s.args.extend(o.k0s_args.iter().cloned());
        for l in &o.labels {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            self.k0s.labels.0.insert(k.to_string(), v.to_string());
        }
        if let Some(n) = &o.ntp {
            self.time.ntp = Some(n.clone());
        }
        if let Some(a) = &o.address {
            self.network.mode = NetMode::Static;
            self.network.address = Some(a.clone());
        }
        if let Some(g) = &o.gateway {
            self.network.gateway = Some(g.clone());
        }
        if let Some(d) = &o.dns {
            self.network.dns = d.clone();
        }
    }

    /// Validates everything: errors name the key; the returned warnings are issues the
    /// caller should show but that do not stop the build (a token file readable by others).
    pub fn check(&self) -> Result<Vec<String>, NodeError> {
        let report = check::check(self);
        if report.problems.is_empty() {
            Ok(report.warnings)
        } else {
            Err(NodeError::Invalid {
                origin: self.origin.clone(),
                problems: report.problems,
            })
        }
    }

    /// The join token from `k0s.token_file`, trimmed and checked for the shape of a k0s
    /// join token (see [`token::check`]); `None` when no token file is set.
    pub fn token(&self) -> Result<Option<String>, NodeError> {
        if let Some(t) = &self.secrets.token {
            if self.k0s.token_file.is_some() {
                return Err(self.cluster_conflict("k0s.token_file", "a join token"));
            }
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.k0s.token_file else {
            return Ok(None);
        };
        let raw = bounded::read_file(path, limits::TOKEN_FILE, "token file")
            .map_err(NodeError::ReadReferenced)?;
        let token = token::check(&raw).map_err(|message| NodeError::BadReferenced {
            what: "token file",
            path: path.clone(),
            message,
        })?;
        Ok(Some(token))
    }

    /// The k0s config file's content, when `k0s.config_file` is set.
    pub fn k0s_config(&self) -> Result<Option<Vec<u8>>, NodeError> {
        if let Some(y) = &self.secrets.k0s_yaml {
            if self.k0s.config_file.is_some() {
                return Err(self.cluster_conflict("k0s.config_file", "the k0s config"));
            }
            return Ok(Some(y.clone()));
        }
        let Some(path) = &self.k0s.config_file else {
            return Ok(None);
        };
        let data = bounded::read_file(path, limits::K0S_CONFIG, "k0s config file")
            .map_err(NodeError::ReadReferenced)?;
        Ok(Some(data))
    }
}

impl NodeConfig {
    fn cluster_conflict(&self, key: &str, what: &str) -> NodeError {
        NodeError::Invalid {
            origin: self.origin.clone(),
            problems: vec![Problem {
                key: key.into(),
                message: format!(
                    "--cluster issues this node {what}: drop `{key}` (or --token-file/--k0s-config), \
                     or do not use --cluster"
                ),
            }],
        }
    }
}

/// The text of a node file (TOML or cloud-config), within [`limits::NODE_FILE`].
pub fn read_node_text(path: &Path) -> Result<String, NodeError> {
    bounded::read_text(path, limits::NODE_FILE, "node config").map_err(NodeError::Read)
}

/// Turns a toml error into `file:line:col: message`, naming the key when it can be seen on
/// the line the error points at.
fn parse_error(text: &str, origin: &Path, e: &toml::de::Error) -> NodeError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let (line, column) = line_col(text, offset);
    // The parser's message may quote the value (`invalid type: string "..."`).
    let message = crate::util::text::message(e.message().trim(), 300);
    let key = key_at(text, line).map(|k| shown(&k, crate::util::text::IN_ERRORS));
    let message = match key {
        Some(k) if !message.contains(&format!("`{k}`")) => format!("{k}: {message}"),
        _ => message,
    };
    NodeError::Parse {
        origin: origin.to_path_buf(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key assigned on `line` (1-based), prefixed by the table it is in: a best
/// effort for messages, `None` when the line is not a `key = value` line.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    let (k, _) = this.split_once('=')?;
    let k = k.trim().trim_matches('"');
    if k.is_empty() || k.starts_with('#') || k.starts_with('[') {
        return None;
    }
    let before = &lines[..line - 1];
    let Some(header) = before
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
    else {
        return Some(k.to_string());
    };
    // `[[files]]` is an array of tables: name the element, `files[2].mode`.
    if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split(']').next()) {
        // The header itself may be malformed (`[[files]`: found by the fuzzer), so it may not
        // count itself: never below 0.
        let index = before
            .iter()
            .filter(|l| l.trim().starts_with(&format!("[[{name}]]")))
            .count()
            .saturating_sub(1);
        return Some(format!("{}[{index}].{k}", name.trim()));
    }
    Some(format!(
        "{}.{k}",
        header.trim_matches(|c| c == '[' || c == ']').trim()
    ))
}

#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod overlay_tests;
#[cfg(test)]
pub(crate) mod tests;
