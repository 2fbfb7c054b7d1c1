//! The update bundle `<stem>.update`: a POSIX ustar archive, uncompressed (the squashfs is
//! compressed already), members in this order:
//!
//! 1. `manifest.json`: what the bundle is for (board, arch, role, versions, the partition
//!    identifiers its command lines name), the root's size and sha256 with its verity root
//!    hash, and each boot file with its size and sha256;
//! 2. `manifest.sig`: the raw 64-byte Ed25519 signature of manifest.json's exact bytes;
//! 3. `root.img`: the root slot's content (squashfs + dm-verity tree at the offsets the
//!    image has them), from the slot partition's first byte;
//! 4. `boot/<slot>/<path>` for boot files that differ per slot (the UKI carries the slot's
//!    command line, and a signed UKI cannot be edited on the node), `boot/all/<path>` for the
//!    others. A `path` holds `@SLOT@` where the slot's letter goes.
//!
//! The node reads it with busybox tar and `openssl pkeyutl -verify`; the manifest is
//! pretty-printed JSON whose strings hold no quotes or backslashes, one value a line, so a
//! shell reads it with awk after the signature is checked.

pub mod keys;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::layout::{PartRole, PartitionPlan, Slot, TableKind};
use crate::util::version::ImageVersion;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const ROOT: &str = "root.img";
/// Where a slot's letter goes in a boot file's path.
pub const SLOT_MARK: &str = "@SLOT@";
/// Largest manifest a reader accepts.
const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundleManifest {
    pub format_version: u32,
    /// What the bundle is for; its fields sit at the manifest's top level.
    #[serde(flatten)]
    pub target: BundleTarget,
    pub root: BundleRoot,
    pub boot: Vec<BundleBootFile>,
}

/// The system a bundle carries and the card it fits: the builder states it, a card is
/// checked against it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundleTarget {
    pub board: String,
    pub arch: String,
    pub role: String,
    pub image_version: String,
    pub k0s_version: String,
    pub edgeimg_version: String,
    /// `uefi`, `uboot` or `rpi`: how the slots are switched (the board's boot method name).
    pub boot_method: String,
    pub partitions: BundlePartitions,
}

/// The partitions the bundle's command lines name: a card must have the same.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundlePartitions {
    pub table: TableKind,
    pub boot: String,
    pub root_a: String,
    pub root_b: String,
    pub data: String,
    /// Bytes of one root slot partition.
    pub slot_size: u64,
}

impl BundlePartitions {
    pub fn of(layout: &PartitionPlan) -> BundlePartitions {
        BundlePartitions {
            table: layout.table,
            boot: layout.partuuid(PartRole::Boot),
            root_a: layout.partuuid(PartRole::Root(Slot::A)),
            root_b: layout.partuuid(PartRole::Root(Slot::B)),
            data: layout.partuuid(PartRole::Data),
            slot_size: layout.get(PartRole::Root(Slot::A)).size(),
        }
    }

