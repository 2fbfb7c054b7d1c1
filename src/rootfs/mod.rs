//! Assembles the three trees of an image from verified inputs: the root filesystem, the
//! initramfs and the boot partition. Nothing here touches the network or the disk layout.

pub mod dpkg;
pub mod elf_deps;
pub mod overlay;
pub mod overlay_guard;
pub mod postinst;

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::kmod::ModuleIndex;
use crate::node::contract;
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::source::airgap::AirgapBundle;
use crate::source::debian::{unpack_deb_spilling, FetchedDeb};
use crate::source::k0s::K0sBinary;
use crate::tree::{Content, Entry, Tree, TreePath};
use postinst::SystemUser;

/// Where k0s lives on the device.
pub const K0S_PATH: &str = "usr/local/bin/k0s";

/// What the unpacked packages gave us, before it is split into root, initramfs and boot.
pub struct Unpacked {
    /// Everything but the kernel packages.
    pub root: Tree,
    /// The kernel packages (modules, vmlinuz, config).
    pub kernel: Tree,
    pub kver: String,
    pub modules: ModuleIndex,
    /// Where the large files of `root` and `kernel` are (`crate::tree::spill`); removed on drop.
    /// None when the trees came whole from the artifact cache.
    pub spill: Option<crate::tree::spill::Spill>,
}

/// Unpacks every package: the kernel's packages (see [`kernel_packages`]) into their own tree,
/// so that only the modules a node needs reach the root; everything else into the root, minus
/// docs.
/// Large files go to a scratch directory in `scratch` (see `crate::tree::spill`), not memory.
pub fn unpack(
    plan: &Plan,
    debs: &[FetchedDeb],
    scratch: &std::path::Path,
    rep: &dyn Reporter,
) -> Result<Unpacked> {
    let spill = crate::tree::spill::Spill::new_in(scratch)?;
    let mut root = Tree::new();
    postinst::merged_usr(&mut root, plan.board.arch.debian() == "amd64");
    let mut kernel = Tree::new();
    postinst::merged_usr(&mut kernel, false);
    let docs = [
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
        "usr/share/lintian/",
    ];
    let kernel_names = kernel_packages(&plan.board.kernel_package, debs);
    let mut task = rep.count_task("unpacking packages", debs.len() as u64);
    let mut installed = Vec::new();
    for deb in debs {
        let is_kernel = kernel_names.contains(deb.package.name.as_str());
        let target = if is_kernel { &mut kernel } else { &mut root };
        let mut paths = Vec::new();
        let mut keep = |p: &TreePath| {
            let k = !docs.iter().any(|d| p.as_str().starts_with(d));
            if k {
                paths.push(p.clone());
            }
            k
        };
        let info = unpack_deb_spilling(&deb.path, target, &mut keep, &spill)
            .with_context(|| format!("unpacking {} {}", deb.package.name, deb.package.version))?;
        installed.push(dpkg::installed(&info, &paths)?);
        task.advance(1);
    }
    // Every package is recorded as installed, the kernel's too (its modules are in the root,
    // its kernel on the boot partition).
    dpkg::write(&mut root, &mut installed)?;
    task.finish(&format!("{} packages unpacked", debs.len()));
    let kver = crate::kmod::kernel_version(&kernel)?;
    rep.step(&format!("indexing kernel modules of linux {kver}"));
    let modules = ModuleIndex::scan(&kernel, &kver)?;
    Ok(Unpacked {
        root,
        kernel,
        kver,
        modules,
        spill: Some(spill),
    })
}

