//! Host tests of the on-device scripts in overlays/: syntax (sh -n, busybox sh -n,
//! shellcheck), the initramfs's partition functions against real GPT/MBR image files and a
//! fake sysfs, and the k0s command lines built from a rendered node.env.
//!
//! Needs on the host: busybox (busybox-static), shellcheck, sfdisk (fdisk), sgdisk (gdisk),
//! mkfs.ext4 and resize2fs (e2fsprogs).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}` on the host: apt-get install {package}"
    );
}

fn scripts() -> Vec<PathBuf> {
    let mut out = vec![repo().join("overlays/initramfs/init")];
    let dir = repo().join("overlays/rootfs/usr/lib/edgeimg");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    more.sort();
    out.extend(more);
    out
}

/// Runs `busybox sh -c SCRIPT` with `env`, asserting success; returns stdout.
fn bb(script: &str, env: &[(&str, &Path)]) -> String {
    need("busybox", "busybox-static");
    let mut cmd = Command::new("busybox");
    cmd.arg("sh").arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "busybox sh -c {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn scripts_parse_and_pass_shellcheck() {
    need("busybox", "busybox-static");
    need("shellcheck", "shellcheck");
    let lib_dir = repo().join("overlays/rootfs/usr/lib/edgeimg");
    for s in scripts() {
        for shell in [&["sh", "-n"][..], &["busybox", "sh", "-n"][..]] {
            let st = Command::new(shell[0])
                .args(&shell[1..])
                .arg(&s)
                .status()
                .unwrap();
            assert!(st.success(), "{shell:?} {}", s.display());
        }
        let out = Command::new("shellcheck")
            .args(["-s", "sh", "-x", "-P"])
            .arg(&lib_dir)
            .arg(&s)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}",
            s.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn scripts_are_executable_and_inittab_names_them() {
    use std::os::unix::fs::PermissionsExt;
    for s in scripts() {
        if s.extension().is_some_and(|e| e == "sh") {
            continue;
        }
        let mode = std::fs::metadata(&s).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", s.display());
    }
    let inittab = std::fs::read_to_string(repo().join("overlays/rootfs/etc/inittab")).unwrap();
    for line in inittab
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let prog = line
            .rsplit(':')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if let Some(rel) = prog.strip_prefix("/usr/lib/edgeimg/") {
            assert!(
                repo()
                    .join("overlays/rootfs/usr/lib/edgeimg")
                    .join(rel)
                    .is_file(),
                "inittab runs missing {prog}"
            );
        }
    }
}

/// A disk image and a fake /sys/class/block describing it as `vda` with partitions.
struct FakeDisk {
    _dir: tempfile::TempDir,
    sys: PathBuf,
    dev: PathBuf,
}

