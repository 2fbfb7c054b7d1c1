//! The device contract: everything the Rust build and the on-device shell scripts must agree
//! on, defined once. The build writes the kernel command line, the boot partition's node files
//! and the trees from these definitions, and renders them into `contract.sh`
//! ([`render_shell`]), which the initramfs init and the system's boot scripts source. The
//! scripts name none of these values themselves.
//!
//! - kernel arguments `edgeimg.<name>=` ([`KernelArg`]);
//! - where the node files live on the boot partition ([`BOOT_DIR`], [`NODES_DIR`]) and the
//!   variable names of `node.env` ([`NODE_ENV_VARS`]);
//! - the console protocol smoke tests wait on ([`SAY`], [`READY`], [`FAILED`]).
//!
//! The Kubernetes modules and sysctls the node sets up are not here: they are the profile's
//! `[kubernetes]` lists (profiles/base.toml), written into the image's build.env, so the
//! modules the node loads are the modules the root carries.

use std::fmt::Display;

/// Where `contract.sh` lies in the initramfs and in the root (the initramfs's `lib` is a link
/// to `usr/lib`, so `/lib/edgeimg/contract.sh` works in both).
pub const CONTRACT_PATH: &str = "usr/lib/edgeimg/contract.sh";

/// The folder of the node files on the boot partition (`edgeimg/node.env`, ...).
pub const BOOT_DIR: &str = "edgeimg";

/// Where the root holds airgap bundles (`build --airgap-bundle`, under dm-verity); the boot
/// script links each into `<data-dir>/images`, where a k0s worker imports them.
pub const AIRGAP_DIR: &str = "usr/share/edgeimg/airgap";

/// Per-MAC node configs on the boot partition: `edgeimg/nodes/<mac>/...`.
pub const NODES_DIR: &str = "edgeimg/nodes";

/// The folder under [`BOOT_DIR`] where A/B updates keep their state (slot.sh's
/// `SLOT_STATE`: the trial being run, why the last one gave up). It is the node's and the
/// updater's, not node config: `configure` keeps it as it is (a card in a reader may be on
/// trial, or have a failed trial to report on its next boot).
pub const SLOT_STATE_DIR: &str = "update";

/// Whether `rel` (a path under [`BOOT_DIR`], `/`-separated) is the update state's folder or a
/// file directly in it. Compared case-insensitively, as FAT names are.
pub fn is_slot_state_path(rel: &str, is_dir: bool) -> bool {
    let lower = rel.to_ascii_lowercase();
    match lower.split('/').collect::<Vec<_>>().as_slice() {
        [dir] => is_dir && *dir == SLOT_STATE_DIR,
        [dir, name] => !is_dir && *dir == SLOT_STATE_DIR && !name.is_empty(),
        _ => false,
    }
}

/// The files of one rendered node config, by name in its folder ([`BOOT_DIR`] or
/// `nodes/<mac>/`); besides them, `files/<n>` holds the content of `[[files]]` entry n.
pub const NODE_FILES: &[&str] = &[
    "node.env",
    "node.toml",
    "token",
    "k0s.yaml",
    "authorized_keys",
    "run_cmd.sh",
    "boot_cmd.sh",
];

/// The folder (under a node's folder) of files for k0s's data dir, by their path under it:
/// `k0s-data/pki/ca.crt` becomes `/var/lib/k0s/pki/ca.crt` on the first boot, mode 0600,
/// and is erased from the boot partition (a cluster's PKI and token Secrets).
pub const K0S_DATA_FILES: &str = "k0s-data";

/// Whether `rel` (a path under [`BOOT_DIR`], `/`-separated) is something edgeimg renders
/// there: a node file, `files/<n>`, per-MAC folders `nodes/<mac>/` with the same, or one of
/// the folders holding them (`is_dir`). Compared case-insensitively, as FAT names are.
pub fn is_node_path(rel: &str, is_dir: bool) -> bool {
    let lower = rel.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let one_node = |p: &[&str]| match (p, is_dir) {
        ([name], false) => NODE_FILES.contains(name),
        (["files"], true) => true,
        (["files", n], false) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        ([K0S_DATA_FILES, rest @ ..], _) => rest.iter().all(|p| {
            !p.is_empty() && *p != "." && *p != ".." && p.bytes().all(|b| b.is_ascii_graphic())
        }),
        _ => false,
    };
    let is_mac_dir = |d: &str| {
        !d.is_empty() && d.len() <= 32 && d.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    };
    match parts.as_slice() {
        ["nodes"] => is_dir,
        ["nodes", mac] => is_dir && is_mac_dir(mac),
        ["nodes", mac, rest @ ..] => is_mac_dir(mac) && one_node(rest),
        p => one_node(p),
    }
}

/// The hostname a node must come up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostname {
    /// The one its node config (or Imager's preseed) names.
    Is(String),
    /// None was given: the name the node makes itself from its first network card's MAC
    /// (lib.sh's `default_hostname`: `edgeimg-<12 hex digits>`, or `edgeimg` with no card).
    FromMac,
}

