//! Bundles written and read back, and judged by Debian's openssl (the node's verifier) and
//! GNU tar.

use std::io::{Read as _, Write};
use std::process::Command;

use super::*;
use crate::disk::layout::{PartType, PartitionSpec};
use crate::util::test_tools::run_with_stdin;

const MIB: u64 = 1 << 20;

fn layout() -> PartitionPlan {
    let spec = |role, ptype| PartitionSpec {
        role,
        name: role.name().into(),
        ptype,
        size: 2 * MIB,
        bootable: false,
    };
    PartitionPlan::new(
        TableKind::Gpt,
        &[
            spec(PartRole::Boot, PartType::Esp),
            spec(PartRole::Root(Slot::A), PartType::LinuxRootX86_64),
            spec(PartRole::Root(Slot::B), PartType::LinuxRootX86_64),
            spec(PartRole::Data, PartType::LinuxData),
        ],
        b"seed",
    )
    .unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    key: ed25519_dalek::SigningKey,
    pub_pem: String,
    bundle: std::path::PathBuf,
    root: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let files = keys::generate(&dir.path().join("fleet")).unwrap();
    let key = keys::load_signing_key(&files.key).unwrap();
    let pub_pem = std::fs::read_to_string(&files.public).unwrap();
    let root: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let img = dir.path().join("img");
    let mut f = std::fs::File::create(&img).unwrap();
    f.write_all(&vec![0u8; 4096]).unwrap();
    f.write_all(&root).unwrap();
    let f = std::fs::File::open(&img).unwrap();
    let bundle = dir.path().join("x.update");
    write(
        &bundle,
        &key,
        Header {
            target: BundleTarget {
                board: "x86-64".into(),
                arch: "amd64".into(),
                role: "worker".into(),
                image_version: "2".into(),
                k0s_version: "v1.33.1+k0s.0".into(),
                edgeimg_version: "0.1.0".into(),
                boot_method: "uefi".into(),
                partitions: BundlePartitions::of(&layout()),
            },
            verity_root_hash: Some("ab".repeat(32)),
            mtime: 1_700_000_000,
        },
        &f,
        4096,
        root.len() as u64,
        &[
            BootFile {
                path: "EFI/Linux/edgeimg-@SLOT@.efi".into(),
                slot: Some(Slot::A),
                data: b"uki for a".to_vec(),
            },
            BootFile {
                path: "EFI/Linux/edgeimg-@SLOT@.efi".into(),
                slot: Some(Slot::B),
                data: b"uki for b".to_vec(),
            },
        ],
    )
    .unwrap();
    Fixture {
        dir,
        key,
        pub_pem,
        bundle,
        root,
    }
}

fn read_all(bytes: &[u8], pem: &str) -> Result<(Verified, Vec<u8>)> {
    let key = keys::parse_public(pem, "pub").unwrap();
    let mut root = Vec::new();
    let mut w = Some(&mut root);
    let v = read(bytes, &key, &mut |_m| {
        Ok(Box::new(w.take().expect("accept is called once")))
    })?;
    Ok((v, root))
}

#[test]
fn a_bundle_reads_back_with_its_root_and_both_ukis() {
    let f = fixture();
    let bytes = std::fs::read(&f.bundle).unwrap();
    let (v, root) = read_all(&bytes, &f.pub_pem).unwrap();
    assert_eq!(root, f.root);
    assert_eq!(v.manifest.target.image_version, "2");
    let b: Vec<String> = v
        .manifest
        .boot_for(Slot::B)
        .iter()
        .map(|b| b.path_for(Slot::B))
        .collect();
    assert_eq!(b, ["EFI/Linux/edgeimg-b.efi"]);
    assert_eq!(v.boot[1].1, b"uki for b");
    let _ = &f.key;
}

