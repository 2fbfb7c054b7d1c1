//! The command line: clap definitions, turning arguments into plans, and all printing.
//! Results go to stdout (text or `--json`); progress and warnings go to stderr.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::build::{build, BuildOptions};
use crate::node::{NodeConfig, NodeOverrides, Role};
use crate::plan::{Plan, Request};
use crate::profile::DataDir;
use crate::progress::{Reporter, Silent, Task};
use crate::source::cache::Cache;

/// Builds bootable, immutable OS images for edge Kubernetes (k0s) nodes, without root.
#[derive(Parser, Debug)]
#[command(name = "edgeimg", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print nothing but errors (and results with --json).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Project directory holding boards/, profiles/ and overlays/ (default: found automatically).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the boards edgeimg can build for.
    Boards,
    /// Fetch, verify and assemble an image for a board and role.
    Build(Box<BuildArgs>),
    /// Boot an image in QEMU and check that the node comes up as configured.
    Smoke(SmokeArgs),
    /// Boot an image in QEMU with its serial console attached to this terminal.
    Run(RunArgs),
    /// Rewrite the node config on the boot partition of an image or device, in place.
    Configure(Box<crate::image::personalize::ConfigureArgs>),
    /// Show the partitions, boot files, node config and manifest of an image or device.
    Inspect(crate::image::inspect::InspectArgs),
    /// Write an image (.img or .img.xz) to a device, verify it, then personalize it.
    Flash(Box<crate::flash::FlashArgs>),
    /// Serve a folder (the output of `build --format pxe`) read-only over plain HTTP.
    Serve(ServeArgs),
    /// Encode a folder as squashfs with the build's encoder and time it (for scripts/bench).
    #[command(hide = true)]
    EncodeSquashfs(crate::fs::squashfs_bench::EncodeSquashfsArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The folder to serve.
    pub dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: String,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Board name (a file in boards/): see `edgeimg boards`.
    #[arg(long, default_value = "x86-64")]
    pub board: String,
    /// Node role: controller, worker, controller+worker or single.
    #[arg(long)]
    pub role: Option<Role>,
    /// Node config (TOML) rendered onto the boot partition.
    #[arg(long, value_name = "FILE")]
    pub node: Option<PathBuf>,
    /// Hostname of the node (overrides the node config).
    #[arg(long)]
    pub hostname: Option<String>,
    /// File holding the k0s join token (overrides the node config).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// SSH public key file or key line to authorize (repeatable).
    #[arg(long, value_name = "KEY")]
    pub ssh_key: Vec<String>,
    /// k0s version (the default is pinned in profiles/base.toml).
    #[arg(long, value_name = "V")]
    pub k0s_version: Option<String>,
    /// Use this local k0s binary (hashed and recorded in the manifest).
    #[arg(long, value_name = "PATH")]
    pub k0s_binary: Option<PathBuf>,
    /// k0s download URL template with {version} and {arch}.
    #[arg(long, value_name = "TEMPLATE")]
    pub k0s_url: Option<String>,
    /// Expected sha256 of the k0s binary (for versions or URLs not pinned in the profile).
    #[arg(long, value_name = "HEX")]
    pub k0s_sha256: Option<String>,
    /// Debian mirror URL (default: the profile's, else this host's APT sources).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Debian suite.
    #[arg(long)]
    pub suite: Option<String>,
    /// Never use the network; fail if an input is not in the cache.
    #[arg(long)]
    pub offline: bool,
    /// Re-download the Debian index even when the cached one is recent.
    #[arg(long)]
    pub refresh: bool,
    /// Cache directory (default: $XDG_CACHE_HOME/edgeimg).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Skip the .img.xz output.
    #[arg(long)]
    pub no_xz: bool,
    /// What to write: raw (image), xz (image + .img.xz), pxe (network boot files), all.
    #[arg(long, value_enum, default_value_t = crate::boot::pxe::OutputFormat::Xz)]
    pub format: crate::boot::pxe::OutputFormat,
    /// URL the network boot files will be served from (names them in boot.ipxe); default
    /// http://10.0.2.100:8080, the guestfwd address QEMU tests use.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Leave out the dm-verity hash tree of the root partition.
    #[arg(long)]
    pub no_verity: bool,
    /// Neither reuse nor store build artifacts (root squashfs, initramfs, xz blocks) in the
    /// cache: every step runs.
    #[arg(long)]
    pub no_artifact_cache: bool,
    /// Build a second time (another process, output folder, cache copy, umask, time zone and
    /// locale) and compare every output byte for byte.
    #[arg(long)]
    pub check_reproducible: bool,
    /// Resolve and print the plan, build nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct SmokeArgs {
    /// The raw image (.img) to boot; it is copied, never modified.
    pub image: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Keep the disk copy and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Use KVM instead of TCG emulation.
    #[arg(long)]
    pub kvm: bool,
    /// Size of the test disk the image is copied onto, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub disk_mib: u64,
    /// QEMU guestfwd rule (`tcp:10.0.2.100:80-tcp:127.0.0.1:8080`), repeatable.
    #[arg(long, value_name = "RULE")]
    pub guestfwd: Vec<String>,
    /// Also require this text on the console before passing (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub expect: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The raw image (.img) to boot.
    pub image: PathBuf,
    /// Boot the image file itself instead of a copy.
    #[arg(long)]
    pub in_place: bool,
    /// Use KVM instead of TCG emulation.
    #[arg(long)]
    pub kvm: bool,
    /// Size of the test disk the image is copied onto, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub disk_mib: u64,
}

