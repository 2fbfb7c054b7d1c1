//! `edgeimg build`: the numbered sequence from a plan to published outputs.
//!
//! 1. [`fetch`]: fetch and verify every input (the Debian chain, k0s).
//! 2. [`assemble`]: unpack packages and assemble the root and initramfs trees, or take them
//!    from the artifact cache.
//! 3. [`image::write`]: lay out partitions, encode root (with its dm-verity tree) and boot
//!    straight into a sparse image, then write `.img`, `.img.xz`, `.bmap`, the SBOM, the
//!    Imager list, `manifest.json` and `SHA256SUMS` beside it.
//! 4. [`netboot::write`]: the network boot folder, when the format asks for one.
//! 5. [`publish`]: steps 3 and 4 wrote into a staging folder; each set is put in place with
//!    one rename, so a reader sees the previous set or the new one. The build starts by
//!    removing what killed builds left (see `publish` for the layout and the guarantee).
//!
//! [`OutputFormat`] is the one place that decides which of steps 3 and 4 run.

pub mod image;
pub mod netboot;
pub mod publish;
pub mod repro;
pub mod verity;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::fs::cpio::{write_initramfs, Compression};
use crate::fs::squashfs::{SquashCompressor, SquashfsOptions};
use crate::manifest::InputRecord;
use crate::plan::{K0sInput, Plan};
use crate::profile::Arch;
use crate::progress::Reporter;
use crate::rootfs::{self, Unpacked};
use crate::source::airgap::{fetch_airgap, AirgapBundle};
use crate::source::cache::Cache;
use crate::source::debian::{fetch_debs, FetchedDeb};
use crate::source::k0s::{fetch_k0s, K0sArch, K0sBinary, K0sSource, K0sSpec};
use crate::tree::Tree;

const MIB: u64 = 1024 * 1024;

/// What `edgeimg build` writes (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The raw disk image (.img) with its .bmap.
    Raw,
    /// The raw image and its .img.xz (the default).
    #[default]
    Xz,
    /// Network boot files only (no disk image).
    Pxe,
    /// Raw image, .img.xz, and the network boot files in `<out>/pxe/`.
    All,
}

impl OutputFormat {
    /// Whether a disk image is written.
    pub fn image(self) -> bool {
        !matches!(self, OutputFormat::Pxe)
    }

    /// Whether the image is also compressed to .img.xz (`--no-xz` turns it off).
    pub fn xz(self, no_xz: bool) -> bool {
        matches!(self, OutputFormat::Xz | OutputFormat::All) && !no_xz
    }

    /// Whether network boot files are written.
    pub fn pxe(self) -> bool {
        matches!(self, OutputFormat::Pxe | OutputFormat::All)
    }

    /// Where the network boot files go: the output folder itself, or `pxe/` in it beside an
    /// image (so the two `SHA256SUMS` and `manifest.json` do not collide).
    pub fn pxe_dir(self, out: &std::path::Path) -> PathBuf {
        match self {
            OutputFormat::All => out.join("pxe"),
            _ => out.to_path_buf(),
        }
    }
}

/// Options that do not change what is built, only where and how.
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub cache: Cache,
    pub xz: bool,
    /// Which outputs (`--format`); `xz` above still turns the .img.xz off.
    pub format: OutputFormat,
    /// `--base-url` for network boot files (checked by `boot::pxe::check_base_url`).
    pub base_url: String,
    /// `--imager-url-base` (checked by `manifest::imager::check_url_base`): where the Pi
    /// images will be served from; without it no Imager repository is written.
    pub imager_url_base: Option<String>,
    /// Reuse and store results of earlier builds under `<cache>/artifacts` (`--no-artifact-cache`
    /// turns it off; see `crate::cache`).
    pub artifact_cache: bool,
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
pub struct Laps {
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

    pub fn lap(&mut self, step: &str) {
        let now = Instant::now();
        self.laps
            .push((step.to_string(), (now - self.last).as_secs_f64()));
        self.last = now;
    }
}

/// The verified inputs of step 1.
pub struct Inputs {
    pub debs: Vec<FetchedDeb>,
    pub k0s: K0sBinary,
    /// `--airgap-bundle`, verified.
    pub airgap: Option<AirgapBundle>,
}

