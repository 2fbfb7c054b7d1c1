//! Finding and vetting the block device to flash, from a sysfs-like tree.
//!
//! Everything is read relative to a `root` (normally `/`; tests pass a prepared tree):
//! `sys/block/<disk>/{dev,size,removable,ro,device/{model,vendor,serial}}`, partitions as
//! `sys/block/<disk>/<part>/partition`, device-mapper parents as `sys/block/<dm>/slaves/*`,
//! and `proc/self/mounts` and `proc/swaps`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// One whole disk as the kernel shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`sdb`, `mmcblk0`).
    pub name: String,
    /// `/dev/<name>`.
    pub path: PathBuf,
    /// The kernel's device number, `major:minor` (`sys/block/<name>/dev`; empty when the tree
    /// does not tell): the node opened at `path` must be this device.
    pub devno: String,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    pub model: String,
    pub serial: String,
    /// Its partitions' kernel names.
    pub partitions: Vec<String>,
    /// Mount points of the disk or its partitions (also swap).
    pub mounts: Vec<String>,
    /// Holds the running system's `/`.
    pub system: bool,
}

impl BlockDevice {
    /// `SanDisk Ultra 29.7 GiB (serial 1234)`.
    pub fn describe(&self) -> String {
        let model = if self.model.is_empty() {
            "unknown model"
        } else {
            &self.model
        };
        let serial = if self.serial.is_empty() {
            "no serial".to_string()
        } else {
            format!("serial {}", self.serial)
        };
        format!(
            "{} {model}, {:.1} GiB, {serial}{}",
            self.path.display(),
            self.size as f64 / (1u64 << 30) as f64,
            if self.removable { ", removable" } else { "" }
        )
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Kernel names that are never flash targets.
fn virtual_disk(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

struct Mounts {
    /// (kernel name of the source device, mount point)
    entries: Vec<(String, String)>,
}

impl Mounts {
    fn read(root: &Path) -> Result<Mounts> {
        let p = root.join("proc/self/mounts");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("reading {} (needed to refuse mounted devices)", p.display())
        })?;
        let mut entries = Vec::new();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (Some(src), Some(mp)) = (f.next(), f.next()) else {
                continue;
            };
            if let Some(n) = dev_name(root, src) {
                entries.push((n, mp.replace("\\040", " ")));
            }
        }
        // Swap areas count as in use.
        if let Ok(text) = std::fs::read_to_string(root.join("proc/swaps")) {
            for l in text.lines().skip(1) {
                if let Some(src) = l.split_whitespace().next() {
                    if let Some(n) = dev_name(root, src) {
                        entries.push((n, "[swap]".into()));
                    }
                }
            }
        }
        Ok(Mounts { entries })
    }
}

/// `/dev/sda1` -> `sda1`; `/dev/mapper/x` and `/dev/disk/by-*/...` are resolved through the
/// symlink when the root is the real `/`.
fn dev_name(root: &Path, src: &str) -> Option<String> {
    let p = Path::new(src);
    if !src.starts_with("/dev/") {
        return None;
    }
    let resolved = if root == Path::new("/") {
        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
    } else {
        p.to_path_buf()
    };
    resolved
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
}

/// The whole disks under a kernel name: itself when it is a disk, its disk when it is a
/// partition, and through device-mapper `slaves/` the disks below.
fn disks_of(root: &Path, name: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if depth > 8 {
        return out;
    }
    let sys_block = root.join("sys/block");
    if sys_block.join(name).is_dir() {
        let slaves = sys_block.join(name).join("slaves");
        match std::fs::read_dir(&slaves) {
            Ok(rd) => {
                let mut any = false;
                for e in rd.flatten() {
                    any = true;
                    out.extend(disks_of(root, &e.file_name().to_string_lossy(), depth + 1));
                }
                if !any {
                    out.insert(name.to_string());
                }
            }
            Err(_) => {
                out.insert(name.to_string());
            }
        }
        return out;
    }
    if let Ok(rd) = std::fs::read_dir(&sys_block) {
        for e in rd.flatten() {
            let disk = e.file_name().to_string_lossy().to_string();
            let part_dir = sys_block.join(&disk).join(name);
            if part_dir.join("partition").is_file() {
                let holders_of_slaves = disks_of(root, &disk, depth + 1);
                out.extend(holders_of_slaves);
            }
        }
    }
    out
}