impl Hostname {
    pub fn accepts(&self, got: &str) -> bool {
        match self {
            Hostname::Is(h) => h == got,
            Hostname::FromMac => {
                got == "edgeimg"
                    || got.strip_prefix("edgeimg-").is_some_and(|mac| {
                        mac.len() == 12 && mac.bytes().all(|b| b.is_ascii_hexdigit())
                    })
            }
        }
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hostname::Is(h) => write!(f, "{h:?}"),
            Hostname::FromMac => f.write_str("edgeimg-<MAC> (no hostname configured)"),
        }
    }
}

impl From<&str> for Hostname {
    fn from(h: &str) -> Self {
        Hostname::Is(h.to_string())
    }
}

/// Every line the device prints for people and tests starts with this.
pub const SAY: &str = "edgeimg:";

/// The word after [`SAY`] of the one line a node prints when it is up.
pub const READY: &str = "ready";

/// What follows [`SAY`] on a line that reports a failed step.
pub const FAILED: &str = "FAILED:";

/// The start of the ready line: `edgeimg: ready role=... hostname=...`.
pub const READY_LINE: &str = "edgeimg: ready ";

/// What follows [`SAY`] on the one line of k0s's pre-flight checks (sysinfo.sh):
/// `edgeimg: sysinfo: N passed, W warnings (...), E errors (...)`.
pub const SYSINFO: &str = "sysinfo:";

/// The start of the pre-flight checks' line.
pub const SYSINFO_LINE: &str = "edgeimg: sysinfo: ";

/// The start of a failed step's line: `edgeimg: FAILED: <what>`.
pub const FAILED_LINE: &str = "edgeimg: FAILED:";

/// An `edgeimg.<name>=<value>` argument of the kernel command line, read by the initramfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelArg {
    /// The boot partition (`PARTUUID=...`).
    Boot,
    /// The root: `PARTUUID=...` of the squashfs partition, or an `http://` URL (netboot).
    Root,
    /// The data partition (`PARTUUID=...`, or a device for netboot).
    Data,
    /// The root slot this command line boots: `a` or `b` (A/B updates write the other one).
    Slot,
    /// dm-verity: root hash, salt, data blocks and the first hash block.
    Verity,
    VeritySalt,
    VerityBlocks,
    VerityHashStart,
    /// `full`: read the whole root through dm-verity once per boot.
    VerityCheck,
    /// sha256 of a network root.
    RootSha256,
    /// Netboot: the folder of this machine's node config, and the default one.
    Config,
    ConfigDefault,
    /// Install to an internal disk, and whether to wipe it.
    Install,
    InstallWipe,
    /// Debugging: `initramfs` or `switch_root` opens a rescue shell there.
    Break,
    /// Seconds to wait for the root device.
    Wait,
}

impl KernelArg {
    pub const ALL: [KernelArg; 16] = [
        KernelArg::Boot,
        KernelArg::Root,
        KernelArg::Data,
        KernelArg::Slot,
        KernelArg::Verity,
        KernelArg::VeritySalt,
        KernelArg::VerityBlocks,
        KernelArg::VerityHashStart,
        KernelArg::VerityCheck,
        KernelArg::RootSha256,
        KernelArg::Config,
        KernelArg::ConfigDefault,
        KernelArg::Install,
        KernelArg::InstallWipe,
        KernelArg::Break,
        KernelArg::Wait,
    ];

    /// The name after `edgeimg.`.
    pub fn name(self) -> &'static str {
        match self {
            KernelArg::Boot => "boot",
            KernelArg::Root => "root",
            KernelArg::Data => "data",
            KernelArg::Slot => "slot",
            KernelArg::Verity => "verity",
            KernelArg::VeritySalt => "verity_salt",
            KernelArg::VerityBlocks => "verity_blocks",
            KernelArg::VerityHashStart => "verity_hash_start",
            KernelArg::VerityCheck => "verity_check",
            KernelArg::RootSha256 => "root_sha256",
            KernelArg::Config => "config",
            KernelArg::ConfigDefault => "config_default",
            KernelArg::Install => "install",
            KernelArg::InstallWipe => "install_wipe",
            KernelArg::Break => "break",
            KernelArg::Wait => "wait",
        }
    }

    /// `edgeimg.<name>=<value>`.
    pub fn with(self, value: impl Display) -> String {
        format!("edgeimg.{}={value}", self.name())
    }
}

