//! `edgeimg smoke` and `edgeimg run`: which board and which expectations an image has, read
//! from the manifest beside it and the node config on its boot partition, then handed to
//! `qemu`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{RunArgs, SmokeArgs};
use crate::node::NodeConfig;
use crate::profile::{Board, DataDir};
use crate::progress::Reporter;
use crate::qemu::{Expectations, SmokeOptions};

/// What an image says about itself.
pub struct ImageFacts {
    pub board: Board,
    pub role: String,
    pub hostname: String,
    pub k0s_version: String,
}

/// Reads `manifest.json` beside the image, then the node config from its boot partition
/// (which `configure` may have changed since the build).
pub fn image_facts(data: &DataDir, image: &Path) -> Result<ImageFacts> {
    let manifest_path = image.with_file_name("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "reading {} (smoke needs the manifest written beside the image by `edgeimg build`)",
            manifest_path.display()
        )
    })?;
    let m: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let field = |k: &str| {
        m[k].as_str()
            .map(String::from)
            .with_context(|| format!("{}: no `{k}`", manifest_path.display()))
    };
    let board = data.board(&field("board")?)?;
    let mut facts = ImageFacts {
        board,
        role: field("role")?,
        hostname: field("hostname")?,
        k0s_version: field("k0s_version")?,
    };
    if let Some(node) = node_on_image(image, &m)? {
        if let Some(h) = node.hostname.clone() {
            facts.hostname = h;
        }
        if let Some(r) = node.role() {
            facts.role = r.to_string();
        }
    }
    Ok(facts)
}

/// The node config on the image's boot partition, if any.
pub fn node_on_image(image: &Path, manifest: &serde_json::Value) -> Result<Option<NodeConfig>> {
    let Some(start) = manifest["partitions"]["partitions"][0]["start_lba"].as_u64() else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let mut vol = crate::fs::fat::FatVolume::open(file, start * 512)?;
    match vol.read_file("edgeimg/node.toml")? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).to_string();
            Ok(Some(NodeConfig::from_toml_str(
                &text,
                Path::new("edgeimg/node.toml"),
            )?))
        }
        None => Ok(None),
    }
}

pub fn smoke_cmd(json: bool, data: &DataDir, args: &SmokeArgs, rep: &dyn Reporter) -> Result<()> {
    let facts = image_facts(data, &args.image)?;
    let opts = SmokeOptions {
        timeout: Duration::from_secs(args.timeout),
        keep: args.keep,
        disk_size: args.disk_mib * 1024 * 1024,
        kvm: args.kvm,
        expect: Expectations {
            role: facts.role.clone(),
            hostname: facts.hostname.clone(),
            root_ro: true,
            k0s_version: facts.k0s_version.clone(),
        },
        extra_console_checks: args.expect.clone(),
        mac: None,
        guestfwd: args.guestfwd.clone(),
    };
    rep.step(&format!(
        "booting {} ({}) in QEMU",
        args.image.display(),
        facts.board.name
    ));
    let report = crate::qemu::smoke(&args.image, &facts.board.qemu, &opts, rep)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ready_line": report.ready_line,
                "boot_seconds": report.boot_seconds,
                "disk_copy": report.disk_copy.as_ref().map(|p: &PathBuf| p.display().to_string()),
            })
        );
    } else {
        println!("{}", report.ready_line);
        println!("ready after {:.1} s", report.boot_seconds);
        if let Some(p) = &report.disk_copy {
            println!("disk copy kept at {}", p.display());
        }
    }
    Ok(())
}

pub fn run_cmd(data: &DataDir, args: &RunArgs) -> Result<()> {
    let facts = image_facts(data, &args.image)?;
    crate::qemu::run(
        &args.image,
        &facts.board.qemu,
        args.in_place,
        args.disk_mib * 1024 * 1024,
        args.kvm,
    )
}
