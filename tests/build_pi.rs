//! `edgeimg build --board pi3`: the Raspberry Pi image judged by tools edgeimg did not write
//! (sfdisk, fsck.fat, mtools, unsquashfs, bmaptool, sha256sum), then booted on QEMU's raspi3b
//! to the ready line.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu::{self, SmokeOptions};

// No hostname, SSH key or Wi-Fi here: the boots get them from Raspberry Pi Imager's
// rpi-preseed.toml ([`PRESEED`]) on the boot partition.
const NODE: &str = r#"
boot_cmd = ["[ ! -e /boot/ab-test.sh ] || . /boot/ab-test.sh"]

[boot]
kernel_args = ["edgeimg.test=node-arg"]
config_txt = ["dtparam=audio=off"]

# QEMU's raspi machines reset the moment the watchdog is started: their power block
# (hw/misc/bcm2835_powermgt.c) acts on the reset bit bcm2835_wdt writes to arm it, with no
# countdown. So these trials run without it; the x86-64 tests show a watchdog firing.
[update]
watchdog = 0

[time]
ntp = []
"#;

const STEM: &str = "pi3-controller+worker";

/// Where the Imager list says the images are served from.
const URL_BASE: &str = "https://images.example.org/edge/";

/// An SSH key for the preseed file.
const PRESEED_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q imager@laptop";

/// rpi-preseed.toml as Raspberry Pi Imager 2.x writes it for hostname, user, SSH key, Wi-Fi
/// (its encrypted PSK: the 64-hex PBKDF2 of the passphrase), locale (its
/// `CustomisationGenerator::generateRpiPreseedToml`, src/customization_generator.cpp).
fn preseed_toml() -> String {
    format!(
        r#"config_version = "1.0"

[system]
hostname = "pi-test-1"

[user]
name = "pi"
password = "$y$j9T$Y0zk3Pr5kvZ1$abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
password_encrypted = true
groups = ["sudo"]

[ssh]
enabled = true
password_authentication = false
authorized_keys = [
  "{PRESEED_KEY}",
]

[wlan]
ssid = "edge-lab"
password = "5a1e2b0b6b5f0c3f0f1d3b7a4c4a0e6d9b8c7a6f5e4d3c2b1a0f9e8d7c6b5a49"
password_encrypted = true
hidden = false
country = "DE"

[locale]
keymap = "de"
timezone = "Europe/Berlin"
"#
    )
}

struct Built {
    dir: tempfile::TempDir,
    out: PathBuf,
}

impl Built {
    /// The fleet key the image trusts (its update.pub) and its bundles are signed with.
    fn fleet_key(&self) -> PathBuf {
        self.dir.path().join("fleet.key")
    }
}

/// One build shared by the tests of this file.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // A fleet key: the build also writes the update bundle.
        let fleet = dir.path().join("fleet");
        let o = edgeimg(&["keys", "fleet", fleet.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let key = dir.path().join("fleet.key");
        let out = build_with_node(
            dir.path(),
            NODE,
            &[
                "--board",
                "pi3",
                "--role",
                "controller+worker",
                "--no-xz",
                "--imager-url-base",
                URL_BASE,
                "--signing-key",
                key.to_str().unwrap(),
                // v1 of the offline-update test's sequence (v2 and v3 are newer).
                "--image-version",
                "1",
            ],
        );
        Built { dir, out }
    })
}

fn image() -> PathBuf {
    built().out.join(format!("{STEM}.img"))
}

/// A copy of the image with [`preseed_toml`] written onto its boot partition by mtools, as
/// Imager leaves a card it customised.
fn preseeded_image() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let copy = built().out.join("preseeded.img");
        sparse_copy(&image(), &copy);
        let toml = built().out.join("rpi-preseed.toml");
        std::fs::write(&toml, preseed_toml()).unwrap();
        let spec = format!("{}@@1M", copy.display());
        tool_ok(
            "mcopy",
            &["-i", &spec, toml.to_str().unwrap(), "::/rpi-preseed.toml"],
        );
        assert_eq!(mtype(&copy, "rpi-preseed.toml"), preseed_toml());
        copy
    })
    .clone()
}

