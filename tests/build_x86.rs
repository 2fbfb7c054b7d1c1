//! `edgeimg build --board x86-64`: every output judged by tools edgeimg did not write.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

const NODE: &str = r#"
hostname = "edge-test-1"
boot_cmd = ["echo boot-cmd-ran"]

[k0s]
role = "worker"
labels = { zone = "lab" }

[network]
mode = "dhcp"

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f test@edgeimg"]

[[files]]
path = "/etc/edgeimg-test/hello"
content = "hello from the node config\n"
mode = "0640"

[time]
ntp = []
"#;

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
    first_requests: usize,
}

/// Builds the test worker (node config and token written into `dir`) into `out`.
fn build_worker(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let node = dir.join("node.toml");
    std::fs::write(&node, NODE).unwrap();
    let token = dir.join("worker.token");
    std::fs::write(&token, format!("{TEST_JOIN_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut args = extra.to_vec();
    args.extend(["--board", "x86-64", "--role", "worker"]);
    args.extend([
        "--node",
        node.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    build(out, &args)
}

/// One build shared by the tests of this file.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let before = k0s_server().count();
        let o = build_worker(dir.path(), &out, &[]);
        assert!(o.status.success(), "build failed:\n{}", stderr(&o));
        let first_requests = k0s_server().count() - before;
        Built {
            _dir: dir,
            out,
            first_requests,
        }
    })
}

fn image() -> PathBuf {
    built().out.join("x86-64-worker.img")
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(built().out.join("manifest.json")).unwrap())
        .unwrap()
}

fn part(n: usize) -> (u64, u64) {
    let m = manifest();
    let p = &m["partitions"]["partitions"][n];
    (
        p["start_lba"].as_u64().unwrap() * 512,
        p["size_lba"].as_u64().unwrap() * 512,
    )
}

