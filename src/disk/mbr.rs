//! The classic MBR partition table (Raspberry Pi boards) and the protective MBR of a GPT disk.
//!
//! Sector 0: 446 bytes of boot code (left zero: nothing boots from it), the disk signature at
//! 0x1B8, four 16-byte partition entries at 0x1BE, and the 0x55AA boot signature.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::layout::{PartitionPlan, TableKind, SECTOR};

const SIGNATURE_OFFSET: usize = 0x1b8;
const ENTRIES_OFFSET: usize = 0x1be;
const ENTRY_SIZE: usize = 16;

/// Writes the MBR of an MBR-partitioned plan to sector 0 of `file`.
pub fn write_mbr(plan: &PartitionPlan, file: &File) -> Result<()> {
    if plan.table != TableKind::Mbr {
        bail!("write_mbr called for a {:?} plan", plan.table);
    }
    let mut sector = [0u8; SECTOR as usize];
    sector[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4]
        .copy_from_slice(&plan.mbr_signature().to_le_bytes());
    for (i, p) in plan.partitions.iter().enumerate() {
        // The plan refused anything beyond u32 sectors already.
        let start = u32::try_from(p.start_lba).context("MBR partition start beyond 2 TiB")?;
        let size = u32::try_from(p.size_lba).context("MBR partition size beyond 2 TiB")?;
        let entry = Entry {
            bootable: p.bootable,
            ptype: p.ptype.mbr_byte(),
            start,
            size,
        };
        entry.encode(&mut sector[ENTRIES_OFFSET + i * ENTRY_SIZE..][..ENTRY_SIZE]);
    }
    sector[510] = 0x55;
    sector[511] = 0xaa;
    file.write_all_at(&sector, 0)
        .context("writing the MBR to sector 0")?;
    Ok(())
}

/// The protective MBR of a GPT disk: one 0xEE partition from LBA 1 over the whole disk (capped
/// at 0xFFFFFFFF sectors), so MBR-only tools see the disk as in use.
pub fn protective_mbr(disk_sectors: u64) -> [u8; SECTOR as usize] {
    let mut sector = [0u8; SECTOR as usize];
    let size = (disk_sectors - 1).min(u32::MAX as u64) as u32;
    let entry = Entry {
        bootable: false,
        ptype: 0xee,
        start: 1,
        size,
    };
    entry.encode(&mut sector[ENTRIES_OFFSET..][..ENTRY_SIZE]);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

struct Entry {
    bootable: bool,
    ptype: u8,
    start: u32,
    size: u32,
}

impl Entry {
    fn encode(&self, out: &mut [u8]) {
        out[0] = if self.bootable { 0x80 } else { 0x00 };
        out[1..4].copy_from_slice(&chs(self.start as u64));
        out[4] = self.ptype;
        out[5..8].copy_from_slice(&chs(self.start as u64 + self.size as u64 - 1));
        out[8..12].copy_from_slice(&self.start.to_le_bytes());
        out[12..16].copy_from_slice(&self.size.to_le_bytes());
    }
}

/// CHS address of `lba` in the usual 255 heads x 63 sectors geometry, or the standard
/// "beyond 1024 cylinders" value (1023/254/63 = fe ff ff) when it does not fit. Nothing reads
/// CHS any more, but `fdisk` warns when it is inconsistent.
fn chs(lba: u64) -> [u8; 3] {
    let cylinder = lba / (255 * 63);
    if cylinder > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    [
        head as u8,
        (sector as u8) | ((cylinder >> 2) as u8 & 0xc0),
        cylinder as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::tests::specs;
    use crate::disk::layout::PartRole;
    use crate::util::test_tools::{require_tool, run_tool};

    #[test]
    fn chs_matches_what_fdisk_writes() {
        assert_eq!(chs(2048), [0x20, 0x21, 0x00]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(u32::MAX as u64), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn sfdisk_reads_types_flags_starts_and_signature() {
        require_tool("sfdisk");
        let plan = PartitionPlan::new(TableKind::Mbr, &specs(TableKind::Mbr), b"mbr-test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbr.img");
        let file = File::create(&path).unwrap();
        file.set_len(plan.disk_size).unwrap();
        write_mbr(&plan, &file).unwrap();
        drop(file);

        let dump = run_tool("sfdisk", &["-d", path.to_str().unwrap()]);
        assert!(dump.contains("label: dos"), "{dump}");
        assert!(
            dump.contains(&format!("label-id: 0x{}", plan.disk_id)),
            "{dump}"
        );
        let lines: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
        assert_eq!(lines.len(), 3, "{dump}");
        assert!(
            lines[0].contains("start=        2048, size=      131072, type=c, bootable"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(&format!(
                "start={:>12}",
                plan.get(PartRole::Root(crate::disk::layout::Slot::A))
                    .start_lba
            )),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("type=83") && !lines[1].contains("bootable"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("size=       32768, type=83"),
            "{}",
            lines[2]
        );
        // fdisk checks CHS consistency and warns about anything odd.
        require_tool("fdisk");
        let listing = run_tool("fdisk", &["-l", path.to_str().unwrap()]);
        assert!(!listing.to_lowercase().contains("warning"), "{listing}");
        assert!(
            listing.contains(&format!("Disk identifier: 0x{}", plan.disk_id)),
            "{listing}"
        );
    }
}
