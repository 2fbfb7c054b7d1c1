//! Unpacking a `.deb` into a [`Tree`] without touching the host filesystem.
//!
//! A `.deb` is an `ar` archive holding `debian-binary`, `control.tar.*` and `data.tar.*`.
//! The data tarball is streamed through its decompressor entry by entry; entries are staged and
//! only laid into the tree when the whole package read cleanly, so a hostile or corrupt package
//! leaves the tree as it was.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};
use thiserror::Error;

use super::control::{parse_stanzas, Stanza};
use crate::tree::spill::Spill;
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

/// Preallocation cap for one member's content, so a lying header cannot make us reserve
/// gigabytes before a single byte is read.
const MAX_PREALLOC: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum DebError {
    #[error("{deb}: member {member:?} has an absolute path or a `..` component; refusing a hostile package")]
    HostilePath { deb: String, member: String },
    #[error("{deb}: member {member:?} is a device node; packages may not create device nodes")]
    DeviceNode { deb: String, member: String },
    #[error("{deb}: hard link {member:?} points to {target:?}, which is not an earlier regular file of the package")]
    DanglingHardlink {
        deb: String,
        member: String,
        target: String,
    },
    #[error("{deb}: hard link {member:?} points to {target:?}, which the filter dropped; keep both or neither")]
    HardlinkToDropped {
        deb: String,
        member: String,
        target: String,
    },
    #[error("{deb}: member {member:?} holds {actual} bytes but its header declares {declared}")]
    SizeMismatch {
        deb: String,
        member: String,
        declared: u64,
        actual: u64,
    },
    #[error("{deb}: member {member:?} has unsupported type {kind}")]
    Unsupported {
        deb: String,
        member: String,
        kind: String,
    },
    #[error("{deb}: no {what} member (is this a Debian package?)")]
    MissingMember { deb: String, what: &'static str },
    #[error("{deb}: {member} uses unsupported compression")]
    UnknownCompression { deb: String, member: String },
    #[error("{deb}: member name {member:?} is not UTF-8")]
    NotUtf8 { deb: String, member: String },
}

/// What a package says about itself (from `control.tar.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebInfo {
    /// The `control` file text.
    pub control: String,
    /// The `control` stanza, parsed.
    pub fields: Stanza,
    /// Paths listed in `conffiles` (absolute, as written there).
    pub conffiles: Vec<String>,
    /// Maintainer scripts present (`preinst`, `postinst`, ...): edgeimg does their work itself,
    /// so callers may want to know which packages had any.
    pub scripts: Vec<String>,
}

impl DebInfo {
    pub fn name(&self) -> Option<&str> {
        self.fields.get("Package")
    }

    pub fn version(&self) -> Option<&str> {
        self.fields.get("Version")
    }
}

/// What unpacking may accept beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Accept character and block device nodes (no Debian package needs this).
    pub allow_devices: bool,
}

/// Unpacks the data of the `.deb` at `path` into `tree`, keeping the members for which
/// `filter` returns true, and returns the package's control information.
pub fn unpack_deb(
    path: &Path,
    tree: &mut Tree,
    filter: &mut dyn FnMut(&TreePath) -> bool,
) -> Result<DebInfo> {
    unpack_deb_with(path, tree, filter, UnpackOptions::default())
}

/// [`unpack_deb`] with options.
pub fn unpack_deb_with(
    path: &Path,
    tree: &mut Tree,
    filter: &mut dyn FnMut(&TreePath) -> bool,
    opts: UnpackOptions,
) -> Result<DebInfo> {
    unpack(path, tree, filter, opts, None)
}

/// [`unpack_deb`], with every regular file that `spill` wants (the large ones) streamed to a
/// file of its own in `spill` instead of memory: the tree then refers to it as
/// [`Content::HostFile`], so memory does not grow with the size of the packages.
pub fn unpack_deb_spilling(
    path: &Path,
    tree: &mut Tree,
    filter: &mut dyn FnMut(&TreePath) -> bool,
    spill: &Spill,
) -> Result<DebInfo> {
    unpack(path, tree, filter, UnpackOptions::default(), Some(spill))
}

