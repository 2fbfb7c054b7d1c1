//! FAT32 writer and editor checked by tools edgeimg did not write: `fsck.fat` (dosfstools),
//! `mdir`/`mcopy`/`minfo` (mtools) and `mkfs.vfat`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::layout::{Geometry, SECTOR};
use super::*;
use crate::tree::{Kind, Tree, TreePath};

const MIB: u64 = 1024 * 1024;
const MTIME: u64 = 1_700_000_000;

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "this test needs `{tool}` on PATH (apt-get install dosfstools mtools)"
    );
}

/// Deterministic filler bytes.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A boot-partition-like tree with every shape the writer must get right.
fn boot_tree() -> Tree {
    let mut t = Tree::new();
    t.add_file("EFI/BOOT/BOOTX64.EFI", bytes(70_000, 1), 0o644)
        .unwrap();
    t.add_file(
        "loader/loader.conf",
        b"default edge.conf\ntimeout 0\neditor no\n".to_vec(),
        0o644,
    )
    .unwrap();
    t.add_file(
        "loader/entries/edgeimg.conf",
        b"title edgeimg\nlinux /vmlinuz\ninitrd /initrd.img\n".to_vec(),
        0o644,
    )
    .unwrap();
    t.add_file("vmlinuz", bytes(300_001, 2), 0o644).unwrap();
    t.add_file("empty", Vec::<u8>::new(), 0o644).unwrap();
    t.add_file("one-cluster.bin", bytes(512, 3), 0o644).unwrap();
    t.add_file("README.TXT", b"exact 8.3 name\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("readme-long.txt", b"long name\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("bcm2711-rpi-4-b.dtb", bytes(50_000, 4), 0o644)
        .unwrap();
    t.add_file("A Name With Spaces (1).txt", b"spaces\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("grüße.txt", "unicode\n".as_bytes().to_vec(), 0o644)
        .unwrap();
    t.add_file(".hidden", b"dot\n".to_vec(), 0o644).unwrap();
    // Names differing only in case, each in its own directory (FAT is case-insensitive).
    t.add_file("case/upper/CONFIG.TXT", b"upper\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("case/lower/config.txt", b"lower\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("case/mixed/Config.Txt", b"mixed\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("deep/a/b/c/d/e/f/leaf.txt", b"leaf\n".to_vec(), 0o644)
        .unwrap();
    t.add_dir("empty-dir", 0o755).unwrap();
    for i in 0..300 {
        t.add_file(
            &format!("overlays/overlay-number-{i:03}.dtbo"),
            bytes(i * 7, i as u32),
            0o644,
        )
        .unwrap();
    }
    t
}

fn params(size: u64, hidden_sectors: u32) -> FatParams {
    FatParams {
        size,
        volume_id: 0x1234_ABCD,
        label: "edgeboot".into(),
        hidden_sectors,
        mtime: MTIME,
    }
}

/// A sparse image of `len` bytes.
fn sparse_image(dir: &Path, name: &str, len: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(len).unwrap();
    path
}

fn write_image(tree: &Tree, path: &Path, p: &FatParams, base: u64) -> FatStats {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    write_fat32(tree, p, &mut f, base).unwrap()
}

/// fsck.fat has no offset option: check a partition at `base` through a sparse copy of it.
fn fsck_clean(image: &Path, base: u64, size: u64) {
    let (clean, text) = fsck_report(image, base, size);
    assert!(clean, "fsck.fat finds problems:\n{text}");
}

/// Runs `fsck.fat -n -v`; true when it exits 0 and reports nothing it would fix.
fn fsck_report(image: &Path, base: u64, size: u64) -> (bool, String) {
    require("fsck.fat");
    let dir = tempfile::tempdir().unwrap();
    let part = if base == 0 {
        image.to_path_buf()
    } else {
        let part = sparse_image(dir.path(), "part.img", size);
        let mut src = File::open(image).unwrap();
        let mut dst = OpenOptions::new().write(true).open(&part).unwrap();
        src.seek(SeekFrom::Start(base)).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        let mut at = 0;
        while at < size {
            let n = buf.len().min((size - at) as usize);
            src.read_exact(&mut buf[..n]).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                dst.seek(SeekFrom::Start(at)).unwrap();
                dst.write_all(&buf[..n]).unwrap();
            }
            at += n as u64;
        }
        part
    };
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg("-v")
        .arg(&part)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // fsck.fat -n exits 0 for some problems it only reports ("Wrong checksum ... Not
    // auto-correcting this"), so its words count too.
    let complaints = [
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
    ];
    let lower = text.to_lowercase();
    let clean = out.status.success() && !complaints.iter().any(|c| lower.contains(c));
    (clean, text)
}

fn mtools(tool: &str, image: &Path, base: u64, args: &[&str]) -> Vec<u8> {
    require(tool);
    let target = if base == 0 {
        image.display().to_string()
    } else {
        format!("{}@@{base}", image.display())
    };
    let out = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&target)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every path mtools sees, as "/a/b" (directories without a trailing slash).
fn mdir_paths(image: &Path, base: u64) -> Vec<String> {
    let out = String::from_utf8(mtools("mdir", image, base, &["-/", "-b", "::"])).unwrap();
    out.lines()
        .map(|l| l.trim_start_matches("::").trim_end_matches('/').to_string())
        .collect()
}

fn mcopy_out(image: &Path, base: u64, path: &str) -> Vec<u8> {
    mtools("mcopy", image, base, &["-n", &format!("::{path}"), "-"])
}

/// Checks that mtools lists exactly the tree and returns every file's bytes.
fn assert_mtools_sees(tree: &Tree, image: &Path, base: u64) {
    let mut listed = mdir_paths(image, base);
    listed.sort();
    let mut expected: Vec<String> = tree
        .iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, _)| p.absolute())
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    // One recursive mcopy for the whole volume, then every file compared.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("{}/", out.path().display());
    mtools("mcopy", image, base, &["-s", "-n", "::*", &dest]);
    for (path, entry) in tree.iter() {
        if let Kind::File(c) = &entry.kind {
            let got = std::fs::read(out.path().join(path.as_str()))
                .unwrap_or_else(|e| panic!("mcopy gave no {path}: {e}"));
            assert!(
                got[..] == c.read_all().unwrap()[..],
                "content of {path} differs"
            );
        }
    }
}

#[test]
fn written_volume_passes_fsck_and_mtools_at_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (base, size) = (MIB, 40 * MIB);
    let image = sparse_image(dir.path(), "disk.img", base + size + MIB);
    let tree = boot_tree();
    let stats = write_image(&tree, &image, &params(size, (base / SECTOR) as u32), base);
    assert!(stats.clusters_total >= 65525);
    fsck_clean(&image, base, size);
    assert_mtools_sees(&tree, &image, base);

    let info = String::from_utf8(mtools("minfo", &image, base, &["::"])).unwrap();
    assert!(info.contains("disk type=\"FAT32   \""), "{info}");
    assert!(info.contains("disk label=\"EDGEBOOT   \""), "{info}");
    assert!(info.contains("hidden sectors: 2048"), "{info}");
    assert!(
        info.contains(&format!(
            "free clusters={}",
            stats.clusters_total - stats.clusters_used
        )),
        "{info}"
    );
    // The 300-entry directory spans several clusters and keeps tree order.
    let listing = String::from_utf8(mtools("mdir", &image, base, &["::/overlays"])).unwrap();
    assert!(listing.contains("overlay-number-299.dtbo"));
}

