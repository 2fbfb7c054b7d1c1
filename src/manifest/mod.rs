//! What an output folder says about itself: `manifest.json` (one typed manifest for every
//! output kind, read back by `smoke` and `inspect` through the same types that wrote it),
//! `SHA256SUMS`, the SPDX SBOM, and the Raspberry Pi Imager repository list.
//!
//! Every manifest starts with `format_version` (the name every `--json` output uses too;
//! manifests before it said `manifest_version`, still read); readers refuse a version they do
//! not know instead of guessing at fields. `schema/manifest.schema.json` describes the file,
//! and the tests check built manifests against it with python's `jsonschema`. The body is either an image's or a network boot folder's:
//! the two differ in what they describe (partitions and verity, or a base URL and the root's
//! digest), so they are two structs, told apart by the netboot body's `format` field.

pub mod imager;
pub mod sbom;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::layout::PartitionPlan;
use crate::fs::verity::VerityInfo;

/// The version of the manifest format this edgeimg writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The file name of the manifest in an output folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One input, as recorded in the manifest and the SBOM.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct InputRecord {
    pub name: String,
    pub version: String,
    pub source: String,
    pub sha256: String,
    pub architecture: String,
    /// The Debian suite a package came from (`trixie`, `trixie-backports`); none for k0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
}

/// One published file, with its digest.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct OutputRecord {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

impl OutputRecord {
    /// Size and sha256 of the file at `path`, recorded under its file name.
    pub fn of_file(path: &Path) -> Result<OutputRecord> {
        Ok(OutputRecord {
            file: file_name(path),
            size: std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len(),
            sha256: crate::util::digest::sha256_file(path)?,
        })
    }
}

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct Manifest {
    #[serde(rename = "format_version", alias = "manifest_version")]
    pub manifest_version: u32,
    #[serde(flatten)]
    pub body: Body,
}

/// What the folder holds.
#[derive(Debug, Serialize, Deserialize, Clone)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per manifest file, read once
pub enum Body {
    /// Network boot files (`build --format pxe`); tried first, as only it has `format`.
    Netboot(NetbootManifest),
    /// A disk image and its companions.
    Image(ImageManifest),
}

/// The manifest of a disk image.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ImageManifest {
    pub edgeimg_version: String,
    pub board: String,
    pub role: String,
    pub arch: String,
    pub plan_hash: String,
    pub image_hash: String,
    pub suite: String,
    pub mirror: String,
    pub kernel_version: String,
    pub k0s_version: String,
    /// The image version (`build --image-version`); empty in manifests of older builds.
    #[serde(default)]
    pub image_version: String,
    pub source_date_epoch: u64,
    pub hostname: String,
    /// Whether a join token was put on the boot partition (never the token itself).
    pub token_included: bool,
    pub token_required: bool,
    pub inputs: Vec<InputRecord>,
    pub partitions: PartitionPlan,
    pub kernel_cmdline: String,
    pub root_size: u64,
    pub initramfs_size: u64,
    pub outputs: Vec<OutputRecord>,
    /// The dm-verity hash tree of the root partition (null with `--no-verity`).
    pub verity: Option<VerityInfo>,
    /// The Unified Kernel Image on the boot partition (UEFI boards), signed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki: Option<UkiInfo>,
}

/// A Unified Kernel Image: where it is, its command line, and who signed it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct UkiInfo {
    /// Path on the boot partition (`EFI/Linux/edgeimg.efi`) or in the netboot folder.
    pub path: String,
    pub sha256: String,
    /// Its `.cmdline` section: what the kernel runs with (the root hash included).
    pub cmdline: String,
    /// Whether it carries an Authenticode signature.
    pub signed: bool,
    /// The signer's certificate, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerInfo>,
}

/// A signing certificate.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct SignerInfo {
    pub subject: String,
    /// SHA-256 of the certificate (DER), hex.
    pub sha256: String,
}