fn unpack(
    path: &Path,
    tree: &mut Tree,
    filter: &mut dyn FnMut(&TreePath) -> bool,
    opts: UnpackOptions,
    spill: Option<&Spill>,
) -> Result<DebInfo> {
    let deb = path.display().to_string();
    let f = File::open(path).with_context(|| format!("opening {deb}"))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut info = None;
    let mut staged = None;
    while let Some(member) = ar.next_entry() {
        let member = member.with_context(|| format!("{deb}: reading the ar archive"))?;
        let name = String::from_utf8_lossy(member.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if name == "debian-binary" {
            continue;
        }
        if let Some(ext) = name.strip_prefix("control.tar") {
            let r = decompressor(member, ext).ok_or_else(|| DebError::UnknownCompression {
                deb: deb.clone(),
                member: name.clone(),
            })?;
            info = Some(read_control(r, &deb).with_context(|| format!("{deb}: reading {name}"))?);
        } else if let Some(ext) = name.strip_prefix("data.tar") {
            let r = decompressor(member, ext).ok_or_else(|| DebError::UnknownCompression {
                deb: deb.clone(),
                member: name.clone(),
            })?;
            staged = Some(
                read_data(r, &deb, filter, opts, spill)
                    .with_context(|| format!("{deb}: reading {name}"))?,
            );
        }
    }
    let info = info.ok_or_else(|| DebError::MissingMember {
        deb: deb.clone(),
        what: "control.tar",
    })?;
    let staged = staged.ok_or_else(|| DebError::MissingMember {
        deb: deb.clone(),
        what: "data.tar",
    })?;
    for (p, e) in staged {
        tree.insert(&p, e)
            .with_context(|| format!("{deb}: placing {p} in the tree"))?;
    }
    Ok(info)
}

fn decompressor<'a, R: Read + 'a>(r: R, ext: &str) -> Option<Box<dyn Read + 'a>> {
    Some(match ext {
        ".xz" => Box::new(liblzma::read::XzDecoder::new(r)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(r).ok()?),
        ".gz" => Box::new(flate2::read::GzDecoder::new(r)),
        "" => Box::new(r),
        _ => return None,
    })
}

/// Reads the whole decompressed stream to its end, so the compressor's own integrity check
/// (xz's CRC, gzip's CRC32) runs even after the tar end marker.
fn drain(mut r: impl Read) -> io::Result<()> {
    io::copy(&mut r, &mut io::sink()).map(|_| ())
}

fn read_control(r: Box<dyn Read + '_>, deb: &str) -> Result<DebInfo> {
    let mut tar = tar::Archive::new(r);
    let mut info = DebInfo::default();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        match name.as_str() {
            "control" => {
                entry.read_to_string(&mut info.control)?;
                info.fields = parse_stanzas(&info.control, &format!("{deb} control"))?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
            }
            "conffiles" => {
                let mut s = String::new();
                entry.read_to_string(&mut s)?;
                info.conffiles = s
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
            }
            "preinst" | "postinst" | "prerm" | "postrm" | "config" | "triggers" => {
                info.scripts.push(name)
            }
            _ => {}
        }
    }
    drain(tar.into_inner())?;
    info.scripts.sort();
    if info.control.is_empty() {
        return Err(DebError::MissingMember {
            deb: deb.into(),
            what: "control file in control.tar",
        }
        .into());
    }
    Ok(info)
}

/// Turns a member name into a tree path: strips a leading `./`, refuses absolute paths and `..`.
/// The archive's root (`./`) maps to `None`.
fn member_path(raw: &[u8], deb: &str) -> Result<Option<TreePath>, DebError> {
    let name = std::str::from_utf8(raw).map_err(|_| DebError::NotUtf8 {
        deb: deb.into(),
        member: String::from_utf8_lossy(raw).into(),
    })?;
    let hostile = || DebError::HostilePath {
        deb: deb.into(),
        member: name.into(),
    };
    let stripped = name.strip_prefix("./").unwrap_or(name);
    if stripped.starts_with('/') || stripped.contains('\0') {
        return Err(hostile());
    }
    let p = TreePath::strict(stripped).map_err(|_| hostile())?;
    Ok((!p.is_root()).then_some(p))
}

type Staged = Vec<(TreePath, Entry)>;

