//! `flash` loses nothing and leaks nothing: it never writes over its own image (whatever
//! path reaches it), never takes a device or a special file for a plain file, refuses what is
//! not a disk image and a bmap that no longer fits its image before writing a byte, and a
//! failed flash leaves no half image behind.
//!
//! The images are small synthetic ones shaped like edgeimg's (GPT, a FAT32 boot partition made
//! by mkfs.fat, data in partition 2), so no Debian download is needed.

mod common;

use std::path::{Path, PathBuf};

use common::{
    check_json, disk_image, edgeimg, edgeimg_in, need, noise, run_tool, sha256_hex, stderr, stdout,
};

fn sum(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn flash_to(image: &Path, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["flash", s(image), "--device-file", s(target)];
    args.extend_from_slice(extra);
    edgeimg(&args)
}

fn refused(o: &std::process::Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what}: flash succeeded:\n{}{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

fn xz(image: &Path) -> PathBuf {
    need("xz");
    let o = run_tool("xz", &["-k", "-f", "-0", "-T1", s(image)]);
    assert!(o.status.success(), "xz: {}", stderr(&o));
    PathBuf::from(format!("{}.xz", image.display()))
}

fn bmap(image: &Path, to: &Path) {
    need("bmaptool");
    let o = run_tool("bmaptool", &["create", "-o", s(to), s(image)]);
    assert!(o.status.success(), "bmaptool create: {}", stderr(&o));
}

#[test]
fn the_image_itself_is_refused_through_a_hard_link_or_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    disk_image(&img);
    let before = sum(&img);
    let hard = dir.path().join("hl.img");
    std::fs::hard_link(&img, &hard).unwrap();
    let soft = dir.path().join("link.img");
    std::os::unix::fs::symlink(&img, &soft).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotted = sub.join("../a.img");
    for target in [&hard, &soft, &dotted] {
        let e = refused(&flash_to(&img, target, &["--no-bmap"]), s(target));
        assert!(
            e.contains(s(target)) && e.contains("is the image itself"),
            "{e}"
        );
        assert_eq!(
            sum(&img),
            before,
            "flash to {} changed the image",
            s(target)
        );
    }
}

#[test]
fn a_device_or_special_file_is_never_taken_for_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    disk_image(&img);
    // `cd /dev && edgeimg flash a.img --device-file null`
    let o = edgeimg_in(
        Path::new("/dev"),
        &["flash", s(&img), "--device-file", "null"],
    );
    let e = refused(&o, "null in /dev");
    assert!(e.contains("null") && e.contains("character device"), "{e}");
    // A symlink to it, and a path that climbs to it.
    let link = dir.path().join("card.img");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let climb = PathBuf::from(format!(
        "{}/../../../../../../../../dev/null",
        s(dir.path())
    ));
    for t in [&link, &climb] {
        let e = refused(&flash_to(&img, t, &[]), s(t));
        assert!(e.contains(s(t)) && e.contains("character device"), "{e}");
    }
    // A directory.
    let e = refused(&flash_to(&img, dir.path(), &[]), "a directory");
    assert!(e.contains("directory"), "{e}");
    // A block device node (of a device number reserved for local use, so nothing answers
    // behind it): refused with the advice to use --device, which vets devices.
    let blk = dir.path().join("blk");
    let c = std::ffi::CString::new(s(&blk)).unwrap();
    // SAFETY: mknod with a valid C string; fails without CAP_MKNOD.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(60, 0)) };
    if made == 0 {
        let e = refused(&flash_to(&img, &blk, &[]), "a block device node");
        assert!(e.contains("block device") && e.contains("--device"), "{e}");
    } else {
        eprintln!("skipping the block-device node: mknod needs CAP_MKNOD");
    }
}

