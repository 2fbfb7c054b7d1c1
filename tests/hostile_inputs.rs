//! Hostile inputs given to the `edgeimg` binary: devices, FIFOs, directories and huge files
//! where a file is expected, deep and wide cloud-configs, malformed join tokens, a private
//! key given as `--ssh-key`, and node values that try to reach the terminal through
//! `inspect`. Every run is bounded: at most 1 GiB of address space and 20 s, its peak memory
//! measured; nothing here needs a Debian build (a small synthetic image is made in-process).

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Address space given to each run: plenty for refusing input, far below what reading
/// /dev/zero would take.
const ADDRESS_SPACE: u64 = 1 << 30;
/// Each run is killed after this long.
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Peak resident memory a refusal may take.
const REFUSAL_RSS_KIB: i64 = 64 * 1024;

/// What one bounded run did.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    killed: bool,
    elapsed: Duration,
    max_rss_kib: i64,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}, signal {:?}, killed after {:?}: {}, peak {} KiB\nstderr ({} bytes): {}",
            self.code,
            self.signal,
            self.elapsed,
            self.killed,
            self.max_rss_kib,
            self.stderr.len(),
            self.stderr.chars().take(2000).collect::<String>()
        )
    }

    /// Failed by itself, with an error message, quickly and in little memory.
    fn assert_refused(&self, needles: &[&str]) {
        let d = self.describe();
        assert!(!self.killed, "not refused within {TIME_LIMIT:?}: {d}");
        assert_eq!(self.code, Some(1), "{d}");
        assert!(
            self.elapsed < Duration::from_secs(5),
            "refusing took {:?}: {d}",
            self.elapsed
        );
        assert!(
            self.max_rss_kib < REFUSAL_RSS_KIB,
            "refusing took {} KiB: {d}",
            self.max_rss_kib
        );
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {d}");
        }
    }
}

