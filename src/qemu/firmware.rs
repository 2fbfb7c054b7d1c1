//! What a board's VM needs from the host: the QEMU binary named by `qemu.system` and the UEFI
//! firmware listed under `[qemu.firmware]`, found before any disk is copied; when something
//! is missing, the error names the board's Debian packages to install.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::QemuSpec;

/// What the host provides for a board's VM.
#[derive(Debug)]
pub(super) struct Host {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The firmware, when the board names one.
    pub firmware: Option<Firmware>,
}

impl Host {
    /// The firmware for one VM whose files live in `dir` (see [`Firmware::for_vm`]).
    pub fn vm_firmware(&self, dir: &Path) -> Result<Option<VmFirmware>> {
        self.firmware.as_ref().map(|f| f.for_vm(dir)).transpose()
    }
}

/// Firmware files found on the host: the code image and, for split firmware, its vars template.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Firmware {
    pub code: PathBuf,
    pub vars_template: Option<PathBuf>,
}

/// The firmware as one VM starts it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum VmFirmware {
    /// A combined image, given with `-bios`.
    Combined(PathBuf),
    /// Read-only code and the VM's own copy of the vars, which the firmware writes to.
    Split { code: PathBuf, vars: PathBuf },
}

impl Firmware {
    /// The firmware for one VM whose files live in `dir`: split firmware gets its own copy of
    /// the vars template there.
    pub fn for_vm(&self, dir: &Path) -> Result<VmFirmware> {
        let Some(template) = &self.vars_template else {
            return Ok(VmFirmware::Combined(self.code.clone()));
        };
        let vars = dir.join("efivars.fd");
        std::fs::copy(template, &vars)
            .with_context(|| format!("copying {}", template.display()))?;
        Ok(VmFirmware::Split {
            code: self.code.clone(),
            vars,
        })
    }
}

/// Checks the host has QEMU and the firmware before anything is copied.
pub(super) fn host_check(spec: &QemuSpec) -> Result<Host> {
    if spec.kernel_direct && spec.direct.is_none() {
        bail!(
            "qemu.kernel_direct = true needs a [qemu.direct] table naming the kernel, initrd, dtb \
             and cmdline_file on the boot partition"
        );
    }
    let qemu = find_in_path(&spec.system).with_context(|| {
        format!(
            "{} is not installed: install {}",
            spec.system,
            install_hint(spec)
        )
    })?;
    Ok(Host {
        qemu,
        firmware: find_firmware(spec)?,
    })
}

/// The first `code` entry that exists, with the `vars` entry at its index (which must exist
/// too); a `code` entry with no `vars` entry is a combined image.
fn find_firmware(spec: &QemuSpec) -> Result<Option<Firmware>> {
    let Some(fw) = &spec.firmware else {
        return Ok(None);
    };
    for (i, code) in fw.code.iter().enumerate() {
        if !Path::new(code).is_file() {
            continue;
        }
        match fw.vars.get(i) {
            Some(vars) if Path::new(vars).is_file() => {
                return Ok(Some(Firmware {
                    code: code.into(),
                    vars_template: Some(vars.into()),
                }))
            }
            Some(_) => continue,
            None => {
                return Ok(Some(Firmware {
                    code: code.into(),
                    vars_template: None,
                }))
            }
        }
    }
    bail!(
        "no UEFI firmware for {}: none of {} exists (with its vars file {}): install {}",
        spec.machine,
        fw.code.join(", "),
        fw.vars.join(", "),
        install_hint(spec)
    )
}

/// What to install, for the error messages: the board's `qemu.packages`.
fn install_hint(spec: &QemuSpec) -> String {
    if spec.packages.is_empty() {
        "QEMU for this machine".to_string()
    } else {
        format!(
            "the Debian package(s) {} (apt-get install {})",
            spec.packages.join(" "),
            spec.packages.join(" ")
        )
    }
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        return Path::new(binary).is_file().then(|| PathBuf::from(binary));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::tests::x86;
    use crate::qemu::FirmwareSpec;

    #[test]
    fn missing_qemu_names_the_packages() {
        let mut spec = x86();
        spec.system = "qemu-system-does-not-exist".into();
        let err = host_check(&spec).unwrap_err().to_string();
        assert!(err.contains("qemu-system-x86 ovmf"), "{err}");
        let mut spec = x86();
        spec.system = "/bin/sh".into();
        spec.firmware = Some(FirmwareSpec {
            code: vec!["/nonexistent/CODE.fd".into()],
            vars: vec![],
        });
        let err = host_check(&spec).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/CODE.fd") && err.contains("apt-get install"),
            "{err}"
        );
    }

    #[test]
    fn code_pairs_with_the_vars_at_its_index_and_split_vars_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            p.display().to_string()
        };
        let (code4m, code, vars, combined) = (
            dir.path().join("CODE_4M.fd").display().to_string(),
            file("CODE.fd"),
            file("VARS.fd"),
            file("OVMF.fd"),
        );
        let mut spec = x86();
        // The 4M code is missing: the next pair wins, not the 4M vars with the other code.
        spec.firmware = Some(FirmwareSpec {
            code: vec![code4m, code.clone(), combined.clone()],
            vars: vec![file("VARS_4M.fd"), vars.clone()],
        });
        let fw = find_firmware(&spec).unwrap().unwrap();
        assert_eq!(fw.code, PathBuf::from(&code));
        assert_eq!(fw.vars_template, Some(PathBuf::from(&vars)));
        let vm_dir = tempfile::tempdir().unwrap();
        let VmFirmware::Split { vars: copy, .. } = fw.for_vm(vm_dir.path()).unwrap() else {
            panic!("split firmware started as combined");
        };
        assert_eq!(copy, vm_dir.path().join("efivars.fd"));
        assert_eq!(std::fs::read(&copy).unwrap(), b"VARS.fd");
        // With the pair's vars gone, the combined image (no vars entry) is next.
        std::fs::remove_file(&vars).unwrap();
        let fw = find_firmware(&spec).unwrap().unwrap();
        assert_eq!(
            fw.for_vm(vm_dir.path()).unwrap(),
            VmFirmware::Combined(combined.into())
        );
    }
}
