//! Step 3 of a build: the disk image and what is published beside it.
//!
//! 3.1 lay out the partitions (types from the boot method, identifiers from the image hash);
//! 3.2 encode the root squashfs into its partition (or copy the cached one), then its dm-verity
//!     tree; 3.3 the boot partition from the boot method, with the node files; 3.4 the files
//!     beside it: `.img.xz`, `.bmap`, the SBOM, the Imager list, `manifest.json`, `SHA256SUMS`
//!     last. All of it goes into the build's staging folder; `super::publish` puts the set in
//!     place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{BuildOptions, Inputs, Laps, Trees, MIB};

use crate::disk::image::ImageWriter;
use crate::disk::layout::{PartRole, PartitionPlan, PartitionSpec, Slot};
use crate::fs::fat::{write_fat32, FatParams};
use crate::fs::squashfs::write_squashfs;
use crate::manifest::{file_name, ImageManifest, Manifest, OutputRecord};
use crate::node::contract::KernelArg;
use crate::node::NodeConfig;
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::tree::Tree;

/// What step 3 wrote.
pub struct WrittenImage {
    pub path: PathBuf,
    /// Every published file, the image first.
    pub outputs: Vec<PathBuf>,
    pub manifest: PathBuf,
    pub token_included: bool,
    /// Where the root squashfs sits in the image (network boot copies it from there).
    pub root_offset: u64,
    pub root_size: u64,
}

