//! The dm-verity hash tree judged by Debian's `veritysetup` (cryptsetup-bin): it verifies the
//! tree edgeimg writes, computes the same root hash itself, and rejects a flipped data byte.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use edgeimg::fs::verity::write_tree;

/// A partition-like file: `offset` bytes of something else, then data, then room for the tree.
fn sample(data_size: usize) -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let offset = 3 * 4096u64;
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0x55u8; offset as usize]).unwrap();
    let mut x = 0x1234_5678u32;
    let data: Vec<u8> = (0..data_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    f.write_all(&data).unwrap();
    // Garbage where the padding and the tree go: edgeimg must overwrite it.
    f.write_all(&vec![0xeeu8; 1 << 20]).unwrap();
    drop(f);
    (dir, path, offset)
}

fn veritysetup(args: &[&str]) -> std::process::Output {
    need("veritysetup");
    std::process::Command::new("veritysetup")
        .args(args)
        .output()
        .expect("running veritysetup")
}

#[test]
fn veritysetup_verifies_the_tree_and_finds_the_same_root_hash() {
    // 700 blocks and a bit: two levels, a partial last block.
    let size = 700 * 4096 + 1000;
    let (_d, path, offset) = sample(size);
    let salt = [0xa5u8; 32];
    let uuid = *b"0123456789abcdef";
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (info, _) = write_tree(&mut f, offset, size as u64, &salt, uuid).unwrap();
    drop(f);
    assert_eq!(info.data_blocks, 701);
    // veritysetup reads a device from its start: cut the partition out.
    let part = path.with_extension("part");
    let all = std::fs::read(&path).unwrap();
    std::fs::write(&part, &all[offset as usize..]).unwrap();
    let p = part.to_str().unwrap();
    let ho = format!("--hash-offset={}", info.hash_offset);
    let v = veritysetup(&["verify", p, p, &info.root_hash, &ho, "-v"]);
    assert!(
        v.status.success(),
        "veritysetup verify: {}{}",
        stdout(&v),
        stderr(&v)
    );
    let dump = veritysetup(&["dump", p, &ho]);
    let dump_text = stdout(&dump);
    assert!(dump.status.success(), "{}", stderr(&dump));
    assert!(
        dump_text.contains("Data blocks:    \t701") || dump_text.contains("701"),
        "{dump_text}"
    );
    assert!(dump_text.contains(&info.salt), "{dump_text}");

    // veritysetup computes the tree itself from the same data, salt and uuid: same root hash.
    let other = path.with_extension("hash");
    std::fs::write(&other, b"").unwrap();
    let data_copy = path.with_extension("data");
    std::fs::write(
        &data_copy,
        &all[offset as usize..offset as usize + 701 * 4096],
    )
    .unwrap();
    let f = veritysetup(&[
        "format",
        data_copy.to_str().unwrap(),
        other.to_str().unwrap(),
        &format!("--salt={}", info.salt),
        "--uuid=30313233-3435-3637-3839-616263646566",
        "--data-blocks=701",
    ]);
    assert!(f.status.success(), "veritysetup format: {}", stderr(&f));
    let out = stdout(&f);
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in {out}"))
        .trim();
    assert_eq!(root, info.root_hash);
    assert_eq!(info.uuid, "30313233-3435-3637-3839-616263646566");

    // One flipped byte in the data area: verification fails.
    let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.seek(SeekFrom::Start(123_457)).unwrap();
    f.write_all(&[all[offset as usize + 123_457] ^ 0x01])
        .unwrap();
    drop(f);
    let v = veritysetup(&["verify", p, p, &info.root_hash, &ho]);
    assert!(!v.status.success(), "a flipped byte passed verification");
}

// --- at boot: the initramfs opens the root through dm-verity ------------------------------

const NODE: &str = r#"
hostname = "verity-1"
[k0s]
role = "worker"
[time]
ntp = []
"#;

fn boot_options() -> edgeimg::qemu::SmokeOptions {
    edgeimg::qemu::SmokeOptions {
        timeout: std::time::Duration::from_secs(300),
        ..smoke_options("worker", "verity-1")
    }
}

/// A copy of `image` with the byte at `offset` (from the start of the image) inverted.
fn tampered_copy(image: &std::path::Path, to: &std::path::Path, offset: u64) {
    sparse_copy(image, to);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(to)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[!b[0]]).unwrap();
}

/// Boots `image` until the initramfs reports a failure; returns the console.
fn boot_until_failure(image: &std::path::Path) -> Vec<String> {
    let r = edgeimg::qemu::smoke_until(
        image,
        &board_qemu("x86-64"),
        &boot_options(),
        edgeimg::qemu::FAILED_MARKER,
        &edgeimg::progress::Silent,
    )
    .unwrap_or_else(|e| panic!("the tampered image did not stop with a failure: {e:#}"));
    r.console
}