fn load(root: &Path, name: &str, mounts: &Mounts, system: &BTreeSet<String>) -> BlockDevice {
    let dir = root.join("sys/block").join(name);
    let mut partitions: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("partition").is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    partitions.sort();
    let sectors: u64 = read_trim(&dir.join("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let vendor = read_trim(&dir.join("device/vendor")).unwrap_or_default();
    let model = read_trim(&dir.join("device/model"))
        .or_else(|| read_trim(&dir.join("device/name")))
        .unwrap_or_default();
    let model = [vendor, model]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let serial = read_trim(&dir.join("device/serial"))
        .or_else(|| read_trim(&dir.join("device/wwid")))
        .or_else(|| read_trim(&dir.join("serial")))
        .unwrap_or_default();
    let mut on_disk: BTreeSet<&str> = partitions.iter().map(String::as_str).collect();
    on_disk.insert(name);
    // Device-mapper devices stacked on this disk or its partitions are in use too.
    let mut mount_points = Vec::new();
    for (src, mp) in &mounts.entries {
        if on_disk.contains(src.as_str()) || disks_of(root, src, 0).contains(name) {
            mount_points.push(mp.clone());
        }
    }
    BlockDevice {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        devno: read_trim(&dir.join("dev")).unwrap_or_default(),
        size: sectors * 512,
        removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
        read_only: read_trim(&dir.join("ro")).as_deref() == Some("1"),
        model,
        serial,
        partitions,
        mounts: mount_points,
        system: system.contains(name),
    }
}

fn system_disks(root: &Path, mounts: &Mounts) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (src, mp) in &mounts.entries {
        if mp == "/" || mp == "/boot" || mp == "/usr" || mp == "[swap]" {
            out.extend(disks_of(root, src, 0));
        }
    }
    out
}

/// Every whole disk (virtual ones left out), sorted by name.
pub fn list_devices(root: &Path) -> Result<Vec<BlockDevice>> {
    let mounts = Mounts::read(root)?;
    let system = system_disks(root, &mounts);
    let dir = root.join("sys/block");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !virtual_disk(n))
        .collect();
    names.sort();
    Ok(names
        .iter()
        .map(|n| load(root, n, &mounts, &system))
        .collect())
}

/// Candidates for flashing: removable, not mounted, not the system disk, not empty.
pub fn candidates(root: &Path) -> Result<Vec<BlockDevice>> {
    Ok(list_devices(root)?
        .into_iter()
        .filter(|d| d.removable && d.mounts.is_empty() && !d.system && d.size > 0)
        .collect())
}

