use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The example node config of overlays/README.md: the documentation must stay valid.
fn readme_example() -> String {
    let readme = include_str!("../../overlays/README.md");
    let start = readme
        .find("```toml\n")
        .expect("overlays/README.md has a ```toml block")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

/// A join token of the shape `k0s token create` prints: base64 of a gzip'd kubeconfig (this
/// one names no real cluster; made with `gzip -9n < kubeconfig.yaml | base64 -w0`).
pub(crate) const TEST_TOKEN: &str = "H4sIAAAAAAACA3VRQW7CMBC85xX+QMABSoslLqSiUhSpImloyc1JNuBi7MjeIKqqf68x6aFS69POeDw7I/NObMFYoRUj5yioZW/RYRaEZJhZQNypwaBoRc0RQt7jQRuBH2HDkTOS5hTTPIqzoklexOox2yZFXpTJhq6LzN9RjFUm6+lmXz4tot3pItN41VcO7/LVe/mWUP5adrvJmpYb7fVpsX3O4n+89sulD2XBnF1AckDsLBuPa63QaCnBjODCT52EkVBnLkXD5rPZ1L1R/ASMHKkNrlq44K3pbR6aDrW96kr01qO+AgkYVlqjRcO73269MaAw/HHy5FGohpFYq1bsg85AC05Tg2Xk8yu4uvrlg8kf9n6xj4D6CO6DeFU30I5oNJnO7ub3D4sbEXwDC3HrLsUBAAA=";

/// A temporary directory holding `node.toml` plus the files it references.
fn node_dir(toml_text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TEST_TOKEN}\n")).unwrap();
    set_mode(&dir.path().join("token"), 0o600);
    std::fs::write(
        dir.path().join("k0s.yaml"),
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\n",
    )
    .unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, toml_text).unwrap();
    (dir, path)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn parse(text: &str) -> Result<NodeConfig, NodeError> {
    NodeConfig::from_toml_str(text, Path::new("/nonexistent/node.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(NodeError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKGYXlLe+vDRfjQ3gMlKR6spZJ6KTrSkeAUbEhNutjuF user@laptop";

#[test]
fn readme_example_parses_and_renders() {
    let (_dir, path) = node_dir(&readme_example());
    let cfg = NodeConfig::from_toml_file(&path).unwrap();
    assert_eq!(cfg.hostname.as_deref(), Some("edge-01"));
    assert_eq!(cfg.role(), Some(Role::Worker));
    assert_eq!(cfg.check().unwrap(), Vec::<String>::new());
    let r = cfg.render().unwrap();
    let names: Vec<&str> = r.files.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "edgeimg/node.env",
        "edgeimg/node.toml",
        "edgeimg/token",
        "edgeimg/authorized_keys",
        "edgeimg/files/0",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(
        r.get("edgeimg/token").unwrap(),
        format!("{TEST_TOKEN}\n").as_bytes()
    );
}

/// `configure` removes from the boot partition only what `contract::is_node_path` accepts: it
/// must accept everything a config with every part renders, and its folders.
#[test]
fn every_rendered_file_is_a_node_path() {
    let text = readme_example().replace("# config_file", "config_file");
    let (_dir, path) = node_dir(&text);
    let r = NodeConfig::from_toml_file(&path).unwrap().render().unwrap();
    assert!(r.get("edgeimg/k0s.yaml").is_some() && r.get("edgeimg/run_cmd.sh").is_some());
    for (p, _) in &r.files {
        let rel = p.strip_prefix("edgeimg/").unwrap();
        assert!(contract::is_node_path(rel, false), "{rel}");
        let per_mac = format!("nodes/52-54-00-0e-00-0a/{rel}");
        assert!(contract::is_node_path(&per_mac, false), "{per_mac}");
        if let Some((dir, _)) = rel.rsplit_once('/') {
            assert!(contract::is_node_path(dir, true), "{dir}");
        }
    }
    for dir in [
        "nodes",
        "nodes/52-54-00-0e-00-0a",
        "nodes/52-54-00-0e-00-0a/files",
    ] {
        assert!(contract::is_node_path(dir, true), "{dir}");
    }
    for other in [
        "notes.txt",
        "files/x",
        "nodes/52-54/notes.txt",
        "node.env/x",
        "nodes/a b/node.env",
    ] {
        assert!(!contract::is_node_path(other, false), "{other}");
    }
    assert!(!contract::is_node_path("node.env", true));
    assert!(!contract::is_node_path("photos", true));
}

#[test]
fn empty_config_is_valid_and_uses_defaults() {
    let cfg = parse("").unwrap();
    let env = parse_node_env(
        std::str::from_utf8(cfg.render().unwrap().get("edgeimg/node.env").unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(env["NODE_HOSTNAME"], "");
    assert_eq!(env["NODE_ROLE"], "");
    assert_eq!(env["NET_MODE"], "dhcp");
    assert_eq!(env["NTP_SERVERS"], schema::DEFAULT_NTP);
    assert_eq!(env["HAS_TOKEN"], "0");
    assert_eq!(env["FILES_COUNT"], "0");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = parse("hostname = \"a\"\n\n[network]\nmode = \"dhcp\"\ngatway = \"10.0.0.1\"\n")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/nonexistent/node.toml:5:"), "{msg}");
    assert!(msg.contains("gatway"), "{msg}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = parse("[k0s]\nrole = \"worker\"\nargs = \"--debug\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/nonexistent/node.toml:3:"), "{msg}");
    assert!(msg.contains("k0s.args"), "{msg}");
    let err = parse("hostname = 7\n").unwrap_err().to_string();
    assert!(
        err.starts_with("/nonexistent/node.toml:1:") && err.contains("hostname"),
        "{err}"
    );
}

#[test]
fn unknown_role_is_a_parse_error() {
    let err = parse("[k0s]\nrole = \"master\"\n").unwrap_err().to_string();
    assert!(err.contains(":2:") && err.contains("master"), "{err}");
    assert_eq!(
        "controller+worker".parse::<Role>().unwrap(),
        Role::ControllerWorker
    );
    assert!("master".parse::<Role>().is_err());
    for r in Role::ALL {
        assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
    }
    assert!(
        Role::Worker.needs_token()
            && !Role::Controller.needs_token()
            && !Role::Single.needs_token()
    );
}

#[test]
fn semantic_problems_name_their_keys() {
    let p = problems(
        "hostname = \"Bad_Name\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.5\"\ndns = [\"1.1.1.1\", \"dns.example\"]\n\
         [ssh]\nauthorized_keys = [\"ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x\"]\n\
         [[files]]\npath = \"/usr/bin/evil\"\ncontent = \"x\"\n",
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "hostname",
            "network.address",
            "network.gateway",
            "network.dns[1]",
            "ssh.authorized_keys[0]",
            "files[0].path"
        ]
    );
}

#[test]
fn file_modes_from_strings_and_integers() {
    let cfg = parse("[[files]]\npath = \"/etc/a\"\nmode = \"0600\"\n[[files]]\npath = \"/etc/b\"\nmode = 0o755\n[[files]]\npath = \"/etc/c\"\n").unwrap();
    let modes: Vec<u32> = cfg.files.iter().map(|f| f.mode.0).collect();
    assert_eq!(modes, [0o600, 0o755, 0o644]);
    let err = parse("[[files]]\npath = \"/etc/a\"\n[[files]]\npath = \"/etc/b\"\nmode = 644\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":5:") && err.contains("files[1].mode") && err.contains("\"0644\""),
        "{err}"
    );
    assert!(parse("[[files]]\npath = \"/etc/a\"\nmode = \"0o17777\"\n").is_err());
    assert!(parse("[[files]]\npath = \"/etc/a\"\nmode = \"rw-\"\n").is_err());
}

#[test]
fn labels_as_table_or_list_render_sorted() {
    let a = parse("[k0s]\nlabels = { zone = \"b\", \"example.com/rack\" = \"r1\" }\n").unwrap();
    let b = parse("[k0s]\nlabels = [\"zone=b\", \"example.com/rack=r1\"]\n").unwrap();
    assert_eq!(a.k0s.labels, b.k0s.labels);
    let env = env_of(&a);
    assert_eq!(env["K0S_LABELS"], "example.com/rack=r1,zone=b");
    assert!(parse("[k0s]\nlabels = [\"novalue\"]\n").is_err());
}

#[test]
fn size_limits() {
    let big = "x".repeat(MAX_FILE_BYTES + 1);
    let p = problems(&format!(
        "[[files]]\npath = \"/etc/big\"\ncontent = \"{big}\"\n"
    ));
    assert_eq!(p[0].key, "files[0].content");
    let chunk = "x".repeat(MAX_FILE_BYTES - 10);
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "[[files]]\npath = \"/etc/f{i}\"\ncontent = \"{chunk}\"\n"
        ));
    }
    let cfg = parse(&text).unwrap();
    assert!(matches!(cfg.render(), Err(NodeError::TooLarge { .. })));
}

