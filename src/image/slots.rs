//! The two root slots of an image or card as its boot files describe them: which slot has
//! boot files (bootable), which is on trial (armed by an update, not yet marked good), which
//! the loader boots next (active), and their versions.
//!
//! UEFI: one UKI per slot in `EFI/Linux/`, `edgeimg-<slot>.efi` when good,
//! `edgeimg-<slot>+LEFT[-DONE].efi` while on trial (systemd-boot's boot counting; `+0` is bad).
//! systemd-boot boots the first entry of its sorted list: bad entries last, then the same
//! IMAGE_ID by IMAGE_VERSION, newest first, then by file name, descending.
//!
//! Raspberry Pi: folders `slot-a/`, `slot-b/`; `config.txt`'s `os_prefix=` names the good
//! slot, `tryboot.txt`'s the trial. An image without slot folders boots slot A from the top.
//! With U-Boot, `slots.txt` names the good slot and `trial.txt` the trial and its tries left.

use std::cmp::Ordering;

use serde::Serialize;

use crate::disk::layout::Slot;
use crate::util::version::ImageVersion;

/// What switches an image's slots, found from its boot partition's files (decided here once,
/// for inspect and for `edgeimg update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// systemd-boot's boot counting on per-slot UKIs in `EFI/Linux/`.
    SystemdBoot,
    /// U-Boot's `boot.scr`: `slots.txt`, `trial.txt`.
    UBoot,
    /// The Raspberry Pi firmware alone: `config.txt`'s `os_prefix=slot-X/`, `tryboot.txt`.
    PiFirmware,
}

impl Loader {
    /// The loader of a boot partition with these file paths (as FAT is, case-insensitive).
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<Loader> {
        let (mut efi, mut scr, mut config) = (false, false, false);
        for p in paths {
            let p = p.to_ascii_lowercase();
            efi |= p.starts_with("efi/");
            scr |= p == crate::boot::rpi::BOOT_SCR;
            config |= p == crate::boot::rpi::CONFIG_TXT;
        }
        match (efi, config, scr) {
            (true, _, _) => Some(Loader::SystemdBoot),
            (false, true, true) => Some(Loader::UBoot),
            (false, true, false) => Some(Loader::PiFirmware),
            (false, false, _) => None,
        }
    }

    /// The boot method a bundle for it names (the board's `boot::method` name).
    pub fn boot_method(self) -> &'static str {
        match self {
            Loader::SystemdBoot => "uefi",
            Loader::UBoot => "uboot",
            Loader::PiFirmware => "rpi",
        }
    }
}

/// A UKI file name of the slots: its slot and boot counter (tries left, tries done).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiName {
    pub slot: Slot,
    pub counter: Option<(u32, u32)>,
}

/// `edgeimg-a.efi`, `edgeimg-b+3.efi`, `edgeimg-b+2-1.efi` (case-insensitive, as FAT is).
pub fn parse_uki_name(name: &str) -> Option<UkiName> {
    let lower = name.to_ascii_lowercase();
    let rest = lower.strip_prefix("edgeimg-")?.strip_suffix(".efi")?;
    let (slot, counter) = match rest.split_once('+') {
        None => (rest, None),
        Some((s, c)) => {
            let (left, done) = c.split_once('-').unwrap_or((c, "0"));
            let num = |t: &str| {
                (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| t.parse().ok())
                    .flatten()
            };
            (s, Some((num(left)?, num(done)?)))
        }
    };
    Some(UkiName {
        slot: Slot::parse(slot)?,
        counter,
    })
}

/// One slot as `inspect` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: Slot,
    /// Partition number of the slot's root.
    pub partition: u32,
    /// IMAGE_VERSION of its boot files or its root's build.env; None: nothing there.
    pub version: Option<String>,
    /// The slot's boot file (UKI) or folder, when it has one.
    pub boot_file: Option<String>,
    /// It has boot files the loader will try (good or on trial with tries left).
    pub bootable: bool,
    /// Armed by an update and not marked good yet.
    pub trial: bool,
    /// A trial whose tries are used up: the loader never boots it while the other is good.
    pub failed: bool,
    /// The slot the loader boots next.
    pub active: bool,
    /// Tries left of a trial (UEFI boot counting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries_left: Option<u32>,
}