#[test]
fn a_volume_at_offset_zero_and_structure_details() {
    let dir = tempfile::tempdir().unwrap();
    let size = 34 * MIB;
    let image = sparse_image(dir.path(), "part.img", size);
    let tree = boot_tree();
    write_image(&tree, &image, &params(size, 0), 0);
    fsck_clean(&image, 0, size);
    assert_mtools_sees(&tree, &image, 0);

    let mut vol = FatVolume::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(vol.label(), "EDGEBOOT");
    assert_eq!(vol.volume_id(), 0x1234_ABCD);
    assert_eq!(
        vol.clusters_of("/").unwrap()[0],
        2,
        "root directory in cluster 2"
    );
    // Raw check of the first subdirectory: `.` and `..` first, `..` -> 0 for a first-level dir.
    let efi = vol.clusters_of("EFI").unwrap()[0];
    let boot = vol.clusters_of("EFI/BOOT").unwrap()[0];
    let geom = Geometry::for_size(size).unwrap();
    let mut f = File::open(&image).unwrap();
    let mut raw = [0u8; 64];
    f.seek(SeekFrom::Start(geom.cluster_offset(efi))).unwrap();
    f.read_exact(&mut raw).unwrap();
    assert_eq!(&raw[..11], b".          ");
    assert_eq!(&raw[32..43], b"..         ");
    assert_eq!(
        u16::from_le_bytes([raw[58], raw[59]]),
        0,
        "`..` of a first-level dir is cluster 0"
    );
    f.seek(SeekFrom::Start(geom.cluster_offset(boot) + 32))
        .unwrap();
    f.read_exact(&mut raw[..32]).unwrap();
    assert_eq!(
        u32::from(u16::from_le_bytes([raw[26], raw[27]])),
        efi,
        "`..` of EFI/BOOT is EFI"
    );
    // Files are contiguous.
    let chain = vol.clusters_of("vmlinuz").unwrap();
    assert_eq!(chain.len(), 300_001usize.div_ceil(512));
    assert!(chain.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(vol.clusters_of("empty").unwrap().is_empty());
    assert_eq!(vol.clusters_of("one-cluster.bin").unwrap().len(), 1);
    // Reading back gives the same tree.
    let back = vol.read_tree().unwrap();
    let names = |t: &Tree| {
        t.iter()
            .map(|(p, _)| p.as_str().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&back), names(&tree));
    for (p, e) in tree.iter() {
        if let Kind::File(c) = &e.kind {
            assert_eq!(back.read(p.as_str()).unwrap(), c.read_all().unwrap(), "{p}");
        }
        assert_eq!(
            back.get_path(p).unwrap().mtime,
            if p.is_root() { 0 } else { MTIME },
            "{p}"
        );
    }
    let root = vol.list("/").unwrap();
    assert!(root.contains(&DirEntryInfo {
        name: "grüße.txt".into(),
        is_dir: false,
        size: 8
    }));
    assert!(root.contains(&DirEntryInfo {
        name: "EFI".into(),
        is_dir: true,
        size: 0
    }));
    assert_eq!(vol.list("overlays").unwrap().len(), 300);
    assert_eq!(
        vol.read_file("efi/boot/bootx64.efi").unwrap().unwrap(),
        bytes(70_000, 1),
        "case-insensitive"
    );
    assert_eq!(
        vol.read_file("README~1.TXT").unwrap().unwrap(),
        b"long name\n",
        "by short name"
    );
    assert!(vol.read_file("nope").unwrap().is_none());
    assert!(matches!(
        vol.list("vmlinuz"),
        Err(FatError::NotADirectory(_))
    ));
}

#[test]
fn writes_are_deterministic_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    let a = sparse_image(dir.path(), "a.img", size);
    let b = sparse_image(dir.path(), "b.img", size);
    let tree = boot_tree();
    let stats = write_image(&tree, &a, &params(size, 0), 0);
    write_image(&tree, &b, &params(size, 0), 0);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "two writes differ"
    );
    let allocated = std::fs::metadata(&a).unwrap().blocks() * 512;
    assert!(
        allocated < 4 * MIB,
        "{allocated} bytes allocated for a 256 MiB volume"
    );
    assert!(stats.bytes_written < 2 * MIB, "{stats:?}");
    fsck_clean(&a, 0, size);
}

