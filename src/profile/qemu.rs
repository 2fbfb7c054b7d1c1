//! The board's QEMU settings: the serde types of the `[qemu]` table of `boards/*.toml`, and
//! nothing else.
//!
//! Plain data, so that a board stays data: the board schema (`Board.qemu`) holds a
//! [`QemuSpec`], and `qemu` (which boots images) reads it. The file imports nothing else, and
//! sits in the board schema module (`profile`) beside the rest of a board.
//!
//! The serialized form is part of the build plan, whose sha256 seeds every UUID in an image:
//! the field names, their order, the serde attributes and the spellings of [`DiskInterface`]
//! must not change (the tests below hold them to the form they had as strings).

use serde::{Deserialize, Serialize};

/// How a board boots under QEMU (`[qemu]` in boards/*.toml).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// The QEMU binary: `qemu-system-x86_64`.
    pub system: String,
    /// `-M`: `q35`, `virt`, `raspi3b`.
    pub machine: String,
    #[serde(default)]
    pub cpu: Option<String>,
    pub memory_mib: u32,
    pub smp: u32,
    #[serde(default)]
    pub firmware: Option<FirmwareSpec>,
    /// How the disk is attached: `virtio`, `nvme`, `ahci`, `usb` or `sd`.
    pub disk: DiskInterface,
    /// The network card model (`virtio-net-pci`); empty for none.
    pub net_device: String,
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Boot the kernel directly (`-kernel`, `-initrd`, `-dtb`, `-append`) with the files
    /// named in `[qemu.direct]`, read from the image's boot partition (QEMU's Raspberry Pi
    /// machines do not run the Pi's GPU firmware).
    #[serde(default)]
    pub kernel_direct: bool,
    #[serde(default)]
    pub direct: Option<DirectSpec>,
    /// Debian packages that provide QEMU and the firmware, for the error message.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Which serial port carries the console (0 = the first). Raspberry Pi models put the
    /// kernel console on the second one; the ports before it are connected to nothing.
    #[serde(default)]
    pub console_serial: u32,
}

/// How the disk is attached to the VM (`disk` in `[qemu]`); serialized as the board files
/// spell it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskInterface {
    /// virtio-blk on PCI: `/dev/vda`.
    Virtio,
    /// An NVMe controller: `/dev/nvme0n1`.
    Nvme,
    /// A SATA disk on an AHCI controller: `/dev/sda`.
    Ahci,
    /// The same as `ahci`, under the name board files may also use (kept as written, since
    /// the spelling is part of the plan).
    Sata,
    /// A USB stick on an xHCI controller: `/dev/sda`.
    Usb,
    /// The machine's SD card slot: `/dev/mmcblk0` (QEMU wants a power-of-two size).
    Sd,
    /// No disk.
    #[serde(rename = "none")]
    Detached,
}

/// Files on the image's boot partition (the first partition, FAT) that a kernel-direct boot
/// hands to QEMU.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectSpec {
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub dtb: Option<String>,
    /// A file holding the kernel command line (`cmdline.txt`), first line used.
    #[serde(default)]
    pub cmdline_file: Option<String>,
    /// Arguments appended to that command line (`console=ttyAMA0` on `-M virt`).
    #[serde(default)]
    pub append: Vec<String>,
    /// The test harness plays the Raspberry Pi firmware of this model (its `[pi3]`-style
    /// config filter): the kernel, initramfs and `cmdline.txt` are the ones `config.txt` (or
    /// `tryboot.txt` after `reboot '0 tryboot'`) names under its `os_prefix`; `kernel` is the
    /// name used when the config has no `kernel=`, `dtb` the device tree that firmware picks
    /// (none: the machine makes its own, as on `-M virt`). `initrd` and `cmdline_file` are
    /// then not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Under `firmware`: the device tree handed to the machine has the SD card on the SDHCI
    /// rather than the Pi's sdhost. QEMU 7.2 does not answer the firmware property U-Boot's
    /// sdhost driver sets its clock with, and the 32-bit U-Boot then divides by zero
    /// (`crate::qemu` documents it where it patches the tree).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sd_on_sdhci: bool,
}

