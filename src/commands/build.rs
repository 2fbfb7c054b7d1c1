//! `edgeimg build`: the node config from `--node` and flags, the plan, the build, and the
//! summary (or the plan itself with `--dry-run`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::node_args::read_ssh_keys;
use super::Out;
use crate::build::{build as run_build, BuildOptions, BuildReport, OutputFormat};
use crate::cli::{BuildArgs, Format};
use crate::node::{NodeConfig, NodeOverrides};
use crate::plan::{Plan, Request};
use crate::profile::DataDir;
use crate::progress::Reporter;
use crate::source::cache::Cache;

pub(crate) fn format(f: Format) -> OutputFormat {
    match f {
        Format::Raw => OutputFormat::Raw,
        Format::Xz => OutputFormat::Xz,
        Format::Pxe => OutputFormat::Pxe,
        Format::All => OutputFormat::All,
    }
}

pub(crate) fn build(out: Out, data: &DataDir, args: &BuildArgs, rep: &dyn Reporter) -> Result<()> {
    let mut node = match &args.node {
        // The same reader as configure and flash: TOML or #cloud-config.
        Some(p) => NodeConfig::from_file(p)?,
        None => NodeConfig::default(),
    };
    let overrides = NodeOverrides {
        hostname: args.hostname.clone(),
        role: None,
        token_file: args.token_file.clone(),
        ssh_keys: read_ssh_keys(&args.ssh_key)?,
        ..Default::default()
    };
    node.apply(&overrides);
    for w in node.check()? {
        rep.warn(&w);
    }
    // EDGEIMG_APT_ROOT points at another root's /etc/apt (containers, tests).
    let apt_root = std::env::var_os("EDGEIMG_APT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let host_mirror = crate::source::debian::apt_mirror(&apt_root)?;
    let req = Request {
        board: args.board.clone(),
        role: args.role.as_deref().map(str::parse).transpose()?,
        node: Some(node),
        mirror: args.mirror.clone(),
        suite: args.suite.clone(),
        kernel_suite: args.kernel_suite.clone(),
        k0s_version: args.k0s_version.clone(),
        k0s_url: args.k0s_url.clone(),
        k0s_sha256: args.k0s_sha256.clone(),
        k0s_binary: args.k0s_binary.clone(),
        airgap_bundle: args.airgap_bundle.clone(),
        airgap_sha256: args.airgap_sha256.clone(),
        source_date_epoch: None,
        image_version: args.image_version.clone(),
        verity: !args.no_verity,
        secure_boot: match &args.secure_boot {
            Some(dir) => Some(secure_boot(dir, args.secure_boot_enroll)?),
            None => None,
        },
        update_key: match &args.signing_key {
            Some(f) => Some(crate::bundle::keys::update_key(f)?),
            None => None,
        },
    };
    let plan = Plan::resolve(data, req, host_mirror)?;
    if plan.secure_boot.is_none() && crate::boot::signs_with_secure_boot(&plan.board) && !out.quiet
    {
        eprintln!(
            "warning: no --secure-boot DIR: the kernel image is not signed, so Secure Boot will \
             not protect it (its command line, root hash included, can be changed by anyone \
             holding the disk); make keys with `edgeimg keys generate DIR`"
        );
    }
    if args.dry_run {
        // The plan carries the node config as given: its secrets are shown as present only.
        let mut shown = serde_json::to_value(&plan)?;
        for (table, key) in crate::node::secrets::SECRET_TOML_KEYS {
            if let Some(v) = shown.pointer_mut(&format!("/node/{table}/{key}")) {
                *v = crate::node::secrets::PRESENT.into();
            }
        }
        return super::print_json(&shown);
    }
    let cache_dir = args.cache_dir.clone().unwrap_or_else(Cache::default_dir);
    let mut cache = Cache::new(cache_dir.clone(), args.offline)?;
    if args.refresh {
        cache.set_refresh(true);
    }
    let fmt = format(args.format);
    let base_url = match args.base_url.as_deref() {
        Some(u) => u,
        None => {
            if fmt.pxe() && !out.quiet {
                eprintln!(
                    "warning: no --base-url: boot.ipxe names {}, the address QEMU tests forward; \
                     give the URL your nodes will fetch the files from",
                    crate::boot::pxe::DEFAULT_BASE_URL
                );
            }
            crate::boot::pxe::DEFAULT_BASE_URL
        }
    };
    let opts = BuildOptions {
        out_dir: args.out.clone(),
        cache,
        xz: !args.no_xz,
        artifact_cache: !args.no_artifact_cache,
        format: fmt,
        base_url: crate::boot::pxe::check_base_url(base_url)?,
        imager_url_base: args
            .imager_url_base
            .as_deref()
            .map(crate::manifest::imager::check_url_base)
            .transpose()?,
    };
    if opts.imager_url_base.is_none()
        && !out.quiet
        && crate::boot::method(&plan.board).imager_devices().is_some()
        && fmt.image()
    {
        eprintln!(
            "note: no --imager-url-base: no Raspberry Pi Imager repository (os_list.json) is \
             written; give the URL the images will be served from to get one"
        );
    }
    let report = run_build(&plan, &opts, rep)?;
    if args.check_reproducible {
        check_reproducible(out, &report, &args.out, &cache_dir, rep)?;
    }
    if out.json {
        return super::print_json(&report);
    }
    if !out.quiet {
        summary(&report, fmt);
    }
    Ok(())
}

/// `--secure-boot DIR`: the keys are read now, so that a bad folder fails before any work.
fn secure_boot(dir: &Path, enroll: bool) -> Result<crate::plan::SecureBoot> {
    let keys = crate::efi::keys::load(dir)?;
    let (db_subject, db_sha256) = crate::efi::keys::describe_cert(&keys.db.cert_der)?;
    Ok(crate::plan::SecureBoot {
        dir: dir.to_path_buf(),
        db_subject,
        db_sha256,
        enroll,
    })
}

fn summary(report: &BuildReport, fmt: OutputFormat) {
    println!(
        "built {} ({} MiB) in {:.1} s, {} download(s)",
        report.image.display(),
        report.image_size / (1024 * 1024),
        report.seconds,
        report.downloads
    );
    for o in &report.outputs {
        println!("  {}", o.display());
    }
    if report.token_required && !report.token_included && !fmt.image() {
        println!(
            "no join token: put one in node/<mac-with-dashes>/token (listed in that folder's index) \
             or node/default/, or build with --token-file"
        );
    } else if report.token_required && !report.token_included {
        println!(
            "no join token in this image: add one per node with `edgeimg configure {} --token-file FILE` \
             (or at flash time); it stays out of the shared image",
            report.image.display()
        );
    }
}

/// `build --check-reproducible`: the second build and the comparison (see
/// `crate::build::repro`).
fn check_reproducible(
    out: Out,
    report: &BuildReport,
    out_dir: &Path,
    cache_dir: &Path,
    rep: &dyn Reporter,
) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, diffs) = crate::build::repro::check(&args, &report.outputs, out_dir, cache_dir, rep)?;
    if diffs.is_empty() {
        if !out.quiet && !out.json {
            println!("reproducible: {n} outputs identical in both builds");
        }
        return Ok(());
    }
    let list: Vec<String> = diffs.iter().map(|d| format!("  {d}")).collect();
    bail!(
        "not reproducible: {} of {n} outputs differ between two builds of the same plan:\n{}",
        diffs.len(),
        list.join("\n")
    )
}
