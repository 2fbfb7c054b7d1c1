//! `edgeimg build`: the numbered sequence from a plan to published outputs.
//!
//! 1. fetch and verify inputs (Debian chain, k0s)
//! 2. unpack packages and assemble the root, initramfs and boot trees
//! 3. lay out partitions, encode the filesystems straight into a sparse image
//! 4. publish: image, .img.xz, .bmap, SHA256SUMS, manifest.json (each renamed into place)

pub mod repro;
pub mod verity;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::disk::image::ImageWriter;
use crate::disk::layout::{PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
use crate::fs::cpio::{write_initramfs, Compression};
use crate::fs::fat::{write_fat32, FatParams};
use crate::fs::squashfs::{write_squashfs, SquashCompressor, SquashfsOptions};
use crate::node::NodeConfig;
use crate::plan::{K0sInput, Plan};
use crate::profile::{Arch, PartitionTable};
use crate::progress::Reporter;
use crate::rootfs;
use crate::source::cache::Cache;
use crate::source::debian::fetch_debs;
use crate::source::k0s::{fetch_k0s, K0sArch, K0sBinary, K0sSource, K0sSpec};
use crate::tree::Tree;
use crate::util::atomic::write_atomic;

const MIB: u64 = 1024 * 1024;

/// Options that do not change what is built, only where and how.
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub cache: Cache,
    pub xz: bool,
    /// Which outputs (`--format`); `xz` above still turns the .img.xz off.
    pub format: crate::boot::pxe::OutputFormat,
    /// `--base-url` for network boot files (checked by `pxe::check_base_url`).
    pub base_url: String,
    /// Reuse and store results of earlier builds under `<cache>/artifacts` (`--no-artifact-cache`
    /// turns it off; see `crate::cache`).
    pub artifact_cache: bool,
}

/// One input, as recorded in the manifest.
#[derive(Debug, Serialize, Clone)]
pub struct InputRecord {
    pub name: String,
    pub version: String,
    pub source: String,
    pub sha256: String,
    pub architecture: String,
}

#[derive(Debug, Serialize)]
pub struct OutputRecord {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub edgeimg_version: String,
    pub board: String,
    pub role: String,
    pub arch: String,
    pub plan_hash: String,
    pub image_hash: String,
    pub suite: String,
    pub mirror: String,
    pub kernel_version: String,
    pub k0s_version: String,
    pub source_date_epoch: u64,
    pub hostname: String,
    /// Whether a join token was put on the boot partition (never the token itself).
    pub token_included: bool,
    pub token_required: bool,
    pub inputs: Vec<InputRecord>,
    pub partitions: PartitionPlan,
    pub kernel_cmdline: String,
    pub root_size: u64,
    pub initramfs_size: u64,
    pub outputs: Vec<OutputRecord>,
    /// The dm-verity hash tree of the root partition (null with `--no-verity`).
    pub verity: Option<crate::fs::verity::VerityInfo>,
}

/// What `build` produced, for the summary.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub image: PathBuf,
    pub outputs: Vec<PathBuf>,
    pub manifest: PathBuf,
    pub downloads: usize,
    pub seconds: f64,
    pub token_included: bool,
    pub token_required: bool,
    pub hostname: String,
    pub image_size: u64,
    /// Seconds spent in each step, in order (for `scripts/bench`).
    pub timings: Vec<(String, f64)>,
}

/// Measures consecutive steps of a build.
struct Laps {
    last: Instant,
    laps: Vec<(String, f64)>,
}

