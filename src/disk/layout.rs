//! The partition plan: where each partition starts, how big it is, and the identifiers the
//! initramfs uses to find it (PARTUUIDs). Pure arithmetic, no I/O: the table writers
//! (`disk::gpt`, `disk::mbr`) and the image writer take their numbers from here.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use crate::util::guid::{format_guid, guid_bytes_from, guid_from, parse_guid};

/// Every partition starts on a 1 MiB boundary: good for SD cards and SSD erase blocks, and
/// what every partitioning tool does by default.
pub const ALIGN: u64 = 1024 * 1024;
/// The only sector size edgeimg writes (SD cards, USB sticks, virtio disks).
pub const SECTOR: u64 = 512;
/// Sectors the GPT needs at the end of the disk: 32 sectors of entries and the backup header.
pub const GPT_BACKUP_SECTORS: u64 = 33;
/// The first usable LBA on a GPT disk with 128 entries of 128 bytes.
pub const GPT_FIRST_USABLE_LBA: u64 = 34;
/// Entries a GPT holds (the standard minimum table size, 16 KiB).
pub const GPT_ENTRIES: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
}

/// One of the two root slots. The build writes slot A; an update writes the slot that is not
/// running ([`Slot::other`]) and boots it on trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// 0 or 1: where the slot's entry is in a `[T; 2]` ordered like [`Slot::ALL`].
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    /// `a` or `b`, as `edgeimg.slot=` and the boot file names spell it.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// What a partition is for. The build and the initramfs look partitions up by role. Written
/// as `boot`, `root-a`, `root-b`, `data` (also the GPT partition names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartRole {
    Boot,
    Root(Slot),
    Data,
}

impl PartRole {
    pub const ALL: [PartRole; 4] = [
        PartRole::Boot,
        PartRole::Root(Slot::A),
        PartRole::Root(Slot::B),
        PartRole::Data,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartRole::Boot => "boot",
            PartRole::Root(Slot::A) => "root-a",
            PartRole::Root(Slot::B) => "root-b",
            PartRole::Data => "data",
        }
    }

    pub fn parse(s: &str) -> Option<PartRole> {
        PartRole::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The root slot this partition holds, if it is one.
    pub fn slot(self) -> Option<Slot> {
        match self {
            PartRole::Root(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for PartRole {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for PartRole {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PartRole, D::Error> {
        let s = String::deserialize(d)?;
        PartRole::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown partition role {s:?}: expected boot, root-a, root-b or data"
            ))
        })
    }
}

impl fmt::Display for PartRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The partition type, written as a GUID in a GPT and as one byte in an MBR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartType {
    /// EFI system partition.
    Esp,
    /// Discoverable Partitions Specification root types, so tools show what the partition is.
    LinuxRootX86_64,
    LinuxRootArm64,
    LinuxRootArm,
    /// Linux filesystem data.
    LinuxData,
    /// FAT32 with LBA addressing (MBR 0x0c), what the Raspberry Pi firmware boots from.
    Fat32Lba,
    /// Plain Linux (MBR 0x83).
    Linux,
}

impl PartType {
    /// The type GUID as text (upper case, as the specifications print them).
    pub fn gpt_guid(self) -> &'static str {
        match self {
            PartType::Esp => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            PartType::LinuxRootX86_64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            PartType::LinuxRootArm64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
            PartType::LinuxRootArm => "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
            PartType::LinuxData | PartType::Linux => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            // A FAT partition on a GPT disk that is not the ESP: Microsoft basic data.
            PartType::Fat32Lba => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        }
    }

    /// The MBR system id byte.
    pub fn mbr_byte(self) -> u8 {
        match self {
            PartType::Esp => 0xef,
            PartType::Fat32Lba => 0x0c,
            PartType::LinuxRootX86_64
            | PartType::LinuxRootArm64
            | PartType::LinuxRootArm
            | PartType::LinuxData
            | PartType::Linux => 0x83,
        }
    }
}

/// What the caller asks for: one partition, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    pub role: PartRole,
    /// GPT partition name (ignored on MBR, which has no names).
    pub name: String,
    pub ptype: PartType,
    /// Size in bytes; rounded up to a whole MiB.
    pub size: u64,
    /// MBR active flag (the GPT has no equivalent edgeimg uses).
    pub bootable: bool,
}