fn read_data(
    r: Box<dyn Read + '_>,
    deb: &str,
    filter: &mut dyn FnMut(&TreePath) -> bool,
    opts: UnpackOptions,
    spill: Option<&Spill>,
) -> Result<Staged> {
    let mut tar = tar::Archive::new(r);
    let mut staged: Staged = Vec::new();
    // Regular files seen so far, for hard links: index into `staged`, or None when dropped.
    let mut files: HashMap<TreePath, Option<usize>> = HashMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw).into_owned();
        let Some(path) = member_path(&raw, deb)? else {
            continue;
        };
        let h = entry.header();
        let meta = |kind| -> Result<Entry> {
            Ok(Entry {
                kind,
                mode: h.mode()? & 0o7777,
                uid: u32::try_from(h.uid()?).unwrap_or(u32::MAX),
                gid: u32::try_from(h.gid()?).unwrap_or(u32::MAX),
                mtime: h.mtime()?,
            })
        };
        let et = h.entry_type();
        let keep = filter(&path);
        use tar::EntryType as T;
        let item = match et {
            T::Regular | T::Continuous => {
                if !keep {
                    files.insert(path, None);
                    continue;
                }
                let e = meta(Kind::File(Content::bytes(Vec::new())))?;
                let content = match spill {
                    Some(spill) if spill.wants(entry.size()) => {
                        spill_exact_size(&mut entry, deb, &member, spill)?
                    }
                    _ => Content::bytes(read_exact_size(&mut entry, deb, &member)?),
                };
                files.insert(path.clone(), Some(staged.len()));
                Entry {
                    kind: Kind::File(content),
                    ..e
                }
            }
            T::Directory => meta(Kind::Dir)?,
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                meta(Kind::Symlink(target))?
            }
            T::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_name = String::from_utf8_lossy(&target_raw).into_owned();
                let dangling = || DebError::DanglingHardlink {
                    deb: deb.into(),
                    member: member.clone(),
                    target: target_name.clone(),
                };
                let target = member_path(&target_raw, deb)?.ok_or_else(dangling)?;
                match files.get(&target) {
                    None => return Err(dangling().into()),
                    Some(None) if keep => {
                        return Err(DebError::HardlinkToDropped {
                            deb: deb.into(),
                            member,
                            target: target_name,
                        }
                        .into())
                    }
                    Some(None) => {
                        files.insert(path, None);
                        continue;
                    }
                    // The link shares the inode, so it takes the target's content and metadata.
                    Some(Some(i)) => {
                        let e = staged[*i].1.clone();
                        if keep {
                            files.insert(path.clone(), Some(staged.len()));
                        } else {
                            files.insert(path, None);
                            continue;
                        }
                        e
                    }
                }
            }
            T::Char | T::Block => {
                if !opts.allow_devices {
                    return Err(DebError::DeviceNode {
                        deb: deb.into(),
                        member,
                    }
                    .into());
                }
                let major = h.device_major()?.unwrap_or(0);
                let minor = h.device_minor()?.unwrap_or(0);
                meta(if et == T::Char {
                    Kind::CharDevice { major, minor }
                } else {
                    Kind::BlockDevice { major, minor }
                })?
            }
            T::Fifo => meta(Kind::Fifo)?,
            other => {
                return Err(DebError::Unsupported {
                    deb: deb.into(),
                    member,
                    kind: format!("{other:?}"),
                }
                .into());
            }
        };
        if keep {
            staged.push((path, item));
        }
    }
    drain(tar.into_inner())?;
    Ok(staged)
}

/// Reads a member's content and checks it has exactly the declared size (`tar::Entry` stops
/// at the declared size; a stream that ends early is truncation).
fn read_exact_size<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    deb: &str,
    member: &str,
) -> Result<Vec<u8>> {
    let declared = entry.size();
    let mut data = Vec::with_capacity(declared.min(MAX_PREALLOC) as usize);
    entry
        .read_to_end(&mut data)
        .with_context(|| format!("{deb}: reading member {member:?}"))?;
    if data.len() as u64 != declared {
        return Err(DebError::SizeMismatch {
            deb: deb.into(),
            member: member.into(),
            declared,
            actual: data.len() as u64,
        }
        .into());
    }
    Ok(data)
}