impl Laps {
    fn new() -> Self {
        Laps {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        self.laps
            .push((step.to_string(), (now - self.last).as_secs_f64()));
        self.last = now;
    }
}

pub fn build(plan: &Plan, opts: &BuildOptions, rep: &dyn Reporter) -> Result<BuildReport> {
    let started = Instant::now();
    let mut laps = Laps::new();
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let stem = plan.stem();

    // 1. Inputs.
    let arch = plan.board.arch.debian();
    let mut components: Vec<&str> = plan.base.components.iter().map(String::as_str).collect();
    components.extend(plan.board.components.iter().map(String::as_str));
    components.dedup();
    rep.step(&format!(
        "Debian {} ({arch}) from {}",
        plan.suite, plan.mirror
    ));
    // The index of the whole suite is large; only the closure outlives this call.
    let packages = crate::cache::closure::resolve_packages(
        &opts.cache,
        plan,
        &components,
        opts.artifact_cache,
        rep,
    )?;
    crate::util::memstat::release_free_memory();
    rep.step(&format!("{} packages in the closure", packages.len()));
    let debs = fetch_debs(&opts.cache, &plan.mirror, &packages, rep)?;
    let k0s = fetch_k0s(&opts.cache, &k0s_spec(plan), rep)?;
    laps.lap("fetch");

    // 2. Trees, or the cached root artifact of an earlier build with the same inputs.
    let artifact_key = if opts.artifact_cache && opts.format.image() && !opts.format.pxe() {
        Some(crate::cache::root::key(plan, false, &debs, &k0s)?)
    } else {
        None
    };
    let cached = match &artifact_key {
        Some(key) => match crate::cache::root::load(opts.cache.root(), key)? {
            crate::cache::root::Lookup::Hit(hit) => Some(*hit),
            crate::cache::root::Lookup::Miss => None,
            crate::cache::root::Lookup::Damaged(why) => {
                rep.warn(&format!("cached root artifact {key}: {why}; rebuilding it"));
                None
            }
        },
        None => None,
    };
    let (unpacked, root, initrd, cached_root) = match cached {
        Some(hit) => {
            rep.step(&format!(
                "root, initramfs and kernel files reused from the artifact cache ({} MiB squashfs)",
                hit.root.size / MIB
            ));
            (hit.unpacked, None, hit.initrd, Some(hit.root))
        }
        None => {
            let unpacked = rootfs::unpack(plan, &debs, &opts.out_dir, rep)?;
            let root = rootfs::build_root(plan, &unpacked, &k0s, rep)?;
            let initramfs_plan = crate::boot::pxe::initramfs_plan(plan, opts.format);
            let initramfs_tree = rootfs::build_initramfs(&initramfs_plan, &unpacked, &root)?;
            let initrd =
                write_initramfs(&initramfs_tree, Compression::Zstd, plan.source_date_epoch)?;
            rep.step(&format!(
                "initramfs: {} entries, {} KiB",
                initramfs_tree.len(),
                initrd.len() / 1024
            ));
            (unpacked, Some(root), initrd, None)
        }
    };

    laps.lap("trees");
    if !opts.format.image() {
        let root = root.context("no root tree without the artifact cache")?;
        return crate::boot::pxe::build_pxe_only(
            plan, opts, &unpacked, &root, &initrd, &debs, &k0s, started, rep,
        );
    }

    // 3. Layout and encoding.
    let layout = partition_plan(plan)?;
    let image_path = opts.out_dir.join(format!("{stem}.img"));
    let mut image = ImageWriter::create(&opts.out_dir, &format!("{stem}.img"), layout.disk_size)?;
    crate::disk::write_table(&layout, image.file_mut())?;
    laps.lap("layout");
    let root_size = match (&cached_root, &root) {
        (Some(c), _) => {
            check_root_fits(plan, &layout, c.size)?;
            c.write_root(image.file(), layout.offset(PartRole::Root))?;
            c.size
        }
        (None, Some(root)) => {
            let size = encode_root(plan, &layout, root, &mut image, rep)?;
            if let Some(key) = &artifact_key {
                let region = crate::cache::root::RootInImage {
                    image: image.file(),
                    offset: layout.offset(PartRole::Root),
                    size,
                };
                if let Err(e) = crate::cache::root::store(
                    opts.cache.root(),
                    key,
                    plan,
                    region,
                    &initrd,
                    &unpacked,
                ) {
                    rep.warn(&format!("not caching the root artifact: {e:#}"));
                }
            }
            size
        }
        (None, None) => bail!("neither a root tree nor a cached root squashfs"),
    };
    laps.lap("squashfs");
    let verity = if plan.verity {
        Some(crate::build::verity::add_tree(
            plan, &layout, root_size, &mut image,
        )?)
    } else {
        None
    };
    let mut cmdline = kernel_cmdline(plan, &layout);
    if let Some(v) = &verity {
        cmdline = crate::build::verity::cmdline(v, &cmdline);
    }
    let mut boot = rootfs::build_boot(plan, &unpacked, &initrd, &cmdline)?;
    // The join token, when given at build time, goes onto the boot partition only: never
    // into the manifest or the plan.
    let token_included = plan.node.token()?.is_some();
    add_node_files(&mut boot, &plan.node)?;
    boot.set_all_mtimes(plan.source_date_epoch);

    encode_boot(plan, &layout, &boot, &mut image)?;
    image.commit(&image_path)?;
    laps.lap("fat");
    // The trees are encoded: their memory goes back before xz takes its own.
    drop((root, boot));
    crate::util::memstat::release_free_memory();

    // 4. Publish. The image's digest (mostly holes) is computed beside the xz and bmap work.
    let mut image_digest = Some(crate::disk::sparse_digest::spawn_sha256_sparse(&image_path));
    let mut outputs = vec![image_path.clone()];
    if opts.xz && opts.format.xz(false) {
        let xz_path = opts.out_dir.join(format!("{stem}.img.xz"));
        let blocks = opts
            .artifact_cache
            .then(|| crate::cache::dir(opts.cache.root()).join("xz"));
        crate::disk::xz::compress_xz_cached(
            &image_path,
            &xz_path,
            threads(),
            blocks.as_deref(),
            rep,
        )?;
        outputs.push(xz_path);
        laps.lap("xz");
    }
    let bmap_path = opts.out_dir.join(format!("{stem}.bmap"));
    crate::disk::bmap::write_bmap(&image_path, &bmap_path)?;
    outputs.push(bmap_path);

    let mut output_records = Vec::new();
    for o in &outputs {
        let sha256 = match image_digest.take_if(|_| o == &image_path) {
            Some(h) => crate::disk::sparse_digest::join(h)?,
            None => crate::disk::checksums::sha256_file(o)?,
        };
        output_records.push(OutputRecord {
            file: file_name(o),
            size: std::fs::metadata(o)?.len(),
            sha256,
        });
    }
    let inputs = input_records(&debs, &k0s, plan);
    let sbom_path = write_sbom(plan, &stem, &inputs, &output_records, &opts.out_dir)?;
    output_records.push(OutputRecord {
        file: file_name(&sbom_path),
        size: std::fs::metadata(&sbom_path)?.len(),
        sha256: crate::disk::checksums::sha256_file(&sbom_path)?,
    });
    outputs.push(sbom_path);
    let imager = crate::boot::rpi::write_imager(plan, &opts.out_dir, &stem, &output_records)?;
    let hostname = plan.node.hostname.clone().unwrap_or_default();
    let manifest = Manifest {
        edgeimg_version: plan.edgeimg_version.clone(),
        board: plan.board.name.clone(),
        role: plan.role.to_string(),
        arch: arch.to_string(),
        plan_hash: plan.hash(),
        image_hash: plan.image_hash(),
        suite: plan.suite.clone(),
        mirror: plan.mirror.clone(),
        kernel_version: unpacked.kver.clone(),
        k0s_version: plan.k0s_version.clone(),
        source_date_epoch: plan.source_date_epoch,
        hostname: hostname.clone(),
        token_included,
        token_required: plan.role.needs_token(),
        inputs,
        partitions: layout.clone(),
        kernel_cmdline: cmdline,
        root_size,
        initramfs_size: initrd.len() as u64,
        outputs: output_records,
        verity,
    };
    let manifest_path = opts.out_dir.join("manifest.json");
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    outputs.push(manifest_path.clone());
    outputs.extend(imager.iter().cloned());

    // Every output was hashed once for the manifest; SHA256SUMS reuses those digests.
    let mut digests: Vec<(String, String)> = manifest
        .outputs
        .iter()
        .map(|o| (o.file.clone(), o.sha256.clone()))
        .collect();
    for extra in std::iter::once(&manifest_path).chain(&imager) {
        digests.push((
            file_name(extra),
            crate::disk::checksums::sha256_file(extra)?,
        ));
    }
    crate::disk::checksums::write_sha256sums_of(&opts.out_dir, &digests)?;
    outputs.push(opts.out_dir.join("SHA256SUMS"));

    if opts.format.pxe() {
        let dir = opts.format.pxe_dir(&opts.out_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let root_file = dir.join("rootfs.squashfs");
        crate::boot::pxe::extract_part(
            &image_path,
            layout.offset(PartRole::Root),
            root_size,
            &root_file,
        )?;
        let inputs =
            crate::boot::pxe::pxe_inputs(plan, opts, &unpacked, &initrd, &root_file, &debs, &k0s)?;
        outputs.extend(crate::boot::pxe::write(&inputs, &dir, rep)?);
    }

    Ok(BuildReport {
        image_size: std::fs::metadata(&image_path)?.len(),
        image: image_path,
        outputs,
        manifest: manifest_path,
        downloads: opts.cache.downloads_made(),
        seconds: started.elapsed().as_secs_f64(),
        token_included,
        token_required: plan.role.needs_token(),
        hostname,
        timings: {
            laps.lap("publish");
            laps.laps
        },
    })
}

fn k0s_spec(plan: &Plan) -> K0sSpec {
    let arch = match plan.board.arch {
        Arch::Amd64 => K0sArch::Amd64,
        Arch::Arm64 => K0sArch::Arm64,
        Arch::Armhf => K0sArch::Arm,
    };
    let source = match &plan.k0s {
        K0sInput::Url { url, sha256 } => K0sSource::Url {
            template: url.clone(),
            sha256: sha256.clone(),
        },
        K0sInput::LocalFile { path } => K0sSource::LocalFile(path.clone()),
    };
    K0sSpec {
        version: plan.k0s_version.clone(),
        arch,
        source,
    }
}

/// The partition layout of the board, identifiers seeded by the image hash.
pub fn partition_plan(plan: &Plan) -> Result<PartitionPlan> {
    let sizes = &plan.board.partitions;
    let (table, boot_type, root_type, data_type) = match plan.board.partition_table {
        PartitionTable::Gpt => (
            TableKind::Gpt,
            PartType::Esp,
            match plan.board.arch {
                Arch::Amd64 => PartType::LinuxRootX86_64,
                Arch::Arm64 => PartType::LinuxRootArm64,
                Arch::Armhf => PartType::LinuxRootArm,
            },
            PartType::LinuxData,
        ),
        PartitionTable::Mbr => (
            TableKind::Mbr,
            PartType::Fat32Lba,
            PartType::Linux,
            PartType::Linux,
        ),
    };
    let specs = [
        PartitionSpec {
            role: PartRole::Boot,
            name: "boot".into(),
            ptype: boot_type,
            size: sizes.boot_mib * MIB,
            bootable: true,
        },
        PartitionSpec {
            role: PartRole::Root,
            name: "root".into(),
            ptype: root_type,
            size: sizes.root_mib * MIB,
            bootable: false,
        },
        PartitionSpec {
            role: PartRole::Data,
            name: "data".into(),
            ptype: data_type,
            size: sizes.data_mib * MIB,
            bootable: false,
        },
    ];
    Ok(PartitionPlan::new(
        table,
        &specs,
        plan.image_hash().as_bytes(),
    )?)
}

/// The kernel command line: where the initramfs finds its partitions, then the board's
/// console and arguments.
pub fn kernel_cmdline(plan: &Plan, layout: &PartitionPlan) -> String {
    let mut args = vec![
        format!("edgeimg.boot=PARTUUID={}", layout.partuuid(PartRole::Boot)),
        format!("edgeimg.root=PARTUUID={}", layout.partuuid(PartRole::Root)),
        format!("edgeimg.data=PARTUUID={}", layout.partuuid(PartRole::Data)),
    ];
    args.extend(plan.board.cmdline.iter().cloned());
    args.extend(plan.node.boot.kernel_args.iter().cloned());
    args.join(" ")
}

fn encode_root(
    plan: &Plan,
    layout: &PartitionPlan,
    root: &Tree,
    image: &mut ImageWriter,
    rep: &dyn Reporter,
) -> Result<u64> {
    let opts = squashfs_options(plan)?;
    rep.step(&format!(
        "root: squashfs of {} entries, {} MiB of content",
        root.len(),
        root.content_size() / MIB
    ));
    let offset = layout.offset(PartRole::Root);
    let mut w = crate::fs::squashfs::OffsetWriter::new(image.file_mut(), offset)?;
    let size = write_squashfs(root, &opts, &mut w)?;
    // An oversized root spilled into the temporary image only, which is dropped on error.
    check_root_fits(plan, layout, size)?;
    Ok(size)
}

fn check_root_fits(plan: &Plan, layout: &PartitionPlan, size: u64) -> Result<()> {
    layout.check_fits(PartRole::Root, size).map_err(|e| {
        anyhow::anyhow!(e.advice(
            &plan.board.name,
            &plan.board.file.display().to_string(),
            "[partitions] root_mib"
        ))
    })?;
    Ok(())
}

pub(crate) fn squashfs_options(plan: &Plan) -> Result<SquashfsOptions> {
    let spec = &plan.base.squashfs;
    let compressor = match spec.compressor.as_str() {
        "zstd" => SquashCompressor::Zstd {
            level: spec.level.unwrap_or(15),
        },
        "xz" => SquashCompressor::Xz,
        "gzip" => SquashCompressor::Gzip,
        other => bail!(
            "profiles/base.toml: [squashfs] compressor = \"{other}\" is not one of zstd, xz, gzip"
        ),
    };
    Ok(SquashfsOptions {
        compressor,
        block_size: spec.block_size,
        mtime: plan.source_date_epoch as u32,
    })
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

pub(crate) fn input_records(
    debs: &[crate::source::debian::FetchedDeb],
    k0s: &K0sBinary,
    plan: &Plan,
) -> Vec<InputRecord> {
    let mut v: Vec<InputRecord> = debs
        .iter()
        .map(|d| InputRecord {
            name: d.package.name.clone(),
            version: d.package.version.clone(),
            source: format!("{}/{}", plan.mirror, d.package.filename),
            sha256: d.package.sha256.clone(),
            architecture: d.package.architecture.clone(),
        })
        .collect();
    v.push(InputRecord {
        name: "k0s".into(),
        version: k0s.version.clone(),
        source: k0s.url.clone(),
        sha256: k0s.sha256.clone(),
        architecture: plan.board.arch.k0s().into(),
    });
    v
}

/// `sbom.spdx.json` beside the image (see `crate::manifest::sbom`).
fn write_sbom(
    plan: &Plan,
    stem: &str,
    inputs: &[InputRecord],
    outputs: &[OutputRecord],
    out_dir: &Path,
) -> Result<PathBuf> {
    let image_file = format!("{stem}.img");
    let image = outputs
        .iter()
        .find(|o| o.file == image_file)
        .context("the image is missing from the outputs")?;
    let (k0s, debs) = inputs.split_last().context("no inputs recorded")?;
    let text = crate::manifest::sbom::render(&crate::manifest::sbom::SbomInput {
        stem,
        image_file: &image_file,
        image_sha256: &image.sha256,
        plan_hash: &plan.hash(),
        edgeimg_version: &plan.edgeimg_version,
        source_date_epoch: plan.source_date_epoch,
        suite: &plan.suite,
        debs,
        k0s,
    });
    let path = out_dir.join("sbom.spdx.json");
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}