#[test]
fn token_file_problems() {
    let (dir, path) = node_dir("[k0s]\nrole = \"worker\"\ntoken_file = \"token\"\n");
    let cfg = NodeConfig::from_toml_file(&path).unwrap();
    assert_eq!(cfg.token().unwrap().as_deref(), Some(TEST_TOKEN));
    assert!(cfg.check().unwrap().is_empty());

    set_mode(&dir.path().join("token"), 0o644);
    let warnings = cfg.check().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("chmod 600"), "{warnings:?}");

    std::fs::remove_file(dir.path().join("token")).unwrap();
    let err = NodeConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("k0s.token_file")
            && err.contains(&dir.path().join("token").display().to_string()),
        "{err}"
    );

    let (_d2, p2) = node_dir("[k0s]\nrole = \"worker\"\n");
    let w = NodeConfig::from_toml_file(&p2).unwrap().check().unwrap();
    assert!(w[0].contains("wait for a token"), "{w:?}");
}

#[test]
fn overrides_win_and_are_validated() {
    let (dir, path) =
        node_dir("hostname = \"a\"\n[k0s]\nrole = \"worker\"\nlabels = { zone = \"a\" }\n");
    let mut cfg = NodeConfig::from_toml_file(&path).unwrap();
    cfg.apply(&NodeOverrides {
        hostname: Some("b".into()),
        role: Some(Role::Single),
        token_file: Some(dir.path().join("token")),
        ssh_keys: vec![ED25519.into()],
        labels: vec!["zone=b".into()],
        address: Some("10.1.2.3/24".into()),
        gateway: Some("10.1.2.1".into()),
        ntp: Some(vec![]),
        ..Default::default()
    });
    cfg.check().unwrap();
    let env = env_of(&cfg);
    assert_eq!(env["NODE_HOSTNAME"], "b");
    assert_eq!(env["NODE_ROLE"], "single");
    assert_eq!(env["HAS_TOKEN"], "1");
    assert_eq!(env["K0S_LABELS"], "zone=b");
    assert_eq!(env["NET_MODE"], "static");
    assert_eq!(env["NTP_SERVERS"], "");
    cfg.apply(&NodeOverrides {
        hostname: Some("-bad".into()),
        ..Default::default()
    });
    assert!(matches!(cfg.check(), Err(NodeError::Invalid { .. })));
}

