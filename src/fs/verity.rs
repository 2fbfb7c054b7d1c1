//! dm-verity hash tree in the standard on-disk format (`veritysetup format` / `verify`):
//! a 512-byte superblock (version 1, hash type 1) in its own hash block at `hash_offset`,
//! then the tree, top level first, every hash `sha256(salt || block)`, 32-byte digests packed
//! 128 to a 4096-byte hash block, zero padded.
//!
//! The data area is read back in blocks (streaming); the tree is held in memory, 1/128 of the
//! data size.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub const BLOCK_SIZE: u32 = 4096;
const DIGEST: usize = 32;
const SUPERBLOCK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("verity: the data area is empty")]
    Empty,
    #[error("verity: salt of {0} bytes (at most 256)")]
    Salt(usize),
    #[error("verity: data offset {0} is not a multiple of {BLOCK_SIZE}")]
    Unaligned(u64),
    #[error("verity: I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What `veritysetup verify` (and the initramfs) need, recorded in the manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: String,
    pub salt: String,
    pub uuid: String,
    pub hash_algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// Byte offset of the superblock inside the hash device (here: the root partition).
    pub hash_offset: u64,
    /// Hash block (counted from the start of the hash device) where the tree starts: the
    /// `hash_start` of a dm-verity table, which has no superblock parser.
    pub hash_start_block: u64,
    /// Bytes from `hash_offset` to the end of the tree, superblock included.
    pub hash_size: u64,
    /// Partition numbers (1-based) of the data and hash devices.
    pub data_partition: u32,
    pub hash_partition: u32,
    /// Whether the initramfs opens the root through dm-verity at boot (a tree written on its
    /// own, outside a build, is for offline verification only).
    pub enforced_at_boot: bool,
}

impl VerityInfo {
    /// The dm table line for `dmsetup create --readonly`, given the device path.
    pub fn dm_table(&self, dev: &str) -> String {
        format!(
            "0 {} verity 1 {dev} {dev} {} {} {} {} sha256 {} {}",
            self.data_blocks * u64::from(self.data_block_size) / 512,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block,
            self.root_hash,
            self.salt
        )
    }
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Number of hash blocks of each level, level 0 (hashes of data blocks) first.
fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let per = (BLOCK_SIZE as usize / DIGEST) as u64;
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    loop {
        let blocks = n.div_ceil(per);
        sizes.push(blocks);
        if blocks <= 1 {
            break;
        }
        n = blocks;
    }
    sizes
}

/// Hashes `blocks` (each `BLOCK_SIZE` bytes) into packed, zero-padded hash blocks.
fn hash_level(salt: &[u8], input: &[u8], out_blocks: u64) -> Vec<u8> {
    let mut out = vec![0u8; out_blocks as usize * BLOCK_SIZE as usize];
    for (i, block) in input.chunks(BLOCK_SIZE as usize).enumerate() {
        out[i * DIGEST..(i + 1) * DIGEST].copy_from_slice(&salted(salt, block));
    }
    out
}

