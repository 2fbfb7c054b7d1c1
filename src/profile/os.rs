//! The OS profile every image shares: `profiles/base.toml` (suite, packages, what edgeimg does
//! in place of maintainer scripts, the k0s pin, the squashfs and verity settings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A k0s release pin: version and sha256 per k0s architecture name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K0sPin {
    pub version: String,
    /// URL template with `{version}` and `{arch}`.
    pub url: String,
    pub sha256: BTreeMap<String, String>,
}

/// A system user that maintainer scripts would have created.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
}

fn default_home() -> String {
    "/nonexistent".into()
}

fn default_shell() -> String {
    "/usr/sbin/nologin".into()
}

/// The OS profile shared by all roles: `profiles/base.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseProfile {
    /// Debian suite (codename).
    pub suite: String,
    pub components: Vec<String>,
    /// Packages from other suites of the archive (see `Board::suites`).
    #[serde(default, skip_serializing_if = "super::SuitePackages::is_empty")]
    pub suites: super::SuitePackages,
    /// A mirror URL; the host's APT sources are used when absent.
    #[serde(default)]
    pub mirror: Option<String>,
    pub packages: Vec<String>,
    /// Packages (real or virtual) whose job edgeimg does itself: not installed, their
    /// dependencies not followed.
    pub provided: Vec<String>,
    /// Paths (prefixes) never copied from packages into the root.
    pub drop_paths: Vec<String>,
    /// busybox applets installed as links, by path (`usr/bin/sh`).
    pub busybox_applets: Vec<String>,
    /// Modules every initramfs carries (filesystems), after the board's.
    pub initramfs_modules: Vec<String>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Timestamp of every file when SOURCE_DATE_EPOCH is not set.
    pub source_date_epoch: u64,
    pub kubernetes: KubernetesSpec,
    pub k0s: K0sPin,
    pub squashfs: SquashfsSpec,
    pub verity: VeritySpec,
}

/// What every node sets up for Kubernetes before k0s starts (`[kubernetes]`): the one list
/// of it. The root carries the modules, the build writes both lists into build.env
/// (`EDGEIMG_K8S_MODULES`, `EDGEIMG_K8S_SYSCTLS`) and the node's boot script applies them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Modules loaded before k0s starts (they and their dependencies go into the root).
    pub modules: Vec<String>,
    /// sysctl settings as `key=value` (`net.ipv4.ip_forward=1`).
    pub sysctls: Vec<String>,
}

/// What the initramfs needs to open the root through dm-verity (left out with `--no-verity`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeritySpec {
    /// Kernel modules, loaded after the board's and the filesystems.
    pub modules: Vec<String>,
    /// Programs of the root filesystem copied into the initramfs with their shared libraries.
    pub programs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SquashfsSpec {
    /// `zstd`, `xz` or `gzip`.
    pub compressor: String,
    #[serde(default)]
    pub level: Option<u32>,
    pub block_size: u32,
}
