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
        use crate::image::slots::Loader;
        let how = match r.loader {
            // The firmware's one-shot flag can only be set by the running board.
            Loader::PiFirmware => format!(
                "{} and tryboot.txt; the card's next boot asks the firmware for the trial with `reboot '0 tryboot'`",
                r.boot_file
            ),
            Loader::UBoot => format!(
                "{} and trial.txt, {} try; U-Boot boots it next",
                r.boot_file, r.tries
            ),
            Loader::SystemdBoot => format!("{}, {} tries", r.boot_file, r.tries),
        };
        println!(
            "{}: slot {} now holds v{} (active: v{}), armed as a trial ({how}) in {:.1}s",
            r.target.display(),
            r.slot,
            r.version,
            r.from_version,
            r.seconds
        );
        println!(
            "it becomes the good slot once the node reports ready; otherwise the loader falls back"
        );
    }
    Ok(())
}