/// A UKI on the ESP: its file name and the IMAGE_VERSION of its `.osrel`.
pub struct UkiFile {
    pub path: String,
    pub version: Option<String>,
}

/// The slots of a UEFI image from the UKIs in `EFI/Linux/` (`ukis`), with `root_versions` (the
/// IMAGE_VERSION of each slot's root, when readable) for slots without a UKI.
pub fn uefi_slots(
    ukis: &[UkiFile],
    partitions: [u32; 2],
    root_versions: [Option<String>; 2],
) -> Vec<SlotInfo> {
    let mut out: Vec<SlotInfo> = Slot::ALL
        .iter()
        .zip(partitions)
        .zip(root_versions)
        .map(|((&slot, partition), rv)| {
            let uki = ukis.iter().find_map(|u| {
                let name = u.path.rsplit('/').next().unwrap_or(&u.path);
                parse_uki_name(name)
                    .filter(|n| n.slot == slot)
                    .map(|n| (u, n))
            });
            match uki {
                Some((u, n)) => {
                    let left = n.counter.map(|c| c.0);
                    SlotInfo {
                        slot,
                        partition,
                        version: u.version.clone().or(rv),
                        boot_file: Some(u.path.clone()),
                        bootable: left != Some(0),
                        trial: left.is_some_and(|l| l > 0),
                        failed: left == Some(0),
                        active: false,
                        tries_left: left,
                    }
                }
                None => SlotInfo {
                    slot,
                    partition,
                    version: rv,
                    boot_file: None,
                    bootable: false,
                    trial: false,
                    failed: false,
                    active: false,
                    tries_left: None,
                },
            }
        })
        .collect();
    // systemd-boot's order: not bad first, then the newest version, then the name descending
    // (edgeimg-b before edgeimg-a).
    let first = out
        .iter()
        .enumerate()
        .filter(|(_, s)| s.boot_file.is_some())
        .min_by(|(_, a), (_, b)| boot_order(a, b))
        .map(|(i, _)| i);
    if let Some(i) = first {
        out[i].active = true;
    }
    out
}

fn boot_order(a: &SlotInfo, b: &SlotInfo) -> Ordering {
    let v = |s: &SlotInfo| {
        s.version
            .as_deref()
            .and_then(|v| ImageVersion::parse(v).ok())
    };
    a.failed
        .cmp(&b.failed)
        .then_with(|| v(b).cmp(&v(a)))
        .then_with(|| b.slot.cmp(&a.slot))
}

/// The slot `os_prefix=slot-X/` names in a config.txt, if any.
pub fn os_prefix_slot(config: &str) -> Option<Slot> {
    config.lines().rev().find_map(|l| {
        let v = l.trim().strip_prefix("os_prefix=")?;
        let v = v.trim().trim_end_matches('/');
        Slot::parse(v.strip_prefix("slot-")?)
    })
}

/// The slots of a Raspberry Pi image: `config.txt` (and `tryboot.txt`) text, whether each
/// slot folder has a kernel, and each root's IMAGE_VERSION.
pub fn rpi_slots(
    config: Option<&str>,
    tryboot: Option<&str>,
    has_kernel: [bool; 2],
    partitions: [u32; 2],
    root_versions: [Option<String>; 2],
) -> Vec<SlotInfo> {
    let good = config.and_then(os_prefix_slot);
    let trial = tryboot
        .and_then(os_prefix_slot)
        .filter(|t| Some(*t) != good);
    Slot::ALL
        .iter()
        .zip(partitions)
        .zip(root_versions)
        .map(|((&slot, partition), version)| {
            // No os_prefix: the firmware boots the top of the FAT, which is slot A's.
            let legacy = good.is_none() && slot == Slot::A && !has_kernel[slot.index()];
            let bootable = has_kernel[slot.index()] || legacy;
            SlotInfo {
                slot,
                partition,
                version,
                boot_file: bootable.then(|| {
                    if legacy {
                        "/".to_string()
                    } else {
                        format!("slot-{slot}/")
                    }
                }),
                bootable,
                trial: trial == Some(slot) && bootable,
                failed: false,
                active: good.unwrap_or(Slot::A) == slot && bootable,
                tries_left: None,
            }
        })
        .collect()
}

