//! A zero-touch k0s cluster: every secret made on the host before the first boot.
//!
//! `edgeimg cluster init` writes a folder (mode 0700, files 0600) holding the cluster's CAs
//! and service-account keys as k0s keeps them in `<data-dir>/pki` ([`pki`]) and a
//! `cluster.toml` ([`State`]): API address, SANs, k0s version and the token of every node.
//! Flashing or configuring a card with `--cluster` issues that node its share ([`Share`]):
//! the first controller gets the PKI, a `k0s.yaml` and the bootstrap-token Secrets of every
//! other node (those already issued and those of its inventory); a worker gets its own join
//! token; a further controller a controller join token. One token per node, recorded before
//! the card is written, so that a lost card can be revoked ([`Cluster::revoke`]).

pub mod join;
pub mod pki;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::node::{NodeSecrets, Role};
use crate::util::text::{q, shown, IN_ERRORS};

pub use join::Kind;

/// The state file in a cluster folder.
pub const STATE_FILE: &str = "cluster.toml";
/// The folder of the CAs and keys in a cluster folder, as in k0s's data dir.
pub const PKI_DIR: &str = "pki";
/// The stack (direct child of `<data-dir>/manifests/`) holding the token Secrets.
pub const TOKENS_STACK: &str = "edgeimg-tokens";
/// Revocation scripts, one a node.
pub const REVOKE_DIR: &str = "revoke";
/// Secrets of nodes issued after the first controller, to apply on it.
pub const PENDING_DIR: &str = "pending";
/// The k0s data dir on the device (the device contract's `K0S_DATA`).
pub const DEVICE_DATA_DIR: &str = "/var/lib/k0s";

const FORMAT: u32 = 1;

/// What `init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The address nodes reach the API at; `None`: the first controller's static address.
    pub api_address: Option<String>,
    pub sans: Vec<String>,
    /// How many controllers the cluster may have (the first plus joining ones).
    pub controllers: u32,
    pub k0s_version: String,
}

/// Where one node's token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Written on the first controller's card, not yet on the node's own.
    Reserved,
    /// On the node's card.
    Issued,
    /// Revoked: the node's name cannot be issued again.
    Revoked,
}

/// One node of `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub role: Role,
    pub state: TokenState,
    /// The node holding the cluster's PKI (it has no token of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_controller: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Whether its Secret is on the first controller's card (else it is in `pending/`).
    #[serde(default)]
    pub secret_on_controller: bool,
    /// RFC 3339, UTC.
    pub updated: String,
}

/// `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_address: Option<String>,
    #[serde(default)]
    pub sans: Vec<String>,
    pub controllers: u32,
    pub k0s_version: String,
    pub created: String,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRecord>,
}

/// A cluster folder, opened and checked.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub state: State,
}

/// What one node's card gets: all of it secret, moved off the FAT on the first boot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// The join token, `k0s.yaml` and data-dir files for the card.
    pub secrets: NodeSecrets,
    /// Nodes whose Secrets came on this card (first controller).
    pub secrets_for: Vec<String>,
    /// A Secret that must be applied on the first controller (a node issued after it).
    pub pending: Option<PathBuf>,
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Checks an API address or SAN: an IP address or a DNS name.
pub fn check_address(what: &str, s: &str) -> Result<()> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        return Ok(());
    }
    bail!(
        "{what} {}: not an IP address or a DNS name (e.g. 192.168.1.10 or api.shop1.example)",
        q(s)
    )
}

/// A node's name goes into file names, the Secret's label and the k0s commands of a revoke:
/// an RFC 1123 label, as a Kubernetes node name.
pub fn check_node_name(node: &str) -> Result<()> {
    let ok = !node.is_empty()
        && node.len() <= 63
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !node.starts_with('-')
        && !node.ends_with('-');
    if !ok {
        bail!(
            "node name {}: a cluster's node names are RFC 1123 labels (a-z, 0-9, '-', at most \
             63 characters), as Kubernetes node names",
            q(node)
        );
    }
    Ok(())
}