#[test]
fn refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(dir.path(), "x.img", 64 * MIB);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();

    let err = write_fat32(&Tree::new(), &params(16 * MIB, 0), &mut f, 0).unwrap_err();
    assert!(matches!(err, FatError::TooSmall { .. }), "{err}");
    assert!(err.to_string().contains(&(16 * MIB).to_string()));

    let mut big = Tree::new();
    big.add_file("kernel", vec![1u8; 40 * MIB as usize], 0o644)
        .unwrap();
    let err = write_fat32(&big, &params(36 * MIB, 0), &mut f, 0).unwrap_err();
    assert!(matches!(err, FatError::ContentTooBig { .. }), "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");

    let mut link = Tree::new();
    link.add_symlink("boot/current", "vmlinuz").unwrap();
    let err = write_fat32(&link, &params(40 * MIB, 0), &mut f, 0).unwrap_err();
    assert!(err.to_string().contains("/boot/current"), "{err}");

    let mut case = Tree::new();
    case.add_file("cfg/Readme.txt", b"1".to_vec(), 0o644)
        .unwrap();
    case.add_file("cfg/README.TXT", b"2".to_vec(), 0o644)
        .unwrap();
    let err = write_fat32(&case, &params(40 * MIB, 0), &mut f, 0).unwrap_err();
    assert!(matches!(err, FatError::CaseConflict { .. }), "{err}");

    let mut bad = Tree::new();
    bad.add_file("a:b", b"".to_vec(), 0o644).unwrap();
    assert!(matches!(
        write_fat32(&bad, &params(40 * MIB, 0), &mut f, 0),
        Err(FatError::InvalidName { .. })
    ));
    let mut p = params(40 * MIB, 0);
    p.label = "much too long label".into();
    assert!(matches!(
        write_fat32(&Tree::new(), &p, &mut f, 0),
        Err(FatError::InvalidLabel(_))
    ));
}