#[test]
fn what_is_not_a_disk_image_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let random = dir.path().join("random.img");
    std::fs::write(&random, noise(3 << 20, 11)).unwrap();
    let good = dir.path().join("good.img");
    disk_image(&good);
    let odd = dir.path().join("odd.img");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.extend_from_slice(&[1u8; 100]);
    std::fs::write(&odd, bytes).unwrap();
    let random_xz = xz(&random);
    let empty_xz = xz(&empty);
    for (img, why) in [
        (&empty, "empty"),
        (&random, "partition table"),
        (&odd, "512-byte sectors"),
        (&random_xz, "partition table"),
        (&empty_xz, "empty"),
    ] {
        let target = dir.path().join("card.img");
        let e = refused(&flash_to(img, &target, &[]), s(img));
        assert!(
            e.contains(s(img)) && e.contains(why) && e.contains("expected"),
            "{}: {e}",
            s(img)
        );
        assert!(
            !target.exists(),
            "{}: a refused flash left {}",
            s(img),
            s(&target)
        );
    }
}

#[test]
fn a_configured_image_with_its_build_bmap_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    disk_image(&img);
    let build_bmap = dir.path().join("a.bmap");
    bmap(&img, &build_bmap);
    // Personalized after the bmap was made: its boot partition changed.
    let o = edgeimg(&["configure", s(&img), "--hostname", "n1"]);
    assert!(o.status.success(), "configure: {}", stderr(&o));
    let img_xz = xz(&img);
    let kept = dir.path().join("kept.img");

    // .img: the bmap's checksums are checked before the target is opened.
    let target = dir.path().join("card.img");
    let e = refused(&flash_to(&img, &target, &[]), "raw with the build's bmap");
    assert!(
        e.contains(s(&img))
            && e.contains("boot partition")
            && e.contains("configure")
            && e.contains("--no-bmap"),
        "{e}"
    );
    assert!(!target.exists(), "a refused flash left {}", s(&target));
    std::fs::write(&kept, b"the old contents").unwrap();
    refused(&flash_to(&img, &kept, &[]), "raw onto an existing file");
    assert_eq!(std::fs::read(&kept).unwrap(), b"the old contents");

    // .img.xz: checked while writing; the half-written target is removed, or emptied when
    // it existed before.
    let e = refused(&flash_to(&img_xz, &target, &[]), "xz with the build's bmap");
    assert!(
        e.contains("boot partition") && e.contains("--no-bmap") && e.contains(s(&target)),
        "{e}"
    );
    assert!(!target.exists(), "a failed flash left {}", s(&target));
    let e = refused(&flash_to(&img_xz, &kept, &[]), "xz onto an existing file");
    assert!(e.contains(s(&kept)), "{e}");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().len(),
        0,
        "a half image was left in kept.img"
    );

    // What the message advises works: --no-bmap, or a fresh bmap (its report under --json
    // checked against flash.schema.json, and what it says against what was done).
    let fresh = dir.path().join("fresh.bmap");
    bmap(&img, &fresh);
    for (from, extra) in [
        (&img, vec!["--no-bmap"]),
        (&img, vec!["--bmap", s(&fresh), "--json"]),
        (&img_xz, vec!["--bmap", s(&fresh)]),
        (&img_xz, vec!["--no-bmap"]),
    ] {
        let out = dir.path().join("ok.img");
        let o = flash_to(from, &out, &extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("verified"), "{}", stdout(&o));
        if extra.contains(&"--json") {
            check_json("flash.schema.json", &o.stdout);
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(r["target"], s(&out), "{r}");
            assert_eq!(r["bmap"], s(&fresh), "{r}");
            assert_eq!(r["verified"], true, "{r}");
            assert_eq!(r["device"], serde_json::Value::Null, "{r}");
            assert_eq!(
                r["image_size"],
                std::fs::metadata(&img).unwrap().len(),
                "{r}"
            );
        }
        let c = run_tool("cmp", &[s(&img), s(&out)]);
        assert!(c.status.success(), "{extra:?}: {}", stdout(&c));
        std::fs::remove_file(&out).unwrap();
    }
}
