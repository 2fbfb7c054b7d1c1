//! The project's own file trees (`overlays/<name>/`), read into a [`Tree`]. Files ending in
//! `.j2` are minijinja templates rendered with the build's context and lose the suffix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::tree::{Entry, Tree, TreePath};

/// Reads `dir` recursively into a tree. Modes are normalized (0755 for anything executable,
/// else 0644) so that the checkout's umask does not leak into the image; owner is root.
pub fn load(dir: &Path, context: &minijinja::Value) -> Result<Tree> {
    let mut tree = Tree::new();
    if !dir.is_dir() {
        bail!("overlay directory {} is missing", dir.display());
    }
    let mut env = minijinja::Environment::new();
    // Config files end in a newline; minijinja drops it unless told otherwise.
    env.set_keep_trailing_newline(true);
    walk(dir, dir, &mut tree, &env, context)?;
    Ok(tree)
}

fn walk(
    top: &Path,
    dir: &Path,
    tree: &mut Tree,
    env: &minijinja::Environment,
    ctx: &minijinja::Value,
) -> Result<()> {
    for e in crate::util::host_dir::read_dir_sorted(dir)? {
        let path = e.path();
        let rel = path
            .strip_prefix(top)
            .expect("below top")
            .to_string_lossy()
            .to_string();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            tree.insert(&TreePath::strict(&rel)?, Entry::dir(0o755))?;
            walk(top, &path, tree, env, ctx)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            tree.add_symlink(&rel, &target.to_string_lossy())?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let (rel, data) = match rel.strip_suffix(".j2") {
                Some(stripped) => (stripped.to_string(), render(env, &path, &data, ctx)?),
                None => (rel, data),
            };
            tree.add_file(&rel, data, mode)?;
        }
    }
    Ok(())
}

fn render(
    env: &minijinja::Environment,
    path: &Path,
    data: &[u8],
    ctx: &minijinja::Value,
) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(data)
        .with_context(|| format!("{}: template is not UTF-8", path.display()))?;
    let out = env
        .render_str(text, ctx)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_rendered_and_modes_normalized() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname.j2"), "{{ name }}\n").unwrap();
        std::fs::write(dir.path().join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let t = load(dir.path(), &minijinja::context! { name => "n1" }).unwrap();
        assert_eq!(&*t.read("etc/hostname").unwrap(), b"n1\n");
        assert!(t.get("etc/hostname.j2").is_none());
        assert_eq!(t.get("run").unwrap().mode, 0o755);
    }

    #[test]
    fn template_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.j2"), "{% if %}").unwrap();
        let e = load(dir.path(), &minijinja::context! {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.j2"), "{e}");
    }
}