/// The packages of the kernel: `kernel_package` and the `linux-*` packages of its dependency
/// closure among `debs`. Trixie's kernel is one `linux-image-<kver>` package behind the
/// metapackage; newer ones (trixie-backports) split it into `linux-base-<kver>` (config,
/// device trees, module lists), `linux-binary-<kver>` (the image) and `linux-modules-<kver>`.
/// Dependencies outside the kernel (`kmod`) go to the root like any package.
pub fn kernel_packages<'a>(
    kernel_package: &str,
    debs: &'a [FetchedDeb],
) -> std::collections::BTreeSet<&'a str> {
    let mut out = std::collections::BTreeSet::new();
    let by_name = |n: &str| debs.iter().find(|d| d.package.name == n);
    let providers = |n: &str| {
        debs.iter()
            .filter(|d| d.package.provides.iter().any(|(v, _)| v == n))
            .collect::<Vec<_>>()
    };
    let mut todo: Vec<&'a FetchedDeb> = by_name(kernel_package).into_iter().collect();
    while let Some(d) = todo.pop() {
        if !out.insert(d.package.name.as_str()) {
            continue;
        }
        for group in d.package.pre_depends.iter().chain(&d.package.depends) {
            for dep in group {
                let found: Vec<&'a FetchedDeb> = match by_name(&dep.name) {
                    Some(p) => vec![p],
                    None => providers(&dep.name),
                };
                todo.extend(
                    found
                        .into_iter()
                        .filter(|p| p.package.name.starts_with("linux-")),
                );
            }
        }
    }
    out
}

/// Values the overlay templates and generated files see.
pub fn template_context(plan: &Plan, kver: &str) -> minijinja::Value {
    minijinja::context! {
        board => minijinja::context! { name => plan.board.name.clone(), arch => plan.board.arch.debian() },
        role => plan.role.to_string(),
        k0s_version => plan.k0s_version.clone(),
        kver => kver,
        edgeimg_version => plan.edgeimg_version.clone(),
    }
}

/// The read-only root filesystem.
pub fn build_root(
    plan: &Plan,
    u: &Unpacked,
    k0s: &K0sBinary,
    airgap: Option<&AirgapBundle>,
    rep: &dyn Reporter,
) -> Result<Tree> {
    let mut root = u.root.clone();
    for p in &plan.base.drop_paths {
        root.remove(p);
    }
    let modules = u.modules.closure(&as_strs(&plan.root_modules()))?;
    rep.step(&format!("root: {} kernel modules", modules.len()));
    u.modules.install(&u.kernel, &mut root, &modules)?;
    // k0s reads the kernel config from here (Debian kernels have no IKCONFIG); /boot is the
    // boot partition's mount point on the device.
    let config = crate::kmod::kernel_file(&u.kernel, &u.kver, "config")
        .context("the kernel packages have no config file")?;
    root.add_file(
        &format!("usr/lib/modules/{}/config", u.kver),
        config.to_vec(),
        0o644,
    )?;

    let mut users: Vec<SystemUser> = Vec::new();
    for spec in plan.base.users.iter().chain(&plan.role_profile.users) {
        users.push(SystemUser {
            name: spec.name.clone(),
            uid: spec.uid,
            gid: spec.gid,
            home: spec.home.clone(),
            shell: spec.shell.clone(),
        });
    }
    postinst::passwd_and_group(&mut root, &users)?;
    postinst::ca_bundle(&mut root)?;
    let skipped =
        postinst::busybox_links(&mut root, "/usr/bin/busybox", &plan.base.busybox_applets)?;
    for s in skipped {
        rep.step(&format!(
            "busybox applet {s} not linked: a package provides it"
        ));
    }
    postinst::mount_points(
        &mut root,
        &[
            "proc", "sys", "dev", "run", "tmp", "var", "boot", "data", "root", "opt",
        ],
    )?;

    let ctx = template_context(plan, &u.kver);
    let overlay = crate::rootfs::overlay::load(&plan.data.join("overlays/rootfs"), &ctx)?;
    crate::rootfs::overlay_guard::check(
        &root,
        &overlay,
        &plan.data.join("overlays/rootfs"),
        &plan.data.join("overlays/rootfs.replaces"),
    )?;
    root.overlay(&overlay)?;
    dpkg::prune_lists(&mut root)?;
    root.add_file("etc/edgeimg/build.env", build_env(plan, &u.kver), 0o644)?;
    root.add_file(contract::CONTRACT_PATH, contract::render_shell(), 0o644)?;
    root.add_symlink("usr/sbin/edgeimg-update", "/usr/lib/edgeimg/edgeimg-update")?;
    // The fleet's update key, inside dm-verity: bundles are checked against it.
    if let Some(k) = &plan.update_key {
        root.add_file(crate::plan::UPDATE_PUB, k.public_pem.clone(), 0o644)?;
    }
    root.insert(
        &TreePath::new(K0S_PATH)?,
        Entry::file(
            Content::HostFile {
                path: k0s.path.clone(),
                size: std::fs::metadata(&k0s.path)?.len(),
            },
            0o755,
        ),
    )?;
    // The airgap bundle stays in the verified root; the boot script links it into
    // <data-dir>/images, so the data partition holds no second copy.
    if let Some(a) = airgap {
        root.insert(
            &TreePath::new(&format!("{}/{}", crate::plan::AIRGAP_DIR, a.file_name))?,
            Entry::file(
                Content::HostFile {
                    path: a.path.clone(),
                    size: std::fs::metadata(&a.path)?.len(),
                },
                0o644,
            ),
        )?;
    }
    root.set_all_mtimes(plan.source_date_epoch);
    Ok(root)
}

