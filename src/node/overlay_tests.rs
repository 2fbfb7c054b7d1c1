//! Host tests of the on-device scripts in overlays/: syntax (sh -n, busybox sh -n,
//! shellcheck) of every script, the shell tests of tests/shell/ (each initramfs library run
//! under busybox sh against a fake sysfs, real GPT/MBR image files and fake programs), and
//! the k0s command lines built from a rendered node.env.
//!
//! Needs on the host: busybox (busybox-static), shellcheck, sfdisk (fdisk), sgdisk (gdisk),
//! mkfs.ext4, e2fsck, resize2fs and dumpe2fs (e2fsprogs).

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

/// The folder of the initramfs's libraries (`lib` is a symlink to `usr/lib` in the initramfs).
fn initramfs_lib() -> PathBuf {
    repo().join("overlays/initramfs/usr/lib/edgeimg")
}

fn rootfs_lib() -> PathBuf {
    repo().join("overlays/rootfs/usr/lib/edgeimg")
}

fn shell_tests_dir() -> PathBuf {
    repo().join("tests/shell")
}

/// The files of `dir` in name order, without contract.sh: the build generates that one (the
/// fixture tests/shell/contract.sh stands in for it).
fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("contract.sh"))
        .collect();
    v.sort();
    v
}

/// Every shell script of the repository with the folders its `source=` directives are
/// resolved in: the initramfs (init and its libraries), the root's scripts, and the shell
/// tests. tests/shell/contract.sh stands in for the contract.sh the build generates.
fn scripts() -> Vec<(PathBuf, Vec<PathBuf>)> {
    let initramfs_paths = vec![initramfs_lib(), shell_tests_dir()];
    let mut out = vec![(
        repo().join("overlays/initramfs/init"),
        initramfs_paths.clone(),
    )];
    for s in sorted_files(&initramfs_lib()) {
        out.push((s, initramfs_paths.clone()));
    }
    for s in sorted_files(&rootfs_lib()) {
        out.push((s, vec![rootfs_lib(), shell_tests_dir()]));
    }
    for s in sorted_files(&shell_tests_dir()) {
        if s.extension().is_some_and(|e| e == "sh") {
            out.push((s, vec![shell_tests_dir(), initramfs_lib()]));
        }
    }
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

#[test]
fn scripts_parse_and_pass_shellcheck() {
    need("busybox", "busybox-static");
    need("shellcheck", "shellcheck");
    need("dash", "dash");
    let all = scripts();
    assert!(
        all.len() > 20,
        "the initramfs libraries and the shell tests are found"
    );
    for (s, paths) in all {
        for shell in [&["dash", "-n"][..], &["busybox", "sh", "-n"][..]] {
            let st = Command::new(shell[0])
                .args(&shell[1..])
                .arg(&s)
                .status()
                .unwrap();
            assert!(st.success(), "{shell:?} {}", s.display());
        }
        let source_path = std::env::join_paths(&paths).unwrap();
        let out = Command::new("shellcheck")
            .args(["-s", "sh", "-x", "-P"])
            .arg(&source_path)
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
    for (s, _) in scripts() {
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
                rootfs_lib().join(rel).is_file(),
                "inittab runs missing {prog}"
            );
        }
    }
}

/// Each initramfs library says at its top what it owns; none lives under the initramfs's
/// `lib/`, which the build makes a symlink to `usr/lib`; and /init sources every one.
#[test]
fn initramfs_libraries_say_what_they_own_and_init_sources_them() {
    assert!(
        !repo().join("overlays/initramfs/lib").exists(),
        "overlays/initramfs/lib would collide with the initramfs's lib -> usr/lib symlink"
    );
    let init = std::fs::read_to_string(repo().join("overlays/initramfs/init")).unwrap();
    for lib in sorted_files(&initramfs_lib()) {
        let name = lib.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&lib).unwrap();
        assert!(
            text.contains(&format!("# edgeimg initramfs, {name}: ")),
            "{name} does not start by saying what it owns"
        );
        assert!(
            init.contains(&format!(". \"$lib/{name}\"")),
            "init does not source {name}"
        );
    }
    assert!(
        init.contains(". \"$lib/contract.sh\""),
        "init sources the generated contract.sh"
    );
}

