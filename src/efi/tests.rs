//! UKI assembly and signing, judged by binutils' `objdump`, sbsigntool's `sbverify` and
//! `openssl`, on a small PE32+ made here (the real stub is checked by the build tests).

use std::process::Command;

use super::keys;
use super::pe::{self, Pe, UkiSections};
use super::sign;
use crate::util::test_tools::require_tool;

/// A minimal EFI application: headers, `.text`, `.sbat`, `.reloc`, like the stub's shape.
fn tiny_pe() -> Vec<u8> {
    let mut b = vec![0u8; 0x1000 + 3 * 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    b[coff + 2..coff + 4].copy_from_slice(&3u16.to_le_bytes());
    b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    b[coff + 18..coff + 20].copy_from_slice(&0x22eu16.to_le_bytes());
    let opt = coff + 20;
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    put(&mut b, opt + 16, 0x1000); // entry point
    put(&mut b, opt + 32, 0x1000); // SectionAlignment
    put(&mut b, opt + 36, 0x200); // FileAlignment
    put(&mut b, opt + 56, 0x4000); // SizeOfImage
    put(&mut b, opt + 60, 0x1000); // SizeOfHeaders
    b[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
    put(&mut b, opt + 108, 16); // NumberOfRvaAndSizes
    let sections = opt + 240;
    for (i, (name, data)) in [
        (".text", &b"\xc3 code"[..]),
        (".sbat", b"sbat,1,SBAT Version,sbat,1,https://example.invalid/SBAT.md\nstub,1,Stub,stub,1,https://example.invalid/\n"),
        (".reloc", b"\0\0\0\0\x08\0\0\0"),
    ]
    .iter()
    .enumerate()
    {
        let h = sections + i * 40;
        b[h..h + name.len()].copy_from_slice(name.as_bytes());
        put(&mut b, h + 8, data.len() as u32);
        put(&mut b, h + 12, 0x1000 * (i as u32 + 1));
        put(&mut b, h + 16, 0x200);
        let raw = 0x1000 + 0x200 * i as u32;
        put(&mut b, h + 20, raw);
        put(&mut b, h + 36, 0x4000_0040);
        b[raw as usize..raw as usize + data.len()].copy_from_slice(data);
    }
    b
}

fn uki() -> Vec<u8> {
    pe::assemble_uki(
        &tiny_pe(),
        &UkiSections {
            osrel: b"ID=debian\n",
            cmdline: b"root=/dev/dm-0 edgeimg.roothash=abc",
            uname: b"6.12.0-test",
            sbat: "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n",
            initrd: &[7u8; 5000],
            linux: &[9u8; 9000],
        },
    )
    .unwrap()
}

fn objdump_sections(path: &std::path::Path) -> Vec<(String, u64, u64, u64)> {
    let o = {
        require_tool("objdump");
        Command::new("objdump")
    }
    .arg("-h")
    .arg(path)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[0].parse::<u32>().is_ok()).then(|| {
                let hexv = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (f[1].to_string(), hexv(f[2]), hexv(f[3]), hexv(f[5]))
            })
        })
        .collect()
}

#[test]
fn uki_sections_follow_the_stub_in_order_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    let u = uki();
    std::fs::write(&path, &u).unwrap();
    let secs = objdump_sections(&path);
    let names: Vec<&str> = secs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [".text", ".sbat", ".reloc", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );
    // In memory: page aligned, each after the previous one's end.
    for w in secs.windows(2) {
        assert_eq!(w[1].2 % 0x1000, 0, "{} not section aligned", w[1].0);
        assert!(w[1].2 >= w[0].2 + w[0].1, "{} overlaps {}", w[1].0, w[0].0);
        assert_eq!(w[1].3 % 0x200, 0, "{} not file aligned", w[1].0);
    }
    let p = Pe::parse(&u).unwrap();
    assert_eq!(
        p.section_data(&u, ".cmdline").unwrap(),
        b"root=/dev/dm-0 edgeimg.roothash=abc"
    );
    let sbat = String::from_utf8_lossy(p.section_data(&u, ".sbat").unwrap()).to_string();
    assert_eq!(
        sbat.lines().filter(|l| l.starts_with("sbat,")).count(),
        1,
        "{sbat}"
    );
    assert!(
        sbat.contains("\nstub,1,") && sbat.contains("\nuki,1,UKI"),
        "{sbat}"
    );
    let last = secs.last().unwrap();
    let size_of_image = u32::from_le_bytes(u[0x98 + 56..0x98 + 60].try_into().unwrap()) as u64;
    assert_eq!(size_of_image, (last.2 + last.1).div_ceil(0x1000) * 0x1000);
}