impl UkiInfo {
    /// Reads what a UKI's bytes say of it.
    pub fn of(path: &str, bytes: &[u8]) -> anyhow::Result<UkiInfo> {
        use anyhow::Context;
        let pe = crate::efi::pe::Pe::parse(bytes).with_context(|| format!("reading {path}"))?;
        let cmdline = pe
            .section_data(bytes, ".cmdline")
            .with_context(|| format!("{path} has no .cmdline section: not a UKI"))?;
        let cmdline = String::from_utf8_lossy(cmdline)
            .trim_end_matches('\0')
            .trim()
            .to_string();
        let signer = match crate::efi::pe::signature(bytes)? {
            Some(sig) => {
                let cert = crate::efi::keys::signer_certificate(sig)
                    .with_context(|| format!("reading the signature of {path}"))?;
                let (subject, sha256) = crate::efi::keys::describe_cert(&cert)?;
                Some(SignerInfo { subject, sha256 })
            }
            None => None,
        };
        Ok(UkiInfo {
            path: path.to_string(),
            sha256: crate::plan::sha256_hex(bytes),
            cmdline,
            signed: signer.is_some(),
            signer,
        })
    }
}

/// The manifest of a network boot folder.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct NetbootManifest {
    /// Always `pxe`.
    pub format: NetbootFormat,
    pub edgeimg_version: String,
    pub board: String,
    pub role: String,
    pub arch: String,
    pub plan_hash: String,
    pub kernel_version: String,
    pub k0s_version: String,
    pub source_date_epoch: u64,
    pub base_url: String,
    pub kernel_cmdline: String,
    pub root_sha256: String,
    pub token_included: bool,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<OutputRecord>,
}

/// The `format` of a netboot manifest: one value, so that an image manifest never parses as
/// a netboot one.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetbootFormat {
    Pxe,
}

impl Manifest {
    pub fn image(body: ImageManifest) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            body: Body::Image(body),
        }
    }

    pub fn netboot(body: NetbootManifest) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            body: Body::Netboot(body),
        }
    }

    /// The manifest as written: pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes `<dir>/manifest.json` atomically; returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(MANIFEST_FILE);
        crate::util::atomic::write_atomic(&path, self.to_json()?.as_bytes())?;
        Ok(path)
    }

    /// Parses manifest text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let v: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
        let version = v
            .get("format_version")
            .or_else(|| v.get("manifest_version"))
            .and_then(|v| v.as_u64());
        match version {
            Some(n) if n == u64::from(MANIFEST_VERSION) => {}
            Some(n) => bail!(
                "{}: format_version {n} is not one this edgeimg reads (it reads \
                 {MANIFEST_VERSION}): use the edgeimg that built it, or rebuild",
                path.display()
            ),
            None => bail!(
                "{}: no format_version: it was written by an older edgeimg; rebuild the image",
                path.display()
            ),
        }
        serde_json::from_value(v).with_context(|| {
            format!(
                "{}: not an edgeimg manifest of a disk image or a network boot folder",
                path.display()
            )
        })
    }

    /// Reads the manifest at `path`.
    pub fn read(path: &Path) -> Result<Manifest> {
        // A manifest lists packages and files: megabytes at most.
        let text = crate::util::bounded::read_text(path, 64 << 20, "manifest")?;
        Manifest::parse(&text, path)
    }

    /// The image body, or an error naming `path` when this is a netboot folder's.
    pub fn into_image(self, path: &Path) -> Result<ImageManifest> {
        match self.body {
            Body::Image(m) => Ok(m),
            Body::Netboot(_) => bail!(
                "{}: this manifest describes network boot files, not a disk image",
                path.display()
            ),
        }
    }

    pub fn board(&self) -> &str {
        match &self.body {
            Body::Image(m) => &m.board,
            Body::Netboot(m) => &m.board,
        }
    }

    pub fn role(&self) -> &str {
        match &self.body {
            Body::Image(m) => &m.role,
            Body::Netboot(m) => &m.role,
        }
    }

    pub fn k0s_version(&self) -> &str {
        match &self.body {
            Body::Image(m) => &m.k0s_version,
            Body::Netboot(m) => &m.k0s_version,
        }
    }

    pub fn edgeimg_version(&self) -> &str {
        match &self.body {
            Body::Image(m) => &m.edgeimg_version,
            Body::Netboot(m) => &m.edgeimg_version,
        }
    }
}