#[test]
fn gpt_is_valid_and_matches_the_manifest() {
    let img = image();
    let v = run_tool("sgdisk", &["-v", img.to_str().unwrap()]);
    let text = stdout(&v);
    assert!(text.contains("No problems found"), "sgdisk -v:\n{text}");
    let j = run_tool("sfdisk", &["--json", img.to_str().unwrap()]);
    let table: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    // boot, root slot A, root slot B, data: both slots of the x86-64 root type, as big.
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    for (i, name) in [(1, "root-a"), (2, "root-b")] {
        assert_eq!(parts[i]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
        assert_eq!(parts[i]["name"], name);
        assert_eq!(parts[i]["size"], parts[1]["size"]);
    }
    assert_eq!(parts[3]["name"], "data");
    let m = manifest();
    for (i, p) in parts.iter().enumerate() {
        let mp = &m["partitions"]["partitions"][i];
        assert_eq!(p["start"].as_u64(), mp["start_lba"].as_u64());
        assert_eq!(
            p["uuid"].as_str().unwrap().to_lowercase(),
            mp["uuid"].as_str().unwrap()
        );
    }
    // The UKI names root slot A by the PARTUUID in the table, and the slot.
    let cmdline = m["kernel_cmdline"].as_str().unwrap();
    assert!(cmdline.contains(&format!(
        "edgeimg.root=PARTUUID={}",
        m["partitions"]["partitions"][1]["uuid"].as_str().unwrap()
    )));
    assert!(cmdline.contains("edgeimg.slot=a"), "{cmdline}");
    assert!(
        m["image_version"].as_str().unwrap().starts_with("20"),
        "{m}"
    );
    // Slot B costs nothing: no allocated extent of the .img, no range of the .bmap, and
    // only zeros where xz decompresses it.
    let (b_off, b_len) = part(2);
    let bmap = std::fs::read_to_string(built().out.join("x86-64-worker.bmap")).unwrap();
    let block: u64 = between(&bmap, "<BlockSize>", "</BlockSize>")
        .trim()
        .parse()
        .unwrap();
    for range in bmap.split("<Range").skip(1) {
        let text = between(range, ">", "</Range>");
        let (first, last) = text.split_once('-').unwrap_or((text, text));
        let (first, last): (u64, u64) =
            (first.trim().parse().unwrap(), last.trim().parse().unwrap());
        assert!(
            (last + 1) * block <= b_off || first * block >= b_off + b_len,
            "bmap range {text} lies in slot B"
        );
    }
    let alloc = run_tool("du", &["-B1", img.to_str().unwrap()]);
    let allocated: u64 = stdout(&alloc)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(allocated < b_len, "the .img allocates {allocated} bytes");
    let xz = built().out.join("x86-64-worker.img.xz");
    let cmd = format!(
        "xz -dc {} | tail -c +{} | head -c {} | tr -d '\\000' | wc -c",
        xz.display(),
        b_off + 1,
        b_len
    );
    let o = run_tool("sh", &["-c", &cmd]);
    assert_eq!(
        stdout(&o).trim(),
        "0",
        "slot B in the .img.xz is not all zeros"
    );
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let start = s.find(a).map(|i| i + a.len()).unwrap_or(0);
    let end = s[start..].find(b).map(|i| start + i).unwrap_or(s.len());
    &s[start..end]
}

#[test]
fn esp_passes_fsck_and_holds_systemd_boot_the_uki_and_node_config() {
    let (off, len) = part(0);
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    extract(&image(), off, len, &esp);
    let f = run_tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    assert!(
        f.status.success(),
        "fsck.fat -n:\n{}{}",
        stdout(&f),
        stderr(&f)
    );
    let spec = format!("{}", esp.display());
    let listing = stdout(&run_tool("mdir", &["-i", &spec, "-/", "-b", "::"]));
    for want in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/Linux/edgeimg-a.efi",
        "::/loader/loader.conf",
        "::/edgeimg/node.env",
        "::/edgeimg/token",
    ] {
        assert!(
            listing.to_lowercase().contains(&want.to_lowercase()),
            "{want} missing from ESP:\n{listing}"
        );
    }
    // Nothing on the FAT but the UKI decides what runs: no loader entry, kernel or initrd.
    for gone in ["loader/entries", "::/vmlinuz", "::/initrd.img"] {
        assert!(
            !listing.to_lowercase().contains(gone),
            "{gone} is on the ESP:\n{listing}"
        );
    }
    let efi = run_tool("mcopy", &["-i", &spec, "::/EFI/BOOT/BOOTX64.EFI", "-"]).stdout;
    assert_eq!(&efi[..2], b"MZ", "BOOTX64.EFI is not a PE binary");
    let conf = stdout(&run_tool(
        "mcopy",
        &["-i", &spec, "::/loader/loader.conf", "-"],
    ));
    // No `default`: systemd-boot boots the first of its sorted list, so a bad (+0) slot
    // sorts last and never boots while the good one is there.
    assert!(!conf.contains("default"), "{conf}");
    assert!(conf.contains("timeout 0"), "{conf}");
    // objdump reads the UKI's sections, in ukify's order after the stub's.
    let uki = dir.path().join("uki.efi");
    std::fs::write(
        &uki,
        run_tool("mcopy", &["-i", &spec, "::/EFI/Linux/edgeimg-a.efi", "-"]).stdout,
    )
    .unwrap();
    let o = run_tool("objdump", &["-h", uki.to_str().unwrap()]);
    assert!(o.status.success(), "objdump -h: {}", stderr(&o));
    let names: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[0].parse::<u32>().is_ok()).then(|| f[1].to_string())
        })
        .collect();
    let added: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .skip_while(|n| *n != ".osrel")
        .collect();
    assert_eq!(
        added,
        [".osrel", ".cmdline", ".uname", ".initrd", ".linux"],
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == ".sbat"), "{names:?}");
    let cmdline = String::from_utf8(uki_section(&uki, ".cmdline")).unwrap();
    assert!(cmdline.contains("edgeimg.root=PARTUUID="), "{cmdline}");
    assert!(
        !cmdline.contains("lockdown="),
        "an unsigned UKI is not locked down: {cmdline}"
    );
    let sbat = String::from_utf8(uki_section(&uki, ".sbat")).unwrap();
    assert!(
        sbat.contains("\nsystemd-stub,") && sbat.contains("\nuki,1,UKI,"),
        "{sbat}"
    );
    assert_eq!(manifest()["uki"]["signed"], false);
    let env = stdout(&run_tool(
        "mcopy",
        &["-i", &spec, "::/edgeimg/node.env", "-"],
    ));
    assert!(env.contains("NODE_HOSTNAME='edge-test-1'"), "{env}");
    assert!(env.contains("NODE_ROLE='worker'"), "{env}");
    let token = stdout(&run_tool("mcopy", &["-i", &spec, "::/edgeimg/token", "-"]));
    assert_eq!(token.trim(), TEST_JOIN_TOKEN);
}

