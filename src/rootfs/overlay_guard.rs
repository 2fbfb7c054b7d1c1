//! An overlay file that replaces a file the packages installed must say so: the project's
//! `overlays/rootfs.replaces` lists such paths (one a line, `#` comments). Anything else that
//! the overlay would silently overwrite is an error naming the path and the list.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::tree::Tree;

/// Reads a replace list; a missing file is an empty list.
pub fn read_list(path: &Path) -> Result<BTreeSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut list = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let p = l.trim_start_matches('/');
        if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            bail!(
                "{}:{}: {l:?} is not a plain path inside the root",
                path.display(),
                n + 1
            );
        }
        list.insert(p.to_string());
    }
    Ok(list)
}

/// The paths of `overlay` (files and symlinks) that already exist in `base`, after resolving
/// the parents through `base`'s symlinks (`bin/x` is `usr/bin/x` when `bin -> usr/bin`).
pub fn replaced(base: &Tree, overlay: &Tree) -> Vec<String> {
    let mut v = Vec::new();
    for (p, e) in overlay.iter() {
        if p.is_root() || e.is_dir() {
            continue;
        }
        let target = base.resolve_parents(p).unwrap_or_else(|_| p.clone());
        if base.get_path(&target).is_some() || base.get_path(p).is_some() {
            v.push(p.as_str().to_string());
        }
    }
    v
}

/// Fails when the overlay in `overlay_dir` would replace a package file not named in
/// `list_path`.
pub fn check(base: &Tree, overlay: &Tree, overlay_dir: &Path, list_path: &Path) -> Result<()> {
    let allowed = read_list(list_path)?;
    let unsaid: Vec<String> = replaced(base, overlay)
        .into_iter()
        .filter(|p| !allowed.contains(p))
        .collect();
    if !unsaid.is_empty() {
        bail!(
            "{} would replace {} file(s) installed by the packages without saying so: {}; \
             if that is meant, add the path(s) to {}, else rename the overlay file",
            overlay_dir.display(),
            unsaid.len(),
            unsaid.join(", "),
            list_path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trees() -> (Tree, Tree) {
        let mut base = Tree::new();
        base.add_dir("usr/bin", 0o755).unwrap();
        base.add_symlink("bin", "usr/bin").unwrap();
        base.add_file("usr/bin/tool", "pkg", 0o755).unwrap();
        base.add_file("etc/motd", "pkg", 0o644).unwrap();
        let mut ov = Tree::new();
        ov.add_file("etc/motd", "ours", 0o644).unwrap();
        ov.add_file("bin/tool", "ours", 0o755).unwrap();
        ov.add_file("etc/new", "ours", 0o644).unwrap();
        (base, ov)
    }

    #[test]
    fn replacements_are_found_through_symlinked_parents() {
        let (base, ov) = trees();
        assert_eq!(replaced(&base, &ov), vec!["bin/tool", "etc/motd"]);
    }

    #[test]
    fn unlisted_replacement_is_an_error_listed_one_is_not() {
        let (base, ov) = trees();
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("rootfs.replaces");
        let err = check(&base, &ov, Path::new("overlays/rootfs"), &list)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin/tool, etc/motd"), "{err}");
        assert!(err.contains("rootfs.replaces"), "{err}");
        std::fs::write(&list, "# meant\n/etc/motd\n").unwrap();
        let err = check(&base, &ov, Path::new("o"), &list)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 file(s)") && err.contains("bin/tool"),
            "{err}"
        );
        std::fs::write(&list, "etc/motd\nbin/tool\n").unwrap();
        check(&base, &ov, Path::new("o"), &list).unwrap();
    }

    #[test]
    fn list_entries_leaving_the_tree_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("l");
        std::fs::write(&list, "ok/path\n../etc/shadow\n").unwrap();
        let err = read_list(&list).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(read_list(&d.path().join("missing")).unwrap().is_empty());
    }
}