/// tests/shell/*.test.sh, each under busybox sh through tests/shell/run.sh, side by side.
#[test]
fn shell_tests_of_the_initramfs_libraries_pass() {
    need("busybox", "busybox-static");
    need("sfdisk", "fdisk");
    need("sgdisk", "gdisk");
    need("openssl", "openssl");
    for tool in ["mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs"] {
        need(tool, "e2fsprogs");
    }
    let tests: Vec<PathBuf> = sorted_files(&shell_tests_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".test.sh"))
        .collect();
    for lib in [
        "cmdline",
        "parts",
        "verity",
        "data",
        "netroot",
        "install",
        "init",
        "secureboot",
        "update",
    ] {
        assert!(
            tests.iter().any(|t| t.ends_with(format!("{lib}.test.sh"))),
            "tests/shell/{lib}.test.sh is missing"
        );
    }
    let runner = shell_tests_dir().join("run.sh");
    let results: Vec<(PathBuf, std::process::Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = tests
            .iter()
            .map(|t| {
                let runner = &runner;
                scope.spawn(move || {
                    let out = Command::new("busybox")
                        .arg("sh")
                        .arg(runner)
                        .arg(t)
                        .output()
                        .unwrap();
                    (t.clone(), out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failed = Vec::new();
    for (t, out) in &results {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
        if !out.status.success() || passed == 0 || stdout.lines().any(|l| l.starts_with("FAIL")) {
            failed.push(format!(
                "{}:\n{stdout}{}",
                t.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "shell tests failed:\n{}",
        failed.join("\n")
    );
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
    let lib = rootfs_lib().join("lib.sh");
    let contract_dir = shell_tests_dir();
    bb(
        &format!(". {}; {body}", lib.display()),
        &[
            // lib.sh sources contract.sh from here (the build generates the real one).
            ("EDGEIMG_LIB", &contract_dir),
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

/// Runs `cmd ARGS`, asserting success; returns stdout.
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

/// A cluster's files move from the boot partition into k0s's data dir (certificates 0644,
/// keys and Secrets 0600, folders 0700) and are gone from the FAT afterwards.
#[test]
fn cluster_files_move_off_the_boot_partition() {
    let mut cfg = NodeConfig::from_toml_str(
        "[k0s]\nrole = \"controller\"\n",
        Path::new("/nonexistent/node.toml"),
    )
    .unwrap();
    cfg.secrets.data_files = vec![
        ("pki/ca.crt".into(), b"CERT\n".to_vec()),
        ("pki/ca.key".into(), b"KEY\n".to_vec()),
        ("pki/etcd/ca.key".into(), b"EKEY\n".to_vec()),
        (
            "manifests/edgeimg-tokens/bootstrap-token-abcdef.yaml".into(),
            b"kind: Secret\n".to_vec(),
        ),
    ];
    let r = cfg.render().unwrap();
    assert!(r.get("edgeimg/k0s-data/pki/ca.key").is_some());
    for (p, _) in &r.files {
        let rel = p.strip_prefix("edgeimg/").unwrap();
        assert!(
            crate::node::contract::is_node_path(rel, false),
            "{rel} is not a node path: configure would not replace it"
        );
    }
    let out = lib(
        &r,
        "",
        "n=$(move_data_files) || exit 1; echo moved=$n; \
         cd \"$K0S_DATA\" && find . -type f | sort | while read -r f; do \
         echo \"$(stat -c %a \"$f\") $f $(cat \"$f\")\"; done; \
         echo dirs $(stat -c %a pki pki/etcd manifests/edgeimg-tokens); \
         [ -e \"$EDGEIMG_BOOT/k0s-data\" ] && echo still-on-fat; \
         ls \"$EDGEIMG_BOOT\"; echo again=$(move_data_files)",
    );
    assert!(out.contains("moved=4"), "{out}");
    assert!(out.contains("644 ./pki/ca.crt CERT"), "{out}");
    assert!(out.contains("600 ./pki/ca.key KEY"), "{out}");
    assert!(out.contains("600 ./pki/etcd/ca.key EKEY"), "{out}");
    assert!(
        out.contains("600 ./manifests/edgeimg-tokens/bootstrap-token-abcdef.yaml kind: Secret"),
        "{out}"
    );
    assert!(out.contains("dirs 700 700 700"), "{out}");
    assert!(
        !out.contains("still-on-fat") && !out.contains("k0s-data"),
        "{out}"
    );
    assert!(out.contains("again=0"), "{out}");
    assert!(!out.contains("edgeimg-tmp"), "{out}");
}

/// k0s restarts in a row back off to a minute and print on the 1st, 2nd, 4th, 8th...
#[test]
fn k0s_restarts_back_off_without_filling_the_console() {
    let r = NodeConfig::default().render().unwrap();
    let out = lib(
        &r,
        "",
        "for n in 1 2 3 4 5 6 7 8 9 16 100; do printf '%s:%s:' $n $(restart_delay $n); \
         if restart_says $n; then echo say; else echo quiet; fi; done",
    );
    assert_eq!(
        out.trim(),
        "1:5:say\n2:10:say\n3:20:quiet\n4:40:say\n5:60:quiet\n6:60:quiet\n7:60:quiet\n8:60:say\n9:60:quiet\n16:60:say\n100:60:quiet"
    );
}
