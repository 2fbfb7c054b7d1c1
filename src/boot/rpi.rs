//! Raspberry Pi boards: the boot partition the Pi's own firmware reads (no U-Boot).
//!
//! The boot FAT holds the board's firmware files from Debian's `raspi-firmware`, the kernel,
//! the edgeimg initramfs, the board's device trees, and `config.txt` / `cmdline.txt` rendered
//! from the templates in `overlays/boot/rpi/`. Everything board-specific is data
//! (`[boot] method = "rpi"` in `boards/<name>.toml`).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{kernel_image, BootMethod};
use crate::plan::Plan;
use crate::profile::RpiBoot;
use crate::rootfs::Unpacked;
use crate::tree::{Kind, Tree, TreePath};

/// File names matched by a DTB pattern among the kernel tree's files.
fn match_dtbs(kernel: &Tree, pattern: &str) -> Result<Vec<TreePath>> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    // Newer kernels keep the device trees under usr/lib/modules/<kver>/dtb, with
    // usr/lib/linux-image-<kver> a link to it: follow links inside the tree.
    let dir_path = kernel.resolve_all(&TreePath::new(dir)?)?;
    if kernel.get_path(&dir_path).is_none() {
        bail!("the kernel package has no directory {dir}");
    }
    let found: Vec<TreePath> = kernel
        .children(&dir_path)
        .filter(|(p, e)| {
            matches!(e.kind, Kind::File(_)) && crate::util::text::glob_match(name, p.file_name())
        })
        .map(|(p, _)| p.clone())
        .collect();
    Ok(found)
}

/// `[boot] method = "rpi"` of a board.
pub struct Rpi<'a> {
    pub spec: &'a RpiBoot,
}

impl BootMethod for Rpi<'_> {
    fn name(&self) -> &'static str {
        "rpi"
    }

    fn package_files(&self) -> Vec<String> {
        let dir = self.spec.firmware_dir.trim_end_matches('/');
        self.spec
            .firmware
            .iter()
            .map(|f| format!("{dir}/{f}"))
            .collect()
    }

    fn boot_tree(&self, plan: &Plan, u: &Unpacked, initrd: &[u8], cmdline: &str) -> Result<Tree> {
        boot_tree(plan, u, self.spec, kernel_image(u)?, initrd, cmdline)
    }

    fn imager_devices(&self) -> Option<&[String]> {
        Some(&self.spec.imager_devices)
    }
}

/// The boot partition's fixed part for a Pi board.
fn boot_tree(
    plan: &Plan,
    u: &Unpacked,
    spec: &RpiBoot,
    kernel: std::sync::Arc<[u8]>,
    initrd: &[u8],
    cmdline: &str,
) -> Result<Tree> {
    let board_file = plan.board.file.display().to_string();
    let mut t = Tree::new();
    for f in &spec.firmware {
        let src = format!("{}/{f}", spec.firmware_dir.trim_end_matches('/'));
        let data = u.root.read(&src).with_context(|| {
            format!(
                "{board_file}: boot.firmware {f}: {src} is not in any package (is raspi-firmware \
                 in `packages` and non-free-firmware in `components`?)"
            )
        })?;
        t.add_file(f, data.to_vec(), 0o644)?;
    }
    let mut dtb_names = Vec::new();
    for pattern in &spec.dtbs {
        let pattern = pattern.replace("{kver}", &u.kver);
        let found = match_dtbs(&u.kernel, &pattern)
            .with_context(|| format!("{board_file}: boot.dtbs {pattern}"))?;
        if found.is_empty() {
            bail!(
                "{board_file}: boot.dtbs {pattern} matches no file of the kernel package (linux {})",
                u.kver
            );
        }
        for p in found {
            let data = u.kernel.read(p.as_str()).context("reading a DTB")?;
            let name = p.file_name().to_string();
            t.add_file(&name, data.to_vec(), 0o644)?;
            dtb_names.push(name);
        }
    }
    t.add_file(&spec.kernel, kernel.to_vec(), 0o644)?;
    t.add_file(&spec.initramfs, initrd.to_vec(), 0o644)?;

    let dir = plan.data.join("overlays").join(&spec.templates);
    let ctx = minijinja::context! {
        board => minijinja::context! { name => plan.board.name.clone(), arch => plan.board.arch.debian() },
        role => plan.role.to_string(),
        kver => u.kver.clone(),
        kernel => spec.kernel.clone(),
        initramfs => spec.initramfs.clone(),
        arm_64bit => spec.arm_64bit,
        config => spec.config.iter().chain(&plan.node.boot.config_txt).cloned().collect::<Vec<_>>(),
        cmdline => cmdline,
        dtbs => dtb_names,
    };
    for name in ["config.txt", "cmdline.txt"] {
        let text = render(&dir.join(format!("{name}.j2")), &ctx)?;
        if name == "cmdline.txt" && text.trim_end().contains('\n') {
            bail!(
                "{}: cmdline.txt must be one line (the firmware reads only the first)",
                dir.join("cmdline.txt.j2").display()
            );
        }
        t.add_file(name, text, 0o644)?;
    }
    Ok(t)
}

fn render(path: &Path, ctx: &minijinja::Value) -> Result<String> {
    let src = crate::util::bounded::read_text(path, 1 << 20, "boot template")?;
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.render_str(&src, ctx)
        .with_context(|| format!("rendering {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::text::glob_match;

    #[test]
    fn globs_match_file_names() {
        assert!(glob_match(
            "bcm2837-rpi-3-*.dtb",
            "bcm2837-rpi-3-b-plus.dtb"
        ));
        assert!(glob_match("bcm2837-rpi-3-*.dtb", "bcm2837-rpi-3-b.dtb"));
        assert!(!glob_match(
            "bcm2837-rpi-3-*.dtb",
            "bcm2837-rpi-cm3-io3.dtb"
        ));
        assert!(glob_match("a.dtb", "a.dtb"));
        assert!(!glob_match("a*b*c", "ac"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    #[test]
    fn dtb_patterns_find_files_in_one_directory() {
        let mut t = Tree::new();
        t.add_file(
            "usr/lib/linux-image-6.12/broadcom/bcm2711-rpi-4-b.dtb",
            "x",
            0o644,
        )
        .unwrap();
        t.add_file(
            "usr/lib/linux-image-6.12/broadcom/bcm2711-rpi-400.dtb",
            "x",
            0o644,
        )
        .unwrap();
        t.add_file(
            "usr/lib/linux-image-6.12/broadcom/bcm2837-rpi-3-b.dtb",
            "x",
            0o644,
        )
        .unwrap();
        let got = match_dtbs(&t, "usr/lib/linux-image-6.12/broadcom/bcm2711-*.dtb").unwrap();
        assert_eq!(got.len(), 2);
        assert!(match_dtbs(&t, "usr/lib/none/x.dtb").is_err());
    }
}
