//! Reading a partition table back from an image or a device, for `inspect`, `configure` and
//! `flash`, which may meet a card that has no manifest beside it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::layout::{TableKind, SECTOR};

/// One partition as found on the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FoundPartition {
    /// 1-based, as the kernel numbers partitions.
    pub number: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    /// GPT: the type GUID (upper case); MBR: the type byte as two hex digits.
    pub ptype: String,
    /// GPT: the unique GUID (lowercase); MBR: empty.
    pub uuid: String,
    /// GPT: the partition name; MBR: empty.
    pub name: String,
    pub bootable: bool,
}

impl FoundPartition {
    pub fn offset(&self) -> u64 {
        self.start_lba * SECTOR
    }

    pub fn size(&self) -> u64 {
        self.size_lba * SECTOR
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FoundTable {
    pub table: TableKind,
    /// GPT disk GUID (lowercase) or MBR disk signature as 8 hex digits, as in a `PartitionPlan`.
    pub disk_id: String,
    pub partitions: Vec<FoundPartition>,
}

impl FoundTable {
    pub fn partition(&self, number: u32) -> Option<&FoundPartition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// The PARTUUID Linux shows for partition `number`.
    pub fn partuuid(&self, number: u32) -> Option<String> {
        let p = self.partition(number)?;
        Some(match self.table {
            TableKind::Gpt => p.uuid.clone(),
            TableKind::Mbr => format!("{}-{:02x}", self.disk_id, p.number),
        })
    }
}

/// Where a table is read from: an image file, a device, or an image's first MiB held in
/// memory (`flash` checks that before it writes anything).
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(buf.len()).map(|e| (o, e)))
            .filter(|(_, e)| *e <= self.len());
        match end {
            Some((o, e)) => {
                buf.copy_from_slice(&self[o..e]);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}..{} lie beyond the {} bytes read",
                    offset + buf.len() as u64,
                    self.len()
                ),
            )),
        }
    }
}

/// Reads the primary GPT (CRCs checked) or, without one, the MBR of `file`. `what` names the
/// image or device in errors.
pub fn read_table<R: ReadAt + ?Sized>(file: &R, what: &str) -> Result<FoundTable> {
    let mut mbr = [0u8; SECTOR as usize];
    file.read_exact_at(&mut mbr, 0)
        .with_context(|| format!("reading sector 0 of {what}"))?;
    if mbr[510..512] != [0x55, 0xaa] {
        bail!("{what} has no partition table (no 0x55AA signature in sector 0): is it an edgeimg image?");
    }
    let protective = (0..4).any(|i| mbr[0x1be + 16 * i + 4] == 0xee);
    if protective {
        read_gpt(file, what)
    } else {
        Ok(read_mbr(&mbr))
    }
}

fn read_mbr(sector: &[u8]) -> FoundTable {
    let sig = u32::from_le_bytes(sector[0x1b8..0x1bc].try_into().expect("4 bytes"));
    let mut partitions = Vec::new();
    for i in 0..4 {
        let e = &sector[0x1be + 16 * i..][..16];
        let start = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")) as u64;
        let size = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")) as u64;
        if e[4] == 0 || size == 0 {
            continue;
        }
        partitions.push(FoundPartition {
            number: i as u32 + 1,
            start_lba: start,
            size_lba: size,
            ptype: format!("{:02x}", e[4]),
            uuid: String::new(),
            name: String::new(),
            bootable: e[0] == 0x80,
        });
    }
    FoundTable {
        table: TableKind::Mbr,
        disk_id: format!("{sig:08x}"),
        partitions,
    }
}

