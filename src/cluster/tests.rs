//! The cluster folder judged by the programs that consume it: `openssl` reads the CAs and
//! keys, `kubectl` the kubeconfig inside a worker's token, PyYAML the token Secrets (with
//! the fields k0s's bootstrap-token code reads). Needs openssl, kubectl (kubernetes-client)
//! and python3 with PyYAML (python3-yaml) on the host.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}` on the host: apt-get install {package}"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn opts(api: Option<&str>) -> InitOptions {
    InitOptions {
        api_address: api.map(String::from),
        sans: vec!["api.shop1.example".into()],
        controllers: 2,
        k0s_version: "v1.34.10+k0s.0".into(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn decode_token(t: &str) -> String {
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn init_writes_cas_that_openssl_accepts_and_keeps_them_private() {
    need("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop1");
    let c = Cluster::init(&dir, &opts(Some("192.168.1.10"))).unwrap();
    assert_eq!(c.state.name, "shop1");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
    for f in pki::file_names() {
        assert_eq!(mode(&dir.join(PKI_DIR).join(&f)), 0o600, "{f}");
    }
    for (base, cn) in pki::CAS {
        let crt = dir.join(PKI_DIR).join(format!("{base}.crt"));
        let key = dir.join(PKI_DIR).join(format!("{base}.key"));
        let text = run(Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&crt));
        assert!(text.contains("CA:TRUE"), "{base}: {text}");
        assert!(text.contains("Certificate Sign"), "{base}: {text}");
        assert!(text.contains(&format!("CN = {cn}")), "{base}: {text}");
        assert!(
            text.contains("rsaEncryption") && text.contains("2048 bit"),
            "{text}"
        );
        // Valid for 19 years from now at least (checkend takes seconds).
        run(Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-checkend",
                &(19u64 * 365 * 86400).to_string(),
                "-in",
            ])
            .arg(&crt));
        let v = run(Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&crt)
            .arg(&crt));
        assert!(v.contains(": OK"), "{v}");
        // The key is the certificate's, and in the form k0s writes (PKCS#1).
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{base}");
        let m1 = run(Command::new("openssl")
            .args(["x509", "-noout", "-modulus", "-in"])
            .arg(&crt));
        let m2 = run(Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&key));
        assert_eq!(m1, m2, "{base}: key and certificate differ");
    }
    let sa = dir.join(PKI_DIR).join("sa.key");
    let derived = run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&sa));
    assert_eq!(
        derived,
        std::fs::read_to_string(dir.join(PKI_DIR).join("sa.pub")).unwrap()
    );

    // Refuses to overwrite, and any existing folder.
    let e = Cluster::init(&dir, &opts(Some("192.168.1.10"))).unwrap_err();
    assert!(e.to_string().contains("already a cluster"), "{e}");
    std::fs::create_dir(tmp.path().join("other")).unwrap();
    let e = Cluster::init(&tmp.path().join("other"), &opts(None)).unwrap_err();
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
    // A bad address: nothing written.
    let e = Cluster::init(&tmp.path().join("bad"), &opts(Some("10.0.0.1:6443"))).unwrap_err();
    assert!(e.to_string().contains("--api-address"), "{e}");
    assert!(!tmp.path().join("bad").exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!left.iter().any(|n| n.starts_with('.')), "{left:?}");
}

