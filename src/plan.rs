//! The fully resolved build plan: every choice made before any work starts, so that it can be
//! shown (`build --dry-run`), hashed (cache keys, identifiers) and recorded in the manifest.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::node::{NodeConfig, Role};
use crate::profile::{BaseProfile, Board, DataDir, RoleProfile};

/// Where the k0s binary comes from.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum K0sInput {
    /// A URL (template already expanded) checked against a pinned sha256.
    Url { url: String, sha256: String },
    /// A local file given with `--k0s-binary`: hashed and recorded, not pinned.
    LocalFile { path: PathBuf },
}

/// Where the k0s release publishes its airgap bundle; `{version}` and `{arch}` are filled in.
pub const DEFAULT_AIRGAP_URL_TEMPLATE: &str = "https://github.com/k0sproject/k0s/releases/download/{version}/k0s-airgap-bundle-{version}-linux-{arch}.tar";

pub use crate::node::contract::AIRGAP_DIR;

/// The airgap bundle (`--airgap-bundle`): an OCI image layout tarball shipped in the root.
#[derive(Clone, Debug, Serialize)]
pub struct AirgapInput {
    /// Its name in [`AIRGAP_DIR`] and `<data-dir>/images`.
    pub file_name: String,
    pub source: AirgapSource,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AirgapSource {
    /// A URL (template already expanded) checked against `--airgap-sha256`.
    Url { url: String, sha256: String },
    /// A local file: checked against `--airgap-sha256` when given, else hashed and recorded.
    LocalFile {
        path: PathBuf,
        sha256: Option<String>,
    },
}

/// Packages whose names match `pattern` (`*` matches any characters) come from `suite`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SuitePin {
    pub pattern: String,
    pub suite: String,
    /// Who asked: `boards/pi5.toml kernel_suite`, `--kernel-suite`, `profiles/base.toml [suites]`.
    pub from: String,
}

/// The packages of a Debian kernel that a kernel suite covers: the kernel package itself and,
/// in its closure, the versioned image and the split packages of newer kernels (`linux-base-*`
/// with the config and device trees, `linux-binary-*` with the image, `linux-modules-*`).
/// `linux-base` itself (Debian's kernel helper scripts, no dash after it) is not matched.
pub const KERNEL_PACKAGE_PATTERNS: &[&str] = &[
    "linux-image-*",
    "linux-base-*",
    "linux-binary-*",
    "linux-modules-*",
];

/// Choices the user makes on the command line, before resolution.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub board: String,
    pub role: Option<Role>,
    pub node: Option<NodeConfig>,
    pub mirror: Option<String>,
    pub suite: Option<String>,
    /// `--kernel-suite`: the suite the kernel comes from (the board's `kernel_suite` otherwise).
    pub kernel_suite: Option<String>,
    pub k0s_version: Option<String>,
    pub k0s_url: Option<String>,
    pub k0s_sha256: Option<String>,
    pub k0s_binary: Option<PathBuf>,
    /// `--airgap-bundle`: `Some(None)` is the k0s release's bundle, `Some(Some(x))` a file or a
    /// URL template.
    pub airgap_bundle: Option<Option<String>>,
    pub airgap_sha256: Option<String>,
    pub source_date_epoch: Option<u64>,
    /// `--image-version`: dotted numbers; derived from the source date epoch otherwise.
    pub image_version: Option<String>,
    /// Write a dm-verity hash tree for the root (`--no-verity` turns it off).
    pub verity: bool,
    /// Sign the UEFI boot chain with the user's keys (`--secure-boot DIR`).
    pub secure_boot: Option<SecureBoot>,
    /// `--signing-key FILE`: sign an update bundle, bake the public key into the root.
    pub update_key: Option<UpdateKey>,
}

/// `build --signing-key FILE.key`: the fleet's Ed25519 key. The plan holds the public key
/// (baked into the root at [`UPDATE_PUB`], so its hash changes with the key), never the
/// private key or its place.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateKey {
    #[serde(skip)]
    pub key_file: PathBuf,
    /// The public key, SPKI PEM.
    pub public_pem: String,
}

/// Where the root holds the fleet's public key (inside dm-verity).
pub const UPDATE_PUB: &str = "usr/share/edgeimg/update.pub";

/// `build --secure-boot DIR`: the db certificate that signs systemd-boot and the UKI. The
/// plan names the certificate (so its hash changes with the keys), never the key folder's
/// place or the private key.
#[derive(Clone, Debug, Serialize)]
pub struct SecureBoot {
    /// The key folder (`edgeimg keys generate DIR`).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Subject of the db certificate.
    pub db_subject: String,
    /// SHA-256 of the db certificate (DER), hex.
    pub db_sha256: String,
    /// Put `secure-boot-enroll force` in loader.conf: systemd-boot enrolls the keys of
    /// `loader/keys/auto/` on a machine in setup mode (`--secure-boot-enroll`).
    pub enroll: bool,
}