/// Builds the hash tree of the `data_size` bytes at `data_offset` of `dev` (zero padded to a
/// whole block: the padding must be zero on disk too) and writes superblock and tree at
/// `data_offset + hash_offset`, where `hash_offset` is the padded data size. `dev` is the
/// whole image; offsets inside the partition are returned relative to `data_offset`.
pub fn write_tree<F: Read + Write + Seek>(
    dev: &mut F,
    data_offset: u64,
    data_size: u64,
    salt: &[u8],
    uuid: [u8; 16],
) -> Result<(VerityInfo, Vec<u8>), VerityError> {
    if data_size == 0 {
        return Err(VerityError::Empty);
    }
    if salt.len() > 256 {
        return Err(VerityError::Salt(salt.len()));
    }
    if data_offset & (u64::from(BLOCK_SIZE) - 1) != 0 {
        return Err(VerityError::Unaligned(data_offset));
    }
    let bs = BLOCK_SIZE as usize;
    let data_blocks = data_size.div_ceil(bs as u64);
    let sizes = level_sizes(data_blocks);

    // Level 0, streaming over the data.
    let mut level0 = vec![0u8; sizes[0] as usize * bs];
    dev.seek(SeekFrom::Start(data_offset))?;
    let mut buf = vec![0u8; bs];
    for i in 0..data_blocks {
        let want = (data_size - i * bs as u64).min(bs as u64) as usize;
        dev.read_exact(&mut buf[..want])?;
        buf[want..].fill(0);
        level0[i as usize * DIGEST..(i as usize + 1) * DIGEST].copy_from_slice(&salted(salt, &buf));
    }
    let mut levels = vec![level0];
    for &n in &sizes[1..] {
        let next = hash_level(salt, levels.last().expect("a level"), n);
        levels.push(next);
    }
    let top = levels.last().expect("a level");
    let root: [u8; DIGEST] = salted(salt, &top[..bs]);

    let hash_offset = data_blocks * bs as u64;
    let mut sb = vec![0u8; bs];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: salt first
    sb[16..32].copy_from_slice(&uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb[68..72].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    const { assert!(88 + 256 + 168 == SUPERBLOCK) };

    dev.seek(SeekFrom::Start(data_offset + data_size))?;
    // Zero padding of the last data block (the tree hashed it as zeros).
    dev.write_all(&vec![0u8; (hash_offset - data_size) as usize])?;
    dev.write_all(&sb)?;
    for level in levels.iter().rev() {
        dev.write_all(level)?;
    }
    let tree_blocks: u64 = sizes.iter().sum();
    let info = VerityInfo {
        root_hash: hex::encode(root),
        salt: hex::encode(salt),
        uuid: crate::util::guid::format_guid(&uuid),
        hash_algorithm: "sha256".into(),
        data_block_size: BLOCK_SIZE,
        hash_block_size: BLOCK_SIZE,
        data_blocks,
        hash_offset,
        hash_start_block: hash_offset / bs as u64 + 1,
        hash_size: (1 + tree_blocks) * bs as u64,
        data_partition: 0,
        hash_partition: 0,
        enforced_at_boot: false,
    };
    Ok((info, root.to_vec()))
}

/// Bytes the tree (with its superblock) takes for `data_size` bytes of data.
pub fn tree_size(data_size: u64) -> u64 {
    let blocks = data_size.div_ceil(u64::from(BLOCK_SIZE));
    (1 + level_sizes(blocks).iter().sum::<u64>()) * u64::from(BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn levels_cover_the_data() {
        assert_eq!(level_sizes(1), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![129, 2, 1]);
        assert_eq!(tree_size(4096 * 129), 4 * 4096);
    }

    #[test]
    fn single_level_tree_by_hand() {
        // 3 blocks of data, the last one partial: level 0 is one block, the root its hash.
        let mut img = vec![0u8; 8192];
        let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        img.extend_from_slice(&data);
        img.resize(8192 + 64 * 4096, 0xee);
        let salt = [5u8; 32];
        let mut c = Cursor::new(img);
        let (info, root) = write_tree(&mut c, 8192, 9000, &salt, [1; 16]).unwrap();
        let img = c.into_inner();
        assert_eq!(info.data_blocks, 3);
        assert_eq!(info.hash_offset, 3 * 4096);
        assert_eq!(info.hash_start_block, 4);
        assert_eq!(info.hash_size, 2 * 4096);
        let mut padded = data.clone();
        padded.resize(3 * 4096, 0);
        assert_eq!(&img[8192..8192 + 3 * 4096], &padded[..], "padding zeroed");
        let sb = &img[8192 + 3 * 4096..];
        assert_eq!(&sb[..8], b"verity\0\0");
        assert_eq!(u64::from_le_bytes(sb[72..80].try_into().unwrap()), 3);
        let tree = &sb[4096..8192];
        for i in 0..3 {
            assert_eq!(
                &tree[i * 32..(i + 1) * 32],
                &salted(&salt, &padded[i * 4096..(i + 1) * 4096])
            );
        }
        assert!(tree[96..].iter().all(|&b| b == 0));
        assert_eq!(root, salted(&salt, tree).to_vec());
        assert_eq!(info.root_hash, hex::encode(&root));
        assert!(info
            .dm_table("/dev/vda2")
            .starts_with("0 24 verity 1 /dev/vda2 /dev/vda2 4096 4096 3 4 sha256 "));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut c = Cursor::new(vec![0u8; 8192]);
        assert!(matches!(
            write_tree(&mut c, 0, 0, &[], [0; 16]),
            Err(VerityError::Empty)
        ));
        assert!(matches!(
            write_tree(&mut c, 1, 10, &[], [0; 16]),
            Err(VerityError::Unaligned(1))
        ));
        assert!(matches!(
            write_tree(&mut c, 0, 10, &[0; 300], [0; 16]),
            Err(VerityError::Salt(300))
        ));
    }
}
