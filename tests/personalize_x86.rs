//! Build once, personalize per node: `configure`, `inspect` and `flash` on an x86-64 image,
//! judged by mtools, fsck.fat, cmp, xz and a QEMU boot.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, SmokeOptions};

const NODE: &str = r#"
hostname = "as-built"

[time]
ntp = []
"#;

/// A join token of the real shape (configure checks it).
const TOKEN: &str = TEST_JOIN_TOKEN;

struct Built {
    _dir: tempfile::TempDir,
    image: PathBuf,
}

/// One worker image, built without xz (the flash test compresses it with the xz tool).
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = build_with_node(
            dir.path(),
            NODE,
            &["--board", "x86-64", "--role", "worker", "--no-xz"],
        );
        Built {
            image: out.join("x86-64-worker.img"),
            _dir: dir,
        }
    })
}

/// A sparse copy of the built image.
fn copy_image(to: &Path) {
    sparse_copy(&built().image, to);
}

/// (offset, size) of partition `n` as `sfdisk`-independent JSON from `edgeimg inspect`.
fn partition(img: &Path, n: u64) -> (u64, u64) {
    let j = inspect_json(img);
    let p = j["table"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"].as_u64() == Some(n))
        .unwrap()
        .clone();
    (
        p["start_lba"].as_u64().unwrap() * 512,
        p["size_lba"].as_u64().unwrap() * 512,
    )
}

fn inspect_json(img: &Path) -> serde_json::Value {
    let o = edgeimg(&["inspect", "--json", img.to_str().unwrap()]);
    assert!(o.status.success(), "inspect failed:\n{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn mtype(img: &Path, offset: u64, path: &str) -> String {
    let spec = format!("{}@@{offset}", img.display());
    let o = run_tool("mtype", &["-i", &spec, &format!("::{path}")]);
    assert!(
        o.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn mdir(img: &Path, offset: u64, dir: &str) -> String {
    let spec = format!("{}@@{offset}", img.display());
    stdout(&run_tool(
        "mdir",
        &["-i", &spec, "-/", "-b", &format!("::{dir}")],
    ))
}

/// Byte offsets (0-based) where two files differ, from `cmp -l`.
fn differing(a: &Path, b: &Path) -> Vec<u64> {
    let o = run_tool("cmp", &["-l", a.to_str().unwrap(), b.to_str().unwrap()]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .map(|n| n - 1)
        .collect()
}

fn fsck_fat(img: &Path, offset: u64, size: u64, scratch: &Path) {
    extract(img, offset, size, scratch);
    let o = run_tool("fsck.fat", &["-n", scratch.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "fsck.fat -n failed:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::remove_file(scratch).ok();
}

#[test]
fn configure_changes_only_the_node_files_and_inspect_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let before = dir.path().join("before.img");
    copy_image(&img);
    copy_image(&before);
    let (boot_off, boot_size) = partition(&img, 1);

    // A token file others can read: configure warns but goes on.
    let token = dir.path().join("pi-07.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = edgeimg(&[
        "configure",
        img.to_str().unwrap(),
        "--hostname",
        "pi-07",
        "--role",
        "controller+worker",
        "--token-file",
        token.to_str().unwrap(),
        "--label",
        "rack=r1",
        "--taint",
        "dedicated=edge:NoSchedule",
        "--address",
        "10.1.2.7/24",
        "--gateway",
        "10.1.2.1",
        "--dns",
        "10.1.2.1",
        "--no-ntp",
    ]);
    assert!(o.status.success(), "configure failed:\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("readable by group or others"),
        "no warning about the token file's mode:\n{}",
        stderr(&o)
    );

    // mtools (not edgeimg) reads the new node config.
    let env = mtype(&img, boot_off, "edgeimg/node.env");
    for want in [
        "NODE_HOSTNAME='pi-07'",
        "NODE_ROLE='controller+worker'",
        "NET_MODE='static'",
        "NET_ADDRESS='10.1.2.7/24'",
        "K0S_LABELS='rack=r1'",
        "HAS_TOKEN='1'",
    ] {
        assert!(env.contains(want), "node.env lacks {want}:\n{env}");
    }
    assert_eq!(mtype(&img, boot_off, "edgeimg/token").trim(), TOKEN);
    let listing = mdir(&img, boot_off, "edgeimg");
    assert!(listing.contains("node.toml"), "{listing}");
    assert!(
        !mtype(&img, boot_off, "edgeimg/node.toml").contains("as-built"),
        "the old node.toml is still there"
    );
    fsck_fat(&img, boot_off, boot_size, &dir.path().join("esp"));

    // Every other byte of the disk is unchanged: all differences lie in the boot partition.
    let diff = differing(&before, &img);
    assert!(!diff.is_empty());
    let outside: Vec<&u64> = diff
        .iter()
        .filter(|&&b| b < boot_off || b >= boot_off + boot_size)
        .collect();
    assert!(
        outside.is_empty(),
        "{} bytes changed outside the boot partition, first at {}",
        outside.len(),
        outside[0]
    );
    // ... and in the boot partition only FAT sectors, directory entries and the clusters of
    // the new files: a few KiB, not the boot files.
    assert!(
        diff.len() < 64 * 1024,
        "{} bytes changed in the boot partition",
        diff.len()
    );
    let esp_before = mtype(&before, boot_off, "loader/loader.conf");
    assert_eq!(esp_before, mtype(&img, boot_off, "loader/loader.conf"));

    // inspect round-trips what configure wrote and never shows the token.
    let o = edgeimg(&["inspect", "--json", img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains(TOKEN),
        "inspect printed the token's value"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["node"]["hostname"], "pi-07");
    assert_eq!(j["node"]["role"], "controller+worker");
    assert_eq!(j["node"]["token_present"], true);
    assert_eq!(j["node"]["env"]["K0S_TAINTS"], "dedicated=edge:NoSchedule");
    assert_eq!(j["root"]["compression"], "zstd");
    // The root summary agrees with unsquashfs.
    let listing = &j["root"]["listing"];
    assert_eq!(listing["build_env"]["EDGEIMG_ROLE"], "worker");
    assert_eq!(listing["build_env"]["K0S_VERSION"], K0S_VERSION);
    let (root_off, root_size) = partition(&img, 2);
    let sq = dir.path().join("root.squashfs");
    extract(&img, root_off, root_size, &sq);
    let lln = stdout(&run_tool("unsquashfs", &["-lln", sq.to_str().unwrap()]));
    let regular = lln.lines().filter(|l| l.starts_with('-')).count() as u64;
    assert_eq!(
        listing["files"].as_u64(),
        Some(regular),
        "file count differs from unsquashfs"
    );
    std::fs::remove_file(&sq).ok();
    let text = stdout(&edgeimg(&["inspect", img.to_str().unwrap()]));
    assert!(
        text.contains("join token present") && !text.contains(TOKEN),
        "{text}"
    );

    // Configuring again with a bad value changes nothing at all.
    let again = dir.path().join("again.img");
    std::fs::copy(&img, &again).unwrap();
    let o = edgeimg(&[
        "configure",
        img.to_str().unwrap(),
        "--hostname",
        "Not_Valid!",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hostname"), "{}", stderr(&o));
    assert!(
        differing(&again, &img).is_empty(),
        "a failed configure changed the image"
    );

    // An inventory node: defaults merged with its own table.
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        "[defaults]\nrole = \"worker\"\ntime = { ntp = [] }\nlabels = { site = \"hq\" }\n\n\
         [nodes.pi-09]\naddress = \"10.1.2.9/24\"\ngateway = \"10.1.2.1\"\nlabels = { rack = \"r2\" }\n",
    )
    .unwrap();
    let o = edgeimg(&[
        "configure",
        img.to_str().unwrap(),
        "--inventory",
        fleet.to_str().unwrap(),
        "--node-name",
        "pi-09",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let env = mtype(&img, boot_off, "edgeimg/node.env");
    for want in [
        "NODE_HOSTNAME='pi-09'",
        "NET_ADDRESS='10.1.2.9/24'",
        "K0S_LABELS='rack=r2,site=hq'",
    ] {
        assert!(env.contains(want), "node.env lacks {want}:\n{env}");
    }

    // A node file replacing everything: the token is gone, inspect says so.
    let node = dir.path().join("n.toml");
    std::fs::write(&node, "hostname = \"pi-08\"\n[time]\nntp = []\n").unwrap();
    let o = edgeimg(&[
        "configure",
        img.to_str().unwrap(),
        "--node",
        node.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = inspect_json(&img);
    assert_eq!(j["node"]["hostname"], "pi-08");
    assert_eq!(j["node"]["token_present"], false);
    assert!(!mdir(&img, boot_off, "edgeimg").contains("token"));
    fsck_fat(&img, boot_off, boot_size, &dir.path().join("esp"));
}

#[test]
fn flash_streams_xz_with_and_without_bmap_and_personalizes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = &built().image;
    // The .img.xz made by the xz tool, with the build's .bmap beside it.
    let xz = dir.path().join("x86-64-worker.img.xz");
    let o = std::process::Command::new("xz")
        .args(["-0", "-T2", "-c", raw.to_str().unwrap()])
        .stdout(std::fs::File::create(&xz).unwrap())
        .status()
        .expect("running xz");
    assert!(o.success());
    std::fs::copy(
        raw.with_file_name("x86-64-worker.bmap"),
        dir.path().join("x86-64-worker.bmap"),
    )
    .unwrap();

    // With the bmap: only mapped blocks written, the result equals the raw image.
    let t1 = dir.path().join("card1.img");
    let o = edgeimg(&[
        "flash",
        xz.to_str().unwrap(),
        "--device-file",
        t1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "flash failed:\n{}", stderr(&o));
    assert!(
        stdout(&o).contains("(bmap)") && stdout(&o).contains("verified"),
        "{}",
        stdout(&o)
    );
    let c = run_tool("cmp", &[raw.to_str().unwrap(), t1.to_str().unwrap()]);
    assert!(c.status.success(), "bmap flash differs: {}", stdout(&c));

    // Without the bmap, personalized at flash time: equal but for the boot partition, which
    // holds the new node; the token stays out of the manifest beside the image.
    let t2 = dir.path().join("card2.img");
    let token = dir.path().join("t");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = edgeimg(&[
        "flash",
        xz.to_str().unwrap(),
        "--device-file",
        t2.to_str().unwrap(),
        "--no-bmap",
        "--hostname",
        "flashed-1",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "flash failed:\n{}", stderr(&o));
    assert!(!stdout(&o).contains("(bmap)"), "{}", stdout(&o));
    let (boot_off, boot_size) = partition(&t2, 1);
    let diff = differing(raw, &t2);
    assert!(
        diff.iter()
            .all(|&b| b >= boot_off && b < boot_off + boot_size),
        "a no-bmap flash differs outside the boot partition"
    );
    assert_eq!(mtype(&t2, boot_off, "edgeimg/token").trim(), TOKEN);
    assert!(mtype(&t2, boot_off, "edgeimg/node.env").contains("NODE_HOSTNAME='flashed-1'"));
    let manifest = std::fs::read_to_string(raw.with_file_name("manifest.json")).unwrap();
    assert!(!manifest.contains(TOKEN));

    // A bmap that does not belong to the image is caught by its checksums.
    let bmap = dir.path().join("x86-64-worker.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    // A range checksum changed, and the file's own checksum recomputed so that it is valid.
    let own = text
        .split("<BmapFileChecksum>")
        .nth(1)
        .unwrap()
        .split("</BmapFileChecksum>")
        .next()
        .unwrap()
        .trim()
        .to_string();
    let zeroed = text.replacen(&own, &"0".repeat(64), 1);
    let at = zeroed.find("chksum=\"").unwrap() + 8;
    let mut zeroed = zeroed;
    let flipped = if &zeroed[at..at + 1] == "0" { "1" } else { "0" };
    zeroed.replace_range(at..at + 1, flipped);
    let tampered = zeroed.replacen(&"0".repeat(64), &sha256_hex(zeroed.as_bytes()), 1);
    std::fs::write(&bmap, &tampered).unwrap();
    let o = edgeimg(&[
        "flash",
        xz.to_str().unwrap(),
        "--device-file",
        dir.path().join("card3.img").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("do not match the bmap's checksum"),
        "{}",
        stderr(&o)
    );

    // inspect reads the .img.xz itself.
    let j = inspect_json(&xz);
    assert_eq!(j["node"]["hostname"], "as-built");
}

fn options(role: &str, hostname: &str, mac: &str) -> SmokeOptions {
    SmokeOptions {
        mac: Some(mac.into()),
        ..smoke_options(role, hostname)
    }
}

/// One card for a rack: a default node config plus per-MAC ones, written by `configure`;
/// two guests with different MACs boot copies of it and each comes up as itself.
#[test]
fn configured_image_boots_as_the_node_its_mac_selects() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rack.img");
    copy_image(&img);
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        r#"
[defaults]
time = { ntp = [] }

[nodes.rack-a]
mac = "52:54:00:0e:00:0a"
role = "single"
labels = { rack = "a" }

[nodes.rack-b]
mac = "52:54:00:0e:00:0b"
role = "controller"
"#,
    )
    .unwrap();
    let default = dir.path().join("default.toml");
    std::fs::write(
        &default,
        "hostname = \"fallback\"\n[k0s]\nrole = \"controller\"\n[time]\nntp = []\n",
    )
    .unwrap();
    let o = edgeimg(&[
        "configure",
        img.to_str().unwrap(),
        "--inventory",
        fleet.to_str().unwrap(),
        "--all-nodes",
        "--node",
        default.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "configure failed:\n{}", stderr(&o));
    let j = inspect_json(&img);
    assert_eq!(j["per_mac"]["52:54:00:0e:00:0a"]["hostname"], "rack-a");
    assert_eq!(j["per_mac"]["52:54:00:0e:00:0b"]["role"], "controller");
    assert_eq!(j["node"]["hostname"], "fallback");

    let spec = board_qemu("x86-64");
    // The guest whose MAC has a config of its own: the new hostname and role of configure.
    let a = qemu::smoke(
        &img,
        &spec,
        &options("single", "rack-a", "52:54:00:0e:00:0a"),
        &Silent,
    )
    .unwrap_or_else(|e| panic!("guest A did not come up as rack-a: {e:#}"));
    assert!(
        a.ready_line.contains("role=single hostname=rack-a"),
        "{}",
        a.ready_line
    );
    // A guest whose MAC has none: the default node config.
    let b = qemu::smoke(
        &img,
        &spec,
        &options("controller", "fallback", "52:54:00:0e:00:99"),
        &Silent,
    )
    .unwrap_or_else(|e| panic!("guest B did not come up with the default config: {e:#}"));
    assert!(
        b.ready_line.contains("role=controller hostname=fallback"),
        "{}",
        b.ready_line
    );
}

/// The device checks as the command line applies them, over a prepared sysfs-like tree (no
/// image is built and nothing is written: every case stops before opening a device). The
/// image is a small synthetic one: flash checks that it is a disk image before it asks.
#[test]
fn flash_lists_candidates_and_refuses_unsafe_devices() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    for (n, removable, model, serial) in [
        ("sda", "0", "Internal SSD", "SSD1"),
        ("sdb", "1", "Card Reader", "CARD42"),
        ("sdc", "1", "USB Stick", "STICK7"),
    ] {
        w(&format!("sys/block/{n}/size"), "3906250\n");
        w(&format!("sys/block/{n}/removable"), removable);
        w(&format!("sys/block/{n}/device/model"), model);
        w(&format!("sys/block/{n}/device/serial"), serial);
        w(&format!("sys/block/{n}/{n}1/partition"), "1\n");
    }
    w(
        "proc/self/mounts",
        "/dev/sda1 / ext4 rw 0 0\n/dev/sdc1 /media/stick vfat rw 0 0\n",
    );
    let img = root.join("x.img");
    disk_image(&img);
    let not_an_image = root.join("notes.img");
    std::fs::write(&not_an_image, b"not flashed").unwrap();
    let flash_from = |img: &Path, extra: &[&str]| {
        let mut args = vec![
            "flash",
            img.to_str().unwrap(),
            "--sys-root",
            root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        edgeimg(&args)
    };
    let flash = |extra: &[&str]| flash_from(&img, extra);
    let o = flash(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list = stdout(&o);
    assert!(
        list.contains("/dev/sdb Card Reader") && list.contains("CARD42"),
        "{list}"
    );
    assert!(!list.contains("sda") && !list.contains("sdc"), "{list}");
    // The same list under --json, as its schema describes it.
    let o = flash(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("flash.schema.json", &o.stdout);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = listed["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/dev/sdb"], "{listed}");
    assert_eq!(listed["candidates"][0]["serial"], "CARD42", "{listed}");
    for (dev, force, why) in [
        ("/dev/sda", true, "running system"),
        ("/dev/sdc", false, "mounted at /media/stick"),
        ("/dev/sdb1", false, "partition of /dev/sdb"),
        // Confirmation is required and there is no terminal: nothing is written.
        ("/dev/sdb", false, "pass --yes"),
    ] {
        let mut extra = vec!["--device", dev];
        if force {
            extra.push("--force");
        }
        let o = flash(&extra);
        assert!(!o.status.success(), "{dev} was accepted");
        assert!(stderr(&o).contains(why), "{dev}: {}", stderr(&o));
    }
    // What is not a disk image is refused before the question.
    let o = flash_from(&not_an_image, &["--device", "/dev/sdb"]);
    assert!(!o.status.success(), "a text file was accepted as an image");
    assert!(
        stderr(&o).contains("is not a disk image") && !stderr(&o).contains("--yes"),
        "{}",
        stderr(&o)
    );
}
