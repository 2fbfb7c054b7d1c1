//! Where everything sits in a FAT32 volume: the geometry chosen for a new volume or read from
//! an existing boot sector, and the boot sector and FSInfo sector themselves.

use super::FatError;

pub(crate) const SECTOR: u64 = 512;
pub(crate) const RESERVED_SECTORS: u32 = 32;
pub(crate) const NUM_FATS: u32 = 2;
/// Fewer clusters than this makes a volume FAT16 by the specification's rule.
pub(crate) const MIN_CLUSTERS: u32 = 65525;
/// Cluster numbers 2..=0x0FFFFFF6 are usable; 0x0FFFFFF7 marks a bad cluster.
pub(crate) const MAX_CLUSTERS: u32 = 0x0FFF_FFF5;
/// Values at or above this end a cluster chain.
pub(crate) const EOC_MIN: u32 = 0x0FFF_FFF8;
/// The end-of-chain value written (as mkfs.fat does).
pub(crate) const EOC: u32 = 0x0FFF_FFFF;
/// The entry of a cluster marked bad.
pub(crate) const BAD: u32 = 0x0FFF_FFF7;
pub(crate) const ENTRY_MASK: u32 = 0x0FFF_FFFF;
pub(crate) const MEDIA: u8 = 0xF8;
const BACKUP_BOOT_SECTOR: u32 = 6;
const FSINFO_SECTOR: u32 = 1;
const FSINFO_LEAD_SIG: u32 = 0x4161_5252;
const FSINFO_STRUCT_SIG: u32 = 0x6141_7272;
const FSINFO_TRAIL_SIG: u32 = 0xAA55_0000;

/// The shape of a FAT32 volume. Offsets are relative to the start of the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    pub num_fats: u32,
    pub fat_sectors: u32,
    pub total_sectors: u32,
    pub root_cluster: u32,
    /// The FSInfo sector, when the volume has one.
    pub fsinfo_sector: Option<u32>,
    /// Data clusters; valid cluster numbers are 2..cluster_count + 2.
    pub cluster_count: u32,
}

impl Geometry {
    /// The geometry of a new volume of `size` bytes. Cluster sizes follow mkfs.fat and
    /// Microsoft's table for FAT32, which keep every size above the FAT32 minimum of 65525
    /// clusters once past about 33 MiB.
    pub fn for_size(size: u64) -> Result<Geometry, FatError> {
        let max = u64::from(u32::MAX) * SECTOR;
        if size > max {
            return Err(FatError::TooLarge { size, max });
        }
        let total_sectors = (size / SECTOR) as u32;
        const MIB: u64 = 1024 * 1024;
        let sectors_per_cluster = match size {
            s if s < 260 * MIB => 1,
            s if s < 8 * 1024 * MIB => 8,
            s if s < 16 * 1024 * MIB => 16,
            s if s < 32 * 1024 * MIB => 32,
            _ => 64,
        };
        let too_small = || FatError::TooSmall {
            size,
            min: Self::min_size(),
        };
        let overhead = RESERVED_SECTORS;
        if total_sectors <= overhead + 2 * NUM_FATS {
            return Err(too_small());
        }
        // The smallest FAT that covers the clusters left beside it. Coverage only improves as
        // the FAT grows (more entries, fewer clusters), so a binary search finds it.
        let clusters_beside = |fat: u32| {
            total_sectors
                .checked_sub(overhead + NUM_FATS * fat)
                .map(|data| data / sectors_per_cluster)
        };
        let covers = |fat: u32| match clusters_beside(fat) {
            Some(c) => u64::from(c) + 2 <= u64::from(fat) * (SECTOR / 4),
            None => true,
        };
        let (mut lo, mut hi) = (
            1u32,
            ((total_sectors / sectors_per_cluster) / 128 + 2).max(1),
        );
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if covers(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let fat_sectors = lo;
        let cluster_count = clusters_beside(fat_sectors).ok_or_else(too_small)?;
        if cluster_count < MIN_CLUSTERS {
            return Err(too_small());
        }
        Ok(Geometry {
            sectors_per_cluster,
            reserved_sectors: RESERVED_SECTORS,
            num_fats: NUM_FATS,
            fat_sectors,
            total_sectors,
            root_cluster: 2,
            fsinfo_sector: Some(FSINFO_SECTOR),
            cluster_count: cluster_count.min(MAX_CLUSTERS),
        })
    }

    /// The smallest partition [`Geometry::for_size`] accepts: 65525 one-sector clusters
    /// plus the reserved sectors and two FATs covering them.
    pub fn min_size() -> u64 {
        let fat = (u64::from(MIN_CLUSTERS) + 2).div_ceil(SECTOR / 4);
        (u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat + u64::from(MIN_CLUSTERS)) * SECTOR
    }

    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    /// Offset of FAT copy `copy` (0-based).
    pub fn fat_offset(&self, copy: u32) -> u64 {
        (u64::from(self.reserved_sectors) + u64::from(copy) * u64::from(self.fat_sectors)) * SECTOR
    }

    pub fn data_offset(&self) -> u64 {
        self.fat_offset(self.num_fats)
    }

    /// Offset of cluster `cluster` (2 or more).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + u64::from(cluster - 2) * self.cluster_bytes()
    }