/// A value of a U-Boot text environment file (`name=value` lines, `#` comments, maybe a NUL
/// at the end from U-Boot's `env export -t`).
pub fn uboot_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().rev().find_map(|l| {
        let l = l.trim_end_matches('\0');
        l.strip_prefix(name)?.strip_prefix('=')
    })
}

/// The slot `slots.txt` names good: a when there is no file or it names none, as boot.scr
/// reads it.
pub fn uboot_good(slots_txt: Option<&str>) -> Slot {
    slots_txt
        .and_then(|t| uboot_value(t, "good"))
        .and_then(Slot::parse)
        .unwrap_or(Slot::A)
}

/// The slots of a Raspberry Pi image booted by U-Boot: `slots.txt` and `trial.txt` text,
/// whether each slot folder has a kernel, and each root's IMAGE_VERSION. U-Boot boots the
/// trial next while it has tries left, the good slot otherwise (a when slots.txt names none).
pub fn uboot_slots(
    slots_txt: Option<&str>,
    trial_txt: Option<&str>,
    has_kernel: [bool; 2],
    partitions: [u32; 2],
    root_versions: [Option<String>; 2],
) -> Vec<SlotInfo> {
    let good = uboot_good(slots_txt);
    let trial = trial_txt.and_then(|t| {
        let slot = Slot::parse(uboot_value(t, "trial")?)?;
        let tries: u32 = uboot_value(t, "tries")?.trim().parse().ok()?;
        (slot != good).then_some((slot, tries))
    });
    let next = match trial {
        Some((t, left)) if left > 0 && has_kernel[t.index()] => t,
        _ => good,
    };
    Slot::ALL
        .iter()
        .zip(partitions)
        .zip(root_versions)
        .map(|((&slot, partition), version)| {
            let bootable = has_kernel[slot.index()];
            let mine = trial.filter(|(t, _)| *t == slot);
            SlotInfo {
                slot,
                partition,
                version,
                boot_file: bootable.then(|| format!("slot-{slot}/")),
                bootable: bootable && mine.is_none_or(|(_, left)| left > 0),
                trial: bootable && mine.is_some_and(|(_, left)| left > 0),
                failed: bootable && mine.is_some_and(|(_, left)| left == 0),
                active: bootable && next == slot,
                tries_left: mine.map(|(_, left)| left),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uki(path: &str, v: &str) -> UkiFile {
        UkiFile {
            path: format!("EFI/Linux/{path}"),
            version: Some(v.into()),
        }
    }

    #[test]
    fn uki_names_carry_the_slot_and_the_boot_counter() {
        let n = |s| parse_uki_name(s);
        assert_eq!(n("edgeimg-a.efi").unwrap().counter, None);
        assert_eq!(n("edgeimg-b+3.efi").unwrap().counter, Some((3, 0)));
        assert_eq!(n("EDGEIMG-B+2-1.EFI").unwrap().slot, Slot::B);
        assert_eq!(n("edgeimg-b+0-3.efi").unwrap().counter, Some((0, 3)));
        for bad in [
            "edgeimg.efi",
            "edgeimg-c.efi",
            "edgeimg-a+x.efi",
            "edgeimg-a+.efi",
            "x.efi",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_fresh_image_boots_slot_a_and_slot_b_is_empty() {
        let s = uefi_slots(&[uki("edgeimg-a.efi", "1")], [2, 3], [None, None]);
        assert!(s[0].active && s[0].bootable && !s[0].trial);
        assert!(!s[1].bootable && !s[1].active && s[1].version.is_none());
    }

    #[test]
    fn a_newer_trial_boots_first_and_a_used_up_one_never() {
        let trial = [uki("edgeimg-a.efi", "1"), uki("edgeimg-b+3.efi", "2")];
        let s = uefi_slots(&trial, [2, 3], [None, None]);
        assert!(s[1].active && s[1].trial && s[1].tries_left == Some(3));
        assert!(!s[0].active && s[0].bootable);
        let bad = [uki("edgeimg-a.efi", "1"), uki("edgeimg-b+0-3.efi", "2")];
        let s = uefi_slots(&bad, [2, 3], [None, None]);
        assert!(s[0].active);
        assert!(s[1].failed && !s[1].bootable && !s[1].active);
        // Both good: the newer version.
        let both = [uki("edgeimg-a.efi", "10"), uki("edgeimg-b.efi", "9")];
        assert!(uefi_slots(&both, [2, 3], [None, None])[0].active);
    }

    #[test]
    fn raspberry_pi_slots_follow_config_and_tryboot() {
        let s = rpi_slots(None, None, [false, false], [2, 3], [Some("1".into()), None]);
        assert!(s[0].active && s[0].bootable && s[0].boot_file.as_deref() == Some("/"));
        let s = rpi_slots(
            Some("[all]\nos_prefix=slot-a/\n"),
            Some("os_prefix=slot-b/\n"),
            [true, true],
            [2, 3],
            [None, None],
        );
        assert!(s[0].active && !s[0].trial);
        assert!(s[1].trial && !s[1].active);
    }

    #[test]
    fn the_loader_is_known_by_its_files() {
        assert_eq!(
            Loader::of(["EFI/BOOT/BOOTX64.EFI", "loader/loader.conf"]),
            Some(Loader::SystemdBoot)
        );
        assert_eq!(
            Loader::of(["config.txt", "BOOT.SCR", "slot-a/vmlinuz"]),
            Some(Loader::UBoot)
        );
        assert_eq!(Loader::of(["config.txt"]), Some(Loader::PiFirmware));
        assert_eq!(Loader::of(["readme.txt", "boot.scr"]), None);
    }

    #[test]
    fn u_boot_slots_follow_slots_txt_and_the_tries_of_trial_txt() {
        let s = uboot_slots(Some("good=a\n"), None, [true, false], [2, 3], [None, None]);
        assert!(s[0].active && !s[0].trial && !s[1].bootable);
        // An armed trial boots next, and shows its tries.
        let t = "trial=b\ntries=1\n";
        let s = uboot_slots(
            Some("good=a\n"),
            Some(t),
            [true, true],
            [2, 3],
            [None, None],
        );
        assert!(s[1].trial && s[1].active && s[1].tries_left == Some(1));
        assert!(!s[0].active && s[0].bootable);
        // U-Boot counted it down (export -t ends with a NUL): used up, the good slot boots.
        let t = "trial=b\ntries=0\n\0";
        let s = uboot_slots(
            Some("good=a\n"),
            Some(t),
            [true, true],
            [2, 3],
            [None, None],
        );
        assert!(s[1].failed && !s[1].active && !s[1].trial && !s[1].bootable);
        assert!(s[0].active);
        // No slots.txt (or a torn one): a, as boot.scr does; a trial naming the good slot is none.
        let s = uboot_slots(
            Some("goo"),
            Some("trial=a\ntries=1"),
            [true, true],
            [2, 3],
            [None, None],
        );
        assert!(s[0].active && !s[0].trial && s[0].tries_left.is_none());
        // A trial whose folder has no kernel is skipped by boot.scr.
        let s = uboot_slots(
            Some("good=b\n"),
            Some("trial=a\ntries=1"),
            [false, true],
            [2, 3],
            [None, None],
        );
        assert!(s[1].active && !s[0].bootable && !s[0].trial);
    }

    /// Runs `script` under busybox sh with slot.sh sourced, BOOT_METHOD=`method` and the boot
    /// FAT at `fat`, booted on slot b; fails the test when it fails.
    fn slot_sh(fat: &std::path::Path, method: &str, script: &str) {
        let slot_sh = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("overlays/rootfs/usr/lib/edgeimg/slot.sh");
        let cmdline = fat.join("cmdline");
        std::fs::write(&cmdline, "edgeimg.slot=b\n").unwrap();
        // busybox sh, as on the node (scripts/install-deps test installs busybox-static).
        let out = std::process::Command::new("busybox")
            .args(["sh", "-c", &format!(". '{}'\n{script}", slot_sh.display())])
            .env("BOOT_METHOD", method)
            .env("EDGEIMG_ESP", fat)
            .env("EDGEIMG_CMDLINE", &cmdline)
            .env("EDGEIMG_BOOT_ID", &cmdline)
            .output()
            .expect("busybox (apt-get install busybox-static)");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The node (slot.sh) and edgeimg (the build, inspect and `edgeimg update` offline) write and
    /// read the same Pi boot files: a trial's config.txt for the firmware, trial.txt and
    /// slots.txt for U-Boot.
    #[test]
    fn slot_sh_and_edgeimg_write_the_same_pi_boot_files() {
        use crate::boot::rpi::{config_for_slot, slots_txt, trial_txt};
        let d = tempfile::tempdir().unwrap();
        let fat = d.path();
        for config in [
            "# edgeimg pi3\narm_64bit=1\nos_prefix=slot-a/\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n[pi4]\ndtparam=audio=off\n",
            // No os_prefix line at all: both add one at the end.
            "arm_64bit=1\nkernel=vmlinuz\n",
        ] {
            std::fs::write(fat.join("config.txt"), config).unwrap();
            slot_sh(
                fat,
                "rpi",
                "slot_rpi_config_for b \"$SLOT_ESP/config.txt\" \"$SLOT_ESP/tryboot.txt\"",
            );
            let node = std::fs::read_to_string(fat.join("tryboot.txt")).unwrap();
            assert_eq!(node, config_for_slot(config, Slot::B), "{config}");
        }
        // U-Boot: slot b armed from slot a, then committed from slot b's boot.
        std::fs::create_dir_all(fat.join("slot-b")).unwrap();
        std::fs::write(fat.join("slot-b/vmlinuz"), "k").unwrap();
        std::fs::write(fat.join("slots.txt"), slots_txt(Slot::A)).unwrap();
        std::fs::write(fat.join("cmdline-a"), "edgeimg.slot=a\n").unwrap();
        slot_sh(
            fat,
            "uboot",
            "SLOT_CMDLINE=$SLOT_ESP/cmdline-a slot_arm b 2",
        );
        let trial = std::fs::read_to_string(fat.join("trial.txt")).unwrap();
        assert_eq!(trial, trial_txt(Slot::B, 1));
        let slots = |f: &str| {
            let read = |n: &str| std::fs::read_to_string(fat.join(n)).ok();
            uboot_slots(
                read("slots.txt").as_deref(),
                read(f).as_deref(),
                [true, true],
                [2, 3],
                [None, None],
            )
        };
        assert!(slots("trial.txt")[1].trial && slots("trial.txt")[1].active);
        slot_sh(fat, "uboot", "slot_commit");
        let good = std::fs::read_to_string(fat.join("slots.txt")).unwrap();
        assert_eq!(good, slots_txt(Slot::B));
        assert!(!fat.join("trial.txt").exists());
        assert!(slots("trial.txt")[1].active && !slots("trial.txt")[1].trial);
    }
}