fn tool_ok(cmd: &str, args: &[&str]) -> String {
    let o = run_tool(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `sfdisk -d` lines of the partitions: (start, size, rest).
fn sfdisk_parts(dump: &str) -> Vec<(u64, u64, String)> {
    dump.lines()
        .filter(|l| l.contains(" : start="))
        .map(|l| {
            let rest = l.split(" : ").nth(1).unwrap();
            let field = |k: &str| -> u64 {
                rest.split(',')
                    .find_map(|f| f.trim().strip_prefix(k))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            (field("start="), field("size="), rest.to_string())
        })
        .collect()
}

fn mtype(image: &Path, file: &str) -> String {
    let spec = format!("{}@@1M", image.display());
    tool_ok("mtype", &["-i", &spec, &format!("::/{file}")])
}

#[test]
fn pi3_image_is_an_mbr_sd_card_the_pi_firmware_reads() {
    let img = image();
    let dump = tool_ok("sfdisk", &["-d", img.to_str().unwrap()]);
    assert!(dump.contains("label: dos"), "{dump}");
    let label_id = dump
        .lines()
        .find_map(|l| l.strip_prefix("label-id: 0x"))
        .expect("disk signature")
        .to_string();
    let parts = sfdisk_parts(&dump);
    // boot, root-a, root-b (the update's slot, holes until then), data.
    assert_eq!(parts.len(), 4, "{dump}");
    assert_eq!(
        parts[1].1, parts[2].1,
        "both root slots have one size: {dump}"
    );
    assert!(
        parts[0].2.contains("type=c") && parts[0].2.contains("bootable"),
        "boot partition must be FAT32 LBA (0x0c) and bootable: {dump}"
    );
    for (i, (start, size, rest)) in parts.iter().enumerate() {
        assert_eq!(
            start % 2048,
            0,
            "partition {} not 1 MiB aligned: {rest}",
            i + 1
        );
        assert_eq!(
            size % 2048,
            0,
            "partition {} size not whole MiB: {rest}",
            i + 1
        );
        if i > 0 {
            assert!(rest.contains("type=83"), "{dump}");
        }
    }
    // The boot partition passes fsck.fat and holds what the Pi 3 firmware loads.
    let fat = built().out.join("boot.fat");
    extract(&img, parts[0].0 * 512, parts[0].1 * 512, &fat);
    tool_ok("fsck.fat", &["-n", fat.to_str().unwrap()]);
    std::fs::remove_file(&fat).unwrap();
    let spec = format!("{}@@1M", img.display());
    // The firmware's files at the root; slot a's boot files in its folder (what os_prefix
    // names); slot b has no folder until an update writes one.
    let listing = tool_ok("mdir", &["-/", "-b", "-i", &spec, "::/"]);
    for f in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "config.txt",
        "boot.scr",
        "slots.txt",
        "slot-a/u-boot.bin",
        "slot-a/bootargs.txt",
        "slot-a/bcm2837-rpi-3-b.dtb",
        "slot-a/bcm2837-rpi-3-b-plus.dtb",
        "slot-a/bcm2837-rpi-zero-2-w.dtb",
        "slot-a/cmdline.txt",
        "slot-a/vmlinuz",
        "slot-a/initrd.img",
    ] {
        assert!(
            listing.lines().any(|l| l.trim() == format!("::/{f}")),
            "{f} missing from the boot partition:\n{listing}"
        );
    }
    for f in [
        "vmlinuz",
        "initrd.img",
        "cmdline.txt",
        "tryboot.txt",
        "trial.txt",
        "slot-b",
    ] {
        assert!(
            !listing.lines().any(|l| l.trim() == format!("::/{f}")),
            "{f} at the root of the boot partition:\n{listing}"
        );
    }
    let config = mtype(&img, "config.txt");
    for line in [
        "arm_64bit=1",
        "os_prefix=slot-a/",
        "kernel=u-boot.bin",
        "dtparam=audio=off",
    ] {
        assert!(
            config.lines().any(|l| l.trim() == line),
            "config.txt lacks {line:?}:\n{config}"
        );
    }
    // U-Boot loads the initramfs, not the firmware.
    assert!(
        !config.lines().any(|l| l.starts_with("initramfs")),
        "{config}"
    );
    // U-Boot's own tool reads boot.scr as a script image; the good slot is a.
    let scr = built().out.join("boot.scr");
    mcopy_out(&img, "boot.scr", &scr);
    let listed = tool_ok("mkimage", &["-l", scr.to_str().unwrap()]);
    assert!(
        listed.contains("AArch64 Linux Script (uncompressed)"),
        "{listed}"
    );
    std::fs::remove_file(&scr).unwrap();
    assert_eq!(mtype(&img, "slots.txt"), "good=a\n");
    // inspect names the loader and reads the slots from those files.
    let o = edgeimg(&["inspect", img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for line in [
        "slots switched by: U-Boot (boot.scr: slots.txt, trial.txt)",
        "slot a: partition 2, version 1, active, bootable (slot-a/)",
        "slot b: partition 3, version none, not bootable",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // cmdline.txt is one line naming the partitions by disk signature + number.
    let cmdline = mtype(&img, "slot-a/cmdline.txt");
    assert_eq!(cmdline.trim_end().lines().count(), 1, "{cmdline:?}");
    for arg in [
        format!("edgeimg.root=PARTUUID={label_id}-02"),
        format!("edgeimg.data=PARTUUID={label_id}-04"),
        "edgeimg.slot=a".to_string(),
        "console=ttyS1,115200".to_string(),
        "edgeimg.test=node-arg".to_string(),
    ] {
        assert!(
            cmdline.split_whitespace().any(|a| a == arg),
            "cmdline.txt lacks {arg}: {cmdline}"
        );
    }
    // U-Boot's copy of it, as `env import -t` reads it.
    assert_eq!(
        mtype(&img, "slot-a/bootargs.txt"),
        format!("bootargs={}\n", cmdline.trim_end())
    );

    // The update bundle, read by tar: the slot folder's files, cmdline.txt once per slot
    // (each naming its own root), the rest once for both.
    let bundle = built().out.join(format!("{STEM}.update"));
    let list = tool_ok("tar", &["-tf", bundle.to_str().unwrap()]);
    for m in [
        "manifest.json",
        "manifest.sig",
        "root.img",
        "boot/a/slot-a/cmdline.txt",
        "boot/b/slot-b/cmdline.txt",
        "boot/a/slot-a/bootargs.txt",
        "boot/b/slot-b/bootargs.txt",
        "boot/all/slot-@SLOT@/u-boot.bin",
        "boot/all/slot-@SLOT@/vmlinuz",
        "boot/all/slot-@SLOT@/initrd.img",
        "boot/all/slot-@SLOT@/bcm2837-rpi-3-b.dtb",
    ] {
        assert!(
            list.lines().any(|l| l == m),
            "the bundle lacks {m}:\n{list}"
        );
    }
    assert!(!list.contains("config.txt"), "{list}");
    let unpacked = built().out.join("bundle");
    std::fs::create_dir_all(&unpacked).unwrap();
    tool_ok(
        "tar",
        &[
            "-xf",
            bundle.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
            "boot/a/slot-a/cmdline.txt",
            "boot/b/slot-b/cmdline.txt",
        ],
    );
    let read = |p: &str| std::fs::read_to_string(unpacked.join(p)).unwrap();
    assert_eq!(read("boot/a/slot-a/cmdline.txt"), cmdline);
    let b = read("boot/b/slot-b/cmdline.txt");
    for arg in [
        format!("edgeimg.root=PARTUUID={label_id}-03"),
        format!("edgeimg.data=PARTUUID={label_id}-04"),
        "edgeimg.slot=b".to_string(),
    ] {
        assert!(
            b.split_whitespace().any(|a| a == arg),
            "slot b's cmdline.txt lacks {arg}: {b}"
        );
    }
    std::fs::remove_dir_all(&unpacked).unwrap();
}

#[test]
fn pi3_root_has_k0s_the_board_modules_and_no_firmware() {
    let img = image();
    let dump = tool_ok("sfdisk", &["-d", img.to_str().unwrap()]);
    let parts = sfdisk_parts(&dump);
    let root = built().out.join("root.sqfs");
    extract(&img, parts[1].0 * 512, parts[1].1 * 512, &root);
    let list = tool_ok("unsquashfs", &["-lln", root.to_str().unwrap()]);
    std::fs::remove_file(&root).unwrap();
    for needle in [
        "/usr/local/bin/k0s",
        "/usr/lib/edgeimg/boot",
        "/usr/sbin/init",
        "/smsc95xx.ko",
        "/lan78xx.ko",
        "/br_netfilter.ko",
        "/modules.dep",
        "/modules.alias",
        // Wi-Fi: driver, the Pi 3's firmware and NVRAM, the supplicant, the script.
        "/brcmfmac.ko",
        "/brcm/brcmfmac43430-sdio.raspberrypi,3-model-b.txt",
        "/brcm/brcmfmac43430-sdio.bin",
        "/wpa_supplicant",
        "/usr/lib/edgeimg/wifi.sh",
    ] {
        assert!(
            list.lines().any(|l| l.contains(needle)),
            "root lacks {needle}"
        );
    }
    let firmware: Vec<&str> = list
        .lines()
        // The dpkg database names the package (raspi-firmware.list): that is no firmware.
        .filter(|l| !l.contains("/var/lib/dpkg/"))
        .filter(|l| l.contains("raspi-firmware") || l.contains("/bootcode.bin"))
        .collect();
    assert!(
        firmware.is_empty(),
        "the Pi firmware belongs on the boot partition only:\n{}",
        firmware.join("\n")
    );
}

#[test]
fn pi3_bmap_copies_to_the_same_bytes_and_imager_entry_matches() {
    let img = image();
    let bmap = built().out.join(format!("{STEM}.bmap"));
    let copy = built().out.join("copy.img");
    tool_ok(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    tool_ok("cmp", &[img.to_str().unwrap(), copy.to_str().unwrap()]);
    std::fs::remove_file(&copy).unwrap();

    let list_path = built().out.join("os_list.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&list_path).unwrap()).unwrap();
    let e = &json["os_list"][0];
    let sum = tool_ok("sha256sum", &[img.to_str().unwrap()]);
    let sha = sum.split_whitespace().next().unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(e["extract_sha256"], sha, "{e}");
    assert_eq!(e["extract_size"], size, "{e}");
    // Without --no-xz the download is the .img.xz; here it is the raw image.
    assert_eq!(e["image_download_sha256"], sha, "{e}");
    assert_eq!(e["image_download_size"], size, "{e}");
    assert_eq!(e["url"], format!("{URL_BASE}{STEM}.img"), "{e}");
    assert_eq!(e["bmap_url"], format!("{URL_BASE}{STEM}.bmap"), "{e}");
    assert_eq!(e["devices"][0], "pi3-64bit", "{e}");
    assert_eq!(e["architecture"], "armv8", "{e}");
    assert_eq!(e["init_format"], "rpi-preseed", "{e}");
    assert!(e["release_date"].as_str().unwrap().len() == 10, "{e}");
    // Imager 2.x's device step lists imager.devices; the entry's tags match one of them.
    let devices = json["imager"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{json}");
    assert_eq!(devices[0]["name"], "Raspberry Pi 3");
    assert_eq!(devices[0]["tags"][0], "pi3-64bit");
    // Imager's own schema (vendored from rpi-imager) accepts the file.
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpi-imager-os-list-schema.json");
    let v = run_tool(
        "python3",
        &[
            "-c",
            "import json, sys, jsonschema\n\
             s = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))\n\
             jsonschema.validators.validator_for(s).check_schema(s)\n\
             jsonschema.validate(d, s)\n\
             print('valid')",
            schema.to_str().unwrap(),
            list_path.to_str().unwrap(),
        ],
    );
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stdout).contains("valid"),
        "Imager's schema rejects os_list.json:\n{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    // The schema's own checks can fail: an entry without `icon` is refused.
    let mut broken = json.clone();
    broken["os_list"][0].as_object_mut().unwrap().remove("icon");
    let broken_path = built().out.join("broken.json");
    std::fs::write(&broken_path, broken.to_string()).unwrap();
    let v = run_tool(
        "python3",
        &[
            "-c",
            "import json, sys, jsonschema\n\
             jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
            schema.to_str().unwrap(),
            broken_path.to_str().unwrap(),
        ],
    );
    assert!(
        !v.status.success(),
        "the schema accepted an entry without icon"
    );
    // SHA256SUMS covers the Imager entry.
    let sums = std::fs::read_to_string(built().out.join("SHA256SUMS")).unwrap();
    assert!(sums.contains("  os_list.json\n"), "{sums}");
}

/// The kernel's command line as it printed it.
fn kernel_cmdline(console: &[String]) -> String {
    console
        .iter()
        .find_map(|l| {
            l.split_once("Kernel command line: ")
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "no kernel command line on the console:\n{}",
                console.join("\n")
            )
        })
}

/// What the offline-update test puts on its card (sourced by boot_cmd): the data partition's
/// file from the boot before, and the file only v2's root has.
const UPDATE_TEST: &str = r#"echo "pi-update-test: watchdog device: $([ -c /dev/watchdog ] && echo yes || echo no)"
echo "pi-update-test: persist=$(cat /var/lib/edgeimg-test/persist 2>/dev/null || echo none) extra=$(cat /usr/share/edgeimg-test/v2-extra 2>/dev/null || echo none)"
mkdir -p /var/lib/edgeimg-test && echo kept >/var/lib/edgeimg-test/persist
"#;

/// Builds pi3 version `v` the way [`built`] does, signed with its fleet key, from a copy of
/// the project's data that `change` edits; returns its update bundle.
fn build_pi_version(dir: &Path, v: &str, change: impl FnOnce(&Path)) -> PathBuf {
    let data = data_dir_copy(dir, &format!("data-v{v}"));
    change(&data);
    let vdir = dir.join(format!("v{v}"));
    std::fs::create_dir_all(&vdir).unwrap();
    let key = built().fleet_key();
    let data_arg = data.display().to_string();
    let started = std::time::Instant::now();
    let out = build_with_node(
        &vdir,
        NODE,
        &[
            "--data-dir",
            &data_arg,
            "--board",
            "pi3",
            "--role",
            "controller+worker",
            "--no-xz",
            "--image-version",
            v,
            "--signing-key",
            key.to_str().unwrap(),
        ],
    );
    eprintln!("build pi3 v{v}: {:.0}s", started.elapsed().as_secs_f64());
    out.join(format!("{STEM}.update"))
}

/// `edgeimg configure CARD --node N`, which must succeed, with the test's node config whose
/// boot_cmd also prints `configured-<mark>`; what it printed.
fn configure_card(card: &Path, dir: &Path, mark: &str) -> String {
    let node = dir.join(format!("node-{mark}.toml"));
    let toml = NODE.replace(
        "boot_cmd = [",
        &format!("boot_cmd = [\"echo configured-{mark}\", "),
    );
    assert_ne!(toml, NODE);
    std::fs::write(&node, toml).unwrap();
    let o = edgeimg(&[
        "configure",
        card.to_str().unwrap(),
        "--node",
        node.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "configure: {}", stderr(&o));
    stdout(&o)
}

/// `edgeimg update CARD BUNDLE`, which must succeed; its JSON report.
fn update_card(card: &Path, bundle: &Path) -> serde_json::Value {
    let o = edgeimg(&[
        "--json",
        "update",
        card.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "edgeimg update: {}", stderr(&o));
    check_json("update.schema.json", &o.stdout);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The card's slots as `inspect --json` shows them (schema-checked).
fn card_slots(card: &Path) -> serde_json::Value {
    let o = edgeimg(&["--json", "inspect", card.to_str().unwrap()]);
    assert!(o.status.success(), "inspect: {}", stderr(&o));
    check_json("inspect.schema.json", &o.stdout);
    let ins: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    ins["slots"].clone()
}

fn len_of(file: &Path) -> u64 {
    std::fs::metadata(file).unwrap().len()
}

/// Boot options for `role` named `hostname`, which also wait for `checks` on the console.
fn boot_opts(role: &str, hostname: &str, checks: &[&str]) -> SmokeOptions {
    SmokeOptions {
        timeout: Duration::from_secs(600),
        extra_console_checks: checks.iter().map(|c| c.to_string()).collect(),
        ..smoke_options(role, hostname)
    }
}

/// Whether a boot's console has a line containing `text`.
fn said(b: &qemu::SmokeReport, text: &str) -> bool {
    b.console.iter().any(|l| l.contains(text))
}

/// A U-Boot card whose `slot` is marked good at `version`, judged from outside: slots.txt
/// and config.txt name it, no trial.txt is left, inspect --json shows it active, not on trial.
fn assert_marked_good(card: &Path, slot: char, version: &str) {
    assert_eq!(mtype(card, "slots.txt"), format!("good={slot}\n"));
    let prefix = format!("os_prefix=slot-{slot}/");
    assert!(mtype(card, "config.txt").lines().any(|l| l == prefix));
    assert!(!fat_listing(card).iter().any(|l| l == "::/trial.txt"));
    let slots = card_slots(card);
    let s = &slots[if slot == 'a' { 0 } else { 1 }];
    assert!(
        s["active"] == true && s["trial"] == false && s["version"] == version,
        "{slots}"
    );
}

/// The boot FAT's root listing (mtools).
fn fat_listing(card: &Path) -> Vec<String> {
    let spec_fat = format!("{}@@1M", card.display());
    tool_ok("mdir", &["-/", "-b", "-i", &spec_fat, "::/"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The whole update sequence on pi3 under raspi3b, the harness playing the firmware (it
/// starts the U-Boot config.txt names) and Debian's U-Boot running boot.scr, every update
/// written offline by `edgeimg update` (raspi3b has no network card):
/// 1. v1 boots to ready the way `edgeimg smoke` boots an image (Imager's preseed applied,
///    k0s's pre-flight checks clean, U-Boot taking slot a) and writes a file on the data
///    partition; the SD card smoke made and kept is the card from then on.
/// 2. The card is configured (a new node config), v2 is written into slot b, and the card is
///    configured again: inspect shows v2 on trial, booting next, with the second config.
/// 3. U-Boot counts the try down and boots v2, which reaches ready with the second config,
///    is marked good (slots.txt and config.txt name slot b), and still has the data
///    partition's file.
/// 4. v3, whose initramfs init fails, is written into slot a.
/// 5. U-Boot boots v3 on trial; its init fails (the boot is cut there: a crash or the
///    watchdog).
/// 6. No tries left: U-Boot boots v2 again, which says v3 failed.
#[test]
fn pi3_takes_offline_updates_and_falls_back_from_a_broken_one_on_raspi3b() {
    let spec = board_qemu("pi3");
    need(&spec.system);
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle2 = build_pi_version(d, "2", |data| {
        let extra = data.join("overlays/rootfs/usr/share/edgeimg-test");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("v2-extra"), "yes\n").unwrap();
    });
    let bundle3 = build_pi_version(d, "3", |data| {
        std::fs::write(
            data.join("overlays/initramfs/init"),
            "#!/bin/busybox sh\necho 'edgeimg-test: v3 init exits at once'\nexit 1\n",
        )
        .unwrap();
    });

    // The card: Imager's preseed and the test's boot_cmd script.
    let image = d.join("v1.img");
    sparse_copy(&preseeded_image(), &image);
    let script = d.join("ab-test.sh");
    std::fs::write(&script, UPDATE_TEST).unwrap();
    let fat = format!("{}@@1M", image.display());
    tool_ok(
        "mcopy",
        &["-i", &fat, script.to_str().unwrap(), "::/ab-test.sh"],
    );

    let opts = |checks: &[&str]| boot_opts("controller+worker", "pi-test-1", checks);

    // 1. v1 to ready through `edgeimg smoke`'s path: the image copied onto an SD card (not
    // a power of two: smoke rounds it up to 2 GiB), the partitions found by disk signature,
    // k0s started, Imager's rpi-preseed.toml applied (hostname on the ready line, key, Wi-Fi
    // and time zone; its user account is not: root with keys only). QEMU's raspi3b has no
    // Wi-Fi chip: the Wi-Fi step says so and the boot goes on. The card is then the kept copy.
    let r = qemu::smoke(
        &image,
        &spec,
        &SmokeOptions {
            // Smaller than the image, and not a power of two.
            disk_size: 1500 * 1024 * 1024,
            keep: true,
            ..opts(&[
                "mmcblk0",
                "k0s-stand-in: controller",
                // The arm64 initramfs runs its own copy of Debian's dmsetup.
                "mounted read-only through dm-verity",
                "config: rpi-preseed.toml (Raspberry Pi Imager): hostname=pi-test-1 wlan=edge-lab country=DE timezone=Europe/Berlin ssh-keys=1; not applied: [user]",
                "wifi: SSID edge-lab (country DE) configured, but no wireless interface (wlan0) appeared",
                "ssh: dropbear on port 22, 1 key(s)",
                "time: time zone Europe/Berlin",
                // U-Boot's boot.scr took slot a (slots.txt).
                "edgeimg: boot: slot a",
                "pi-update-test: persist=none extra=none",
            ])
        },
        &Silent,
    )
    .expect("v1's boot (smoke on raspi3b)");
    assert!(
        said(&r, "edgeimg.test=node-arg"),
        "the kernel did not get cmdline.txt's arguments"
    );
    // k0s's pre-flight checks for a controller+worker on the Pi's kernel: no error.
    let sysinfo = r.sysinfo.as_ref().expect("a sysinfo line");
    assert_eq!(sysinfo.errors, 0, "{}", sysinfo.text);
    eprintln!("pi3 on raspi3b: {}", sysinfo.text);
    eprintln!("pi3 on raspi3b: ready after {:.1} s", r.boot_seconds);
    assert!(kernel_cmdline(&r.console).contains("edgeimg.slot=a"));
    assert!(
        said(&r, "pi-update-test: watchdog device: yes"),
        "bcm2835_wdt is loaded (the watchdog a trial arms on a Pi)"
    );
    let card = r.disk_copy.clone().expect("the disk copy is kept");
    // The 2.3 GiB image on a 1500 MiB request: the card is the image's size rounded up to
    // a power of two, as QEMU wants an SD card.
    let (card_len, image_len) = (len_of(&card), len_of(&image));
    assert!(
        card_len.is_power_of_two() && card_len >= image_len && card_len < 2 * image_len,
        "{card_len} for an image of {image_len}"
    );
    assert!(
        !qemu::tryboot_flag(&card).exists(),
        "no tryboot flag asked for"
    );
    assert!(!fat_listing(&card).iter().any(|l| l == "::/trial.txt"));
    assert_eq!(mtype(&card, "slots.txt"), "good=a\n");
    assert!(mtype(&card, "config.txt")
        .lines()
        .any(|l| l == "os_prefix=slot-a/"));

    // 2. configure, v2 into slot b offline, configure again: the trial U-Boot boots next,
    // and the node config is the last one written.
    configure_card(&card, d, "first");
    let r = update_card(&card, &bundle2);
    assert_eq!(
        (&r["slot"], &r["version"], &r["tries"]),
        (&"b".into(), &"2".into(), &1.into()),
        "{r}"
    );
    assert_eq!(r["boot_file"], "slot-b/", "{r}");
    let slots = card_slots(&card);
    assert!(
        slots[1]["trial"] == true
            && slots[1]["version"] == "2"
            && slots[1]["active"] == true
            && slots[1]["tries_left"] == 1
            && slots[0]["active"] == false,
        "{slots}"
    );
    assert_eq!(mtype(&card, "trial.txt"), "trial=b\ntries=1\n");
    assert!(mtype(&card, "slot-b/bootargs.txt").contains("edgeimg.slot=b"));
    let record = mtype(&card, "edgeimg/update/trial");
    assert_eq!(record, "b 2 1 offline\n");
    let said_configure = configure_card(&card, d, "second");
    assert!(
        said_configure.contains("1 of the A/B update's state kept"),
        "{said_configure}"
    );
    assert_eq!(mtype(&card, "edgeimg/update/trial"), record);
    assert_eq!(mtype(&card, "trial.txt"), "trial=b\ntries=1\n");
    let slots = card_slots(&card);
    assert!(
        slots[1]["trial"] == true && slots[1]["version"] == "2" && slots[1]["active"] == true,
        "configure undid the trial: {slots}"
    );

    // 3. v2 on trial, ready, marked good.
    let b = qemu::boot_disk(
        &card,
        &spec,
        &opts(&[
            "edgeimg: boot: slot b on trial (tries left after this one: 0)",
            "configured-second",
            "edgeimg: update: v2 on trial in slot b",
            "edgeimg: update: v2 is ready: slot b marked good",
        ]),
        None,
        &Silent,
    )
    .expect("v2's trial boot");
    assert!(kernel_cmdline(&b.console).contains("edgeimg.slot=b"));
    assert!(said(
        &b,
        "edgeimg: update: the watchdog is off for this trial ([update] watchdog = 0)"
    ));
    assert!(
        said(&b, "pi-update-test: persist=kept extra=yes"),
        "v2's root with the data partition of v1:\n{}",
        b.console.join("\n")
    );
    assert_marked_good(&card, 'b', "2");

    // 4. v3 into slot a.
    let r = update_card(&card, &bundle3);
    assert_eq!(
        (&r["slot"], &r["from_version"]),
        (&"a".into(), &"2".into()),
        "{r}"
    );

    // 5. v3's init fails; the boot is cut there.
    let b = qemu::boot_disk(
        &card,
        &spec,
        &opts(&[]),
        Some("v3 init exits at once"),
        &Silent,
    )
    .expect("v3's trial boot");
    assert!(kernel_cmdline(&b.console).contains("edgeimg.slot=a"));
    assert!(said(&b, "edgeimg: boot: slot a on trial"));

    // 6. No tries left: v2, which says so.
    let b = qemu::boot_disk(&card, &spec, &opts(&[]), Some("back on v"), &Silent)
        .expect("the boot after v3's failed trial");
    assert!(said(
        &b,
        "edgeimg: boot: the trial of slot a has no tries left: booting slot b"
    ));
    assert!(kernel_cmdline(&b.console).contains("edgeimg.slot=b"));
    assert!(
        b.ready_line
            .contains("edgeimg: update: v3 failed (it did not come up), back on v2"),
        "{}",
        b.ready_line
    );
    let listing = fat_listing(&card);
    assert!(
        !listing
            .iter()
            .any(|l| l == "::/trial.txt" || l == "::/slot-a/vmlinuz"),
        "slot a is left unbootable: {listing:?}"
    );
    // smoke kept the VM's folder for the card: remove it.
    std::fs::remove_dir_all(card.parent().unwrap()).unwrap();
    eprintln!(
        "pi3 on raspi3b: v1, offline v2 trial, good, v3 failed, back on v2 in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// The armhf update test's node config: its boot_cmd sources the script on the FAT.
const ARMHF_NODE: &str = r#"
boot_cmd = ["[ ! -e /boot/update-test.sh ] || . /boot/update-test.sh"]

[update]
watchdog = 0

[time]
ntp = []
"#;

/// What the armhf update test puts on its card: v1 writes a file on the data partition and,
/// once ready, applies the bundle on the FAT with the node's own edgeimg-update, which
/// reboots into the trial; every boot prints the file and the one only v2's root has.
const ARMHF_UPDATE_TEST: &str = r#"echo "armhf-update-test: persist=$(cat /var/lib/edgeimg-test/persist 2>/dev/null || echo none) extra=$(cat /usr/share/edgeimg-test/v2-extra 2>/dev/null || echo none)"
if [ ! -e /var/lib/edgeimg-test/persist ]; then
	mkdir -p /var/lib/edgeimg-test && echo kept >/var/lib/edgeimg-test/persist
	(
		while [ ! -e /run/edgeimg/ready ]; do sleep 1; done
		edgeimg-update /boot/v2.update --tries 1 --reboot
	) &
fi
"#;

/// Builds pi3-armhf (worker) version `v` with the test's node config and a fleet key in
/// `dir`, from a copy of the project's data that `change` edits; returns the output folder.
fn build_armhf_version(dir: &Path, key: &Path, v: &str, change: impl FnOnce(&Path)) -> PathBuf {
    let data = data_dir_copy(dir, &format!("data-armhf-v{v}"));
    change(&data);
    let vdir = dir.join(format!("armhf-v{v}"));
    std::fs::create_dir_all(&vdir).unwrap();
    let token = token_file(&vdir);
    let started = std::time::Instant::now();
    let out = build_with_node(
        &vdir,
        ARMHF_NODE,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--board",
            "pi3-armhf",
            "--role",
            "worker",
            "--token-file",
            token.to_str().unwrap(),
            "--no-xz",
            "--image-version",
            v,
            "--signing-key",
            key.to_str().unwrap(),
        ],
    );
    eprintln!(
        "build pi3-armhf v{v}: {:.0}s",
        started.elapsed().as_secs_f64()
    );
    out
}

/// pi3-armhf on raspi2b, the harness playing the firmware (config.txt names Debian's 32-bit
/// U-Boot, which it starts at 0x8000) and U-Boot running boot.scr with `bootz`: an update
/// applied on the node itself.
/// 1. v1 boots slot a to ready, writes a file on the data partition, then runs
///    `edgeimg-update` on v2's bundle: it verifies it, writes slot b, arms trial.txt and
///    reboots (a plain reboot: U-Boot counts the tries).
/// 2. U-Boot counts the try down and boots v2, which reaches ready, is marked good (judged
///    from outside: slots.txt, config.txt, inspect) and still has the data partition's file.
#[test]
fn pi3_armhf_updates_itself_through_u_boot_on_raspi2b() {
    let spec = board_qemu("pi3-armhf");
    need(&spec.system);
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fleet = d.join("fleet");
    let o = edgeimg(&["keys", "fleet", fleet.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = d.join("fleet.key");
    let v1 = build_armhf_version(d, &key, "1", |_| {});
    let v2 = build_armhf_version(d, &key, "2", |data| {
        let extra = data.join("overlays/rootfs/usr/share/edgeimg-test");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("v2-extra"), "yes\n").unwrap();
    });
    let stem = "pi3-armhf-worker";

    // The card: v1, the test's script and v2's bundle on the FAT; an SD card's size.
    let card = d.join("card.img");
    sparse_copy(&v1.join(format!("{stem}.img")), &card);
    let script = d.join("update-test.sh");
    std::fs::write(&script, ARMHF_UPDATE_TEST).unwrap();
    let fat = format!("{}@@1M", card.display());
    let bundle = v2.join(format!("{stem}.update"));
    for (from, to) in [(&script, "::/update-test.sh"), (&bundle, "::/v2.update")] {
        tool_ok("mcopy", &["-i", &fat, from.to_str().unwrap(), to]);
    }
    let config = mtype(&card, "config.txt");
    assert!(
        config.contains("kernel=u-boot.bin\n[pi3]\nkernel=u-boot-pi3.bin\n[all]\n"),
        "{config}"
    );
    let f = std::fs::OpenOptions::new().write(true).open(&card).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len.next_power_of_two()).unwrap();
    drop(f);

    let opts = |checks: &[&str]| boot_opts("worker", stem, checks);

    // 1. v1 to ready, then the update on the node and its reboot.
    let b = qemu::boot_disk(
        &card,
        &spec,
        &opts(&[
            "edgeimg: boot: slot a",
            "armhf-update-test: persist=none extra=none",
            "edgeimg: update: v2 armed on slot b as the next boot's trial (1 tries)",
            "edgeimg: update: rebooting into slot b",
            "reboot: Restarting system",
        ]),
        None,
        &Silent,
    )
    .expect("v1's boot and the update");
    assert!(kernel_cmdline(&b.console).contains("edgeimg.slot=a"));
    assert!(
        said(&b, "signed by the fleet key; writing slot b"),
        "{}",
        b.console.join("\n")
    );
    assert_eq!(mtype(&card, "trial.txt"), "trial=b\ntries=1\n");
    assert!(mtype(&card, "slot-b/bootargs.txt").contains("edgeimg.slot=b"));
    let slots = card_slots(&card);
    assert!(
        slots[1]["trial"] == true && slots[1]["version"] == "2" && slots[1]["active"] == true,
        "{slots}"
    );

    // 2. v2 on trial (bootz of slot b's zImage), ready, marked good.
    let b = qemu::boot_disk(
        &card,
        &spec,
        &opts(&[
            "edgeimg: boot: slot b on trial (tries left after this one: 0)",
            "edgeimg: update: v2 on trial in slot b",
            "edgeimg: update: v2 is ready: slot b marked good",
        ]),
        None,
        &Silent,
    )
    .expect("v2's trial boot");
    assert!(kernel_cmdline(&b.console).contains("edgeimg.slot=b"));
    assert!(
        said(&b, "armhf-update-test: persist=kept extra=yes"),
        "v2's root with the data partition of v1:\n{}",
        b.console.join("\n")
    );
    assert_marked_good(&card, 'b', "2");
    eprintln!(
        "pi3-armhf on raspi2b: v1, update on the node, v2 trial, good in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// The Wi-Fi script's wpa_supplicant.conf, under busybox sh as on the device.
#[test]
fn wifi_conf_quotes_nothing_it_cannot() {
    need("busybox");
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays/rootfs/usr/lib/edgeimg/wifi.sh");
    let conf = |ssid: &str, psk: &str, country: &str| -> String {
        let o = std::process::Command::new("busybox")
            .args(["sh", "-c", ". \"$0\"; wifi_conf \"$1\" \"$2\" \"$3\""])
            .arg(&lib)
            .args([ssid, psk, country])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let c = conf("shop \"floor\" $1", "pass phrase \"x\"", "DE");
    assert!(c.contains("country=DE\n"), "{c}");
    // The SSID goes in hex: quotes and dollars in it cannot break the file.
    assert!(
        c.contains(&format!("\tssid={}\n", hex::encode("shop \"floor\" $1"))),
        "{c}"
    );
    assert!(c.contains("\tpsk=\"pass phrase \"x\"\"\n"), "{c}");
    let raw = "a".repeat(64);
    assert!(conf("n", &raw, "").contains(&format!("\tpsk={raw}\n")));
    let open = conf("n", "", "");
    assert!(
        open.contains("\tkey_mgmt=NONE\n") && !open.contains("country="),
        "{open}"
    );
}

/// The same image (kernel, initramfs, root, init) on QEMU's generic arm64 machine: virtio
/// disk, the DTB QEMU generates, the console on the PL011.
#[test]
fn pi3_image_boots_on_qemu_virt_too() {
    let mut spec = board_qemu("pi3");
    need(&spec.system);
    spec.machine = "virt".into();
    spec.cpu = Some("cortex-a72".into());
    spec.smp = 2;
    spec.disk = qemu::DiskInterface::Virtio;
    spec.console_serial = 0;
    // No Pi firmware and no Pi U-Boot on virt: QEMU starts slot a's kernel and initramfs
    // with its command line, and makes its own device tree.
    let direct = spec.direct.as_mut().unwrap();
    direct.firmware = None;
    direct.kernel = "slot-a/vmlinuz".into();
    direct.initrd = Some("slot-a/initrd.img".into());
    direct.cmdline_file = Some("slot-a/cmdline.txt".into());
    direct.dtb = None;
    direct.append = vec!["console=ttyAMA0".into()];
    let opts = SmokeOptions {
        timeout: Duration::from_secs(300),
        extra_console_checks: vec!["root=/dev/vda2".into()],
        ..smoke_options("controller+worker", "pi-test-1")
    };
    let r = qemu::smoke(&preseeded_image(), &spec, &opts, &Silent).expect("pi3 image on -M virt");
    eprintln!("pi3 image on virt: ready after {:.1} s", r.boot_seconds);
}

/// What vulnerability scanners read, judged by their own tools: the SBOM by the SPDX
/// validator, its purls by `packageurl-python` (the purl specification's reference parser),
/// and the root's dpkg database by `dpkg-query --admindir`: the same packages and versions
/// as the SBOM, each with its files, and Debian's os-release.
#[test]
fn pi3_sbom_and_root_dpkg_status_agree_for_scanners() {
    let out = &built().out;
    let sbom_path = out.join("sbom.spdx.json");
    let v = run_tool("pyspdxtools", &["-i", sbom_path.to_str().unwrap()]);
    assert!(
        v.status.success(),
        "pyspdxtools rejects the SBOM:\n{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sbom_path).unwrap()).unwrap();
    let pkgs = d["packages"].as_array().unwrap();
    let os = pkgs
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "OPERATING-SYSTEM")
        .expect("an OPERATING-SYSTEM package");
    assert_eq!(os["name"], "debian");
    assert_eq!(os["versionInfo"], "13");

    // Every purl parses and is in canonical form (what the parser prints back).
    let purls: Vec<&str> = pkgs
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    let list = out.join("purls.txt");
    std::fs::write(&list, purls.join("\n") + "\n").unwrap();
    let check = run_tool(
        "python3",
        &[
            "-c",
            "import sys\n\
             from packageurl import PackageURL\n\
             bad = 0\n\
             for line in open(sys.argv[1]):\n\
             \x20   s = line.strip()\n\
             \x20   p = PackageURL.from_string(s)\n\
             \x20   if p.to_string() != s:\n\
             \x20       print('not canonical:', s, '->', p.to_string()); bad += 1\n\
             \x20   if p.type == 'deb':\n\
             \x20       print('deb', p.name, p.version, p.qualifiers['arch'], p.qualifiers['distro'], p.qualifiers.get('upstream', '-'))\n\
             \x20   else:\n\
             \x20       print(p.type, p.namespace, p.name, p.version)\n\
             sys.exit(1 if bad else 0)",
            list.to_str().unwrap(),
        ],
    );
    let parsed = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "packageurl refuses the purls:\n{parsed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        parsed
            .lines()
            .any(|l| l.starts_with("github k0sproject k0s ")),
        "{parsed}"
    );
    let debs: std::collections::BTreeSet<String> = parsed
        .lines()
        .filter_map(|l| l.strip_prefix("deb "))
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w[3], "debian-13", "{l}");
            format!("{} {} {}", w[0], w[1], w[2])
        })
        .collect();
    // Advisories are keyed by source package: packages built from another source say so.
    assert!(
        parsed
            .lines()
            .any(|l| l.starts_with("deb libc6 ") && l.ends_with(" glibc")),
        "{parsed}"
    );
    assert!(debs.iter().any(|d| d.starts_with("base-files ")));

    // The root's dpkg database, read by dpkg itself.
    let img = image();
    let dump = tool_ok("sfdisk", &["-d", img.to_str().unwrap()]);
    let parts = sfdisk_parts(&dump);
    let root = out.join("root-dpkg.sqfs");
    extract(&img, parts[1].0 * 512, parts[1].1 * 512, &root);
    let dir = out.join("root-dpkg");
    tool_ok(
        "unsquashfs",
        &[
            "-q",
            "-no-xattrs",
            "-d",
            dir.to_str().unwrap(),
            root.to_str().unwrap(),
            "var/lib/dpkg",
            "usr/lib/os-release",
            "etc/os-release",
        ],
    );
    std::fs::remove_file(&root).unwrap();
    let admindir = dir.join("var/lib/dpkg");
    let admin = format!("--admindir={}", admindir.display());
    let w = tool_ok(
        "dpkg-query",
        &[
            &admin,
            "-W",
            "-f",
            "${Package} ${Version} ${Architecture} ${db:Status-Abbrev}\n",
        ],
    );
    let mut installed = std::collections::BTreeSet::new();
    for l in w.lines() {
        // db:Status-Abbrev is three characters: "ii " for an installed package.
        let (pkg, status) = l.trim_end().rsplit_once(' ').unwrap();
        assert_eq!(status.trim(), "ii", "{l}");
        installed.insert(pkg.to_string());
    }
    assert_eq!(
        installed, debs,
        "dpkg-query and the SBOM list different packages"
    );
    let files = tool_ok("dpkg-query", &[&admin, "-L", "busybox-static"]);
    assert!(files.lines().any(|l| l == "/usr/bin/busybox"), "{files}");
    let owner = tool_ok("dpkg-query", &[&admin, "-S", "/usr/lib/os-release"]);
    // On an amd64 host dpkg names the arm64 package with its architecture.
    assert!(
        owner.starts_with("base-files: ") || owner.starts_with("base-files:arm64: "),
        "{owner}"
    );
    let osr = std::fs::read_to_string(dir.join("usr/lib/os-release")).unwrap();
    assert!(
        osr.lines().any(|l| l == "ID=debian") && osr.lines().any(|l| l == "VERSION_ID=\"13\""),
        "{osr}"
    );
    assert_eq!(
        std::fs::read_link(dir.join("etc/os-release")).unwrap(),
        Path::new("../usr/lib/os-release")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- Raspberry Pi 5: the trixie-backports kernel, EEPROM boot ---

const PI5_STEM: &str = "pi5-controller+worker";

/// One pi5 build shared by the pi5 tests (its kernel comes from trixie-backports).
fn pi5_built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = build_with_node(
            dir.path(),
            "hostname = \"pi5-test-1\"\n[time]\nntp = []\n",
            &[
                "--board",
                "pi5",
                "--role",
                "controller+worker",
                "--no-xz",
                "--imager-url-base",
                URL_BASE,
            ],
        );
        Built { dir, out }
    })
}

fn pi5_image() -> PathBuf {
    pi5_built().out.join(format!("{PI5_STEM}.img"))
}

/// `file` of the boot partition copied out with mtools.
fn mcopy_out(image: &Path, file: &str, to: &Path) {
    let spec = format!("{}@@1M", image.display());
    tool_ok(
        "mcopy",
        &[
            "-n",
            "-i",
            &spec,
            &format!("::/{file}"),
            to.to_str().unwrap(),
        ],
    );
}

#[test]
fn pi5_image_is_an_eeprom_boot_card_with_the_pi5_device_trees() {
    let img = pi5_image();
    let dump = tool_ok("sfdisk", &["-d", img.to_str().unwrap()]);
    assert!(dump.contains("label: dos"), "{dump}");
    let label_id = dump
        .lines()
        .find_map(|l| l.strip_prefix("label-id: 0x"))
        .expect("disk signature")
        .to_string();
    let parts = sfdisk_parts(&dump);
    // boot, root-a, root-b (the update's slot, holes until then), data.
    assert_eq!(parts.len(), 4, "{dump}");
    assert_eq!(
        parts[1].1, parts[2].1,
        "both root slots have one size: {dump}"
    );
    assert!(
        parts[0].2.contains("type=c") && parts[0].2.contains("bootable"),
        "{dump}"
    );
    let fat = pi5_built().out.join("boot.fat");
    extract(&img, parts[0].0 * 512, parts[0].1 * 512, &fat);
    tool_ok("fsck.fat", &["-n", fat.to_str().unwrap()]);
    std::fs::remove_file(&fat).unwrap();
    let spec = format!("{}@@1M", img.display());
    let listing = tool_ok("mdir", &["-/", "-b", "-i", &spec, "::/"]);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.trim().trim_start_matches("::/"))
        .collect();
    for f in [
        "slot-a/bcm2712-rpi-5-b.dtb",
        "slot-a/bcm2712-d-rpi-5-b.dtb",
        "config.txt",
        "slot-a/cmdline.txt",
        "slot-a/vmlinuz",
        "slot-a/initrd.img",
    ] {
        assert!(
            names.contains(&f),
            "{f} missing from the boot partition:\n{listing}"
        );
    }
    // The Pi 5 boots from its EEPROM: no GPU firmware on the card.
    for n in &names {
        let firmware = (n.starts_with("start") && n.ends_with(".elf"))
            || n.starts_with("fixup")
            || *n == "bootcode.bin";
        assert!(!firmware, "{n} on a Pi 5 card:\n{listing}");
    }
    let config = mtype(&img, "config.txt");
    for line in [
        "arm_64bit=1",
        "os_prefix=slot-a/",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
    ] {
        assert!(
            config.lines().any(|l| l.trim() == line),
            "config.txt lacks {line:?}:\n{config}"
        );
    }
    let cmdline = mtype(&img, "slot-a/cmdline.txt");
    assert_eq!(cmdline.trim_end().lines().count(), 1, "{cmdline:?}");
    for arg in [
        format!("edgeimg.root=PARTUUID={label_id}-02"),
        format!("edgeimg.data=PARTUUID={label_id}-04"),
        "edgeimg.slot=a".to_string(),
    ] {
        assert!(
            cmdline.split_whitespace().any(|a| a == arg),
            "cmdline.txt lacks {arg}: {cmdline}"
        );
    }
    // No console= (the kernel follows the DTB's stdout-path, see boards/pi5.toml).
    assert!(!cmdline.contains("console="), "{cmdline}");
    // The device tree, read by dtc: a Pi 5, its console the PL011 of the debug UART
    // (stdout-path serial10 -> ttyAMA10), and the SD controller sdhci-brcmstb drives.
    let dtb = pi5_built().out.join("pi5.dtb");
    mcopy_out(&img, "slot-a/bcm2712-rpi-5-b.dtb", &dtb);
    let dts = tool_ok(
        "dtc",
        &["-q", "-I", "dtb", "-O", "dts", dtb.to_str().unwrap()],
    );
    std::fs::remove_file(&dtb).unwrap();
    for needle in [
        "model = \"Raspberry Pi 5\";",
        "stdout-path = \"serial10:115200n8\";",
        "serial10 = \"/soc@107c000000/serial@7d001000\";",
        "brcm,bcm2712-sdhci",
        "raspberrypi,rp1-gem",
    ] {
        assert!(dts.contains(needle), "bcm2712-rpi-5-b.dtb lacks {needle}");
    }
}

#[test]
fn pi5_kernel_comes_from_backports_with_the_pi5_modules() {
    let out = &pi5_built().out;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let inputs = manifest["inputs"].as_array().unwrap();
    let suite_of = |name: &str| -> String {
        let i = inputs
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not among the inputs"));
        i["suite"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(suite_of("linux-image-arm64"), "trixie-backports");
    assert_eq!(suite_of("busybox-static"), "trixie");
    assert_eq!(suite_of("kmod"), "trixie", "kmod is not a kernel package");
    let kver = manifest["kernel_version"].as_str().unwrap().to_string();
    for prefix in ["linux-base-", "linux-binary-", "linux-modules-"] {
        let name = format!("{prefix}{kver}");
        assert_eq!(suite_of(&name), "trixie-backports", "{name}");
    }
    assert!(!kver.starts_with("6.12"), "still trixie's kernel: {kver}");
    let sbom = std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap();
    assert!(sbom.contains("from Debian suite trixie-backports"));

    let img = pi5_image();
    let dump = tool_ok("sfdisk", &["-d", img.to_str().unwrap()]);
    let parts = sfdisk_parts(&dump);
    let root = out.join("root.sqfs");
    extract(&img, parts[1].0 * 512, parts[1].1 * 512, &root);
    let list = tool_ok("unsquashfs", &["-lln", root.to_str().unwrap()]);
    std::fs::remove_file(&root).unwrap();
    for needle in [
        "/usr/local/bin/k0s".to_string(),
        format!("/usr/lib/modules/{kver}/config"),
        format!("/usr/lib/modules/{kver}/modules.dep"),
        "/sdhci-brcmstb.ko".into(),
        "/nvme.ko".into(),
        "/rp1_pci.ko".into(),
        "/pinctrl-rp1.ko".into(),
        "/clk-rp1.ko".into(),
        "/macb.ko".into(),
        "/dwc3.ko".into(),
        "/xhci-plat-hcd.ko".into(),
        "/bcm2835_wdt.ko".into(),
        "/brcmfmac.ko".into(),
    ] {
        assert!(
            list.lines().any(|l| l.contains(&needle)),
            "root lacks {needle}"
        );
    }
    assert!(
        !list.lines().any(|l| l.contains("/vmlinuz")),
        "the kernel image belongs on the boot partition only"
    );

    // The initramfs (zstd newc cpio, read by cpio) loads the SD, NVMe and USB drivers.
    let initrd = out.join("initrd.img.copy");
    mcopy_out(&img, "slot-a/initrd.img", &initrd);
    let listing = {
        need("zstd");
        need("cpio");
        let o = std::process::Command::new("sh")
            .args(["-c", "zstd -dc < \"$0\" | cpio -it --quiet"])
            .arg(&initrd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    std::fs::remove_file(&initrd).unwrap();
    for m in [
        "sdhci-brcmstb.ko",
        "nvme.ko",
        "usb-storage.ko",
        "rp1_pci.ko",
        "virtio_blk.ko",
    ] {
        assert!(
            listing.lines().any(|l| l.contains(m)),
            "initramfs lacks {m}"
        );
    }
}

#[test]
fn pi5_bmap_copies_to_the_same_bytes_and_imager_entry_is_for_the_pi5() {
    let img = pi5_image();
    let out = &pi5_built().out;
    let bmap = out.join(format!("{PI5_STEM}.bmap"));
    let copy = out.join("copy.img");
    tool_ok(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    tool_ok("cmp", &[img.to_str().unwrap(), copy.to_str().unwrap()]);
    std::fs::remove_file(&copy).unwrap();
    // The folder's Imager repository file lists the pi5 image, for Imager's Pi 5 device.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("os_list.json")).unwrap()).unwrap();
    let e = &json["os_list"][0];
    let sum = tool_ok("sha256sum", &[img.to_str().unwrap()]);
    assert_eq!(
        e["extract_sha256"],
        sum.split_whitespace().next().unwrap(),
        "{e}"
    );
    assert_eq!(e["devices"][0], "pi5-64bit", "{e}");
    assert_eq!(e["url"], format!("{URL_BASE}{PI5_STEM}.img"), "{e}");
    let devices = json["imager"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{json}");
    assert_eq!(devices[0]["name"], "Raspberry Pi 5", "{json}");
    assert_eq!(devices[0]["tags"][0], "pi5-64bit", "{json}");
}

/// QEMU has no Pi 5: the pi5 image's own kernel (trixie-backports), initramfs and root boot
/// on `-M virt` (cortex-a72, kernel-direct, virtio disk) to the ready line, with the Pi 5
/// drivers loaded by the initramfs on the way.
#[test]
fn pi5_image_boots_on_qemu_virt_to_the_ready_line() {
    let spec = board_qemu("pi5");
    need(&spec.system);
    let kver = {
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(pi5_built().out.join("manifest.json")).unwrap(),
        )
        .unwrap();
        m["kernel_version"].as_str().unwrap().to_string()
    };
    let opts = SmokeOptions {
        timeout: Duration::from_secs(300),
        extra_console_checks: vec![
            format!("Linux version {kver}"),
            "root=/dev/vda2".into(),
            "mounted read-only through dm-verity".into(),
        ],
        ..smoke_options("controller+worker", "pi5-test-1")
    };
    let r = qemu::smoke(&pi5_image(), &spec, &opts, &Silent).expect("pi5 image on -M virt");
    eprintln!("pi5 image on virt: ready after {:.1} s", r.boot_seconds);
}
