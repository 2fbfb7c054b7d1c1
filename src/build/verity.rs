//! The root partition's dm-verity hash tree as the build lays it out: the tree follows the
//! squashfs inside the root partition (data and hash device are the same partition), salt and
//! superblock UUID derive from the image hash, and the root hash goes onto the kernel command
//! line as `edgeimg.verity=<root hash>` with `edgeimg.verity_salt=`, `edgeimg.verity_blocks=`
//! (data blocks) and `edgeimg.verity_hash_start=` (first tree block), enough for a dm-verity
//! table without reading the superblock.

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use crate::disk::image::ImageWriter;
use crate::disk::layout::{PartRole, PartitionPlan, Slot};
use crate::fs::verity::{tree_size, write_tree, VerityInfo, BLOCK_SIZE};
use crate::node::contract::KernelArg;
use crate::plan::Plan;

/// Salt and superblock UUID of the plan's verity tree.
pub fn salt_and_uuid(plan: &Plan) -> ([u8; 32], [u8; 16]) {
    let ih = plan.image_hash();
    let salt: [u8; 32] = Sha256::digest(format!("edgeimg verity salt {ih}")).into();
    // A version-4 UUID, as veritysetup prints them.
    let uuid = crate::disk::layout::guid_bytes_from(b"edgeimg verity uuid ", &ih);
    (salt, uuid)
}

/// Writes the tree after the `root_size` bytes of squashfs in the root partition.
pub fn add_tree(
    plan: &Plan,
    layout: &PartitionPlan,
    root_size: u64,
    image: &mut ImageWriter,
) -> Result<VerityInfo> {
    let padded = root_size.div_ceil(u64::from(BLOCK_SIZE)) * u64::from(BLOCK_SIZE);
    layout
        .check_fits(PartRole::Root(Slot::A), padded + tree_size(root_size))
        .map_err(|e| {
            anyhow!(
                "{}; the dm-verity hash tree needs {} KiB after the squashfs",
                e.advice(
                    &plan.board.name,
                    &plan.board.file.display().to_string(),
                    "[partitions] root_mib"
                ),
                tree_size(root_size) / 1024
            )
        })?;
    let (salt, uuid) = salt_and_uuid(plan);
    let part = layout.get(PartRole::Root(Slot::A));
    let (mut info, _) = write_tree(image.file_mut(), part.offset(), root_size, &salt, uuid)
        .with_context(|| format!("root partition {}: writing the verity tree", part.number))?;
    info.data_partition = part.number;
    info.hash_partition = part.number;
    // The initramfs of a verity plan carries dmsetup and opens the root through this tree.
    info.enforced_at_boot = true;
    Ok(info)
}

/// The kernel command line with the verity arguments added after the partition arguments.
pub fn cmdline(v: &VerityInfo, base: &str) -> String {
    [
        base.to_string(),
        KernelArg::Verity.with(&v.root_hash),
        KernelArg::VeritySalt.with(&v.salt),
        KernelArg::VerityBlocks.with(v.data_blocks),
        KernelArg::VerityHashStart.with(v.hash_start_block),
    ]
    .join(" ")
}