#[test]
fn rendering_is_deterministic_and_generation_tracks_content() {
    let (_dir, path) = node_dir(&readme_example());
    let cfg = NodeConfig::from_toml_file(&path).unwrap();
    let a = cfg.render().unwrap();
    assert_eq!(a, cfg.render().unwrap());
    let gen = |r: &RenderedNode| env_of_rendered(r)["CONFIG_GENERATION"].clone();
    let mut changed = cfg.clone();
    changed.files[0].content.push('!');
    assert_ne!(
        gen(&a),
        gen(&changed.render().unwrap()),
        "file content must change the generation"
    );
    let mut changed = cfg.clone();
    changed.run_cmd.push("true".into());
    assert_ne!(gen(&a), gen(&changed.render().unwrap()));
}

#[test]
fn config_generation_is_sha256_of_node_env_without_that_line() {
    let cfg = parse("hostname = \"n1\"\n").unwrap();
    let r = cfg.render().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("node.env"),
        r.get("edgeimg/node.env").unwrap(),
    )
    .unwrap();
    // What the device runs to notice a hand-edited node.env.
    let out = run_sh("sh", dir.path(), ". ./node.env; [ \"$(sed '/^CONFIG_GENERATION=/d' node.env | sha256sum | cut -d' ' -f1)\" = \"$CONFIG_GENERATION\" ] && echo same");
    assert_eq!(out, "same\n");
}

#[test]
fn boot_node_toml_reads_back() {
    let (_dir, path) = node_dir(&readme_example().replace("# config_file", "config_file"));
    let cfg = NodeConfig::from_toml_file(&path).unwrap();
    assert!(cfg.k0s.config_file.is_some());
    let r = cfg.render().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (p, c) in &r.files {
        let dst = out.path().join(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, c).unwrap();
    }
    let back = NodeConfig::from_toml_file(&out.path().join("edgeimg/node.toml")).unwrap();
    assert_eq!(back.hostname, cfg.hostname);
    assert_eq!(back.files, cfg.files);
    assert_eq!(back.k0s.token_file, None);
    assert_eq!(back.k0s_config().unwrap(), cfg.k0s_config().unwrap());
    // Rendering what was read back gives the same node.env, except that the token moved.
    let env_a = env_of_rendered(&r);
    let env_b = env_of(&back);
    for (k, v) in &env_a {
        if !["HAS_TOKEN", "CONFIG_GENERATION"].contains(&k.as_str()) {
            assert_eq!(&env_b[k], v, "{k}");
        }
    }
}