#[test]
fn root_squashfs_holds_k0s_busybox_modules_and_init_with_modes_and_owners() {
    let (off, len) = part(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.squashfs");
    extract(&image(), off, len, &root);
    let l = run_tool("unsquashfs", &["-lln", root.to_str().unwrap()]);
    assert!(l.status.success(), "unsquashfs -lln failed: {}", stderr(&l));
    let listing = stdout(&l);
    let line = |path: &str| -> String {
        listing
            .lines()
            .find(|l| {
                l.ends_with(&format!("squashfs-root{path}"))
                    || l.contains(&format!("squashfs-root{path} -> "))
            })
            .unwrap_or_else(|| panic!("{path} not in the root filesystem"))
            .to_string()
    };
    assert!(
        line("/usr/local/bin/k0s").starts_with("-rwxr-xr-x 0/0"),
        "{}",
        line("/usr/local/bin/k0s")
    );
    assert!(line("/usr/bin/busybox").starts_with("-rwxr-xr-x 0/0"));
    assert!(line("/usr/bin/sh").starts_with('l'));
    assert!(line("/usr/sbin/init").starts_with('l'));
    assert!(line("/usr/sbin/mkfs.ext4").starts_with(['-', 'l']));
    assert!(line("/usr/sbin/sfdisk").starts_with('-'));
    assert!(line("/usr/sbin/dropbear").starts_with('-'));
    assert!(line("/etc/inittab").starts_with("-rw-r--r-- 0/0"));
    assert!(line("/etc/passwd").starts_with("-rw-r--r-- 0/0"));
    assert!(line("/etc/ssl/certs/ca-certificates.crt").starts_with('-'));
    assert!(line("/bin").contains("-> usr/bin"));
    let m = manifest();
    let kver = m["kernel_version"].as_str().unwrap();
    for module in [
        "overlay.ko",
        "br_netfilter.ko",
        "vxlan.ko",
        "ip_set.ko",
        "nf_conntrack.ko",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.contains(&format!("/usr/lib/modules/{kver}/"))
                    && l.contains(&format!("/{module}"))),
            "{module} missing"
        );
    }
    for index in ["modules.dep", "modules.alias", "config"] {
        line(&format!("/usr/lib/modules/{kver}/{index}"));
    }
    // Docs are left out of the image.
    assert!(!listing.contains("squashfs-root/usr/share/doc/"));
    // The stand-in was fetched through the real download path: its bytes are in the image.
    let x = dir.path().join("x");
    let e = run_tool(
        "unsquashfs",
        &[
            "-d",
            x.to_str().unwrap(),
            root.to_str().unwrap(),
            "/usr/local/bin/k0s",
        ],
    );
    assert!(e.status.success(), "{}", stderr(&e));
    assert_eq!(
        std::fs::read(x.join("usr/local/bin/k0s")).unwrap(),
        k0s_stand_in()
    );
}

