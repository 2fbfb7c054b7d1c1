//! The node arguments of `configure` and `flash` (`--node`, `--inventory`, `--hostname`, ...)
//! read into the node config(s) to write: files are read and checked here, before any disk
//! is opened, so bad input stops a command before it changes anything.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cli::NodeArgs;
use crate::image::personalize::NodeSet;
use crate::node::{limits, NodeConfig, NodeOverrides, WifiConfig};
use crate::progress::Reporter;
use crate::util::bounded;
use crate::util::text::shown;

/// Whether any node setting was given.
pub(crate) fn is_empty(a: &NodeArgs) -> bool {
    a.node.is_none()
        && a.cluster.is_none()
        && a.inventory.is_none()
        && a.hostname.is_none()
        && a.role.is_none()
        && a.token_file.is_none()
        && a.ssh_key.is_empty()
        && a.address.is_none()
        && a.gateway.is_none()
        && a.dns.is_empty()
        && a.label.is_empty()
        && a.taint.is_empty()
        && a.ntp.is_empty()
        && !a.no_ntp
        && a.k0s_arg.is_empty()
        && a.k0s_config.is_none()
        && a.wifi_ssid.is_none()
}

/// Reads and validates the node config(s) these arguments describe. Warnings (a token
/// file others can read) go to `rep`.
pub(crate) fn resolve(a: &NodeArgs, rep: &dyn Reporter) -> Result<NodeSet> {
    if a.all_nodes {
        let inv_path = a.inventory.as_deref().expect("clap: requires inventory");
        let inv = crate::node::inventory::Inventory::from_file(inv_path)?;
        let mut per_mac = Vec::new();
        for name in inv.names() {
            let (mut cfg, mac) = inv.node(&name)?;
            let Some(mac) = mac else { continue };
            apply_flags(a, &mut cfg)?;
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
        let default = if a.node.is_some() {
            Some(single(a, rep)?)
        } else {
            None
        };
        return Ok(NodeSet { default, per_mac });
    }
    Ok(NodeSet {
        default: Some(single(a, rep)?),
        per_mac: Vec::new(),
    })
}

/// A node's cluster share, issued in memory: [`Issued::record`] writes it into the cluster's
/// `cluster.toml` just before the card is written (a token recorded but never used is
/// harmless; one used but not recorded could not be revoked).
pub(crate) struct Issued {
    cluster: crate::cluster::Cluster,
    pub node: String,
    pub share: crate::cluster::Share,
}

impl Issued {
    pub(crate) fn record(&self, rep: &dyn Reporter) -> Result<()> {
        self.cluster.save()?;
        let c = &self.cluster.state;
        let r = &c.nodes[&self.node];
        let what = if r.first_controller {
            format!(
                "first controller: PKI, k0s.yaml (api {}) and {} token Secret(s){}",
                c.api_address.as_deref().unwrap_or("?"),
                self.share.secrets_for.len(),
                if self.share.secrets_for.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.share.secrets_for.join(", "))
                }
            )
        } else {
            format!(
                "{} join token {}",
                crate::cluster::Kind::for_role(r.role).as_str(),
                r.token_id.as_deref().unwrap_or("?")
            )
        };
        rep.step(&format!("cluster {}: node {}: {what}", c.name, self.node));
        if let Some(p) = &self.share.pending {
            rep.warn(&format!(
                "the first controller's card was issued before node {}: its token Secret is in {}; \
                 apply it on the controller (`k0s kubectl apply -f`) or copy it to \
                 /var/lib/k0s/manifests/{}/",
                self.node,
                p.display(),
                crate::cluster::TOKENS_STACK
            ));
        }
        Ok(())
    }
}

/// [`resolve`], then, with `--cluster`, the node's share issued into its config.
pub(crate) fn resolve_issued(
    a: &NodeArgs,
    rep: &dyn Reporter,
) -> Result<(NodeSet, Option<Issued>)> {
    let mut set = resolve(a, rep)?;
    let Some(dir) = &a.cluster else {
        return Ok((set, None));
    };
    let mut cluster = crate::cluster::Cluster::open(dir)?;
    let cfg = set
        .default
        .as_mut()
        .expect("--cluster conflicts with --all-nodes");
    let node = match (&a.node_name, &cfg.hostname) {
        (Some(n), _) => n.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => bail!(
            "--cluster needs the node's name, one token per name: --inventory FILE --node-name \
             NAME, or --hostname NAME"
        ),
    };
    let Some(role) = cfg.role() else {
        bail!(
            "--cluster: node {}: no role: set `role` for it in the inventory or node file, or \
             pass --role",
            shown(&node, 80)
        );
    };
    let mut others = Vec::new();
    if let Some(inv) = &a.inventory {
        let inv = crate::node::inventory::Inventory::from_file(inv)?;
        for name in inv.names() {
            if let Some(r) = inv.node(&name)?.0.role() {
                others.push((name, r));
            }
        }
    }
    let share = cluster.issue(&node, role, cfg.network.address.as_deref(), &others)?;
    cfg.secrets = share.secrets.clone();
    // The token and config files are read (and checked) as the card's would be.
    cfg.render()?;
    Ok((
        set,
        Some(Issued {
            cluster,
            node,
            share,
        }),
    ))
}