/// Checks that `device` (`/dev/sdb`) may be overwritten; returns what it is.
pub fn check_target(root: &Path, device: &Path, force: bool) -> Result<BlockDevice> {
    let resolved = if root == Path::new("/") {
        std::fs::canonicalize(device)
            .with_context(|| format!("{}: no such device", device.display()))?
    } else {
        device.to_path_buf()
    };
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .with_context(|| format!("{}: not a device path", device.display()))?;
    let mounts = Mounts::read(root)?;
    let system = system_disks(root, &mounts);
    if !root.join("sys/block").join(&name).is_dir() {
        let parent = disks_of(root, &name, 0);
        if let Some(disk) = parent.iter().next().filter(|d| *d != &name) {
            bail!(
                "{} is a partition of /dev/{disk}: flash the whole disk (--device /dev/{disk})",
                device.display()
            );
        }
        bail!(
            "{}: not a whole disk known to the kernel (no {}); run `edgeimg flash IMAGE` without --device to list candidates",
            device.display(),
            root.join("sys/block").join(&name).display()
        );
    }
    let dev = load(root, &name, &mounts, &system);
    if dev.system {
        bail!(
            "{} holds the running system (/, /boot, /usr or swap): refusing to overwrite it, even with --force",
            dev.describe()
        );
    }
    if !dev.mounts.is_empty() {
        bail!(
            "{} is mounted at {}: unmount it first (e.g. `umount {}`)",
            dev.describe(),
            dev.mounts.join(", "),
            dev.mounts.join(" ")
        );
    }
    if dev.read_only {
        bail!(
            "{} is read-only (write-protect switch of the card?)",
            dev.describe()
        );
    }
    if dev.size == 0 {
        bail!("{} has no medium (size 0): insert the card", dev.describe());
    }
    if !dev.removable && !force {
        bail!(
            "{} is not a removable disk: if you are sure, pass --force",
            dev.describe()
        );
    }
    Ok(dev)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake tree: sda (internal, holds / via sda2), sdb (removable card), sdc (removable,
    /// mounted partition), sdd (internal, free), nvme0n1 (LVM root through dm-0), loop0.
    pub fn fake_root(dir: &Path) {
        let w = |p: &str, s: &str| {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        let disk = |n: &str, removable: bool, model: &str, serial: &str, parts: &[&str]| {
            w(&format!("sys/block/{n}/size"), "62333952\n");
            w(
                &format!("sys/block/{n}/removable"),
                if removable { "1\n" } else { "0\n" },
            );
            w(&format!("sys/block/{n}/ro"), "0\n");
            w(
                &format!("sys/block/{n}/device/model"),
                &format!("{model}\n"),
            );
            w(
                &format!("sys/block/{n}/device/serial"),
                &format!("{serial}\n"),
            );
            for p in parts {
                w(&format!("sys/block/{n}/{p}/partition"), "1\n");
            }
        };
        disk("sda", false, "Samsung SSD", "S1", &["sda1", "sda2"]);
        disk("sdb", true, "SD Card Reader", "CARD123", &["sdb1"]);
        disk("sdc", true, "USB Stick", "STICK9", &["sdc1"]);
        disk("sdd", false, "Spare HDD", "HDD7", &[]);
        disk("nvme0n1", false, "NVMe", "N1", &["nvme0n1p1"]);
        w("sys/block/dm-0/size", "100\n");
        w("sys/block/dm-0/slaves/nvme0n1p1/x", "");
        w("sys/block/loop0/size", "100\n");
        w(
            "proc/self/mounts",
            "/dev/sda2 / ext4 rw 0 0\n/dev/sda1 /boot/efi vfat rw 0 0\nproc /proc proc rw 0 0\n\
             /dev/sdc1 /media/user/STICK vfat rw 0 0\n/dev/dm-0 /srv ext4 rw 0 0\n",
        );
    }

    #[test]
    fn each_refusal_and_the_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_root(root);
        let err = |dev: &str, force: bool| {
            format!(
                "{:#}",
                check_target(root, Path::new(dev), force).unwrap_err()
            )
        };
        let e = err("/dev/sda", true);
        assert!(e.contains("running system"), "{e}");
        let e = err("/dev/sdc", false);
        assert!(e.contains("mounted at /media/user/STICK"), "{e}");
        let e = err("/dev/sdb1", false);
        assert!(e.contains("partition of /dev/sdb"), "{e}");
        let e = err("/dev/sdd", false);
        assert!(
            e.contains("not a removable") && e.contains("--force"),
            "{e}"
        );
        let e = err("/dev/nvme0n1", true);
        assert!(
            e.contains("mounted at /srv"),
            "dm-0 on nvme0n1p1 is in use: {e}"
        );
        let e = err("/dev/sdz", false);
        assert!(e.contains("not a whole disk"), "{e}");
        let ok = check_target(root, Path::new("/dev/sdb"), false).unwrap();
        assert_eq!(ok.model, "SD Card Reader");
        assert_eq!(ok.serial, "CARD123");
        assert_eq!(ok.size, 62333952 * 512);
        assert!(ok.describe().contains("CARD123"));
        check_target(root, Path::new("/dev/sdd"), true).expect("--force allows a fixed disk");
        let c: Vec<String> = candidates(root)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(c, ["sdb"]);
        let all: Vec<String> = list_devices(root)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(all, ["nvme0n1", "sda", "sdb", "sdc", "sdd"]);
    }
}