#[test]
fn open_refuses_folders_that_are_not_private_clusters() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Cluster::open(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("not an edgeimg cluster"), "{e}");
    let dir = tmp.path().join("c");
    Cluster::init(&dir, &opts(Some("10.0.0.1"))).unwrap();
    Cluster::open(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Cluster::open(&dir).unwrap_err();
    assert!(
        e.to_string().contains("mode 0755") && e.to_string().contains("chmod -R go="),
        "{e}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = dir.join("pki/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = Cluster::open(&dir).unwrap_err();
    assert!(e.to_string().contains("ca.key"), "{e}");
}

#[test]
fn nodes_are_issued_tokens_in_k0s_format_once_each() {
    need("kubectl", "kubernetes-client");
    need("python3", "python3"); // with PyYAML (python3-yaml)
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop1");
    let mut c = Cluster::init(&dir, &opts(None)).unwrap();
    let inv = [
        ("ctl-1".to_string(), Role::Controller),
        ("ctl-2".to_string(), Role::Controller),
        ("pi-07".to_string(), Role::Worker),
    ];
    // No API address yet: a worker cannot be issued before the first controller.
    let e = c.issue("pi-07", Role::Worker, None, &inv).unwrap_err();
    assert!(e.to_string().contains("no controller address"), "{e}");
    assert!(c.state.nodes.is_empty());

    let ctl = c
        .issue("ctl-1", Role::Controller, Some("10.0.0.1/24"), &inv)
        .unwrap();
    c.save().unwrap();
    assert_eq!(c.state.api_address.as_deref(), Some("10.0.0.1"));
    assert!(ctl.secrets.token.is_none());
    let yaml = String::from_utf8(ctl.secrets.k0s_yaml.clone().unwrap()).unwrap();
    let files: BTreeMap<_, _> = ctl.secrets.data_files.iter().cloned().collect();
    for f in pki::file_names() {
        assert_eq!(
            files[&format!("pki/{f}")],
            std::fs::read(dir.join("pki").join(&f)).unwrap()
        );
    }
    assert_eq!(ctl.secrets_for, ["ctl-2", "pi-07"]);

    let w = c
        .issue("pi-07", Role::Worker, Some("10.0.0.7/24"), &inv)
        .unwrap();
    c.save().unwrap();
    assert!(
        w.pending.is_none(),
        "its Secret is on the controller's card"
    );
    let token = w.secrets.token.clone().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, decode_token(&token)).unwrap();
    let view = run(Command::new("kubectl")
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(&kubeconfig));
    let v: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(v["current-context"], "k0s");
    assert_eq!(
        v["clusters"][0]["cluster"]["server"],
        "https://10.0.0.1:6443"
    );
    let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    assert_eq!(ca, std::fs::read(dir.join("pki/ca.crt")).unwrap());
    assert_eq!(v["users"][0]["name"], "kubelet-bootstrap");
    let tok = v["users"][0]["user"]["token"].as_str().unwrap();
    let r = &c.state.nodes["pi-07"];
    assert_eq!(
        tok,
        format!(
            "{}.{}",
            r.token_id.as_ref().unwrap(),
            r.token_secret.as_ref().unwrap()
        )
    );

    // The Secret on the controller's card, as YAML, with what k0s/kubeadm read.
    let (path, secret) = files
        .iter()
        .find(|(p, _)| p.contains(r.token_id.as_ref().unwrap()))
        .unwrap();
    assert_eq!(
        path,
        &format!(
            "manifests/{TOKENS_STACK}/bootstrap-token-{}.yaml",
            r.token_id.as_ref().unwrap()
        )
    );
    let secret_file = tmp.path().join("secret.yaml");
    std::fs::write(&secret_file, secret).unwrap();
    let py = "import sys, yaml, base64\n\
              d = yaml.safe_load(open(sys.argv[1]))\n\
              assert d['apiVersion'] == 'v1' and d['kind'] == 'Secret', d\n\
              assert d['type'] == 'bootstrap.kubernetes.io/token', d\n\
              assert d['metadata']['namespace'] == 'kube-system', d\n\
              data = {k: base64.b64decode(v).decode() for k, v in d['data'].items()}\n\
              assert d['metadata']['name'] == 'bootstrap-token-' + data['token-id'], d\n\
              assert 'expiration' not in data, data\n\
              print(data['token-id'] + '.' + data['token-secret'], data['usage-bootstrap-authentication'])\n";
    let got = run(Command::new("python3").arg("-c").arg(py).arg(&secret_file));
    assert_eq!(got.trim(), format!("{tok} true"));

    // The joining controller: a controller token for the k0s API, and the same k0s.yaml.
    let c2 = c.issue("ctl-2", Role::Controller, None, &inv).unwrap();
    let k = decode_token(&c2.secrets.token.unwrap());
    assert!(k.contains("server: https://10.0.0.1:9443"), "{k}");
    assert!(k.contains("controller-bootstrap"), "{k}");
    assert_eq!(c2.secrets.k0s_yaml.unwrap(), yaml.clone().into_bytes());
    let ctl2_id = c.state.nodes["ctl-2"].token_id.clone().unwrap();
    let s2 = String::from_utf8(
        files[&format!("manifests/{TOKENS_STACK}/bootstrap-token-{ctl2_id}.yaml")].clone(),
    )
    .unwrap();
    std::fs::write(&secret_file, &s2).unwrap();
    let py2 = "import sys, yaml, base64\n\
               d = yaml.safe_load(open(sys.argv[1]))\n\
               data = {k: base64.b64decode(v).decode() for k, v in d['data'].items()}\n\
               print(data['usage-bootstrap-controller-join'], data['usage-controller-join'])\n";
    assert_eq!(
        run(Command::new("python3").arg("-c").arg(py2).arg(&secret_file)).trim(),
        "true true"
    );
    let py3 = "import sys, yaml\n\
               d = yaml.safe_load(open(sys.argv[1]))\n\
               print(d['spec']['api']['address'], ' '.join(d['spec']['api']['sans']))\n";
    std::fs::write(&secret_file, &yaml).unwrap();
    assert_eq!(
        run(Command::new("python3").arg("-c").arg(py3).arg(&secret_file)).trim(),
        "10.0.0.1 10.0.0.1 api.shop1.example"
    );
    c.save().unwrap();

    let e = c.issue("../evil", Role::Worker, None, &inv).unwrap_err();
    assert!(e.to_string().contains("RFC 1123"), "{e}");
    // A reused name is refused; a third controller is over the count.
    let e = c.issue("pi-07", Role::Worker, None, &inv).unwrap_err();
    assert!(e.to_string().contains("already issued"), "{e}");
    let e = c.issue("ctl-3", Role::Controller, None, &inv).unwrap_err();
    assert!(e.to_string().contains("more than the 2"), "{e}");

    // A worker not in the controller's inventory: its Secret waits in pending/.
    let late = c.issue("pi-99", Role::Worker, None, &inv).unwrap();
    let p = late.pending.unwrap();
    assert!(p.starts_with(dir.join(PENDING_DIR)) && mode(&p) == 0o600);
    c.save().unwrap();

    // cluster.toml reads back; revoke writes the commands and refuses a second time.
    let mut back = Cluster::open(&dir).unwrap();
    assert_eq!(back.state, c.state);
    let (script_path, script) = back.revoke("pi-07").unwrap();
    let id = back.state.nodes["pi-07"].token_id.clone().unwrap();
    assert!(
        script.contains(&format!("delete secret bootstrap-token-{id}")),
        "{script}"
    );
    assert!(script.contains(&format!(
        "rm -f /var/lib/k0s/manifests/{TOKENS_STACK}/bootstrap-token-{id}.yaml"
    )));
    assert_eq!(mode(&script_path), 0o600);
    assert!(back.revoke("pi-07").is_err());
    assert_eq!(
        Cluster::open(&dir).unwrap().state.nodes["pi-07"].state,
        TokenState::Revoked
    );
    let e = back.issue("pi-07", Role::Worker, None, &inv).unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");

    // k0sctl.yaml parses, with one host per inventory node.
    let k0sctl = back.k0sctl_yaml(&[
        ("ctl-1".into(), Role::Controller, "10.0.0.1".into()),
        ("pi-07".into(), Role::Worker, "10.0.0.7".into()),
    ]);
    std::fs::write(&secret_file, &k0sctl).unwrap();
    let py4 = "import sys, yaml\n\
               d = yaml.safe_load(open(sys.argv[1]))\n\
               assert d['kind'] == 'Cluster', d\n\
               print(' '.join(h['role'] + '@' + h['ssh']['address'] for h in d['spec']['hosts']), d['spec']['k0s']['config']['spec']['api']['address'])\n";
    assert_eq!(
        run(Command::new("python3").arg("-c").arg(py4).arg(&secret_file)).trim(),
        "controller@10.0.0.1 worker@10.0.0.7 10.0.0.1"
    );
}
