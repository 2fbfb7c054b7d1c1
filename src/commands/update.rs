//! `edgeimg update IMAGE-or-DEVICE BUNDLE`: an offline A/B update (see `crate::update`).

use anyhow::Result;

use super::Out;
use crate::cli::UpdateArgs;

pub(crate) fn update(out: Out, a: &UpdateArgs) -> Result<()> {
    let r = crate::update::update(&crate::update::Options {
        target: &a.target,
        bundle: &a.bundle,
        force: a.force,
        tries: a.tries,
        sys_root: &a.sys_root,
        device_force: a.fixed_disk,
    })?;
    if out.json {
        return super::print_json(&r);
    }
    if !out.quiet {
        println!(
            "{}: slot {} now holds v{} (active: v{}), armed as the next boot's trial ({}, {} tries) in {:.1}s",
            r.target.display(),
            r.slot,
            r.version,
            r.from_version,
            r.boot_file,
            r.tries,
            r.seconds
        );
        println!(
            "it becomes the good slot once the node reports ready; otherwise the loader falls back"
        );
    }
    Ok(())
}
