//! `configure` on damaged, foreign, shrunk and interrupted boot partitions, on small synthetic
//! images (a GPT from edgeimg's partition plan, a FAT32 from edgeimg's writer holding boot
//! files and a rendered node config, a fake root superblock), judged by `fsck.fat`, a raw
//! read of the bytes and a real SIGKILL (`strace -e inject`) at every write system call.
//! No Debian download is needed.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use edgeimg::disk::{write_table, PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
use edgeimg::fs::fat::{write_fat32, FatParams, FatVolume};
use edgeimg::node::NodeConfig;
use edgeimg::tree::Tree;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
const EPOCH: &str = "1700000000";
/// What the root partition starts with: a squashfs superblock's magic and some bytes.
const ROOT_MAGIC: &[u8] = b"hsqs\x2a\x00\x00\x00 fake root superblock";

const BUILT_NODE: &str = r#"
hostname = "as-built"
run_cmd = ["echo old"]
[k0s]
role = "worker"
token_file = "TOKEN"
[time]
ntp = []
[[files]]
path = "/etc/old.conf"
content = "old\n"
"#;

/// A synthetic edgeimg image: GPT, a FAT32 boot partition, a root partition with a fake
/// superblock.
struct Synth {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: PathBuf,
    boot: (u64, u64),
    root: (u64, u64),
}

struct SynthOptions<'a> {
    boot_mib: u64,
    /// Bytes the FAT is made for (default: the partition's size).
    fat_bytes: Option<u64>,
    label: &'a str,
    /// The node config rendered onto the boot partition (None: no node files).
    node: Option<&'a str>,
    /// More files for the boot partition.
    extra: Vec<(&'a str, Vec<u8>)>,
    /// The UEFI boot files.
    boot_files: bool,
}

impl Default for SynthOptions<'_> {
    fn default() -> Self {
        SynthOptions {
            boot_mib: 40,
            fat_bytes: None,
            label: "EDGEIMG",
            node: Some(BUILT_NODE),
            extra: Vec::new(),
            boot_files: true,
        }
    }
}

