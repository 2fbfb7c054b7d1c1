//! Raspberry Pi boards: the boot partition the Pi's own firmware reads (no U-Boot), and the
//! Raspberry Pi Imager `os_list` entry written beside Pi images.
//!
//! The boot FAT holds the board's firmware files from Debian's `raspi-firmware`, the kernel,
//! the edgeimg initramfs, the board's device trees, and `config.txt` / `cmdline.txt` rendered
//! from the templates in `overlays/boot/rpi/`. Everything board-specific is data
//! (`[boot] method = "rpi"` in `boards/<name>.toml`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::rootfs::Unpacked;
use crate::tree::{Kind, Tree, TreePath};

/// `[boot] method = "rpi"` of a board.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpiBoot {
    /// Directory of the firmware files in the packages (`usr/lib/raspi-firmware`).
    pub firmware_dir: String,
    /// Firmware files copied from `firmware_dir` to the FAT root (`start4.elf`, ...).
    pub firmware: Vec<String>,
    /// Device trees from the kernel package, copied to the FAT root. `{kver}` is the kernel
    /// version; `*` in the file name matches any characters. Each pattern must match.
    pub dtbs: Vec<String>,
    /// The kernel's file name on the FAT (`config.txt`'s `kernel=`).
    pub kernel: String,
    /// The initramfs's file name on the FAT (`config.txt`'s `initramfs`).
    pub initramfs: String,
    /// The directory of `config.txt.j2` and `cmdline.txt.j2` under `overlays/`.
    pub templates: String,
    /// Whether the firmware starts the kernel in 64-bit mode (`arm_64bit=1`).
    pub arm_64bit: bool,
    /// Extra `config.txt` lines (overclock, UART, PoE HAT fan, dtoverlay=...).
    #[serde(default)]
    pub config: Vec<String>,
    /// Raspberry Pi Imager device tags the image is offered for (`pi4-64bit`, `pi3-32bit`).
    #[serde(default)]
    pub imager_devices: Vec<String>,
}

/// For Pi boards, writes the Imager `os_list` JSON beside the image (from the output records:
/// image first, `.img.xz` when built); returns its path. Other boards: nothing.
pub fn write_imager(
    plan: &Plan,
    out_dir: &Path,
    stem: &str,
    outputs: &[crate::build::OutputRecord],
) -> Result<Option<std::path::PathBuf>> {
    let crate::profile::BootSpec::Rpi(spec) = &plan.board.boot else {
        return Ok(None);
    };
    let img = format!("{stem}.img");
    let image = outputs
        .iter()
        .find(|o| o.file == img)
        .context("the image is not among the outputs")?;
    let download = outputs
        .iter()
        .find(|o| o.file == format!("{img}.xz"))
        .unwrap_or(image);
    let url_base = std::env::var("EDGEIMG_IMAGER_URL_BASE").unwrap_or_default();
    let json = imager_json(plan, spec, image, download, &url_base);
    let path = out_dir.join(imager_file_name(stem));
    crate::util::atomic::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(Some(path))
}

/// The file name of the Raspberry Pi Imager `os_list` JSON written beside a Pi image.
pub fn imager_file_name(stem: &str) -> String {
    format!("{stem}.os_list.json")
}

/// A Raspberry Pi Imager repository (`os_list`) with one entry for the image, for Imager's
/// "custom repository" option. `download` is the file Imager fetches (the `.img.xz` when
/// built, else the raw `.img`), `image` the raw image it writes; `url_base` (a URL ending
/// in `/`, or empty for a bare file name) is put in front of the download's name.
pub fn imager_json(
    plan: &Plan,
    spec: &RpiBoot,
    image: &crate::build::OutputRecord,
    download: &crate::build::OutputRecord,
    url_base: &str,
) -> serde_json::Value {
    let days = (plan.source_date_epoch / 86_400) as i64;
    let (y, m, d) = crate::fs::fat::dirent::civil_from_days(days);
    serde_json::json!({
        "os_list": [{
            "name": format!("edgeimg {} {} (k0s {})", plan.board.name, plan.role, plan.k0s_version),
            "description": format!("{}: immutable Debian {} node for k0s, role {}", plan.board.description, plan.suite, plan.role),
            "url": format!("{url_base}{}", download.file),
            "release_date": format!("{y:04}-{m:02}-{d:02}"),
            "extract_size": image.size,
            "extract_sha256": image.sha256,
            "image_download_size": download.size,
            "image_download_sha256": download.sha256,
            "devices": spec.imager_devices,
            "init_format": "none",
        }]
    })
}

/// File names matched by a DTB pattern among the kernel tree's files.
fn match_dtbs(kernel: &Tree, pattern: &str) -> Result<Vec<TreePath>> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let dir_path = TreePath::new(dir)?;
    if kernel.get_path(&dir_path).is_none() {
        bail!("the kernel package has no directory {dir}");
    }
    let found: Vec<TreePath> = kernel
        .children(&dir_path)
        .filter(|(p, e)| matches!(e.kind, Kind::File(_)) && glob_match(name, p.file_name()))
        .map(|(p, _)| p.clone())
        .collect();
    Ok(found)
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The boot partition's fixed part for a Pi board.
pub fn boot_tree(
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
    let src =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.render_str(&src, ctx)
        .with_context(|| format!("rendering {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
