//! The cached root artifact: the encoded root squashfs, the initramfs and the kernel/boot
//! files the boot partition takes from the packages, stored under
//! `<cache>/artifacts/root/<key>/` after a build and reused by the next build whose key is
//! the same. A hit skips unpacking the packages, selecting kernel modules, assembling the
//! root and initramfs trees and encoding the squashfs.
//!
//! The key is a sha256 over everything those steps read: the edgeimg executable itself (so
//! a code change is a miss), the plan minus what only the boot partition, the partition table
//! or QEMU use (the node config, the kernel command line, the partition sizes), the digest of
//! every package and of k0s, and the overlay files. Every file of an entry is checked against
//! the digests recorded beside it when it is used; a damaged entry is a miss, rebuilt and
//! replaced.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kmod::ModuleIndex;
use crate::plan::Plan;
use crate::rootfs::Unpacked;
use crate::source::debian::FetchedDeb;
use crate::source::k0s::K0sBinary;
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

const SQUASHFS: &str = "root.squashfs";
const INITRD: &str = "initrd.img";
const BOOT_INPUTS: &str = "boot-inputs.bin";
const META: &str = "meta.json";
const TREES_MAGIC: &[u8] = b"edgeimg boot inputs v1\n";

/// What an entry records of itself.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Meta {
    key: String,
    kver: String,
    root_size: u64,
    squashfs_sha256: String,
    initrd_sha256: String,
    boot_inputs_sha256: String,
}

/// A usable entry: every file checked. `unpacked` holds only what the boot partition needs.
pub struct Hit {
    pub unpacked: Unpacked,
    pub initrd: Vec<u8>,
    pub root: CachedRoot,
}

/// The cached root squashfs.
pub struct CachedRoot {
    pub size: u64,
    squashfs: PathBuf,
    squashfs_sha256: String,
}

/// Where a freshly encoded root squashfs is: `size` bytes at `offset` of `image`.
pub struct RootInImage<'a> {
    pub image: &'a File,
    pub offset: u64,
    pub size: u64,
}

/// The outcome of a look-up.
pub enum Lookup {
    Hit(Box<Hit>),
    Miss,
    /// An entry exists but does not match its recorded digests (the reason): not used.
    Damaged(String),
}

fn entry_dir(cache_root: &Path, key: &str) -> PathBuf {
    crate::cache::dir(cache_root).join("root").join(key)
}

/// The key of the root artifact of `plan` built from `debs` and `k0s`. `pxe` is whether the
/// initramfs is the network-boot one.
pub fn key(
    plan: &Plan,
    pxe: bool,
    debs: &[FetchedDeb],
    k0s: &K0sBinary,
    airgap_sha256: Option<&str>,
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"edgeimg root artifact v1\0");
    h.update(exe_digest()?);
    let mut v = serde_json::to_value(plan).context("serializing the plan")?;
    if let Some(o) = v.as_object_mut() {
        o.remove("node");
        if let Some(b) = o.get_mut("board").and_then(|b| b.as_object_mut()) {
            for field in ["cmdline", "partitions", "qemu", "description"] {
                b.remove(field);
            }
        }
    }
    h.update(v.to_string().as_bytes());
    h.update([0, pxe as u8]);
    for d in debs {
        h.update(d.package.name.as_bytes());
        h.update([0]);
        h.update(d.package.sha256.as_bytes());
        h.update([0]);
    }
    h.update(b"k0s\0");
    h.update(k0s.sha256.as_bytes());
    h.update([0]);
    // Absent, the key is what it was before airgap bundles existed.
    if let Some(a) = airgap_sha256 {
        h.update(b"airgap\0");
        h.update(a.as_bytes());
        h.update([0]);
    }
    hash_dir(&mut h, &plan.data.join("overlays"))?;
    Ok(hex::encode(h.finalize()))
}

/// [`exe_digest`] as hex (empty when the executable cannot be read: every key then differs
/// from those of a readable executable only by that, which is still correct per binary).
pub(crate) fn exe_digest_hex() -> String {
    exe_digest().map(hex::encode).unwrap_or_default()
}

