//! `edgeimg configure`: personalizes an image or card in place.

use anyhow::{bail, Result};

use super::node_args;
use super::Out;
use crate::cli::ConfigureArgs;
use crate::image::personalize::{configure as run_configure, ConfigureReport};
use crate::progress::Reporter;

pub(crate) fn configure(out: Out, a: &ConfigureArgs, rep: &dyn Reporter) -> Result<()> {
    if node_args::is_empty(&a.node) {
        bail!("configure needs a node config: --node FILE, --inventory FILE --node-name NAME, or flags such as --hostname");
    }
    let (set, issued) = node_args::resolve_issued(&a.node, rep)?;
    if let Some(i) = &issued {
        i.record(rep)?;
    }
    let report = run_configure(&a.target, &set)?;
    print_report(out, &report)
}

pub(crate) fn print_report(out: Out, report: &ConfigureReport) -> Result<()> {
    if out.json {
        return super::print_json(report);
    }
    if out.quiet {
        return Ok(());
    }
    println!(
        "configured {} in {:.3} s: {} file(s) written, {} removed{}{}{}{}",
        report.target.display(),
        report.seconds,
        report.written.len(),
        report.removed.len(),
        match report.kept.len() {
            0 => String::new(),
            n => format!(", {n} of the A/B update's state kept"),
        },
        report
            .hostname
            .as_ref()
            .map(|h| format!(", hostname {h}"))
            .unwrap_or_default(),
        report
            .role
            .as_ref()
            .map(|r| format!(", role {r}"))
            .unwrap_or_default(),
        if report.token {
            ", join token present"
        } else {
            ""
        }
    );
    for m in &report.macs {
        println!("  per-MAC config for {m}");
    }
    Ok(())
}