#[test]
fn into_tree_places_files_under_edgeimg() {
    let cfg = parse("[[files]]\npath = \"/etc/x\"\ncontent = \"hi\"\n").unwrap();
    let t = cfg.render().unwrap().into_tree().unwrap();
    assert_eq!(&*t.read("edgeimg/files/0").unwrap(), b"hi");
    assert!(t.get("edgeimg/files").unwrap().is_dir());
    assert_eq!(t.get("edgeimg/node.env").unwrap().mode, 0o644);
}

/// Values that try to break out of the quoting.
const HOSTILE: [&str; 7] = [
    "it's",
    "$(touch /tmp/edgeimg-pwned)",
    "`id`",
    "a\nb\n",
    "'\\''",
    "\\ \" $HOME ${X:-y} ;|&",
    "''",
];

#[test]
fn hostile_values_survive_sourcing_by_sh_and_busybox() {
    // Direct: any value (newlines included) written with shell_quote comes back.
    let dir = tempfile::tempdir().unwrap();
    let env: String = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, h)| format!("V{i}={}\n", shell_quote(h)))
        .collect();
    std::fs::write(dir.path().join("v.env"), &env).unwrap();
    let parsed = parse_node_env(&env).unwrap();
    for (i, h) in HOSTILE.iter().enumerate() {
        assert_eq!(parsed[&format!("V{i}")], *h);
        for shell in shells() {
            let got = run_sh(
                &shell,
                dir.path(),
                &format!(". ./v.env; printf %s \"$V{i}\""),
            );
            assert_eq!(got, *h, "{shell}, value {i}");
        }
    }
    // Through render: the fields that may hold such text (newlines are refused there).
    for (i, h) in HOSTILE.iter().map(|h| h.replace('\n', " ")).enumerate() {
        let mut cfg = NodeConfig::default();
        cfg.k0s.args = vec![h.clone(), "--x=1 2".into()];
        let psk = format!("pppppppp{h}");
        cfg.wifi = Some(WifiConfig {
            ssid: "ok".into(),
            psk: Some(psk.clone()),
            country: Some("DE".into()),
        });
        cfg.run_cmd = vec![format!("printf '%s\\n' {}", shell_quote(&h))];
        let r = cfg.render().unwrap();
        std::fs::write(
            dir.path().join("node.env"),
            r.get("edgeimg/node.env").unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("run_cmd.sh"),
            r.get("edgeimg/run_cmd.sh").unwrap(),
        )
        .unwrap();
        // The device is given the PMK, never the passphrase.
        let pmk = wifi_pmk("ok", &psk);
        for shell in shells() {
            let got = run_sh(&shell, dir.path(), ". ./node.env; printf %s \"$WIFI_PSK\"");
            assert_eq!(got, pmk, "{shell}, value {i}");
            // K0S_ARGS is itself a list of quoted words: `eval set --` gives the args back.
            let got = run_sh(
                &shell,
                dir.path(),
                ". ./node.env; eval \"set -- $K0S_ARGS\"; printf '%s|' \"$@\"",
            );
            assert_eq!(got, format!("{h}|--x=1 2|"), "{shell}, value {i}");
            let got = run_sh(
                &shell,
                dir.path(),
                &format!("{} ./run_cmd.sh", shell_cmd(&shell)),
            );
            assert_eq!(got, format!("{h}\n"), "{shell}, value {i}");
        }
        assert_eq!(env_of_rendered(&r)["WIFI_PSK"], pmk);
    }
    assert!(!Path::new("/tmp/edgeimg-pwned").exists());
}

fn shell_cmd(shell: &str) -> &'static str {
    if shell == "busybox" {
        "busybox sh"
    } else {
        "sh"
    }
}

#[test]
fn shell_quote_round_trips_every_byte_but_nul() {
    let all: String = (1u8..=127).map(char::from).collect::<String>() + "é€";
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("v")).unwrap();
    writeln!(f, "V={}", shell_quote(&all)).unwrap();
    for shell in shells() {
        assert_eq!(
            run_sh(&shell, dir.path(), ". ./v; printf %s \"$V\""),
            all,
            "{shell}"
        );
    }
}

