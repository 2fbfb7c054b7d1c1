//! Hostile and broken inputs met through the real build path: an InRelease signed by a key
//! edgeimg does not carry, a cached Packages index and a cached .deb that no longer match
//! their digests. Each ends with a clear error and nothing under a final name.
//! (Hostile .deb contents, node configs and profiles are covered by the unit tests of
//! `source::debian::deb`, `node` and `profile`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use edgeimg::source::debian::release::{Keyring, Release};

/// A throwaway OpenPGP key made by gpg, and an InRelease-like text clear-signed with it.
#[test]
fn inrelease_signed_by_an_unknown_key_is_refused() {
    need("gpg");
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let o = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "gpg {args:?}: {}", stderr(&o));
    };
    gpg(&[
        "--quick-gen-key",
        "Mallory <mallory@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let text = d.path().join("Release");
    std::fs::write(
        &text,
        "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: trixie\n\
         Date: Sat, 21 Nov 2026 09:15:44 UTC\nValid-Until: Sat, 28 Nov 2036 09:15:44 UTC\n\
         SHA256:\n 2efd6103f013081f8118f4c9f228739bc97bff2e4e1de496f80458c7e72a24ac 56634892 main/binary-amd64/Packages\n",
    )
    .unwrap();
    let signed = d.path().join("InRelease");
    gpg(&[
        "--clearsign",
        "--output",
        signed.to_str().unwrap(),
        text.to_str().unwrap(),
    ]);
    let data = std::fs::read(&signed).unwrap();
    assert!(data.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----"));
    let keyring = Keyring::debian().unwrap();
    let err = Release::verify(&data, &keyring, "trixie InRelease").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("trixie InRelease") && msg.contains("no signature verifies"),
        "{msg}"
    );
    // The same key is accepted when it is in the keyring: the refusal is about the key.
    let armored = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--armor", "--export"])
        .output()
        .unwrap()
        .stdout;
    let own = Keyring::from_armored(&[&armored]).unwrap();
    let rel = Release::verify(&data, &own, "trixie InRelease").unwrap();
    assert!(rel.packages_index("main", "amd64", "t").is_ok());
}

/// The shared cache must hold a full build's inputs: one build (shared by the tests of this
/// file) makes sure it does.
fn warm_shared_cache() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let d = tempfile::tempdir().unwrap();
        let o = build(
            &d.path().join("out"),
            &[
                "--board",
                "x86-64",
                "--role",
                "worker",
                "--no-xz",
                "--no-verity",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    });
}

/// A copy of the shared cache (hard links) in which the files that `pick` selects are
/// replaced by copies with one byte flipped.
fn damaged_cache(dir: &Path, pick: impl Fn(&[u8], u64) -> bool) -> (PathBuf, usize) {
    warm_shared_cache();
    let copy = dir.join("cache");
    edgeimg::build::repro::link_tree(&cache_dir(), &copy).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(copy.join("sha256")).unwrap() {
        let p = e.unwrap().path();
        let mut data = std::fs::read(&p).unwrap();
        if !pick(&data, data.len() as u64) {
            continue;
        }
        let i = data.len() / 2;
        data[i] ^= 0x20;
        std::fs::remove_file(&p).unwrap(); // never write through the hard link
        std::fs::write(&p, &data).unwrap();
        n += 1;
    }
    (copy, n)
}

fn offline_build_fails(cache: &Path, out: &Path, needles: &[&str]) {
    let o = edgeimg(&[
        "build",
        "--offline",
        "--no-xz",
        "--board",
        "x86-64",
        "--role",
        "worker",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--k0s-url",
        &k0s_args()[1],
        "--k0s-sha256",
        &k0s_args()[3],
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a damaged cache was used:\n{err}");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}:\n{err}");
    }
    let left: Vec<_> = std::fs::read_dir(out)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed build left {left:?}");
}

#[test]
fn cached_packages_index_not_matching_its_digest_is_never_used() {
    let d = tempfile::tempdir().unwrap();
    // The Packages index is the cache's only xz file.
    let (cache, n) = damaged_cache(d.path(), |data, _| data.starts_with(b"\xfd7zXZ\0"));
    assert!(n >= 1, "no Packages index in the cache");
    offline_build_fails(&cache, &d.path().join("out"), &["Packages", "sha256"]);
}

#[test]
fn cached_deb_not_matching_its_digest_is_never_used() {
    let d = tempfile::tempdir().unwrap();
    // Every small .deb of the closure.
    let (cache, n) = damaged_cache(d.path(), |data, len| {
        data.starts_with(b"!<arch>\n") && len < 200_000
    });
    assert!(n >= 1, "no .deb in the cache");
    offline_build_fails(&cache, &d.path().join("out"), &[".deb", "sha256"]);
}

/// A copy of boards/, profiles/ and overlays/ to break on purpose.
fn copy_project_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for sub in ["boards", "profiles", "overlays"] {
        let src = format!("{}/{sub}", env!("CARGO_MANIFEST_DIR"));
        let o = Command::new("cp")
            .args(["-r", &src, data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "copying {src}");
    }
    data
}

#[test]
fn overlay_replacing_a_package_file_without_saying_so_is_refused() {
    warm_shared_cache();
    let d = tempfile::tempdir().unwrap();
    let data = copy_project_data(d.path());
    let f = data.join("overlays/rootfs/usr/bin/busybox");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "#!/bin/sh\necho not the real busybox\n").unwrap();
    let out = d.path().join("out");
    let args = [
        "--offline",
        "--no-xz",
        "--data-dir",
        data.to_str().unwrap(),
        "--role",
        "worker",
    ];
    let o = build(&out, &args);
    let err = stderr(&o);
    assert!(!o.status.success(), "the overlay replaced busybox silently");
    assert!(
        err.contains("usr/bin/busybox") && err.contains("rootfs.replaces"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed build left {left:?}");
}
