//! `edgeimg flash`: lists candidate devices, or checks the target and the image, asks before
//! overwriting a device, writes, verifies and personalizes.

use anyhow::{bail, Context, Result};

use super::node_args;
use super::Out;
use crate::cli::FlashArgs;
use crate::flash::device::BlockDevice;
use crate::flash::{flash as run_flash, prepare, Target};
use crate::progress::Reporter;

/// `edgeimg flash`: the command's handler (prints and asks, like the other handlers).
pub(crate) fn flash(out: Out, a: &FlashArgs, rep: &dyn Reporter) -> Result<()> {
    let target = match (&a.device, &a.device_file) {
        (None, None) => {
            let list = crate::flash::device::candidates(&a.sys_root)?;
            if out.json {
                super::print_json_line(&serde_json::json!({ "candidates": list }))?;
            } else if list.is_empty() {
                println!("no removable, unmounted disk found: insert a card or USB stick (or name a fixed disk with --device DEV --force)");
            } else {
                println!("candidate devices (pass one with --device):");
                for d in &list {
                    println!("  {}", d.describe());
                }
            }
            return Ok(());
        }
        (Some(dev), _) => Target::Device(crate::flash::device::check_target(
            &a.sys_root,
            dev,
            a.force,
        )?),
        (None, Some(f)) => {
            // What it is, not how its path reads: `null` in /dev is a device too. The opened
            // file is judged again when it is written.
            crate::flash::check_file_target(f)?;
            Target::File(f.clone())
        }
    };
    let (node, issued) = if node_args::is_empty(&a.node) {
        (None, None)
    } else {
        let (set, issued) = node_args::resolve_issued(&a.node, rep)?;
        (Some(set), issued)
    };
    let bmap = if a.no_bmap {
        None
    } else {
        a.bmap
            .clone()
            .or_else(|| crate::disk::source::bmap_beside(&a.image))
    };
    // The image and its bmap are checked before the question is asked.
    let prepared = prepare(&a.image, bmap.as_deref(), rep)?;
    if let Target::Device(d) = &target {
        if !a.yes {
            confirm(d)?;
        }
    }
    if let Some(i) = &issued {
        i.record(rep)?;
    }
    let report = run_flash(prepared, &target, !a.no_verify, node.as_ref(), rep)?;
    if out.json {
        return super::print_json(&report);
    }
    if !out.quiet {
        println!(
            "flashed {} to {}: {} MiB written of {} MiB{} in {:.1} s ({:.1} MiB/s){}",
            report.image.display(),
            report.target.display(),
            report.bytes_written >> 20,
            report.image_size >> 20,
            if report.bmap.is_some() { " (bmap)" } else { "" },
            report.write_seconds,
            report.mib_per_second,
            if report.verified {
                format!(", verified in {:.1} s", report.verify_seconds)
            } else {
                ", not verified".into()
            }
        );
        if let Some(c) = &report.configured {
            super::configure::print_report(
                Out {
                    json: false,
                    quiet: false,
                },
                c,
            )?;
        }
    }
    Ok(())
}

fn confirm(d: &BlockDevice) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!(
            "about to overwrite {}: pass --yes to confirm without a terminal",
            d.describe()
        );
    }
    eprint!(
        "Overwrite {}? Everything on it is lost. Type yes: ",
        d.describe()
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    if line.trim() != "yes" {
        bail!("not confirmed: nothing written");
    }
    Ok(())
}
