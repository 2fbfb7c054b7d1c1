//! `SHA256SUMS` for the published files, in the format `sha256sum -c` reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::atomic::AtomicFile;

pub use crate::util::digest::sha256_file;

/// Writes `<dir>/SHA256SUMS` with one `<hex>  <name>` line for each of `files` (names relative
/// to `dir`, in the order given), atomically.
pub fn write_sha256sums(dir: &Path, files: &[&str]) -> Result<PathBuf> {
    let mut digests = Vec::new();
    for name in files {
        digests.push((name.to_string(), sha256_file(&dir.join(name))?));
    }
    write_sha256sums_of(dir, &digests)
}

/// Writes `SHA256SUMS` from digests the caller already computed (`(path relative to dir,
/// hex)`), so that large outputs are hashed once per build.
pub fn write_sha256sums_of(dir: &Path, digests: &[(String, String)]) -> Result<PathBuf> {
    let mut text = String::new();
    for (name, digest) in digests {
        // `sha256sum -c` reads paths relative to the folder; a name it would read another
        // way (a newline, a backslash escape) or one outside the folder cannot be listed.
        let outside = name.starts_with('/')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if name.contains('\n') || name.contains('\\') || outside {
            bail!(
                "{name:?} cannot be listed in SHA256SUMS: give a relative path inside {}",
                dir.display()
            );
        }
        text.push_str(&format!("{digest}  {name}\n"));
    }
    let out = dir.join("SHA256SUMS");
    let mut file = AtomicFile::create(&out)?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    file.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_tools::require_tool;

    #[test]
    fn sha256sum_accepts_the_file() {
        require_tool("sha256sum");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.img"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(dir.path().join("b.json"), b"{}").unwrap();
        write_sha256sums(dir.path(), &["a.img", "b.json"]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert!(text.starts_with(&sha256_file(&dir.path().join("a.img")).unwrap()));
        assert!(
            text.contains(
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a  b.json\n"
            ),
            "{text}"
        );
        let out = std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Only SHA256SUMS appears: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);

        std::fs::write(dir.path().join("b.json"), b"{ }").unwrap();
        let out = std::process::Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "a changed file must fail the check");
    }

    #[test]
    fn paths_inside_the_folder_are_listed_and_others_refused() {
        require_tool("sha256sum");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node/default")).unwrap();
        std::fs::write(dir.path().join("node/default/node.env"), b"x").unwrap();
        write_sha256sums(dir.path(), &["node/default/node.env"]).unwrap();
        let out = std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\nb"] {
            let digests = [(bad.to_string(), "00".repeat(32))];
            let e = write_sha256sums_of(dir.path(), &digests).unwrap_err();
            assert!(e.to_string().contains("cannot be listed"), "{bad}: {e}");
        }
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_sha256sums(dir.path(), &["nope.img"]).unwrap_err();
        assert!(format!("{err:#}").contains("nope.img"), "{err:#}");
        assert!(!dir.path().join("SHA256SUMS").exists());
    }
}
