//! UEFI boards: systemd-boot at the firmware's removable-media path of the ESP, and one
//! Unified Kernel Image (`EFI/Linux/edgeimg.efi`) that systemd-boot finds by itself (a
//! "Type #2" entry, no loader entry file): systemd-stub with the kernel, the initramfs and the
//! kernel command line (root hash included) in one PE file. With `build --secure-boot DIR`
//! both are Authenticode-signed with the user's db key and the ESP carries the signed lists
//! that enroll the keys (`loader/keys/auto/`). The node config stays editable on the FAT;
//! nothing there decides which code runs.
//!
//! A board without `boot.uki_stub` keeps the older layout: a loader entry naming `vmlinuz`,
//! `initrd.img` and the command line as text on the FAT.

use anyhow::{Context, Result};

use super::{kernel_image, BootMethod};
use crate::efi::pe::{assemble_uki, UkiSections};
use crate::plan::Plan;
use crate::rootfs::Unpacked;
use crate::tree::Tree;

/// `[boot] method = "uefi"` of a board.
pub struct Uefi<'a> {
    /// Path of the systemd-boot EFI binary in the packages.
    pub efi_binary: &'a str,
    /// Where the firmware looks for it on the ESP (`EFI/BOOT/BOOTX64.EFI`).
    pub efi_path: &'a str,
    /// Path of systemd-stub in the packages; None: no UKI, a loader entry instead.
    pub uki_stub: Option<&'a str>,
}

/// The loader entry's file on the ESP (boards without a UKI).
pub const ENTRY: &str = "loader/entries/edgeimg.conf";

/// The Unified Kernel Image of root slot A on the ESP, where systemd-boot looks for Type #2
/// entries: what a fresh image boots.
pub const UKI: &str = "EFI/Linux/edgeimg-a.efi";

/// The folder of the UKIs on the ESP.
pub const UKI_DIR: &str = "EFI/Linux";

/// The UKI of a root slot, without a boot counter: `EFI/Linux/edgeimg-<slot>.efi`. While on
/// trial it is `edgeimg-<slot>+LEFT[-DONE].efi`, which systemd-boot renames on every try.
pub fn uki_path(slot: crate::disk::layout::Slot) -> String {
    format!("{UKI_DIR}/edgeimg-{slot}.efi")
}

/// loader.conf of a UKI image. No `default`: systemd-boot then boots the first entry of its
/// sorted list (boot.c, config_select_default_entry), and its sort
/// (boot_entry_compare_indirect, systemd 257) puts entries with no tries left (`+0`, bad)
/// last, then orders the same IMAGE_ID by IMAGE_VERSION, newest first. So a trial of a newer
/// version boots first, and once its tries are used up the good slot boots again. A
/// `default` pattern would be followed even onto a bad entry.
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

/// Where systemd-boot looks for the `.auth` files it enrolls in setup mode.
pub const AUTO_KEYS: &str = "loader/keys/auto";

/// The kernel argument a signed UKI adds: with the boot chain verified, the running kernel
/// may not be changed either (no unsigned modules, no kexec of unsigned kernels, no writes
/// to kernel memory through /dev/mem).
pub const LOCKDOWN: &str = "lockdown=integrity";

/// SBAT line of the UKI (after systemd-stub's own), as ukify writes it.
const UKI_SBAT: &str =
    "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n";

impl Uefi<'_> {
    fn read_package_file(
        &self,
        plan: &Plan,
        u: &Unpacked,
        path: &str,
        key: &str,
    ) -> Result<Vec<u8>> {
        Ok(u.root
            .read(path)
            .with_context(|| {
                format!(
                    "{}: boot.{key} {path} is not in any package",
                    plan.board.file.display()
                )
            })?
            .to_vec())
    }
}

/// The command line a UKI of this plan carries: the build's, plus lockdown when signed.
pub fn uki_cmdline(plan: &Plan, cmdline: &str) -> String {
    match &plan.secure_boot {
        Some(_) => format!("{cmdline} {LOCKDOWN}"),
        None => cmdline.to_string(),
    }
}

/// `.osrel` of the UKI: what systemd-boot shows as the entry's title and version, and sorts
/// by (IMAGE_ID, then IMAGE_VERSION, newest first).
fn os_release(plan: &Plan, kver: &str) -> String {
    format!(
        "ID=edgeimg\nNAME=edgeimg\nID_LIKE=debian\nVERSION_ID={ver}\n\
         PRETTY_NAME=\"edgeimg {board} {role} {image} (Debian {suite}, linux {kver})\"\n\
         IMAGE_ID=edgeimg-{board}-{role}\nIMAGE_VERSION={image}\n",
        ver = plan.edgeimg_version,
        image = plan.image_version,
        board = plan.board.name,
        role = plan.role.to_string().replace('+', "-"),
        suite = plan.suite,
    )
}

