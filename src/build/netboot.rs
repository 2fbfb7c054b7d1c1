//! Step 4 of a build: the network boot folder (`--format pxe` or `all`). The kernel, the
//! initramfs and the root squashfs as plain files, the iPXE script, the node config as files
//! the initramfs fetches, Matchbox and dnsmasq files (all from `boot::pxe`), then the netboot
//! `manifest.json` and `SHA256SUMS`, last, so a folder with them is complete.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{BuildOptions, Inputs, Trees};
use crate::boot::pxe;
use crate::manifest::{Manifest, NetbootFormat, NetbootManifest, OutputRecord};
use crate::node::contract::BOOT_DIR;
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::tree::Tree;
use crate::util::atomic::{write_atomic, AtomicFile};

/// Where the root squashfs comes from: encoded now from the tree, or copied out of the image
/// step 3 wrote (the same bytes, encoded once).
pub enum RootSquashfs<'a> {
    Tree(&'a Tree),
    InImage {
        image: &'a Path,
        offset: u64,
        size: u64,
    },
}

/// What step 4 wrote.
pub struct WrittenNetboot {
    pub root: PathBuf,
    pub outputs: Vec<PathBuf>,
    pub manifest: PathBuf,
    pub token_included: bool,
}

/// The file name of the root in the folder (the kernel command line names it).
pub const ROOT_FILE: &str = "rootfs.squashfs";

/// Writes the network boot set into `dir` (a staging folder: `super::publish` puts it in
/// place, in `BuildOptions::format.pxe_dir`).
pub fn write(
    plan: &Plan,
    opts: &BuildOptions,
    dir: &Path,
    inputs: &Inputs,
    trees: &Trees,
    root: RootSquashfs,
    rep: &dyn Reporter,
) -> Result<WrittenNetboot> {
    if !crate::boot::method(&plan.board).netboot() {
        bail!(
            "board '{}' cannot boot over the network: --format pxe needs a UEFI board ({})",
            plan.board.name,
            plan.board.file.display()
        );
    }
    let root_file = dir.join(ROOT_FILE);
    write_root(plan, root, &root_file, rep)?;

    rep.step(&format!(
        "pxe: writing network boot files for {}",
        opts.format.pxe_dir(&opts.out_dir).display()
    ));
    let base = &opts.base_url;
    let mut names: Vec<String> = vec![ROOT_FILE.to_string()];
    let mut put = |name: &str, data: &[u8]| -> Result<()> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomic(&path, data)?;
        names.push(name.to_string());
        Ok(())
    };
    put("vmlinuz", &crate::boot::kernel_image(&trees.unpacked)?)?;
    put("initrd.img", &trees.initrd)?;
    let root_sha256 = crate::util::digest::sha256_file(&root_file)?;
    let cmdline = pxe::kernel_cmdline(plan, base, &root_sha256);
    put(
        "boot.ipxe",
        pxe::ipxe_script(plan, &trees.unpacked.kver, base, &cmdline).as_bytes(),
    )?;
    // The node config the build was given, as the default for every machine; per-machine
    // folders (node/<mac with dashes>/) are made by `edgeimg configure` or by hand.
    let mut index = String::new();
    let mut token_included = false;
    let prefix = format!("{BOOT_DIR}/");
    for (path, data) in &plan.node.render()?.files {
        let rel = path.strip_prefix(&prefix).unwrap_or(path);
        if rel.contains('\n') || rel.contains(' ') {
            bail!("node file {rel:?}: a name with spaces cannot be listed in node/default/index");
        }
        token_included |= rel == "token";
        put(&format!("node/default/{rel}"), data)?;
        index.push_str(rel);
        index.push('\n');
    }
    put("node/default/index", index.as_bytes())?;
    let profile = pxe::matchbox_profile(plan, base, &cmdline);
    let profile_id = profile["id"].as_str().unwrap_or_default().to_string();
    put(
        &format!("matchbox/profiles/{profile_id}.json"),
        serde_json::to_string_pretty(&profile)?.as_bytes(),
    )?;
    put(
        &format!("matchbox/groups/{profile_id}-default.json"),
        serde_json::to_string_pretty(&pxe::matchbox_group(plan, None))?.as_bytes(),
    )?;
    put(
        "dnsmasq-edgeimg.conf",
        pxe::dnsmasq_snippet(base).as_bytes(),
    )?;

    // The SBOM describes the root the nodes fetch.
    super::write_sbom(plan, inputs, ROOT_FILE, &root_sha256, dir)?;
    names.push(crate::manifest::sbom::SBOM_FILE.to_string());

    names.sort();
    let mut records = Vec::new();
    for name in &names {
        let mut r = OutputRecord::of_file(&dir.join(name))?;
        r.file = name.clone();
        records.push(r);
    }
    let manifest = Manifest::netboot(NetbootManifest {
        format: NetbootFormat::Pxe,
        edgeimg_version: plan.edgeimg_version.clone(),
        board: plan.board.name.clone(),
        role: plan.role.to_string(),
        arch: plan.board.arch.debian().to_string(),
        plan_hash: plan.hash(),
        kernel_version: trees.unpacked.kver.clone(),
        k0s_version: plan.k0s_version.clone(),
        source_date_epoch: plan.source_date_epoch,
        base_url: base.clone(),
        kernel_cmdline: cmdline,
        root_sha256,
        token_included,
        inputs: super::input_records(inputs, plan),
        outputs: records.clone(),
    });
    let manifest_path = manifest.write(dir)?;
    let mut digests: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.file.clone(), r.sha256.clone()))
        .collect();
    digests.push((
        crate::manifest::MANIFEST_FILE.to_string(),
        crate::util::digest::sha256_file(&manifest_path)?,
    ));
    let sums = crate::disk::checksums::write_sha256sums_of(dir, &digests)?;
    let mut outputs: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    outputs.push(manifest_path.clone());
    outputs.push(sums);
    Ok(WrittenNetboot {
        root: root_file,
        outputs,
        manifest: manifest_path,
        token_included,
    })
}

fn write_root(plan: &Plan, root: RootSquashfs, to: &Path, rep: &dyn Reporter) -> Result<()> {
    match root {
        RootSquashfs::Tree(tree) => {
            rep.step(&format!("root: squashfs of {} entries", tree.len()));
            let mut f = AtomicFile::create(to)?;
            crate::fs::squashfs::write_squashfs(tree, &super::squashfs_options(plan)?, &mut f)?;
            f.commit()
        }
        RootSquashfs::InImage {
            image,
            offset,
            size,
        } => extract_part(image, offset, size, to),
    }
}

/// Copies `len` bytes at `offset` of `image` (the root partition) to `to`, atomically.
fn extract_part(image: &Path, offset: u64, len: u64, to: &Path) -> Result<()> {
    let mut src =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    src.seek(SeekFrom::Start(offset))?;
    let mut f = AtomicFile::create(to)?;
    std::io::copy(&mut (&mut src).take(len), &mut f).with_context(|| {
        format!(
            "copying the root of {} to {}",
            image.display(),
            to.display()
        )
    })?;
    f.commit()
}