/// The file name of `p` as text (empty for a path without one).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{PartRole, PartType, PartitionSpec, TableKind};

    fn image_manifest() -> ImageManifest {
        let specs = [PartitionSpec {
            role: PartRole::Boot,
            name: "boot".into(),
            ptype: PartType::Esp,
            size: 1 << 20,
            bootable: true,
        }];
        ImageManifest {
            edgeimg_version: "0.1.0".into(),
            board: "x86-64".into(),
            role: "worker".into(),
            arch: "amd64".into(),
            plan_hash: "p".into(),
            image_hash: "i".into(),
            suite: "trixie".into(),
            mirror: "http://m".into(),
            kernel_version: "6.12".into(),
            k0s_version: "v1".into(),
            image_version: "1".into(),
            source_date_epoch: 1,
            hostname: "h".into(),
            token_included: false,
            token_required: true,
            inputs: vec![],
            partitions: PartitionPlan::new(TableKind::Gpt, &specs, b"seed").unwrap(),
            kernel_cmdline: "x".into(),
            uki: None,
            root_size: 2,
            initramfs_size: 3,
            outputs: vec![OutputRecord {
                file: "a.img".into(),
                size: 4,
                sha256: "s".into(),
            }],
            verity: None,
        }
    }

    fn netboot_manifest() -> NetbootManifest {
        NetbootManifest {
            format: NetbootFormat::Pxe,
            edgeimg_version: "0.1.0".into(),
            board: "x86-64".into(),
            role: "worker".into(),
            arch: "amd64".into(),
            plan_hash: "p".into(),
            kernel_version: "6.12".into(),
            k0s_version: "v1".into(),
            source_date_epoch: 1,
            base_url: "http://b".into(),
            kernel_cmdline: "x".into(),
            root_sha256: "r".into(),
            token_included: false,
            inputs: vec![],
            outputs: vec![],
        }
    }

    #[test]
    fn both_kinds_read_back_as_what_was_written() {
        let p = Path::new("out/manifest.json");
        let m = Manifest::image(image_manifest());
        let back = Manifest::parse(&m.to_json().unwrap(), p).unwrap();
        let img = back.into_image(p).unwrap();
        assert_eq!(img.partitions, image_manifest().partitions);
        assert_eq!(img.outputs, image_manifest().outputs);
        let n = Manifest::netboot(netboot_manifest());
        let back = Manifest::parse(&n.to_json().unwrap(), p).unwrap();
        assert!(matches!(back.body, Body::Netboot(ref b) if b.root_sha256 == "r"));
        assert!(back
            .into_image(p)
            .unwrap_err()
            .to_string()
            .contains("network boot"));
    }

    #[test]
    fn the_version_comes_first_and_fields_keep_their_order() {
        let text = Manifest::netboot(netboot_manifest()).to_json().unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \""))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(&keys[..3], ["format_version", "format", "edgeimg_version"]);
    }

    #[test]
    fn unknown_or_missing_versions_are_refused_with_advice() {
        let p = Path::new("m.json");
        let old = Manifest::parse("{\"board\":\"x\"}", p)
            .unwrap_err()
            .to_string();
        assert!(
            old.contains("no format_version") && old.contains("rebuild"),
            "{old}"
        );
        let future = Manifest::parse("{\"format_version\":99}", p)
            .unwrap_err()
            .to_string();
        assert!(future.contains("99"), "{future}");
        // Manifests written before the field was renamed still read.
        let mut renamed: serde_json::Value =
            serde_json::from_str(&Manifest::netboot(netboot_manifest()).to_json().unwrap())
                .unwrap();
        let o = renamed.as_object_mut().unwrap();
        let n = o.remove("format_version").unwrap();
        o.insert("manifest_version".into(), n);
        Manifest::parse(&renamed.to_string(), p).unwrap();
        let junk = format!(
            "{:#}",
            Manifest::parse("{\"manifest_version\":1,\"board\":3}", p).unwrap_err()
        );
        assert!(junk.contains("not an edgeimg manifest"), "{junk}");
    }
}
