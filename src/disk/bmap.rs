//! The block map bmaptool uses to flash only the blocks that hold data (format 2.0).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::util::atomic::AtomicFile;

pub const BLOCK_SIZE: u64 = 4096;
/// The placeholder the file checksum is computed over, as bmaptool verifies it.
const ZERO_CHECKSUM: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BmapStats {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks: u64,
    pub mapped_blocks: u64,
}

/// Writes the bmap of `image` to `output` (atomically) and returns its counts.
pub fn write_bmap(image: &Path, output: &Path) -> Result<BmapStats> {
    let sparse = super::image::SparseFile::open(image)?;
    let image_size = sparse.len;
    let ranges = block_ranges(&sparse.data);
    let stats = BmapStats {
        image_size,
        block_size: BLOCK_SIZE,
        blocks: image_size.div_ceil(BLOCK_SIZE),
        mapped_blocks: ranges.iter().map(|(first, last)| last - first + 1).sum(),
    };

    let mut map = String::new();
    for &(first, last) in &ranges {
        let digest = range_sha256(&sparse.file, image_size, first, last)
            .with_context(|| format!("reading {}", image.display()))?;
        if first == last {
            map.push_str(&format!(
                "        <Range chksum=\"{digest}\"> {first} </Range>\n"
            ));
        } else {
            map.push_str(&format!(
                "        <Range chksum=\"{digest}\"> {first}-{last} </Range>\n"
            ));
        }
    }
    let text = document(&stats, ZERO_CHECKSUM, &map);
    // bmaptool checks the file's own sha256 with the checksum field set to all '0's.
    let own = hex::encode(Sha256::digest(text.as_bytes()));
    let text = document(&stats, &own, &map);

    let mut out = AtomicFile::create(output)?;
    out.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", output.display()))?;
    out.commit()?;
    Ok(stats)
}

fn document(s: &BmapStats, checksum: &str, map: &str) -> String {
    let percent = if s.blocks == 0 {
        0.0
    } else {
        s.mapped_blocks as f64 * 100.0 / s.blocks as f64
    };
    format!(
        r#"<?xml version="1.0" ?>
<!-- Block map of an edgeimg image: the blocks listed below hold data and must be written
     to the device; all others read as zeros and can be skipped. -->

<bmap version="2.0">
    <!-- Image size in bytes: {mib:.1} MiB -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {bs} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: {percent:.1}% -->
    <MappedBlocksCount> {mapped} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> {checksum} </BmapFileChecksum>

    <!-- The block map: ranges of mapped blocks, each with the sha256 of its bytes. -->
    <BlockMap>
{map}    </BlockMap>
</bmap>
"#,
        mib = s.image_size as f64 / (1024.0 * 1024.0),
        size = s.image_size,
        bs = s.block_size,
        blocks = s.blocks,
        mapped = s.mapped_blocks,
    )
}

/// Byte ranges to inclusive block ranges: starts round down, ends round up, and ranges that
/// touch or overlap after rounding are merged.
fn block_ranges(bytes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in bytes {
        if end <= start {
            continue;
        }
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// sha256 of blocks `first..=last` as bmaptool reads them (the last block may be short at the
/// end of the image).
fn range_sha256(file: &File, image_size: u64, first: u64, last: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut pos = first * BLOCK_SIZE;
    let end = ((last + 1) * BLOCK_SIZE).min(image_size);
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_tools::{require_tool, run_tool, run_tool_status};

    #[test]
    fn block_ranges_round_and_merge() {
        assert_eq!(
            block_ranges(&[(0, 1), (4096, 8192), (10000, 10001), (40960, 40961)]),
            vec![(0, 2), (10, 10)]
        );
        assert_eq!(block_ranges(&[]), vec![]);
    }

    #[test]
    fn bmaptool_copies_the_image_exactly_and_checks_the_file() {
        require_tool("bmaptool");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        let f = File::create(&img).unwrap();
        f.set_len(32 << 20).unwrap();
        f.write_all_at(b"boot sector", 0).unwrap();
        f.write_all_at(&vec![0xa5u8; 200_000], 5 << 20).unwrap();
        f.write_all_at(b"end", (32 << 20) - 3).unwrap();
        drop(f);
        let bmap = dir.path().join("t.bmap");
        let stats = write_bmap(&img, &bmap).unwrap();
        assert_eq!(stats.blocks, 8192);
        assert!((51..1024).contains(&stats.mapped_blocks), "{stats:?}");

        let target = dir.path().join("target.img");
        let out = run_tool(
            "bmaptool",
            &[
                "copy",
                "--bmap",
                bmap.to_str().unwrap(),
                img.to_str().unwrap(),
                target.to_str().unwrap(),
            ],
        );
        assert!(
            !out.to_lowercase().contains("checksum"),
            "bmaptool complained: {out}"
        );
        run_tool("cmp", &[img.to_str().unwrap(), target.to_str().unwrap()]);

        // A bmap whose own checksum is wrong is refused: the verification really ran.
        let text = std::fs::read_to_string(&bmap)
            .unwrap()
            .replace("<BlockSize> 4096", "<BlockSize>  4096");
        let bad = dir.path().join("bad.bmap");
        std::fs::write(&bad, text).unwrap();
        let (ok, msg) = run_tool_status(
            "bmaptool",
            &[
                "copy",
                "--bmap",
                bad.to_str().unwrap(),
                img.to_str().unwrap(),
                dir.path().join("t2").to_str().unwrap(),
            ],
        );
        assert!(!ok, "bmaptool accepted a tampered bmap: {msg}");
    }

    #[test]
    fn same_image_same_bmap() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        std::fs::write(&img, vec![1u8; 10_000]).unwrap();
        write_bmap(&img, &dir.path().join("a.bmap")).unwrap();
        write_bmap(&img, &dir.path().join("b.bmap")).unwrap();
        let a = std::fs::read(dir.path().join("a.bmap")).unwrap();
        assert_eq!(a, std::fs::read(dir.path().join("b.bmap")).unwrap());
        // A 10000-byte image ends with a short block: 3 blocks, all mapped.
        let text = String::from_utf8(a).unwrap();
        assert!(
            text.contains("<BlocksCount> 3 </BlocksCount>") && text.contains("> 0-2 </Range>"),
            "{text}"
        );
    }
}