/// `sh` always; busybox's ash as well when installed (it is the shell on the device).
fn shells() -> Vec<String> {
    let mut s = vec!["sh".to_string()];
    if Command::new("busybox")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
    {
        s.push("busybox".into());
    }
    s
}

fn run_sh(shell: &str, dir: &Path, script: &str) -> String {
    let mut cmd = Command::new(shell);
    if shell == "busybox" {
        cmd.arg("sh");
    }
    let out = cmd
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "{shell} -c {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn env_of(cfg: &NodeConfig) -> std::collections::BTreeMap<String, String> {
    env_of_rendered(&cfg.render().unwrap())
}

fn env_of_rendered(r: &RenderedNode) -> std::collections::BTreeMap<String, String> {
    parse_node_env(std::str::from_utf8(r.get("edgeimg/node.env").unwrap()).unwrap()).unwrap()
}

#[test]
fn malformed_array_table_header_gives_an_error_not_a_panic() {
    // Found by the `node` fuzz target: `[[files]` before a key of the wrong type made the
    // key-naming code count -1 array elements.
    let text = "[[files]\nmode = []\n";
    let err = NodeConfig::from_toml_str(text, Path::new("n.toml")).unwrap_err();
    assert!(format!("{err:#}").contains("n.toml:"), "{err:#}");
    assert_eq!(
        super::key_at("[[files]\nmode = 1\n", 2).as_deref(),
        Some("files[0].mode")
    );
}

#[test]
fn update_trial_timeout_is_checked_and_reaches_node_env() {
    let p = problems("[update]\ntrial_timeout = 5\n");
    assert!(
        p.iter().any(|p| p
            .to_string()
            .contains("trial_timeout = 5: give seconds from 60")),
        "{p:?}"
    );
    let cfg = parse("[update]\ntrial_timeout = 120\n").unwrap();
    assert_eq!(
        env_of_rendered(&cfg.render().unwrap())["UPDATE_TRIAL_TIMEOUT"],
        "120"
    );
    let plain = parse("hostname = \"n1\"\n").unwrap();
    assert!(!env_of_rendered(&plain.render().unwrap()).contains_key("UPDATE_TRIAL_TIMEOUT"));
}

#[test]
fn update_watchdog_is_checked_and_reaches_node_env() {
    for bad in ["1", "4", "601"] {
        let p = problems(&format!("[update]\nwatchdog = {bad}\n"));
        assert!(
            p.iter().any(|p| p
                .to_string()
                .contains(&format!("watchdog = {bad}: give seconds from 5 to 600"))),
            "{bad}: {p:?}"
        );
    }
    for good in ["0", "5", "600"] {
        let cfg = parse(&format!("[update]\nwatchdog = {good}\n")).unwrap();
        assert_eq!(
            env_of_rendered(&cfg.render().unwrap())["UPDATE_WATCHDOG"],
            good
        );
    }
    let plain = parse("hostname = \"n1\"\n").unwrap();
    assert!(!env_of_rendered(&plain.render().unwrap()).contains_key("UPDATE_WATCHDOG"));
}

#[test]
fn update_channel_is_checked_and_reaches_node_env() {
    let field = |text: &str| {
        problems(text)
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let p = field("[update]\nurl = \"ftp://host/x.update\"\n");
    assert!(
        p.contains("update.url") && p.contains("give an http:// or https:// URL"),
        "{p}"
    );
    let p = field("[update]\nurl = \"http://host/a b.update\"\n");
    assert!(p.contains("no spaces or quotes"), "{p}");
    let p = field("[update]\ncheck_interval = 600\n");
    assert!(
        p.contains("update.check_interval") && p.contains("without url"),
        "{p}"
    );
    let p = field("[update]\nurl = \"http://h/x.update\"\ncheck_interval = 5\n");
    assert!(
        p.contains("check_interval = 5: give seconds from 60"),
        "{p}"
    );
    let cfg = parse(
        "[update]\nurl = \"http://10.0.0.2:8080/x86-64-worker.update\"\ncheck_interval = 600\n",
    )
    .unwrap();
    let env = env_of(&cfg);
    assert_eq!(
        env["UPDATE_URL"],
        "http://10.0.0.2:8080/x86-64-worker.update"
    );
    assert_eq!(env["UPDATE_CHECK_INTERVAL"], "600");
    let plain = parse("hostname = \"n1\"\n").unwrap();
    assert!(!env_of(&plain).contains_key("UPDATE_URL"));
}
