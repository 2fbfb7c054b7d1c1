//! Embeds the built-in data (boards/, profiles/, overlays/) in the binary, so that an installed
//! or copied `edgeimg` needs no source tree. Writes `$OUT_DIR/builtin_data.rs`: one
//! `profile::builtin::Entry` per folder, file and symbolic link, in path order, each file with
//! whether it is executable (the only mode bit the overlays' loader keeps).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const TOPS: [&str; 3] = ["boards", "profiles", "overlays"];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut out = String::from("pub static ENTRIES: &[Entry] = &[\n");
    for top in TOPS {
        println!("cargo:rerun-if-changed={top}");
        walk(&root, &root.join(top), &mut out);
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("builtin_data.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

fn walk(root: &Path, dir: &Path, out: &mut String) {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .expect("below the project")
            .to_str()
            .unwrap_or_else(|| panic!("{}: path is not UTF-8", p.display()))
            .to_string()
    };
    let _ = writeln!(
        out,
        "    Entry {{ path: {:?}, kind: Kind::Dir }},",
        rel(dir)
    );
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("reading a folder entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).expect("reading a link");
            let _ = writeln!(
                out,
                "    Entry {{ path: {:?}, kind: Kind::Symlink({:?}) }},",
                rel(&path),
                target.to_str().expect("link target is UTF-8")
            );
        } else if meta.is_dir() {
            walk(root, &path, out);
        } else if meta.is_file() {
            let _ = writeln!(
                out,
                "    Entry {{ path: {:?}, kind: Kind::File {{ executable: {}, data: include_bytes!({:?}) }} }},",
                rel(&path),
                meta.permissions().mode() & 0o111 != 0,
                path.to_str().expect("path is UTF-8")
            );
        }
    }
}
