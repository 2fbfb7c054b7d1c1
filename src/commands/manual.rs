//! `edgeimg completions SHELL` and `edgeimg manpages DIR`: both generated from the clap
//! definition in `cli`, so they list exactly the commands and flags the binary takes.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Out;
use crate::cli::{Cli, Shell};

pub(crate) fn completions(shell: Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut stdout = std::io::stdout().lock();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "edgeimg", &mut stdout);
    Ok(())
}

/// Writes `edgeimg.1` and one `edgeimg-<command>.1` per visible command into `dir`.
pub(crate) fn manpages(out: Out, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, "edgeimg", dir, &mut written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names take `&'static str`; a few short names for a one-shot command.
        let name: &'static str = Box::leak(format!("edgeimg-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name);
        write_page(&sub, name, dir, &mut written)?;
    }
    if out.json {
        return super::print_json(&serde_json::json!({ "pages": written }));
    }
    if !out.quiet {
        for p in &written {
            println!("{p}");
        }
    }
    Ok(())
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the manual page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    crate::util::atomic::write_atomic(&path, &page)?;
    written.push(path.display().to_string());
    Ok(())
}