/// The variables of `node.env` (see `render.rs`), besides `FILE_<n>_PATH` and
/// `FILE_<n>_MODE`, one pair per `[[files]]` entry, and `FILE_<n>_OWNER`, `FILE_<n>_APPEND`
/// and `FILE_<n>_DEFER` (`1`), written only for the entries that set them.
pub const NODE_ENV_VARS: &[&str] = &[
    "NODE_HOSTNAME",
    "NODE_ROLE",
    "K0S_ARGS",
    "K0S_LABELS",
    "K0S_TAINTS",
    "NET_MODE",
    "NET_ADDRESS",
    "NET_GATEWAY",
    "NET_DNS",
    "NTP_SERVERS",
    "TIMEZONE",
    "WIFI_SSID",
    "WIFI_PSK",
    "WIFI_COUNTRY",
    "HAS_TOKEN",
    "HAS_SSH_KEYS",
    "FILES_COUNT",
    "STORAGE_DEVICE",
    "INSTALL_DEVICE",
    "INSTALL_WIPE",
    "CONTENT_SHA256",
    "CONFIG_GENERATION",
    "UPDATE_TRIAL_TIMEOUT",
    "UPDATE_URL",
    "UPDATE_CHECK_INTERVAL",
    "UPDATE_WATCHDOG",
];

/// The variables of [`NODE_ENV_VARS`] that hold secrets: shown as present or absent, never
/// their value, by everything that reads node.env back (`inspect`).
pub const SECRET_ENV_VARS: &[&str] = &["WIFI_PSK"];

/// `contract.sh`: the contract as shell assignments.
pub fn render_shell() -> String {
    let words = |v: &[&str]| v.join(" ");
    let kargs: Vec<&str> = KernelArg::ALL.iter().map(|a| a.name()).collect();
    let vars: [(&str, String); 11] = [
        ("EDGEIMG_KARGS", words(&kargs)),
        ("EDGEIMG_BOOT_DIR", BOOT_DIR.into()),
        ("EDGEIMG_SLOT_STATE_DIR", SLOT_STATE_DIR.into()),
        ("EDGEIMG_NODES_DIR", NODES_DIR.into()),
        ("EDGEIMG_K0S_DATA_FILES", K0S_DATA_FILES.into()),
        ("EDGEIMG_SAY", SAY.into()),
        ("EDGEIMG_FAILED", FAILED.into()),
        ("EDGEIMG_READY", READY.into()),
        ("EDGEIMG_SYSINFO", SYSINFO.into()),
        ("EDGEIMG_NODE_ENV_VARS", words(NODE_ENV_VARS)),
        ("EDGEIMG_AIRGAP_DIR", format!("/{AIRGAP_DIR}")),
    ];
    let mut out = String::from(
        "# edgeimg device contract: generated by the build from src/node/contract.rs; do not edit.\n",
    );
    for (k, v) in vars {
        out.push_str(&format!("{k}={}\n", super::shell_quote(&v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_arguments_are_spelled_once() {
        assert_eq!(KernelArg::VeritySalt.with("ab"), "edgeimg.verity_salt=ab");
        let names: std::collections::BTreeSet<&str> =
            KernelArg::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(
            names.len(),
            KernelArg::ALL.len(),
            "two arguments share a name"
        );
    }

    #[test]
    fn the_update_state_is_its_folder_and_the_files_directly_in_it() {
        assert!(is_slot_state_path("update", true));
        assert!(is_slot_state_path("update/trial", false));
        assert!(is_slot_state_path("UPDATE/RESULT", false));
        assert!(!is_slot_state_path("update", false), "a file named update");
        assert!(
            !is_slot_state_path("update/more", true),
            "a folder inside it"
        );
        assert!(!is_slot_state_path("update/more/trial", false));
        assert!(!is_slot_state_path("nodes/aa-bb/update/trial", false));
        assert!(!is_slot_state_path("node.env", false));
        assert!(
            !is_node_path(SLOT_STATE_DIR, true),
            "the update state would be rendered node config, and replaced by configure"
        );
    }

    #[test]
    fn console_lines_are_made_of_the_markers() {
        assert_eq!(READY_LINE, format!("{SAY} {READY} "));
        assert_eq!(FAILED_LINE, format!("{SAY} {FAILED}"));
        assert_eq!(SYSINFO_LINE, format!("{SAY} {SYSINFO} "));
    }

    #[test]
    fn the_shell_file_defines_every_variable_once() {
        let text = render_shell();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (k, v) = line.split_once('=').unwrap();
            assert!(seen.insert(k.to_string()), "{k} twice");
            assert!(v.starts_with('\'') && v.ends_with('\''), "{line}");
        }
        assert!(
            text.contains("EDGEIMG_KARGS='boot root data slot verity "),
            "{text}"
        );
        assert!(text.contains("EDGEIMG_READY='ready'"));
    }

    /// The shell tests (tests/shell/) source a copy of the generated file: it must be the
    /// same, so the scripts are tested against the contract the build really writes.
    /// `EDGEIMG_BLESS=1 cargo test contract` rewrites the copy.
    #[test]
    fn the_shell_tests_use_the_generated_contract() {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shell/contract.sh");
        if std::env::var_os("EDGEIMG_BLESS").is_some() {
            std::fs::write(&fixture, render_shell()).unwrap();
        }
        let text = std::fs::read_to_string(&fixture).unwrap();
        assert_eq!(
            text,
            render_shell(),
            "{} differs from the contract the build writes: run EDGEIMG_BLESS=1 cargo test contract",
            fixture.display()
        );
    }
}