fn read_gpt<R: ReadAt + ?Sized>(file: &R, what: &str) -> Result<FoundTable> {
    let mut h = [0u8; SECTOR as usize];
    file.read_exact_at(&mut h, SECTOR)
        .with_context(|| format!("reading the GPT header of {what}"))?;
    if &h[0..8] != b"EFI PART" {
        bail!("{what} has a protective MBR but no GPT header at LBA 1");
    }
    let header_size = u32_at(&h, 12) as usize;
    if !(92..=SECTOR as usize).contains(&header_size) {
        bail!("{what}: GPT header size {header_size} is invalid");
    }
    let mut check = h;
    check[16..20].fill(0);
    if crc32fast::hash(&check[..header_size]) != u32_at(&h, 16) {
        bail!("{what}: the primary GPT header's CRC is wrong (repair it with `sgdisk -e` or rewrite the image)");
    }
    let entries_lba = u64_at(&h, 72);
    let count = u32_at(&h, 80) as usize;
    let entry_size = u32_at(&h, 84) as usize;
    if entry_size < 128 || count > 1024 {
        bail!("{what}: GPT entry array of {count} x {entry_size} bytes is not supported");
    }
    let mut entries = vec![0u8; count * entry_size];
    file.read_exact_at(&mut entries, entries_lba * SECTOR)
        .with_context(|| format!("reading the GPT entries of {what}"))?;
    if crc32fast::hash(&entries) != u32_at(&h, 88) {
        bail!("{what}: the GPT entry array's CRC is wrong");
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size).enumerate() {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = u64_at(e, 32);
        let last = u64_at(e, 40);
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        partitions.push(FoundPartition {
            number: i as u32 + 1,
            start_lba: first,
            size_lba: last + 1 - first,
            ptype: guid_text(&e[0..16]).to_uppercase(),
            uuid: guid_text(&e[16..32]),
            name: String::from_utf16_lossy(&units),
            bootable: false,
        });
    }
    Ok(FoundTable {
        table: TableKind::Gpt,
        disk_id: guid_text(&h[56..72]),
        partitions,
    })
}

/// On-disk (mixed-endian) GUID to lowercase text.
fn guid_text(b: &[u8]) -> String {
    let text_order = [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]];
    let a = hex::encode(text_order);
    let r = hex::encode(&b[8..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &a[0..8],
        &a[8..12],
        &a[12..16],
        &r[0..4],
        &r[4..16]
    )
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::tests::specs;
    use crate::disk::layout::PartitionPlan;
    use crate::disk::write_table;

    fn written(table: TableKind) -> (tempfile::NamedTempFile, PartitionPlan) {
        let plan = PartitionPlan::new(table, &specs(table), b"read-back").unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(plan.disk_size).unwrap();
        write_table(&plan, f.as_file_mut()).unwrap();
        (f, plan)
    }

    #[test]
    fn reads_back_what_was_written() {
        for table in [TableKind::Gpt, TableKind::Mbr] {
            let (f, plan) = written(table);
            let found = read_table(f.as_file(), "test image").unwrap();
            assert_eq!(found.table, table);
            assert_eq!(found.disk_id, plan.disk_id);
            assert_eq!(found.partitions.len(), plan.partitions.len());
            for (got, want) in found.partitions.iter().zip(&plan.partitions) {
                assert_eq!(
                    (got.number, got.start_lba, got.size_lba),
                    (want.number, want.start_lba, want.size_lba)
                );
                match table {
                    TableKind::Gpt => {
                        assert_eq!(got.ptype, want.ptype.gpt_guid());
                        assert_eq!(got.name, want.name);
                    }
                    TableKind::Mbr => {
                        assert_eq!(got.ptype, format!("{:02x}", want.ptype.mbr_byte()));
                        assert_eq!(got.bootable, want.bootable);
                    }
                }
            }
            for role in plan.partitions.iter().map(|p| p.role) {
                assert_eq!(
                    found.partuuid(plan.get(role).number),
                    Some(plan.partuuid(role))
                );
            }
        }
    }

    #[test]
    fn reads_a_table_held_in_memory() {
        for table in [TableKind::Gpt, TableKind::Mbr] {
            let (f, _) = written(table);
            let mut head = vec![0u8; 1 << 20];
            FileExt::read_exact_at(f.as_file(), &mut head, 0).unwrap();
            let from_file = read_table(f.as_file(), "image").unwrap();
            assert_eq!(read_table(&head[..], "image").unwrap(), from_file);
        }
        // A GPT header that points past the bytes held is an error, not a panic.
        let (f, _) = written(TableKind::Gpt);
        let mut head = vec![0u8; 2 * SECTOR as usize];
        FileExt::read_exact_at(f.as_file(), &mut head, 0).unwrap();
        let e = format!("{:#}", read_table(&head[..], "short").unwrap_err());
        assert!(
            e.contains("GPT entries of short") && e.contains("beyond"),
            "{e}"
        );
    }

    #[test]
    fn damaged_tables_are_refused() {
        let (f, _) = written(TableKind::Gpt);
        f.as_file().write_all_at(b"X", 2 * SECTOR + 60).unwrap();
        let err = read_table(f.as_file(), "card").unwrap_err().to_string();
        assert!(err.contains("card") && err.contains("CRC"), "{err}");
        let blank = tempfile::NamedTempFile::new().unwrap();
        blank.as_file().set_len(1 << 20).unwrap();
        let err = read_table(blank.as_file(), "blank.img")
            .unwrap_err()
            .to_string();
        assert!(err.contains("blank.img has no partition table"), "{err}");
    }
}