/// Parses arguments, runs the command and prints the outcome. Returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let rep = make_reporter(&cli);
    match run(&cli, rep.as_ref()) {
        Ok(()) => 0,
        Err(e) => {
            if cli.json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: &Cli, rep: &dyn Reporter) -> Result<()> {
    if let Command::Serve(args) = &cli.command {
        return serve_cmd(cli, args);
    }
    if let Command::EncodeSquashfs(args) = &cli.command {
        let report = crate::fs::squashfs_bench::encode_dir(args)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let data = DataDir::locate(cli.data_dir.as_deref())?;
    match &cli.command {
        Command::Boards => boards(cli, &data),
        Command::Build(args) => build_cmd(cli, &data, args, rep),
        Command::Smoke(args) => crate::commands::smoke::smoke_cmd(cli.json, &data, args, rep),
        Command::Run(args) => crate::commands::smoke::run_cmd(&data, args),
        Command::Configure(a) => {
            crate::image::personalize::configure_cmd(cli.json, cli.quiet, a, rep)
        }
        Command::Inspect(a) => crate::image::inspect::inspect_cmd(cli.json, a),
        Command::Flash(a) => crate::flash::flash_cmd(cli.json, cli.quiet, a, rep),
        Command::Serve(args) => serve_cmd(cli, args),
        Command::EncodeSquashfs(_) => unreachable!("handled above"),
    }
}

fn serve_cmd(cli: &Cli, args: &ServeArgs) -> Result<()> {
    let server = crate::serve::Server::bind(&args.dir, &args.listen)?;
    let addr = server.local_addr()?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "listen": addr.to_string(), "dir": args.dir })
        );
    } else if !cli.quiet {
        println!(
            "serving {} on http://{addr}/ (read-only; Ctrl-C stops)",
            args.dir.display()
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let quiet = cli.quiet;
    server.run(std::sync::Arc::new(
        move |r: &crate::serve::AccessRecord| {
            if !quiet {
                eprintln!("{r}");
            }
        },
    ))
}

fn boards(cli: &Cli, data: &DataDir) -> Result<()> {
    let boards = data.boards()?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&boards)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<6} {:<6} {:<5} description",
        "board", "arch", "boot", "table"
    );
    for b in boards {
        let boot = match b.boot {
            crate::profile::BootSpec::Uefi { .. } => "uefi",
            crate::profile::BootSpec::Rpi(_) => "rpi",
        };
        let table = format!("{:?}", b.partition_table).to_lowercase();
        let desc = match &b.unsupported {
            Some(why) => format!("NOT OFFERED: {why}"),
            None => b.description.clone(),
        };
        println!(
            "{:<12} {:<6} {:<6} {:<5} {desc}",
            b.name,
            b.arch.debian(),
            boot,
            table
        );
    }
    Ok(())
}

