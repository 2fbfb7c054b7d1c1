//! The dpkg database of the root (`/var/lib/dpkg/status`, `/var/lib/dpkg/info/<pkg>.list`),
//! as dpkg would have left it after installing the packages: what vulnerability scanners
//! (syft, grype, trivy) and `dpkg-query --admindir` read to know what the image holds.
//!
//! Each installed package gets its own `control` stanza with `Status: install ok installed`,
//! and a `.list` of the paths its data archive put into the root (those the build removed
//! afterwards, like documentation or the Pi firmware that moved to the boot partition, are
//! left out; see [`prune_lists`]). Packages are in name order, so the bytes depend only on the
//! packages.

use anyhow::{Context, Result};

use crate::source::debian::deb::DebInfo;
use crate::tree::{Tree, TreePath};

/// The dpkg database folder in the root.
pub const ADMINDIR: &str = "var/lib/dpkg";

/// One installed package.
pub struct Installed {
    pub name: String,
    pub architecture: String,
    pub multi_arch_same: bool,
    /// The control stanza with its `Status:` line, ending in one newline.
    pub stanza: String,
    /// Absolute paths, as dpkg lists them (`/usr/bin/x`), `/.` first.
    pub paths: Vec<String>,
}

/// The installed-package record of a package unpacked from `info`, with the tree paths its
/// data archive gave (in archive order).
pub fn installed(info: &DebInfo, paths: &[TreePath]) -> Result<Installed> {
    let name = info
        .name()
        .context("the package's control file has no Package field")?
        .to_string();
    let architecture = info.fields.get("Architecture").unwrap_or("all").to_string();
    let multi_arch_same = info.fields.get("Multi-Arch") == Some("same");
    let mut stanza = String::new();
    let mut status_written = false;
    for line in info.control.lines() {
        if line.trim().is_empty() {
            continue;
        }
        // dpkg writes its own Status; a control file has none.
        if line.starts_with("Status:") {
            continue;
        }
        stanza.push_str(line);
        stanza.push('\n');
        if !status_written && line.starts_with("Package:") {
            stanza.push_str("Status: install ok installed\n");
            status_written = true;
        }
    }
    let mut list = vec!["/.".to_string()];
    for p in paths {
        if !p.is_root() {
            list.push(p.absolute());
        }
    }
    Ok(Installed {
        name,
        architecture,
        multi_arch_same,
        stanza,
        paths: list,
    })
}

/// The `.list` file name of a package (`<name>:<arch>.list` for Multi-Arch: same, as dpkg
/// names them).
fn list_name(p: &Installed) -> String {
    if p.multi_arch_same {
        format!("{}:{}.list", p.name, p.architecture)
    } else {
        format!("{}.list", p.name)
    }
}

/// Writes the database into `root`.
pub fn write(root: &mut Tree, pkgs: &mut [Installed]) -> Result<()> {
    pkgs.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    let mut status = String::new();
    for p in pkgs.iter() {
        if !status.is_empty() {
            status.push('\n');
        }
        status.push_str(&p.stanza);
    }
    root.mkdir_p(&TreePath::new(&format!("{ADMINDIR}/info"))?)?;
    for d in ["updates", "triggers", "alternatives"] {
        root.mkdir_p(&TreePath::new(&format!("{ADMINDIR}/{d}"))?)?;
    }
    root.add_file(&format!("{ADMINDIR}/status"), status.into_bytes(), 0o644)?;
    root.add_file(&format!("{ADMINDIR}/available"), Vec::new(), 0o644)?;
    root.add_file(&format!("{ADMINDIR}/info/format"), b"1\n".to_vec(), 0o644)?;
    for p in pkgs.iter() {
        let mut text = p.paths.join("\n");
        text.push('\n');
        root.add_file(
            &format!("{ADMINDIR}/info/{}", list_name(p)),
            text.into_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

/// Removes from every `.list` the paths the root no longer has (removed by the build after
/// unpacking), following symlinks as dpkg does (`/bin/x` through `bin -> usr/bin`).
pub fn prune_lists(root: &mut Tree) -> Result<()> {
    let info = format!("{ADMINDIR}/info/");
    let lists: Vec<String> = root
        .iter()
        .map(|(p, _)| p.as_str().to_string())
        .filter(|p| p.starts_with(&info) && p.ends_with(".list"))
        .collect();
    for l in lists {
        let text = root.read(&l).map(|b| b.to_vec()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut kept = String::new();
        for line in text.lines() {
            let rel = line.trim_start_matches('/');
            let present = rel == "."
                || TreePath::new(rel)
                    .ok()
                    .and_then(|p| root.resolve_parents(&p).ok())
                    .is_some_and(|p| root.get_path(&p).is_some());
            if present {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        root.add_file(&l, kept.into_bytes(), 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(control: &str) -> DebInfo {
        let fields = crate::source::debian::control::parse_stanzas(control, "t")
            .unwrap()
            .remove(0);
        DebInfo {
            control: control.into(),
            fields,
            ..Default::default()
        }
    }

    #[test]
    fn status_has_one_stanza_per_package_with_its_status_and_lists() {
        let a = info("Package: libfoo1\nVersion: 1.0-1\nArchitecture: arm64\nMulti-Arch: same\nSource: foo\nDescription: x\n more\n");
        let b = info("Package: bar\nVersion: 2\nArchitecture: all\n");
        let mut tree = Tree::new();
        tree.add_file("usr/bin/bar", b"x".to_vec(), 0o755).unwrap();
        let paths = [
            TreePath::new("usr").unwrap(),
            TreePath::new("usr/bin/bar").unwrap(),
            TreePath::new("usr/share/doc/bar").unwrap(),
        ];
        let mut pkgs = vec![installed(&a, &[]).unwrap(), installed(&b, &paths).unwrap()];
        write(&mut tree, &mut pkgs).unwrap();
        prune_lists(&mut tree).unwrap();
        let status = String::from_utf8(tree.read("var/lib/dpkg/status").unwrap().to_vec()).unwrap();
        assert_eq!(
            status,
            "Package: bar\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\n\
             Package: libfoo1\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: arm64\nMulti-Arch: same\nSource: foo\nDescription: x\n more\n"
        );
        let list =
            String::from_utf8(tree.read("var/lib/dpkg/info/bar.list").unwrap().to_vec()).unwrap();
        assert_eq!(
            list, "/.\n/usr\n/usr/bin/bar\n",
            "the removed doc path is gone"
        );
        assert!(tree.read("var/lib/dpkg/info/libfoo1:arm64.list").is_some());
    }
}