/// The sha256 of the running executable, computed once.
fn exe_digest() -> Result<[u8; 32]> {
    static DIGEST: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    if let Some(d) = DIGEST.get() {
        return Ok(*d);
    }
    let exe = std::env::current_exe().context("locating the edgeimg executable")?;
    let hex = crate::util::digest::sha256_file(&exe)?;
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex, &mut d).context("hashing the edgeimg executable")?;
    Ok(*DIGEST.get_or_init(|| d))
}

/// Feeds every entry under `dir` (path, type, executable bit, content or link target), in
/// path order, to `h`.
fn hash_dir(h: &mut Sha256, dir: &Path) -> Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let md = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
                h.update(b"no overlays\0");
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", full.display())),
        };
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        // What the overlays' loader keeps of the mode: executable or not. A copy made under
        // another umask (a `--data-dir`) has the same key as the built-in data.
        h.update([(md.permissions().mode() & 0o111 != 0) as u8]);
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&full)
                .with_context(|| format!("reading the link {}", full.display()))?;
            h.update(b"l");
            h.update(target.to_string_lossy().as_bytes());
            h.update([0]);
        } else if md.is_dir() {
            h.update(b"d");
            // Popped last-first: push in reverse order to visit in path order.
            for e in crate::util::host_dir::read_dir_sorted(&full)?
                .into_iter()
                .rev()
            {
                stack.push(rel.join(e.file_name()));
            }
        } else {
            h.update(b"f");
            h.update(md.size().to_le_bytes());
            crate::util::digest::update_with_file(h, &full)?;
        }
    }
    Ok(())
}

/// Looks `key` up; every file of the entry is checked before it is reported as a hit.
pub fn load(cache_root: &Path, key: &str) -> Result<Lookup> {
    let dir = entry_dir(cache_root, key);
    let meta_text = match std::fs::read(dir.join(META)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Miss),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.join(META).display())),
    };
    let meta: Meta = match serde_json::from_slice(&meta_text) {
        Ok(m) => m,
        Err(e) => return Ok(Lookup::Damaged(format!("{META}: {e}"))),
    };
    if meta.key != key {
        return Ok(Lookup::Damaged(format!("{META} names another key")));
    }
    let squashfs = dir.join(SQUASHFS);
    match crate::util::digest::sha256_file(&squashfs) {
        Ok(d) if d == meta.squashfs_sha256 => {}
        _ => {
            return Ok(Lookup::Damaged(format!(
                "{SQUASHFS} does not match its digest"
            )))
        }
    }
    if std::fs::metadata(&squashfs).map(|m| m.len()).ok() != Some(meta.root_size) {
        return Ok(Lookup::Damaged(format!("{SQUASHFS} has the wrong size")));
    }
    let initrd = match std::fs::read(dir.join(INITRD)) {
        Ok(b) if crate::plan::sha256_hex(&b) == meta.initrd_sha256 => b,
        _ => {
            return Ok(Lookup::Damaged(format!(
                "{INITRD} does not match its digest"
            )))
        }
    };
    let inputs = match std::fs::read(dir.join(BOOT_INPUTS)) {
        Ok(b) if crate::plan::sha256_hex(&b) == meta.boot_inputs_sha256 => b,
        _ => {
            return Ok(Lookup::Damaged(format!(
                "{BOOT_INPUTS} does not match its digest"
            )))
        }
    };
    let mut trees = match decode_trees(&inputs) {
        Ok(t) if t.len() == 2 => t,
        _ => return Ok(Lookup::Damaged(format!("{BOOT_INPUTS} does not decode"))),
    };
    let kernel = trees.pop().unwrap_or_default();
    let root = trees.pop().unwrap_or_default();
    let modules = match ModuleIndex::scan(&kernel, &meta.kver) {
        Ok(m) => m,
        Err(e) => return Ok(Lookup::Damaged(format!("{BOOT_INPUTS}: {e:#}"))),
    };
    Ok(Lookup::Hit(Box::new(Hit {
        unpacked: Unpacked {
            root,
            kernel,
            kver: meta.kver,
            modules,
            spill: None,
        },
        initrd,
        root: CachedRoot {
            size: meta.root_size,
            squashfs,
            squashfs_sha256: meta.squashfs_sha256,
        },
    })))
}