fn build_cmd(cli: &Cli, data: &DataDir, args: &BuildArgs, rep: &dyn Reporter) -> Result<()> {
    let mut node = match &args.node {
        Some(p) => NodeConfig::from_toml_file(p)?,
        None => NodeConfig::default(),
    };
    let overrides = NodeOverrides {
        hostname: args.hostname.clone(),
        role: None,
        token_file: args.token_file.clone(),
        ssh_keys: crate::image::personalize::read_ssh_keys(&args.ssh_key)?,
        ..Default::default()
    };
    node.apply(&overrides);
    for w in node.check()? {
        rep.warn(&w);
    }
    // EDGEIMG_APT_ROOT points at another root's /etc/apt (containers, tests).
    let apt_root = std::env::var_os("EDGEIMG_APT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let host_mirror = crate::source::debian::apt_mirror(&apt_root)?;
    let req = Request {
        board: args.board.clone(),
        role: args.role,
        node: Some(node),
        mirror: args.mirror.clone(),
        suite: args.suite.clone(),
        k0s_version: args.k0s_version.clone(),
        k0s_url: args.k0s_url.clone(),
        k0s_sha256: args.k0s_sha256.clone(),
        k0s_binary: args.k0s_binary.clone(),
        source_date_epoch: None,
        verity: !args.no_verity,
    };
    let plan = Plan::resolve(data, req, host_mirror)?;
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let cache_dir = args.cache_dir.clone().unwrap_or_else(Cache::default_dir);
    let mut cache = Cache::new(cache_dir.clone(), args.offline)?;
    if args.refresh {
        cache.set_refresh(true);
    }
    let opts = BuildOptions {
        out_dir: args.out.clone(),
        cache,
        xz: !args.no_xz,
        artifact_cache: !args.no_artifact_cache,
        format: args.format,
        base_url: crate::boot::pxe::check_base_url(args.base_url.as_deref().unwrap_or_else(
            || {
                if args.format.pxe() && !cli.quiet {
                    eprintln!(
                    "warning: no --base-url: boot.ipxe names {}, the address QEMU tests forward; \
                     give the URL your nodes will fetch the files from",
                    crate::boot::pxe::DEFAULT_BASE_URL
                );
                }
                crate::boot::pxe::DEFAULT_BASE_URL
            },
        ))?,
    };
    let report = build(&plan, &opts, rep)?;
    if args.check_reproducible {
        check_reproducible(cli, &report, &args.out, &cache_dir, rep)?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !cli.quiet {
        println!(
            "built {} ({} MiB) in {:.1} s, {} download(s)",
            report.image.display(),
            report.image_size / (1024 * 1024),
            report.seconds,
            report.downloads
        );
        for o in &report.outputs {
            println!("  {}", o.display());
        }
        if report.token_required && !report.token_included && !args.format.image() {
            println!(
                "no join token: put one in node/<mac-with-dashes>/token (listed in that folder's index) \
                 or node/default/, or build with --token-file"
            );
        } else if report.token_required && !report.token_included {
            println!(
                "no join token in this image: add one per node with `edgeimg configure {} --token-file FILE` \
                 (or at flash time); it stays out of the shared image",
                report.image.display()
            );
        }
    }
    Ok(())
}

/// `build --check-reproducible`: the second build and the comparison (see `crate::build::repro`).
fn check_reproducible(
    cli: &Cli,
    report: &crate::build::BuildReport,
    out: &Path,
    cache_dir: &Path,
    rep: &dyn Reporter,
) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, diffs) = crate::build::repro::check(&args, &report.outputs, out, cache_dir, rep)?;
    if diffs.is_empty() {
        if !cli.quiet && !cli.json {
            println!("reproducible: {n} outputs identical in both builds");
        }
        return Ok(());
    }
    let list: Vec<String> = diffs.iter().map(|d| format!("  {d}")).collect();
    bail!(
        "not reproducible: {} of {n} outputs differ between two builds of the same plan:\n{}",
        diffs.len(),
        list.join("\n")
    )
}

fn make_reporter(cli: &Cli) -> Box<dyn Reporter> {
    if cli.quiet || cli.json {
        Box::new(Silent)
    } else {
        Box::new(Console::new())
    }
}

/// Progress on stderr: bars on a terminal, plain lines otherwise (CI logs).
struct Console {
    multi: indicatif::MultiProgress,
    tty: bool,
    lock: Mutex<()>,
}

impl Console {
    fn new() -> Self {
        Console {
            multi: indicatif::MultiProgress::new(),
            tty: std::io::stderr().is_terminal(),
            lock: Mutex::new(()),
        }
    }

    fn line(&self, s: &str) {
        let _g = self.lock.lock();
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            eprintln!("{s}");
        }
    }
}

impl Reporter for Console {
    fn step(&self, message: &str) {
        self.line(&format!("==> {message}"));
    }

    fn task(&self, label: &str, total: u64) -> Box<dyn Task> {
        if !self.tty {
            return Box::new(PlainTask {
                label: label.to_string(),
                done: 0,
                total,
                started: std::time::Instant::now(),
            });
        }
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Box::new(BarTask { bar })
    }

    fn warn(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }
}

struct BarTask {
    bar: indicatif::ProgressBar,
}

impl Task for BarTask {
    fn advance(&mut self, units: u64) {
        self.bar.inc(units);
    }
    fn finish(&mut self, message: &str) {
        self.bar.finish_and_clear();
        if !message.is_empty() {
            eprintln!("    {message}");
        }
    }
}

/// Without a terminal, a task prints one line when it finishes.
struct PlainTask {
    label: String,
    done: u64,
    total: u64,
    started: std::time::Instant,
}

impl Task for PlainTask {
    fn advance(&mut self, units: u64) {
        self.done += units;
    }
    fn finish(&mut self, message: &str) {
        let msg = if message.is_empty() {
            &self.label
        } else {
            message
        };
        eprintln!(
            "    {msg} ({}/{} in {:.1} s)",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_help() {
        fn check(cmd: &clap::Command) {
            for a in cmd.get_arguments() {
                if a.get_id() == "help" || a.get_id() == "version" {
                    continue;
                }
                assert!(
                    a.get_help().is_some(),
                    "{} --{} has no help",
                    cmd.get_name(),
                    a.get_id()
                );
            }
            for s in cmd.get_subcommands() {
                check(s);
            }
        }
        check(&Cli::command());
    }
}