/// The resolved plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub edgeimg_version: String,
    pub board: Board,
    pub role: Role,
    pub base: BaseProfile,
    pub role_profile: RoleProfile,
    pub mirror: String,
    pub suite: String,
    /// Packages taken from other suites of the same archive, first match wins; empty (and
    /// left out of the hash) when everything comes from `suite`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_suites: Vec<SuitePin>,
    pub k0s_version: String,
    pub k0s: K0sInput,
    /// Absent from the plan (and its hash) without `--airgap-bundle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub airgap: Option<AirgapInput>,
    pub source_date_epoch: u64,
    /// The image's version (`1`, `2.1`, `2026.1127.104500`): in the manifest, the UKI's
    /// IMAGE_VERSION, the root's build.env and the update bundle; updates only go forward.
    pub image_version: String,
    /// dm-verity hash tree after the root squashfs, root hash on the kernel command line.
    pub verity: bool,
    /// Signing with the user's Secure Boot keys; None: the boot chain is unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
    /// The fleet key update bundles are signed with; None: no bundle, no key in the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_key: Option<UpdateKey>,
    /// The node config rendered onto the boot partition (the token is not part of the plan).
    pub node: NodeConfig,
    #[serde(skip)]
    pub data: PathBuf,
}

/// The hostname a build gives a node whose config names none: `<board>-<role>`, with
/// `controller+worker`'s `+` as `-` (a hostname has no `+`). `smoke` expects it too.
pub fn default_hostname(board: &str, role: &str) -> String {
    format!("{board}-{role}").replace('+', "-")
}