/// Writes the image set into `dir` (a staging folder: `super::publish` puts it in place).
pub fn write(
    plan: &Plan,
    opts: &BuildOptions,
    dir: &Path,
    inputs: &Inputs,
    trees: &mut Trees,
    laps: &mut Laps,
    rep: &dyn Reporter,
) -> Result<WrittenImage> {
    let method = crate::boot::method(&plan.board);
    let stem = plan.stem();

    // 3.1 Layout.
    let layout = partition_plan(plan)?;
    let image_path = dir.join(format!("{stem}.img"));
    let mut image = ImageWriter::create(dir, &format!("{stem}.img"), layout.disk_size)?;
    crate::disk::write_table(&layout, image.file_mut())?;
    laps.lap("layout");

    // 3.2 Root and its verity tree.
    let root_size = write_root(plan, opts, trees, &layout, &mut image, rep)?;
    laps.lap("squashfs");
    let verity = if plan.verity {
        Some(super::verity::add_tree(
            plan, &layout, root_size, &mut image,
        )?)
    } else {
        None
    };
    let mut cmdline = kernel_cmdline(plan, &layout, Slot::A);
    if let Some(v) = &verity {
        cmdline = super::verity::cmdline(v, &cmdline);
    }

    // 3.3 Boot partition. The join token, when given at build time, goes onto the boot
    // partition only: never into the manifest or the plan.
    let mut boot = method.boot_tree(plan, &trees.unpacked, &trees.initrd, &cmdline)?;
    let token_included = plan.node.token()?.is_some();
    let uki = match boot.read(crate::boot::uefi::UKI) {
        Some(bytes) => Some(crate::manifest::UkiInfo::of(
            crate::boot::uefi::UKI,
            &bytes,
        )?),
        None => None,
    };
    add_node_files(&mut boot, &plan.node)?;
    boot.set_all_mtimes(plan.source_date_epoch);
    encode_boot(plan, &layout, &boot, &mut image)?;
    image.commit(&image_path)?;
    laps.lap("fat");
    let bundle = match &plan.update_key {
        Some(k) => {
            let mut cmdline_b = kernel_cmdline(plan, &layout, Slot::B);
            if let Some(v) = &verity {
                cmdline_b = super::verity::cmdline(v, &cmdline_b);
            }
            let files = method.bundle_boot_files(
                plan,
                &trees.unpacked,
                &trees.initrd,
                &boot,
                &cmdline_b,
            )?;
            let root_len = match &verity {
                Some(v) => v.hash_offset + v.hash_size,
                None => root_size.div_ceil(4096) * 4096,
            };
            let path = dir.join(format!("{stem}.update"));
            let key = crate::bundle::keys::load_signing_key(&k.key_file)?;
            let file = std::fs::File::open(&image_path)?;
            crate::bundle::write(
                &path,
                &key,
                crate::bundle::Header {
                    target: crate::bundle::BundleTarget {
                        board: plan.board.name.clone(),
                        arch: plan.board.arch.debian().to_string(),
                        role: plan.role.to_string(),
                        image_version: plan.image_version.clone(),
                        k0s_version: plan.k0s_version.clone(),
                        edgeimg_version: plan.edgeimg_version.clone(),
                        boot_method: method.name().to_string(),
                        partitions: crate::bundle::BundlePartitions::of(&layout),
                    },
                    verity_root_hash: verity.as_ref().map(|v| v.root_hash.clone()),
                    mtime: plan.source_date_epoch,
                },
                &file,
                layout.offset(PartRole::Root(Slot::A)),
                root_len,
                &files,
            )?;
            laps.lap("bundle");
            Some(path)
        }
        None => None,
    };
    // The trees are encoded: their memory goes back before xz takes its own (network boot
    // copies the root from the image).
    drop(boot);
    trees.root = None;
    crate::util::memstat::release_free_memory();

    // 3.4 Publish. The image's digest (mostly holes) is computed beside the xz and bmap work.
    let mut image_digest = Some(crate::disk::sparse_digest::spawn_sha256_sparse(&image_path));
    let mut outputs = vec![image_path.clone()];
    if opts.xz && opts.format.xz(false) {
        let xz_path = dir.join(format!("{stem}.img.xz"));
        let blocks = opts
            .artifact_cache
            .then(|| crate::cache::dir(opts.cache.root()).join("xz"));
        crate::disk::xz::compress_xz_cached(
            &image_path,
            &xz_path,
            super::threads(),
            blocks.as_deref(),
            rep,
        )?;
        outputs.push(xz_path);
        laps.lap("xz");
    }
    let bmap_path = dir.join(format!("{stem}.bmap"));
    crate::disk::bmap::write_bmap(&image_path, &bmap_path)?;
    outputs.push(bmap_path);
    outputs.extend(bundle);

    let mut records = Vec::new();
    for o in &outputs {
        records.push(match image_digest.take_if(|_| o == &image_path) {
            Some(h) => OutputRecord {
                file: file_name(o),
                size: std::fs::metadata(o)?.len(),
                sha256: crate::disk::sparse_digest::join(h)?,
            },
            None => OutputRecord::of_file(o)?,
        });
    }
    let input_records = super::input_records(inputs, plan);
    let image_file = format!("{stem}.img");
    let image_sha256 = records
        .iter()
        .find(|o| o.file == image_file)
        .map(|o| o.sha256.clone())
        .ok_or_else(|| anyhow::anyhow!("the image is missing from the outputs"))?;
    let sbom_path = super::write_sbom(plan, inputs, &image_file, &image_sha256, dir)?;
    records.push(OutputRecord::of_file(&sbom_path)?);
    outputs.push(sbom_path);
    let imager = crate::manifest::imager::write_imager(
        plan,
        method.imager_devices(),
        opts.imager_url_base.as_deref(),
        dir,
        &opts.out_dir,
        &stem,
        &records,
    )?;
    let manifest = Manifest::image(ImageManifest {
        edgeimg_version: plan.edgeimg_version.clone(),
        board: plan.board.name.clone(),
        role: plan.role.to_string(),
        arch: plan.board.arch.debian().to_string(),
        plan_hash: plan.hash(),
        image_hash: plan.image_hash(),
        suite: plan.suite.clone(),
        mirror: plan.mirror.clone(),
        kernel_version: trees.unpacked.kver.clone(),
        k0s_version: plan.k0s_version.clone(),
        image_version: plan.image_version.clone(),
        source_date_epoch: plan.source_date_epoch,
        hostname: plan.node.hostname.clone().unwrap_or_default(),
        token_included,
        token_required: plan.role.needs_token(),
        inputs: input_records,
        partitions: layout.clone(),
        kernel_cmdline: cmdline,
        root_size,
        initramfs_size: trees.initrd.len() as u64,
        outputs: records.clone(),
        verity,
        uki,
    });
    let manifest_path = manifest.write(dir)?;
    outputs.push(manifest_path.clone());
    outputs.extend(imager.iter().cloned());

    // Every output was hashed once for the manifest; SHA256SUMS reuses those digests.
    for extra in std::iter::once(&manifest_path).chain(&imager) {
        records.push(OutputRecord::of_file(extra)?);
    }
    let digests: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.file.clone(), r.sha256.clone()))
        .collect();
    outputs.push(crate::disk::checksums::write_sha256sums_of(dir, &digests)?);

    Ok(WrittenImage {
        path: image_path,
        outputs,
        manifest: manifest_path,
        token_included,
        root_offset: layout.offset(PartRole::Root(Slot::A)),
        root_size,
    })
}

/// The partition layout of the board. Its identifiers (PARTUUIDs, disk id) are seeded by the
/// board and its partition sizes only, not by the image: every version of the board's image
/// names the same partitions, so an update's command line (inside a signed UKI) finds them on
/// a card written by an older version.
pub fn partition_plan(plan: &Plan) -> Result<PartitionPlan> {
    let sizes = &plan.board.partitions;
    let types = crate::boot::partition_types(&plan.board);
    let part = |role: PartRole, ptype, mib: u64, bootable| PartitionSpec {
        role,
        name: role.name().into(),
        ptype,
        size: mib * MIB,
        bootable,
    };
    // Two root slots of the same size: the build fills A; B stays holes (no bytes in the
    // .img's extents, the .img.xz or the .bmap) until an update writes it.
    let specs = [
        part(PartRole::Boot, types.boot, sizes.boot_mib, true),
        part(PartRole::Root(Slot::A), types.root, sizes.root_mib, false),
        part(PartRole::Root(Slot::B), types.root, sizes.root_mib, false),
        part(PartRole::Data, types.data, sizes.data_mib, false),
    ];
    let seed = format!(
        "edgeimg partitions {} {:?} {} {} {}",
        plan.board.name, types.table, sizes.boot_mib, sizes.root_mib, sizes.data_mib
    );
    Ok(PartitionPlan::new(types.table, &specs, seed.as_bytes())?)
}

