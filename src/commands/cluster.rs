//! `edgeimg cluster init|status|revoke|k0sctl`: a cluster folder's secrets, made before the
//! first boot, and what was issued from it.

use anyhow::{Context, Result};

use super::Out;
use crate::cli::{ClusterCommand, ClusterInitArgs};
use crate::cluster::{Cluster, InitOptions, TokenState};
use crate::node::inventory::Inventory;
use crate::profile::DataDir;

pub(crate) fn cluster(
    out: Out,
    c: &ClusterCommand,
    data_dir: Option<&std::path::Path>,
) -> Result<()> {
    match c {
        ClusterCommand::Init(a) => init(out, a, data_dir),
        ClusterCommand::Status(a) => status(out, &Cluster::open(&a.dir)?),
        ClusterCommand::Revoke(a) => {
            let mut cl = Cluster::open(&a.dir)?;
            let (path, script) = cl.revoke(&a.node)?;
            if out.json {
                return super::print_json(&serde_json::json!({
                    "node": a.node, "script": path, "commands": script,
                }));
            }
            println!(
                "revoked node {} in {}; run this on a controller (ssh root@CONTROLLER sh -s < {}):\n",
                a.node,
                a.dir.display(),
                path.display()
            );
            print!("{script}");
            Ok(())
        }
        ClusterCommand::K0sctl(a) => {
            let cl = Cluster::open(&a.dir)?;
            let inv = Inventory::from_file(&a.inventory)?;
            let mut hosts = Vec::new();
            for name in inv.names() {
                let (cfg, _) = inv.node(&name)?;
                let Some(role) = cfg.role() else {
                    anyhow::bail!(
                        "{}: node {name} has no role: k0sctl needs one for every host",
                        a.inventory.display()
                    );
                };
                let addr = match (&cfg.network.address, &cfg.hostname) {
                    (Some(a), _) => a.split('/').next().unwrap_or(a).to_string(),
                    (None, Some(h)) => h.clone(),
                    (None, None) => name.clone(),
                };
                hosts.push((name, role, addr));
            }
            let yaml = cl.k0sctl_yaml(&hosts);
            let path = a.out.clone().unwrap_or_else(|| a.dir.join("k0sctl.yaml"));
            crate::util::atomic::write_atomic(&path, yaml.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            if out.json {
                return super::print_json(
                    &serde_json::json!({ "path": path, "hosts": hosts.len() }),
                );
            }
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn init(out: Out, a: &ClusterInitArgs, data_dir: Option<&std::path::Path>) -> Result<()> {
    let k0s_version = match &a.k0s_version {
        Some(v) => v.clone(),
        None => DataDir::locate(data_dir)
            .and_then(|d| d.base())
            .map(|b| b.k0s.version)
            .context("reading the pinned k0s version (or pass --k0s-version)")?,
    };
    let cl = Cluster::init(
        &a.dir,
        &InitOptions {
            api_address: a.api_address.clone(),
            sans: a.san.clone(),
            controllers: a.controllers,
            k0s_version,
        },
    )?;
    if out.json {
        return super::print_json(&cl.state);
    }
    if !out.quiet {
        println!(
            "cluster {} written to {} (mode 0700; keep it safe: it holds the cluster's CA keys)",
            cl.state.name,
            cl.dir.display()
        );
        println!(
            "next: edgeimg flash IMAGE --device DEV --cluster {} --inventory FILE --node-name NAME",
            cl.dir.display()
        );
    }
    Ok(())
}

fn status(out: Out, cl: &Cluster) -> Result<()> {
    let s = &cl.state;
    if out.json {
        // Never the token secrets.
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|(n, r)| {
                serde_json::json!({
                    "node": n, "role": r.role, "state": r.state,
                    "first_controller": r.first_controller, "token_id": r.token_id,
                    "secret_on_controller": r.secret_on_controller, "updated": r.updated,
                })
            })
            .collect();
        return super::print_json(&serde_json::json!({
            "name": s.name, "api_address": s.api_address, "sans": s.sans,
            "controllers": s.controllers, "k0s_version": s.k0s_version,
            "created": s.created, "nodes": nodes,
        }));
    }
    println!(
        "cluster {} (k0s {}, made {})",
        s.name, s.k0s_version, s.created
    );
    println!(
        "api address: {}{}",
        s.api_address
            .as_deref()
            .unwrap_or("(not yet: the first controller's address)"),
        if s.sans.is_empty() {
            String::new()
        } else {
            format!(", sans: {}", s.sans.join(", "))
        }
    );
    if s.nodes.is_empty() {
        println!("no node issued yet");
    }
    for (n, r) in &s.nodes {
        let what = if r.first_controller {
            "first controller (PKI)".to_string()
        } else {
            let state = match r.state {
                TokenState::Reserved => "reserved",
                TokenState::Issued => "issued",
                TokenState::Revoked => "revoked",
            };
            format!(
                "token {} {state}{}",
                r.token_id.as_deref().unwrap_or("?"),
                if r.secret_on_controller || r.state == TokenState::Revoked {
                    ""
                } else {
                    ", Secret pending (see pending/)"
                }
            )
        };
        println!("  {n:<20} {:<18} {what} ({})", r.role.as_str(), r.updated);
    }
    Ok(())
}
