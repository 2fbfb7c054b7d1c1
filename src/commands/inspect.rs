//! `edgeimg inspect`: what an image, an `.img.xz` or a card holds, without mounting.

use anyhow::Result;

use super::Out;
use crate::cli::InspectArgs;
use crate::image::inspect::{inspect as run_inspect, NodeInfo};

/// `edgeimg inspect`: the command's handler (prints).
pub(crate) fn inspect(out: Out, a: &InspectArgs) -> Result<()> {
    let i = run_inspect(&a.target)?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!("{} ({} MiB)", i.target.display(), i.size >> 20);
    println!(
        "partition table: {:?}, disk id {}",
        i.table.table, i.table.disk_id
    );
    for p in &i.table.partitions {
        println!(
            "  {} start {} size {} MiB type {} {}",
            p.number,
            p.start_lba,
            p.size() >> 20,
            p.ptype,
            p.name
        );
    }
    println!(
        "boot partition: FAT32 label {:?} id {}, {} of {} clusters free ({} bytes each)",
        i.boot.label,
        i.boot.volume_id,
        i.boot.clusters_free,
        i.boot.clusters_total,
        i.boot.cluster_bytes
    );
    for (p, s) in &i.boot.files {
        println!("  {p} ({s} bytes)");
    }
    if let Some(c) = &i.boot.cmdline {
        println!("  cmdline: {c}");
    }
    let show = |title: &str, n: &NodeInfo| {
        println!("{title}:");
        println!(
            "  hostname {}, role {}, join token {}",
            n.hostname
                .as_deref()
                .unwrap_or("(derived from the MAC on the device)"),
            n.role.as_deref().unwrap_or("(image default)"),
            if n.token_present { "present" } else { "absent" }
        );
        for (k, v) in &n.env {
            println!("  {k}={v}");
        }
    };
    match &i.node {
        Some(n) => show("node config", n),
        None => println!("node config: none (the image's defaults apply)"),
    }
    for (mac, n) in &i.per_mac {
        show(&format!("node config for MAC {mac}"), n);
    }
    match &i.root {
        Some(r) => println!(
            "root: squashfs on partition {}, {} inodes, {} compression, {} MiB",
            r.partition,
            r.inodes,
            r.compression,
            r.bytes_used >> 20
        ),
        None => println!("root: no squashfs found on partition 2"),
    }
    if let Some(l) = i.root.as_ref().and_then(|r| r.listing.as_ref()) {
        println!(
            "  {} files ({} MiB), {} directories, {} symlinks; / holds {}",
            l.files,
            l.file_bytes >> 20,
            l.directories,
            l.symlinks,
            l.top_level.join(" ")
        );
        for (k, v) in &l.build_env {
            println!("  {k}={v}");
        }
    }
    match &i.manifest {
        Some(m) => println!(
            "manifest: board {} role {} k0s {} edgeimg {}",
            m.board(),
            m.role(),
            m.k0s_version(),
            m.edgeimg_version()
        ),
        None => println!("manifest: none beside it"),
    }
    Ok(())
}