#[test]
fn initramfs_is_a_newc_cpio_with_init_busybox_and_modules() {
    let (off, len) = part(0);
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    extract(&image(), off, len, &esp);
    let uki = dir.path().join("uki.efi");
    std::fs::write(
        &uki,
        run_tool(
            "mcopy",
            &[
                "-i",
                esp.to_str().unwrap(),
                "::/EFI/Linux/edgeimg-a.efi",
                "-",
            ],
        )
        .stdout,
    )
    .unwrap();
    let initrd = uki_section(&uki, ".initrd");
    std::fs::write(dir.path().join("initrd.zst"), &initrd).unwrap();
    let d = run_tool(
        "zstd",
        &[
            "-d",
            "-q",
            "-f",
            dir.path().join("initrd.zst").to_str().unwrap(),
            "-o",
            dir.path().join("initrd.cpio").to_str().unwrap(),
        ],
    );
    assert!(d.status.success(), "zstd -d: {}", stderr(&d));
    let cpio = std::process::Command::new("cpio")
        .args(["-itv", "--numeric-uid-gid"])
        .stdin(std::fs::File::open(dir.path().join("initrd.cpio")).unwrap())
        .output()
        .unwrap();
    assert!(cpio.status.success(), "cpio -itv: {}", stderr(&cpio));
    let listing = stdout(&cpio);
    let has = |suffix: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(suffix))
            .map(String::from)
    };
    assert!(has(" init").unwrap().starts_with("-rwxr-xr-x"), "{listing}");
    assert!(has(" bin/busybox").unwrap().starts_with("-rwxr-xr-x"));
    for m in [
        "squashfs.ko.xz",
        "ext4.ko.xz",
        "vfat.ko.xz",
        "virtio_blk.ko.xz",
        "nvme.ko.xz",
        "overlay.ko.xz",
    ] {
        assert!(listing.contains(m), "{m} missing from the initramfs");
    }
    assert!(listing.contains("modules.dep"));
    assert!(listing.contains("etc/edgeimg/initrd.conf"));
}

#[test]
fn xz_checksums_and_manifest_are_consistent() {
    let out = &built().out;
    let t = run_tool(
        "xz",
        &["-t", out.join("x86-64-worker.img.xz").to_str().unwrap()],
    );
    assert!(t.status.success(), "xz -t: {}", stderr(&t));
    let c = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "sha256sum -c:\n{}{}",
        stdout(&c),
        stderr(&c)
    );
    let listed = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for f in ["x86-64-worker.img", "x86-64-worker.img.xz", "manifest.json"] {
        assert!(listed.contains(f), "{f} not in SHA256SUMS");
    }
    let m = manifest();
    assert_eq!(m["board"], "x86-64");
    assert_eq!(m["role"], "worker");
    assert_eq!(m["token_included"], true);
    assert!(!std::fs::read_to_string(out.join("manifest.json"))
        .unwrap()
        .contains(TEST_JOIN_TOKEN));
    let inputs = m["inputs"].as_array().unwrap();
    for name in [
        "busybox-static",
        "systemd-boot-efi",
        "e2fsprogs",
        "libc6",
        "k0s",
    ] {
        let i = inputs
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        assert_eq!(i["sha256"].as_str().unwrap().len(), 64);
        assert!(!i["version"].as_str().unwrap().is_empty());
        assert!(!i["source"].as_str().unwrap().is_empty());
    }
    assert!(inputs
        .iter()
        .any(|i| i["name"].as_str().unwrap().starts_with("linux-image-6.")));
}