impl BootMethod for Uefi<'_> {
    fn name(&self) -> &'static str {
        "uefi"
    }

    fn package_files(&self) -> Vec<String> {
        let mut v = vec![self.efi_binary.to_string()];
        v.extend(self.uki_stub.map(str::to_string));
        v
    }

    fn boot_tree(&self, plan: &Plan, u: &Unpacked, initrd: &[u8], cmdline: &str) -> Result<Tree> {
        let mut t = Tree::new();
        let kernel = kernel_image(u)?;
        let mut efi = self.read_package_file(plan, u, self.efi_binary, "efi_binary")?;
        let Some(stub_path) = self.uki_stub else {
            t.add_file(self.efi_path, efi, 0o644)?;
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
            return Ok(t);
        };
        let mut uki = build_uki(self, plan, u, initrd, cmdline, stub_path)?;
        let mut loader = LOADER_CONF.to_string();
        if let Some(sb) = &plan.secure_boot {
            let keys = crate::efi::keys::load(&sb.dir)?;
            let when = plan.source_date_epoch;
            efi = crate::efi::sign::sign_image(&efi, &keys.db, when)
                .with_context(|| format!("signing {}", self.efi_binary))?;
            uki = crate::efi::sign::sign_image(&uki, &keys.db, when).context("signing the UKI")?;
            for (name, data) in keys.auth {
                t.add_file(&format!("{AUTO_KEYS}/{name}.auth"), data, 0o644)?;
            }
            if sb.enroll {
                loader.push_str("secure-boot-enroll force\n");
            }
        }
        t.add_file(self.efi_path, efi, 0o644)?;
        t.add_file("loader/loader.conf", loader, 0o644)?;
        t.add_file(UKI, uki, 0o644)?;
        Ok(t)
    }

    fn bundle_boot_files(
        &self,
        plan: &Plan,
        u: &Unpacked,
        initrd: &[u8],
        boot_a: &Tree,
        cmdline_b: &str,
    ) -> Result<Vec<crate::bundle::BootFile>> {
        use crate::disk::layout::Slot;
        let Some(stub_path) = self.uki_stub else {
            anyhow::bail!(
                "{}: A/B updates need a UKI (boot.uki_stub): build without --signing-key",
                plan.board.file.display()
            );
        };
        let a = boot_a
            .read(UKI)
            .context("the boot tree has no UKI for slot A")?
            .to_vec();
        let mut b = build_uki(self, plan, u, initrd, cmdline_b, stub_path)?;
        if let Some(sb) = &plan.secure_boot {
            let keys = crate::efi::keys::load(&sb.dir)?;
            b = crate::efi::sign::sign_image(&b, &keys.db, plan.source_date_epoch)
                .context("signing slot B's UKI")?;
        }
        let path = format!("{UKI_DIR}/edgeimg-{}.efi", crate::bundle::SLOT_MARK);
        Ok(vec![
            crate::bundle::BootFile {
                path: path.clone(),
                slot: Some(Slot::A),
                data: a,
            },
            crate::bundle::BootFile {
                path,
                slot: Some(Slot::B),
                data: b,
            },
        ])
    }

    fn netboot(&self) -> bool {
        true
    }
}

/// The UKI of a plan: systemd-stub with the plan's kernel, initramfs and command line.
pub fn build_uki(
    m: &Uefi,
    plan: &Plan,
    u: &Unpacked,
    initrd: &[u8],
    cmdline: &str,
    stub_path: &str,
) -> Result<Vec<u8>> {
    let stub = m.read_package_file(plan, u, stub_path, "uki_stub")?;
    let kernel = kernel_image(u)?;
    let cmdline = uki_cmdline(plan, cmdline);
    assemble_uki(
        &stub,
        &UkiSections {
            osrel: os_release(plan, &u.kver).as_bytes(),
            cmdline: cmdline.as_bytes(),
            uname: u.kver.as_bytes(),
            sbat: UKI_SBAT,
            initrd,
            linux: &kernel,
        },
    )
    .with_context(|| format!("assembling the UKI from {stub_path}"))
}
