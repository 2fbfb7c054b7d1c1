//! Disk images: the partition plan, the partition table, the sparse image file, and what is
//! published next to it (`.img.xz`, `.bmap`, `SHA256SUMS`).
//!
//! Nothing here needs root or a loop device: partitions are byte ranges of one sparse file,
//! written at their offsets.

pub mod atomic;
pub mod bmap;
pub mod checksums;
pub mod gpt;
pub mod image;
pub mod layout;
pub mod mbr;
pub mod read;
pub mod sparse_digest;
pub mod xz;

use std::fs::File;

use anyhow::Result;

pub use image::{mapped_ranges, ImageWriter, OffsetWriter};
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

/// Helpers for tests that check output with the standard tools.
#[cfg(test)]
pub(crate) mod test_tools {
    use std::process::Command;

    /// Fails the test with an installation hint when a checking tool is absent.
    pub fn require_tool(tool: &str) {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(tool).is_file());
        assert!(found, "this test needs `{tool}`: install it (Debian: apt-get install gdisk fdisk squashfs-tools xz-utils bmap-tools)");
    }

    /// Runs a tool, asserts success, returns its stdout (stderr appended, for messages).
    pub fn run_tool(tool: &str, args: &[&str]) -> String {
        let out = run_tool_status(tool, args);
        assert!(out.0, "`{tool} {}` failed:\n{}", args.join(" "), out.1);
        out.1
    }

    /// Runs a tool; returns (success, stdout + stderr).
    pub fn run_tool_status(tool: &str, args: &[&str]) -> (bool, String) {
        let path = ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| tool.into());
        let out = Command::new(&path)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{tool}`: {e}"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

/// The whole publishing path on one small image, each output checked by its standard tool.
#[cfg(test)]
mod pipeline_tests {
    use super::test_tools::{require_tool, run_tool};
    use super::*;
    use crate::fs::squashfs::{write_squashfs, SquashfsOptions};
    use crate::progress::Silent;
    use crate::tree::Tree;

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
        let root = plan.get(PartRole::Root);
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
        plan.check_fits(PartRole::Root, size).unwrap();
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
        assert_eq!(found.partuuid(2), Some(plan.partuuid(PartRole::Root)));
    }
}