/// Runs edgeimg with `args` under the address space and time limits, its peak memory
/// measured by GNU time. (wait4's own figure cannot be used: a child started from this test
/// process inherits this process' peak as its own at exec.)
fn run_bounded(args: &[&str]) -> Run {
    need("time");
    need("sh");
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path, rss_path) = (
        dir.path().join("stdout"),
        dir.path().join("stderr"),
        dir.path().join("rss"),
    );
    let mut cmd = Command::new("time");
    cmd.args(["-q", "-f", "%M", "-o"])
        .arg(&rss_path)
        .args(["sh", "-c", "ulimit -v \"$0\" && exec \"$@\""])
        .arg((ADDRESS_SPACE / 1024).to_string())
        .arg(bin())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().expect("starting time, sh and edgeimg");
    let started = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIME_LIMIT && !killed {
            // SAFETY: signals our own process group (time, and edgeimg under it).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // time exits with edgeimg's status, or 128 + the signal that ended it.
    let code = status.code();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string();
    Run {
        code: code.filter(|c| *c < 128),
        signal: code
            .filter(|c| *c > 128)
            .map(|c| c - 128)
            .or(std::os::unix::process::ExitStatusExt::signal(&status)),
        killed,
        elapsed: started.elapsed(),
        max_rss_kib: read(&rss_path).trim().parse().unwrap_or(-1),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// A small image edgeimg can configure and inspect: a GPT with a 40 MiB FAT32 boot
/// partition holding a loader entry, and a root partition without a file system.
fn synthetic_image(path: &Path) {
    use edgeimg::disk::{write_table, PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
    use edgeimg::fs::fat::{write_fat32, FatParams};
    let specs = [
        PartitionSpec {
            role: PartRole::Boot,
            name: "boot".into(),
            ptype: PartType::Esp,
            size: 40 << 20,
            bootable: true,
        },
        PartitionSpec {
            role: PartRole::Root(edgeimg::disk::layout::Slot::A),
            name: "root".into(),
            ptype: PartType::LinuxRootX86_64,
            size: 1 << 20,
            bootable: false,
        },
    ];
    let plan = PartitionPlan::new(TableKind::Gpt, &specs, b"hostile-inputs").unwrap();
    let mut f = File::create(path).unwrap();
    f.set_len(plan.disk_size).unwrap();
    write_table(&plan, &mut f).unwrap();
    let mut tree = edgeimg::tree::Tree::new();
    tree.add_file(
        "loader/entries/edgeimg.conf",
        b"title edgeimg\noptions console=ttyS0\n".to_vec(),
        0o644,
    )
    .unwrap();
    // What a build leaves there: the rendered default node config (configure refuses a FAT
    // without one as not edgeimg's).
    tree.overlay(
        &edgeimg::node::NodeConfig::default()
            .render()
            .unwrap()
            .into_tree()
            .unwrap(),
    )
    .unwrap();
    let boot = plan.get(PartRole::Boot);
    let params = FatParams {
        size: boot.size(),
        volume_id: 0x1234_5678,
        label: "EDGEIMG".into(),
        hidden_sectors: boot.start_lba as u32,
        mtime: 0,
    };
    write_fat32(&tree, &params, &mut f, boot.offset()).unwrap();
}

struct Scratch {
    dir: tempfile::TempDir,
    image: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("node.img");
        synthetic_image(&image);
        Scratch { dir, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with mode 0600 (token files are expected private).
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p
    }

    fn img(&self) -> &str {
        self.image.to_str().unwrap()
    }
}

/// `s` as a TOML basic string (control characters escaped the TOML way).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every option that names a file, with the arguments that make the command read it.
fn file_options(s: &Scratch, file: &str) -> Vec<Vec<String>> {
    let img = s.img().to_string();
    let f = file.to_string();
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        v(&["configure", &img, "--node", &f]),
        v(&["configure", &img, "--token-file", &f]),
        v(&["configure", &img, "--ssh-key", &f]),
        v(&[
            "configure",
            &img,
            "--wifi-ssid",
            "net",
            "--wifi-psk-file",
            &f,
        ]),
        v(&["configure", &img, "--k0s-config", &f]),
        v(&["configure", &img, "--inventory", &f, "--node-name", "a"]),
        v(&["build", "--dry-run", "--node", &f]),
        v(&["build", "--dry-run", "--token-file", &f]),
    ]
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn devices_fifos_and_directories_are_refused_where_a_file_is_expected() {
    let s = Scratch::new();
    let fifo = s.path("fifo");
    mkfifo(&fifo);
    let dir = s.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (fifo.as_path(), "a FIFO"),
        (dir.as_path(), "a directory"),
    ] {
        for args in file_options(&s, path.to_str().unwrap()) {
            let r = run_bounded(&refs(&args));
            eprintln!(
                "{args:?}: {} ms, {} KiB",
                r.elapsed.as_millis(),
                r.max_rss_kib
            );
            r.assert_refused(&[kind, "not a regular file", path.to_str().unwrap()]);
        }
    }
}

#[test]
fn huge_files_are_refused_from_their_size_without_being_read() {
    let s = Scratch::new();
    // 100 MB, sparse: reading it whole would show in the peak memory.
    let big = s.file("big", b"");
    File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    for args in file_options(&s, big.to_str().unwrap()) {
        let r = run_bounded(&refs(&args));
        eprintln!(
            "{args:?}: {} ms, {} KiB",
            r.elapsed.as_millis(),
            r.max_rss_kib
        );
        r.assert_refused(&["100000000 bytes", "the limit"]);
    }
}

#[test]
fn deeply_nested_cloud_config_is_refused_not_a_crash() {
    let s = Scratch::new();
    // 2500 levels of one space each: 3 MiB, within the size limit of a node file.
    let mut doc = String::from("#cloud-config\nk0s:\n");
    for depth in 1..2_500 {
        doc.push_str(&" ".repeat(depth));
        doc.push_str("a:\n");
    }
    let node = s.file("deep.yaml", doc.as_bytes());
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    r.assert_refused(&["deep.yaml", "nested deeper than"]);
}

#[test]
fn cloud_config_with_many_keys_is_read_in_linear_time() {
    let s = Scratch::new();
    let mut doc = String::from("#cloud-config\n");
    for i in 0..200_000 {
        doc.push_str(&format!("k{i:06}: v\n"));
    }
    let node = s.file("wide.yaml", doc.as_bytes());
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    // The document reads; its first key is not of the subset edgeimg supports.
    r.assert_refused(&["`k000000` is not supported"]);
}

#[test]
fn malformed_join_tokens_are_refused_naming_the_file_never_the_token() {
    let s = Scratch::new();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "bom",
            [&b"\xef\xbb\xbf"[..], TEST_JOIN_TOKEN.as_bytes()].concat(),
            "byte order mark",
        ),
        (
            "wrapped",
            format!("{}\n{}\n", &TEST_JOIN_TOKEN[..76], &TEST_JOIN_TOKEN[76..]).into_bytes(),
            "whitespace inside",
        ),
        ("not-base64", b"stand-in-token\n".to_vec(), "not base64"),
        (
            "not-gzip",
            b"c3RhbmQtaW4tdG9rZW4tbm90LWd6aXA=\n".to_vec(),
            "not gzip",
        ),
        (
            "truncated",
            TEST_JOIN_TOKEN.as_bytes()[..200].to_vec(),
            "truncated",
        ),
    ];
    for (name, data, why) in cases {
        let f = s.file(name, &data);
        let r = run_bounded(&["configure", s.img(), "--token-file", f.to_str().unwrap()]);
        r.assert_refused(&[f.to_str().unwrap(), why]);
        let text = String::from_utf8_lossy(&data);
        for window in text.trim().as_bytes().windows(12) {
            let w = String::from_utf8_lossy(window);
            assert!(
                !r.stderr.contains(w.as_ref()),
                "{name}: the error echoes the token ({w:?}): {}",
                r.stderr
            );
        }
    }
    // The real shape is taken.
    let good = s.file("good", format!("{TEST_JOIN_TOKEN}\n").as_bytes());
    let r = run_bounded(&["configure", s.img(), "--token-file", good.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
}

#[test]
fn a_private_key_given_as_ssh_key_is_never_echoed() {
    need_tool("ssh-keygen", "openssh-client");
    let s = Scratch::new();
    let key = s.path("id_ed25519");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
    let private = std::fs::read_to_string(&key).unwrap();
    for args in [
        vec!["configure", s.img(), "--ssh-key", key.to_str().unwrap()],
        vec!["build", "--dry-run", "--ssh-key", key.to_str().unwrap()],
    ] {
        let r = run_bounded(&args);
        r.assert_refused(&["private key", "id_ed25519.pub"]);
        for line in private.lines().filter(|l| !l.starts_with("-----")) {
            for window in line.as_bytes().windows(12) {
                let w = std::str::from_utf8(window).unwrap();
                assert!(
                    !r.stderr.contains(w),
                    "the error echoes the private key ({w:?}): {}",
                    r.stderr
                );
            }
        }
    }
    // The public half is taken.
    let public = format!("{}.pub", key.display());
    let r = run_bounded(&["configure", s.img(), "--ssh-key", &public]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
}

/// The 64 hex digits wpa_passphrase derives for `ssid` and `pass`.
fn wpa_passphrase(ssid: &str, pass: &str) -> String {
    need_tool("wpa_passphrase", "wpasupplicant");
    let o = Command::new("wpa_passphrase")
        .args([ssid, pass])
        .output()
        .unwrap();
    assert!(o.status.success(), "wpa_passphrase: {}", stderr(&o));
    stdout(&o)
        .lines()
        .find_map(|l| l.trim().strip_prefix("psk="))
        .filter(|p| !p.starts_with('"'))
        .expect("a psk= line")
        .to_string()
}

#[test]
fn inspect_shows_secrets_as_present_or_absent_only() {
    let s = Scratch::new();
    let pass = "correct horse \"battery\" #staple";
    let psk_file = s.file("psk", format!("{pass}\n").as_bytes());
    let pmk = wpa_passphrase("edge-net", pass);
    let inventory = s.file(
        "fleet.toml",
        format!(
            "[defaults]\nwifi = {{ ssid = \"edge-net\", psk = {}, country = \"DE\" }}\n\n\
             [nodes.pi-07]\nmac = \"dc:a6:32:00:00:07\"\n",
            toml_str(pass)
        )
        .as_bytes(),
    );
    let node = s.file("node.toml", b"hostname = \"edge-01\"\n");
    let r = run_bounded(&[
        "configure",
        s.img(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--all-nodes",
        "--node",
        node.to_str().unwrap(),
        "--wifi-ssid",
        "edge-net",
        "--wifi-psk-file",
        psk_file.to_str().unwrap(),
        "--wifi-country",
        "DE",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    for json in [true, false] {
        let mut args = vec!["inspect", s.img()];
        if json {
            args.insert(0, "--json");
        }
        let r = run_bounded(&args);
        assert_eq!(r.code, Some(0), "{}", r.describe());
        for secret in [pass, "correct horse", pmk.as_str(), &pmk[..16]] {
            assert!(
                !r.stdout.contains(secret),
                "inspect (json: {json}) shows the Wi-Fi key ({secret:?}):\n{}",
                r.stdout
            );
        }
        if json {
            let j: serde_json::Value =
                serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
            for n in [&j["node"], &j["per_mac"]["dc:a6:32:00:00:07"]] {
                assert_eq!(n["env"]["WIFI_PSK"], "(present, not shown)", "{n}");
                assert_eq!(n["env"]["WIFI_SSID"], "edge-net", "{n}");
                let toml = n["node_toml"].as_str().unwrap();
                assert!(toml.contains("psk = \"(present, not shown)\""), "{toml}");
            }
        } else {
            assert!(
                r.stdout.contains("WIFI_PSK=(present, not shown)"),
                "{}",
                r.stdout
            );
        }
    }
}

#[test]
fn build_dry_run_shows_the_wifi_key_as_present_only() {
    let s = Scratch::new();
    let node = s.file(
        "node.toml",
        b"[wifi]\nssid = \"edge-net\"\npsk = \"correct horse battery\"\ncountry = \"DE\"\n",
    );
    let r = run_bounded(&[
        "build",
        "--board",
        "pi3",
        "--dry-run",
        "--node",
        node.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(!r.stdout.contains("horse"), "{}", r.stdout);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["node"]["wifi"]["psk"], "(present, not shown)");
    assert_eq!(j["node"]["wifi"]["ssid"], "edge-net");
}

/// Bytes a terminal may act on: C0 controls but newline, DEL, and C1 controls (UTF-8).
fn terminal_controls(s: &str) -> Vec<char> {
    s.chars().filter(|c| c.is_control() && *c != '\n').collect()
}

#[test]
fn inspect_escapes_control_characters_of_node_values() {
    let s = Scratch::new();
    let hostile = "--x=\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{7f}end";
    let node = s.file(
        "node.toml",
        format!(
            "hostname = \"edge-01\"\nrun_cmd = [{h}]\n[k0s]\nargs = [{h}]\n",
            h = toml_str(hostile)
        )
        .as_bytes(),
    );
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    for json in [false, true] {
        let mut args = vec!["inspect", s.img()];
        if json {
            args.insert(0, "--json");
        }
        let r = run_bounded(&args);
        assert_eq!(r.code, Some(0), "{}", r.describe());
        assert_eq!(
            terminal_controls(&r.stdout),
            Vec::<char>::new(),
            "inspect (json: {json}) prints control characters:\n{}",
            r.stdout.escape_debug()
        );
        if json {
            // Still the value itself, JSON-escaped.
            let j: serde_json::Value =
                serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
            let args = j["node"]["env"]["K0S_ARGS"].as_str().unwrap();
            assert!(args.contains(hostile), "{args:?}");
        } else {
            assert!(r.stdout.contains("\\u{1b}]0;pwned"), "{}", r.stdout);
        }
    }
}

#[test]
fn long_values_are_shortened_in_errors() {
    let s = Scratch::new();
    let long = "x".repeat(2_000_000);
    let node = s.file("node.toml", format!("hostname = \"{long}\"\n").as_bytes());
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    r.assert_refused(&["hostname", "2000000 bytes"]);
    assert!(
        r.stderr.len() < 4096,
        "a {} byte error for a long hostname",
        r.stderr.len()
    );
    // A cloud-config key just as long: YAML itself limits an implicit key to 1024
    // characters, so the parser refuses it (as PyYAML does), with a short message.
    let node = s.file(
        "user-data",
        format!("#cloud-config\n{long}: 1\n").as_bytes(),
    );
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    r.assert_refused(&["not valid YAML"]);
    assert!(r.stderr.len() < 4096, "a {} byte error", r.stderr.len());
}

#[test]
fn error_messages_do_not_reach_the_terminal_raw() {
    let s = Scratch::new();
    let node = s.file(
        "node.toml",
        br#"[k0s]
labels = { "zone\u001b[2J" = "a" }
taints = ["\u001b]0;x\u0007:NoSchedule"]
"#,
    );
    let r = run_bounded(&["configure", s.img(), "--node", node.to_str().unwrap()]);
    r.assert_refused(&["k0s.labels", "k0s.taints[0]"]);
    assert_eq!(
        terminal_controls(&r.stderr),
        Vec::<char>::new(),
        "{}",
        r.stderr.escape_debug()
    );
}

#[test]
fn a_regular_small_file_still_works_everywhere() {
    let s = Scratch::new();
    let token = s.file("t", format!("{TEST_JOIN_TOKEN}\n").as_bytes());
    let k0s = s.file(
        "k0s.yaml",
        b"apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\n",
    );
    let node = s.file(
        "node.toml",
        format!(
            "hostname = \"edge-02\"\n[k0s]\nrole = \"worker\"\ntoken_file = {:?}\n",
            token.display().to_string()
        )
        .as_bytes(),
    );
    let user_data = s.path("user-data");
    let mut f = File::create(&user_data).unwrap();
    writeln!(f, "#cloud-config\nhostname: edge-03\nk0s:\n  role: worker").unwrap();
    for args in [
        vec!["configure", s.img(), "--node", node.to_str().unwrap()],
        vec![
            "configure",
            s.img(),
            "--node",
            user_data.to_str().unwrap(),
            "--k0s-config",
            k0s.to_str().unwrap(),
        ],
    ] {
        let r = run_bounded(&args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.describe());
    }
}