/// Byte ranges (offset, len) of the given clusters.
fn cluster_ranges(geom: &Geometry, clusters: &[u32]) -> Vec<(u64, u64)> {
    clusters
        .iter()
        .map(|&c| (geom.cluster_offset(c), geom.cluster_bytes()))
        .collect()
}

/// Asserts that every byte that differs between `before` and `after` lies in the FATs, the
/// FSInfo sector or one of `allowed` ranges.
fn assert_changes_within(
    before: &[u8],
    after: &[u8],
    base: u64,
    geom: &Geometry,
    allowed: &[(u64, u64)],
) {
    assert_eq!(before.len(), after.len());
    let fats = (base + geom.fat_offset(0), base + geom.data_offset());
    let fsinfo = (base + SECTOR, base + 2 * SECTOR);
    for (i, (x, y)) in before.iter().zip(after).enumerate() {
        if x == y {
            continue;
        }
        let i = i as u64;
        let ok = (fats.0..fats.1).contains(&i)
            || (fsinfo.0..fsinfo.1).contains(&i)
            || allowed
                .iter()
                .any(|(o, l)| (base + o..base + o + l).contains(&i));
        assert!(
            ok,
            "byte {i} (volume offset {}) changed outside the edited regions",
            i - base
        );
    }
}

#[test]
fn edits_keep_the_volume_clean_and_touch_only_what_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let (base, size) = (MIB, 40 * MIB);
    let image = sparse_image(dir.path(), "disk.img", base + size);
    let mut tree = boot_tree();
    write_image(&tree, &image, &params(size, (base / SECTOR) as u32), base);
    let geom = Geometry::for_size(size).unwrap();
    let open = || {
        FatVolume::open(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&image)
                .unwrap(),
            base,
        )
        .unwrap()
    };

    // 1. Replace a file with a bigger one.
    let before = std::fs::read(&image).unwrap();
    let mut vol = open();
    vol.set_mtime(MTIME + 100);
    let free_before = vol.clusters_free();
    let bigger = bytes(9_000, 9);
    vol.write_file("/loader/entries/edgeimg.conf", &bigger)
        .unwrap();
    assert_eq!(vol.clusters_free(), free_before - 18 + 1);
    let mut allowed = cluster_ranges(&geom, &vol.clusters_of("loader/entries").unwrap());
    allowed.extend(cluster_ranges(
        &geom,
        &vol.clusters_of("loader/entries/edgeimg.conf").unwrap(),
    ));
    drop(vol);
    let after = std::fs::read(&image).unwrap();
    assert_changes_within(&before, &after, base, &geom, &allowed);
    fsck_clean(&image, base, size);
    tree.add_file("loader/entries/edgeimg.conf", bigger.clone(), 0o644)
        .unwrap();
    assert_eq!(
        mcopy_out(&image, base, "/loader/entries/edgeimg.conf"),
        bigger
    );

    // 2. Add a file in new nested directories, with a long name.
    let mut vol = open();
    vol.set_mtime(MTIME + 200);
    vol.write_file("edgeimg/node/Node Config.toml", b"hostname = \"edge-1\"\n")
        .unwrap();
    vol.write_file("EDGEIMG/node/token", b"secret-token")
        .unwrap();
    drop(vol);
    fsck_clean(&image, base, size);
    tree.add_file(
        "edgeimg/node/Node Config.toml",
        b"hostname = \"edge-1\"\n".to_vec(),
        0o644,
    )
    .unwrap();
    tree.add_file("edgeimg/node/token", b"secret-token".to_vec(), 0o644)
        .unwrap();
    assert_mtools_sees(&tree, &image, base);

    // 3. Remove a file (long name) and a directory with content.
    let before = std::fs::read(&image).unwrap();
    let mut vol = open();
    let root_dir = cluster_ranges(&geom, &vol.clusters_of("/").unwrap());
    assert!(vol.remove("/readme-long.txt").unwrap());
    assert!(vol.remove("deep").unwrap());
    assert!(!vol.remove("/not-there").unwrap());
    drop(vol);
    let after = std::fs::read(&image).unwrap();
    assert_changes_within(&before, &after, base, &geom, &root_dir);
    fsck_clean(&image, base, size);
    tree.remove("readme-long.txt");
    tree.remove("deep");
    assert_mtools_sees(&tree, &image, base);

    // 4. Fill the 300-entry directory's gaps and grow it; then read everything back.
    let mut vol = open();
    assert!(vol.remove("overlays/overlay-number-100.dtbo").unwrap());
    for i in 0..40 {
        let data = bytes(1000 + i, 77);
        vol.write_file(&format!("overlays/added overlay {i}.dtbo"), &data)
            .unwrap();
        tree.add_file(&format!("overlays/added overlay {i}.dtbo"), data, 0o644)
            .unwrap();
    }
    tree.remove("overlays/overlay-number-100.dtbo");
    assert_eq!(vol.list("overlays").unwrap().len(), 339);
    drop(vol);
    fsck_clean(&image, base, size);
    assert_mtools_sees(&tree, &image, base);

    // The same edits on the same image give the same bytes.
    let copy = dir.path().join("copy.img");
    std::fs::copy(&image, &copy).unwrap();
    for img in [&image, &copy] {
        let mut v = FatVolume::open(
            OpenOptions::new().read(true).write(true).open(img).unwrap(),
            base,
        )
        .unwrap();
        v.set_mtime(MTIME);
        v.write_file("cmdline.txt", b"console=ttyS1,115200 rootwait")
            .unwrap();
    }
    assert_eq!(
        std::fs::read(&image).unwrap(),
        std::fs::read(&copy).unwrap()
    );
}

