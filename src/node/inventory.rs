//! Fleet inventories: one TOML file with `[defaults]` and one `[nodes.<name>]` table per node.
//!
//! Both kinds of table take the node config's keys (`hostname`, `[k0s]`, `[network]`, ...)
//! plus a few flat shortcuts for what differs from node to node: `role`, `token_file`,
//! `address`, `gateway`, `dns`, `labels`, `taints`, and `mac` (inventory only: selects the
//! per-MAC directory on the boot partition). A node's table is merged over the defaults
//! (tables merge key by key, everything else is replaced); `hostname` defaults to the node's
//! name. The result is validated like any node file; relative paths are relative to the
//! inventory's directory.
//!
//! ```toml
//! [defaults]
//! role = "worker"
//! token_file = "worker.token"
//! time = { ntp = [] }
//!
//! [nodes.pi-07]
//! mac = "dc:a6:32:00:00:07"
//! address = "10.0.0.7/24"
//! gateway = "10.0.0.1"
//! labels = { rack = "r1" }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use toml::{Table, Value};

use crate::node::NodeConfig;
use crate::util::text::{q, shown, IN_ERRORS};

/// Flat keys moved into the `[k0s]` table.
const K0S_SHORTCUTS: [&str; 5] = ["role", "token_file", "labels", "taints", "config_file"];
/// Flat keys moved into the `[network]` table.
const NET_SHORTCUTS: [&str; 3] = ["address", "gateway", "dns"];

#[derive(Debug, Clone)]
pub struct Inventory {
    path: PathBuf,
    defaults: Table,
    nodes: Table,
}

impl Inventory {
    pub fn from_file(path: &Path) -> Result<Inventory> {
        let text =
            crate::util::bounded::read_text(path, crate::node::limits::INVENTORY, "inventory")?;
        Self::from_str(&text, path)
    }

    pub fn from_str(text: &str, path: &Path) -> Result<Inventory> {
        let mut top: Table = text
            .parse()
            .with_context(|| format!("parsing inventory {}", path.display()))?;
        let defaults = take_table(&mut top, "defaults", path)?;
        let nodes = take_table(&mut top, "nodes", path)?;
        if let Some(k) = top.keys().next() {
            bail!(
                "inventory {}: unknown top-level key `{}`: expected [defaults] and [nodes.<name>] tables",
                path.display(),
                shown(k, IN_ERRORS)
            );
        }
        if nodes.is_empty() {
            bail!(
                "inventory {}: no nodes: add a [nodes.<name>] table per node",
                path.display()
            );
        }
        for (name, v) in &nodes {
            if !v.is_table() {
                bail!(
                    "inventory {}: nodes.{} must be a table",
                    path.display(),
                    shown(name, IN_ERRORS)
                );
            }
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            defaults,
            nodes,
        })
    }

    /// The node names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The validated node config of `name`, and its MAC (lower case, `:`-separated) when set.
    pub fn node(&self, name: &str) -> Result<(NodeConfig, Option<String>)> {
        let Some(Value::Table(own)) = self.nodes.get(name) else {
            bail!(
                "inventory {} has no node {}; it has: {}",
                self.path.display(),
                q(name),
                shown(&self.names().join(", "), 400)
            );
        };
        // For messages: the name is user text.
        let shown_name = shown(name, IN_ERRORS);
        let mut merged = self.defaults.clone();
        merge(&mut merged, own.clone());
        let mac = match merged.remove("mac") {
            None => None,
            Some(Value::String(m)) => Some(normalize_mac(&m).with_context(|| {
                format!("inventory {}: nodes.{shown_name}.mac", self.path.display())
            })?),
            Some(_) => bail!(
                "inventory {}: nodes.{shown_name}.mac must be a string like \"dc:a6:32:00:00:07\"",
                self.path.display()
            ),
        };
        if let Some(k) = merged.keys().find(|k| *k == "name") {
            bail!(
                "inventory {}: nodes.{shown_name}.{k}: the node's name is its table name",
                self.path.display()
            );
        }
        move_into(&mut merged, "k0s", &K0S_SHORTCUTS);
        move_into(&mut merged, "network", &NET_SHORTCUTS);
        if let Some(Value::Table(net)) = merged.get_mut("network") {
            if net.contains_key("address") && !net.contains_key("mode") {
                net.insert("mode".into(), Value::String("static".into()));
            }
        }
        merged
            .entry("hostname")
            .or_insert_with(|| Value::String(name.to_string()));
        let text = toml::to_string(&merged).context("serializing the merged node config")?;
        // The origin names the node in errors; its directory anchors relative paths.
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let origin = self.path.with_file_name(format!("{file}[nodes.{name}]"));
        let cfg = NodeConfig::from_toml_str(&text, &origin)?;
        Ok((cfg, mac))
    }
}

