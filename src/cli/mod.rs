//! The command line: clap types only. This module imports nothing of the crate, and only
//! `commands` uses it: library code takes plain values, never argument structs, so the same
//! code serves the command line, tests and other programs.
//!
//! Every argument has a doc comment (its `--help` text); a test checks that none lacks one and
//! that `--help` fits 80 columns.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The node roles, as `--role` accepts them (`node::Role` parses them).
pub const ROLES: [&str; 4] = ["controller", "worker", "controller+worker", "single"];

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
    /// Folder whose boards/ and profiles/ add to or replace the built-in ones (file by file),
    /// and whose overlays/, if present, replaces the built-in overlays. Boards and profiles
    /// in $XDG_CONFIG_HOME/edgeimg/ are read too, below this folder. Default:
    /// $EDGEIMG_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the boards: built in and the user's, with those not offered yet and why.
    Boards,
    /// Fetch, verify and assemble an image for a board and role.
    Build(Box<BuildArgs>),
    /// Boot an image in QEMU and check that the node comes up as configured.
    Smoke(SmokeArgs),
    /// Boot an image in QEMU with its serial console attached to this terminal.
    Run(RunArgs),
    /// Rewrite the node config on the boot partition of an image or device, in place.
    Configure(Box<ConfigureArgs>),
    /// Show the partitions, boot files, node config and manifest of an image or device.
    Inspect(InspectArgs),
    /// Write an image (.img or .img.xz) to a device, verify it, then personalize it.
    Flash(Box<FlashArgs>),
    /// Write a signed update bundle into the inactive root slot of an image or card and arm
    /// it as the next boot's trial.
    Update(UpdateArgs),
    /// Serve a folder (the output of `build --format pxe`) read-only over plain HTTP.
    Serve(ServeArgs),
    /// Make and manage the Secure Boot keys images are signed with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Make a cluster's secrets before the first boot; see what was issued; revoke a node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(CompletionsArgs),
    /// Write the manual pages (edgeimg.1, edgeimg-build.1, ...) into a folder.
    Manpages(ManpagesArgs),
    /// Encode a folder as squashfs with the build's encoder and time it (for scripts/bench).
    #[command(hide = true)]
    EncodeSquashfs(EncodeSquashfsArgs),
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The image file (.img) or the card's whole-disk device (/dev/sdX).
    pub target: PathBuf,
    /// The bundle (`<stem>.update` of `build --signing-key`).
    pub bundle: PathBuf,
    /// Install a version that is not newer than the active one.
    #[arg(long)]
    pub force: bool,
    /// Boots the loader tries the new slot before falling back (systemd-boot; a Raspberry
    /// Pi's trial, by U-Boot or the firmware's tryboot, is always one boot).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub tries: u32,
    /// Allow a device that is not removable (never a mounted or system disk).
    #[arg(long)]
    pub fixed_disk: bool,
    /// Root of /sys, /proc and /dev for the device checks (tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub sys_root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a PK, KEK and db key pair with certificates, and the signed lists that enroll them.
    Generate(KeysGenerateArgs),
    /// Make the fleet's Ed25519 update key: OUT.key (PKCS#8 PEM, private) and OUT.pub.
    Fleet(KeysFleetArgs),
}

