//! Raspberry Pi boards: the boot partition the Pi's own firmware reads, and U-Boot's part
//! when the board has one (`[boot.u_boot]`).
//!
//! The boot FAT holds the board's firmware files from Debian's `raspi-firmware` and
//! `config.txt` at its root, and one folder per root slot ([`slot_dir`]: `slot-a/`,
//! `slot-b/`) with that slot's kernel, edgeimg initramfs, device trees and `cmdline.txt`
//! (naming the slot's root and its dm-verity hash). `config.txt` says `os_prefix=slot-a/`:
//! the firmware prepends it to every "operating system file" it loads (kernel, initramfs,
//! `cmdline.txt`, DTBs, overlays), after checking that the kernel and the DTB are there. A
//! trial of the other slot is `tryboot.txt` (the same file with the other prefix), read
//! instead of `config.txt` for the one boot after `reboot '0 tryboot'`. Everything
//! board-specific is data (`[boot] method = "rpi"` in `boards/<name>.toml`); the templates are
//! in `overlays/boot/rpi/`.
//!
//! With U-Boot, `config.txt`'s `kernel=` is `u-boot.bin` in the slot folder (the firmware
//! still loads the good slot's DTB, with its fixups and overlays), and the slot is U-Boot's
//! choice: `boot.scr` boots the slot `slots.txt` names (`good=a`), or a trial while
//! `trial.txt` has tries left (`trial=b`, `tries=1`), counting each try down on the FAT
//! before the kernel runs. That needs no kernel patch (the firmware's one-shot tryboot flag
//! is set by a Raspberry Pi kernel's reboot notifier, which Debian's kernel lacks), and a
//! trial that crashes before its initramfs still falls back. Each slot folder then holds
//! `bootargs.txt` (`bootargs=` and its command line) for U-Boot beside `cmdline.txt`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::uboot::{script_image, ImageArch};
use super::{kernel_image, BootMethod};
use crate::disk::layout::Slot;
use crate::plan::Plan;
use crate::profile::{RpiBoot, UBootSpec};
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

/// The config file the firmware reads on a normal boot.
pub const CONFIG_TXT: &str = "config.txt";
/// The config file the firmware reads instead of `config.txt` for one boot after
/// `reboot '0 tryboot'` (the one-shot flag).
pub const TRYBOOT_TXT: &str = "tryboot.txt";

/// U-Boot's script on the FAT root, found by its standard boot.
pub const BOOT_SCR: &str = "boot.scr";
/// The good slot for U-Boot (`good=a`); written by the node when it marks a slot good.
pub const SLOTS_TXT: &str = "slots.txt";
/// A trial for U-Boot (`trial=b`, `tries=N`); U-Boot counts `tries` down.
pub const TRIAL_TXT: &str = "trial.txt";
/// U-Boot's file name in a slot folder (`config.txt`'s `kernel=`).
pub const U_BOOT_BIN: &str = "u-boot.bin";
pub use crate::profile::U_BOOT_KERNEL;
/// A slot's command line for U-Boot (`bootargs=...`).
pub const BOOTARGS_TXT: &str = "bootargs.txt";

/// The folder of a root slot's boot files (`slot-a/`), as `os_prefix=` names it (with the
/// trailing `/` the firmware needs for a folder).
pub fn slot_dir(slot: Slot) -> String {
    format!("slot-{slot}/")
}

/// `slots.txt` naming `slot` the good one, as U-Boot's `env import -t` reads it.
pub fn slots_txt(slot: Slot) -> String {
    format!("good={slot}\n")
}

/// `trial.txt` giving `slot` `tries` boots.
pub fn trial_txt(slot: Slot, tries: u32) -> String {
    format!("trial={slot}\ntries={tries}\n")
}

/// The files of a slot folder that name the slot (its root and verity hash): one per slot in
/// a bundle; the others are the same for both.
pub fn names_its_slot(file_name: &str) -> bool {
    file_name == "cmdline.txt" || file_name == BOOTARGS_TXT
}

/// `[boot] method = "rpi"` of a board.
pub struct Rpi<'a> {
    pub spec: &'a RpiBoot,
}