/// The trees of step 2: the unpacked packages, the root tree (absent when the encoded root
/// came from the artifact cache) and the encoded initramfs.
pub struct Trees {
    pub unpacked: Unpacked,
    pub root: Option<Tree>,
    pub initrd: Vec<u8>,
    pub cached_root: Option<crate::cache::root::CachedRoot>,
    /// The artifact cache key the root is stored under after encoding (None: not cached).
    pub artifact_key: Option<String>,
}

pub fn build(plan: &Plan, opts: &BuildOptions, rep: &dyn Reporter) -> Result<BuildReport> {
    let started = Instant::now();
    let mut laps = Laps::new();
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let pxe_folder = opts.format.pxe_dir(&opts.out_dir);
    let mut folders = vec![opts.out_dir.clone()];
    if opts.format.pxe() && pxe_folder != opts.out_dir {
        folders.push(pxe_folder.clone());
    }
    for f in &folders {
        let cleaned = publish::clean_stale(f)?;
        if !cleaned.paths.is_empty() {
            rep.step(&format!(
                "removed {} file(s) and folder(s) that a stopped build left in {}",
                cleaned.paths.len(),
                f.display()
            ));
        }
    }
    // Everything below is written in here; dropped (on an error too), it is removed.
    let mut staging = publish::Staging::begin(&opts.out_dir)?;

    // 1. Inputs.
    let inputs = fetch(plan, opts, rep)?;
    laps.lap("fetch");

    // 2. Trees.
    let mut trees = assemble(plan, opts, staging.path(), &inputs, rep)?;
    laps.lap("trees");

    // 3. The disk image and its companions; 4. the network boot folder.
    let image_set = staging.new_set()?;
    let pxe_set = staging.new_set()?;
    let image = if opts.format.image() {
        Some(image::write(
            plan, opts, &image_set, &inputs, &mut trees, &mut laps, rep,
        )?)
    } else {
        None
    };
    let netboot = if opts.format.pxe() {
        let root = match &image {
            Some(img) => netboot::RootSquashfs::InImage {
                image: &img.path,
                offset: img.root_offset,
                size: img.root_size,
            },
            None => netboot::RootSquashfs::Tree(
                trees
                    .root
                    .as_ref()
                    .context("no root tree without the artifact cache")?,
            ),
        };
        Some(netboot::write(
            plan, opts, &pxe_set, &inputs, &trees, root, rep,
        )?)
    } else {
        None
    };

    // 5. Publish: the image set, then the network boot set (each folder whole at any time).
    let image = match image {
        Some(img) => Some(image::WrittenImage {
            path: published(&img.path, &image_set, &opts.out_dir),
            manifest: published(&img.manifest, &image_set, &opts.out_dir),
            outputs: staging.publish(
                &image_set,
                &opts.out_dir,
                &names_in(&img.outputs, &image_set)?,
            )?,
            ..img
        }),
        None => None,
    };
    let netboot = match netboot {
        Some(n) => Some(netboot::WrittenNetboot {
            root: published(&n.root, &pxe_set, &pxe_folder),
            manifest: published(&n.manifest, &pxe_set, &pxe_folder),
            outputs: staging.publish(&pxe_set, &pxe_folder, &names_in(&n.outputs, &pxe_set)?)?,
            ..n
        }),
        None => None,
    };
    drop(trees);
    drop(staging);

    let token_required = plan.role.needs_token();
    let hostname = plan.node.hostname.clone().unwrap_or_default();
    let downloads = opts.cache.downloads_made();
    let report = match (image, netboot) {
        (Some(img), pxe) => {
            let mut outputs = img.outputs;
            outputs.extend(pxe.map(|p| p.outputs).unwrap_or_default());
            laps.lap("publish");
            BuildReport {
                image_size: std::fs::metadata(&img.path)?.len(),
                image: img.path,
                outputs,
                manifest: img.manifest,
                downloads,
                seconds: started.elapsed().as_secs_f64(),
                token_included: img.token_included,
                token_required,
                hostname,
                timings: laps.laps,
            }
        }
        (None, Some(pxe)) => BuildReport {
            image_size: std::fs::metadata(&pxe.root)?.len(),
            image: pxe.root,
            manifest: pxe.manifest,
            outputs: pxe.outputs,
            downloads,
            seconds: started.elapsed().as_secs_f64(),
            token_included: pxe.token_included,
            token_required,
            hostname,
            timings: vec![("pxe".to_string(), started.elapsed().as_secs_f64())],
        },
        (None, None) => unreachable!("every format writes an image or netboot files"),
    };
    Ok(report)
}