impl CachedRoot {
    /// Copies the cached squashfs into `image` at `offset`, checking its digest again on the
    /// way (it was checked at look-up; this catches a change in between).
    pub fn write_root(&self, image: &File, offset: u64) -> Result<()> {
        let mut f = File::open(&self.squashfs)
            .with_context(|| format!("opening {}", self.squashfs.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", self.squashfs.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            image
                .write_all_at(&buf[..n], offset + pos)
                .context("writing the cached root squashfs into the image")?;
            pos += n as u64;
        }
        if pos != self.size || hex::encode(h.finalize()) != self.squashfs_sha256 {
            bail!(
                "{} changed while it was copied: run the build again, or with --no-artifact-cache",
                self.squashfs.display()
            );
        }
        Ok(())
    }
}

/// Stores the artifact of a build: the squashfs read back from the image, the initramfs, and the kernel/boot files of `u` the boot partition
/// needs. Written to a temporary folder, then renamed into place.
pub fn store(
    cache_root: &Path,
    key: &str,
    plan: &Plan,
    root: RootInImage<'_>,
    initrd: &[u8],
    u: &Unpacked,
) -> Result<()> {
    let RootInImage {
        image,
        offset,
        size: root_size,
    } = root;
    let parent = crate::cache::dir(cache_root).join("root");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))?;

    let mut sq = File::create(tmp.path().join(SQUASHFS)).context("creating the cached squashfs")?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < root_size {
        let n = ((root_size - pos) as usize).min(buf.len());
        image
            .read_exact_at(&mut buf[..n], offset + pos)
            .context("reading the root squashfs back from the image")?;
        h.update(&buf[..n]);
        sq.write_all(&buf[..n])
            .context("writing the cached squashfs")?;
        pos += n as u64;
    }
    drop(sq);
    std::fs::write(tmp.path().join(INITRD), initrd).context("writing the cached initramfs")?;
    let inputs = encode_trees(&boot_inputs(plan, u)?)?;
    std::fs::write(tmp.path().join(BOOT_INPUTS), &inputs)
        .context("writing the cached boot inputs")?;
    let meta = Meta {
        key: key.to_string(),
        kver: u.kver.clone(),
        root_size,
        squashfs_sha256: hex::encode(h.finalize()),
        initrd_sha256: crate::plan::sha256_hex(initrd),
        boot_inputs_sha256: crate::plan::sha256_hex(&inputs),
    };
    std::fs::write(tmp.path().join(META), serde_json::to_vec_pretty(&meta)?)
        .context("writing the cached artifact's record")?;

    let dest = entry_dir(cache_root, key);
    if dest.exists() {
        // A damaged entry (a good one is a hit and never stored again).
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, &dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        anyhow::anyhow!(e).context(format!("renaming {} to {}", tmp.display(), dest.display()))
    })?;
    Ok(())
}

/// What the boot partition reads from the packages: the kernel package's files except the
/// modules (vmlinuz, device trees, module lists), and from the other packages only the boot
/// loader (UEFI) or firmware (Raspberry Pi) files the board names.
fn boot_inputs(plan: &Plan, u: &Unpacked) -> Result<Vec<Tree>> {
    let mut kernel = u.kernel.clone();
    kernel.retain(|p, e| !(matches!(e.kind, Kind::File(_)) && is_module(p.file_name())));
    let wanted = crate::boot::method(&plan.board).package_files();
    let mut root = Tree::new();
    for w in wanted {
        if let Some(data) = u.root.read(&w) {
            let mode = u.root.get(&w).map(|e| e.mode).unwrap_or(0o644);
            root.add_file(&w, data.to_vec(), mode)?;
        }
    }
    Ok(vec![root, kernel])
}