#[test]
fn a_flipped_root_byte_stops_the_boot_at_dm_verity() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let out = build_with_node(
        dir.path(),
        NODE,
        &[
            "--board",
            "x86-64",
            "--role",
            "worker",
            "--no-xz",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    let image = out.join("x86-64-worker.img");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let v = &manifest["verity"];
    assert_eq!(v["enforced_at_boot"], true, "{v}");
    let root_part = v["data_partition"].as_u64().unwrap() as usize;
    let root_start = manifest["partitions"]["partitions"][root_part - 1]["start_lba"]
        .as_u64()
        .unwrap()
        * 512;
    let data_blocks = v["data_blocks"].as_u64().unwrap();
    let hash_offset = v["hash_offset"].as_u64().unwrap();
    assert!(hash_offset >= data_blocks * 4096, "{v}");

    // The untouched image's initramfs maps the root through dm-verity (the boot tests in
    // boot_x86.rs take the same image on to the ready line).
    let cmdline = uki_cmdline(&image, &manifest);
    assert!(
        cmdline.contains(&format!(
            "edgeimg.verity={}",
            v["root_hash"].as_str().unwrap()
        )),
        "{cmdline}"
    );

    // 1. A byte of the squashfs tables at the end of the data area, which mounting reads:
    //    dm-verity refuses the block, the initramfs names the cause and does not go on.
    let bad = dir.path().join("tables.img");
    tampered_copy(&image, &bad, root_start + (data_blocks - 1) * 4096 + 8);
    let console = boot_until_failure(&bad);
    assert_stopped_at_verity(&console, "tables");

    // 2. A byte in the middle of the data area, in a file the boot may never read: with
    //    edgeimg.verity_check=full the initramfs reads every block before mounting.
    let bad = dir.path().join("middle.img");
    tampered_copy(&image, &bad, root_start + data_blocks / 2 * 4096 + 1234);
    add_kernel_arg(&bad, &manifest, "edgeimg.verity_check=full");
    let console = boot_until_failure(&bad);
    assert_stopped_at_verity(&console, "middle");

    // 3. The untouched image with the same full check: every block passes, the node is ready.
    let good = dir.path().join("good.img");
    sparse_copy(&image, &good);
    add_kernel_arg(&good, &manifest, "edgeimg.verity_check=full");
    let mut opts = boot_options();
    opts.extra_console_checks = vec![
        "root: dm-verity: every block of /dev/vda2 checked".into(),
        "mounted read-only through dm-verity".into(),
    ];
    let r = edgeimg::qemu::smoke(
        &good,
        &board_qemu("x86-64"),
        &opts,
        &edgeimg::progress::Silent,
    )
    .unwrap_or_else(|e| panic!("the untouched image did not boot with the full check: {e:#}"));
    assert!(
        r.ready_line.contains("hostname=verity-1"),
        "{}",
        r.ready_line
    );
}

fn assert_stopped_at_verity(console: &[String], what: &str) {
    let text = console.join("\n");
    assert!(
        text.contains("edgeimg: FAILED: root: dm-verity: /dev/vda2 does not match the root hash"),
        "{what}: no dm-verity failure line:\n{text}"
    );
    assert!(
        text.contains("device-mapper: verity") && text.contains("is corrupted"),
        "{what}: the kernel did not report the corrupted block:\n{text}"
    );
    assert!(
        !text.contains("switch_root: starting"),
        "{what}: the tampered root was booted:\n{text}"
    );
}

fn esp_spec(image: &std::path::Path, manifest: &serde_json::Value) -> String {
    let start = manifest["partitions"]["partitions"][0]["start_lba"]
        .as_u64()
        .unwrap()
        * 512;
    format!("{}@@{start}", image.display())
}

/// The kernel command line the UKI carries (the manifest records its `.cmdline`).
fn uki_cmdline(_image: &std::path::Path, manifest: &serde_json::Value) -> String {
    manifest["uki"]["cmdline"].as_str().unwrap().to_string()
}

/// Boots the UKI with `arg` added to its command line: a loader entry that starts the UKI
/// with options of its own, made the default, with mtools. systemd-stub takes the loader's
/// options over its `.cmdline` only without Secure Boot: on an unsigned image anyone with
/// the disk can do this, which is what tests/secure_boot_x86.rs shows signing prevents.
fn add_kernel_arg(image: &std::path::Path, manifest: &serde_json::Value, arg: &str) {
    let cmdline = uki_cmdline(image, manifest);
    let entry =
        format!("title edgeimg test\nefi /EFI/Linux/edgeimg-a.efi\noptions {cmdline} {arg}\n");
    let tmp = image.with_extension("entry");
    let conf = image.with_extension("conf");
    std::fs::write(&tmp, entry).unwrap();
    std::fs::write(&conf, "default edgeimg-test.conf\ntimeout 0\neditor no\n").unwrap();
    let spec = esp_spec(image, manifest);
    let o = run_tool("mmd", &["-i", &spec, "::/loader/entries"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (from, to) in [
        (&tmp, "::/loader/entries/edgeimg-test.conf"),
        (&conf, "::/loader/loader.conf"),
    ] {
        let o = run_tool("mcopy", &["-o", "-i", &spec, from.to_str().unwrap(), to]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}
