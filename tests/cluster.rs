//! `edgeimg cluster` and `configure --cluster` end to end, on small synthetic images (no
//! Debian download): what lands on each card's boot partition is read back with mtools,
//! the worker's token with kubectl; every refusal leaves the image and the cluster folder
//! as they were.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use sha2::{Digest, Sha256};

fn digest(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn fat(img: &Path) -> String {
    format!("{}@@{}", img.display(), BOOT_START * 512)
}

/// The boot partition's files under edgeimg/, recursively (mdir -/ -b).
fn listing(img: &Path) -> String {
    need("mdir");
    let o = run_tool("mdir", &["-i", &fat(img), "-/", "-b", "::/edgeimg"]);
    assert!(o.status.success(), "mdir: {}", stderr(&o));
    stdout(&o)
}

fn mtype(img: &Path, path: &str) -> String {
    need("mtype");
    let o = run_tool("mtype", &["-i", &fat(img), &format!("::/{path}")]);
    assert!(o.status.success(), "mtype {path}: {}", stderr(&o));
    stdout(&o)
}

fn configure(dir: &Path, img: &Path, cluster: &str, node: &str) -> std::process::Output {
    edgeimg_in(
        dir,
        &[
            "configure",
            img.to_str().unwrap(),
            "--cluster",
            cluster,
            "--inventory",
            "fleet.toml",
            "--node-name",
            node,
        ],
    )
}

fn refused(
    o: &std::process::Output,
    what: &str,
    img: &Path,
    before: &str,
    state: &Path,
    state_before: &str,
) {
    assert!(!o.status.success(), "expected a refusal ({what})");
    let e = stderr(o);
    assert!(e.contains(what), "expected `{what}` in: {e}");
    assert_eq!(digest(img), before, "the image changed after: {e}");
    if state.exists() {
        assert_eq!(
            digest(state),
            state_before,
            "cluster.toml changed after: {e}"
        );
    }
}

#[test]
fn a_cluster_is_issued_card_by_card() {
    need("kubectl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("fleet.toml"), CLUSTER_FLEET).unwrap();
    let ctl = dir.join("ctl.img");
    let w1 = dir.join("w1.img");
    disk_image(&ctl);
    disk_image(&w1);

    let o = edgeimg_in(
        dir,
        &[
            "cluster",
            "init",
            "shop1",
            "--k0s-version",
            "v1.34.10+k0s.0",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("cluster.schema.json", &o.stdout);
    let init: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(init["name"], "shop1", "{init}");
    assert_eq!(init["k0s_version"], "v1.34.10+k0s.0", "{init}");
    let state = dir.join("shop1/cluster.toml");
    assert_eq!(
        std::fs::metadata(dir.join("shop1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let o = edgeimg_in(dir, &["cluster", "init", "shop1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("already a cluster"),
        "{}",
        stderr(&o)
    );

    // Refusals first: nothing written.
    let (img0, st0) = (digest(&w1), digest(&state));
    std::fs::create_dir(dir.join("notacluster")).unwrap();
    let o = configure(dir, &w1, "notacluster", "pi-07");
    refused(&o, "is not an edgeimg cluster", &w1, &img0, &state, &st0);
    let o = configure(dir, &w1, "shop1", "pi-07");
    refused(
        &o,
        "no controller address is known yet",
        &w1,
        &img0,
        &state,
        &st0,
    );
    std::fs::set_permissions(dir.join("shop1"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let o = configure(dir, &w1, "shop1", "pi-07");
    refused(&o, "readable by others", &w1, &img0, &state, &st0);
    std::fs::set_permissions(dir.join("shop1"), std::fs::Permissions::from_mode(0o700)).unwrap();

    // The first controller: PKI, k0s.yaml, the workers' Secrets.
    let o = configure(dir, &ctl, "shop1", "ctl-1");
    assert!(o.status.success(), "{}", stderr(&o));
    let l = listing(&ctl).to_ascii_lowercase();
    for f in [
        "k0s-data/pki/ca.crt",
        "k0s-data/pki/ca.key",
        "k0s-data/pki/sa.key",
        "k0s-data/pki/sa.pub",
        "k0s-data/pki/front-proxy-ca.key",
        "k0s-data/pki/etcd/ca.key",
        "k0s.yaml",
    ] {
        assert!(l.contains(&format!("edgeimg/{f}")), "{f} missing:\n{l}");
    }
    assert_eq!(
        l.matches("k0s-data/manifests/edgeimg-tokens/bootstrap-token-")
            .count(),
        2,
        "{l}"
    );
    assert!(!l.contains("edgeimg/token"), "{l}");
    assert_eq!(
        mtype(&ctl, "edgeimg/k0s-data/pki/ca.crt"),
        std::fs::read_to_string(dir.join("shop1/pki/ca.crt")).unwrap()
    );
    assert!(mtype(&ctl, "edgeimg/k0s.yaml").contains("address: 10.0.0.1"));

    // A worker: its own token, naming the controller and carrying the CA.
    let o = configure(dir, &w1, "shop1", "pi-07");
    assert!(o.status.success(), "{}", stderr(&o));
    let token = mtype(&w1, "edgeimg/token");
    let l = listing(&w1).to_ascii_lowercase();
    assert!(!l.contains("k0s-data") && !l.contains("ca.key"), "{l}");
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .unwrap();
    let mut kubeconfig = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(gz.as_slice()),
        &mut kubeconfig,
    )
    .unwrap();
    std::fs::write(dir.join("kc"), &kubeconfig).unwrap();
    let o = run_tool(
        "kubectl",
        &[
            "config",
            "view",
            "--raw",
            "--kubeconfig",
            dir.join("kc").to_str().unwrap(),
            "-o",
            "jsonpath={.clusters[0].cluster.server} {.users[0].name}",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "https://10.0.0.1:6443 kubelet-bootstrap");
    let status = stdout(&edgeimg_in(dir, &["cluster", "status", "shop1"]));
    assert!(status.contains("api address: 10.0.0.1"), "{status}");
    let id = status
        .lines()
        .find(|l| l.contains("pi-07"))
        .and_then(|l| l.split("token ").nth(1))
        .map(|s| s[..6].to_string())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(kubeconfig.contains(&format!("token: {id}.")), "{status}");
    assert!(
        status.contains("pi-08") && status.contains("reserved"),
        "{status}"
    );

    // The same name again: refused.
    let (img1, st1) = (digest(&w1), digest(&state));
    let o = configure(dir, &w1, "shop1", "pi-07");
    refused(&o, "already issued", &w1, &img1, &state, &st1);

    // flash: the card gets the share, the image flashed from stays without a secret.
    let src = dir.join("worker.img");
    disk_image(&src);
    let src_before = digest(&src);
    let card = dir.join("card.img");
    let o = edgeimg_in(
        dir,
        &[
            "flash",
            "worker.img",
            "--device-file",
            "card.img",
            "--no-bmap",
            "--cluster",
            "shop1",
            "--inventory",
            "fleet.toml",
            "--node-name",
            "pi-08",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Its report names what configure wrote (the token as written, never its value).
    check_json("flash.schema.json", &o.stdout);
    let flashed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(flashed["configured"]["token"], true, "{flashed}");
    assert!(!stdout(&o).contains("H4sI"), "{flashed}");
    assert_eq!(digest(&src), src_before, "flash changed its source image");
    assert!(!listing(&src).to_ascii_lowercase().contains("edgeimg/token"));
    assert!(mtype(&card, "edgeimg/token").starts_with("H4sI"));
    let status = stdout(&edgeimg_in(dir, &["cluster", "status", "shop1"]));
    assert!(
        status
            .lines()
            .any(|l| l.contains("pi-08") && l.contains("issued")),
        "{status}"
    );
    let o = edgeimg_in(dir, &["cluster", "status", "shop1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("cluster.schema.json", &o.stdout);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |n: &str| {
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {st}"))
    };
    assert_eq!(row("pi-08")["state"], "issued", "{st}");
    assert_eq!(row("pi-07")["token_id"], id.as_str(), "{st}");
    assert!(!stdout(&o).contains("token_secret"), "{st}");

    // Revoke and k0sctl.
    let o = edgeimg_in(dir, &["cluster", "revoke", "shop1", "pi-07", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("cluster.schema.json", &o.stdout);
    assert!(
        stdout(&o).contains(&format!("delete secret bootstrap-token-{id}")),
        "{}",
        stdout(&o)
    );
    let o = edgeimg_in(
        dir,
        &[
            "cluster",
            "k0sctl",
            "shop1",
            "--inventory",
            "fleet.toml",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("cluster.schema.json", &o.stdout);
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(k["hosts"], 3, "{k}");
    let y = std::fs::read_to_string(dir.join("shop1/k0sctl.yaml")).unwrap();
    assert_eq!(y.matches("- role: ").count(), 3, "{y}");
    assert!(y.contains("address: 10.0.0.8"), "{y}");
}