impl Plan {
    /// Resolves a request against the project's data. `host_mirror` is the build host's APT
    /// mirror, used when neither `--mirror` nor the profile names one.
    pub fn resolve(data: &DataDir, req: Request, host_mirror: Option<String>) -> Result<Plan> {
        let board = data.board(&req.board)?;
        let base = data.base()?;
        let mut node = req.node.unwrap_or_default();
        let role = match (req.role, node.role()) {
            (Some(r), Some(n)) if r != n => {
                bail!("--role {r} does not match the node config's [k0s] role = \"{n}\": drop one of them")
            }
            (Some(r), _) | (None, Some(r)) => r,
            // The default image is a worker: the most common node in a fleet.
            (None, None) => Role::Worker,
        };
        node.k0s.role = Some(role);
        if node.hostname.is_none() {
            node.hostname = Some(default_hostname(&board.name, &role.to_string()));
        }
        let role_profile = data.role(role)?;
        let mirror = req.mirror.or_else(|| base.mirror.clone()).or(host_mirror).context(
            "no Debian mirror: pass --mirror URL, set `mirror` in profiles/base.toml, or configure \
             an APT source on this host (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)",
        )?;
        let suite = req.suite.unwrap_or_else(|| base.suite.clone());
        let package_suites = package_suites(
            &suite,
            &board,
            &base,
            &role_profile,
            req.kernel_suite.as_deref(),
        )?;
        let k0s_version = req.k0s_version.unwrap_or_else(|| base.k0s.version.clone());
        let k0s = k0s_input(
            &base,
            &board,
            &k0s_version,
            req.k0s_url,
            req.k0s_sha256,
            req.k0s_binary,
        )?;
        let airgap = airgap_input(
            role,
            &board,
            &k0s_version,
            req.airgap_bundle,
            req.airgap_sha256,
        )?;
        let source_date_epoch = req
            .source_date_epoch
            .or_else(|| {
                std::env::var("SOURCE_DATE_EPOCH")
                    .ok()
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(base.source_date_epoch);
        let image_version = match req.image_version {
            Some(v) => {
                crate::util::version::ImageVersion::parse(&v)
                    .map_err(|e| anyhow::anyhow!("--image-version {v:?}: {e}"))?;
                v
            }
            None => crate::util::version::ImageVersion::from_epoch(source_date_epoch).to_string(),
        };
        Ok(Plan {
            edgeimg_version: env!("CARGO_PKG_VERSION").to_string(),
            board,
            role,
            base,
            role_profile,
            mirror: mirror.trim_end_matches('/').to_string(),
            suite,
            package_suites,
            k0s_version,
            k0s,
            airgap,
            source_date_epoch,
            image_version,
            verity: req.verity,
            secure_boot: req.secure_boot,
            update_key: req.update_key,
            node,
            data: data.root.clone(),
        })
    }

    /// The name outputs share: `<board>-<role>`.
    pub fn stem(&self) -> String {
        format!("{}-{}", self.board.name, self.role)
    }

    /// Hash of everything that goes into the image's read-only parts (root, initramfs,
    /// partition layout). The node config is left out, so that personalizing a node keeps its
    /// partition identifiers; it seeds every identifier of the image.
    pub fn image_hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("plan serializes");
        if let Some(o) = v.as_object_mut() {
            o.remove("node");
        }
        sha256_hex(v.to_string().as_bytes())
    }

    /// Hash of the whole plan, node config included.
    pub fn hash(&self) -> String {
        sha256_hex(
            serde_json::to_string(self)
                .expect("plan serializes")
                .as_bytes(),
        )
    }

    /// The suite the package `name` comes from.
    pub fn suite_of(&self, name: &str) -> &str {
        self.package_suites
            .iter()
            .find(|p| crate::util::text::glob_match(&p.pattern, name))
            .map_or(self.suite.as_str(), |p| p.suite.as_str())
    }

    /// Every suite the packages come from: `suite` first, then the others in name order.
    pub fn suites(&self) -> Vec<String> {
        let mut v = vec![self.suite.clone()];
        let mut others: Vec<String> = self
            .package_suites
            .iter()
            .map(|p| p.suite.clone())
            .filter(|s| *s != self.suite)
            .collect();
        others.sort();
        others.dedup();
        v.extend(others);
        v
    }

    /// The Debian packages to install, before dependency resolution.
    pub fn wanted_packages(&self) -> Vec<String> {
        let mut v: Vec<String> = self.base.packages.clone();
        v.extend(self.board.packages.iter().cloned());
        v.extend(self.role_profile.packages.iter().cloned());
        v.push(self.board.kernel_package.clone());
        // The node verifies update bundles with Debian's openssl.
        if self.update_key.is_some() {
            v.push("openssl".into());
        }
        v.sort();
        v.dedup();
        v
    }

    /// The profile's `provided` packages, less those the plan installs itself.
    pub fn provided_packages(&self) -> Vec<String> {
        let wanted = self.wanted_packages();
        self.base
            .provided
            .iter()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect()
    }

    /// Modules the root carries (dependencies are added later).
    pub fn root_modules(&self) -> Vec<String> {
        let mut v: Vec<String> = self.base.kubernetes.modules.clone();
        v.extend(self.board.root_modules.iter().cloned());
        v.extend(self.role_profile.root_modules.iter().cloned());
        // The root can load whatever the initramfs loaded.
        v.extend(self.initramfs_modules());
        v
    }

    /// Modules the initramfs loads, in the order given: board drivers, then filesystems.
    pub fn initramfs_modules(&self) -> Vec<String> {
        self.initramfs_modules_with(&[])
    }

    /// [`Plan::initramfs_modules`] with `extra` after the board's drivers (those not already
    /// among them): what network boot adds.
    pub fn initramfs_modules_with(&self, extra: &[String]) -> Vec<String> {
        let mut v: Vec<String> = self.board.initramfs_modules.clone();
        for m in extra {
            if !v.contains(m) {
                v.push(m.clone());
            }
        }
        v.extend(self.base.initramfs_modules.iter().cloned());
        if self.verity {
            v.extend(self.base.verity.modules.iter().cloned());
        }
        v
    }
}

/// The pins of `[suites]` (role, board, base: the more specific first), then the kernel's.
fn package_suites(
    suite: &str,
    board: &Board,
    base: &BaseProfile,
    role: &RoleProfile,
    kernel_suite: Option<&str>,
) -> Result<Vec<SuitePin>> {
    let mut pins = Vec::new();
    let role_file = format!("profiles/{}.toml", role.role);
    let board_file = format!("boards/{}.toml", board.name);
    for (file, table) in [
        (&role_file, &role.suites),
        (&board_file, &board.suites),
        (&"profiles/base.toml".to_string(), &base.suites),
    ] {
        for (s, patterns) in table {
            for pattern in patterns {
                pins.push(SuitePin {
                    pattern: pattern.clone(),
                    suite: s.clone(),
                    from: format!("{file} [suites] {s}"),
                });
            }
        }
    }
    let kernel = match kernel_suite {
        Some(k) => {
            crate::profile::check::suite_name(k)
                .map_err(|what| anyhow::anyhow!("--kernel-suite {k:?}: {what}"))?;
            Some((k.to_string(), "--kernel-suite".to_string()))
        }
        None => board
            .kernel_suite
            .clone()
            .map(|k| (k, format!("{board_file} kernel_suite"))),
    };
    if let Some((k, from)) = kernel {
        let mut patterns = vec![board.kernel_package.clone()];
        patterns.extend(KERNEL_PACKAGE_PATTERNS.iter().map(|p| p.to_string()));
        for pattern in patterns {
            pins.push(SuitePin {
                pattern,
                suite: k.clone(),
                from: from.clone(),
            });
        }
    }
    // Pins that all name the main suite change nothing: leaving them out keeps such a plan's
    // hash equal to the plan without them.
    if pins.iter().all(|p| p.suite == suite) {
        pins.clear();
    }
    Ok(pins)
}

fn k0s_input(
    base: &BaseProfile,
    board: &Board,
    version: &str,
    url: Option<String>,
    sha256: Option<String>,
    binary: Option<PathBuf>,
) -> Result<K0sInput> {
    if let Some(path) = binary {
        if !path.is_file() {
            bail!("--k0s-binary {}: no such file", path.display());
        }
        return Ok(K0sInput::LocalFile { path });
    }
    let arch = board.arch.k0s();
    let template = url.unwrap_or_else(|| base.k0s.url.clone());
    let sha256 = match sha256 {
        Some(s) => s,
        None if version == base.k0s.version => {
            base.k0s.sha256.get(arch).cloned().with_context(|| {
                format!("profiles/base.toml: [k0s.sha256] has no `{arch}` entry for k0s {version}")
            })?
        }
        None => bail!(
            "k0s {version} has no pinned sha256 (profiles/base.toml pins {}): pass --k0s-sha256 \
             with the digest from the release's sha256sums.txt, or --k0s-binary",
            base.k0s.version
        ),
    };
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("k0s sha256 '{sha256}' is not 64 hex digits");
    }
    let url = template
        .replace("{version}", &version.replace('+', "%2B"))
        .replace("{arch}", arch);
    Ok(K0sInput::Url {
        url,
        sha256: sha256.to_ascii_lowercase(),
    })
}

