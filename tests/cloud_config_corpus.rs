//! The cloud-config corpus of tests/cloud-config/: real-world files (cloud-init's documented
//! examples, what Raspberry Pi Imager writes, the measured YAML bugs), each with its expected
//! outcome in corpus.toml.
//!
//! - Every file is accepted or refused as listed, and a refusal names the line.
//! - Every accepted file is judged by PyYAML, cloud-init's own YAML reader:
//!   tests/cloud-config/expect.py reads it with `yaml.safe_load` and applies cloud-init's
//!   meaning (decode_perms, encodings, shellify, hostname/fqdn, ntp); the hostname, keys,
//!   commands, time zone, NTP servers and `[[files]]` edgeimg renders must equal it, and so
//!   must the files (bytes, modes, owners) the device's own `write_node_files` writes from
//!   the rendered boot partition, run under busybox sh.
//! - `build --dry-run --node` and `configure --node` read the same files with the same result.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use edgeimg::node::{parse_node_env, NodeConfig, RenderedNode};
use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    #[allow(dead_code)]
    source: String,
    refused: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cloud-config")
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("corpus.toml")).unwrap();
    toml::from_str::<Corpus>(&text).unwrap().case
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn every_file_of_the_corpus_has_its_outcome() {
    let cases = corpus();
    let mut listed: Vec<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(listed, files, "corpus.toml lists every file once");
    assert!(cases.len() >= 20, "{} files", cases.len());
    let accepted = cases.iter().filter(|c| c.refused.is_none()).count();
    assert!(accepted >= 10, "{accepted} accepted");
    let mut wrong = Vec::new();
    for c in &cases {
        let path = dir().join(&c.file);
        match (NodeConfig::from_file(&path), &c.refused) {
            (Ok(_), None) => {}
            (Err(e), Some(fragment)) => {
                let m = e.to_string();
                // The line: `file:LINE:COL: ...` or `key (line N): ...`.
                let after = m
                    .split(&format!("{}:", path.display()))
                    .nth(1)
                    .unwrap_or("");
                let names_line =
                    m.contains("(line ") || after.starts_with(|ch: char| ch.is_ascii_digit());
                if !m.contains(fragment.as_str()) || !names_line {
                    wrong.push(format!(
                        "{}: expected a refusal with {fragment:?}, got: {m}",
                        c.file
                    ));
                }
            }
            (Ok(_), Some(fragment)) => wrong.push(format!(
                "{}: accepted, expected a refusal with {fragment:?}",
                c.file
            )),
            (Err(e), None) => wrong.push(format!("{}: refused: {e}", c.file)),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// expect.py's reading of `path` (PyYAML + cloud-init's meaning).
fn pyyaml(path: &Path) -> serde_json::Value {
    common::need_tool("python3", "python3");
    let script = dir().join("expect.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python3 expect.py {}: {} (PyYAML: apt-get install python3-yaml; scripts/install-deps test)",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The body of a rendered run_cmd.sh/boot_cmd.sh: the lines after edgeimg's 3-line header.
fn script_body(r: &RenderedNode, name: &str) -> String {
    match r.get(&format!("edgeimg/{name}")) {
        None => String::new(),
        Some(s) => {
            let s = String::from_utf8(s.to_vec()).unwrap();
            let header: Vec<&str> = s.splitn(4, '\n').collect();
            assert_eq!(header[0], "#!/bin/sh");
            assert_eq!(header[2], "set -e");
            header.get(3).unwrap_or(&"").to_string()
        }
    }
}

/// Runs the device's write_node_files (both phases) under busybox sh on the rendered boot
/// partition, into a folder: (path -> (bytes, mode, owner given with chown)).
fn device_writes(r: &RenderedNode) -> BTreeMap<String, (Vec<u8>, u32, Option<String>)> {
    common::need("busybox");
    let t = tempfile::tempdir().unwrap();
    for (p, data) in &r.files {
        let dst = t.path().join("boot").join(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, data).unwrap();
    }
    let lib = t.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(
        lib.join("contract.sh"),
        edgeimg::node::contract::render_shell(),
    )
    .unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let script = format!(
        r#"set -u
. "{repo}/overlays/rootfs/usr/lib/edgeimg/lib.sh"
EDGEIMG_BOOT="{t}/boot/edgeimg" EDGEIMG_STATE="{t}/state" EDGEIMG_TARGET="{t}/root"
. "$EDGEIMG_BOOT/node.env"
chown() {{ echo "$2 $1" >>"{t}/owners"; }}
write_node_files now
[ -z "$FILES_FAILED" ] || {{ echo "failed:$FILES_FAILED" >&2; exit 1; }}
write_node_files deferred
[ -z "$FILES_FAILED" ] || {{ echo "failed:$FILES_FAILED" >&2; exit 1; }}
"#,
        repo = env!("CARGO_MANIFEST_DIR"),
        t = t.path().display()
    );
    let o = Command::new("busybox")
        .args(["sh", "-c", &script])
        .env("EDGEIMG_LIB", &lib)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut owners = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(t.path().join("owners")) {
        for l in text.lines() {
            let (p, o) = l.split_once(' ').unwrap();
            let p = p
                .strip_prefix(root.to_str().unwrap())
                .unwrap()
                .strip_suffix(".edgeimg-tmp")
                .unwrap();
            owners.insert(p.to_string(), o.to_string());
        }
    }
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = format!("/{}", p.strip_prefix(&root).unwrap().display());
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            let owner = owners.get(&rel).cloned();
            out.insert(rel, (std::fs::read(&p).unwrap(), mode, owner));
        }
    }
    out
}

#[test]
fn every_accepted_file_gives_what_pyyaml_reads() {
    let mut checked = 0;
    for c in corpus().into_iter().filter(|c| c.refused.is_none()) {
        let path = dir().join(&c.file);
        let want = pyyaml(&path);
        let cfg = NodeConfig::from_file(&path).unwrap();
        let r = cfg.render().unwrap();
        let env = parse_node_env(std::str::from_utf8(r.get("edgeimg/node.env").unwrap()).unwrap())
            .unwrap();
        let f = &c.file;
        let str_or_empty = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        assert_eq!(
            env["NODE_HOSTNAME"],
            str_or_empty(&want["hostname"]),
            "{f}: hostname"
        );
        assert_eq!(
            env["TIMEZONE"],
            str_or_empty(&want["timezone"]),
            "{f}: timezone"
        );
        let ntp = match want["ntp"].as_array() {
            Some(list) => list
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" "),
            None => NodeConfig::default().time.servers().join(" "),
        };
        assert_eq!(env["NTP_SERVERS"], ntp, "{f}: ntp");
        let keys: Vec<&str> = want["authorized_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let rendered_keys = r
            .get("edgeimg/authorized_keys")
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .unwrap_or_default();
        assert_eq!(rendered_keys.lines().collect::<Vec<_>>(), keys, "{f}: keys");
        assert_eq!(
            script_body(&r, "run_cmd.sh"),
            want["runcmd"].as_str().unwrap(),
            "{f}: runcmd"
        );
        assert_eq!(
            script_body(&r, "boot_cmd.sh"),
            want["bootcmd"].as_str().unwrap(),
            "{f}: bootcmd"
        );
        // The [[files]] entries, one by one.
        let files = want["files"].as_array().unwrap();
        assert_eq!(env["FILES_COUNT"], files.len().to_string(), "{f}: files");
        for (i, w) in files.iter().enumerate() {
            assert_eq!(
                env[&format!("FILE_{i}_PATH")],
                w["path"].as_str().unwrap(),
                "{f}: files[{i}]"
            );
            assert_eq!(
                r.get(&format!("edgeimg/files/{i}")).unwrap(),
                b64(w["content_b64"].as_str().unwrap()),
                "{f}: files[{i}] content"
            );
            let mode = w["mode"].as_u64().unwrap();
            assert_eq!(
                env[&format!("FILE_{i}_MODE")],
                format!("{mode:04o}"),
                "{f}: files[{i}] mode"
            );
            assert_eq!(
                env.get(&format!("FILE_{i}_OWNER")).map(String::as_str),
                w["owner"].as_str(),
                "{f}: files[{i}] owner"
            );
            for flag in ["append", "defer"] {
                let set = env.contains_key(&format!("FILE_{i}_{}", flag.to_uppercase()));
                assert_eq!(set, w[flag].as_bool().unwrap(), "{f}: files[{i}] {flag}");
            }
        }
        // What the device writes from it: the files after a first boot.
        let tree = device_writes(&r);
        let want_tree = want["tree"].as_object().unwrap();
        assert_eq!(
            tree.keys().collect::<Vec<_>>(),
            want_tree.keys().collect::<Vec<_>>(),
            "{f}: files written"
        );
        for (p, w) in want_tree {
            let (data, mode, owner) = &tree[p];
            assert_eq!(
                *data,
                b64(w["content_b64"].as_str().unwrap()),
                "{f}: {p} content"
            );
            assert_eq!(
                u64::from(*mode),
                w["mode"].as_u64().unwrap(),
                "{f}: {p} mode"
            );
            assert_eq!(owner.as_deref(), w["owner"].as_str(), "{f}: {p} owner");
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} files compared");
}

/// The commands that take `--node` read the corpus alike (build used to read TOML only).
#[test]
fn build_and_configure_read_the_same_cloud_configs() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("absent.img");
    for c in corpus() {
        let path = dir().join(&c.file);
        let p = path.to_str().unwrap();
        let o = common::edgeimg(&["build", "--board", "pi3", "--dry-run", "--node", p]);
        let err = common::stderr(&o);
        match &c.refused {
            None => {
                assert!(
                    o.status.success(),
                    "{}: build --node refused it: {err}",
                    c.file
                );
                let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                // Without one the plan shows the derived name.
                if let Some(h) = NodeConfig::from_file(&path).unwrap().hostname {
                    assert_eq!(plan["node"]["hostname"], h.as_str(), "{}: the plan", c.file);
                }
            }
            Some(fragment) => {
                assert!(!o.status.success(), "{}: build accepted it", c.file);
                assert!(err.contains(fragment.as_str()), "{}: build: {err}", c.file);
                let o = common::edgeimg(&["configure", img.to_str().unwrap(), "--node", p]);
                let err = common::stderr(&o);
                assert!(
                    !o.status.success() && err.contains(fragment.as_str()),
                    "{}: configure: {err}",
                    c.file
                );
            }
        }
    }
}