    pub fn is_valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster < self.cluster_count + 2
    }

    /// Checks that the volume, as its boot sector describes it, lies within `len` bytes (its
    /// partition): the total sector count, the reserved sectors and FATs, and the data region
    /// of every cluster.
    pub fn check_within(&self, len: u64) -> Result<(), FatError> {
        let partition = len / SECTOR;
        let ends = [
            (
                "the file system (as its boot sector counts it)",
                u64::from(self.total_sectors),
            ),
            ("its file allocation tables", self.data_offset() / SECTOR),
            (
                "its data region",
                self.cluster_offset(self.cluster_count + 2) / SECTOR,
            ),
        ];
        for (what, end) in ends {
            if end > partition {
                return Err(FatError::BeyondPartition {
                    what,
                    end,
                    partition,
                });
            }
        }
        Ok(())
    }

    /// Reads the geometry from a boot sector and checks that it is a sane FAT32 volume with
    /// 512-byte sectors. Returns it with the volume id and label.
    pub fn parse(bs: &[u8; 512]) -> Result<(Geometry, u32, String), FatError> {
        let bad = |why: String| Err(FatError::NotFat32(why));
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return bad("no 0x55AA signature at the end of the boot sector".into());
        }
        let bytes_per_sector = le16(bs, 11);
        if u64::from(bytes_per_sector) != SECTOR {
            return bad(format!(
                "{bytes_per_sector} bytes per sector; only 512 is supported"
            ));
        }
        let spc = u32::from(bs[13]);
        if spc == 0 || !spc.is_power_of_two() || spc > 128 {
            return bad(format!("{spc} sectors per cluster"));
        }
        let reserved = u32::from(le16(bs, 14));
        let num_fats = u32::from(bs[16]);
        let root_entries = le16(bs, 17);
        let fat16_sectors = le16(bs, 22);
        let fat_sectors = le32(bs, 36);
        let total16 = u32::from(le16(bs, 19));
        let total_sectors = if total16 != 0 { total16 } else { le32(bs, 32) };
        if fat16_sectors != 0 || root_entries != 0 || fat_sectors == 0 {
            return bad(
                "the BPB describes FAT12/16 (16-bit FAT size or fixed root directory)".into(),
            );
        }
        if reserved == 0 || num_fats == 0 || num_fats > 4 {
            return bad(format!("{reserved} reserved sectors, {num_fats} FATs"));
        }
        let data_start = u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors);
        if data_start >= u64::from(total_sectors) {
            return bad(format!(
                "the FATs end past the volume ({total_sectors} sectors)"
            ));
        }
        let cluster_count = ((u64::from(total_sectors) - data_start) / u64::from(spc)) as u32;
        let fat_capacity = u64::from(fat_sectors) * SECTOR / 4;
        if u64::from(cluster_count) + 2 > fat_capacity {
            return bad(format!(
                "{cluster_count} clusters do not fit in a FAT of {fat_sectors} sectors"
            ));
        }
        let cluster_count = cluster_count.min(MAX_CLUSTERS);
        let root_cluster = le32(bs, 44);
        let fsinfo = u32::from(le16(bs, 48));
        let geom = Geometry {
            sectors_per_cluster: spc,
            reserved_sectors: reserved,
            num_fats,
            fat_sectors,
            total_sectors,
            root_cluster,
            fsinfo_sector: (fsinfo != 0 && fsinfo != 0xFFFF && fsinfo < reserved).then_some(fsinfo),
            cluster_count,
        };
        if !geom.is_valid_cluster(root_cluster) {
            return bad(format!(
                "root directory cluster {root_cluster} is outside the volume"
            ));
        }
        let (volume_id, label) = if bs[66] == 0x29 {
            let label = String::from_utf8_lossy(&bs[71..82]).trim_end().to_string();
            (
                le32(bs, 67),
                if label == "NO NAME" {
                    String::new()
                } else {
                    label
                },
            )
        } else {
            (0, String::new())
        };
        Ok((geom, volume_id, label))
    }
}

/// Sectors of the reserved region to write for a new volume: the boot sector and its backup,
/// the FSInfo sector and its backup. Returns (sector number, content) pairs.
pub(crate) fn reserved_sectors(
    geom: &Geometry,
    volume_id: u32,
    label: &[u8; 11],
    hidden_sectors: u32,
    free_clusters: u32,
    next_free: u32,
) -> Vec<(u32, [u8; 512])> {
    let boot = boot_sector(geom, volume_id, label, hidden_sectors);
    let info = fsinfo_sector(free_clusters, next_free);
    vec![
        (0, boot),
        (FSINFO_SECTOR, info),
        (BACKUP_BOOT_SECTOR, boot),
        (BACKUP_BOOT_SECTOR + 1, info),
    ]
}

