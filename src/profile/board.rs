//! A board: `boards/<name>.toml`. Plain data: no code branches on a board's name, so adding a
//! board is adding a file. What a boot method does with its `[boot]` table lives in `boot/`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::qemu::QemuSpec;
use super::SuitePackages;

/// The CPU architecture of a board, in the spellings each ecosystem uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
    Armhf,
}

impl Arch {
    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// The architecture suffix of k0s release assets.
    pub fn k0s(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "arm",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    Gpt,
    Mbr,
}

/// How the board's firmware finds the kernel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum BootSpec {
    /// UEFI firmware loading systemd-boot from the ESP's removable-media path.
    Uefi {
        /// Path of the systemd-boot EFI binary inside the package tree.
        efi_binary: String,
        /// Where the firmware looks for it on the ESP.
        efi_path: String,
        /// systemd-stub inside the package tree: the image boots one Unified Kernel Image
        /// built from it (kernel, initramfs and command line in one signable PE file).
        #[serde(default)]
        uki_stub: Option<String>,
    },
    /// The Raspberry Pi's own firmware (no U-Boot) reading `config.txt` from the FAT.
    Rpi(RpiBoot),
}

impl BootSpec {
    /// The boot method's name: what switches the root slots (build.env's BOOT_METHOD, slot.sh's
    /// methods, a bundle's `boot_method`, `boards`' listing).
    pub fn method_name(&self) -> &'static str {
        match self {
            BootSpec::Uefi { .. } => "uefi",
            BootSpec::Rpi(r) => r.method_name(),
        }
    }
}

impl RpiBoot {
    /// `uboot` when U-Boot switches the slots, `rpi` when the firmware's tryboot does.
    pub fn method_name(&self) -> &'static str {
        if self.u_boot.is_some() {
            "uboot"
        } else {
            "rpi"
        }
    }
}

/// Partition sizes of the image.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSizes {
    /// The boot partition (FAT32), in MiB.
    pub boot_mib: u64,
    /// The read-only root partition (squashfs), in MiB.
    pub root_mib: u64,
    /// The placeholder data partition the first boot grows to fill the disk, in MiB.
    pub data_mib: u64,
}

/// A board: `boards/<name>.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub partition_table: PartitionTable,
    /// Archive components beyond the profile's (`non-free-firmware` for the Pi firmware).
    #[serde(default)]
    pub components: Vec<String>,
    /// The Debian kernel package (a metapackage is fine).
    pub kernel_package: String,
    /// The suite of the same archive the kernel comes from (`trixie-backports`), when not the
    /// profile's: the kernel package and the `linux-{image,base,binary,modules}-*` packages of
    /// its closure are taken from it (`--kernel-suite` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_suite: Option<String>,
    /// Packages taken from another suite of the same archive: suite -> package names (`*`
    /// matches any characters). A name that matches nothing here comes from the profile's suite.
    #[serde(default, skip_serializing_if = "SuitePackages::is_empty")]
    pub suites: SuitePackages,
    /// Extra Debian packages this board needs (bootloader, firmware).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Kernel arguments, console first.
    pub cmdline: Vec<String>,
    /// Modules the initramfs loads, by name; their dependencies are added in load order.
    pub initramfs_modules: Vec<String>,
    /// Extra modules for the root filesystem (network drivers, ...).
    #[serde(default)]
    pub root_modules: Vec<String>,
    pub partitions: PartitionSizes,
    pub boot: BootSpec,
    pub qemu: QemuSpec,
    /// Set when the board is listed but cannot be built: the reason is shown by `boards`.
    #[serde(default)]
    pub unsupported: Option<String>,
    #[serde(skip)]
    pub file: PathBuf,
}

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
    /// U-Boot between the firmware and the kernel (`[boot.u_boot]`): it picks the root slot
    /// and counts a trial's boots on the FAT, which the firmware cannot do with a mainline
    /// kernel (its one-shot tryboot flag needs a Raspberry Pi kernel patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_boot: Option<UBootSpec>,
}

/// The kernel's name in a slot folder of a board with U-Boot: boot.scr loads the board's
/// `kernel`, and `edgeimg update` and the node (slot.sh's SLOT_UBOOT_KERNEL) look for this
/// name, so a U-Boot board's `kernel` must be it ([`crate::profile::check`]).
pub const U_BOOT_KERNEL: &str = "vmlinuz";

/// `[boot.u_boot]` of a Raspberry Pi board: Debian's U-Boot build for it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UBootSpec {
    /// The U-Boot binary in the packages (`usr/lib/u-boot/rpi_arm64/u-boot.bin`); the
    /// firmware loads it from the slot folder as `config.txt`'s `kernel=`.
    pub binary: String,
    /// The U-Boot command that starts this board's kernel: `booti` (arm64 Image) or
    /// `bootz` (32-bit zImage).
    pub boot_command: UBootCommand,
    /// Other U-Boot builds by Pi model, for a board that covers several (`pi3 =
    /// ".../rpi_3_32b/u-boot.bin"`): the key is the firmware's `config.txt` filter, the file
    /// goes into the slot folder as [`UBootSpec::model_file`], and `config.txt` names it under
    /// `[pi3]`. Other models start `binary`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
}

impl UBootSpec {
    /// The name of `model`'s U-Boot build in a slot folder.
    pub fn model_file(model: &str) -> String {
        format!("u-boot-{model}.bin")
    }

    /// Every U-Boot build the board takes from its packages.
    pub fn binaries(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.binary).chain(self.models.values())
    }
}

/// The Pi firmware's model filters (`[pi3]` in `config.txt`), the keys
/// `[boot.u_boot.models]` takes.
pub const PI_MODEL_FILTERS: &[&str] = &[
    "pi0", "pi0w", "pi02", "pi1", "pi2", "pi3", "pi3+", "pi4", "pi400", "cm4", "cm4s", "pi5",
    "pi500", "cm5",
];

/// How U-Boot starts a kernel image.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UBootCommand {
    Booti,
    Bootz,
}

impl UBootCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            UBootCommand::Booti => "booti",
            UBootCommand::Bootz => "bootz",
        }
    }
}