/// Writes `data` to `path` with mode 0600, creating it (never replacing a file).
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` with `data` (mode 0600) through a temporary file and a rename.
fn replace(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, data)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    if let Some(d) = path.parent() {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

fn mkdir_private(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

impl Cluster {
    /// Makes a new cluster folder at `dir` (its name is the cluster's): written under a
    /// temporary name beside it and renamed at the end, so a failure leaves nothing.
    pub fn init(dir: &Path, o: &InitOptions) -> Result<Cluster> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .with_context(|| format!("{}: name the cluster's folder", dir.display()))?;
        if dir.join(STATE_FILE).exists() {
            bail!(
                "{} is already a cluster (it has {STATE_FILE}): refusing to overwrite its secrets; \
                 pick another name, or remove the folder if the cluster is gone",
                dir.display()
            );
        }
        if dir.exists() {
            bail!(
                "{} exists: refusing to overwrite it; `cluster init` makes a new folder",
                dir.display()
            );
        }
        if let Some(a) = &o.api_address {
            check_address("--api-address", a)?;
        }
        for s in &o.sans {
            check_address("--san", s)?;
        }
        if o.controllers == 0 {
            bail!("--controllers must be at least 1");
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = parent.join(format!(".{name}.edgeimg-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let t = now();
        let state = State {
            format: FORMAT,
            name: name.clone(),
            api_address: o.api_address.clone(),
            sans: o.sans.clone(),
            controllers: o.controllers,
            k0s_version: o.k0s_version.clone(),
            created: rfc3339(t),
            nodes: BTreeMap::new(),
        };
        let result = (|| -> Result<()> {
            mkdir_private(&tmp)?;
            mkdir_private(&tmp.join(PKI_DIR))?;
            mkdir_private(&tmp.join(PKI_DIR).join("etcd"))?;
            for (rel, pem) in pki::make_all(t)? {
                write_new(&tmp.join(PKI_DIR).join(rel), pem.as_bytes())?;
            }
            write_new(&tmp.join(STATE_FILE), state_text(&state)?.as_bytes())?;
            std::fs::rename(&tmp, dir)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            state,
        })
    }

    /// Opens a cluster folder: it must hold `cluster.toml` and the PKI, and nobody but its
    /// owner may read it.
    pub fn open(dir: &Path) -> Result<Cluster> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("--cluster {}: cannot read the folder", dir.display()))?;
        if !meta.is_dir() {
            bail!("--cluster {} is not a folder", dir.display());
        }
        let state_path = dir.join(STATE_FILE);
        if !state_path.is_file() {
            bail!(
                "--cluster {} is not an edgeimg cluster (it has no {STATE_FILE}): make one with \
                 `edgeimg cluster init {} --api-address ADDR`",
                dir.display(),
                dir.display()
            );
        }
        let mut paths = vec![dir.to_path_buf(), state_path.clone()];
        paths.push(dir.join(PKI_DIR));
        for f in pki::file_names() {
            paths.push(dir.join(PKI_DIR).join(f));
        }
        for p in &paths {
            let m = std::fs::symlink_metadata(p).with_context(|| {
                format!(
                    "cluster {}: {} is missing: the folder is incomplete",
                    dir.display(),
                    p.display()
                )
            })?;
            if m.mode() & 0o077 != 0 {
                bail!(
                    "cluster {}: {} has mode {:04o}, readable by others than its owner: the \
                     cluster's keys would leak; run `chmod -R go= {}`",
                    dir.display(),
                    p.display(),
                    m.mode() & 0o7777,
                    dir.display()
                );
            }
        }
        let text = std::fs::read_to_string(&state_path)
            .with_context(|| format!("reading {}", state_path.display()))?;
        let state: State = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let line = text[..at].matches('\n').count() + 1;
            anyhow::anyhow!(
                "{}:{line}: {} (this file is written by edgeimg: restore it from a backup)",
                state_path.display(),
                crate::util::text::message(e.message().trim(), 300)
            )
        })?;
        if state.format != FORMAT {
            bail!(
                "{}: format {} is not known to this edgeimg (it writes format {FORMAT})",
                state_path.display(),
                state.format
            );
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            state,
        })
    }

    /// Writes `cluster.toml` back.
    pub fn save(&self) -> Result<()> {
        replace(
            &self.dir.join(STATE_FILE),
            state_text(&self.state)?.as_bytes(),
        )
    }

    fn read_pki(&self, rel: &str) -> Result<String> {
        let p = self.dir.join(PKI_DIR).join(rel);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<String> {
        self.read_pki("ca.crt")
    }

    fn first_controller(&self) -> Option<&str> {
        self.state
            .nodes
            .iter()
            .find(|(_, r)| r.first_controller && r.state != TokenState::Revoked)
            .map(|(n, _)| n.as_str())
    }

    fn k0s_yaml(&self, address: &str) -> String {
        let mut sans = vec![address.to_string()];
        for s in &self.state.sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let list: Vec<String> = sans.iter().map(|s| format!("      - {s}\n")).collect();
        format!(
            "# k0s config written by edgeimg for cluster {}\napiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  name: {}\nspec:\n  api:\n    address: {address}\n    sans:\n{}",
            self.state.name,
            self.state.name,
            list.concat()
        )
    }

    fn new_record(&self, role: Role, state: TokenState) -> NodeRecord {
        let (id, secret) = loop {
            let t = join::new_token();
            let taken = self
                .state
                .nodes
                .values()
                .any(|r| r.token_id.as_deref() == Some(t.0.as_str()));
            if !taken {
                break t;
            }
        };
        NodeRecord {
            role,
            state,
            first_controller: false,
            token_id: Some(id),
            token_secret: Some(secret),
            secret_on_controller: false,
            updated: rfc3339(now()),
        }
    }

    fn secret_of(&self, node: &str, r: &NodeRecord) -> Option<(String, String)> {
        let (id, secret) = (r.token_id.as_ref()?, r.token_secret.as_ref()?);
        let file = format!("bootstrap-token-{id}.yaml");
        Some((
            file,
            join::secret_yaml(Kind::for_role(r.role), id, secret, node),
        ))
    }

    /// Issues `node` its share. `address` is the node's own static address (the API
    /// address of a first controller when the cluster has none yet); `others` are the
    /// other nodes of the inventory, whose tokens a first controller's card carries.
    /// Updates the state in memory: call [`Cluster::save`] before writing the card.
    pub fn issue(
        &mut self,
        node: &str,
        role: Role,
        address: Option<&str>,
        others: &[(String, Role)],
    ) -> Result<Share> {
        check_node_name(node)?;
        let shown_node = shown(node, IN_ERRORS);
        if let Some(r) = self.state.nodes.get(node) {
            if r.state != TokenState::Reserved {
                bail!(
                    "cluster {}: node {shown_node} was already issued ({}, {}): a name is issued \
                     once, so that a lost card can be revoked on its own; give this card another \
                     name{}",
                    self.state.name,
                    r.role,
                    match r.state {
                        TokenState::Revoked => "revoked",
                        _ => "issued",
                    },
                    if r.state == TokenState::Issued {
                        format!(
                            ", or revoke the old one first with `edgeimg cluster revoke {} {shown_node}`",
                            self.dir.display()
                        )
                    } else {
                        String::new()
                    }
                );
            }
            if r.role != role {
                bail!(
                    "cluster {}: node {shown_node} was reserved as a {} when the first controller \
                     was issued, not a {role}: its token is of that kind",
                    self.state.name,
                    r.role
                );
            }
        }
        match role {
            Role::Single => bail!(
                "--cluster: node {shown_node} has role single, a cluster of its own that no node \
                 joins: use controller or controller+worker"
            ),
            Role::Controller | Role::ControllerWorker if self.first_controller().is_none() => {
                self.issue_first_controller(node, role, address, others)
            }
            _ => self.issue_joining(node, role),
        }
    }

    fn issue_first_controller(
        &mut self,
        node: &str,
        role: Role,
        address: Option<&str>,
        others: &[(String, Role)],
    ) -> Result<Share> {
        let api = match (&self.state.api_address, address) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => {
                let a = a.split('/').next().unwrap_or(a).to_string();
                check_address("the controller's address", &a)?;
                a
            }
            (None, None) => bail!(
                "cluster {}: no API address: the cluster was made without --api-address and \
                 controller {} has no static address (set `address` for it in the inventory)",
                self.state.name,
                shown(node, IN_ERRORS)
            ),
        };
        self.state.api_address = Some(api.clone());
        let mut rec = NodeRecord {
            role,
            state: TokenState::Issued,
            first_controller: true,
            token_id: None,
            token_secret: None,
            secret_on_controller: false,
            updated: rfc3339(now()),
        };
        rec.first_controller = true;
        self.state.nodes.remove(node);
        // Reserve a token for every node of the inventory not yet known.
        for (other, r) in others {
            if other == node || self.state.nodes.contains_key(other) || *r == Role::Single {
                continue;
            }
            let rec = self.new_record(*r, TokenState::Reserved);
            self.state.nodes.insert(other.clone(), rec);
        }
        let controllers = self
            .state
            .nodes
            .values()
            .filter(|r| r.role != Role::Worker && r.state != TokenState::Revoked)
            .count()
            + 1;
        if controllers as u32 > self.state.controllers {
            bail!(
                "cluster {}: the inventory names {controllers} controllers, more than the {} the \
                 cluster was made for (cluster init --controllers)",
                self.state.name,
                self.state.controllers
            );
        }
        let mut share = Share::default();
        share.secrets.k0s_yaml = Some(self.k0s_yaml(&api).into_bytes());
        for f in pki::file_names() {
            let data = self.read_pki(&f)?;
            share
                .secrets
                .data_files
                .push((format!("pki/{f}"), data.into_bytes()));
        }
        let names: Vec<String> = self.state.nodes.keys().cloned().collect();
        for other in names {
            let r = self.state.nodes[&other].clone();
            if r.state == TokenState::Revoked {
                continue;
            }
            if let Some((file, yaml)) = self.secret_of(&other, &r) {
                share.secrets.data_files.push((
                    format!("manifests/{TOKENS_STACK}/{file}"),
                    yaml.into_bytes(),
                ));
                share.secrets_for.push(other.clone());
                if let Some(r) = self.state.nodes.get_mut(&other) {
                    r.secret_on_controller = true;
                }
            }
        }
        self.state.nodes.insert(node.to_string(), rec);
        Ok(share)
    }

    fn issue_joining(&mut self, node: &str, role: Role) -> Result<Share> {
        let Some(api) = self.state.api_address.clone() else {
            bail!(
                "cluster {}: no controller address is known yet, so a {role} cannot be told where \
                 to join: issue the first controller first (its static address becomes the API \
                 address), or make the cluster with `cluster init --api-address ADDR`",
                self.state.name
            );
        };
        let kind = Kind::for_role(role);
        if kind == Kind::Controller {
            let n = self
                .state
                .nodes
                .iter()
                .filter(|(n, r)| {
                    r.role != Role::Worker && r.state != TokenState::Revoked && n.as_str() != node
                })
                .count()
                + 1;
            if n as u32 > self.state.controllers {
                bail!(
                    "cluster {}: node {} would be controller number {n}, more than the {} the \
                     cluster was made for (cluster init --controllers)",
                    self.state.name,
                    shown(node, IN_ERRORS),
                    self.state.controllers
                );
            }
        }
        let mut rec = match self.state.nodes.get(node) {
            Some(r) => r.clone(),
            None => self.new_record(role, TokenState::Issued),
        };
        rec.state = TokenState::Issued;
        rec.updated = rfc3339(now());
        let ca = self.ca_pem()?;
        let (id, secret) = (
            rec.token_id.clone().expect("token records have an id"),
            rec.token_secret
                .clone()
                .expect("token records have a secret"),
        );
        let mut share = Share::default();
        share.secrets.token = Some(join::join_token(kind, &api, &ca, &id, &secret));
        if kind == Kind::Controller {
            share.secrets.k0s_yaml = Some(self.k0s_yaml(&api).into_bytes());
        }
        if self.first_controller().is_some() && !rec.secret_on_controller {
            // The first controller's card is already out: its Secret is to be applied.
            let dir = self.dir.join(PENDING_DIR);
            if !dir.exists() {
                mkdir_private(&dir)?;
            }
            let (file, yaml) = self.secret_of(node, &rec).expect("a token record");
            let path = dir.join(format!("{node}.yaml"));
            replace(&path, yaml.as_bytes())?;
            let _ = file;
            share.pending = Some(path);
        }
        self.state.nodes.insert(node.to_string(), rec);
        Ok(share)
    }

    /// Revokes `node`'s token: marks it in `cluster.toml` and writes the commands that
    /// remove its Secret (and the node) on a controller; returns the script's path and text.
    pub fn revoke(&mut self, node: &str) -> Result<(PathBuf, String)> {
        let Some(r) = self.state.nodes.get(node).cloned() else {
            bail!(
                "cluster {} has no node {}; it has: {}",
                self.state.name,
                q(node),
                shown(
                    &self
                        .state
                        .nodes
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    400
                )
            );
        };
        if r.first_controller {
            bail!(
                "node {} is the cluster's first controller: it holds the CA, not a token; \
                 there is nothing to revoke (replace the cluster to retire its CA)",
                q(node)
            );
        }
        if r.state == TokenState::Revoked {
            bail!("node {} was revoked already", q(node));
        }
        let id = r.token_id.clone().unwrap_or_default();
        let script = format!(
            "#!/bin/sh\n\
             # Revokes the bootstrap token of node {node} (cluster {cluster}). Run on a controller\n\
             # of the cluster (ssh root@CONTROLLER sh -s < this file). The manifest goes first:\n\
             # k0s re-applies what its manifests folder holds.\n\
             set -e\n\
             rm -f {dd}/manifests/{TOKENS_STACK}/bootstrap-token-{id}.yaml\n\
             k0s kubectl -n kube-system delete secret bootstrap-token-{id} --ignore-not-found\n\
             k0s kubectl delete node {node} --ignore-not-found\n",
            cluster = self.state.name,
            dd = DEVICE_DATA_DIR,
        );
        let dir = self.dir.join(REVOKE_DIR);
        if !dir.exists() {
            mkdir_private(&dir)?;
        }
        let path = dir.join(format!("{node}.sh"));
        replace(&path, script.as_bytes())?;
        if let Some(r) = self.state.nodes.get_mut(node) {
            r.state = TokenState::Revoked;
            r.updated = rfc3339(now());
        }
        self.save()?;
        Ok((path, script))
    }

    /// A `k0sctl.yaml` for the fleet: `hosts` are `(name, role, ssh address)`.
    pub fn k0sctl_yaml(&self, hosts: &[(String, Role, String)]) -> String {
        let mut out = format!(
            "# k0sctl config for cluster {name}, written by edgeimg from the inventory.\n\
             # The nodes' root is read-only: k0s comes with the image, so keep\n\
             # uploadBinary off and update k0s by updating the image.\n\
             apiVersion: k0sctl.k0sproject.io/v1beta1\n\
             kind: Cluster\n\
             metadata:\n  name: {name}\n\
             spec:\n  hosts:\n",
            name = self.state.name
        );
        for (name, role, addr) in hosts {
            out.push_str(&format!(
                "  - role: {role}\n    hostname: {name}\n    dataDir: {DEVICE_DATA_DIR}\n    uploadBinary: false\n    ssh:\n      address: {addr}\n      user: root\n      port: 22\n"
            ));
        }
        let api = self.state.api_address.clone().unwrap_or_default();
        out.push_str(&format!(
            "  k0s:\n    version: {}\n    config:\n",
            self.state.k0s_version
        ));
        for line in self.k0s_yaml(&api).lines().filter(|l| !l.starts_with('#')) {
            out.push_str(&format!("      {line}\n"));
        }
        out
    }
}

fn state_text(s: &State) -> Result<String> {
    let body = toml::to_string(s).context("serializing cluster.toml")?;
    Ok(format!(
        "# edgeimg cluster state: the API address, the k0s version and every node's token.\n\
         # Secret (mode 0600): anyone who reads it can join nodes to the cluster.\n{body}"
    ))
}

#[cfg(test)]
mod tests;
