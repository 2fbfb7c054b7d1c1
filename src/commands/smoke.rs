//! `edgeimg smoke` and `edgeimg run`: which board and which expectations an image has (see
//! `image::facts`), handed to `qemu`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::Out;
use crate::cli::{RunArgs, SmokeArgs};
use crate::image::facts::image_facts;
use crate::profile::DataDir;
use crate::progress::Reporter;
use crate::qemu::{Expectations, SmokeOptions};

pub(crate) fn smoke(out: Out, data: &DataDir, args: &SmokeArgs, rep: &dyn Reporter) -> Result<()> {
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
    if out.json {
        println!(
            "{}",
            serde_json::json!({
                "format_version": super::FORMAT_VERSION,
                "ready_line": report.ready_line,
                "boot_seconds": report.boot_seconds,
                "sysinfo": report.sysinfo,
                "disk_copy": report.disk_copy.as_ref().map(|p: &PathBuf| p.display().to_string()),
            })
        );
    } else {
        println!("{}", report.ready_line);
        if let Some(s) = &report.sysinfo {
            println!("{}", s.text);
        }
        println!("ready after {:.1} s", report.boot_seconds);
        if let Some(p) = &report.disk_copy {
            println!("disk copy kept at {}", p.display());
        }
    }
    Ok(())
}

pub(crate) fn run(data: &DataDir, args: &RunArgs) -> Result<()> {
    let facts = image_facts(data, &args.image)?;
    crate::qemu::run(
        &args.image,
        &facts.board.qemu,
        args.in_place,
        args.disk_mib * 1024 * 1024,
        args.kvm,
    )
}