#[test]
fn a_flipped_byte_a_truncation_and_another_key_are_refused() {
    let f = fixture();
    let bytes = std::fs::read(&f.bundle).unwrap();
    // A byte of the root, deep inside root.img.
    let mut flipped = bytes.clone();
    let at = 512 * 4 + 4096 + 100_000;
    flipped[at] ^= 1;
    let e = read_all(&flipped, &f.pub_pem).err().unwrap().to_string();
    assert!(e.contains("sha256") && e.contains("damaged"), "{e}");
    // A byte of the manifest: the signature fails before anything is accepted.
    let mut m = bytes.clone();
    let pos = bytes.windows(6).position(|w| w == b"x86-64").unwrap();
    m[pos] = b'y';
    let key = keys::parse_public(&f.pub_pem, "pub").unwrap();
    let mut accepted = false;
    let e = read(&m[..], &key, &mut |_| {
        accepted = true;
        Ok(Box::new(std::io::sink()))
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("bad signature"), "{e}");
    assert!(
        !accepted,
        "nothing is written before the signature is checked"
    );
    let cut = &bytes[..bytes.len() / 2];
    let e = format!("{:#}", read_all(cut, &f.pub_pem).err().unwrap());
    assert!(e.contains("truncated"), "{e}");
    let other = keys::generate(&f.dir.path().join("other")).unwrap();
    let e = read_all(&bytes, &std::fs::read_to_string(other.public).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad signature"), "{e}");
}

#[test]
fn openssl_verifies_the_signature_and_gnu_tar_unpacks_the_bundle() {
    crate::util::test_tools::require_tool("openssl");
    crate::util::test_tools::require_tool("tar");
    let f = fixture();
    let out = f.dir.path().join("unpacked");
    std::fs::create_dir(&out).unwrap();
    let t = Command::new("tar")
        .args([
            "-xf",
            f.bundle.to_str().unwrap(),
            "-C",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let list = Command::new("tar")
        .args(["--format=ustar", "-tvf", f.bundle.to_str().unwrap()])
        .output()
        .unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.sig",
            "root.img",
            "boot/a/EFI/Linux/edgeimg-a.efi",
            "boot/b/EFI/Linux/edgeimg-b.efi"
        ]
    );
    assert_eq!(std::fs::read(out.join("root.img")).unwrap(), f.root);
    // openssl pkey reads the private key (PKCS#8 PEM); pkeyutl verifies as the node does.
    let pkey = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            f.dir.path().join("fleet.key").to_str().unwrap(),
            "-noout",
            "-text",
        ])
        .output()
        .unwrap();
    assert!(
        pkey.status.success(),
        "{}",
        String::from_utf8_lossy(&pkey.stderr)
    );
    assert!(String::from_utf8_lossy(&pkey.stdout).contains("ED25519"));
    let verify = |manifest: &Path| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(f.dir.path().join("fleet.pub"))
            .args(["-rawin", "-in"])
            .arg(manifest)
            .arg("-sigfile")
            .arg(out.join("manifest.sig"))
            .output()
            .unwrap()
    };
    let ok = verify(&out.join("manifest.json"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Signature Verified Successfully"));
    let mut changed = std::fs::read(out.join("manifest.json")).unwrap();
    changed[20] ^= 1;
    std::fs::write(out.join("changed.json"), changed).unwrap();
    assert!(!verify(&out.join("changed.json")).status.success());
}

#[test]
fn the_nodes_manifest_reader_reads_what_the_writer_wrote() {
    crate::util::test_tools::require_tool("busybox");
    let f = fixture();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = f.dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let rootfs = repo.join("overlays/rootfs/usr/lib/edgeimg");
    for name in ["lib.sh", "slot.sh", "edgeimg-update"] {
        std::os::unix::fs::symlink(rootfs.join(name), lib.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(
        repo.join("tests/shell/contract.sh"),
        lib.join("contract.sh"),
    )
    .unwrap();
    let bytes = std::fs::read(&f.bundle).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut json = String::new();
    ar.entries()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .read_to_string(&mut json)
        .unwrap();
    let m: BundleManifest = serde_json::from_str(&json).unwrap();
    let out = run_with_stdin(
        Command::new("busybox")
            .args(["sh", "-c", ". \"$0\"; manifest_flat"])
            .arg(lib.join("edgeimg-update"))
            .env("EDGEIMG_LIB", &lib)
            .env("EDGEIMG_UPDATE_SOURCED", "1"),
        json.as_bytes(),
    );
    let flat = String::from_utf8(out.stdout).unwrap();
    for want in [
        format!("board={}", m.target.board),
        format!("image_version={}", m.target.image_version),
        format!("partitions.root_b={}", m.target.partitions.root_b),
        format!("partitions.slot_size={}", m.target.partitions.slot_size),
        format!("root.sha256={}", m.root.sha256),
        format!("root.size={}", m.root.size),
        format!("boot.1.member={}", m.boot[1].member),
        format!("boot.1.sha256={}", m.boot[1].sha256),
        "boot.0.slot=a".to_string(),
        "boot.1.path=EFI/Linux/edgeimg-@SLOT@.efi".to_string(),
    ] {
        assert!(
            flat.lines().any(|l| l == want),
            "{want} missing from:\n{flat}"
        );
    }
}
