//! `edgeimg inspect`: what an image, an `.img.xz` or a card holds, without mounting.
//!
//! Everything shown comes from the image, which may hold any text: each value is escaped
//! ([`escaped`]) so that none can drive the terminal, and the JSON is written with
//! [`super::print_json`].

use std::fmt::Write;

use anyhow::Result;

use super::Out;
use crate::cli::InspectArgs;
use crate::image::inspect::{inspect as run_inspect, Inspection, NodeInfo};
use crate::util::text::shown;

/// A value from the image for the text output: control characters escaped, never cut.
fn escaped(s: &str) -> String {
    shown(s, usize::MAX)
}

/// `edgeimg inspect`: the command's handler (prints).
pub(crate) fn inspect(out: Out, a: &InspectArgs) -> Result<()> {
    let i = run_inspect(&a.target)?;
    if out.json {
        return super::print_json(&i);
    }
    print!("{}", text(&i));
    Ok(())
}

/// The text output of `inspect`.
pub(crate) fn text(i: &Inspection) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut o, i);
    o
}

fn write_text(o: &mut String, i: &Inspection) -> std::fmt::Result {
    let e = escaped;
    writeln!(
        o,
        "{} ({} MiB)",
        e(&i.target.display().to_string()),
        i.size >> 20
    )?;
    writeln!(
        o,
        "partition table: {:?}, disk id {}",
        i.table.table,
        e(&i.table.disk_id)
    )?;
    for p in &i.table.partitions {
        writeln!(
            o,
            "  {} start {} size {} MiB type {} {}",
            p.number,
            p.start_lba,
            p.size() >> 20,
            e(&p.ptype),
            e(&p.name)
        )?;
    }
    writeln!(
        o,
        "boot partition: FAT32 label {} id {}, {} of {} clusters free ({} bytes each)",
        crate::util::text::quoted(&i.boot.label, usize::MAX),
        e(&i.boot.volume_id),
        i.boot.clusters_free,
        i.boot.clusters_total,
        i.boot.cluster_bytes
    )?;
    for (p, s) in &i.boot.files {
        writeln!(o, "  {} ({s} bytes)", e(p))?;
    }
    if let Some(u) = &i.boot.uki {
        match &u.signer {
            Some(sg) => writeln!(
                o,
                "  uki: {} signed by {} (sha256 {})",
                e(&u.path),
                e(&sg.subject),
                sg.sha256
            )?,
            None => writeln!(
                o,
                "  uki: {} not signed: Secure Boot will not boot it",
                e(&u.path)
            )?,
        }
    }
    if let Some(c) = &i.boot.cmdline {
        writeln!(o, "  cmdline: {}", e(c))?;
    }
    let show = |o: &mut String, title: &str, n: &NodeInfo| -> std::fmt::Result {
        writeln!(o, "{title}:")?;
        writeln!(
            o,
            "  hostname {}, role {}, join token {}",
            n.hostname
                .as_deref()
                .map(e)
                .unwrap_or_else(|| "(derived from the MAC on the device)".into()),
            n.role
                .as_deref()
                .map(e)
                .unwrap_or_else(|| "(image default)".into()),
            if n.token_present { "present" } else { "absent" }
        )?;
        for (k, v) in &n.env {
            writeln!(o, "  {}={}", e(k), e(v))?;
        }
        Ok(())
    };
    match &i.node {
        Some(n) => show(o, "node config", n)?,
        None => writeln!(o, "node config: none (the image's defaults apply)")?,
    }
    for (mac, n) in &i.per_mac {
        show(o, &format!("node config for MAC {}", e(mac)), n)?;
    }
    if !i.slots.is_empty() {
        use crate::image::slots::Loader;
        let loader = match i.boot.loader {
            Some(Loader::SystemdBoot) => "systemd-boot (boot counting on the slots' UKIs)",
            Some(Loader::UBoot) => "U-Boot (boot.scr: slots.txt, trial.txt)",
            Some(Loader::PiFirmware) => "the Pi firmware (config.txt, tryboot.txt)",
            None => "none found",
        };
        writeln!(o, "slots switched by: {loader}")?;
    }
    for s in &i.slots {
        let mut state = Vec::new();
        if s.active {
            state.push("active".to_string());
        }
        if s.trial {
            match s.tries_left {
                Some(n) => state.push(format!("on trial, {n} tries left")),
                None => state.push("on trial".into()),
            }
        }
        if s.failed {
            state.push("failed trial".into());
        }
        state.push(
            if s.bootable {
                "bootable"
            } else {
                "not bootable"
            }
            .into(),
        );
        writeln!(
            o,
            "slot {}: partition {}, version {}, {}{}",
            s.slot,
            s.partition,
            e(s.version.as_deref().unwrap_or("none")),
            state.join(", "),
            s.boot_file
                .as_deref()
                .map(|f| format!(" ({})", e(f)))
                .unwrap_or_default()
        )?;
    }
    match &i.root {
        Some(r) => writeln!(
            o,
            "root: squashfs on partition {}, {} inodes, {} compression, {} MiB",
            r.partition,
            r.inodes,
            e(&r.compression),
            r.bytes_used >> 20
        )?,
        None => writeln!(o, "root: no squashfs found on partition 2")?,
    }
    if let Some(l) = i.root.as_ref().and_then(|r| r.listing.as_ref()) {
        writeln!(
            o,
            "  {} files ({} MiB), {} directories, {} symlinks; / holds {}",
            l.files,
            l.file_bytes >> 20,
            l.directories,
            l.symlinks,
            l.top_level
                .iter()
                .map(|t| e(t))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        for (k, v) in &l.build_env {
            writeln!(o, "  {}={}", e(k), e(v))?;
        }
    }
    match &i.manifest {
        Some(m) => writeln!(
            o,
            "manifest: board {} role {} k0s {} edgeimg {}",
            e(m.board()),
            e(m.role()),
            e(m.k0s_version()),
            e(m.edgeimg_version())
        )?,
        None => writeln!(o, "manifest: none beside it")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::inspect::inspect_file;
    use crate::image::inspect::tests::synthetic_image;
    use crate::image::personalize::{configure, NodeSet};
    use crate::node::{NodeConfig, WifiConfig};
    use std::path::Path;

    #[test]
    fn every_value_is_printed_escaped_and_secrets_never() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        synthetic_image(&img);
        let hostile = "--x=\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{7f}\u{202e}end";
        let mut cfg =
            NodeConfig::from_toml_str("hostname = \"edge-01\"\n", Path::new("n.toml")).unwrap();
        cfg.k0s.args = vec![hostile.into()];
        cfg.run_cmd = vec![format!("echo {hostile}")];
        cfg.wifi = Some(WifiConfig {
            ssid: "edge-net".into(),
            psk: Some("correct horse \"battery\" #staple".into()),
            country: Some("DE".into()),
        });
        let set = NodeSet {
            default: Some(cfg.clone()),
            per_mac: vec![("dc:a6:32:00:00:07".into(), cfg)],
        };
        configure(&img, &set).unwrap();
        let t = text(&inspect_file(&img, &img).unwrap());
        let raw: Vec<char> = t
            .chars()
            .filter(|c| crate::util::text::is_unsafe(*c) && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{raw:?} in {}", t.escape_debug());
        assert_eq!(
            t.matches(
                "K0S_ARGS='--x=\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}31m\\u{7f}\\u{202e}end'"
            )
            .count(),
            2,
            "{t}"
        );
        assert_eq!(t.matches("WIFI_PSK=(present, not shown)").count(), 2, "{t}");
        assert!(!t.contains("horse"), "{t}");
    }
}