/// Where `staged` (a file in the staging folder `set`) is once published in `folder`.
fn published(staged: &std::path::Path, set: &std::path::Path, folder: &std::path::Path) -> PathBuf {
    folder.join(staged.strip_prefix(set).unwrap_or(staged))
}

/// The names of `files` (in the staging folder `set`) relative to it.
fn names_in(files: &[PathBuf], set: &std::path::Path) -> Result<Vec<String>> {
    files
        .iter()
        .map(|f| {
            f.strip_prefix(set)
                .map(|r| r.to_string_lossy().into_owned())
                .with_context(|| format!("{} is not in {}", f.display(), set.display()))
        })
        .collect()
}

/// Step 1: the airgap bundle (if any), the Debian package closure and the k0s binary, each
/// verified.
fn fetch(plan: &Plan, opts: &BuildOptions, rep: &dyn Reporter) -> Result<Inputs> {
    // The airgap bundle first: a wrong digest fails before any package is fetched.
    let airgap = match &plan.airgap {
        Some(a) => Some(fetch_airgap(&opts.cache, a, rep)?),
        None => None,
    };
    let arch = plan.board.arch.debian();
    let mut components: Vec<&str> = plan.base.components.iter().map(String::as_str).collect();
    components.extend(plan.board.components.iter().map(String::as_str));
    components.dedup();
    rep.step(&format!(
        "Debian {} ({arch}) from {}",
        plan.suites().join(" + "),
        plan.mirror
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
    Ok(Inputs { debs, k0s, airgap })
}

/// Step 2: the root and initramfs trees, or the cached root artifact of an earlier build with
/// the same inputs.
fn assemble(
    plan: &Plan,
    opts: &BuildOptions,
    scratch: &std::path::Path,
    inputs: &Inputs,
    rep: &dyn Reporter,
) -> Result<Trees> {
    // Network boot adds modules to the initramfs and is not cached.
    let artifact_key = if opts.artifact_cache && opts.format.image() && !opts.format.pxe() {
        Some(crate::cache::root::key(
            plan,
            false,
            &inputs.debs,
            &inputs.k0s,
            inputs.airgap.as_ref().map(|a| a.sha256.as_str()),
        )?)
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
    if let Some(hit) = cached {
        rep.step(&format!(
            "root, initramfs and kernel files reused from the artifact cache ({} MiB squashfs)",
            hit.root.size / MIB
        ));
        return Ok(Trees {
            unpacked: hit.unpacked,
            root: None,
            initrd: hit.initrd,
            cached_root: Some(hit.root),
            artifact_key,
        });
    }
    let unpacked = rootfs::unpack(plan, &inputs.debs, scratch, rep)?;
    let root = rootfs::build_root(plan, &unpacked, &inputs.k0s, inputs.airgap.as_ref(), rep)?;
    let extra_modules = if opts.format.pxe() {
        crate::boot::pxe::initramfs_modules(plan)
    } else {
        Vec::new()
    };
    let initramfs_tree = rootfs::build_initramfs(plan, &extra_modules, &unpacked, &root)?;
    let initrd = write_initramfs(&initramfs_tree, Compression::Zstd, plan.source_date_epoch)?;
    rep.step(&format!(
        "initramfs: {} entries, {} KiB",
        initramfs_tree.len(),
        initrd.len() / 1024
    ));
    Ok(Trees {
        unpacked,
        root: Some(root),
        initrd,
        cached_root: None,
        artifact_key,
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

/// The squashfs settings of the OS profile.
pub(crate) fn squashfs_options(plan: &Plan) -> Result<SquashfsOptions> {
    let spec = &plan.base.squashfs;
    let compressor = match spec.compressor.as_str() {
        "zstd" => SquashCompressor::Zstd {
            level: spec.level.unwrap_or(15),
        },
        "xz" => SquashCompressor::Xz,
        "gzip" => SquashCompressor::Gzip,
        other => anyhow::bail!(
            "profiles/base.toml: [squashfs] compressor = \"{other}\" is not one of zstd, xz, gzip"
        ),
    };
    Ok(SquashfsOptions {
        compressor,
        block_size: spec.block_size,
        mtime: plan.source_date_epoch as u32,
    })
}

/// Every input of the build as the manifest and the SBOM record it: the Debian packages, then
/// k0s, then the airgap bundle if there is one.
pub(crate) fn input_records(inputs: &Inputs, plan: &Plan) -> Vec<InputRecord> {
    let mut v: Vec<InputRecord> = inputs
        .debs
        .iter()
        .map(|d| InputRecord {
            name: d.package.name.clone(),
            version: d.package.version.clone(),
            source: format!("{}/{}", plan.mirror, d.package.filename),
            sha256: d.package.sha256.clone(),
            architecture: d.package.architecture.clone(),
            suite: Some(d.package.suite.clone()).filter(|s| !s.is_empty()),
        })
        .collect();
    v.push(InputRecord {
        name: "k0s".into(),
        version: inputs.k0s.version.clone(),
        source: inputs.k0s.url.clone(),
        sha256: inputs.k0s.sha256.clone(),
        architecture: plan.board.arch.k0s().into(),
        suite: None,
    });
    if let Some(a) = &inputs.airgap {
        v.push(InputRecord {
            name: AIRGAP_INPUT.into(),
            version: inputs.k0s.version.clone(),
            source: a.source.clone(),
            sha256: a.sha256.clone(),
            architecture: plan.board.arch.k0s().into(),
            suite: None,
        });
    }
    v
}

/// The name of the airgap bundle among the inputs (after k0s, the last one).
pub const AIRGAP_INPUT: &str = "k0s-airgap-bundle";

/// Writes `sbom.spdx.json` into `dir`, describing `file` (the image, or the network boot
/// root) with its digest.
pub(crate) fn write_sbom(
    plan: &Plan,
    inputs: &Inputs,
    file: &str,
    sha256: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let mut records = input_records(inputs, plan);
    // input_records lists the debs, then k0s, then the airgap bundle when there is one.
    let airgap = match records.last() {
        Some(r) if r.name == AIRGAP_INPUT => records.pop(),
        _ => None,
    };
    let k0s = records.pop().context("no inputs recorded")?;
    let debs: Vec<crate::manifest::sbom::SbomDeb> = records
        .into_iter()
        .zip(&inputs.debs)
        .map(|(record, d)| crate::manifest::sbom::SbomDeb {
            record,
            source: d.package.source.clone(),
            source_version: d.package.source_version.clone(),
        })
        .collect();
    let text = crate::manifest::sbom::render(&crate::manifest::sbom::SbomInput {
        stem: &plan.stem(),
        image_file: file,
        image_sha256: sha256,
        plan_hash: &plan.hash(),
        edgeimg_version: &plan.edgeimg_version,
        source_date_epoch: plan.source_date_epoch,
        suite: &plan.suite,
        debs: &debs,
        k0s: &k0s,
        airgap: airgap.as_ref(),
    });
    let path = dir.join(crate::manifest::sbom::SBOM_FILE);
    crate::util::atomic::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn formats() {
        assert!(OutputFormat::Xz.image() && OutputFormat::Xz.xz(false));
        assert!(!OutputFormat::Xz.xz(true));
        assert!(!OutputFormat::Raw.xz(false) && !OutputFormat::Raw.pxe());
        assert!(!OutputFormat::Pxe.image() && OutputFormat::Pxe.pxe());
        assert!(OutputFormat::All.image() && OutputFormat::All.pxe());
        assert_eq!(
            OutputFormat::All.pxe_dir(Path::new("o")),
            Path::new("o/pxe")
        );
        assert_eq!(OutputFormat::Pxe.pxe_dir(Path::new("o")), Path::new("o"));
    }
}
