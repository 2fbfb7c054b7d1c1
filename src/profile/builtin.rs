//! The built-in boards, profiles and overlays, embedded in the binary by `build.rs`: an
//! installed or copied `edgeimg` builds without its source tree. At run time they are laid
//! out once per process in a private temporary folder (removed at exit, and by the signal
//! cleanup), so that the rest of the code reads them as files, exactly as it reads a
//! `--data-dir`. Modes are fixed (0755 folders and executables, 0644 other files), so what a
//! build reads from them depends on their content only, never on a checkout's umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One embedded folder, file or symbolic link, its path relative to the project.
pub struct Entry {
    pub path: &'static str,
    pub kind: Kind,
}

pub enum Kind {
    Dir,
    File {
        executable: bool,
        data: &'static [u8],
    },
    Symlink(&'static str),
}

include!(concat!(env!("OUT_DIR"), "/builtin_data.rs"));

/// The built-in data laid out in a temporary folder; removed on drop.
#[derive(Debug)]
pub struct Builtin {
    dir: tempfile::TempDir,
    _registered: crate::util::cleanup::Registered,
}

impl Builtin {
    /// Writes every embedded entry under a new temporary folder.
    pub fn extract() -> Result<Builtin> {
        let dir = tempfile::Builder::new()
            .prefix("edgeimg-data-")
            .tempdir()
            .context("making a temporary folder for edgeimg's built-in data")?;
        let registered = crate::util::cleanup::register(dir.path());
        write_entries(dir.path())?;
        Ok(Builtin {
            dir,
            _registered: registered,
        })
    }

    /// The folder holding `boards/`, `profiles/` and `overlays/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn write_entries(root: &Path) -> Result<()> {
    for e in ENTRIES {
        let path: PathBuf = root.join(e.path);
        let step = || format!("writing edgeimg's built-in {}", path.display());
        match &e.kind {
            Kind::Dir => {
                std::fs::create_dir_all(&path).with_context(step)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .with_context(step)?;
            }
            Kind::File { executable, data } => {
                std::fs::write(&path, data).with_context(step)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .with_context(step)?;
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).with_context(step)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the checkout's boards/, profiles/ and overlays/ is embedded, with its
    /// content and its executable bit.
    #[test]
    fn embedded_data_is_the_checkout() {
        let project = Path::new(env!("CARGO_MANIFEST_DIR"));
        let b = Builtin::extract().unwrap();
        let mut files = 0;
        for e in ENTRIES {
            let on_disk = project.join(e.path);
            let extracted = b.root().join(e.path);
            let meta = std::fs::symlink_metadata(&extracted).unwrap();
            if let Kind::File { executable, data } = e.kind {
                files += 1;
                assert_eq!(std::fs::read(&on_disk).unwrap(), data, "{}", e.path);
                assert_eq!(std::fs::read(&extracted).unwrap(), data, "{}", e.path);
                let exec = std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o111 != 0;
                assert_eq!(exec, executable, "{}", e.path);
                let want = if executable { 0o755 } else { 0o644 };
                assert_eq!(meta.permissions().mode() & 0o7777, want, "{}", e.path);
            }
        }
        assert!(files > 20, "only {files} files embedded");
        assert_eq!(
            std::fs::metadata(b.root().join("overlays/initramfs/init"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let root = b.root().to_path_buf();
        drop(b);
        assert!(!root.exists(), "{} left behind", root.display());
    }
}