/// `/etc/edgeimg/build.env`: the image's facts, and the Kubernetes modules and sysctls of
/// the profile (`[kubernetes]`) that the node's boot script applies.
fn build_env(plan: &Plan, kver: &str) -> String {
    format!(
        "EDGEIMG_BOARD='{}'\nEDGEIMG_ROLE='{}'\nEDGEIMG_ARCH='{}'\nK0S_VERSION='{}'\nKVER='{}'\nEDGEIMG_VERSION='{}'\nIMAGE_VERSION='{}'\nBOOT_METHOD='{}'\nROOT_MODE='ro'\nEDGEIMG_K8S_MODULES='{}'\nEDGEIMG_K8S_SYSCTLS='{}'\n",
        plan.board.name,
        plan.role,
        plan.board.arch.debian(),
        plan.k0s_version,
        kver,
        plan.edgeimg_version,
        plan.image_version,
        plan.board.boot.method_name(),
        plan.base.kubernetes.modules.join(" "),
        plan.base.kubernetes.sysctls.join(" "),
    )
}

/// The initramfs: busybox, the modules to reach root, boot and data, and the init.
/// `extra_modules` come after the board's drivers (network boot adds its own).
pub fn build_initramfs(
    plan: &Plan,
    extra_modules: &[String],
    u: &Unpacked,
    root: &Tree,
) -> Result<Tree> {
    let mut t = Tree::new();
    t.add_symlink("lib", "usr/lib")?;
    let busybox = root
        .read("usr/bin/busybox")
        .context("busybox-static did not install usr/bin/busybox")?;
    t.add_file("bin/busybox", busybox.to_vec(), 0o755)?;
    if plan.verity {
        for program in &plan.base.verity.programs {
            crate::rootfs::elf_deps::copy_program(root, &mut t, program).with_context(|| {
                format!(
                    "profiles/base.toml: [verity] programs: copying {program} into the initramfs"
                )
            })?;
        }
    }
    let modules = u
        .modules
        .closure(&as_strs(&plan.initramfs_modules_with(extra_modules)))?;
    u.modules.install(&u.kernel, &mut t, &modules)?;
    let conf = format!(
        "KVER='{}'\nMODULES='{}'\nEDGEIMG_VERSION='{}'\n",
        u.kver,
        modules.join(" "),
        plan.edgeimg_version
    );
    t.add_file("etc/edgeimg/initrd.conf", conf, 0o644)?;
    t.add_file(contract::CONTRACT_PATH, contract::render_shell(), 0o644)?;
    for d in ["dev", "proc", "sys", "run", "newroot", "tmp"] {
        t.add_dir(d, 0o755)?;
    }
    let ctx = template_context(plan, &u.kver);
    let overlay = crate::rootfs::overlay::load(&plan.data.join("overlays/initramfs"), &ctx)?;
    t.overlay(&overlay)?;
    if t.get("init").is_none_or(|e| e.mode & 0o111 == 0) {
        bail!("overlays/initramfs/init is missing or not executable");
    }
    t.set_all_mtimes(plan.source_date_epoch);
    Ok(t)
}

fn as_strs(v: &[String]) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    v.iter()
        .map(String::as_str)
        .filter(|s| seen.insert(*s))
        .collect()
}