/// [`read_exact_size`] into a file of `spill` instead of memory.
fn spill_exact_size<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    deb: &str,
    member: &str,
    spill: &Spill,
) -> Result<Content> {
    let declared = entry.size();
    let (content, actual) = spill.store(entry).with_context(|| {
        format!(
            "{deb}: copying member {member:?} to {}",
            spill.path().display()
        )
    })?;
    if actual != declared {
        return Err(DebError::SizeMismatch {
            deb: deb.into(),
            member: member.into(),
            declared,
            actual,
        }
        .into());
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a .deb in memory: `data` is a list of (tar header setup, content).
    struct DebBuilder {
        data: tar::Builder<Vec<u8>>,
    }

    impl DebBuilder {
        fn new() -> Self {
            DebBuilder {
                data: tar::Builder::new(Vec::new()),
            }
        }

        fn header(name: &str, et: tar::EntryType, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(et);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            // Write the raw name so hostile names are not sanitized by `set_path`.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            h
        }

        fn file(mut self, name: &str, content: &[u8], mode: u32) -> Self {
            let h = Self::header(name, tar::EntryType::Regular, content.len() as u64, mode);
            self.data.append(&h, content).unwrap();
            self
        }

        fn entry(mut self, name: &str, et: tar::EntryType, link: Option<&str>) -> Self {
            let mut h = Self::header(name, et, 0, 0o755);
            if matches!(et, tar::EntryType::Block | tar::EntryType::Char) {
                h.set_device_major(8).unwrap();
                h.set_device_minor(1).unwrap();
                h.set_cksum();
            }
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
                h.set_cksum();
            }
            self.data.append(&h, io::empty()).unwrap();
            self
        }

        fn data_xz(self) -> Vec<u8> {
            let tar = self.data.into_inner().unwrap();
            let mut out = Vec::new();
            let mut enc = liblzma::read::XzEncoder::new(&tar[..], 6);
            enc.read_to_end(&mut out).unwrap();
            out
        }

        fn build(self, dir: &Path) -> std::path::PathBuf {
            let data = self.data_xz();
            write_deb(dir, &data)
        }
    }

    fn control_tar_gz() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let control = b"Package: demo\nVersion: 1.0-1\nArchitecture: all\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("./control").unwrap();
        h.set_size(control.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &control[..]).unwrap();
        let conff = b"/etc/demo.conf\n";
        h.set_path("./conffiles").unwrap();
        h.set_size(conff.len() as u64);
        h.set_cksum();
        b.append(&h, &conff[..]).unwrap();
        h.set_path("./postinst").unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn write_deb(dir: &Path, data_xz: &[u8]) -> std::path::PathBuf {
        let p = dir.join("demo.deb");
        let mut a = ar::Builder::new(File::create(&p).unwrap());
        let ctl = control_tar_gz();
        for (name, body) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar.gz", &ctl[..]),
            ("data.tar.xz", data_xz),
        ] {
            a.append(
                &ar::Header::new(name.as_bytes().to_vec(), body.len() as u64),
                body,
            )
            .unwrap();
        }
        p
    }

    fn keep_all(_: &TreePath) -> bool {
        true
    }

    #[test]
    fn unpacks_files_links_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let deb = DebBuilder::new()
            .entry("./", tar::EntryType::Directory, None)
            .entry("./usr/", tar::EntryType::Directory, None)
            .entry("./usr/bin/", tar::EntryType::Directory, None)
            .file("./usr/bin/demo", b"#!/bin/sh\n", 0o4755)
            .entry(
                "./usr/bin/demo2",
                tar::EntryType::Link,
                Some("./usr/bin/demo"),
            )
            .entry("./usr/bin/d", tar::EntryType::Symlink, Some("demo"))
            .file("./usr/share/doc/demo/README", b"docs", 0o644)
            .build(dir.path());
        let mut tree = Tree::new();
        let mut filter = |p: &TreePath| !p.as_str().starts_with("usr/share/doc");
        let info = unpack_deb(&deb, &mut tree, &mut filter).unwrap();
        assert_eq!(info.name(), Some("demo"));
        assert_eq!(info.version(), Some("1.0-1"));
        assert_eq!(info.conffiles, vec!["/etc/demo.conf"]);
        assert_eq!(info.scripts, vec!["postinst"]);
        let e = tree.get("usr/bin/demo").unwrap();
        assert_eq!(e.mode, 0o4755);
        assert_eq!(e.mtime, 1_700_000_000);
        assert_eq!(&*tree.read("usr/bin/demo2").unwrap(), b"#!/bin/sh\n");
        assert_eq!(tree.get("usr/bin/demo2").unwrap().mode, 0o4755);
        assert!(matches!(&tree.get("usr/bin/d").unwrap().kind, Kind::Symlink(t) if t == "demo"));
        assert!(tree.get("usr/share/doc/demo/README").is_none());
    }

    fn assert_refused(deb: DebBuilder, want: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = deb.build(dir.path());
        let mut tree = Tree::new();
        tree.add_file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n".to_vec(), 0o644)
            .unwrap();
        let before = tree.len();
        let err = unpack_deb(&p, &mut tree, &mut keep_all).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(want) && msg.contains("demo.deb"), "{msg}");
        assert_eq!(tree.len(), before, "tree changed by a refused package");
        assert_eq!(
            &*tree.read("etc/passwd").unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_refused(
            DebBuilder::new()
                .file("./ok", b"1", 0o644)
                .file("../etc/passwd", b"x", 0o644),
            "../etc/passwd",
        );
        assert_refused(
            DebBuilder::new().file("./a/../../etc/passwd", b"x", 0o644),
            "hostile",
        );
        assert_refused(
            DebBuilder::new().file("/etc/passwd", b"x", 0o644),
            "\"/etc/passwd\"",
        );
    }

    #[test]
    fn device_nodes_are_refused_unless_allowed() {
        let deb = || DebBuilder::new().entry("./dev/sda", tar::EntryType::Block, None);
        assert_refused(deb(), "device node");
        let dir = tempfile::tempdir().unwrap();
        let p = deb().build(dir.path());
        let mut tree = Tree::new();
        unpack_deb_with(
            &p,
            &mut tree,
            &mut keep_all,
            UnpackOptions {
                allow_devices: true,
            },
        )
        .unwrap();
        assert!(matches!(
            tree.get("dev/sda").unwrap().kind,
            Kind::BlockDevice { major: 8, minor: 1 }
        ));
    }

    #[test]
    fn dangling_hardlinks_are_refused() {
        assert_refused(
            DebBuilder::new().entry("./x", tar::EntryType::Link, Some("./nowhere")),
            "hard link",
        );
    }

    #[test]
    fn truncated_and_corrupt_data_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let data = DebBuilder::new().file("./big", &big, 0o644).data_xz();
        let mut tree = Tree::new();
        // Cut the compressed data in half.
        let p = write_deb(dir.path(), &data[..data.len() / 2]);
        let err = unpack_deb(&p, &mut tree, &mut keep_all).unwrap_err();
        assert!(format!("{err:#}").contains("demo.deb"), "{err:#}");
        // Flip a byte in the middle: the xz check or the LZMA decoder must catch it.
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let p = write_deb(dir.path(), &bad);
        assert!(unpack_deb(&p, &mut tree, &mut keep_all).is_err());
        assert_eq!(tree.len(), 1, "nothing was added");
        // The intact one works.
        let p = write_deb(dir.path(), &data);
        unpack_deb(&p, &mut tree, &mut keep_all).unwrap();
        assert_eq!(tree.read("big").unwrap().len(), big.len());
    }

    #[test]
    fn large_files_spill_to_disk_with_the_same_bytes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let deb = DebBuilder::new()
            .file("./usr/lib/big", &big, 0o600)
            .entry(
                "./usr/lib/big2",
                tar::EntryType::Link,
                Some("./usr/lib/big"),
            )
            .file("./usr/lib/small", b"tiny", 0o644)
            .build(dir.path());
        let spill = Spill::with_threshold(dir.path(), 1000).unwrap();
        let mut spilled = Tree::new();
        unpack_deb_spilling(&deb, &mut spilled, &mut keep_all, &spill).unwrap();
        let mut plain = Tree::new();
        unpack_deb(&deb, &mut plain, &mut keep_all).unwrap();
        for name in ["usr/lib/big", "usr/lib/big2", "usr/lib/small"] {
            assert_eq!(spilled.read(name), plain.read(name), "{name}");
            assert_eq!(
                spilled.get(name).unwrap().mode,
                plain.get(name).unwrap().mode
            );
        }
        let host = |name: &str| match &spilled.get(name).unwrap().kind {
            Kind::File(Content::HostFile { path, size }) => Some((path.clone(), *size)),
            _ => None,
        };
        let (path, size) = host("usr/lib/big").expect("the large file is on disk");
        assert!(path.starts_with(spill.path()) && size == big.len() as u64);
        assert_eq!(
            host("usr/lib/big2"),
            Some((path, size)),
            "a hard link shares it"
        );
        assert_eq!(host("usr/lib/small"), None, "small files stay in memory");
        assert_eq!(spill.bytes(), big.len() as u64);

        // A truncated package still fails and leaves the tree as it was.
        let data = DebBuilder::new().file("./big", &big, 0o644).data_xz();
        let p = write_deb(dir.path(), &data[..data.len() / 2]);
        let mut tree = Tree::new();
        assert!(unpack_deb_spilling(&p, &mut tree, &mut keep_all, &spill).is_err());
        assert_eq!(tree.len(), 1);
    }
}