#[test]
fn edits_a_volume_made_by_mkfs_vfat_and_mtools() {
    require("mkfs.vfat");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("mkfs.img");
    let out = Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "BOOT", "-i", "0badf00d", "-C"])
        .arg(&image)
        .arg("65536")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = dir.path().join("config.txt");
    std::fs::write(&host, b"arm_64bit=1\nenable_uart=1\n").unwrap();
    mtools("mmd", &image, 0, &["::/overlays"]);
    mtools(
        "mcopy",
        &image,
        0,
        &[host.to_str().unwrap(), "::/config.txt"],
    );
    mtools(
        "mcopy",
        &image,
        0,
        &[
            host.to_str().unwrap(),
            "::/overlays/Some Long Overlay Name.dtbo",
        ],
    );

    let mut vol = FatVolume::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(vol.label(), "BOOT");
    assert_eq!(vol.volume_id(), 0x0bad_f00d);
    assert_eq!(
        vol.read_file("CONFIG.TXT").unwrap().unwrap(),
        b"arm_64bit=1\nenable_uart=1\n"
    );
    assert_eq!(
        vol.read_file("overlays/some long overlay name.dtbo")
            .unwrap()
            .unwrap()
            .len(),
        26
    );
    let big = bytes(123_456, 5);
    vol.write_file("config.txt", &big).unwrap();
    vol.write_file("cmdline.txt", b"console=tty0 rootwait\n")
        .unwrap();
    vol.write_file("edgeimg/node.env", b"HOSTNAME=edge-1\n")
        .unwrap();
    assert!(vol.remove("overlays/Some Long Overlay Name.dtbo").unwrap());
    let tree = vol.read_tree().unwrap();
    drop(vol);
    fsck_clean(&image, 0, 65536 * 1024);
    assert_eq!(mcopy_out(&image, 0, "/config.txt"), big);
    assert_eq!(
        mcopy_out(&image, 0, "/cmdline.txt"),
        b"console=tty0 rootwait\n"
    );
    assert_eq!(
        mcopy_out(&image, 0, "/edgeimg/node.env"),
        b"HOSTNAME=edge-1\n"
    );
    let mut listed = mdir_paths(&image, 0);
    listed.sort();
    assert_eq!(
        listed,
        [
            "/cmdline.txt",
            "/config.txt",
            "/edgeimg",
            "/edgeimg/node.env",
            "/overlays"
        ]
    );
    assert!(tree.get("overlays").is_some_and(|e| e.is_dir()));
    assert_eq!(
        tree.get_path(&TreePath::new("edgeimg/node.env").unwrap())
            .map(|e| e.mode),
        Some(0o644)
    );
}