/// One placed partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub role: PartRole,
    /// 1-based, as the kernel numbers partitions.
    pub number: u32,
    pub name: String,
    pub ptype: PartType,
    pub start_lba: u64,
    pub size_lba: u64,
    /// GPT unique partition GUID, lowercase as the kernel shows PARTUUID. Empty on MBR.
    pub uuid: String,
    pub bootable: bool,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start_lba * SECTOR
    }

    pub fn size(&self) -> u64 {
        self.size_lba * SECTOR
    }

    pub fn end_lba(&self) -> u64 {
        self.start_lba + self.size_lba
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub table: TableKind,
    /// GPT disk GUID (lowercase) or MBR disk signature as 8 hex digits.
    pub disk_id: String,
    pub sector_size: u64,
    pub partitions: Vec<Partition>,
    /// Total image size in bytes, a multiple of 1 MiB.
    pub disk_size: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the partition list is empty: a board needs at least a boot partition")]
    NoPartitions,
    #[error("partition {number} ({role}) has size 0: give it a size in MiB")]
    ZeroSize { number: u32, role: PartRole },
    #[error(
        "the {0} role appears in more than one partition: each role names exactly one partition"
    )]
    DuplicateRole(PartRole),
    #[error("the data partition must be the last one (it grows to fill the device on first boot)")]
    DataNotLast,
    #[error("an MBR holds at most 4 primary partitions, the board asks for {0}")]
    TooManyMbrPartitions(usize),
    #[error("a GPT holds at most {GPT_ENTRIES} partitions, the board asks for {0}")]
    TooManyGptPartitions(usize),
    #[error("partition {number} ({role}) ends beyond 2 TiB, which an MBR cannot address: use a GPT or smaller sizes")]
    BeyondMbrLimit { number: u32, role: PartRole },
    #[error("GPT partition name {0:?} is longer than 36 UTF-16 code units")]
    NameTooLong(String),
}

/// The content meant for a partition does not fit in it. The caller knows which board file and
/// field set the size; [`FitError::advice`] words the complete message with them.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{role} filesystem is {} but partition {number} ({role}) holds {}", mib(*content), mib(*capacity))]
pub struct FitError {
    pub role: PartRole,
    pub number: u32,
    pub content: u64,
    pub capacity: u64,
}

impl FitError {
    /// "root filesystem is 812 MiB but partition 2 (root) of board x86-64 holds 768 MiB: raise
    /// `root_size_mib` in boards/x86-64.toml"
    pub fn advice(&self, board: &str, board_file: &str, field: &str) -> String {
        format!(
            "{} filesystem is {} but partition {} ({}) of board {board} holds {}: raise `{field}` in {board_file} to at least {}",
            self.role,
            mib(self.content),
            self.number,
            self.role,
            mib(self.capacity),
            self.content.div_ceil(ALIGN)
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(ALIGN))
}

impl PartitionPlan {
    /// Places `specs` in order, each start aligned to 1 MiB, each size rounded up to 1 MiB.
    /// Identifiers come from `seed` so the same plan gives the same bytes.
    pub fn new(
        table: TableKind,
        specs: &[PartitionSpec],
        seed: &[u8],
    ) -> Result<PartitionPlan, LayoutError> {
        validate(table, specs)?;
        let mut partitions = Vec::with_capacity(specs.len());
        // The first MiB holds the table (and, on GPT, the 34 sectors of the primary GPT).
        let mut next = ALIGN;
        for (i, spec) in specs.iter().enumerate() {
            let number = i as u32 + 1;
            let size = spec.size.div_ceil(ALIGN) * ALIGN;
            let uuid = match table {
                TableKind::Gpt => guid_from(seed, spec.role.name()),
                TableKind::Mbr => String::new(),
            };
            partitions.push(Partition {
                role: spec.role,
                number,
                name: spec.name.clone(),
                ptype: spec.ptype,
                start_lba: next / SECTOR,
                size_lba: size / SECTOR,
                uuid,
                bootable: spec.bootable,
            });
            next += size;
        }
        let disk_size = match table {
            TableKind::Gpt => (next + GPT_BACKUP_SECTORS * SECTOR).div_ceil(ALIGN) * ALIGN,
            TableKind::Mbr => next,
        };
        if table == TableKind::Mbr {
            for p in &partitions {
                if p.end_lba() > u32::MAX as u64 {
                    return Err(LayoutError::BeyondMbrLimit {
                        number: p.number,
                        role: p.role,
                    });
                }
            }
        }
        let disk_id = match table {
            TableKind::Gpt => guid_from(seed, "disk"),
            TableKind::Mbr => format!("{:08x}", mbr_signature(seed)),
        };
        Ok(PartitionPlan {
            table,
            disk_id,
            sector_size: SECTOR,
            partitions,
            disk_size,
        })
    }

    /// The partition with `role`.
    ///
    /// # Panics
    /// If the plan has no partition with this role: roles come from the board, which the
    /// caller validated against the roles it needs before building.
    pub fn get(&self, role: PartRole) -> &Partition {
        self.find(role)
            .unwrap_or_else(|| panic!("the partition plan has no {role} partition"))
    }