    pub fn root(&self, slot: Slot) -> &str {
        match slot {
            Slot::A => &self.root_a,
            Slot::B => &self.root_b,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundleRoot {
    pub size: u64,
    pub sha256: String,
    /// The dm-verity root hash the command lines carry (absent with `--no-verity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity_root_hash: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundleBootFile {
    /// Path on the boot partition; `@SLOT@` stands for the slot's letter.
    pub path: String,
    /// The slot this variant is for; None: the same bytes for both.
    pub slot: Option<Slot>,
    /// The archive member holding it.
    pub member: String,
    pub size: u64,
    pub sha256: String,
}

impl BundleBootFile {
    /// The path on the boot partition for `slot`.
    pub fn path_for(&self, slot: Slot) -> String {
        self.path.replace(SLOT_MARK, slot.letter())
    }
}

impl BundleManifest {
    /// The boot files slot `slot` needs.
    pub fn boot_for(&self, slot: Slot) -> Vec<&BundleBootFile> {
        self.boot
            .iter()
            .filter(|b| b.slot.is_none() || b.slot == Some(slot))
            .collect()
    }

    pub fn version(&self) -> Result<ImageVersion> {
        ImageVersion::parse(&self.target.image_version)
            .map_err(|e| anyhow::anyhow!("the bundle's image_version: {e}"))
    }

    /// The checks that need no signature: shell-safe strings, known format, sane paths.
    fn check(&self) -> Result<()> {
        ensure!(
            self.format_version == FORMAT_VERSION,
            "bundle format {} is not one this edgeimg reads (it reads {FORMAT_VERSION}): use a matching edgeimg",
            self.format_version
        );
        self.version()?;
        let v = serde_json::to_value(self)?;
        check_strings(&v)?;
        for b in &self.boot {
            ensure!(
                !b.path.starts_with('/') && !b.path.split('/').any(|c| c == ".." || c.is_empty()),
                "bundle boot file path {:?} is not a plain relative path",
                b.path
            );
        }
        Ok(())
    }
}

/// Every string of the manifest is made of characters a shell reads without quoting trouble.
fn check_strings(v: &serde_json::Value) -> Result<()> {
    match v {
        serde_json::Value::String(s) => {
            ensure!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:+/@=-~,".contains(&b)),
                "bundle manifest value {s:?} holds characters the node's reader does not take"
            );
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_strings)?,
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                check_strings(&serde_json::Value::String(k.clone()))?;
                check_strings(v)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A boot file for the bundle writer.
pub struct BootFile {
    pub path: String,
    pub slot: Option<Slot>,
    pub data: Vec<u8>,
}

/// What the bundle writer takes besides the files.
pub struct Header {
    pub target: BundleTarget,
    pub verity_root_hash: Option<String>,
    /// Modification time of the archive members (the source date epoch).
    pub mtime: u64,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn member_name(f: &BootFile) -> String {
    match f.slot {
        Some(s) => format!("boot/{s}/{}", f.path.replace(SLOT_MARK, s.letter())),
        None => format!("boot/all/{}", f.path),
    }
}

fn header(name: &str, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .with_context(|| format!("bundle member name {name}"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes the bundle at `out` (atomically): `root` is `root_len` bytes read from the image
/// file at `root_offset`.
pub fn write(
    out: &Path,
    key: &ed25519_dalek::SigningKey,
    h: Header,
    image: &std::fs::File,
    root_offset: u64,
    root_len: u64,
    boot: &[BootFile],
) -> Result<BundleManifest> {
    let mtime = h.mtime;
    use std::os::unix::fs::FileExt;
    // The root's digest first: the manifest carries it.
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < root_len {
        let n = buf.len().min((root_len - pos) as usize);
        image
            .read_exact_at(&mut buf[..n], root_offset + pos)
            .context("reading the root slot for the bundle")?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    let manifest = BundleManifest {
        format_version: FORMAT_VERSION,
        target: h.target,
        root: BundleRoot {
            size: root_len,
            sha256: hex::encode(hasher.finalize()),
            verity_root_hash: h.verity_root_hash,
        },
        boot: boot
            .iter()
            .map(|f| BundleBootFile {
                path: f.path.clone(),
                slot: f.slot,
                member: member_name(f),
                size: f.data.len() as u64,
                sha256: sha256_hex(&f.data),
            })
            .collect(),
    };
    manifest.check()?;
    let mut json = serde_json::to_string_pretty(&manifest)?;
    json.push('\n');
    let sig = keys::sign(key, json.as_bytes());

    let mut file = crate::util::atomic::AtomicFile::create(out)?;
    {
        let mut b = tar::Builder::new(&mut file);
        b.append(
            &header(MANIFEST, json.len() as u64, mtime)?,
            json.as_bytes(),
        )?;
        b.append(&header(SIGNATURE, 64, mtime)?, &sig[..])?;
        let reader = RangeReader {
            file: image,
            pos: root_offset,
            end: root_offset + root_len,
        };
        b.append(&header(ROOT, root_len, mtime)?, reader)?;
        for (f, m) in boot.iter().zip(&manifest.boot) {
            b.append(&header(&m.member, f.data.len() as u64, mtime)?, &f.data[..])?;
        }
        b.finish()?;
    }
    file.commit()?;
    Ok(manifest)
}

struct RangeReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = buf.len().min((self.end - self.pos) as usize);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// A bundle read and verified: the manifest, and each boot file's bytes.
pub struct Verified {
    pub manifest: BundleManifest,
    pub boot: Vec<(BundleBootFile, Vec<u8>)>,
}

/// Reads a bundle from `r`: manifest and signature first (checked with `key`), then
/// `accept(&manifest)` decides whether to go on and returns where root.img goes (called
/// once, before any root byte is read), then the root streams there and the boot files into
/// memory, every digest checked. A truncated, reordered or altered bundle is an error;
/// whatever `accept`'s writer received is then not to be booted.
pub fn read<'w, R: Read>(
    r: R,
    key: &ed25519_dalek::VerifyingKey,
    accept: &mut dyn FnMut(&BundleManifest) -> Result<Box<dyn Write + 'w>>,
) -> Result<Verified> {
    let mut ar = tar::Archive::new(r);
    let mut entries = ar.entries().context("reading the bundle (a tar archive)")?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, R>> {
        let e = entries
            .next()
            .with_context(|| format!("the bundle ends before {want}: truncated download?"))?
            .context("reading the bundle: truncated or not a tar archive")?;
        let name = e.path()?.to_string_lossy().to_string();
        ensure!(
            name == want,
            "the bundle holds {name:?} where {want} belongs: not an edgeimg update bundle"
        );
        Ok(e)
    };
    let mut m = next(MANIFEST)?;
    ensure!(
        m.header().size()? <= MAX_MANIFEST,
        "the bundle's manifest is larger than 1 MiB"
    );
    let mut json = Vec::new();
    m.read_to_end(&mut json)
        .context("reading the bundle manifest: truncated?")?;
    drop(m);
    let mut s = next(SIGNATURE)?;
    let mut sig = Vec::new();
    (&mut s).take(65).read_to_end(&mut sig)?;
    drop(s);
    keys::verify(key, &json, &sig)?;
    let manifest: BundleManifest =
        serde_json::from_slice(&json).context("the bundle manifest is not valid")?;
    manifest.check()?;
    let mut root_out = accept(&manifest)?;
    let mut root = next(ROOT)?;
    ensure!(
        root.header().size()? == manifest.root.size,
        "root.img is {} bytes but the manifest says {}",
        root.header().size()?,
        manifest.root.size
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = root
            .read(&mut buf)
            .context("reading root.img: truncated download?")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        root_out
            .write_all(&buf[..n])
            .context("writing the root slot")?;
        total += n as u64;
    }
    root_out.flush().context("writing the root slot")?;
    drop(root_out);
    ensure!(
        total == manifest.root.size,
        "root.img ended after {total} of {} bytes: truncated download",
        manifest.root.size
    );
    let got = hex::encode(hasher.finalize());
    if got != manifest.root.sha256 {
        bail!(
            "root.img's sha256 is {got}, the signed manifest says {}: the bundle was damaged",
            manifest.root.sha256
        );
    }
    drop(root);
    let mut boot = Vec::new();
    for b in &manifest.boot {
        let mut e = next(&b.member)?;
        let mut data = Vec::new();
        (&mut e).take(b.size + 1).read_to_end(&mut data)?;
        ensure!(
            data.len() as u64 == b.size && sha256_hex(&data) == b.sha256,
            "{}: size or sha256 differs from the signed manifest: the bundle was damaged",
            b.member
        );
        boot.push((b.clone(), data));
    }
    Ok(Verified { manifest, boot })
}

#[cfg(test)]
mod tests;
