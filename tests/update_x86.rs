//! A/B updates of an x86-64 node under QEMU (TCG, OVMF, systemd-boot): five boots, two of
//! them cut short.
//!
//! 0. v1 starts applying a bundle and QEMU is killed while the root is written.
//! 1. v1 again writes files on the data partition and in k0s's data dir, is refused a bundle with a
//!    flipped byte and one signed by another key, then applies v2 with `edgeimg-update`
//!    over HTTP (127.0.0.1 through guestfwd) as a trial with one try.
//! 2. v2 (another k0s version, an extra root file) boots on trial, reaches ready, is marked
//!    good; the data files are still there.
//! 3. Offline, `edgeimg update` writes v3 into slot A of the disk and arms it (inspect shows
//!    the slot on trial); v3's init exits at once, the kernel panics and restarts the machine
//!    by itself (the image's `panic=10`), systemd-boot has counted the try.
//! 4. The node is back on v2 by itself and says so on the console.
//!
//! Beside it, a trial that hangs: the hardware watchdog resets it, and the node falls back.
//!
//! Judged from outside where possible: the ESP's files (mtools), inspect --json (jsonschema).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use edgeimg::progress::Silent;
use edgeimg::qemu;

const V2_K0S: &str = "v1.34.11+k0s.0";

const NODE: &str = r#"
hostname = "update-test-1"
boot_cmd = [
  "echo persist=$(cat /var/lib/edgeimg-test/persist 2>/dev/null || echo none) k0sdata=$(cat /var/lib/k0s/edgeimg-test 2>/dev/null || echo none)",
  "mkdir -p /var/lib/edgeimg-test /var/lib/k0s && echo kept > /var/lib/edgeimg-test/persist && echo kept > /var/lib/k0s/edgeimg-test",
  "echo v2-extra=$(cat /usr/share/edgeimg-test/v2-extra 2>/dev/null || echo none)",
  "[ -e /var/lib/edgeimg-test/applied ] || { edgeimg-update http://10.0.2.100/flipped.update || echo refused-flipped; edgeimg-update http://10.0.2.100:81/other.update || echo refused-other; edgeimg-update http://10.0.2.100:82/v2.update --tries 1 && touch /var/lib/edgeimg-test/applied; }",
]

[k0s]
role = "worker"

[time]
ntp = []
"#;

/// The hang test's node: once the trial's watchdog is armed (its daemon's pid file), a card
/// marked with `hang-test` on its FAT stops its kernel: the reboot on panic is turned off and
/// the kernel crashed, so the CPU halts and only the watchdog can reset it. The mark goes
/// first, so the boot after is a plain one.
const HANG_NODE: &str = r#"
hostname = "hang-test-1"
boot_cmd = [
  "[ ! -e /boot/hang-test ] || { rm -f /boot/hang-test; sync; ( while [ ! -s /run/edgeimg/watchdog.pid ]; do sleep 1; done; echo 'hang-test: the watchdog is armed: stopping the kernel'; echo 0 >/proc/sys/kernel/panic; echo 1 >/proc/sys/kernel/sysrq; echo c >/proc/sysrq-trigger ) & }",
]

[update]
watchdog = 10

[k0s]
role = "worker"

[time]
ntp = []
"#;