fn boot_sector(
    geom: &Geometry,
    volume_id: u32,
    label: &[u8; 11],
    hidden_sectors: u32,
) -> [u8; 512] {
    let mut bs = [0u8; 512];
    bs[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // jump over the BPB to the boot code
    bs[3..11].copy_from_slice(b"EDGEIMG ");
    put16(&mut bs, 11, SECTOR as u16);
    bs[13] = geom.sectors_per_cluster as u8;
    put16(&mut bs, 14, geom.reserved_sectors as u16);
    bs[16] = geom.num_fats as u8;
    bs[21] = MEDIA;
    put16(&mut bs, 24, 32); // sectors per track: a fixed fake CHS geometry
    put16(&mut bs, 26, 64); // heads
    put32(&mut bs, 28, hidden_sectors);
    put32(&mut bs, 32, geom.total_sectors);
    put32(&mut bs, 36, geom.fat_sectors);
    put32(&mut bs, 44, geom.root_cluster);
    put16(&mut bs, 48, FSINFO_SECTOR as u16);
    put16(&mut bs, 50, BACKUP_BOOT_SECTOR as u16);
    bs[64] = 0x80; // drive number: first hard disk
    bs[66] = 0x29; // extended boot signature: the next three fields are valid
    put32(&mut bs, 67, volume_id);
    bs[71..82].copy_from_slice(if label == &[b' '; 11] {
        b"NO NAME    "
    } else {
        label
    });
    bs[82..90].copy_from_slice(b"FAT32   ");
    // Boot code, in case a BIOS ever jumps here: cli; hlt; jmp back to hlt.
    bs[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    bs[510] = 0x55;
    bs[511] = 0xAA;
    bs
}

fn fsinfo_sector(free_clusters: u32, next_free: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    put32(&mut s, 0, FSINFO_LEAD_SIG);
    put32(&mut s, 484, FSINFO_STRUCT_SIG);
    put32(&mut s, 488, free_clusters);
    put32(&mut s, 492, next_free);
    put32(&mut s, 508, FSINFO_TRAIL_SIG);
    s
}

/// Updates the free count and next-free hint of an FSInfo sector in place; false when the
/// sector does not carry FSInfo signatures (then it is left alone).
pub(crate) fn update_fsinfo(s: &mut [u8; 512], free_clusters: u32, next_free: u32) -> bool {
    if le32(s, 0) != FSINFO_LEAD_SIG
        || le32(s, 484) != FSINFO_STRUCT_SIG
        || le32(s, 508) != FSINFO_TRAIL_SIG
    {
        return false;
    }
    put32(s, 488, free_clusters);
    put32(s, 492, next_free);
    true
}

/// The volume label as stored: upper-cased ASCII, space-padded to 11 bytes.
pub(crate) fn encode_label(label: &str) -> Result<[u8; 11], FatError> {
    let upper = label.to_ascii_uppercase();
    let ok = upper.len() <= 11
        && upper
            .bytes()
            .all(|b| (0x20..0x7F).contains(&b) && !b"\"*+,./:;<=>?[\\]|".contains(&b));
    if !ok {
        return Err(FatError::InvalidLabel(label.to_string()));
    }
    let mut out = [b' '; 11];
    out[..upper.len()].copy_from_slice(upper.as_bytes());
    Ok(out)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn cluster_sizes_follow_mkfs_and_stay_fat32() {
        for (size, spc) in [
            (40 * MIB, 1),
            (256 * MIB, 1),
            (260 * MIB, 8),
            (1024 * MIB, 8),
            (8192 * MIB, 16),
        ] {
            let g = Geometry::for_size(size).unwrap();
            assert_eq!(g.sectors_per_cluster, spc, "size {size}");
            assert!(
                g.cluster_count >= MIN_CLUSTERS,
                "size {size}: {} clusters",
                g.cluster_count
            );
            // The FAT covers every cluster, and the clusters fit in the volume.
            assert!(u64::from(g.fat_sectors) * 128 >= u64::from(g.cluster_count) + 2);
            let end = g.cluster_offset(g.cluster_count + 2);
            assert!(end <= size, "size {size}: data ends at {end}");
        }
    }

    #[test]
    fn small_volumes_are_refused_with_the_minimum() {
        let min = Geometry::min_size();
        assert!(Geometry::for_size(min).is_ok(), "min {min}");
        match Geometry::for_size(min - 512) {
            Err(FatError::TooSmall { min: m, .. }) => assert_eq!(m, min),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Geometry::for_size(1024),
            Err(FatError::TooSmall { .. })
        ));
    }

    #[test]
    fn boot_sector_round_trips() {
        let g = Geometry::for_size(64 * MIB).unwrap();
        let label = encode_label("edge boot").unwrap();
        let sectors = reserved_sectors(&g, 0x1234_5678, &label, 2048, 10, 3);
        let (parsed, id, l) = Geometry::parse(&sectors[0].1).unwrap();
        assert_eq!(parsed, g);
        assert_eq!(id, 0x1234_5678);
        assert_eq!(l, "EDGE BOOT");
        assert_eq!(sectors[0].1, sectors[2].1, "backup boot sector");
        assert!(encode_label("toolonglabel").is_err());
        assert!(encode_label("a.b").is_err());
    }
}
