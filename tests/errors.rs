//! Bad input gets a clear error naming what is wrong, and leaves nothing under a final name.

mod common;

use std::path::Path;

use common::*;

fn assert_nothing_published(out: &Path) {
    if let Ok(rd) = std::fs::read_dir(out) {
        let names: Vec<String> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names.is_empty(),
            "a failed build left files in {}: {names:?}",
            out.display()
        );
    }
}

fn fails_with(out: &Path, args: &[&str], needles: &[&str]) -> String {
    let o = build(out, args);
    let err = stderr(&o);
    assert!(!o.status.success(), "expected failure for {args:?}");
    for n in needles {
        assert!(err.contains(n), "error for {args:?} lacks {n:?}:\n{err}");
    }
    assert_nothing_published(out);
    err
}

#[test]
fn unknown_board_names_the_known_boards() {
    let d = tempfile::tempdir().unwrap();
    fails_with(
        &d.path().join("out"),
        &["--board", "pi9", "--role", "worker"],
        &["unknown board 'pi9'", "x86-64"],
    );
}

#[test]
fn unknown_role_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let o = build(
        &d.path().join("out"),
        &["--board", "x86-64", "--role", "boss"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("boss"), "{}", stderr(&o));
}

#[test]
fn malformed_node_config_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let node = d.path().join("node.toml");
    std::fs::write(
        &node,
        "hostname = \"a\"\n[k0s]\nrole = \"worker\"\nlabelz = 3\n",
    )
    .unwrap();
    fails_with(
        &d.path().join("out"),
        &["--node", node.to_str().unwrap()],
        &[&format!("{}:4", node.display()), "labelz"],
    );
    std::fs::write(&node, "hostname = [1]\n").unwrap();
    fails_with(
        &d.path().join("out"),
        &["--node", node.to_str().unwrap()],
        &[&format!("{}:1", node.display())],
    );
}

#[test]
fn malformed_board_file_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let data = copy_project_data(d.path());
    let board = data.join("boards/x86-64.toml");
    // Whatever the vCPU count is, make it a string.
    let original = std::fs::read_to_string(&board).unwrap();
    let text: Vec<String> = original
        .lines()
        .map(|l| {
            if l.starts_with("smp = ") {
                "smp = \"two\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        text.iter().any(|l| l == "smp = \"two\""),
        "no smp line in {}",
        board.display()
    );
    std::fs::write(&board, text.join("\n")).unwrap();
    let out = d.path().join("out");
    fails_with(
        &out,
        &["--data-dir", data.to_str().unwrap(), "--role", "worker"],
        &["boards/x86-64.toml:", "smp"],
    );
}

#[test]
fn unreadable_token_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    fails_with(
        &d.path().join("out"),
        &[
            "--role",
            "worker",
            "--token-file",
            "/nonexistent/worker.token",
        ],
        &["/nonexistent/worker.token"],
    );
}

#[test]
fn k0s_checksum_mismatch_names_both_digests() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let wrong = "0".repeat(64);
    let s = k0s_server();
    let url = format!(
        "http://127.0.0.1:{}/releases/{{version}}/k0s-{{version}}-{{arch}}",
        s.port
    );
    let o = edgeimg(&[
        "build",
        "--role",
        "worker",
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        d.path().join("cache").to_str().unwrap(),
        "--k0s-url",
        &url,
        "--k0s-sha256",
        &wrong,
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&wrong) && err.contains(&sha256_hex(&k0s_stand_in())),
        "{err}"
    );
    assert_nothing_published(&out);
}