/// Builds version `v` with node config `node` into `dir/out-v<v>`; `data`: another data dir;
/// `k0s`: a local k0s.
fn build_version(
    dir: &Path,
    node: &str,
    v: &str,
    data: Option<&Path>,
    k0s: Option<(&Path, &str)>,
) -> PathBuf {
    let out = dir.join(format!("out-v{v}"));
    let node_file = dir.join("node.toml");
    std::fs::write(&node_file, node).unwrap();
    let node = node_file;
    let token = token_file(dir);
    let key = dir.join("fleet.key");
    let mut args: Vec<String> = Vec::new();
    if let Some(d) = data {
        args.extend(["--data-dir".into(), d.display().to_string()]);
    }
    args.extend(
        [
            "build",
            "--board",
            "x86-64",
            "--role",
            "worker",
            "--no-xz",
            "--image-version",
            v,
        ]
        .map(String::from),
    );
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(["--cache-dir".into(), cache_dir().display().to_string()]);
    args.extend(["--node".into(), node.display().to_string()]);
    args.extend(["--token-file".into(), token.display().to_string()]);
    args.extend(["--signing-key".into(), key.display().to_string()]);
    match k0s {
        Some((bin, version)) => args.extend([
            "--k0s-binary".into(),
            bin.display().to_string(),
            "--k0s-version".into(),
            version.into(),
        ]),
        None => args.extend(k0s_args()),
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let o = edgeimg(&refs);
    assert!(o.status.success(), "build v{v} failed:\n{}", stderr(&o));
    eprintln!("build v{v}: {:.0}s", started.elapsed().as_secs_f64());
    out
}

/// The bundle's members in order, as (name, bytes).
fn members(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(bundle);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn pack(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn esp_has(disk: &Path, boot_start: u64, path: &str) -> bool {
    let spec = format!("{}@@{}", disk.display(), boot_start * 512);
    run_tool("mdir", &["-i", &spec, &format!("::/{path}")])
        .status
        .success()
}

fn esp_list(disk: &Path, boot_start: u64) -> String {
    let spec = format!("{}@@{}", disk.display(), boot_start * 512);
    stdout(&run_tool("mdir", &["-i", &spec, "-b", "::/EFI/Linux"]))
}

fn has(r: &qemu::SmokeReport, needle: &str) -> bool {
    r.console.iter().any(|l| l.contains(needle))
}

#[test]
fn a_node_updates_itself_falls_back_from_a_broken_update_and_takes_offline_updates() {
    let t0 = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = edgeimg(&["keys", "fleet", d.join("fleet").to_str().unwrap()]);
    assert!(o.status.success(), "keys fleet: {}", stderr(&o));

    // v1; v2 with another k0s and an extra root file; v3 whose init fails at once.
    let v1 = build_version(d, NODE, "1", None, None);
    let data2 = data_dir_copy(d, "data2");
    std::fs::create_dir_all(data2.join("overlays/rootfs/usr/share/edgeimg-test")).unwrap();
    std::fs::write(
        data2.join("overlays/rootfs/usr/share/edgeimg-test/v2-extra"),
        "yes\n",
    )
    .unwrap();
    let k0s2 = d.join("k0s-v2");
    let stand_in = String::from_utf8(k0s_stand_in())
        .unwrap()
        .replace(K0S_VERSION, V2_K0S);
    std::fs::write(&k0s2, stand_in).unwrap();
    std::fs::set_permissions(&k0s2, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v2 = build_version(d, NODE, "2", Some(&data2), Some((&k0s2, V2_K0S)));
    let data3 = data_dir_copy(d, "data3");
    std::fs::write(
        data3.join("overlays/initramfs/init"),
        "#!/bin/busybox sh\necho 'edgeimg-test: v3 init exits at once'\nexit 1\n",
    )
    .unwrap();
    let v3 = build_version(d, NODE, "3", Some(&data3), None);
    let bundle2 = std::fs::read(v2.join("x86-64-worker.update")).unwrap();
    let bundle3 = v3.join("x86-64-worker.update");
    let img_xz = std::fs::metadata(v1.join("x86-64-worker.img"))
        .unwrap()
        .len();
    eprintln!(
        "bundle v2: {} MiB (image {} MiB, sparse)",
        bundle2.len() >> 20,
        img_xz >> 20
    );

    // The bad bundles: a flipped byte in root.img, and one re-signed with another key.
    let mut flipped = bundle2.clone();
    let m = members(&bundle2);
    let root_at = 512 * 3 + m[0].1.len().div_ceil(512) * 512 + 512;
    flipped[root_at + 123_456] ^= 0x40;
    let other = edgeimg::bundle::keys::generate(&d.join("other")).unwrap();
    let other_key = edgeimg::bundle::keys::load_signing_key(&other.key).unwrap();
    let mut resigned = m.clone();
    resigned[1].1 = edgeimg::bundle::keys::sign(&other_key, &m[0].1).to_vec();
    let other_bundle = pack(&resigned);

    // One server (and guestfwd rule, which is one host connection) per bundle: an aborted
    // download must not leave its bytes in the next one's connection.
    let spec = board_qemu("x86-64");
    let mut opts = smoke_options("worker", "update-test-1");
    opts.keep = true;
    let mut servers = Vec::new();
    for (port, name, body) in [
        (80, "/flipped.update", flipped),
        (81, "/other.update", other_bundle.clone()),
        (82, "/v2.update", bundle2.clone()),
    ] {
        let s = Server::start(vec![(name.into(), body)]);
        opts.guestfwd
            .push(format!("tcp:10.0.2.100:{port}-tcp:127.0.0.1:{}", s.port));
        servers.push(s);
    }
    let boot_start = 2048;

    // Boot 0: QEMU killed while the node writes a bundle's root into slot B.
    let b0 = qemu::smoke_until(
        &v1.join("x86-64-worker.img"),
        &spec,
        &opts,
        "edgeimg: update: root.img, ",
        &Silent,
    )
    .expect("boot 0 (killed while applying)");
    let disk = b0.disk_copy.clone().unwrap();
    eprintln!("boot 0 (killed mid-apply): {:.0}s", b0.boot_seconds);

    // Boot 1: still v1 after the kill; refuses the bad bundles and arms v2.
    let b1 = qemu::boot_disk(&disk, &spec, &opts, None, &Silent).expect("boot 1 (v1)");
    let log1 = b1.console.join("\n");
    assert!(
        has(&b1, "edgeimg: update: refused: root.img's sha256 is"),
        "{log1}"
    );
    assert!(
        has(&b1, "edgeimg: update: refused: bad signature"),
        "{log1}"
    );
    assert!(
        has(&b1, "refused-flipped") && has(&b1, "refused-other"),
        "{log1}"
    );
    assert!(
        has(
            &b1,
            "edgeimg: update: v2 armed on slot b as the next boot's trial (1 tries)"
        ),
        "{log1}"
    );
    assert!(has(&b1, "root: slot a on /dev/vda2"), "{log1}");
    assert!(
        !has(&b1, "failed ("),
        "a trial armed during this boot is not a failed one: {log1}"
    );
    assert!(has(&b1, "k0s=v1.34.10+k0s.0"), "{log1}");
    eprintln!("boot 1: {:.0}s", b1.boot_seconds);
    // The apply time on the node (TCG: an emulated CPU, so slower than any real board).
    let applied = b1
        .console
        .iter()
        .find(|l| l.contains("edgeimg: update: fetched, written and checked"));
    assert!(applied.is_some(), "{log1}");
    eprintln!("apply on the node: {}", applied.unwrap().trim());
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-b+1.efi"),
        "{}",
        esp_list(&disk, boot_start)
    );

    // Boot 2: v2 on trial, ready, marked good, the data kept.
    opts.expect.k0s_version = V2_K0S.into();
    opts.extra_console_checks = vec!["edgeimg: update: v2 is ready: slot b marked good".into()];
    let b2 = qemu::boot_disk(&disk, &spec, &opts, None, &Silent).expect("boot 2 (v2 trial)");
    let log2 = b2.console.join("\n");
    assert!(has(&b2, "edgeimg: update: v2 on trial in slot b"), "{log2}");
    assert!(has(&b2, "root: slot b on /dev/vda3"), "{log2}");
    assert!(has(&b2, "persist=kept k0sdata=kept"), "{log2}");
    assert!(has(&b2, "v2-extra=yes"), "{log2}");
    eprintln!("boot 2: {:.0}s", b2.boot_seconds);
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-b.efi"),
        "{}",
        esp_list(&disk, boot_start)
    );
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-a.efi"),
        "v1 stays as the fallback"
    );

    // Offline: another key is refused; v3 is written into slot A and armed.
    std::fs::write(d.join("other.update"), &other_bundle).unwrap();
    let o = edgeimg(&[
        "update",
        disk.to_str().unwrap(),
        d.join("other.update").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad signature"), "{}", stderr(&o));
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-a.efi"),
        "refused before disarming"
    );
    let started = std::time::Instant::now();
    let o = edgeimg(&[
        "--json",
        "update",
        disk.to_str().unwrap(),
        bundle3.to_str().unwrap(),
        "--tries",
        "1",
    ]);
    assert!(o.status.success(), "edgeimg update: {}", stderr(&o));
    eprintln!(
        "edgeimg update (offline): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    check_json("update.schema.json", &o.stdout);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["slot"], "a");
    assert_eq!(r["version"], "3");
    assert_eq!(r["from_version"], "2");
    let o = edgeimg(&["--json", "inspect", disk.to_str().unwrap()]);
    assert!(o.status.success(), "inspect: {}", stderr(&o));
    check_json("inspect.schema.json", &o.stdout);
    let ins: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let slots = &ins["slots"];
    assert_eq!(slots[0]["version"], "3", "{slots}");
    assert_eq!(slots[0]["trial"], true, "{slots}");
    assert_eq!(
        slots[0]["active"], true,
        "the newer trial boots first: {slots}"
    );
    assert_eq!(slots[1]["version"], "2", "{slots}");
    assert_eq!(slots[1]["bootable"], true, "{slots}");

    // Boot 3: v3's init exits, the kernel panics and restarts the machine by itself, which
    // ends QEMU (-no-reboot).
    let b3 = qemu::boot_disk_until_exit(&disk, &spec, &opts, &Silent).expect("boot 3 (v3)");
    let log3 = b3.console.join("\n");
    assert!(has(&b3, "v3 init exits at once"), "{log3}");
    assert!(has(&b3, "Kernel panic - not syncing"), "{log3}");
    assert!(
        has(&b3, "Rebooting in 10 seconds"),
        "a panic must restart the node (panic=10): {log3}"
    );
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-a+0-1.efi"),
        "systemd-boot counted the try: {}",
        esp_list(&disk, boot_start)
    );

    // Boot 4: back on v2 by itself, with the line saying so.
    opts.extra_console_checks = vec![];
    let b4 = qemu::boot_disk(&disk, &spec, &opts, None, &Silent).expect("boot 4 (back on v2)");
    let log4 = b4.console.join("\n");
    assert!(
        has(
            &b4,
            "edgeimg: update: v3 failed (it did not come up), back on v2"
        ),
        "{log4}"
    );
    assert!(has(&b4, "root: slot b on /dev/vda3"), "{log4}");
    assert!(has(&b4, "persist=kept k0sdata=kept"), "{log4}");
    assert!(
        !esp_has(&disk, boot_start, "EFI/Linux/edgeimg-a+0-1.efi"),
        "the failed UKI is cleaned up"
    );
    eprintln!(
        "boot 4: {:.0}s; whole test {:.0}s",
        b4.boot_seconds,
        t0.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&disk).ok();
}

/// A trial whose kernel stops after the trial's watchdog is armed (see [`HANG_NODE`]): the
/// chipset's TCO watchdog (iTCO_wdt on q35) resets the machine, which ends QEMU (-no-reboot);
/// systemd-boot has counted the try, and the next boot is v1, which says v2 failed.
#[test]
fn a_trial_that_hangs_is_reset_by_the_watchdog_and_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = edgeimg(&["keys", "fleet", d.join("fleet").to_str().unwrap()]);
    assert!(o.status.success(), "keys fleet: {}", stderr(&o));
    let v1 = build_version(d, HANG_NODE, "1", None, None);
    let v2 = build_version(d, HANG_NODE, "2", None, None);
    let disk = d.join("disk.img");
    sparse_copy(&v1.join("x86-64-worker.img"), &disk);
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(4 << 30).unwrap();
    drop(f);
    let o = edgeimg(&[
        "update",
        disk.to_str().unwrap(),
        v2.join("x86-64-worker.update").to_str().unwrap(),
        "--tries",
        "1",
    ]);
    assert!(o.status.success(), "edgeimg update: {}", stderr(&o));
    let boot_start = 2048;
    let mark = d.join("hang-test");
    std::fs::write(&mark, "").unwrap();
    let fat = format!("{}@@{}", disk.display(), boot_start * 512);
    let o = run_tool(
        "mcopy",
        &["-i", &fat, mark.to_str().unwrap(), "::/hang-test"],
    );
    assert!(o.status.success(), "mcopy: {}", stderr(&o));

    let spec = board_qemu("x86-64");
    let opts = smoke_options("worker", "hang-test-1");
    let hung =
        qemu::boot_disk_until_exit(&disk, &spec, &opts, &Silent).expect("the hanging trial's boot");
    let log = hung.console.join("\n");
    assert!(
        has(&hung, "edgeimg: update: v2 on trial in slot b"),
        "{log}"
    );
    assert!(
        has(
            &hung,
            "edgeimg: update: the hardware watchdog resets this trial if it stops running for 10s"
        ),
        "{log}"
    );
    assert!(
        has(&hung, "iTCO_wdt"),
        "the chipset's watchdog driver: {log}"
    );
    assert!(
        has(
            &hung,
            "hang-test: the watchdog is armed: stopping the kernel"
        ),
        "{log}"
    );
    assert!(has(&hung, "sysrq triggered crash"), "{log}");
    assert!(
        !has(&hung, "Rebooting in"),
        "the kernel must not restart itself here: {log}"
    );
    assert!(!has(&hung, "edgeimg: ready "), "{log}");
    assert!(
        esp_has(&disk, boot_start, "EFI/Linux/edgeimg-b+0-1.efi"),
        "systemd-boot counted the try: {}",
        esp_list(&disk, boot_start)
    );
    eprintln!(
        "hung trial: the watchdog ended it, last line at {:.0}s: {}",
        hung.boot_seconds, hung.ready_line
    );

    let back = qemu::boot_disk(&disk, &spec, &opts, None, &Silent).expect("the boot after");
    let log = back.console.join("\n");
    assert!(
        has(
            &back,
            "edgeimg: update: v2 failed (it did not come up), back on v1"
        ),
        "{log}"
    );
    assert!(has(&back, "root: slot a on /dev/vda2"), "{log}");
    assert!(
        !has(&back, "hang-test:"),
        "the mark was removed before the hang: {log}"
    );
}