#[test]
fn open_refuses_what_is_not_fat32() {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(dir.path(), "zero.img", 4 * MIB);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    assert!(matches!(FatVolume::open(f, 0), Err(FatError::NotFat32(_))));
    require("mkfs.vfat");
    let fat16 = dir.path().join("fat16.img");
    let out = Command::new("mkfs.vfat")
        .args(["-F", "16", "-C"])
        .arg(&fat16)
        .arg("32768")
        .output()
        .unwrap();
    assert!(out.status.success());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fat16)
        .unwrap();
    let err = FatVolume::open(f, 0).err().expect("FAT16 must be refused");
    assert!(err.to_string().contains("FAT12/16"), "{err}");
}

#[test]
fn the_fsck_check_catches_damage() {
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB;
    let image = sparse_image(dir.path(), "part.img", size);
    let tree = boot_tree();
    write_image(&tree, &image, &params(size, 0), 0);
    let (clean, text) = fsck_report(&image, 0, size);
    assert!(
        clean && text.contains("Checking free cluster summary"),
        "{text}"
    );
    let geom = Geometry::for_size(size).unwrap();
    let pristine = std::fs::read(&image).unwrap();
    let damage = |at: u64, byte: u8| {
        let mut img = pristine.clone();
        img[at as usize] ^= byte;
        std::fs::write(&image, &img).unwrap();
        fsck_report(&image, 0, size)
    };
    // The FSInfo free count, an entry of the second FAT, and a long-name checksum.
    for (at, what) in [
        (SECTOR + 488, "FSInfo free count"),
        (geom.fat_offset(1) + 4 * 40, "second FAT"),
        (geom.cluster_offset(2) + 32 + 13, "LFN checksum"),
    ] {
        let (clean, text) = damage(at, 0x01);
        assert!(!clean, "fsck.fat misses damage to the {what}:\n{text}");
    }
}