    /// The partition with `role`, if the plan has one.
    pub fn find(&self, role: PartRole) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// Byte offset of the partition with `role` in the image.
    pub fn offset(&self, role: PartRole) -> u64 {
        self.get(role).offset()
    }

    /// The PARTUUID the kernel shows for the partition (`root=PARTUUID=...`).
    pub fn partuuid(&self, role: PartRole) -> String {
        let p = self.get(role);
        match self.table {
            TableKind::Gpt => p.uuid.clone(),
            // Linux prints an MBR PARTUUID as the disk signature (read as a little-endian u32
            // from offset 0x1B8) and the partition number.
            TableKind::Mbr => format!("{}-{:02x}", self.disk_id, p.number),
        }
    }

    /// The MBR disk signature as the number Linux shows; its little-endian bytes go at 0x1B8.
    pub fn mbr_signature(&self) -> u32 {
        u32::from_str_radix(&self.disk_id, 16).unwrap_or(0)
    }

    /// Checks that `content_len` bytes fit into the partition with `role`.
    pub fn check_fits(&self, role: PartRole, content_len: u64) -> Result<(), FitError> {
        let p = self.get(role);
        if content_len > p.size() {
            return Err(FitError {
                role,
                number: p.number,
                content: content_len,
                capacity: p.size(),
            });
        }
        Ok(())
    }
}

fn validate(table: TableKind, specs: &[PartitionSpec]) -> Result<(), LayoutError> {
    if specs.is_empty() {
        return Err(LayoutError::NoPartitions);
    }
    match table {
        TableKind::Mbr if specs.len() > 4 => {
            return Err(LayoutError::TooManyMbrPartitions(specs.len()))
        }
        TableKind::Gpt if specs.len() > GPT_ENTRIES => {
            return Err(LayoutError::TooManyGptPartitions(specs.len()))
        }
        _ => {}
    }
    for (i, spec) in specs.iter().enumerate() {
        if spec.size == 0 {
            return Err(LayoutError::ZeroSize {
                number: i as u32 + 1,
                role: spec.role,
            });
        }
        if specs[..i].iter().any(|s| s.role == spec.role) {
            return Err(LayoutError::DuplicateRole(spec.role));
        }
        if spec.role == PartRole::Data && i + 1 != specs.len() {
            return Err(LayoutError::DataNotLast);
        }
        if table == TableKind::Gpt && spec.name.encode_utf16().count() > 36 {
            return Err(LayoutError::NameTooLong(spec.name.clone()));
        }
    }
    Ok(())
}

/// The MBR disk signature: 4 bytes of sha256(seed), never 0 (0 means "no signature" to some
/// tools and would make every PARTUUID ambiguous).
fn mbr_signature(seed: &[u8]) -> u32 {
    let d = Sha256::digest(seed);
    let mut i = 0;
    loop {
        let sig = u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        if sig != 0 {
            return sig;
        }
        i += 4;
        if i + 4 > d.len() {
            return 1;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    pub fn specs(table: TableKind) -> Vec<PartitionSpec> {
        let (boot_type, root_type, data_type) = match table {
            TableKind::Gpt => (
                PartType::Esp,
                PartType::LinuxRootX86_64,
                PartType::LinuxData,
            ),
            TableKind::Mbr => (PartType::Fat32Lba, PartType::Linux, PartType::Linux),
        };
        vec![
            PartitionSpec {
                role: PartRole::Boot,
                name: "boot".into(),
                ptype: boot_type,
                size: 64 * MIB,
                bootable: true,
            },
            PartitionSpec {
                role: PartRole::Root(Slot::A),
                name: "root".into(),
                ptype: root_type,
                size: 100 * MIB + 1,
                bootable: false,
            },
            PartitionSpec {
                role: PartRole::Data,
                name: "data".into(),
                ptype: data_type,
                size: 16 * MIB,
                bootable: false,
            },
        ]
    }

    #[test]
    fn gpt_plan_is_aligned_and_leaves_room_for_the_backup() {
        let plan = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), b"seed").unwrap();
        let p: Vec<(u64, u64)> = plan
            .partitions
            .iter()
            .map(|p| (p.start_lba, p.size_lba))
            .collect();
        assert_eq!(
            p,
            vec![
                (2048, 64 * 2048),
                (2048 + 64 * 2048, 101 * 2048),
                (2048 + 165 * 2048, 16 * 2048)
            ]
        );
        // 1 + 64 + 101 + 16 = 182 MiB of partitions, plus the backup GPT rounded up to 1 MiB.
        assert_eq!(plan.disk_size, 183 * MIB);
        assert_eq!(plan.offset(PartRole::Root(Slot::A)), 65 * MIB);
        assert_eq!(plan.get(PartRole::Data).number, 3);
    }

    #[test]
    fn mbr_plan_ends_at_the_last_partition() {
        let plan = PartitionPlan::new(TableKind::Mbr, &specs(TableKind::Mbr), b"seed").unwrap();
        assert_eq!(plan.disk_size, 182 * MIB);
        assert_eq!(plan.disk_id.len(), 8);
        assert_ne!(plan.mbr_signature(), 0);
        assert_eq!(
            plan.partuuid(PartRole::Root(Slot::A)),
            format!("{}-02", plan.disk_id)
        );
    }

    #[test]
    fn identifiers_are_deterministic_and_seed_dependent() {
        let a = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), b"one").unwrap();
        let b = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), b"one").unwrap();
        let c = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), b"two").unwrap();
        assert_eq!(a, b);
        assert_ne!(a.disk_id, c.disk_id);
        assert_ne!(
            a.partuuid(PartRole::Root(Slot::A)),
            a.partuuid(PartRole::Boot)
        );
        let root = a.partuuid(PartRole::Root(Slot::A));
        assert_eq!(root, root.to_lowercase());
        assert_eq!(&root[14..15], "4", "version nibble: {root}");
        assert!("89ab".contains(&root[19..20]), "variant nibble: {root}");
        assert_eq!(parse_guid(&root).map(|b| format_guid(&b)), Some(root));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = specs(TableKind::Mbr);
        s.swap(1, 2);
        assert_eq!(
            PartitionPlan::new(TableKind::Mbr, &s, b"x"),
            Err(LayoutError::DataNotLast)
        );
        let mut s = specs(TableKind::Mbr);
        s[1].role = PartRole::Boot;
        assert_eq!(
            PartitionPlan::new(TableKind::Mbr, &s, b"x"),
            Err(LayoutError::DuplicateRole(PartRole::Boot))
        );
        let mut s = specs(TableKind::Mbr);
        s[0].size = 0;
        assert!(matches!(
            PartitionPlan::new(TableKind::Mbr, &s, b"x"),
            Err(LayoutError::ZeroSize { number: 1, .. })
        ));
        assert_eq!(
            PartitionPlan::new(TableKind::Gpt, &[], b"x"),
            Err(LayoutError::NoPartitions)
        );
        let five: Vec<PartitionSpec> = (0..5).map(|_| specs(TableKind::Mbr)[0].clone()).collect();
        assert_eq!(
            PartitionPlan::new(TableKind::Mbr, &five, b"x"),
            Err(LayoutError::TooManyMbrPartitions(5))
        );
    }

    #[test]
    fn check_fits_names_the_partition_and_the_field_to_raise() {
        let plan = PartitionPlan::new(TableKind::Gpt, &specs(TableKind::Gpt), b"seed").unwrap();
        assert!(plan.check_fits(PartRole::Root(Slot::A), 101 * MIB).is_ok());
        let err = plan
            .check_fits(PartRole::Root(Slot::A), 101 * MIB + 1)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "root-a filesystem is 102 MiB but partition 2 (root-a) holds 101 MiB"
        );
        let advice = err.advice("x86-64", "boards/x86-64.toml", "root_size_mib");
        assert!(
            advice.contains(
                "of board x86-64 holds 101 MiB: raise `root_size_mib` in boards/x86-64.toml"
            ),
            "{advice}"
        );
    }

    #[test]
    fn two_root_slots_have_their_own_identifiers_and_names() {
        let mut s = specs(TableKind::Gpt);
        let mut b = s[1].clone();
        b.role = PartRole::Root(Slot::B);
        b.name = "root-b".into();
        s.insert(2, b);
        let plan = PartitionPlan::new(TableKind::Gpt, &s, b"seed").unwrap();
        let a = plan.get(PartRole::Root(Slot::A));
        let b = plan.get(PartRole::Root(Slot::B));
        assert_eq!((a.number, b.number), (2, 3));
        assert_eq!(a.size(), b.size());
        assert_eq!(b.offset(), a.offset() + a.size());
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(plan.get(PartRole::Data).number, 4);
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.other(), Slot::A);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["partitions"][2]["role"], "root-b");
        let back: PartitionPlan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
        let bad = serde_json::from_str::<PartRole>("\"root\"").unwrap_err();
        assert!(bad.to_string().contains("root-a, root-b"), "{bad}");
    }

    #[test]
    fn plan_serializes_for_the_manifest() {
        let plan = PartitionPlan::new(TableKind::Mbr, &specs(TableKind::Mbr), b"seed").unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["table"], "mbr");
        assert_eq!(json["partitions"][0]["role"], "boot");
        assert_eq!(json["partitions"][0]["ptype"], "fat32-lba");
    }
}
