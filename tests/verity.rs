//! The dm-verity hash tree judged by Debian's `veritysetup` (cryptsetup-bin): it verifies the
//! tree edgeimg writes, computes the same root hash itself, and rejects a flipped data byte.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use edgeimg::fs::verity::write_tree;

/// A partition-like file: `offset` bytes of something else, then data, then room for the tree.
fn sample(data_size: usize) -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let offset = 3 * 4096u64;
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0x55u8; offset as usize]).unwrap();
    let mut x = 0x1234_5678u32;
    let data: Vec<u8> = (0..data_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    f.write_all(&data).unwrap();
    // Garbage where the padding and the tree go: edgeimg must overwrite it.
    f.write_all(&vec![0xeeu8; 1 << 20]).unwrap();
    drop(f);
    (dir, path, offset)
}

fn veritysetup(args: &[&str]) -> std::process::Output {
    need("veritysetup");
    std::process::Command::new("veritysetup")
        .args(args)
        .output()
        .expect("running veritysetup")
}

#[test]
fn veritysetup_verifies_the_tree_and_finds_the_same_root_hash() {
    // 700 blocks and a bit: two levels, a partial last block.
    let size = 700 * 4096 + 1000;
    let (_d, path, offset) = sample(size);
    let salt = [0xa5u8; 32];
    let uuid = *b"0123456789abcdef";
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (info, _) = write_tree(&mut f, offset, size as u64, &salt, uuid).unwrap();
    drop(f);
    assert_eq!(info.data_blocks, 701);
    // veritysetup reads a device from its start: cut the partition out.
    let part = path.with_extension("part");
    let all = std::fs::read(&path).unwrap();
    std::fs::write(&part, &all[offset as usize..]).unwrap();
    let p = part.to_str().unwrap();
    let ho = format!("--hash-offset={}", info.hash_offset);
    let v = veritysetup(&["verify", p, p, &info.root_hash, &ho, "-v"]);
    assert!(
        v.status.success(),
        "veritysetup verify: {}{}",
        stdout(&v),
        stderr(&v)
    );
    let dump = veritysetup(&["dump", p, &ho]);
    let dump_text = stdout(&dump);
    assert!(dump.status.success(), "{}", stderr(&dump));
    assert!(
        dump_text.contains("Data blocks:    \t701") || dump_text.contains("701"),
        "{dump_text}"
    );
    assert!(dump_text.contains(&info.salt), "{dump_text}");

    // veritysetup computes the tree itself from the same data, salt and uuid: same root hash.
    let other = path.with_extension("hash");
    std::fs::write(&other, b"").unwrap();
    let data_copy = path.with_extension("data");
    std::fs::write(
        &data_copy,
        &all[offset as usize..offset as usize + 701 * 4096],
    )
    .unwrap();
    let f = veritysetup(&[
        "format",
        data_copy.to_str().unwrap(),
        other.to_str().unwrap(),
        &format!("--salt={}", info.salt),
        "--uuid=30313233-3435-3637-3839-616263646566",
        "--data-blocks=701",
    ]);
    assert!(f.status.success(), "veritysetup format: {}", stderr(&f));
    let out = stdout(&f);
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in {out}"))
        .trim();
    assert_eq!(root, info.root_hash);
    assert_eq!(info.uuid, "30313233-3435-3637-3839-616263646566");

    // One flipped byte in the data area: verification fails.
    let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.seek(SeekFrom::Start(123_457)).unwrap();
    f.write_all(&[all[offset as usize + 123_457] ^ 0x01])
        .unwrap();
    drop(f);
    let v = veritysetup(&["verify", p, p, &info.root_hash, &ho]);
    assert!(!v.status.success(), "a flipped byte passed verification");
}
