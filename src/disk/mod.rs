//! Disk images: the partition plan, the partition table, the sparse image file, and what is
//! published next to it (`.img.xz`, `.bmap`, `SHA256SUMS`).
//!
//! Nothing here needs root or a loop device: partitions are byte ranges of one sparse file,
//! written at their offsets.

pub mod bmap;
pub mod checksums;
pub mod gpt;
pub mod image;
pub mod layout;
pub mod mbr;
pub mod read;
pub mod source;
pub mod sparse_digest;
pub mod xz;
pub mod xz_blocks;

use std::fs::File;

use anyhow::Result;

pub use crate::util::window::OffsetWriter;
pub use image::{mapped_ranges, ImageWriter};
pub use layout::{
    FitError, LayoutError, PartRole, PartType, Partition, PartitionPlan, PartitionSpec, TableKind,
};

/// Writes the partition table of `plan` (GPT with its protective MBR and backup, or an MBR)
/// into `file`, which should already be `plan.disk_size` long.
pub fn write_table(plan: &PartitionPlan, file: &mut File) -> Result<()> {
    match plan.table {
        TableKind::Gpt => gpt::write_gpt(plan, file),
        TableKind::Mbr => mbr::write_mbr(plan, file),
    }
}

/// The whole publishing path on one small image, each output checked by its standard tool.
#[cfg(test)]
mod pipeline_tests {
    use super::*;
    use crate::fs::squashfs::{write_squashfs, SquashfsOptions};
    use crate::progress::Silent;
    use crate::tree::Tree;
    use crate::util::test_tools::{require_tool, run_tool};

    #[test]
    fn table_squashfs_bmap_xz_and_sums_agree_with_the_tools() {
        for tool in ["sgdisk", "unsquashfs", "bmaptool", "xz", "sha256sum", "cmp"] {
            require_tool(tool);
        }
        let out = tempfile::tempdir().unwrap();
        let specs = layout::tests::specs(TableKind::Gpt);
        let plan = PartitionPlan::new(TableKind::Gpt, &specs, b"pipeline").unwrap();
        let mut image = ImageWriter::create(out.path(), "t.img", plan.disk_size).unwrap();
        write_table(&plan, image.file_mut()).unwrap();

        let mut tree = Tree::new();
        tree.add_file("etc/os-release", b"ID=edgeimg\n".to_vec(), 0o644)
            .unwrap();
        tree.add_symlink("sbin/init", "/bin/busybox").unwrap();
        let root = plan.get(PartRole::Root(crate::disk::layout::Slot::A));
        let mut w = OffsetWriter::bounded(image.file_mut(), root.offset(), root.size()).unwrap();
        let size = write_squashfs(
            &tree,
            &SquashfsOptions {
                mtime: 1,
                ..Default::default()
            },
            &mut w,
        )
        .unwrap();
        plan.check_fits(PartRole::Root(crate::disk::layout::Slot::A), size)
            .unwrap();
        image
            .write_at(plan.offset(PartRole::Boot), b"\xeb\x58\x90mkfs.fat")
            .unwrap();
        let img = out.path().join("t.img");
        image.commit(&img).unwrap();
        let img_s = img.to_str().unwrap();

        assert!(run_tool("sgdisk", &["-v", img_s]).contains("No problems found"));
        let listing = run_tool(
            "unsquashfs",
            &["-o", &root.offset().to_string(), "-lln", img_s],
        );
        assert!(
            listing.contains("squashfs-root/etc/os-release"),
            "{listing}"
        );
        assert!(
            listing.contains("squashfs-root/sbin/init -> /bin/busybox"),
            "{listing}"
        );

        let bmap = out.path().join("t.bmap");
        let stats = bmap::write_bmap(&img, &bmap).unwrap();
        assert!(
            stats.mapped_blocks * 20 < stats.blocks,
            "the image should be mostly holes: {stats:?}"
        );
        let copy = out.path().join("copy.img");
        run_tool(
            "bmaptool",
            &[
                "copy",
                "--bmap",
                bmap.to_str().unwrap(),
                img_s,
                copy.to_str().unwrap(),
            ],
        );
        run_tool("cmp", &[img_s, copy.to_str().unwrap()]);
        std::fs::remove_file(&copy).unwrap();

        let xz = out.path().join("t.img.xz");
        xz::compress_xz(&img, &xz, 2, &Silent).unwrap();
        run_tool("xz", &["-t", xz.to_str().unwrap()]);

        checksums::write_sha256sums(out.path(), &["t.img", "t.img.xz", "t.bmap"]).unwrap();
        let check = std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(out.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let found = read::read_table(&std::fs::File::open(&img).unwrap(), "t.img").unwrap();
        assert_eq!(
            found.partuuid(2),
            Some(plan.partuuid(PartRole::Root(crate::disk::layout::Slot::A)))
        );
    }
}