fn airgap_input(
    role: Role,
    board: &Board,
    version: &str,
    bundle: Option<Option<String>>,
    sha256: Option<String>,
) -> Result<Option<AirgapInput>> {
    let Some(bundle) = bundle else {
        if sha256.is_some() {
            bail!(
                "--airgap-sha256 without --airgap-bundle: add --airgap-bundle FILE|URL or drop it"
            );
        }
        return Ok(None);
    };
    if !role.runs_worker() {
        bail!(
            "--airgap-bundle: a {role} runs no worker and imports no images; drop the flag or \
             build --role controller+worker, single or worker"
        );
    }
    let sha256 = match sha256 {
        Some(s) => {
            let d = s.trim().to_ascii_lowercase();
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--airgap-sha256 '{s}' is not 64 hex digits");
            }
            Some(d)
        }
        None => None,
    };
    let template = bundle.unwrap_or_else(|| DEFAULT_AIRGAP_URL_TEMPLATE.to_string());
    let (source, name) = if template.contains("://") {
        let url = template
            .replace("{version}", &version.replace('+', "%2B"))
            .replace("{arch}", board.arch.k0s());
        let sha256 = sha256.with_context(|| {
            format!(
                "--airgap-bundle {url}: no sha256 to check it against: pass --airgap-sha256 with \
                 the digest from the release's sha256sums.txt"
            )
        })?;
        let name = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .replace("%2B", "+")
            .replace("%2b", "+");
        (AirgapSource::Url { url, sha256 }, name)
    } else {
        let path = PathBuf::from(&template);
        if !path.is_file() {
            bail!("--airgap-bundle {}: no such file", path.display());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (AirgapSource::LocalFile { path, sha256 }, name)
    };
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !ok {
        bail!(
            "--airgap-bundle {template}: the file name {name:?} is not a plain name (letters, \
             digits, . _ + -): rename the file or give a URL ending in one"
        );
    }
    Ok(Some(AirgapInput {
        file_name: name,
        source,
    }))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
                // Another umask: group-writable.
                let mode = std::fs::metadata(&target).unwrap().permissions().mode() | 0o020;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }

    /// The same data built in or from a `--data-dir` (other modes) resolves to the same plan.
    #[test]
    fn the_plan_hash_does_not_depend_on_where_the_data_came_from() {
        let builtin = DataDir::builtin().unwrap();
        let copy = tempfile::tempdir().unwrap();
        for sub in ["boards", "profiles", "overlays"] {
            copy_tree(&builtin.root.join(sub), &copy.path().join(sub));
        }
        let from_dir = DataDir::locate(Some(copy.path())).unwrap();
        assert_eq!(from_dir.root, copy.path());
        for board in ["x86-64", "pi4"] {
            let req = || Request {
                board: board.into(),
                role: Some(Role::Worker),
                verity: true,
                ..Default::default()
            };
            let mirror = Some("http://127.0.0.1:9/debian".to_string());
            let a = Plan::resolve(&builtin, req(), mirror.clone()).unwrap();
            let b = Plan::resolve(&from_dir, req(), mirror).unwrap();
            assert_ne!(a.data, b.data);
            assert_eq!(a.hash(), b.hash(), "{board}");
            assert_eq!(a.image_hash(), b.image_hash(), "{board}");
        }
    }
}