/// Also the reproducibility proof: the warm rebuild runs with `--check-reproducible`, which
/// builds a third time in another process, output folder and cache copy, under umask 077,
/// another time zone and locale, and compares every output byte for byte.
#[test]
fn a_warm_rebuild_makes_no_request_and_gives_the_same_image() {
    let b = built();
    assert!(
        b.first_requests <= 1,
        "k0s fetched {} times",
        b.first_requests
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let before = k0s_server().count();
    let o = build_worker(dir.path(), &out, &["--offline", "--check-reproducible"]);
    assert!(
        o.status.success(),
        "offline rebuild or its reproducibility check failed:\n{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("reproducible: 6 outputs identical in both builds"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("umask 077, TZ=Pacific/Chatham, LANG=C.UTF-8"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        k0s_server().count(),
        before,
        "a warm rebuild downloaded k0s again"
    );
    assert_eq!(
        sha256_file(&out.join("x86-64-worker.img")),
        sha256_file(&image()),
        "the same plan built twice gave different images"
    );
    // The SBOM and manifest name the plan hash, which covers the node config and with it the
    // token file's path (another one here): --check-reproducible above compared those.
    assert_eq!(
        sha256_file(&out.join("x86-64-worker.img.xz")),
        sha256_file(&built().out.join("x86-64-worker.img.xz")),
        "the .img.xz differs between two builds"
    );
    // The scratch folder of the check is gone.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".edgeimg-repro")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn veritysetup_verifies_the_root_partition_and_the_cmdline_carries_the_root_hash() {
    let m = manifest();
    let v = &m["verity"];
    let data_part = v["data_partition"].as_u64().unwrap();
    assert_eq!(data_part, 2);
    assert_eq!(v["hash_partition"].as_u64().unwrap(), data_part);
    assert_eq!(v["data_block_size"], 4096);
    assert_eq!(v["hash_block_size"], 4096);
    let hash_offset = v["hash_offset"].as_u64().unwrap();
    assert_eq!(hash_offset, v["data_blocks"].as_u64().unwrap() * 4096);
    assert!(hash_offset >= m["root_size"].as_u64().unwrap());
    let root_hash = v["root_hash"].as_str().unwrap();
    assert!(m["kernel_cmdline"]
        .as_str()
        .unwrap()
        .contains(&format!("edgeimg.verity={root_hash}")));
    // The UKI's .cmdline carries it too (read back by objcopy).
    let (boff, _) = part(0);
    let uki_dir = tempfile::tempdir().unwrap();
    let uki = uki_dir.path().join("uki.efi");
    let o = run_tool(
        "mcopy",
        &[
            "-n",
            "-i",
            &format!("{}@@{boff}", image().display()),
            "::/EFI/Linux/edgeimg-a.efi",
            uki.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cmdline = String::from_utf8(uki_section(&uki, ".cmdline")).unwrap();
    assert!(
        cmdline.contains(&format!("edgeimg.verity={root_hash}")),
        "{cmdline}"
    );
    assert_eq!(m["uki"]["cmdline"].as_str().unwrap(), cmdline.trim());

    let (off, len) = part(data_part as usize - 1);
    // Only what verity covers (data and tree), not the whole partition.
    let used = hash_offset + v["hash_size"].as_u64().unwrap();
    assert!(used <= len);
    let len = used;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("root.part");
    extract(&image(), off, len, &p);
    let ps = p.to_str().unwrap();
    let ho = format!("--hash-offset={hash_offset}");
    let ok = run_tool("veritysetup", &["verify", ps, ps, root_hash, &ho]);
    assert!(
        ok.status.success(),
        "veritysetup verify: {}{}",
        stdout(&ok),
        stderr(&ok)
    );
    let dump = run_tool("veritysetup", &["dump", ps, &ho]);
    assert!(stdout(&dump).contains(v["salt"].as_str().unwrap()));
    assert!(stdout(&dump).contains(v["uuid"].as_str().unwrap()));
    // A flipped byte in the squashfs: veritysetup rejects the partition.
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let at = m["root_size"].as_u64().unwrap() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x80]).unwrap();
    drop(f);
    let bad = run_tool("veritysetup", &["verify", ps, ps, root_hash, &ho]);
    assert!(
        !bad.status.success(),
        "a flipped root byte passed veritysetup"
    );
}

fn sha256_file(p: &Path) -> String {
    let o = run_tool("sha256sum", &[p.to_str().unwrap()]);
    stdout(&o).split_whitespace().next().unwrap().to_string()
}

#[test]
fn sbom_is_valid_spdx_and_lists_every_input_with_the_image_checksum() {
    let out = &built().out;
    let path = out.join("sbom.spdx.json");
    // The SPDX reference validator (spdx-tools from PyPI, installed by scripts/install-deps).
    let v = run_tool("pyspdxtools", &["-i", path.to_str().unwrap()]);
    assert!(
        v.status.success(),
        "pyspdxtools rejects the SBOM:\n{}{}",
        stdout(&v),
        stderr(&v)
    );
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(sums.contains("sbom.spdx.json"), "sbom not in SHA256SUMS");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(d["spdxVersion"], "SPDX-2.3");
    let m = manifest();
    assert!(d["documentNamespace"]
        .as_str()
        .unwrap()
        .ends_with(m["plan_hash"].as_str().unwrap()));
    let epoch = m["source_date_epoch"].as_u64().unwrap();
    let date = run_tool(
        "date",
        &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"],
    );
    assert_eq!(d["creationInfo"]["created"], stdout(&date).trim());
    let pkgs = d["packages"].as_array().unwrap();
    let rels = d["relationships"].as_array().unwrap();
    let image = pkgs
        .iter()
        .find(|p| p["name"] == "x86-64-worker.img")
        .expect("the image package");
    assert_eq!(
        image["checksums"][0]["checksumValue"],
        sha256_file(&image_path_of(out))
    );
    assert!(rels.iter().any(
        |r| r["relationshipType"] == "DESCRIBES" && r["relatedSpdxElement"] == image["SPDXID"]
    ));
    let tool = pkgs.iter().find(|p| p["name"] == "edgeimg").unwrap();
    assert_eq!(tool["versionInfo"], m["edgeimg_version"]);
    // Every input of the manifest (each Debian package and k0s) is in the SBOM, same version
    // and sha256, contained in the image.
    let inputs = m["inputs"].as_array().unwrap();
    // + the image, edgeimg and the operating system (Debian, its release from the suite).
    assert_eq!(pkgs.len(), inputs.len() + 3);
    let os = pkgs
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "OPERATING-SYSTEM")
        .expect("an OPERATING-SYSTEM package");
    assert_eq!(
        (&os["name"], &os["versionInfo"]),
        (&"debian".into(), &"13".into())
    );
    for i in inputs {
        let p = pkgs
            .iter()
            .find(|p| p["name"] == i["name"] && p["versionInfo"] == i["version"])
            .unwrap_or_else(|| panic!("{} not in the SBOM", i["name"]));
        assert_eq!(p["checksums"][0]["checksumValue"], i["sha256"]);
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        // Debian packages are the operating system's, k0s is the image's.
        let parent = if i["name"] == "k0s" { image } else { os };
        assert!(
            rels.iter().any(|r| r["spdxElementId"] == parent["SPDXID"]
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == p["SPDXID"]),
            "{} not contained in {}",
            i["name"],
            parent["name"]
        );
        // A source on a named host is the download location; one on an IP address (the
        // k0s stand-in on 127.0.0.1) is no valid SPDX location and goes to sourceInfo.
        let source = i["source"].as_str().unwrap();
        if p["downloadLocation"] == "NOASSERTION" {
            assert!(
                p["sourceInfo"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("retrieved from {source}")),
                "{}",
                p["sourceInfo"]
            );
        } else {
            assert_eq!(p["downloadLocation"], source);
        }
        if i["name"] != "k0s" {
            assert!(source.ends_with(".deb"));
            let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
            assert!(purl.starts_with("pkg:deb/debian/"), "{purl}");
        }
    }
}