#[derive(Args, Debug)]
pub struct KeysFleetArgs {
    /// Path prefix of the key files: writes OUT.key and OUT.pub (never overwrites them).
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct KeysGenerateArgs {
    /// The folder to write the keys into (made if missing; existing keys are never overwritten).
    pub dir: PathBuf,
    /// Who owns the keys: the certificates are named "<NAME> PK", "<NAME> KEK", "<NAME> db".
    #[arg(long, default_value = "edgeimg", value_name = "NAME")]
    pub name: String,
}

/// The shells `completions` writes scripts for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    /// The folder to write the pages into (made if missing), e.g. ~/.local/share/man/man1.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The folder to serve.
    pub dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Keep each connection open across `Connection: close` and long idle times: for QEMU's
    /// `guestfwd`, which carries every guest connection over one host connection.
    #[arg(long)]
    pub qemu_guestfwd: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Board name (built in, or a boards/NAME.toml of your own): see `edgeimg boards`.
    #[arg(long, default_value = "x86-64")]
    pub board: String,
    /// Node role: controller, worker, controller+worker or single.
    #[arg(long, value_parser = ROLES)]
    pub role: Option<String>,
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
    /// k0s airgap bundle (OCI image layout tarball) to ship for the worker: a file, or a URL
    /// template with {version} and {arch}; alone, the k0s release's bundle.
    #[arg(long, value_name = "FILE|URL", num_args = 0..=1)]
    pub airgap_bundle: Option<Option<String>>,
    /// Expected sha256 of the airgap bundle (needed for a URL; checked for a file).
    #[arg(long, value_name = "HEX")]
    pub airgap_sha256: Option<String>,
    /// Debian mirror URL (default: the profile's, else this host's APT sources).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Debian suite.
    #[arg(long)]
    pub suite: Option<String>,
    /// Suite of the same archive the kernel comes from (`trixie-backports` for a newer
    /// kernel); default: the board's `kernel_suite`, else `--suite`.
    #[arg(long, value_name = "SUITE")]
    pub kernel_suite: Option<String>,
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
    #[arg(long, value_enum, default_value_t = Format::Xz)]
    pub format: Format,
    /// URL the network boot files will be served from (names them in boot.ipxe); default
    /// http://10.0.2.100:8080, the guestfwd address QEMU tests use.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Sign systemd-boot and the kernel image with the db key of this folder (made by
    /// `edgeimg keys generate`) and put the key enrollment files on the ESP.
    #[arg(long, value_name = "DIR")]
    pub secure_boot: Option<PathBuf>,
    /// Let systemd-boot enroll the keys by itself on a machine in Secure Boot setup mode.
    #[arg(long, requires = "secure_boot")]
    pub secure_boot_enroll: bool,
    /// Absolute URL of the folder the Raspberry Pi images will be served from (https://...,
    /// or file:///PATH/): writes the Imager repository os_list.json naming them there.
    #[arg(long, value_name = "URL")]
    pub imager_url_base: Option<String>,
    /// Leave out the dm-verity hash tree of the root partition.
    #[arg(long)]
    pub no_verity: bool,
    /// The image's version: dotted numbers (`1`, `2.1`); default: the source date epoch as
    /// YYYY.MMDD.HHMMSS. An update only goes to a newer version unless forced.
    #[arg(long, value_name = "V")]
    pub image_version: Option<String>,
    /// Sign an update bundle (`<stem>.update`) with this fleet key (made by `edgeimg keys
    /// fleet`) and bake its public key into the root.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
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
    /// Size of the test disk the image is copied onto, in MiB (a 4 GB card: room for both
    /// root slots and a data partition k0s is content with).
    #[arg(long, default_value_t = 4096)]
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
    /// Size of the test disk the image is copied onto, in MiB (a 4 GB card: room for both
    /// root slots and a data partition k0s is content with).
    #[arg(long, default_value_t = 4096)]
    pub disk_mib: u64,
}

/// What `edgeimg build` writes (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The raw disk image (.img) with its .bmap.
    Raw,
    /// The raw image and its .img.xz (the default).
    Xz,
    /// Network boot files only (no disk image).
    Pxe,
    /// Raw image, .img.xz, and the network boot files in `<out>/pxe/`.
    All,
}

/// `edgeimg cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Make a cluster folder: CAs, service-account keys and cluster.toml (mode 0700).
    Init(ClusterInitArgs),
    /// Show the cluster's API address and which node was issued which token.
    Status(ClusterDirArg),
    /// Revoke one node's token: writes the commands that remove it on a controller.
    Revoke(ClusterRevokeArgs),
    /// Write a k0sctl.yaml for the fleet (hosts, roles and SSH addresses from an inventory).
    K0sctl(ClusterK0sctlArgs),
}

#[derive(Args, Debug)]
pub struct ClusterInitArgs {
    /// The cluster folder to create (its name is the cluster's name).
    pub dir: PathBuf,
    /// Address (IP or DNS name) nodes reach the API at; without it, the first controller's
    /// static address.
    #[arg(long, value_name = "ADDR")]
    pub api_address: Option<String>,
    /// Further name or address for the API certificate (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub san: Vec<String>,
    /// How many controllers the cluster may have.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub controllers: u32,
    /// k0s version recorded for the cluster (default: the one profiles/base.toml pins).
    #[arg(long, value_name = "VERSION")]
    pub k0s_version: Option<String>,
}

#[derive(Args, Debug)]
pub struct ClusterDirArg {
    /// The cluster folder.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ClusterRevokeArgs {
    /// The cluster folder.
    pub dir: PathBuf,
    /// The node whose token to revoke.
    pub node: String,
}