#[test]
fn a_stub_without_room_for_headers_is_refused() {
    let mut stub = tiny_pe();
    // SizeOfHeaders just past the 3 headers: no room for 5 more.
    let opt = 0x84 + 20;
    let end = (opt + 240 + 3 * 40 + 40) as u32;
    stub[opt + 60..opt + 64].copy_from_slice(&end.to_le_bytes());
    let e = pe::assemble_uki(
        &stub,
        &UkiSections {
            osrel: b"x",
            cmdline: b"x",
            uname: b"x",
            sbat: "",
            initrd: b"x",
            linux: b"x",
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("no room in its headers"), "{e:#}");
}

#[test]
fn keys_sign_images_that_sbverify_accepts_with_db_only_and_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let kd = dir.path().join("keys");
    keys::generate(&kd, "edgeimg test", 1_700_000_000).unwrap();
    let loaded = keys::load(&kd).unwrap();
    let u = uki();
    let a = sign::sign_image(&u, &loaded.db, 1_700_000_000).unwrap();
    let b = sign::sign_image(&u, &loaded.db, 1_700_000_000).unwrap();
    assert_eq!(a, b, "two signatures of the same image differ");
    let signed = dir.path().join("signed.efi");
    std::fs::write(&signed, &a).unwrap();
    if let Some(d) = std::env::var_os("EDGEIMG_DEBUG_SIGN") {
        let d = std::path::PathBuf::from(d);
        std::fs::write(d.join("signed.efi"), &a).unwrap();
        std::fs::write(d.join("unsigned.efi"), &u).unwrap();
        for f in ["db.key", "db.crt"] {
            std::fs::copy(kd.join(f), d.join(f)).unwrap();
        }
    }
    let verify = |cert: &str| {
        require_tool("sbverify");
        Command::new("sbverify")
            .arg("--cert")
            .arg(kd.join(cert))
            .arg(&signed)
            .output()
            .unwrap()
    };
    let ok = verify("db.crt");
    assert!(
        ok.status.success(),
        "sbverify refused: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !verify("KEK.crt").status.success(),
        "sbverify accepted another key"
    );
    // The signer recorded in the image is db's certificate.
    let sig = pe::signature(&a).unwrap().unwrap();
    let cert = keys::signer_certificate(sig).unwrap();
    assert_eq!(cert, std::fs::read(kd.join("db.cer")).unwrap());
    let (subject, fp) = keys::describe_cert(&cert).unwrap();
    assert_eq!(subject, "CN=edgeimg test db");
    assert_eq!(fp.len(), 64);
    // One byte of .cmdline changed: the signature no longer matches.
    let p = Pe::parse(&a).unwrap();
    let at = p
        .sections
        .iter()
        .find(|s| s.name == ".cmdline")
        .unwrap()
        .raw_offset as usize;
    let mut bad = a.clone();
    bad[at] ^= 1;
    std::fs::write(&signed, &bad).unwrap();
    assert!(
        !verify("db.crt").status.success(),
        "sbverify accepted a changed .cmdline"
    );
}

#[test]
fn auth_files_carry_signatures_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let kd = dir.path().join("keys");
    keys::generate(&kd, "edgeimg test", 1_700_000_000).unwrap();
    for (var, by) in [("PK", "PK"), ("KEK", "PK"), ("db", "KEK")] {
        let auth = std::fs::read(kd.join(format!("{var}.auth"))).unwrap();
        let esl = std::fs::read(kd.join(format!("{var}.esl"))).unwrap();
        let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
        assert_eq!(
            &auth[16 + len..],
            &esl[..],
            "{var}.auth does not end in its ESL"
        );
        let pkcs7 = &auth[16 + 24..16 + len];
        // The signed bytes: name (UTF-16LE), vendor GUID, attributes, time, ESL.
        let vendor = keys::guid_bytes(if var == "db" {
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
        } else {
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        })
        .unwrap();
        let mut signed: Vec<u8> = var.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
        signed.extend_from_slice(&vendor);
        signed.extend_from_slice(&0x27u32.to_le_bytes());
        signed.extend_from_slice(&auth[..16]);
        signed.extend_from_slice(&esl);
        let p7 = dir.path().join("sig.p7");
        let content = dir.path().join("content");
        // openssl wants a ContentInfo around the SignedData.
        let ci = super::der::seq(&[
            &super::der::oid("1.2.840.113549.1.7.2"),
            &super::der::explicit(0, pkcs7),
        ]);
        std::fs::write(&p7, ci).unwrap();
        std::fs::write(&content, &signed).unwrap();
        let run = |ca: &str| {
            require_tool("openssl");
            Command::new("openssl")
                .args([
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-noverify",
                    "-in",
                ])
                .arg(&p7)
                .arg("-content")
                .arg(&content)
                .arg("-certfile")
                .arg(kd.join(ca))
                .args(["-out", "/dev/null"])
                .output()
                .unwrap()
        };
        let o = run(&format!("{by}.crt"));
        assert!(
            o.status.success(),
            "{var}.auth: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let cert = keys::signer_certificate(&std::fs::read(&p7).unwrap()).unwrap();
        assert_eq!(
            cert,
            std::fs::read(kd.join(format!("{by}.cer"))).unwrap(),
            "{var}.auth not signed by {by}"
        );
    }
    // Never overwrites.
    let e = keys::generate(&kd, "x", 1).unwrap_err();
    assert!(format!("{e:#}").contains("never overwrites"), "{e:#}");
}
