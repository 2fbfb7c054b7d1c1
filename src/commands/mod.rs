//! One handler per command: the only place that prints, prompts or reads `--json`/`--quiet`.
//! Each handler turns the clap arguments of `cli` into plain values, calls the library, and
//! prints the result: text on stdout, or one JSON object with `--json`; progress and warnings
//! go to stderr through the [`console::Console`] reporter.

mod boards;
mod build;
mod configure;
mod console;
mod encode_squashfs;
mod flash;
mod inspect;
mod keys;
mod node_args;
mod serve;
mod smoke;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::profile::DataDir;
use crate::progress::{Reporter, Silent};

/// Parses arguments, runs the command and prints the outcome. Returns the exit code.
pub fn main() -> i32 {
    // First, before any thread starts: SIGINT, SIGTERM and SIGHUP remove scratch files.
    crate::util::cleanup::install();
    let cli = Cli::parse();
    let rep: Box<dyn Reporter> = if cli.quiet || cli.json {
        Box::new(Silent)
    } else {
        Box::new(console::Console::new())
    };
    match run(&cli, rep.as_ref()) {
        Ok(()) => 0,
        Err(e) => {
            // Messages quote user input: whatever a check let through is escaped here.
            let message = format!("{e:#}");
            if cli.json {
                let json = serde_json::json!({ "error": message }).to_string();
                println!("{}", crate::util::text::json_for_terminal(json));
            }
            eprintln!("error: {}", crate::util::text::for_terminal(&message));
            1
        }
    }
}

/// Prints `value` as pretty JSON, with the characters a terminal would act on escaped (JSON
/// writers leave DEL, C1 controls and bidirectional marks as they are). Every command's
/// `--json` output goes through here.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    println!("{}", crate::util::text::json_for_terminal(json));
    Ok(())
}

/// How a handler prints: `--json`, `--quiet`, or text.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub json: bool,
    pub quiet: bool,
}

fn run(cli: &Cli, rep: &dyn Reporter) -> anyhow::Result<()> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    // Commands that need no project data.
    match &cli.command {
        Command::Serve(args) => return serve::serve(out, args),
        Command::Keys(k) => return keys::keys(out, k),
        Command::EncodeSquashfs(args) => return encode_squashfs::encode(args),
        Command::Configure(a) => return configure::configure(out, a, rep),
        Command::Inspect(a) => return inspect::inspect(out, a),
        Command::Flash(a) => return flash::flash(out, a, rep),
        _ => {}
    }
    let data = DataDir::locate(cli.data_dir.as_deref())?;
    match &cli.command {
        Command::Boards => boards::boards(out, &data),
        Command::Build(args) => build::build(out, &data, args, rep),
        Command::Smoke(args) => smoke::smoke(out, &data, args, rep),
        Command::Run(args) => smoke::run(&data, args),
        Command::Serve(_)
        | Command::Keys(_)
        | Command::EncodeSquashfs(_)
        | Command::Configure(_)
        | Command::Inspect(_)
        | Command::Flash(_) => unreachable!("handled above"),
    }
}