/// UEFI firmware: candidate paths, first existing wins. `code[i]` pairs with `vars[i]` (the
/// 4M code needs the 4M vars); a `code` entry with no `vars` entry at its index is a
/// combined image, given with `-bios`. The vars file is always copied: it is written to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSpec {
    pub code: Vec<String>,
    #[serde(default)]
    pub vars: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `QemuSpec` as it was while `disk` was a string: the form the plan hashes.
    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct StringDiskSpec {
        system: String,
        machine: String,
        #[serde(default)]
        cpu: Option<String>,
        memory_mib: u32,
        smp: u32,
        #[serde(default)]
        firmware: Option<FirmwareSpec>,
        disk: String,
        net_device: String,
        #[serde(default)]
        extra_args: Vec<String>,
        #[serde(default)]
        kernel_direct: bool,
        #[serde(default)]
        direct: Option<DirectSpec>,
        #[serde(default)]
        packages: Vec<String>,
        #[serde(default)]
        console_serial: u32,
    }

    /// The `[qemu]` table of every board file, by file name.
    fn board_tables() -> Vec<(String, toml::Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let mut tables: Vec<(String, toml::Value)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                let board: toml::Table =
                    toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                (p.display().to_string(), board["qemu"].clone())
            })
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }

    #[test]
    fn every_board_serializes_as_it_did_with_a_string_disk() {
        let tables = board_tables();
        assert!(tables.len() >= 5, "{tables:?}");
        for (file, table) in tables {
            let spec: QemuSpec = table.clone().try_into().expect(&file);
            let old: StringDiskSpec = table.try_into().expect(&file);
            let new_json = serde_json::to_string(&spec).unwrap();
            assert_eq!(new_json, serde_json::to_string(&old).unwrap(), "{file}");
            let mut by_value = serde_json::to_value(&old).unwrap();
            by_value["disk"] = serde_json::Value::String(old.disk.clone());
            assert_eq!(serde_json::to_value(&spec).unwrap(), by_value, "{file}");
            let back: QemuSpec = serde_json::from_str(&new_json).unwrap();
            assert_eq!(back, spec, "{file}");
        }
    }

    #[test]
    fn every_disk_interface_keeps_its_board_file_spelling() {
        for (word, iface) in [
            ("virtio", DiskInterface::Virtio),
            ("nvme", DiskInterface::Nvme),
            ("ahci", DiskInterface::Ahci),
            ("sata", DiskInterface::Sata),
            ("usb", DiskInterface::Usb),
            ("sd", DiskInterface::Sd),
            ("none", DiskInterface::Detached),
        ] {
            let spec: QemuSpec = toml::from_str(&format!(
                "system='q'\nmachine='m'\nmemory_mib=1\nsmp=1\ndisk='{word}'\nnet_device=''\n"
            ))
            .unwrap();
            assert_eq!(spec.disk, iface);
            assert_eq!(
                serde_json::to_string(&iface).unwrap(),
                format!("\"{word}\"")
            );
        }
    }

    #[test]
    fn an_unknown_disk_is_a_parse_error_at_its_line() {
        let text = "system='q'\nmachine='m'\nmemory_mib=1\nsmp=1\ndisk='floppy'\nnet_device=''\n";
        let err = toml::from_str::<QemuSpec>(text).unwrap_err();
        let msg = err.message();
        assert!(msg.contains("floppy") && msg.contains("virtio"), "{msg}");
        let at = err.span().expect("a span");
        assert_eq!(text[..at.start].matches('\n').count() + 1, 5, "{err}");
    }

    #[test]
    fn spec_refuses_unknown_fields() {
        let err = toml::from_str::<QemuSpec>("system='q'\nmachine='m'\nmemory_mib=1\nsmp=1\ndisk='virtio'\nnet_device=''\nmemory=2\n");
        assert!(err.unwrap_err().to_string().contains("memory"));
    }
}