fn write_token(dir: &Path, name: &str, value: &str) -> PathBuf {
    let t = dir.join(name);
    std::fs::write(&t, value).unwrap();
    std::fs::set_permissions(&t, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    t
}

fn synth(o: SynthOptions) -> Synth {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let specs = [
        PartitionSpec {
            role: PartRole::Boot,
            name: "boot".into(),
            ptype: PartType::Esp,
            size: o.boot_mib * MIB,
            bootable: false,
        },
        PartitionSpec {
            role: PartRole::Root(edgeimg::disk::layout::Slot::A),
            name: "root".into(),
            ptype: PartType::LinuxRootX86_64,
            size: 8 * MIB,
            bootable: false,
        },
    ];
    let plan = PartitionPlan::new(TableKind::Gpt, &specs, b"configure-safety").unwrap();
    let boot = plan.get(PartRole::Boot).clone();
    let root = plan
        .get(PartRole::Root(edgeimg::disk::layout::Slot::A))
        .clone();
    let image = dir.join("synth.img");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    let fat_bytes = o.fat_bytes.unwrap_or(boot.size());
    f.set_len(plan.disk_size.max(boot.offset() + fat_bytes))
        .unwrap();
    write_table(&plan, &mut f).unwrap();

    let mut tree = Tree::new();
    if o.boot_files {
        tree.add_file("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 3000], 0o644)
            .unwrap();
        tree.add_file(
            "loader/loader.conf",
            "default edgeimg.conf\ntimeout 0\n",
            0o644,
        )
        .unwrap();
        tree.add_file(
            "loader/entries/edgeimg.conf",
            "title edgeimg\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0\n",
            0o644,
        )
        .unwrap();
        tree.add_file("vmlinuz", vec![0x7f; 20_000], 0o644).unwrap();
        tree.add_file("initrd.img", vec![0x1f; 9_000], 0o644)
            .unwrap();
    }
    if let Some(node) = o.node {
        let token = write_token(&dir, "built.token", &format!("{TEST_JOIN_TOKEN}\n"));
        let text = node.replace("TOKEN", token.to_str().unwrap());
        let path = dir.join("built.toml");
        std::fs::write(&path, text).unwrap();
        let rendered = NodeConfig::from_toml_file(&path).unwrap().render().unwrap();
        tree.overlay(&rendered.into_tree().unwrap()).unwrap();
    }
    for (p, c) in o.extra {
        tree.add_file(p, c, 0o644).unwrap();
    }
    let params = FatParams {
        size: fat_bytes,
        volume_id: 0x0ED6_E100,
        label: o.label.into(),
        hidden_sectors: boot.start_lba as u32,
        mtime: 1_700_000_000,
    };
    write_fat32(&tree, &params, &mut f, boot.offset()).unwrap();
    // The root's superblock last: a FAT made too big for its partition runs into it.
    f.seek(SeekFrom::Start(root.offset())).unwrap();
    f.write_all(ROOT_MAGIC).unwrap();
    f.sync_all().unwrap();
    Synth {
        _dir: tmp,
        dir,
        image,
        boot: (boot.offset(), boot.size()),
        root: (root.offset(), root.size()),
    }
}

fn configure(image: &Path, args: &[&str]) -> Output {
    let mut all = vec!["configure", image.to_str().unwrap()];
    all.extend_from_slice(args);
    Command::new(bin())
        .args(&all)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("running edgeimg")
}

/// Runs edgeimg with a deadline and a memory limit, so that a loop fails the test instead
/// of the machine.
fn edgeimg_bounded(args: &[&str], secs: u64) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            child.wait().unwrap();
            return (
                None,
                format!("still running after {secs} s"),
                started.elapsed(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- raw FAT access, independent of edgeimg's reader ----

struct Raw {
    base: u64,
    spc: u64,
    reserved: u64,
    nfats: u64,
    fat_sectors: u64,
    root: u32,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Raw {
    fn open(image: &Path, base: u64) -> Raw {
        let mut bs = [0u8; 512];
        let mut f = File::open(image).unwrap();
        f.seek(SeekFrom::Start(base)).unwrap();
        f.read_exact(&mut bs).unwrap();
        Raw {
            base,
            spc: u64::from(bs[13]),
            reserved: le16(&bs, 14),
            nfats: u64::from(bs[16]),
            fat_sectors: u64::from(le32(&bs, 36)),
            root: le32(&bs, 44),
        }
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.base
            + (self.reserved + self.nfats * self.fat_sectors) * 512
            + u64::from(c - 2) * self.spc * 512
    }

    fn fat_entry_offset(&self, copy: u64, c: u32) -> u64 {
        self.base + (self.reserved + copy * self.fat_sectors) * 512 + 4 * u64::from(c)
    }

    /// The byte offset of the short entry `short` (11 bytes, space padded) in the
    /// (one-cluster) directory at `dir`, and the cluster it points at.
    fn find(&self, image: &Path, dir: u32, short: &[u8; 11]) -> (u64, u32) {
        let mut f = File::open(image).unwrap();
        let mut buf = vec![0u8; (self.spc * 512) as usize];
        f.seek(SeekFrom::Start(self.cluster_offset(dir))).unwrap();
        f.read_exact(&mut buf).unwrap();
        for (i, e) in buf.chunks_exact(32).enumerate() {
            if &e[..11] == short && e[11] & 0x08 == 0 {
                let cluster = (le16(e, 20) << 16 | le16(e, 26)) as u32;
                return (self.cluster_offset(dir) + 32 * i as u64, cluster);
            }
        }
        panic!("no entry {:?}", String::from_utf8_lossy(short));
    }

    /// Sets the first cluster of the entry at `at`.
    fn point(&self, image: &Path, at: u64, cluster: u32) {
        let mut f = OpenOptions::new().write(true).open(image).unwrap();
        f.seek(SeekFrom::Start(at + 20)).unwrap();
        f.write_all(&((cluster >> 16) as u16).to_le_bytes())
            .unwrap();
        f.seek(SeekFrom::Start(at + 26)).unwrap();
        f.write_all(&(cluster as u16).to_le_bytes()).unwrap();
    }

    /// Sets the FAT entry of `cluster` in every FAT copy.
    fn set_fat(&self, image: &Path, cluster: u32, value: u32) {
        let mut f = OpenOptions::new().write(true).open(image).unwrap();
        for copy in 0..self.nfats {
            f.seek(SeekFrom::Start(self.fat_entry_offset(copy, cluster)))
                .unwrap();
            f.write_all(&value.to_le_bytes()).unwrap();
        }
    }
}

// ---- judging a card ----

/// Copies a partition into a sparse file of its own (fsck.fat takes no offset).
fn extract_sparse(image: &Path, offset: u64, len: u64, to: &Path) {
    let mut src = File::open(image).unwrap();
    let mut dst = File::create(to).unwrap();
    dst.set_len(len).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(at)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        at += n as u64;
    }
}

/// What `fsck.fat -n` says about a partition image.
struct Fsck {
    code: i32,
    text: String,
}

impl Fsck {
    fn run(part: &Path, args: &[&str]) -> Fsck {
        let mut all = args.to_vec();
        all.push(part.to_str().unwrap());
        let o = run_tool("fsck.fat", &all);
        Fsck {
            code: o.status.code().unwrap_or(-1),
            text: format!("{}{}", stdout(&o), stderr(&o)),
        }
    }

    /// The lines that report a problem (fsck.fat -n exits 0 for some it only reports).
    fn complaints(&self) -> Vec<String> {
        let words = [
            "fixing",
            "error",
            "differ",
            "wrong",
            "orphan",
            "bad ",
            "invalid",
            "deleting",
            "truncat",
            "not auto-correcting",
            "mismatch",
            "duplicate",
            "reclaim",
            "free cluster",
            "unused",
            "lost",
            "contains",
            "starts with",
            "cluster chain",
            "loop",
            "dirty",
        ];
        self.text
            .lines()
            .filter(|l| !l.starts_with("Checking "))
            // A note, not a problem: the count is marked unknown (FAT drivers count it
            // themselves) and fsck.fat -n leaves it so.
            .filter(|l| !l.starts_with("Free cluster summary uninitialized"))
            .filter(|l| {
                let l = l.to_lowercase();
                words.iter().any(|w| l.contains(w))
            })
            .map(str::to_string)
            .collect()
    }

    fn clean(&self) -> bool {
        self.code == 0 && self.complaints().is_empty()
    }
}

/// Every file under `edgeimg/` of the boot partition, read by edgeimg's FAT reader.
fn node_files(image: &Path, base: u64) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let f = File::open(image).map_err(|e| e.to_string())?;
    let mut vol = FatVolume::open(&f, base).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let mut todo = vec!["edgeimg".to_string()];
    while let Some(dir) = todo.pop() {
        if out.len() > 1000 || dir.len() > 400 {
            return Err(format!("{dir}: the tree does not end"));
        }
        for e in vol.list(&dir).map_err(|e| format!("{dir}: {e}"))? {
            let p = format!("{dir}/{}", e.name);
            if e.is_dir {
                todo.push(p);
            } else {
                let data = vol
                    .read_file(&p)
                    .map_err(|e| format!("{p}: {e}"))?
                    .ok_or(format!("{p}: listed but not found"))?;
                out.insert(p, data);
            }
        }
    }
    Ok(out)
}

/// Checks one node folder (`edgeimg` or `edgeimg/nodes/<mac>`) for coherence: node.env's
/// CONFIG_GENERATION is its own digest, CONTENT_SHA256 covers exactly the other files
/// present, the token is there iff HAS_TOKEN=1, node.toml names the same host.
fn coherent(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<String, String> {
    let env_text = files
        .get(&format!("{dir}/node.env"))
        .ok_or(format!("{dir}/node.env is missing"))?;
    let text = String::from_utf8_lossy(env_text).to_string();
    let env = edgeimg::node::parse_node_env(&text).map_err(|e| format!("{dir}/node.env: {e}"))?;
    let generation = env
        .get("CONFIG_GENERATION")
        .ok_or(format!("{dir}/node.env has no CONFIG_GENERATION"))?;
    let body_end = text.find("CONFIG_GENERATION=").unwrap();
    if &hex::encode(Sha256::digest(&text.as_bytes()[..body_end])) != generation {
        return Err(format!(
            "{dir}/node.env: CONFIG_GENERATION is not its digest"
        ));
    }
    // The digest of every rendered file but node.env, node.toml and token, by the path it
    // was rendered under ("edgeimg/...").
    let mut h = Sha256::new();
    let mut token = false;
    for (p, c) in files {
        let Some(rest) = p.strip_prefix(&format!("{dir}/")) else {
            continue;
        };
        // Per-MAC folders are checked on their own; the update's state is not rendered.
        if dir == "edgeimg" && (rest.starts_with("nodes/") || rest.starts_with("update/")) {
            continue;
        }
        match rest {
            "node.env" | "node.toml" => continue,
            "token" => {
                token = true;
                continue;
            }
            _ => {}
        }
        let rendered = format!("edgeimg/{rest}");
        h.update(rendered.as_bytes());
        h.update([0]);
        h.update((c.len() as u64).to_le_bytes());
        h.update(c);
    }
    if hex::encode(h.finalize()) != env["CONTENT_SHA256"] {
        return Err(format!(
            "{dir}: the files present are not the ones node.env was rendered with"
        ));
    }
    if token != (env["HAS_TOKEN"] == "1") {
        return Err(format!(
            "{dir}: HAS_TOKEN={} but the token file is {}",
            env["HAS_TOKEN"],
            if token { "present" } else { "absent" }
        ));
    }
    let toml = String::from_utf8_lossy(
        files
            .get(&format!("{dir}/node.toml"))
            .ok_or(format!("{dir}/node.toml is missing"))?,
    )
    .to_string();
    if !toml.contains(&format!("hostname = \"{}\"", env["NODE_HOSTNAME"])) {
        return Err(format!(
            "{dir}: node.toml and node.env name different hosts"
        ));
    }
    Ok(generation.clone())
}

/// Every node folder of a card, coherent; returns their generations.
fn coherent_card(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<String>, String> {
    let mut dirs: Vec<String> = files
        .keys()
        .filter_map(|p| {
            let rest = p.strip_prefix("edgeimg/nodes/")?;
            Some(format!("edgeimg/nodes/{}", rest.split('/').next()?))
        })
        .collect();
    dirs.dedup();
    dirs.insert(0, "edgeimg".into());
    dirs.iter().map(|d| coherent(files, d)).collect()
}

/// Bytes of `image` outside `[from, to)` that differ from `before`.
fn changed_outside(before: &[u8], image: &Path, from: u64, to: u64) -> Vec<u64> {
    let after = std::fs::read(image).unwrap();
    assert_eq!(before.len(), after.len());
    before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(i, (a, b))| a != b && ((*i as u64) < from || *i as u64 >= to))
        .map(|(i, _)| i as u64)
        .take(10)
        .collect()
}

fn new_node(dir: &Path) -> PathBuf {
    let p = dir.join("new.toml");
    std::fs::write(
        &p,
        format!(
            "hostname = \"reconfigured\"\nboot_cmd = [\"echo new\"]\n[k0s]\nrole = \"worker\"\n\
             [time]\nntp = []\n[[files]]\npath = \"/etc/new-a.conf\"\ncontent = \"{}\"\n\
             [[files]]\npath = \"/etc/new-b.conf\"\ncontent = \"b\\n\"\n",
            "x".repeat(3000)
        ),
    )
    .unwrap();
    p
}

// ---- the defects ----

/// A FAT made for 48 MiB in a 40 MiB partition (or a partition shrunk after the FAT was
/// made), full up to the partition's end: the new node files would land in the root
/// partition. configure refuses before writing anything.
#[test]
fn a_fat_larger_than_its_partition_is_refused() {
    let s = synth(SynthOptions {
        fat_bytes: Some(48 * MIB),
        extra: vec![("zz-filler.bin", vec![0x55; 40 * MIB as usize])],
        node: Some("hostname = \"small\"\n[time]\nntp = []\n"),
        ..Default::default()
    });
    let before = std::fs::read(&s.image).unwrap();
    let o = configure(&s.image, &["--node", new_node(&s.dir).to_str().unwrap()]);
    let after = std::fs::read(&s.image).unwrap();
    let root = &after[s.root.0 as usize..(s.root.0 + s.root.1) as usize];
    assert!(
        root.starts_with(ROOT_MAGIC),
        "configure overwrote the root partition's superblock (exit {:?})",
        o.status.code()
    );
    assert!(
        before == after,
        "configure changed the image (exit {:?}, first changes outside the boot partition at {:?})",
        o.status.code(),
        changed_outside(&before, &s.image, s.boot.0, s.boot.0 + s.boot.1)
    );
    assert!(!o.status.success(), "configure reported success");
    let err = stderr(&o);
    eprintln!("{err}");
    assert!(
        err.contains("partition 1") && err.contains("sectors"),
        "the error does not say what is wrong:\n{err}"
    );
}

/// A chain of an old node file broken (node.toml's first cluster marked free): nothing is
/// changed, and the error names the file and says what to do.
#[test]
fn a_damaged_node_folder_is_refused_before_any_change() {
    let s = synth(SynthOptions::default());
    let raw = Raw::open(&s.image, s.boot.0);
    let (_, dir) = raw.find(&s.image, raw.root, b"EDGEIMG    ");
    let (_, toml) = raw.find(&s.image, dir, b"NODE~1  TOM");
    raw.set_fat(&s.image, toml, 0);
    let before = std::fs::read(&s.image).unwrap();
    let o = configure(&s.image, &["--hostname", "after-damage"]);
    assert!(
        std::fs::read(&s.image).unwrap() == before,
        "configure changed a damaged boot partition (exit {:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    eprintln!("{err}");
    assert!(
        err.contains("edgeimg/node.toml") && err.contains("fsck.fat"),
        "{err}"
    );
}

/// A FAT that is not edgeimg's: another label, no node config, no boot files, but an
/// `EDGEIMG/` folder of the user's. configure refuses and deletes nothing.
#[test]
fn a_foreign_fat_is_refused_and_its_files_are_kept() {
    let s = synth(SynthOptions {
        label: "USBSTICK",
        node: None,
        boot_files: false,
        extra: vec![
            ("EDGEIMG/keepme.txt", b"the user's notes\n".to_vec()),
            ("photos/a.jpg", vec![0xff; 5000]),
        ],
        ..Default::default()
    });
    let before = std::fs::read(&s.image).unwrap();
    let o = configure(&s.image, &["--hostname", "intruder"]);
    assert!(
        std::fs::read(&s.image).unwrap() == before,
        "configure changed a foreign FAT (exit {:?})",
        o.status.code()
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    eprintln!("{err}");
    assert!(
        err.contains("not the boot partition of an edgeimg image"),
        "{err}"
    );

    // An edgeimg boot partition whose edgeimg/ holds a file edgeimg did not write.
    let s = synth(SynthOptions {
        extra: vec![("edgeimg/notes.txt", b"mine\n".to_vec())],
        ..Default::default()
    });
    let before = std::fs::read(&s.image).unwrap();
    let o = configure(&s.image, &["--hostname", "intruder"]);
    assert!(
        std::fs::read(&s.image).unwrap() == before,
        "configure changed a boot partition holding a user's file (exit {:?})",
        o.status.code()
    );
    let err = stderr(&o);
    eprintln!("{err}");
    assert!(err.contains("edgeimg/notes.txt"), "{err}");
}

/// A directory entry pointing at its own folder, or at the root: inspect and configure end
/// with an error naming the path instead of walking in circles until memory runs out.
#[test]
fn directory_loops_are_errors_naming_the_path() {
    for target in ["self", "root"] {
        let s = synth(SynthOptions::default());
        let raw = Raw::open(&s.image, s.boot.0);
        let (_, dir) = raw.find(&s.image, raw.root, b"EDGEIMG    ");
        let (files_at, _) = raw.find(&s.image, dir, b"FILES      ");
        raw.point(
            &s.image,
            files_at,
            if target == "self" { dir } else { raw.root },
        );
        let before = std::fs::read(&s.image).unwrap();
        let img = s.image.to_str().unwrap();
        for args in [
            vec!["inspect", img],
            vec!["configure", img, "--hostname", "loop"],
        ] {
            let (code, err, took) = edgeimg_bounded(&args, 60);
            eprintln!("{target} {}: {err}", args[0]);
            assert!(
                code.is_some_and(|c| c != 0),
                "{target}: {args:?} did not end with an error (exit {code:?}, {took:?}): {}",
                err.chars().take(2000).collect::<String>()
            );
            assert!(
                err.contains("edgeimg/files") && err.contains("loop"),
                "{target}: {args:?}: the error does not name the loop:\n{err}"
            );
        }
        assert!(std::fs::read(&s.image).unwrap() == before);
    }
}

/// What one interrupted configure left.
struct KillPoint {
    n: usize,
    state: String,
    fsck: Vec<String>,
}

/// The crash-safety proof: configure killed by SIGKILL at each of its write system calls in
/// turn (strace injects the signal on entry, so the Nth write never happens). After every
/// kill point the card holds the old config or the new one, whole, and fsck.fat finds the
/// FAT sound.
#[test]
fn configure_killed_at_every_write_leaves_the_old_or_the_new_config() {
    need("strace");
    need("fsck.fat");
    let started = Instant::now();
    // The card is on trial (`edgeimg update` armed it): the trial's record is in the old
    // config's folder and must be in the new one, whole, at every kill.
    let trial = ("edgeimg/update/trial", b"b 2 1 offline\n".to_vec());
    let s = synth(SynthOptions {
        extra: vec![trial.clone()],
        ..SynthOptions::default()
    });
    let pristine = s.dir.join("pristine.img");
    std::fs::copy(&s.image, &pristine).unwrap();
    let old = node_files(&s.image, s.boot.0).unwrap();
    assert_eq!(coherent_card(&old).unwrap().len(), 1);

    let node = new_node(&s.dir);
    let fleet = s.dir.join("fleet.toml");
    std::fs::write(
        &fleet,
        "[defaults]\ntime = { ntp = [] }\n\n[nodes.rack-a]\nmac = \"52:54:00:0e:00:0a\"\n\
         role = \"single\"\nrun_cmd = [\"echo rack-a\"]\n",
    )
    .unwrap();
    let args = [
        "--node",
        node.to_str().unwrap(),
        "--inventory",
        fleet.to_str().unwrap(),
        "--all-nodes",
    ];
    let o = configure(&s.image, &[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "configure failed:\n{}", stderr(&o));
    check_json("configure-report.schema.json", &o.stdout);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["kept"], serde_json::json!([trial.0]), "{report}");
    let new = node_files(&s.image, s.boot.0).unwrap();
    assert_eq!(coherent_card(&new).unwrap().len(), 2);
    assert_eq!(
        new.get(trial.0),
        Some(&trial.1),
        "configure dropped the trial"
    );
    let part = s.dir.join("part.img");
    extract_sparse(&s.image, s.boot.0, s.boot.1, &part);
    let f = Fsck::run(&part, &["-n", "-v"]);
    assert!(
        f.clean(),
        "fsck.fat after a whole configure: {:?}\n{}",
        f.complaints(),
        f.text
    );

    let img = s.image.to_str().unwrap();
    let mut points = Vec::new();
    let mut bad = Vec::new();
    for n in 1.. {
        assert!(n < 5000, "configure never finished under strace");
        std::fs::copy(&pristine, &s.image).unwrap();
        let o = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e"])
            .arg(format!("inject=write,pwrite64:signal=SIGKILL:when={n}"))
            .arg(bin())
            .arg("configure")
            .arg(img)
            .args(args)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .output()
            .unwrap();
        let killed = !o.status.success();
        let files = node_files(&s.image, s.boot.0);
        let state = match &files {
            Ok(f) if *f == old => Ok("old".to_string()),
            Ok(f) if *f == new => Ok("new".to_string()),
            Ok(f) => match coherent_card(f) {
                Ok(_) => Err("coherent but neither the old nor the new files".to_string()),
                Err(e) => Err(e),
            },
            Err(e) => Err(format!("unreadable: {e}")),
        };
        extract_sparse(&s.image, s.boot.0, s.boot.1, &part);
        let fsck = Fsck::run(&part, &["-n"]);
        let mut problems = Vec::new();
        if let Err(e) = &state {
            problems.push(e.clone());
        }
        if !fsck.clean() {
            // Clusters allocated but not (yet, or any more) in a directory are the one
            // state FAT cannot avoid between two writes; fsck.fat -a frees them, and the
            // config must still be whole after it.
            let only_lost = fsck.code != 0
                && fsck
                    .complaints()
                    .iter()
                    .all(|l| l.starts_with("Reclaimed ") && l.contains("unused cluster"));
            if only_lost {
                let repaired = Fsck::run(&part, &["-a"]);
                let again = Fsck::run(&part, &["-n"]);
                let whole = node_files(&part, 0)
                    .map(|f| f == old || f == new)
                    .unwrap_or(false);
                if !again.clean() || !whole {
                    problems.push(format!(
                        "fsck.fat -a did not leave a clean card with a whole config:\n{}{}",
                        repaired.text, again.text
                    ));
                }
            } else {
                problems.push(format!("fsck.fat -n: {}", fsck.text.trim()));
            }
        }
        // inspect reads every kill point's card.
        let i = edgeimg(&["inspect", "--json", img]);
        if !i.status.success() {
            problems.push(format!("inspect failed: {}", stderr(&i)));
        }
        let point = KillPoint {
            n,
            state: state.clone().unwrap_or_else(|e| e),
            fsck: fsck.complaints(),
        };
        if !problems.is_empty() {
            bad.push(format!("kill before write {n}: {}", problems.join("; ")));
        }
        points.push(point);
        if !killed {
            break;
        }
    }
    // The last run was not killed: it wrote everything.
    let kills = &points[..points.len() - 1];
    let total = kills.len();
    let count = |state: &str| kills.iter().filter(|p| p.state == state).count();
    let lost = kills.iter().filter(|p| !p.fsck.is_empty()).count();
    eprintln!(
        "configure killed at each of its {total} write system calls: {} left the old config, \
         {} the new one; fsck.fat -n found nothing at {} of them and only unused clusters at \
         {lost}; {:.1} s",
        count("old"),
        count("new"),
        total - lost,
        started.elapsed().as_secs_f64()
    );
    for p in points.iter().filter(|p| !p.fsck.is_empty()) {
        eprintln!(
            "  write {}: {} config, fsck.fat: {:?}",
            p.n, p.state, p.fsck
        );
    }
    assert!(
        bad.is_empty(),
        "{} of {total} kill points left an incoherent card:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