#[test]
fn k0s_download_failure_says_how_to_give_a_binary_or_a_mirror() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The stand-in's server answers 404 for any other path.
    let url = format!(
        "http://127.0.0.1:{}/no-such-release/k0s-{{version}}-{{arch}}",
        k0s_server().port
    );
    let o = edgeimg(&[
        "build",
        "--role",
        "worker",
        "--out",
        out.to_str().unwrap(),
        // The shared cache: its Debian packages are warm. The digest is one no download
        // gave it, so the cache cannot answer for k0s and the URL is tried.
        "--cache-dir",
        cache_dir().to_str().unwrap(),
        "--k0s-url",
        &url,
        "--k0s-sha256",
        &"ab".repeat(32),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    for needle in [
        "/no-such-release/",
        "--k0s-binary FILE",
        "--k0s-url URL",
        "404",
    ] {
        assert!(err.contains(needle), "error lacks {needle:?}:\n{err}");
    }
    assert_nothing_published(&out);
}

#[test]
fn no_mirror_says_how_to_set_one() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = std::process::Command::new(bin())
        .args(["build", "--role", "worker", "--out", out.to_str().unwrap()])
        .env("EDGEIMG_APT_ROOT", d.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--mirror"), "{}", stderr(&o));
    assert_nothing_published(&out);
}

#[test]
fn root_too_big_for_its_partition_names_the_board_field() {
    let d = tempfile::tempdir().unwrap();
    let data = copy_project_data(d.path());
    let board = data.join("boards/x86-64.toml");
    let text = std::fs::read_to_string(&board)
        .unwrap()
        .replace("root_mib = 1024", "root_mib = 4");
    std::fs::write(&board, text).unwrap();
    let out = d.path().join("out");
    fails_with(
        &out,
        &["--data-dir", data.to_str().unwrap(), "--role", "worker"],
        &["root_mib", "x86-64.toml"],
    );
}

/// A board that takes a package from a second suite where it is not: the error names the
/// package and that suite (the main suite's copy is not taken instead).
#[test]
fn package_absent_from_its_suite_names_package_and_suite() {
    let d = tempfile::tempdir().unwrap();
    let data = copy_project_data(d.path());
    let board = data.join("boards/x86-64.toml");
    let text = std::fs::read_to_string(&board).unwrap();
    let text = text.replacen(
        "kernel_package = ",
        "suites = { \"trixie-backports\" = [\"e2fsprogs-l10n-absent\"] }\n\
         kernel_package = ",
        1,
    );
    let text = text.replacen("packages = [", "packages = [\"e2fsprogs-l10n-absent\", ", 1);
    assert!(
        text.contains("e2fsprogs-l10n-absent\", "),
        "x86-64.toml has no packages list"
    );
    std::fs::write(&board, text).unwrap();
    let out = d.path().join("out");
    fails_with(
        &out,
        &["--data-dir", data.to_str().unwrap(), "--role", "worker"],
        &["e2fsprogs-l10n-absent is not in the archive's trixie-backports suite"],
    );
}

/// A copy of boards/, profiles/ and overlays/ to break on purpose.
fn copy_project_data(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for sub in ["boards", "profiles", "overlays"] {
        let src = format!("{}/{sub}", env!("CARGO_MANIFEST_DIR"));
        let o = std::process::Command::new("cp")
            .args(["-r", &src, data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "copying {src}");
    }
    data
}

#[test]
fn hostile_profile_values_are_refused_naming_file_and_field() {
    let d = tempfile::tempdir().unwrap();
    let data = copy_project_data(d.path());
    let base = data.join("profiles/base.toml");
    let original = std::fs::read_to_string(&base).unwrap();
    for (from, to, needles) in [
        // A busybox applet link placed outside the root tree.
        (
            "\"usr/bin/sh\", ",
            "\"../../../tmp/edgeimg-escape\", ",
            &[
                "profiles/base.toml",
                "busybox_applets[0]",
                "leaves the image tree",
            ][..],
        ),
        // An overlong package name: refused, and the message does not repeat all of it.
        (
            "\"busybox-static\",",
            &format!("\"{}\",", "b".repeat(5000)),
            &["profiles/base.toml", "packages[0]", "(5000 bytes)"][..],
        ),
        // A wrong type: the TOML error names file, line and key.
        (
            "source_date_epoch = 1767225600",
            "source_date_epoch = \"yesterday\"",
            &["profiles/base.toml:", "source_date_epoch"][..],
        ),
        // An unknown key.
        (
            "source_date_epoch = 1767225600",
            "source_date_epoch = 1767225600\npackage = [\"typo\"]",
            &["profiles/base.toml:", "unknown field `package`"][..],
        ),
    ] {
        assert!(original.contains(from), "base.toml has no {from:?}");
        std::fs::write(&base, original.replacen(from, to, 1)).unwrap();
        let out = d.path().join("out");
        let err = fails_with(
            &out,
            &["--data-dir", data.to_str().unwrap(), "--role", "worker"],
            needles,
        );
        assert!(err.len() < 2000, "an error of {} bytes:\n{err}", err.len());
    }
    assert!(!Path::new("/tmp/edgeimg-escape").exists());
}

#[test]
fn airgap_bundle_with_a_wrong_sha256_names_the_flag_and_both_digests() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let bundle = d.path().join("k0s-airgap-bundle-test-linux-amd64.tar");
    std::fs::write(&bundle, b"an OCI layout tarball").unwrap();
    let actual = sha256_hex(b"an OCI layout tarball");
    let wrong = "0".repeat(64);
    let path = bundle.display().to_string();
    fails_with(
        &out,
        &[
            "--role",
            "worker",
            "--airgap-bundle",
            &path,
            "--airgap-sha256",
            &wrong,
        ],
        &[
            &format!("--airgap-bundle {path}: sha256 is {actual}, expected {wrong}"),
            "--airgap-sha256",
        ],
    );
    // Through the download path the same: nothing kept in the cache either.
    let s = Server::start(vec![(
        "/v1/bundle.tar".into(),
        b"an OCI layout tarball".to_vec(),
    )]);
    let url = format!("http://127.0.0.1:{}/v1/bundle.tar", s.port);
    let cache = d.path().join("cache");
    let o = edgeimg(&[
        "build",
        "--role",
        "worker",
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--airgap-bundle",
        &url,
        "--airgap-sha256",
        &wrong,
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "--airgap-bundle {url}: sha256 is {actual}, expected {wrong}"
        )),
        "{err}"
    );
    assert_nothing_published(&out);
    let kept = std::fs::read_dir(cache.join("sha256"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(
        kept, 0,
        "a bundle with the wrong digest stayed in the cache"
    );
}

#[test]
fn airgap_bundle_missing_unpinned_or_for_a_controller_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    fails_with(
        &out,
        &[
            "--role",
            "worker",
            "--airgap-bundle",
            "/nonexistent/bundle.tar",
        ],
        &["--airgap-bundle /nonexistent/bundle.tar: no such file"],
    );
    fails_with(
        &out,
        &["--role", "worker", "--airgap-bundle"],
        &[
            "k0s-airgap-bundle-v",
            "-linux-amd64.tar: no sha256 to check it against: pass --airgap-sha256",
        ],
    );
    let bundle = d.path().join("bundle.tar");
    std::fs::write(&bundle, b"x").unwrap();
    fails_with(
        &out,
        &[
            "--role",
            "controller",
            "--airgap-bundle",
            bundle.to_str().unwrap(),
        ],
        &["--airgap-bundle: a controller runs no worker"],
    );
}

#[test]
fn airgap_bundle_in_the_plan_default_url_and_file_names() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let sha = "AB".repeat(32);
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--role", "worker", "--dry-run"];
        args.extend_from_slice(extra);
        let o = build(&out, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // Without the flag the plan (and so its hash) has no airgap entry at all.
    assert!(plan(&[]).get("airgap").is_none());
    let p = plan(&["--airgap-bundle", "--airgap-sha256", &sha]);
    let version = p["k0s_version"].as_str().unwrap().to_string();
    let enc = version.replace('+', "%2B");
    assert_eq!(
        p["airgap"]["source"]["url"],
        format!(
            "https://github.com/k0sproject/k0s/releases/download/{enc}/k0s-airgap-bundle-{enc}-linux-amd64.tar"
        ),
        "{p}"
    );
    assert_eq!(p["airgap"]["source"]["sha256"], "ab".repeat(32));
    assert_eq!(
        p["airgap"]["file_name"],
        format!("k0s-airgap-bundle-{version}-linux-amd64.tar")
    );
    // A file whose name is no plain name is refused, naming the flag.
    let odd = d.path().join("bundle name.tar");
    std::fs::write(&odd, b"x").unwrap();
    fails_with(
        &out,
        &["--role", "worker", "--airgap-bundle", odd.to_str().unwrap()],
        &["--airgap-bundle", "is not a plain name"],
    );
    fails_with(
        &out,
        &["--role", "worker", "--airgap-sha256", &sha],
        &["--airgap-sha256 without --airgap-bundle"],
    );
}
