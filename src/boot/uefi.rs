//! UEFI boards: systemd-boot at the firmware's removable-media path of the ESP, one loader
//! entry naming the kernel, the initramfs and the kernel command line.

use anyhow::{Context, Result};

use super::{kernel_image, BootMethod};
use crate::plan::Plan;
use crate::rootfs::Unpacked;
use crate::tree::Tree;

/// `[boot] method = "uefi"` of a board.
pub struct Uefi<'a> {
    /// Path of the systemd-boot EFI binary in the packages.
    pub efi_binary: &'a str,
    /// Where the firmware looks for it on the ESP (`EFI/BOOT/BOOTX64.EFI`).
    pub efi_path: &'a str,
}

/// The loader entry's file on the ESP.
pub const ENTRY: &str = "loader/entries/edgeimg.conf";

impl BootMethod for Uefi<'_> {
    fn name(&self) -> &'static str {
        "uefi"
    }

    fn package_files(&self) -> Vec<String> {
        vec![self.efi_binary.to_string()]
    }

    fn boot_tree(&self, plan: &Plan, u: &Unpacked, initrd: &[u8], cmdline: &str) -> Result<Tree> {
        let mut t = Tree::new();
        let kernel = kernel_image(u)?;
        let efi = u.root.read(self.efi_binary).with_context(|| {
            format!(
                "{}: boot.efi_binary {} is not in any package",
                plan.board.file.display(),
                self.efi_binary
            )
        })?;
        t.add_file(self.efi_path, efi.to_vec(), 0o644)?;
        t.add_file(
            "loader/loader.conf",
            "default edgeimg.conf\ntimeout 0\neditor no\n",
            0o644,
        )?;
        let entry = format!(
            "title edgeimg {} {} (linux {})\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n",
            plan.board.name, plan.role, u.kver
        );
        t.add_file(ENTRY, entry, 0o644)?;
        t.add_file("vmlinuz", kernel.to_vec(), 0o644)?;
        t.add_file("initrd.img", initrd.to_vec(), 0o644)?;
        Ok(t)
    }

    fn netboot(&self) -> bool {
        true
    }
}