fn take_table(top: &mut Table, key: &str, path: &Path) -> Result<Table> {
    match top.remove(key) {
        None => Ok(Table::new()),
        Some(Value::Table(t)) => Ok(t),
        Some(_) => bail!("inventory {}: `{key}` must be a table", path.display()),
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn move_into(t: &mut Table, table: &str, keys: &[&str]) {
    for k in keys {
        if let Some(v) = t.remove(*k) {
            let sub = t.entry(table).or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(sub) = sub {
                sub.insert((*k).to_string(), v);
            }
        }
    }
}

/// `DC-A6-32-00-00-07` or `dc:a6:32:00:00:07` -> `dc:a6:32:00:00:07`.
pub fn normalize_mac(s: &str) -> Result<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bail!(
            "{} is not a MAC address (six hex pairs separated by `:`)",
            q(s)
        );
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

/// The directory name of a MAC on the FAT boot partition (`:` is not allowed in FAT names).
pub fn mac_dir(mac: &str) -> String {
    mac.replace(':', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[defaults]
role = "worker"
time = { ntp = [] }
labels = { site = "berlin" }

[nodes.pi-07]
mac = "DC-A6-32-00-00-07"
address = "10.0.0.7/24"
gateway = "10.0.0.1"
labels = { rack = "r1" }

[nodes.pi-08]
hostname = "eight"
role = "controller"
"#;

    #[test]
    fn nodes_merge_over_defaults() {
        let inv = Inventory::from_str(FLEET, Path::new("/x/fleet.toml")).unwrap();
        assert_eq!(inv.names(), ["pi-07", "pi-08"]);
        let (a, mac) = inv.node("pi-07").unwrap();
        assert_eq!(mac.as_deref(), Some("dc:a6:32:00:00:07"));
        assert_eq!(a.hostname.as_deref(), Some("pi-07"));
        assert_eq!(a.role().unwrap().as_str(), "worker");
        assert_eq!(a.network.address.as_deref(), Some("10.0.0.7/24"));
        assert_eq!(a.k0s.labels.0.len(), 2, "defaults' and own labels merged");
        let (b, mac) = inv.node("pi-08").unwrap();
        assert!(mac.is_none());
        assert_eq!(b.hostname.as_deref(), Some("eight"));
        assert_eq!(b.role().unwrap().as_str(), "controller");
    }

    #[test]
    fn errors_name_the_node_and_key() {
        let inv = Inventory::from_str(FLEET, Path::new("/x/fleet.toml")).unwrap();
        let e = format!("{:#}", inv.node("pi-99").unwrap_err());
        assert!(e.contains("pi-07, pi-08"), "{e}");
        let bad = "[nodes.a]\nmac = \"zz\"\n";
        let inv = Inventory::from_str(bad, Path::new("f.toml")).unwrap();
        let e = format!("{:#}", inv.node("a").unwrap_err());
        assert!(e.contains("nodes.a.mac"), "{e}");
        let bad = "[nodes.a]\nhostnme = \"x\"\n";
        let inv = Inventory::from_str(bad, Path::new("f.toml")).unwrap();
        let e = format!("{:#}", inv.node("a").unwrap_err());
        assert!(e.contains("hostnme") && e.contains("nodes.a"), "{e}");
        assert!(Inventory::from_str("[defaults]\n", Path::new("f.toml")).is_err());
    }
}
