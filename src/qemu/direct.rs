//! Kernel-direct boots (`qemu.kernel_direct`): the files named in `[qemu.direct]` read from the
//! image's boot partition (the first partition, FAT), for QEMU machines that cannot run the
//! board's own firmware (the Raspberry Pi's GPU firmware).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::QemuSpec;

/// Kernel-direct files extracted from a disk.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct DirectFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// Reads the `[qemu.direct]` files from the disk's first (FAT) partition into `dir`; None
/// when the board boots through its firmware.
pub(super) fn extract_direct(
    spec: &QemuSpec,
    disk: &Path,
    dir: &Path,
) -> Result<Option<DirectFiles>> {
    if !spec.kernel_direct {
        return Ok(None);
    }
    let d = spec.direct.as_ref().context(
        "qemu.kernel_direct = true needs a [qemu.direct] table (kernel, initrd, dtb, cmdline_file)",
    )?;
    let what = disk.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {what}"))?;
    let table = crate::disk::read::read_table(&file, &what)?;
    let boot = table
        .partition(1)
        .with_context(|| format!("{what} has no partition 1 (the boot partition)"))?;
    let mut vol = crate::fs::fat::FatVolume::open(file, boot.offset())
        .with_context(|| format!("reading the boot partition of {what}"))?;
    let mut get = |name: &str| -> Result<Vec<u8>> {
        vol.read_file(name)
            .with_context(|| format!("reading {name} from the boot partition of {what}"))?
            .with_context(|| format!("{what}: the boot partition has no {name} (qemu.direct)"))
    };
    let put = |name: &str, data: Vec<u8>| -> Result<PathBuf> {
        let to = dir.join(format!("direct-{}", name.replace('/', "_")));
        std::fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?;
        Ok(to)
    };
    let kernel = put(&d.kernel, get(&d.kernel)?)?;
    let initrd = match &d.initrd {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let dtb = match &d.dtb {
        Some(n) => Some(put(n, get(n)?)?),
        None => None,
    };
    let file_text = match &d.cmdline_file {
        Some(n) => Some(get(n)?),
        None => None,
    };
    Ok(Some(DirectFiles {
        kernel,
        initrd,
        dtb,
        cmdline: command_line(file_text.as_deref(), &d.append),
    }))
}

/// The kernel command line: the first line of the `cmdline_file` (when there is one), then
/// the `append` arguments.
fn command_line(file_text: Option<&[u8]>, append: &[String]) -> Option<String> {
    let mut cmdline = file_text.map(|t| {
        String::from_utf8_lossy(t)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    if !append.is_empty() {
        let mut c = cmdline.unwrap_or_default();
        for a in append {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(a);
        }
        cmdline = Some(c);
    }
    cmdline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_the_first_line_then_the_appended_arguments() {
        let append = vec!["console=ttyAMA0".to_string(), "quiet".to_string()];
        assert_eq!(
            command_line(Some(b" root=PARTLABEL=root rw \nignored\n"), &[]).as_deref(),
            Some("root=PARTLABEL=root rw")
        );
        assert_eq!(
            command_line(Some(b"root=x\n"), &append).as_deref(),
            Some("root=x console=ttyAMA0 quiet")
        );
        assert_eq!(
            command_line(None, &append).as_deref(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(
            command_line(Some(b""), &append).as_deref(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(command_line(None, &[]), None);
    }
}