fn single(a: &NodeArgs, rep: &dyn Reporter) -> Result<NodeConfig> {
    let mut cfg = match (&a.inventory, &a.node_name, &a.node) {
        (Some(inv), Some(name), _) => {
            let inv = crate::node::inventory::Inventory::from_file(inv)?;
            inv.node(name)?.0
        }
        (Some(inv), None, _) if !a.all_nodes => bail!(
            "--inventory {}: name the node with --node-name (or use --all-nodes)",
            inv.display()
        ),
        (_, _, Some(p)) => read_node_file(p)?,
        // Named in messages as where the values came from.
        _ => NodeConfig::from_toml_str("", Path::new("command line"))?,
    };
    apply_flags(a, &mut cfg)?;
    for w in cfg.check()?.into_iter().chain(build_time_only(&cfg)) {
        rep.warn(&w);
    }
    Ok(cfg)
}

/// Applies the flags over a config (flags win).
pub(crate) fn apply_flags(a: &NodeArgs, cfg: &mut NodeConfig) -> Result<()> {
    let overrides = NodeOverrides {
        hostname: a.hostname.clone(),
        role: a.role.as_deref().map(str::parse).transpose()?,
        token_file: a.token_file.clone(),
        ssh_keys: read_ssh_keys(&a.ssh_key)?,
        k0s_args: a.k0s_arg.clone(),
        labels: a.label.clone(),
        ntp: if a.no_ntp {
            Some(Vec::new())
        } else if a.ntp.is_empty() {
            None
        } else {
            Some(a.ntp.clone())
        },
        address: a.address.clone(),
        gateway: a.gateway.clone(),
        dns: (!a.dns.is_empty()).then(|| a.dns.clone()),
    };
    cfg.apply(&overrides);
    cfg.k0s.taints.extend(a.taint.iter().cloned());
    if let Some(c) = &a.k0s_config {
        cfg.k0s.config_file = Some(c.clone());
    }
    if let Some(ssid) = &a.wifi_ssid {
        let psk = match &a.wifi_psk_file {
            Some(p) => {
                let t = bounded::read_text(p, limits::WIFI_PSK_FILE, "Wi-Fi passphrase file")?;
                Some(t.trim_end_matches(['\n', '\r']).to_string())
            }
            None => None,
        };
        cfg.wifi = Some(WifiConfig {
            ssid: ssid.clone(),
            psk,
            country: a.wifi_country.clone(),
        });
    }
    Ok(())
}

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

/// Reads a node file: `#cloud-config` YAML or TOML.
pub(crate) fn read_node_file(path: &Path) -> Result<NodeConfig> {
    Ok(NodeConfig::from_file(path)?)
}

/// `--ssh-key` takes a key line or a file holding key lines. A private key (`id_ed25519`
/// given for `id_ed25519.pub`) is refused naming the file only: no part of it is shown.
pub(crate) fn read_ssh_keys(args: &[String]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for a in args {
        let p = Path::new(a);
        // Anything at that path is taken as the file meant; only a path that does not exist
        // may be a key line.
        if std::fs::symlink_metadata(p).is_ok() {
            let text = bounded::read_text(p, limits::SSH_KEY_FILE, "SSH key file")?;
            if crate::node::looks_like_private_key(&text) {
                bail!(
                    "--ssh-key {}: this file looks like a private key: give the public key, {}.pub                      (a private key must never leave the machine it belongs to)",
                    shown(a, 200),
                    shown(a, 200)
                );
            }
            keys.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        } else if a.contains(' ') {
            keys.push(a.clone());
        } else {
            bail!(
                "--ssh-key {}: neither a readable file nor a key line",
                shown(a, 200)
            );
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Debian package of a tool these tests run.
    fn need(tool: &str, package: &str) {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "this test needs `{tool}`: apt-get install {package}");
    }

    /// `ssh-keygen -t ed25519` into `dir`: (private key path, its text).
    fn keypair(dir: &Path) -> (std::path::PathBuf, String) {
        need("ssh-keygen", "openssh-client");
        let key = dir.join("id_ed25519");
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&key).unwrap();
        (key, text)
    }

    /// The error a private key given as `--ssh-key` ends in, wherever it is found.
    fn ssh_key_error(arg: &str) -> String {
        match read_ssh_keys(&[arg.to_string()]) {
            Err(e) => format!("{e:#}"),
            Ok(keys) => {
                let mut cfg = NodeConfig::default();
                cfg.ssh.authorized_keys = keys;
                cfg.check().unwrap_err().to_string()
            }
        }
    }

    #[test]
    fn a_private_key_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (key, private) = keypair(dir.path());
        let e = ssh_key_error(key.to_str().unwrap());
        assert!(
            e.contains("private key") && e.contains(&format!("{}.pub", key.display())),
            "{e}"
        );
        for line in private.lines().filter(|l| !l.starts_with("-----")) {
            for w in line.as_bytes().windows(12) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!e.contains(w), "echoes {w:?} of the private key: {e}");
            }
        }
        // The public key is read.
        let public = format!("{}.pub", key.display());
        let keys = read_ssh_keys(&[public]).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].starts_with("ssh-ed25519 AAAA"), "{keys:?}");
    }

    #[test]
    fn ssh_key_arguments_that_are_not_files_are_refused_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let e = ssh_key_error(dir.path().to_str().unwrap());
        assert!(e.contains("a directory, not a regular file"), "{e}");
        let e = ssh_key_error("/dev/zero");
        assert!(e.contains("a character device, not a regular file"), "{e}");
    }

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
