//! Hostile inputs to the node config: files that are not regular files or are huge, deep and
//! wide cloud-configs, join tokens of the wrong shape, private keys where public ones belong,
//! Wi-Fi passphrases wpa_supplicant would misread, values made to reach a terminal or to
//! swell an error message. Every test is bounded in time and memory.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::tests::TEST_TOKEN;
use super::*;

/// Runs `f` on a thread of its own and fails the test when it takes longer than `limit`
/// (the thread is left behind: a hang must not hang the suite).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// A node config joining `ssid` with `psk`.
pub(super) fn with_wifi(ssid: &str, psk: &str) -> NodeConfig {
    NodeConfig {
        wifi: Some(WifiConfig {
            ssid: ssid.into(),
            psk: Some(psk.into()),
            country: Some("DE".into()),
        }),
        ..Default::default()
    }
}

fn with_token_file(path: &Path) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.k0s.token_file = Some(path.to_path_buf());
    cfg
}

fn private_file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn a_device_or_directory_is_no_node_config() {
    let e = NodeConfig::from_toml_file(Path::new("/dev/null"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/dev/null") && e.contains("a character device, not a regular file"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let e = NodeConfig::from_toml_file(dir.path())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("a directory, not a regular file"), "{e}");
}

#[test]
fn a_fifo_token_file_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cfg = with_token_file(&fifo);
    let e = within(
        Duration::from_secs(5),
        "reading a FIFO token file",
        move || cfg.token().map(|_| ()).unwrap_err().to_string(),
    );
    assert!(e.contains("a FIFO, not a regular file"), "{e}");
    let _keep = dir;
}

#[test]
fn a_huge_token_file_is_refused_from_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = private_file(dir.path(), "token", b"");
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    let e = with_token_file(&p).token().unwrap_err().to_string();
    // The size comes from fstat: the file was not read to find it.
    assert!(
        e.contains("100000000 bytes") && e.contains(&format!("limit of {MAX_FILE_BYTES} bytes")),
        "{e}"
    );
}

#[test]
fn join_tokens_are_checked_for_their_shape_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "bom",
            [&b"\xef\xbb\xbf"[..], TEST_TOKEN.as_bytes()].concat(),
            "UTF-8 byte order mark",
        ),
        (
            "wrapped",
            format!("{}\n{}\n", &TEST_TOKEN[..76], &TEST_TOKEN[76..]).into_bytes(),
            "whitespace inside",
        ),
        (
            "latin1",
            [TEST_TOKEN.as_bytes(), b"\xe9"].concat(),
            "is not text",
        ),
        ("plain", b"my-secret-join-token\n".to_vec(), "not base64"),
        (
            "not-gzip",
            b"c3RhbmQtaW4tdG9rZW4tbm90LWd6aXA=\n".to_vec(),
            "not gzip",
        ),
        (
            "truncated",
            TEST_TOKEN.as_bytes()[..200].to_vec(),
            "truncated",
        ),
        // gzip of "not a kubeconfig\n"
        (
            "no-kubeconfig",
            b"H4sIAAAAAAACA8vLL1FIVMguTUpNzs9Ly0znAgAknUK5EQAAAA==\n".to_vec(),
            "kubeconfig",
        ),
    ];
    for (name, data, why) in cases {
        let p = private_file(dir.path(), name, &data);
        let e = with_token_file(&p).token().unwrap_err().to_string();
        assert!(
            e.contains(why) && e.contains(&p.display().to_string()),
            "{name}: {e}"
        );
        let text = String::from_utf8_lossy(&data);
        for w in text.trim().as_bytes().windows(10) {
            let w = String::from_utf8_lossy(w);
            assert!(!e.contains(w.as_ref()), "{name}: echoes {w:?}: {e}");
        }
    }
    let p = private_file(dir.path(), "good", format!("{TEST_TOKEN}\r\n").as_bytes());
    assert_eq!(
        with_token_file(&p).token().unwrap().as_deref(),
        Some(TEST_TOKEN)
    );
}

/// 10,000 levels, each indented one space more (48 MiB of text: the parser's own limit, not
/// the file size limit, must stop it).
fn deep_cloud_config(levels: usize) -> String {
    let mut doc = String::from("#cloud-config\nk0s:\n");
    for depth in 1..levels {
        doc.push_str(&" ".repeat(depth));
        doc.push_str("a:\n");
    }
    doc
}

#[test]
fn deep_cloud_config_is_an_error_not_a_stack_overflow() {
    let doc = deep_cloud_config(10_000);
    let e = within(Duration::from_secs(20), "parsing 10k levels", move || {
        cloud_config::yaml::parse(&doc).unwrap_err().message
    });
    assert!(e.contains("nested deeper than"), "{e}");
    // Flow sequences nest too.
    let doc = format!(
        "#cloud-config\nruncmd: {}x{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = cloud_config::from_cloud_config(&doc, Path::new("u"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested"), "{e}");
}