#[derive(Args, Debug)]
pub struct ClusterK0sctlArgs {
    /// The cluster folder.
    pub dir: PathBuf,
    /// The fleet's inventory.
    #[arg(long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Where to write k0sctl.yaml (default: k0sctl.yaml in the cluster folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Where the node config comes from: a file and/or flags (shared by `configure` and `flash`).
#[derive(Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// Node config file: TOML, or `#cloud-config` YAML (common subset).
    #[arg(long, value_name = "FILE")]
    pub node: Option<PathBuf>,
    /// Inventory TOML (defaults + one table per node); pick the node with --node-name.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The node of the inventory to apply.
    #[arg(long, value_name = "NAME", requires = "inventory")]
    pub node_name: Option<String>,
    /// Write every inventory node that has a `mac` side by side (edgeimg/nodes/<mac>/); the
    /// device picks its own by MAC at boot.
    #[arg(long, requires = "inventory", conflicts_with_all = ["node_name", "hostname", "address"])]
    pub all_nodes: bool,
    /// Cluster folder (`edgeimg cluster init`): issues this node its token, or the PKI when
    /// it is the first controller. The node is named by --node-name or --hostname.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["all_nodes", "token_file"])]
    pub cluster: Option<PathBuf>,
    /// Hostname of the node.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Node role: controller, worker, controller+worker or single.
    #[arg(long, value_parser = ROLES)]
    pub role: Option<String>,
    /// File holding the k0s join token (it goes onto the boot partition only).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// SSH public key file or key line to authorize (repeatable).
    #[arg(long, value_name = "KEY")]
    pub ssh_key: Vec<String>,
    /// Static address in CIDR form (switches the network to static).
    #[arg(long, value_name = "CIDR")]
    pub address: Option<String>,
    /// Default gateway (with --address).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// DNS server (repeatable; replaces the config's list).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// Kubernetes node label `key=value` (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Kubernetes node taint `key[=value]:Effect` (repeatable).
    #[arg(long, value_name = "TAINT")]
    pub taint: Vec<String>,
    /// NTP server (repeatable; replaces the config's list).
    #[arg(long, value_name = "HOST")]
    pub ntp: Vec<String>,
    /// Disable NTP.
    #[arg(long, conflicts_with = "ntp")]
    pub no_ntp: bool,
    /// Extra argument for k0s (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub k0s_arg: Vec<String>,
    /// k0s config file (k0s.yaml) for controllers.
    #[arg(long, value_name = "FILE")]
    pub k0s_config: Option<PathBuf>,
    /// Wi-Fi network name.
    #[arg(long, value_name = "SSID")]
    pub wifi_ssid: Option<String>,
    /// File holding the Wi-Fi passphrase (kept off the command line and shell history).
    #[arg(long, value_name = "FILE", requires = "wifi_ssid")]
    pub wifi_psk_file: Option<PathBuf>,
    /// Wi-Fi country code (regulatory domain), e.g. DE.
    #[arg(long, value_name = "CC", requires = "wifi_ssid")]
    pub wifi_country: Option<String>,
}

/// `edgeimg configure`.
#[derive(Args, Debug)]
pub struct ConfigureArgs {
    /// The image file (.img) or block device to personalize.
    pub target: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `edgeimg inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An image (.img), a compressed image (.img.xz) or a block device.
    pub target: PathBuf,
}

/// `edgeimg flash`.
#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The image: .img or .img.xz (a .bmap beside it is used when present).
    pub image: PathBuf,
    /// The block device to overwrite (a whole disk, e.g. /dev/sdb). Without it (and without
    /// --device-file), the candidate devices are listed.
    #[arg(long, value_name = "DEV", conflicts_with = "device_file")]
    pub device: Option<PathBuf>,
    /// Write to a regular file instead of a device (created or truncated; tests, golden
    /// images). Devices, FIFOs and the image itself are refused, whatever the path.
    #[arg(long, value_name = "FILE")]
    pub device_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow a non-removable disk.
    #[arg(long)]
    pub force: bool,
    /// Ignore a .bmap beside the image and write every block.
    #[arg(long)]
    pub no_bmap: bool,
    /// Use this bmap file instead of the one beside the image.
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Skip reading back and verifying what was written.
    #[arg(long)]
    pub no_verify: bool,
    /// Root of the sysfs/procfs tree used to vet devices (for tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub sys_root: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Args, Debug)]
pub struct EncodeSquashfsArgs {
    /// Folder to encode (its files are read in place; owners become root).
    pub dir: PathBuf,
    /// The squashfs file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// zstd level.
    #[arg(long, default_value_t = 15)]
    pub level: u32,
    /// Block size in bytes.
    #[arg(long, default_value_t = 128 * 1024)]
    pub block_size: u32,
    /// Compression threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
    fn help_fits_80_columns() {
        fn check(cmd: &mut clap::Command, path: &str) {
            let help = cmd.render_long_help().to_string();
            for line in help.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "`{path} --help` has a line of {} columns:\n{line}",
                    line.chars().count()
                );
            }
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            for n in names {
                let sub = cmd.find_subcommand_mut(&n).unwrap();
                check(sub, &format!("{path} {n}"));
            }
        }
        let mut cmd = Cli::command().term_width(80);
        cmd.build();
        check(&mut cmd, "edgeimg");
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