#[test]
fn failed_edits_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let size = Geometry::min_size();
    let image = sparse_image(dir.path(), "small.img", size);
    let mut tree = Tree::new();
    tree.add_file("big.bin", bytes(30 * MIB as usize, 6), 0o644)
        .unwrap();
    tree.add_file("dir/file", b"x".to_vec(), 0o644).unwrap();
    write_image(&tree, &image, &params(size, 0), 0);
    let before = std::fs::read(&image).unwrap();
    let mut vol = FatVolume::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap(),
        0,
    )
    .unwrap();
    let free = vol.clusters_free() as usize;
    let too_big = bytes((free + 1) * 512, 7);
    let err = vol.write_file("new/dir/too-big.bin", &too_big).unwrap_err();
    assert!(matches!(err, FatError::VolumeFull { .. }), "{err}");
    let err = vol.write_file("dir/file/below", b"y").unwrap_err();
    assert!(matches!(err, FatError::NotADirectory(_)), "{err}");
    let err = vol.write_file("dir", b"y").unwrap_err();
    assert!(matches!(err, FatError::IsADirectory(_)), "{err}");
    let err = vol.write_file("bad|name", b"y").unwrap_err();
    assert!(matches!(err, FatError::InvalidName { .. }), "{err}");
    drop(vol);
    assert!(
        std::fs::read(&image).unwrap() == before,
        "a refused edit changed the image"
    );
    // Replacing the big file with one just as big fits: its own clusters are reused.
    let mut vol = FatVolume::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap(),
        0,
    )
    .unwrap();
    vol.write_file("BIG.BIN", &bytes(30 * MIB as usize, 8))
        .unwrap();
    drop(vol);
    fsck_clean(&image, 0, size);
    assert_eq!(
        mcopy_out(&image, 0, "/big.bin"),
        bytes(30 * MIB as usize, 8)
    );
}

#[test]
fn four_kib_clusters_and_host_file_content() {
    let dir = tempfile::tempdir().unwrap();
    let size = 1024 * MIB;
    let base = 4 * MIB;
    let image = sparse_image(dir.path(), "disk.img", base + size);
    let host = dir.path().join("kernel");
    std::fs::write(&host, bytes(1_000_000, 11)).unwrap();
    let mut tree = boot_tree();
    let kernel = crate::tree::Entry::file(
        crate::tree::Content::HostFile {
            path: host.clone(),
            size: 1_000_000,
        },
        0o644,
    );
    tree.insert(&TreePath::new("Image").unwrap(), kernel)
        .unwrap();
    let stats = write_image(&tree, &image, &params(size, (base / SECTOR) as u32), base);
    assert_eq!(Geometry::for_size(size).unwrap().cluster_bytes(), 4096);
    assert!(stats.clusters_total >= 65525);
    fsck_clean(&image, base, size);
    assert_mtools_sees(&tree, &image, base);

    let mut vol = FatVolume::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap(),
        base,
    )
    .unwrap();
    assert_eq!(vol.cluster_bytes(), 4096);
    for i in 0..120 {
        let name = format!("overlays/a very long overlay file name number {i} for growth.dtbo");
        vol.write_file(&name, &bytes(i, 12)).unwrap();
        tree.add_file(&name, bytes(i, 12), 0o644).unwrap();
    }
    vol.write_file("Image", &bytes(2_000_000, 13)).unwrap();
    tree.add_file("Image", bytes(2_000_000, 13), 0o644).unwrap();
    drop(vol);
    fsck_clean(&image, base, size);
    assert_mtools_sees(&tree, &image, base);

    // A host file that changed size since the tree was made is an error, not a wrong file.
    std::fs::write(&host, bytes(10, 11)).unwrap();
    let mut tree = Tree::new();
    let changed = crate::tree::Entry::file(
        crate::tree::Content::HostFile {
            path: host,
            size: 1_000_000,
        },
        0o644,
    );
    tree.insert(&TreePath::new("Image").unwrap(), changed)
        .unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let err = write_fat32(&tree, &params(size, 0), &mut f, base).unwrap_err();
    assert!(err.to_string().contains("/Image"), "{err}");
}

/// Sets the FAT entry of `cluster` to `value` in both copies of a volume at offset 0.
fn patch_fat(image: &Path, geom: &Geometry, cluster: u32, value: u32) {
    let mut f = OpenOptions::new().write(true).open(image).unwrap();
    for copy in 0..2 {
        f.seek(SeekFrom::Start(
            geom.fat_offset(copy) + 4 * u64::from(cluster),
        ))
        .unwrap();
        f.write_all(&value.to_le_bytes()).unwrap();
    }
}