impl BootMethod for Rpi<'_> {
    fn name(&self) -> &'static str {
        self.spec.method_name()
    }

    fn package_files(&self) -> Vec<String> {
        let dir = self.spec.firmware_dir.trim_end_matches('/');
        let mut files: Vec<String> = self
            .spec
            .firmware
            .iter()
            .map(|f| format!("{dir}/{f}"))
            .collect();
        files.extend(self.spec.u_boot.iter().flat_map(|u| u.binaries().cloned()));
        files
    }

    fn boot_tree(&self, plan: &Plan, u: &Unpacked, initrd: &[u8], cmdline: &str) -> Result<Tree> {
        boot_tree(plan, u, self.spec, kernel_image(u)?, initrd, cmdline)
    }

    fn imager_devices(&self) -> Option<&[String]> {
        Some(&self.spec.imager_devices)
    }

    /// The slot folder's files: `cmdline.txt` (and U-Boot's `bootargs.txt`) once per slot
    /// (they name the slot's root), the kernel, initramfs, DTBs and U-Boot once for both
    /// (`slot-@SLOT@/...`). `config.txt` stays the node's: arming writes `tryboot.txt` from it
    /// (or `trial.txt`, with U-Boot).
    fn bundle_boot_files(
        &self,
        plan: &Plan,
        u: &Unpacked,
        initrd: &[u8],
        boot_a: &Tree,
        cmdline_b: &str,
    ) -> Result<Vec<crate::bundle::BootFile>> {
        let mark = crate::bundle::SLOT_MARK;
        let mut out = Vec::new();
        for (name, data) in slot_files(plan, u, self.spec, kernel_image(u)?, initrd, cmdline_b)? {
            let path = format!("slot-{mark}/{name}");
            if names_its_slot(&name) {
                let in_a = format!("{}{name}", slot_dir(Slot::A));
                let a = boot_a
                    .read(&in_a)
                    .with_context(|| format!("the boot tree has no {in_a}"))?
                    .to_vec();
                out.push(crate::bundle::BootFile {
                    path: path.clone(),
                    slot: Some(Slot::A),
                    data: a,
                });
                out.push(crate::bundle::BootFile {
                    path,
                    slot: Some(Slot::B),
                    data,
                });
            } else {
                out.push(crate::bundle::BootFile {
                    path,
                    slot: None,
                    data,
                });
            }
        }
        Ok(out)
    }
}

/// The boot partition's fixed part for a Pi board: the firmware and `config.txt` at the root
/// (booting slot a), slot a's files in its folder. Slot b's folder is written by an update.
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
    let files = slot_files(plan, u, spec, kernel, initrd, cmdline)?;
    let dtb_names: Vec<String> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".dtb"))
        .map(|(n, _)| n.clone())
        .collect();
    for (name, data) in files {
        t.add_file(&format!("{}{name}", slot_dir(Slot::A)), data, 0o644)?;
    }
    let ctx = template_context(plan, u, spec, cmdline, &dtb_names);
    let text = render(&template_dir(plan, spec).join("config.txt.j2"), &ctx)?;
    t.add_file(CONFIG_TXT, config_for_slot(&text, Slot::A), 0o644)?;
    if spec.u_boot.is_some() {
        let script = render(&template_dir(plan, spec).join("boot.cmd.j2"), &ctx)?;
        let arch = match plan.board.arch {
            crate::profile::Arch::Arm64 => ImageArch::Arm64,
            _ => ImageArch::Arm,
        };
        t.add_file(BOOT_SCR, script_image(&script, "edgeimg boot", arch), 0o644)?;
        t.add_file(SLOTS_TXT, slots_txt(Slot::A), 0o644)?;
    }
    Ok(t)
}

/// One slot's boot files, named inside its folder: the kernel, the initramfs, the board's
/// device trees and `cmdline.txt` (the slot's own command line: its root, verity hash and
/// `edgeimg.slot=`); with U-Boot, `u-boot.bin` and `bootargs.txt` too. An update bundle
/// carries these for the slot it writes.
pub fn slot_files(
    plan: &Plan,
    u: &Unpacked,
    spec: &RpiBoot,
    kernel: std::sync::Arc<[u8]>,
    initrd: &[u8],
    cmdline: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let board_file = plan.board.file.display().to_string();
    let mut files = Vec::new();
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
            files.push((name.clone(), data.to_vec()));
            dtb_names.push(name);
        }
    }
    files.push((spec.kernel.clone(), kernel.to_vec()));
    files.push((spec.initramfs.clone(), initrd.to_vec()));
    let path = template_dir(plan, spec).join("cmdline.txt.j2");
    let text = render(&path, &template_context(plan, u, spec, cmdline, &dtb_names))?;
    if text.trim_end().contains('\n') {
        bail!(
            "{}: cmdline.txt must be one line (the firmware reads only the first)",
            path.display()
        );
    }
    if let Some(ub) = &spec.u_boot {
        let builds = std::iter::once(("binary".to_string(), U_BOOT_BIN.to_string(), &ub.binary))
            .chain(
                ub.models
                    .iter()
                    .map(|(m, path)| (format!("models.{m}"), UBootSpec::model_file(m), path)),
            );
        for (field, name, path) in builds {
            let bin = u.root.read(path).with_context(|| {
                format!(
                    "{board_file}: boot.u_boot.{field}: {path} is not in any package (is \
                     u-boot-rpi in `packages`?)"
                )
            })?;
            files.push((name, bin.to_vec()));
        }
        files.push((
            BOOTARGS_TXT.to_string(),
            format!("bootargs={}\n", text.trim_end()).into_bytes(),
        ));
    }
    files.push(("cmdline.txt".to_string(), text.into_bytes()));
    Ok(files)
}