impl FakeDisk {
    /// `table` is an sfdisk script; the image is `size_mib` MiB.
    fn new(table: &str, size_mib: u64) -> FakeDisk {
        need("sfdisk", "fdisk");
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let img = dev.join("vda");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mut child = Command::new("sfdisk")
            .args(["-q", img.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(table.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        let d = FakeDisk {
            sys: dir.path().join("sys"),
            dev,
            _dir: dir,
        };
        d.refresh_sysfs();
        d
    }

    fn image(&self) -> PathBuf {
        self.dev.join("vda")
    }

    /// Writes the sysfs files the kernel would show for the image's current table.
    fn refresh_sysfs(&self) {
        let disk = self.sys.join("devices/virtual/block/vda");
        let _ = std::fs::remove_dir_all(&self.sys);
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::create_dir_all(self.sys.join("class/block")).unwrap();
        let sectors = std::fs::metadata(self.image()).unwrap().len() / 512;
        std::fs::write(disk.join("size"), format!("{sectors}\n")).unwrap();
        std::fs::write(disk.join("queue/logical_block_size"), "512\n").unwrap();
        std::os::unix::fs::symlink(&disk, self.sys.join("class/block/vda")).unwrap();
        let dump: serde_json::Value =
            serde_json::from_str(&run("sfdisk", &["-J", self.image().to_str().unwrap()])).unwrap();
        for (i, p) in dump["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let name = format!("vda{}", i + 1);
            let pd = disk.join(&name);
            std::fs::create_dir_all(&pd).unwrap();
            std::fs::write(pd.join("partition"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(pd.join("start"), format!("{}\n", p["start"])).unwrap();
            std::fs::write(pd.join("size"), format!("{}\n", p["size"])).unwrap();
            // Mainline kernels put no PARTUUID here: the script must compute it.
            std::fs::write(
                pd.join("uevent"),
                format!(
                    "MAJOR=254\nMINOR={}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={}\n",
                    i + 1,
                    i + 1
                ),
            )
            .unwrap();
            std::os::unix::fs::symlink(&pd, self.sys.join("class/block").join(&name)).unwrap();
            std::fs::File::create(self.dev.join(&name)).unwrap();
        }
    }

    fn init(&self, body: &str) -> String {
        let init = repo().join("overlays/initramfs/init");
        bb(
            &format!(". {}; {body}", init.display()),
            &[
                ("EDGEIMG_INIT_LIB", Path::new("1")),
                ("EDGEIMG_SYS", &self.sys),
                ("EDGEIMG_DEV", &self.dev),
                ("EDGEIMG_ROOT_EXEC", Path::new("direct")),
            ],
        )
    }
}

const GPT_TABLE: &str = "label: gpt\n\
    label-id: 8227131A-B6D5-AC47-910F-6AF536B43BC1\n\
    size=16M, type=U, uuid=825D84B8-A1DF-FD43-83D3-B03044E4B9A7\n\
    size=32M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=80DB9710-D650-B54C-B155-5240524DCEAA\n\
    size=4M, type=L, uuid=D80464CE-A1E9-1141-8EE6-B3A1D2806DA1\n";

#[test]
fn init_finds_gpt_partitions_by_partuuid() {
    let d = FakeDisk::new(GPT_TABLE, 64);
    assert_eq!(
        d.init("partuuid_of vda1"),
        "825d84b8-a1df-fd43-83d3-b03044e4b9a7\n"
    );
    assert_eq!(
        d.init("partuuid_of vda3"),
        "d80464ce-a1e9-1141-8ee6-b3a1d2806da1\n"
    );
    assert_eq!(
        d.init("resolve PARTUUID=80DB9710-D650-B54C-B155-5240524DCEAA"),
        "vda2\n"
    );
    assert_eq!(
        d.init("wait_for PARTUUID=d80464ce-a1e9-1141-8ee6-b3a1d2806da1 1"),
        "vda3\n"
    );
    assert_eq!(
        d.init("wait_for PARTUUID=00000000-0000-0000-0000-000000000000 0 || echo missing"),
        "missing\n"
    );
    assert_eq!(d.init("parent_disk vda2"), "vda\n");
}

#[test]
fn init_finds_mbr_partitions_by_disk_signature() {
    let d = FakeDisk::new(
        "label: dos\nlabel-id: 0xdeadbeef\n,16M,c\n,32M,83\n,4M,83\n",
        64,
    );
    assert_eq!(d.init("partuuid_of vda3"), "deadbeef-03\n");
    assert_eq!(d.init("resolve PARTUUID=DEADBEEF-02"), "vda2\n");
}

#[test]
fn init_grows_the_data_partition_of_a_bigger_gpt_disk() {
    need("sgdisk", "gdisk");
    let d = FakeDisk::new(GPT_TABLE, 256);
    let free: u64 = d.init("free_after vda3").trim().parse().unwrap();
    assert!(free > 300_000, "{free}");
    d.init("grow_partition vda3");
    d.refresh_sysfs();
    let free: u64 = d.init("free_after vda3").trim().parse().unwrap();
    assert!(
        free < 64,
        "partition 3 should reach the disk end, {free} sectors left"
    );
    let verify = run("sgdisk", &["-v", d.image().to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    // Same PARTUUID: the kernel command line still finds it.
    assert_eq!(
        d.init("resolve PARTUUID=D80464CE-A1E9-1141-8EE6-B3A1D2806DA1"),
        "vda3\n"
    );
    // Nothing to grow any more.
    let again =
        d.init("[ \"$(free_after vda3)\" -ge \"$GROW_MIN_SECTORS\" ] && echo grow || echo full");
    assert_eq!(again, "full\n");
}

#[test]
fn init_grows_an_mbr_data_partition_keeping_its_partuuid() {
    let d = FakeDisk::new(
        "label: dos\nlabel-id: 0x1234abcd\n,16M,c\n,32M,83\n,4M,83\n",
        128,
    );
    d.init("grow_partition vda3");
    d.refresh_sysfs();
    assert!(d.init("free_after vda3").trim().parse::<u64>().unwrap() < 2048);
    assert_eq!(d.init("partuuid_of vda3"), "1234abcd-03\n");
}

#[test]
fn init_sees_ext4_and_how_much_of_its_partition_it_fills() {
    need("mkfs.ext4", "e2fsprogs");
    let d = FakeDisk::new(GPT_TABLE, 64);
    // The "partition" device vda3 is its own file here (4 MiB in the table).
    let part = d.dev.join("vda3");
    assert_eq!(d.init("has_ext4 $DEV/vda3 && echo yes || echo no"), "no\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    run("mkfs.ext4", &["-F", "-q", part.to_str().unwrap()]);
    assert_eq!(d.init("has_ext4 $DEV/vda3 && echo yes || echo no"), "yes\n");
    let slack: u64 = d.init("fs_slack vda3").trim().parse().unwrap();
    assert_eq!(slack, 2 << 20, "a 2 MiB ext4 in a 4 MiB partition");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    run("resize2fs", &[part.to_str().unwrap()]);
    assert_eq!(d.init("fs_slack vda3"), "0\n");
}

/// lib.sh on the host, with a boot partition holding `rendered` and `k0s_data` as /var/lib/k0s.
fn lib(rendered: &RenderedNode, build_env: &str, body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in &rendered.files {
        let dst = dir.path().join("boot").join(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, c).unwrap();
    }
    std::fs::write(dir.path().join("build.env"), build_env).unwrap();
    std::fs::create_dir_all(dir.path().join("k0s")).unwrap();
    let lib = repo().join("overlays/rootfs/usr/lib/edgeimg/lib.sh");
    bb(
        &format!(". {}; {body}", lib.display()),
        &[
            ("EDGEIMG_BOOT", &dir.path().join("boot/edgeimg")),
            ("EDGEIMG_RUN", &dir.path().join("run")),
            ("EDGEIMG_STATE", &dir.path().join("state")),
            ("EDGEIMG_BUILD_ENV", &dir.path().join("build.env")),
            ("K0S_DATA", &dir.path().join("k0s")),
            ("K0S_CONFIG", &dir.path().join("k0s.yaml")),
        ],
    )
}

/// The k0s argv the device would exec, with the temporary paths replaced.
fn k0s_argv(toml: &str, build_env: &str, with_token: bool) -> String {
    let cfg = NodeConfig::from_toml_str(toml, Path::new("/nonexistent/node.toml")).unwrap();
    let r = cfg.render().unwrap();
    let token = if with_token {
        "echo tok >\"$K0S_TOKEN\"; "
    } else {
        ""
    };
    let out = lib(
        &r,
        build_env,
        &format!(
            "{token}load_node_env; k0s_command; eval \"set -- $K0S_CMD\"; \
             for a in \"$@\"; do printf '%s\\n' \"$a\"; done"
        ),
    );
    out.lines()
        .map(|l| {
            if l.contains("/k0s/join-token") {
                "TOKEN"
            } else if l.ends_with("/k0s") {
                "DATA"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn k0s_command_lines_follow_the_device_contract() {
    let w = "[k0s]\nrole = \"worker\"\nlabels = [\"zone=a\"]\ntaints = [\"edge:NoSchedule\"]\nargs = [\"--debug\", \"--kubelet-extra-args=--max-pods=50 --v=2\"]\n";
    assert_eq!(
        k0s_argv(w, "", true),
        "k0s worker --data-dir DATA --token-file TOKEN --labels=zone=a --taints=edge:NoSchedule --debug --kubelet-extra-args=--max-pods=50 --v=2"
    );
    assert_eq!(
        k0s_argv("", "EDGEIMG_ROLE=controller\n", false),
        "k0s controller --data-dir DATA"
    );
    assert_eq!(
        k0s_argv("", "EDGEIMG_ROLE=controller\n", true),
        "k0s controller --data-dir DATA --token-file TOKEN"
    );
    assert_eq!(
        k0s_argv(
            "[k0s]\nrole = \"controller+worker\"\n",
            "EDGEIMG_ROLE=worker\n",
            false
        ),
        "k0s controller --enable-worker --no-taints --data-dir DATA"
    );
    assert_eq!(
        k0s_argv(
            "[k0s]\nrole = \"single\"\nlabels = { a = \"b\" }\n",
            "",
            true
        ),
        "k0s controller --single --data-dir DATA --labels=a=b"
    );
}

#[test]
fn device_reads_the_rendered_node_env_and_notices_hand_edits() {
    let cfg = NodeConfig::from_toml_str(
        "hostname = \"edge-7\"\n[time]\nntp = []\n[[files]]\npath = \"/etc/a b\"\ncontent = \"x\"\nmode = \"0600\"\n",
        Path::new("/nonexistent/node.toml"),
    )
    .unwrap();
    let r = cfg.render().unwrap();
    let out = lib(
        &r,
        "EDGEIMG_ROLE=single\n",
        "load_node_env; echo \"$ROLE|$NODE_HOSTNAME|$NTP_SERVERS|$FILES_COUNT|$FILE_0_PATH|$FILE_0_MODE|$NODE_ENV_STATE\"",
    );
    let generation =
        parse_node_env(std::str::from_utf8(r.get("edgeimg/node.env").unwrap()).unwrap()).unwrap()
            ["CONFIG_GENERATION"]
            .clone();
    assert_eq!(
        out,
        format!(
            "single|edge-7||1|/etc/a b|0600|generation {}\n",
            &generation[..12]
        )
    );
    let edited = lib(
        &r,
        "",
        "echo \"NODE_HOSTNAME='other'\" >>\"$EDGEIMG_BOOT/node.env\"; load_node_env; echo \"$NODE_HOSTNAME|$NODE_ENV_STATE|$ROLE\"",
    );
    assert!(
        edited.starts_with("other|edited by hand, generation "),
        "{edited}"
    );
    assert!(
        edited.ends_with("|worker\n"),
        "no role anywhere means worker: {edited}"
    );
}

/// What wpa_supplicant itself reads from `conf`: it runs on `lo` with no driver (`-D none`),
/// debug output with keys (`-ddK`), until it has added the interface or refused the file.
fn wpa_supplicant_reads(conf: &Path) -> String {
    use std::io::BufRead;
    need("wpa_supplicant", "wpasupplicant");
    let mut child = Command::new("wpa_supplicant")
        .args(["-D", "none", "-i", "lo", "-ddK", "-c"])
        .arg(conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("Added interface") || line.contains("Failed to");
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[test]
fn wifi_conf_of_a_rendered_node_is_what_wpa_supplicant_reads() {
    need("busybox", "busybox-static");
    need("wpa_passphrase", "wpasupplicant");
    let wifi = repo().join("overlays/rootfs/usr/lib/edgeimg/wifi.sh");
    for (i, pass) in super::input_tests::HOSTILE_PSKS.iter().enumerate() {
        let ssid = "edge \"net\" #1";
        let r = super::input_tests::with_wifi(ssid, pass).render().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node.env"),
            r.get("edgeimg/node.env").unwrap(),
        )
        .unwrap();
        // The device's own function, under the device's shell.
        let conf = bb(
            &format!(
                "cd {}; . ./node.env; . {}; wifi_conf \"$WIFI_SSID\" \"$WIFI_PSK\" \"$WIFI_COUNTRY\"",
                dir.path().display(),
                wifi.display()
            ),
            &[],
        );
        // The one line changed for a run on the host: the control socket's directory.
        let ctrl = dir.path().join("ctrl");
        let conf = conf.replace(
            "ctrl_interface=/run/wpa_supplicant",
            &format!("ctrl_interface={}", ctrl.display()),
        );
        assert!(
            conf.contains(&format!("ctrl_interface={}", ctrl.display())),
            "{conf}"
        );
        let path = dir.path().join("wpa_supplicant.conf");
        std::fs::write(&path, &conf).unwrap();
        let read = wpa_supplicant_reads(&path);
        let want = run("wpa_passphrase", &[ssid, pass])
            .lines()
            .find_map(|l| l.trim().strip_prefix("psk="))
            .filter(|p| !p.starts_with('"'))
            .expect("wpa_passphrase prints psk=")
            .to_string();
        let hexdump: Vec<String> = (0..32)
            .map(|b| want[2 * b..2 * b + 2].to_string())
            .collect();
        let line = format!("hexdump(len=32): {}", hexdump.join(" "));
        assert!(
            read.lines().any(|l| l.contains("PSK") && l.ends_with(&line)),
            "passphrase {i} {pass:?}: wpa_supplicant did not read the PMK {want}\nconf:\n{conf}\nwpa_supplicant:\n{read}"
        );
        let ssid_hex: Vec<String> = ssid.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            read.contains(&ssid_hex.join(" ")),
            "passphrase {i}: SSID misread\n{read}"
        );
        assert!(read.contains("Added interface lo"), "{read}");
    }
}