#[test]
fn walks_refuse_loops_cross_links_and_a_volume_past_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB;
    let image = sparse_image(dir.path(), "v.img", size);
    let mut tree = Tree::new();
    tree.add_file("a/b/file", bytes(1500, 1), 0o644).unwrap();
    tree.add_file("c.txt", bytes(600, 2), 0o644).unwrap();
    write_image(&tree, &image, &params(size, 0), 0);
    let geom = Geometry::for_size(size).unwrap();
    let pristine = std::fs::read(&image).unwrap();
    let open = || {
        FatVolume::open(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&image)
                .unwrap(),
            0,
        )
        .unwrap()
    };
    let file = open().clusters_of("a/b/file").unwrap();
    let c_txt = open().clusters_of("c.txt").unwrap();
    assert_eq!((file.len(), c_txt.len()), (3, 2));

    // A chain looping back: found at once, named, by the walk and by a read.
    patch_fat(&image, &geom, file[2], file[0]);
    let err = open().walk("").unwrap_err().to_string();
    assert!(err.contains("a/b/file") && err.contains("loops"), "{err}");
    let err = open().read_file("a/b/file").unwrap_err().to_string();
    assert!(err.contains("a/b/file"), "{err}");
    // A chain running into a free cluster.
    patch_fat(&image, &geom, file[1], 0);
    let err = open().walk("a").unwrap_err().to_string();
    assert!(err.contains("a/b/file") && err.contains("free"), "{err}");

    // Two entries sharing clusters: c.txt's entry pointing into a/b/file's chain.
    std::fs::write(&image, &pristine).unwrap();
    let root = {
        let mut b = vec![0u8; 512];
        let mut f = File::open(&image).unwrap();
        f.seek(SeekFrom::Start(geom.cluster_offset(2))).unwrap();
        f.read_exact(&mut b).unwrap();
        b
    };
    let slot = root
        .chunks_exact(32)
        .position(|e| &e[..11] == b"C       TXT")
        .unwrap();
    let mut f = OpenOptions::new().write(true).open(&image).unwrap();
    f.seek(SeekFrom::Start(
        geom.cluster_offset(2) + 32 * slot as u64 + 26,
    ))
    .unwrap();
    f.write_all(&(file[1] as u16).to_le_bytes()).unwrap();
    drop(f);
    let err = open().walk("").unwrap_err().to_string();
    assert!(
        err.contains("cross-linked") && err.contains("c.txt"),
        "{err}"
    );

    // A partition smaller than the volume: refused before the FAT is read.
    std::fs::write(&image, &pristine).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    match FatVolume::open_partition(&f, 0, size - MIB) {
        Err(e @ FatError::BeyondPartition { .. }) => {
            assert!(e.to_string().contains("sectors"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a volume larger than its partition was opened"),
    }
    assert!(FatVolume::open_partition(&f, 0, size).is_ok());

    // replace_dir: mtools and fsck.fat see the new tree, nothing of the old one.
    let mut vol = FatVolume::open_partition(&f, 0, size).unwrap();
    let mut new = Tree::new();
    new.add_file("x/long name.txt", bytes(2000, 3), 0o644)
        .unwrap();
    new.add_file("y", Vec::<u8>::new(), 0o644).unwrap();
    let mut barriers = 0;
    let stats = vol
        .replace_dir("a", &new, &mut || {
            barriers += 1;
            Ok(())
        })
        .unwrap();
    drop(vol);
    assert_eq!(barriers, 4);
    assert_eq!(stats.clusters_freed, 3 + 2);
    fsck_clean(&image, 0, size);
    let mut expected = Tree::new();
    expected.add_file("c.txt", bytes(600, 2), 0o644).unwrap();
    expected
        .add_file("a/x/long name.txt", bytes(2000, 3), 0o644)
        .unwrap();
    expected.add_file("a/y", Vec::<u8>::new(), 0o644).unwrap();
    assert_mtools_sees(&expected, &image, 0);
    // The old file's clusters were zeroed.
    let after = std::fs::read(&image).unwrap();
    for c in file {
        let at = geom.cluster_offset(c) as usize;
        assert!(after[at..at + 512].iter().all(|&b| b == 0), "cluster {c}");
    }
}