#[test]
fn cloud_config_keys_are_read_in_linear_time() {
    let mut doc = String::from("#cloud-config\nk0s:\n  labels:\n");
    for i in 0..200_000 {
        doc.push_str(&format!("    k{i:06}: v\n"));
    }
    let yaml = within(Duration::from_secs(10), "parsing 200k keys", move || {
        cloud_config::yaml::parse(&doc).unwrap().unwrap()
    });
    let cloud_config::yaml::Value::Map(top) = yaml.value else {
        panic!("a mapping")
    };
    assert_eq!(top.len(), 1);
    // Duplicates are still found, at any count.
    let e = cloud_config::yaml::parse("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("duplicate key `a`"), "{e:?}");
}

#[test]
fn ssh_key_errors_never_echo_the_line() {
    // Lines of an OpenSSH private key, pasted where public keys belong.
    let body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
    for line in [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        body,
        &format!("{body} {body}"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKGYXlLe+vDRfjQ3gMlKR6spZJ6KTrSkeAUbEhNut!!F x",
    ] {
        let mut cfg = NodeConfig::default();
        cfg.ssh.authorized_keys = vec![line.to_string()];
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("ssh.authorized_keys[0]"), "{e}");
        for w in line.as_bytes().windows(16) {
            let w = std::str::from_utf8(w).unwrap();
            if w.starts_with("ssh-ed25519") || w.contains("-----") {
                continue;
            }
            assert!(!e.contains(w), "echoes {w:?}: {e}");
        }
    }
    let mut cfg = NodeConfig::default();
    cfg.ssh.authorized_keys = vec!["-----BEGIN OPENSSH PRIVATE KEY-----".into()];
    let e = cfg.check().unwrap_err().to_string();
    assert!(e.contains("private key") && e.contains(".pub"), "{e}");
}

#[test]
fn long_values_are_shortened_in_errors() {
    let mut cfg = NodeConfig {
        hostname: Some("h".repeat(100_000_000)),
        ..Default::default()
    };
    cfg.time.timezone = Some("Z".repeat(1_000_000));
    cfg.k0s.labels.0.insert("k".repeat(1_000_000), "v".into());
    let e = cfg.check().unwrap_err().to_string();
    assert!(e.len() < 2048, "a {} byte error", e.len());
    assert!(e.contains("100000000 bytes"), "{e}");
}

#[test]
fn control_characters_in_values_and_keys_are_escaped_in_errors() {
    let text = "hostname = \"a\\u001b[2Jb\"\n[k0s]\nlabels = { \"z\\u001b]0;x\\u0007\" = \"a\" }\ntaints = [\"\\u009b31m:NoSchedule\"]\n";
    let e = NodeConfig::from_toml_str(text, Path::new("n.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hostname") && e.contains("k0s.labels.") && e.contains("k0s.taints[0]"),
        "{e}"
    );
    let raw: Vec<char> = e.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {e:?}");
    assert!(e.contains("\\u{1b}"), "{e}");
}

/// wpa_passphrase's PMK for `ssid` and `pass` (the reference implementation: wpasupplicant).
fn wpa_passphrase(ssid: &str, pass: &str) -> String {
    let ok = std::process::Command::new("wpa_passphrase")
        .arg("--version")
        .output()
        .is_ok();
    assert!(
        ok,
        "this test needs `wpa_passphrase` on the host: apt-get install wpasupplicant"
    );
    let o = std::process::Command::new("wpa_passphrase")
        .args([ssid, pass])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "wpa_passphrase {ssid:?} {pass:?}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("psk="))
        .filter(|p| !p.starts_with('"'))
        .expect("a psk= line")
        .to_string()
}

/// Passphrases wpa_supplicant's config syntax cannot carry in a quoted string, or that a
/// careless quoting changes.
pub(super) const HOSTILE_PSKS: [&str; 8] = [
    "password1\"#x",
    "\"quoted\" start",
    "# not a comment",
    "back\\slash\\\\n",
    "  spaces around  ",
    "pässwörd-ünïcode",
    "it's $(id) `x`",
    "12345678",
];

#[test]
fn the_device_gets_the_pmk_wpa_passphrase_derives() {
    for (ssid, pass) in HOSTILE_PSKS
        .iter()
        .map(|p| ("edge net", *p))
        .chain([("café \"#1\"", "a passphrase"), ("x", "01234567")])
    {
        let r = with_wifi(ssid, pass).render().unwrap();
        let env = parse_node_env(std::str::from_utf8(r.get("edgeimg/node.env").unwrap()).unwrap())
            .unwrap();
        assert_eq!(
            env["WIFI_PSK"],
            wpa_passphrase(ssid, pass),
            "ssid {ssid:?} pass {pass:?}"
        );
        // Neither node.env nor node.toml on the card holds the passphrase.
        for (p, c) in &r.files {
            assert!(
                !String::from_utf8_lossy(c).contains(pass),
                "{p} holds the passphrase {pass:?}"
            );
        }
    }
    // A raw key is passed on as it is (in lower case).
    let key = "0123456789ABCDEF".repeat(4);
    let r = with_wifi("x", &key).render().unwrap();
    let env =
        parse_node_env(std::str::from_utf8(r.get("edgeimg/node.env").unwrap()).unwrap()).unwrap();
    assert_eq!(env["WIFI_PSK"], key.to_ascii_lowercase());
}