/// `config.txt` (or `tryboot.txt`) booting `slot`: the rendered text with its
/// `os_prefix=` line set to the slot's folder (added when the template has none).
pub fn config_for_slot(text: &str, slot: Slot) -> String {
    let line = format!("os_prefix={}", slot_dir(slot));
    let mut found = false;
    let mut out = String::new();
    for l in text.lines() {
        if l.trim_start().starts_with("os_prefix=") {
            found = true;
            out.push_str(&line);
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn template_dir(plan: &Plan, spec: &RpiBoot) -> std::path::PathBuf {
    plan.data.join("overlays").join(&spec.templates)
}

fn template_context(
    plan: &Plan,
    u: &Unpacked,
    spec: &RpiBoot,
    cmdline: &str,
    dtb_names: &[String],
) -> minijinja::Value {
    minijinja::context! {
        board => minijinja::context! { name => plan.board.name.clone(), arch => plan.board.arch.debian() },
        role => plan.role.to_string(),
        kver => u.kver.clone(),
        kernel => spec.kernel.clone(),
        initramfs => spec.initramfs.clone(),
        arm_64bit => spec.arm_64bit,
        u_boot => spec.u_boot.is_some(),
        u_boot_bin => U_BOOT_BIN,
        // (filter, file) for each Pi model with a U-Boot build of its own.
        u_boot_models => spec.u_boot.iter().flat_map(|u| u.models.keys())
            .map(|m| (m.clone(), UBootSpec::model_file(m))).collect::<Vec<_>>(),
        boot_command => spec.u_boot.as_ref().map(|u| u.boot_command.as_str()),
        config => spec.config.iter().chain(&plan.node.boot.config_txt).cloned().collect::<Vec<_>>(),
        cmdline => cmdline,
        dtbs => dtb_names,
        os_prefix => slot_dir(Slot::A),
    }
}

/// What the Pi firmware loads from a boot partition: the files `config.txt` (or
/// `tryboot.txt`) names, with `os_prefix` applied the way the firmware documents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareLoad {
    /// The config file read: `config.txt`, or `tryboot.txt` under the one-shot flag.
    pub config: &'static str,
    /// The prefix in force ("" when `os_prefix` failed the firmware's viability test).
    pub os_prefix: String,
    pub kernel: String,
    pub initramfs: Option<String>,
    /// None when the machine makes its own device tree.
    pub dtb: Option<String>,
    pub cmdline: String,
    /// `arm_64bit=1`: the firmware starts the kernel in 64-bit mode (at 0x80000 or where the
    /// Image header says); else in 32-bit mode at 0x8000.
    pub arm_64bit: bool,
}

/// The Raspberry Pi firmware's choice of files (the `config.txt` documentation):
/// - with the one-shot tryboot flag set and a `tryboot.txt` present, that file is read
///   instead of `config.txt`;
/// - `[all]`, `[none]`, `[tryboot]` and model filters (`[pi3]`) select the lines that apply;
/// - `os_prefix=` is prepended to the kernel, the initramfs, `cmdline.txt` and the DTB, but
///   only when `PREFIX+kernel` and `PREFIX+dtb` exist (otherwise it is ignored);
///   `upstream_kernel=1` means `os_prefix=upstream/` unless one is set;
/// - `kernel=` (default `default_kernel`), `initramfs NAME [followkernel]` (or `ramfsfile=`),
///   `device_tree=` (default `model_dtb`), `cmdline=` (default `cmdline.txt`).
///
/// `exists` says whether a file is on the boot partition, `read` gives a config file's text.
pub fn firmware_load(
    exists: &dyn Fn(&str) -> bool,
    read: &dyn Fn(&str) -> Option<String>,
    tryboot: bool,
    model: &str,
    default_kernel: &str,
    model_dtb: Option<&str>,
) -> Result<FirmwareLoad> {
    let (config, text) = match (tryboot, read(TRYBOOT_TXT)) {
        (true, Some(t)) => (TRYBOOT_TXT, t),
        _ => (
            CONFIG_TXT,
            read(CONFIG_TXT).with_context(|| {
                format!("the boot partition has no {CONFIG_TXT} (the Pi firmware reads it)")
            })?,
        ),
    };
    let mut active = true;
    let mut prefix: Option<String> = None;
    let mut upstream = false;
    let mut arm_64bit = false;
    let mut kernel = default_kernel.to_string();
    let mut initramfs = None;
    let mut dtb = model_dtb.map(str::to_string);
    let mut cmdline = "cmdline.txt".to_string();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(filter) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let f = filter.trim().to_ascii_lowercase();
            active = f == "all" || f == model || (f == "tryboot" && tryboot);
            continue;
        }
        if !active {
            continue;
        }
        if let Some(rest) = line.strip_prefix("initramfs ") {
            initramfs = rest.split_whitespace().next().map(str::to_string);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "os_prefix" => prefix = Some(value),
            "upstream_kernel" => upstream = value == "1",
            "arm_64bit" => arm_64bit = value == "1",
            "kernel" => kernel = value,
            "ramfsfile" => initramfs = Some(value),
            "device_tree" => dtb = Some(value),
            "cmdline" => cmdline = value,
            _ => {}
        }
    }
    let wanted = prefix.unwrap_or_else(|| {
        if upstream {
            "upstream/".to_string()
        } else {
            String::new()
        }
    });
    let viable = exists(&format!("{wanted}{kernel}"))
        && dtb.as_ref().is_none_or(|d| exists(&format!("{wanted}{d}")));
    let os_prefix = if viable { wanted } else { String::new() };
    let at = |name: &str| format!("{os_prefix}{name}");
    Ok(FirmwareLoad {
        config,
        kernel: at(&kernel),
        initramfs: initramfs.as_deref().map(at),
        dtb: dtb.as_deref().map(at),
        cmdline: at(&cmdline),
        os_prefix,
        arm_64bit,
    })
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
    fn config_for_a_slot_sets_its_os_prefix_once() {
        let text = "arm_64bit=1\nos_prefix=slot-a/\nkernel=vmlinuz\n";
        assert_eq!(
            config_for_slot(text, Slot::B),
            "arm_64bit=1\nos_prefix=slot-b/\nkernel=vmlinuz\n"
        );
        assert_eq!(config_for_slot(text, Slot::A), text);
        // A template without the line gets it at the end.
        assert_eq!(
            config_for_slot("kernel=k", Slot::B),
            "kernel=k\nos_prefix=slot-b/\n"
        );
    }

    fn load(files: &[(&str, &str)], tryboot: bool, dtb: Option<&str>) -> Result<FirmwareLoad> {
        let exists = |p: &str| files.iter().any(|(n, _)| *n == p);
        let read = |p: &str| {
            files
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, t)| t.to_string())
        };
        firmware_load(&exists, &read, tryboot, "pi3", "kernel8.img", dtb)
    }

    const CONFIG: &str = "arm_64bit=1\nupstream_kernel=1\nos_prefix=slot-a/\nkernel=vmlinuz\n\
                          initramfs initrd.img followkernel\n";
    const DTB: &str = "bcm2837-rpi-3-b.dtb";

    fn slot_files(slot: char) -> Vec<(String, &'static str)> {
        ["vmlinuz", "initrd.img", DTB, "cmdline.txt"]
            .iter()
            .map(|f| (format!("slot-{slot}/{f}"), ""))
            .collect()
    }

    fn card(tryboot_txt: bool, b_files: bool) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![("config.txt".into(), CONFIG.into())];
        if tryboot_txt {
            v.push(("tryboot.txt".into(), config_for_slot(CONFIG, Slot::B)));
        }
        v.extend(slot_files('a').into_iter().map(|(n, t)| (n, t.to_string())));
        if b_files {
            v.extend(slot_files('b').into_iter().map(|(n, t)| (n, t.to_string())));
        }
        v
    }

    fn load_card(c: &[(String, String)], tryboot: bool) -> FirmwareLoad {
        let refs: Vec<(&str, &str)> = c.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        load(&refs, tryboot, Some(DTB)).unwrap()
    }

    #[test]
    fn the_firmware_boots_the_slot_config_txt_names() {
        let l = load_card(&card(true, true), false);
        assert_eq!(l.config, "config.txt");
        assert_eq!(l.os_prefix, "slot-a/");
        assert_eq!(l.kernel, "slot-a/vmlinuz");
        assert_eq!(l.initramfs.as_deref(), Some("slot-a/initrd.img"));
        assert_eq!(l.dtb.as_deref(), Some("slot-a/bcm2837-rpi-3-b.dtb"));
        assert_eq!(l.cmdline, "slot-a/cmdline.txt");
        assert!(l.arm_64bit);
    }

    #[test]
    fn a_model_filter_picks_its_u_boot_and_32_bit_is_the_default() {
        // pi3-armhf's config.txt: one U-Boot build per Pi model.
        let text = "kernel=u-boot.bin\n[pi3]\nkernel=u-boot-pi3.bin\n[all]\nenable_uart=1\n";
        let files = [
            ("config.txt", text),
            ("u-boot.bin", ""),
            ("u-boot-pi3.bin", ""),
        ];
        let l = load(&files, false, None).unwrap();
        assert_eq!(l.kernel, "u-boot-pi3.bin");
        assert!(!l.arm_64bit);
        let read = |p: &str| (p == "config.txt").then(|| text.to_string());
        let pi2 = firmware_load(&|_| true, &read, false, "pi2", "kernel7.img", None).unwrap();
        assert_eq!(pi2.kernel, "u-boot.bin");
    }

    #[test]
    fn the_tryboot_flag_reads_tryboot_txt_once_it_exists() {
        let l = load_card(&card(true, true), true);
        assert_eq!(l.config, "tryboot.txt");
        assert_eq!(l.kernel, "slot-b/vmlinuz");
        assert_eq!(l.cmdline, "slot-b/cmdline.txt");
        // The flag without a tryboot.txt: config.txt.
        let l = load_card(&card(false, true), true);
        assert_eq!((l.config, l.os_prefix.as_str()), ("config.txt", "slot-a/"));
    }

    #[test]
    fn a_prefix_without_its_kernel_and_dtb_is_ignored() {
        // tryboot.txt names slot b, whose kernel is gone (a disarmed slot): the firmware
        // drops the prefix and looks at the root, where there is no kernel.
        let l = load_card(&card(true, false), true);
        assert_eq!(l.os_prefix, "");
        assert_eq!(l.kernel, "vmlinuz");
        // The DTB counts too.
        let mut c = card(true, true);
        c.retain(|(n, _)| n != "slot-b/bcm2837-rpi-3-b.dtb");
        assert_eq!(load_card(&c, true).os_prefix, "");
        // No DTB to check (the machine makes its own): the kernel alone decides.
        let refs: Vec<(String, String)> = c;
        let r: Vec<(&str, &str)> = refs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(load(&r, true, None).unwrap().os_prefix, "slot-b/");
    }

    #[test]
    fn filters_defaults_and_upstream_kernel() {
        let text = "upstream_kernel=1\n[pi4]\nkernel=pi4.img\n[pi3]\nramfsfile=r.img\n\
                    [tryboot]\ncmdline=try.txt\n[all]\ndevice_tree=x.dtb # comment\n";
        let files = [
            ("config.txt", text),
            ("upstream/kernel8.img", ""),
            ("upstream/x.dtb", ""),
        ];
        let l = load(&files, false, Some(DTB)).unwrap();
        assert_eq!(l.os_prefix, "upstream/");
        assert_eq!(l.kernel, "upstream/kernel8.img");
        assert_eq!(l.initramfs.as_deref(), Some("upstream/r.img"));
        assert_eq!(l.dtb.as_deref(), Some("upstream/x.dtb"));
        assert_eq!(l.cmdline, "upstream/cmdline.txt");
        // [tryboot] lines apply under the flag only.
        assert_eq!(
            load(&files, true, Some(DTB)).unwrap().cmdline,
            "upstream/try.txt"
        );
        // Without the flag tryboot.txt is never read: no config.txt is an error.
        let e = load(&[("tryboot.txt", "")], false, None).unwrap_err();
        assert!(e.to_string().contains("no config.txt"), "{e}");
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
