//! The GUID partition table (UEFI boards), written directly: the format is small and a fixed,
//! deterministic writer is simpler than steering a crate away from random GUIDs.
//!
//! LBA 0: protective MBR. LBA 1: primary header. LBA 2-33: 128 entries of 128 bytes.
//! Last 33 sectors: the same entries, then the backup header in the very last sector.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::layout::{
    parse_guid, PartitionPlan, TableKind, GPT_ENTRIES, GPT_FIRST_USABLE_LBA, SECTOR,
};
use super::mbr::protective_mbr;

const HEADER_SIZE: u32 = 92;
const ENTRY_SIZE: usize = 128;
const ENTRIES_SECTORS: u64 = (GPT_ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// Writes the protective MBR, both GPT headers and both entry arrays for `plan`. The disk is
/// taken to be `plan.disk_size` long (the backup sits at its end).
pub fn write_gpt(plan: &PartitionPlan, file: &File) -> Result<()> {
    if plan.table != TableKind::Gpt {
        bail!("write_gpt called for a {:?} plan", plan.table);
    }
    let sectors = plan.disk_size / SECTOR;
    let last_lba = sectors - 1;
    let entries = entries_array(plan)?;
    let entries_crc = crc32fast::hash(&entries);
    let disk_guid = guid_bytes(&plan.disk_id)?;

    let backup_entries_lba = last_lba - ENTRIES_SECTORS;
    let header = Header {
        disk_guid,
        entries_crc,
        first_usable: GPT_FIRST_USABLE_LBA,
        last_usable: backup_entries_lba - 1,
    };
    if let Some(p) = plan
        .partitions
        .iter()
        .find(|p| p.end_lba() - 1 > header.last_usable)
    {
        bail!(
            "partition {} ends at LBA {} past the last usable LBA {}",
            p.number,
            p.end_lba() - 1,
            header.last_usable
        );
    }

    let write = |data: &[u8], lba: u64, what: &str| {
        file.write_all_at(data, lba * SECTOR)
            .with_context(|| format!("writing the {what} at LBA {lba}"))
    };
    write(&protective_mbr(sectors), 0, "protective MBR")?;
    write(&header.encode(1, last_lba, 2), 1, "primary GPT header")?;
    write(&entries, 2, "primary GPT entries")?;
    write(&entries, backup_entries_lba, "backup GPT entries")?;
    write(
        &header.encode(last_lba, 1, backup_entries_lba),
        last_lba,
        "backup GPT header",
    )?;
    Ok(())
}

struct Header {
    disk_guid: [u8; 16],
    entries_crc: u32,
    first_usable: u64,
    last_usable: u64,
}

impl Header {
    /// One header sector; `my_lba`/`alternate_lba`/`entries_lba` differ between the copies.
    fn encode(&self, my_lba: u64, alternate_lba: u64, entries_lba: u64) -> [u8; SECTOR as usize] {
        let mut s = [0u8; SECTOR as usize];
        s[0..8].copy_from_slice(b"EFI PART");
        s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20: header CRC, computed last over the header with this field zero.
        s[24..32].copy_from_slice(&my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid);
        s[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
        s[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&s[..HEADER_SIZE as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }
}

fn entries_array(plan: &PartitionPlan) -> Result<Vec<u8>> {
    let mut entries = vec![0u8; GPT_ENTRIES * ENTRY_SIZE];
    for (i, p) in plan.partitions.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE..][..ENTRY_SIZE];
        e[0..16].copy_from_slice(&guid_bytes(p.ptype.gpt_guid())?);
        e[16..32].copy_from_slice(&guid_bytes(&p.uuid)?);
        e[32..40].copy_from_slice(&p.start_lba.to_le_bytes());
        e[40..48].copy_from_slice(&(p.end_lba() - 1).to_le_bytes());
        // 48..56: attributes, all clear (no legacy-BIOS-bootable partition: UEFI boots the ESP).
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > 36 {
            bail!(
                "GPT partition name {:?} is longer than 36 UTF-16 code units",
                p.name
            );
        }
        for (j, unit) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    Ok(entries)
}

/// GUID text to its on-disk form: the first three fields little-endian, the rest as written.
fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let b = parse_guid(text).with_context(|| format!("{text:?} is not a GUID"))?;
    let mut d = b;
    d[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    d[4..6].copy_from_slice(&[b[5], b[4]]);
    d[6..8].copy_from_slice(&[b[7], b[6]]);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::tests::specs;
    use crate::disk::layout::PartRole;
    use crate::util::test_tools::{require_tool, run_tool};

    fn image(seed: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, PartitionPlan) {
        let plan = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpt.img");
        let file = File::create(&path).unwrap();
        file.set_len(plan.disk_size).unwrap();
        write_gpt(&plan, &file).unwrap();
        (dir, path, plan)
    }

    #[test]
    fn guid_on_disk_is_mixed_endian() {
        let b = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(hex::encode(b), "28732ac11ff8d211ba4b00a0c93ec93b");
    }

    #[test]
    fn sgdisk_finds_no_problems_and_shows_the_disk_guid() {
        require_tool("sgdisk");
        let (_dir, path, plan) = image(b"gpt-test");
        let verify = run_tool("sgdisk", &["-v", path.to_str().unwrap()]);
        assert!(verify.contains("No problems found"), "{verify}");
        let print = run_tool("sgdisk", &["-p", path.to_str().unwrap()]);
        assert!(
            print
                .to_lowercase()
                .contains(&format!("disk identifier (guid): {}", plan.disk_id)),
            "{print}"
        );
    }

    #[test]
    fn sfdisk_shows_guids_types_and_names() {
        require_tool("sfdisk");
        let (_dir, path, plan) = image(b"gpt-test");
        let json: serde_json::Value =
            serde_json::from_str(&run_tool("sfdisk", &["--json", path.to_str().unwrap()])).unwrap();
        let table = &json["partitiontable"];
        assert_eq!(table["label"], "gpt");
        assert_eq!(table["id"].as_str().unwrap().to_lowercase(), plan.disk_id);
        let parts = table["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        for (got, want) in parts.iter().zip(&plan.partitions) {
            assert_eq!(got["start"].as_u64().unwrap(), want.start_lba);
            assert_eq!(got["size"].as_u64().unwrap(), want.size_lba);
            assert_eq!(got["type"].as_str().unwrap(), want.ptype.gpt_guid());
            assert_eq!(got["uuid"].as_str().unwrap().to_lowercase(), want.uuid);
            assert_eq!(got["name"].as_str().unwrap(), want.name);
            assert!(got.get("attrs").is_none(), "{got}");
        }
        assert_eq!(
            parts[1]["uuid"].as_str().unwrap().to_lowercase(),
            plan.partuuid(PartRole::Root(crate::disk::layout::Slot::A))
        );
    }

    #[test]
    fn same_seed_same_bytes() {
        let (_d1, a, _) = image(b"same");
        let (_d2, b, _) = image(b"same");
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
}
