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
use crate::qemu::{Expectations, SmokeOptions, SmokeReport};

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
        switch: None,
    };
    rep.step(&format!(
        "booting {} ({}) in QEMU",
        args.image.display(),
        facts.board.name
    ));
    let report = crate::qemu::smoke(&args.image, &facts.board.qemu, &opts, rep)?;
    if out.json {
        super::print_json_line(&smoke_json(&report))?;
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

/// What `smoke --json` prints after `format_version` (`src/manifest/schema/smoke.schema.json`).
fn smoke_json(report: &SmokeReport) -> serde_json::Value {
    serde_json::json!({
        "ready_line": report.ready_line,
        "boot_seconds": report.boot_seconds,
        "sysinfo": report.sysinfo,
        "disk_copy": report.disk_copy.as_ref().map(|p: &PathBuf| p.display().to_string()),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::{check_schema, schema_errors};

    fn report(sysinfo: Option<&str>, disk_copy: Option<&str>) -> SmokeReport {
        SmokeReport {
            ready_line: "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.33.1+k0s.0".into(),
            boot_seconds: 41.25,
            console: vec!["[    0.000000] Linux version 6.1.0".into()],
            sysinfo: sysinfo.map(|l| crate::qemu::parse_sysinfo_line(l).unwrap()),
            disk_copy: disk_copy.map(PathBuf::from),
        }
    }

    #[test]
    fn smoke_json_is_one_line_that_its_schema_accepts() {
        for r in [
            report(
                Some("[   30.1] edgeimg: sysinfo: 52 passed, 1 warnings (memory 480 MiB < 500 MiB), 0 errors"),
                Some("/tmp/smoke/disk.img"),
            ),
            report(None, None),
        ] {
            let line = crate::commands::json_line(&smoke_json(&r)).unwrap();
            assert!(!line.contains('\n'), "{line}");
            check_schema("smoke.schema.json", &line);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ready_line"], r.ready_line.as_str());
            assert!(v.get("console").is_none(), "the console is not printed: {v}");
        }
        let v = crate::commands::json_line(&smoke_json(&report(
            Some("edgeimg: sysinfo: 52 passed, 1 warnings (memory 480 MiB < 500 MiB), 0 errors"),
            None,
        )))
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["sysinfo"]["warnings"], 1, "{v}");
        // What the schema refuses: a sysinfo without its counts, a boot without its seconds.
        let mut bad = v.clone();
        bad["sysinfo"].as_object_mut().unwrap().remove("passed");
        assert!(!schema_errors("smoke.schema.json", &bad.to_string()).is_empty());
        let mut bad = v;
        bad.as_object_mut().unwrap().remove("boot_seconds");
        assert!(!schema_errors("smoke.schema.json", &bad.to_string()).is_empty());
    }
}