/// The kernel command line of root slot `slot`: where the initramfs finds its partitions,
/// then the board's console and arguments, then the node's.
pub fn kernel_cmdline(plan: &Plan, layout: &PartitionPlan, slot: Slot) -> String {
    let partuuid = |role| format!("PARTUUID={}", layout.partuuid(role));
    let mut args = vec![
        KernelArg::Boot.with(partuuid(PartRole::Boot)),
        KernelArg::Root.with(partuuid(PartRole::Root(slot))),
        KernelArg::Data.with(partuuid(PartRole::Data)),
        KernelArg::Slot.with(slot),
        crate::boot::PANIC_REBOOT.to_string(),
    ];
    args.extend(plan.board.cmdline.iter().cloned());
    args.extend(plan.node.boot.kernel_args.iter().cloned());
    args.join(" ")
}

/// Encodes the root tree into its partition, or copies the cached squashfs there (and caches
/// a freshly encoded one). Returns the squashfs size.
fn write_root(
    plan: &Plan,
    opts: &BuildOptions,
    trees: &Trees,
    layout: &PartitionPlan,
    image: &mut ImageWriter,
    rep: &dyn Reporter,
) -> Result<u64> {
    let offset = layout.offset(PartRole::Root(Slot::A));
    match (&trees.cached_root, &trees.root) {
        (Some(c), _) => {
            check_root_fits(plan, layout, c.size)?;
            c.write_root(image.file(), offset)?;
            Ok(c.size)
        }
        (None, Some(root)) => {
            let size = encode_root(plan, layout, root, image, rep)?;
            if let Some(key) = &trees.artifact_key {
                let region = crate::cache::root::RootInImage {
                    image: image.file(),
                    offset,
                    size,
                };
                if let Err(e) = crate::cache::root::store(
                    opts.cache.root(),
                    key,
                    plan,
                    region,
                    &trees.initrd,
                    &trees.unpacked,
                ) {
                    rep.warn(&format!("not caching the root artifact: {e:#}"));
                }
            }
            Ok(size)
        }
        (None, None) => bail!("neither a root tree nor a cached root squashfs"),
    }
}

fn encode_root(
    plan: &Plan,
    layout: &PartitionPlan,
    root: &Tree,
    image: &mut ImageWriter,
    rep: &dyn Reporter,
) -> Result<u64> {
    let opts = super::squashfs_options(plan)?;
    rep.step(&format!(
        "root: squashfs of {} entries, {} MiB of content",
        root.len(),
        root.content_size() / MIB
    ));
    let offset = layout.offset(PartRole::Root(Slot::A));
    let mut w = crate::util::window::OffsetWriter::new(image.file_mut(), offset)?;
    let size = write_squashfs(root, &opts, &mut w)?;
    // An oversized root spilled into the temporary image only, which is dropped on error.
    check_root_fits(plan, layout, size)?;
    Ok(size)
}

fn check_root_fits(plan: &Plan, layout: &PartitionPlan, size: u64) -> Result<()> {
    layout
        .check_fits(PartRole::Root(Slot::A), size)
        .map_err(|e| {
            anyhow::anyhow!(e.advice(
                &plan.board.name,
                &plan.board.file.display().to_string(),
                "[partitions] root_mib"
            ))
        })?;
    Ok(())
}

fn encode_boot(
    plan: &Plan,
    layout: &PartitionPlan,
    boot: &Tree,
    image: &mut ImageWriter,
) -> Result<()> {
    let part = layout.get(PartRole::Boot);
    let params = FatParams {
        size: part.size_lba * layout.sector_size,
        volume_id: u32::from_str_radix(&plan.image_hash()[..8], 16).unwrap_or(0x1234_5678),
        label: "EDGEIMG".into(),
        hidden_sectors: part.start_lba as u32,
        mtime: plan.source_date_epoch,
    };
    let base = layout.offset(PartRole::Boot);
    write_fat32(boot, &params, image.file_mut(), base).map_err(|e| {
        anyhow::anyhow!(
            "boot partition: {e}: raise `boot_mib` under [partitions] in {}",
            plan.board.file.display()
        )
    })?;
    Ok(())
}

/// Renders the node config (and its token, when given) onto the boot tree.
pub fn add_node_files(boot: &mut Tree, node: &NodeConfig) -> Result<()> {
    boot.overlay(&node.render()?.into_tree()?)?;
    Ok(())
}