fn image_path_of(out: &Path) -> PathBuf {
    out.join("x86-64-worker.img")
}

/// A copy of the shared cache (hard links) whose cached root artifacts all have one byte of
/// their squashfs flipped (in a new file: the shared cache is left alone). Returns how many.
fn cache_with_damaged_root_artifacts(to: &Path) -> usize {
    edgeimg::build::repro::link_tree(&cache_dir(), to).unwrap();
    let mut n = 0;
    let root = to.join("artifacts/root");
    for e in std::fs::read_dir(&root).into_iter().flatten() {
        let p = e.unwrap().path().join("root.squashfs");
        let Ok(mut data) = std::fs::read(&p) else {
            continue;
        };
        let i = data.len() / 2;
        data[i] ^= 0x01;
        std::fs::remove_file(&p).unwrap(); // never write through the hard link
        std::fs::write(&p, &data).unwrap();
        n += 1;
    }
    n
}

/// The worker build of `built()`, offline, with another cache folder.
fn build_worker_with_cache(dir: &Path, out: &Path, cache: &Path) -> std::process::Output {
    let node = dir.join("node.toml");
    std::fs::write(&node, NODE).unwrap();
    let token = dir.join("worker.token");
    std::fs::write(&token, format!("{TEST_JOIN_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut args: Vec<String> = ["build", "--offline", "--out"].map(String::from).into();
    args.push(out.display().to_string());
    args.extend(["--cache-dir".into(), cache.display().to_string()]);
    args.extend(k0s_args());
    for a in ["--board", "x86-64", "--role", "worker", "--node"] {
        args.push(a.into());
    }
    args.push(node.display().to_string());
    args.push("--token-file".into());
    args.push(token.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    edgeimg(&refs)
}

#[test]
fn a_damaged_cached_root_artifact_is_rebuilt_and_a_hit_gives_the_same_bytes_as_a_miss() {
    // built() stored the root artifact of this plan in the shared cache (or reused it).
    let first = built();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let damaged = cache_with_damaged_root_artifacts(&cache);
    assert!(damaged >= 1, "built() left no root artifact in the cache");

    // Damaged: detected, not used, rebuilt (a miss) and stored again.
    let miss = dir.path().join("miss");
    let o = build_worker_with_cache(dir.path(), &miss, &cache);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cached root artifact")
            && err.contains("root.squashfs does not match its digest")
            && !err.contains("kernel files reused from the artifact cache"),
        "{err}"
    );

    // The entry stored by the miss is used by the next build (a hit).
    let hit = dir.path().join("hit");
    let o = build_worker_with_cache(dir.path(), &hit, &cache);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("root, initramfs and kernel files reused from the artifact cache")
            && err.contains("package closure reused from the artifact cache")
            && !err.contains("does not match"),
        "{err}"
    );

    // Hit and miss: every output byte for byte the same (same node files, same paths).
    // (The hidden .edgeimg/ holds the generations the names lead to.)
    let names: Vec<String> = std::fs::read_dir(&miss)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for n in &names {
        assert_eq!(
            sha256_file(&miss.join(n)),
            sha256_file(&hit.join(n)),
            "{n} differs between a cache miss and a hit"
        );
    }
    // And the image, its .xz and .bmap as built() made them.
    for n in [
        "x86-64-worker.img",
        "x86-64-worker.img.xz",
        "x86-64-worker.bmap",
    ] {
        assert_eq!(
            sha256_file(&hit.join(n)),
            sha256_file(&first.out.join(n)),
            "{n} differs from the first build's"
        );
    }
    // xz and unsquashfs (tools edgeimg did not write) accept the hit's outputs.
    run_tool(
        "xz",
        &["-t", hit.join("x86-64-worker.img.xz").to_str().unwrap()],
    );
}