fn is_module(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Trees as bytes: magic, tree count, then per tree its entry count and entries (path, kind,
/// mode, uid, gid, mtime, content).
fn encode_trees(trees: &[Tree]) -> Result<Vec<u8>> {
    let mut out = TREES_MAGIC.to_vec();
    out.extend_from_slice(&(trees.len() as u64).to_le_bytes());
    for t in trees {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        for (p, e) in t.iter() {
            put_bytes(&mut out, p.as_str().as_bytes());
            let (kind, a, b): (u8, u32, u32) = match &e.kind {
                Kind::Dir => (0, 0, 0),
                Kind::File(_) => (1, 0, 0),
                Kind::Symlink(_) => (2, 0, 0),
                Kind::CharDevice { major, minor } => (3, *major, *minor),
                Kind::BlockDevice { major, minor } => (4, *major, *minor),
                Kind::Fifo => (5, 0, 0),
                Kind::Socket => (6, 0, 0),
            };
            out.push(kind);
            for v in [a, b, e.mode, e.uid, e.gid] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.mtime.to_le_bytes());
            match &e.kind {
                Kind::File(c) => put_bytes(
                    &mut out,
                    &c.read_all().with_context(|| format!("reading {p}"))?,
                ),
                Kind::Symlink(t) => put_bytes(&mut out, t.as_bytes()),
                _ => {}
            }
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            bail!("truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn bytes(&mut self) -> Result<&[u8]> {
        let n = usize::try_from(self.u64()?)?;
        self.take(n)
    }
}

fn decode_trees(data: &[u8]) -> Result<Vec<Tree>> {
    let mut r = Reader(data);
    if r.take(TREES_MAGIC.len())? != TREES_MAGIC {
        bail!("not a boot inputs file");
    }
    let count = r.u64()?;
    let mut trees = Vec::new();
    for _ in 0..count {
        let mut t = Tree::new();
        for _ in 0..r.u64()? {
            let path = TreePath::new(std::str::from_utf8(r.bytes()?)?)?;
            let kind = r.take(1)?[0];
            let (a, b) = (r.u32()?, r.u32()?);
            let (mode, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
            let mtime = r.u64()?;
            let kind = match kind {
                0 => Kind::Dir,
                1 => Kind::File(Content::bytes(r.bytes()?.to_vec())),
                2 => Kind::Symlink(std::str::from_utf8(r.bytes()?)?.to_string()),
                3 => Kind::CharDevice { major: a, minor: b },
                4 => Kind::BlockDevice { major: a, minor: b },
                5 => Kind::Fifo,
                6 => Kind::Socket,
                k => bail!("unknown entry kind {k}"),
            };
            t.insert(
                &path,
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                },
            )?;
        }
        trees.push(t);
    }
    if !r.0.is_empty() {
        bail!("trailing bytes");
    }
    Ok(trees)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_round_trip() {
        let mut t = Tree::new();
        t.add_symlink("lib", "usr/lib").unwrap();
        t.add_file(
            "usr/lib/modules/6.1.0/modules.builtin",
            "kernel/a.ko\n",
            0o644,
        )
        .unwrap();
        t.add_file("boot/vmlinuz-6.1.0", vec![1u8, 2, 3], 0o600)
            .unwrap();
        t.insert(
            &TreePath::new("dev/null").unwrap(),
            Entry {
                kind: Kind::CharDevice { major: 1, minor: 3 },
                mode: 0o666,
                uid: 0,
                gid: 0,
                mtime: 5,
            },
        )
        .unwrap();
        t.set_all_mtimes(1234);
        let bytes = encode_trees(&[Tree::new(), t.clone()]).unwrap();
        let back = decode_trees(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].len(), 1);
        let show = |t: &Tree| -> Vec<String> {
            t.iter()
                .map(|(p, e)| {
                    let content = match &e.kind {
                        Kind::File(c) => format!("{:?}", c.read_all().unwrap()),
                        k => format!("{k:?}"),
                    };
                    format!("{p} {:o} {} {} {} {content}", e.mode, e.uid, e.gid, e.mtime)
                })
                .collect()
        };
        assert_eq!(show(&back[1]), show(&t));
        assert!(decode_trees(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(decode_trees(&bad).is_err());
    }

    fn plan_with(dir: &Path, hostname: &str, cmdline: &[&str]) -> Plan {
        let data =
            crate::profile::DataDir::locate(Some(Path::new(env!("CARGO_MANIFEST_DIR")))).unwrap();
        let k0s = dir.join("k0s");
        std::fs::write(&k0s, "k0s").unwrap();
        let mut node = crate::node::NodeConfig::default();
        node.hostname = Some(hostname.into());
        let mut plan = Plan::resolve(
            &data,
            crate::plan::Request {
                board: "x86-64".into(),
                role: Some(crate::node::Role::Worker),
                node: Some(node),
                mirror: Some("http://127.0.0.1:9/debian".into()),
                k0s_binary: Some(k0s),
                verity: true,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        plan.board.cmdline = cmdline.iter().map(|s| s.to_string()).collect();
        plan
    }

    fn deb(sha: char) -> FetchedDeb {
        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: pool/a.deb\nSize: 1\n\
             SHA256: {}\n",
            sha.to_string().repeat(64)
        );
        FetchedDeb {
            package: crate::source::debian::control::parse_packages(&text, "t")
                .unwrap()
                .remove(0),
            path: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn the_key_follows_what_the_root_is_made_of_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let k0s = |sha: &str| K0sBinary {
            path: PathBuf::from("/nonexistent"),
            sha256: sha.into(),
            url: String::new(),
            version: "v1".into(),
        };
        let base = plan_with(d.path(), "node-1", &["console=ttyS0"]);
        let key = |p: &Plan, deb_sha: char, k0s_sha: &str| {
            super::key(p, false, &[deb(deb_sha)], &k0s(k0s_sha), None).unwrap()
        };
        let k = key(&base, '1', "k");
        assert_eq!(k, key(&base, '1', "k"), "stable");
        // Boot-partition-only changes: same key.
        let other_node = plan_with(d.path(), "node-2", &["console=ttyS1", "quiet"]);
        assert_eq!(k, key(&other_node, '1', "k"));
        let mut sizes = base.clone();
        sizes.board.partitions.root_mib += 1;
        assert_eq!(k, key(&sizes, '1', "k"));
        // What the root is made of: another key.
        assert_ne!(k, key(&base, '2', "k"), "a package digest");
        assert_ne!(k, key(&base, '1', "j"), "the k0s digest");
        let mut pkgs = base.clone();
        pkgs.role_profile.packages.push("extra".into());
        assert_ne!(k, key(&pkgs, '1', "k"), "the package list");
        let mut epoch = base.clone();
        epoch.source_date_epoch += 1;
        assert_ne!(k, key(&epoch, '1', "k"), "the timestamps");
        let mut modules = base.clone();
        modules.board.initramfs_modules.push("extra".into());
        assert_ne!(k, key(&modules, '1', "k"), "the module selection");
        assert_ne!(
            k,
            super::key(&base, true, &[deb('1')], &k0s("k"), None).unwrap(),
            "the network-boot initramfs"
        );
    }

    #[test]
    fn module_files_are_recognized() {
        assert!(is_module("e1000.ko"));
        assert!(is_module("e1000.ko.xz"));
        assert!(!is_module("modules.builtin"));
        assert!(!is_module("vmlinuz-6.1.0"));
    }

    #[test]
    fn overlay_digest_follows_content_and_modes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "one").unwrap();
        let digest = || {
            let mut h = Sha256::new();
            hash_dir(&mut h, d.path()).unwrap();
            hex::encode(h.finalize())
        };
        let first = digest();
        assert_eq!(first, digest(), "stable");
        std::fs::write(d.path().join("a/b/f"), "two").unwrap();
        let second = digest();
        assert_ne!(first, second, "content");
        std::fs::set_permissions(
            d.path().join("a/b/f"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let third = digest();
        assert_ne!(second, third, "mode");
        std::fs::set_permissions(
            d.path().join("a/b/f"),
            std::fs::Permissions::from_mode(0o775),
        )
        .unwrap();
        assert_eq!(third, digest(), "group write is not kept by the loader");
        let mut h = Sha256::new();
        hash_dir(&mut h, &d.path().join("missing")).unwrap();
    }
}
