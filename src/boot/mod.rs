//! Boot methods: how a board's firmware finds the kernel, as types with behaviour.
//!
//! A board names its method in `[boot] method = ...` (data, in `profile::BootSpec`); [`method`]
//! turns that into a [`BootMethod`], and the rest of the build asks it what it needs: which
//! files of the packages the boot partition takes, how the boot partition looks, which
//! partition types the table gets. Network boot ([`pxe`]) is a further output a method can
//! offer, not a changed plan.
//!
//! - [`uefi`]: systemd-boot on the ESP and a Unified Kernel Image holding the kernel command
//!   line, signed with the user's Secure Boot keys when given.
//! - [`rpi`]: the Raspberry Pi firmware reading `config.txt` and `cmdline.txt` from the FAT.

pub mod pxe;
pub mod rpi;
pub mod uboot;
pub mod uefi;

use anyhow::{Context, Result};

use crate::disk::layout::{PartType, TableKind};
use crate::plan::Plan;
use crate::profile::{Arch, Board, BootSpec, PartitionTable};
use crate::rootfs::Unpacked;
use crate::tree::Tree;

/// On every kernel command line edgeimg writes, before the board's and the node's arguments
/// (a later `panic=` of theirs wins): a kernel that panics restarts the board after 10 s
/// instead of halting. Without it a trial whose kernel or initramfs fails would stop at the
/// panic until someone power-cycles the node, and never reach the loader that counts the try
/// and boots the old slot; a network-booted node would stay down the same way.
pub const PANIC_REBOOT: &str = "panic=10";

/// The partition types of an image's boot, root and data partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionTypes {
    pub table: TableKind,
    pub boot: PartType,
    pub root: PartType,
    pub data: PartType,
}

/// What a boot method does for a build.
pub trait BootMethod {
    /// The method's name, as `edgeimg boards` shows it.
    fn name(&self) -> &'static str;

    /// Paths in the unpacked (non-kernel) packages that the boot partition copies: the boot
    /// loader or the firmware. The root artifact cache keeps exactly these.
    fn package_files(&self) -> Vec<String>;

    /// The boot partition's fixed part (everything but the node config): boot loader or
    /// firmware, kernel, initramfs and the kernel command line in the form this firmware
    /// reads it.
    fn boot_tree(&self, plan: &Plan, u: &Unpacked, initrd: &[u8], cmdline: &str) -> Result<Tree>;

    /// Raspberry Pi Imager device tags this image is offered for; None: the firmware is not
    /// one Imager writes for, and no Imager list is written.
    fn imager_devices(&self) -> Option<&[String]> {
        None
    }

    /// The boot files of an update bundle (`build --signing-key`): the files that carry a
    /// slot's command line once per slot, the others once. `boot_a` is the image's boot tree
    /// (slot A), `cmdline_b` slot B's command line.
    fn bundle_boot_files(
        &self,
        _plan: &Plan,
        _u: &Unpacked,
        _initrd: &[u8],
        _boot_a: &Tree,
        _cmdline_b: &str,
    ) -> Result<Vec<crate::bundle::BootFile>> {
        anyhow::bail!(
            "boot method `{}` cannot take A/B updates yet: build without --signing-key",
            self.name()
        )
    }

    /// Whether the method can also be booted over the network (`build --format pxe`).
    fn netboot(&self) -> bool {
        false
    }
}

/// The boot method of a board.
pub fn method(board: &Board) -> Box<dyn BootMethod + '_> {
    match &board.boot {
        BootSpec::Uefi {
            efi_binary,
            efi_path,
            uki_stub,
        } => Box::new(uefi::Uefi {
            efi_binary,
            efi_path,
            uki_stub: uki_stub.as_deref(),
        }),
        BootSpec::Rpi(spec) => Box::new(rpi::Rpi { spec }),
    }
}

/// Whether the board's boot chain is one `--secure-boot` signs (UEFI with a UKI).
pub fn signs_with_secure_boot(board: &Board) -> bool {
    matches!(
        &board.boot,
        BootSpec::Uefi {
            uki_stub: Some(_),
            ..
        }
    )
}

/// The partition types for a board: the ESP and the Discoverable Partitions root type of the
/// architecture on GPT; FAT32 (LBA) and plain Linux on MBR, which is what the Raspberry Pi
/// firmware reads.
pub fn partition_types(board: &Board) -> PartitionTypes {
    match board.partition_table {
        PartitionTable::Gpt => PartitionTypes {
            table: TableKind::Gpt,
            boot: PartType::Esp,
            root: match board.arch {
                Arch::Amd64 => PartType::LinuxRootX86_64,
                Arch::Arm64 => PartType::LinuxRootArm64,
                Arch::Armhf => PartType::LinuxRootArm,
            },
            data: PartType::LinuxData,
        },
        PartitionTable::Mbr => PartitionTypes {
            table: TableKind::Mbr,
            boot: PartType::Fat32Lba,
            root: PartType::Linux,
            data: PartType::Linux,
        },
    }
}

/// The kernel image of the unpacked kernel packages (`boot/vmlinuz-<kver>`, or
/// `usr/lib/modules/<kver>/vmlinuz` in the split packages of newer kernels).
pub fn kernel_image(u: &Unpacked) -> Result<std::sync::Arc<[u8]>> {
    crate::kmod::kernel_file(&u.kernel, &u.kver, "vmlinuz").with_context(|| {
        format!(
            "the kernel packages have neither boot/vmlinuz-{0} nor usr/lib/modules/{0}/vmlinuz",
            u.kver
        )
    })
}
