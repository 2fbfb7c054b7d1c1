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

/// Choices the user makes on the command line, before resolution.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub board: String,
    pub role: Option<Role>,
    pub node: Option<NodeConfig>,
    pub mirror: Option<String>,
    pub suite: Option<String>,
    pub k0s_version: Option<String>,
    pub k0s_url: Option<String>,
    pub k0s_sha256: Option<String>,
    pub k0s_binary: Option<PathBuf>,
    pub source_date_epoch: Option<u64>,
    /// Write a dm-verity hash tree for the root (`--no-verity` turns it off).
    pub verity: bool,
    /// Sign the UEFI boot chain with the user's keys (`--secure-boot DIR`).
    pub secure_boot: Option<SecureBoot>,
}

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
    pub k0s_version: String,
    pub k0s: K0sInput,
    pub source_date_epoch: u64,
    /// dm-verity hash tree after the root squashfs, root hash on the kernel command line.
    pub verity: bool,
    /// Signing with the user's Secure Boot keys; None: the boot chain is unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
    /// The node config rendered onto the boot partition (the token is not part of the plan).
    pub node: NodeConfig,
    #[serde(skip)]
    pub data: PathBuf,
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
            node.hostname = Some(format!("{}-{}", board.name, role).replace('+', "-"));
        }
        let role_profile = data.role(role)?;
        let mirror = req.mirror.or_else(|| base.mirror.clone()).or(host_mirror).context(
            "no Debian mirror: pass --mirror URL, set `mirror` in profiles/base.toml, or configure \
             an APT source on this host (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)",
        )?;
        let suite = req.suite.unwrap_or_else(|| base.suite.clone());
        let k0s_version = req.k0s_version.unwrap_or_else(|| base.k0s.version.clone());
        let k0s = k0s_input(
            &base,
            &board,
            &k0s_version,
            req.k0s_url,
            req.k0s_sha256,
            req.k0s_binary,
        )?;
        let source_date_epoch = req
            .source_date_epoch
            .or_else(|| {
                std::env::var("SOURCE_DATE_EPOCH")
                    .ok()
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(base.source_date_epoch);
        Ok(Plan {
            edgeimg_version: env!("CARGO_PKG_VERSION").to_string(),
            board,
            role,
            base,
            role_profile,
            mirror: mirror.trim_end_matches('/').to_string(),
            suite,
            k0s_version,
            k0s,
            source_date_epoch,
            verity: req.verity,
            secure_boot: req.secure_boot,
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

    /// The Debian packages to install, before dependency resolution.
    pub fn wanted_packages(&self) -> Vec<String> {
        let mut v: Vec<String> = self.base.packages.clone();
        v.extend(self.board.packages.iter().cloned());
        v.extend(self.role_profile.packages.iter().cloned());
        v.push(self.board.kernel_package.clone());
        v.sort();
        v.dedup();
        v
    }

    /// Modules the root carries (dependencies are added later).
    pub fn root_modules(&self) -> Vec<String> {
        let mut v: Vec<String> = self.base.root_modules.clone();
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

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
