//! The house rule, checked: dependencies run one way, along the data flow of a build.
//!
//! [`LAYERS`] lists the top-level modules in flow order. A module may use the modules of
//! earlier layers and its own, never a later one: `tree` knows nothing of disks, `disk`
//! nothing of Debian, and only `commands` sees the command line. The test reads every file
//! under `src/`, collects each `crate::<module>` it names (in `use` lines and in paths alike)
//! and fails on an edge that points forward, naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The top-level modules, layer by layer, in the order the data flows. Modules in one layer
/// may not use each other.
pub const LAYERS: &[&[&str]] = &[
    &["util", "progress"],
    &["tree"],
    &["node"],
    &["cluster"],
    &["profile"],
    &["plan"],
    &["source"],
    &["kmod"],
    &["rootfs"],
    &["fs"],
    &["disk"],
    &["bundle"],
    &["efi"],
    &["boot"],
    &["cache"],
    &["manifest"],
    &["build"],
    &["image"],
    &["flash"],
    &["update"],
    &["qemu"],
    &["serve"],
    // clap types only: they import nothing of the crate, and only `commands` uses them.
    &["cli"],
    &["commands"],
];

/// Modules that must import nothing of the crate.
pub const LEAVES: &[&str] = &["cli"];

/// One `crate::` reference that breaks the order.
#[derive(Debug, PartialEq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` uses `crate::{}`: {}",
            self.file, self.line, self.from, self.to, self.why
        )
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`src/disk/xz.rs` -> `disk`).
pub fn module_of(rel: &Path) -> Option<String> {
    let mut parts = rel.iter().map(|p| p.to_string_lossy().to_string());
    let first = parts.next()?;
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    Some(name)
}

/// The modules named as `crate::<name>` in a file's code, with the line of each. Comments
/// are skipped; `use crate::{a::x, b::{y, z}}` names `a` and `b`, over several lines too.
fn references(text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_at = |i: usize| code[..i].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Names at the group's top level only.
            let (mut depth, mut at_start) = (0usize, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && !c.is_whitespace() => {
                        at_start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.push((line_at(i + "crate::{".len() + j), name));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.push((line_at(i), name));
            }
        }
    }
    out
}

/// Checks one file's text as a part of `module`.
pub fn check_text(file: &str, module: &str, text: &str) -> Vec<Violation> {
    let Some(from_layer) = layer_of(module) else {
        return vec![Violation {
            file: file.into(),
            line: 1,
            from: module.into(),
            to: module.into(),
            why: "this module is not in LAYERS (src/layering.rs): add it where it belongs in \
                  the data flow"
                .into(),
        }];
    };
    let mut out = Vec::new();
    for (line, to) in references(text) {
        if to == module {
            continue;
        }
        let why = if LEAVES.contains(&module) {
            "this module is a leaf and imports nothing of the crate".to_string()
        } else {
            match layer_of(&to) {
                None => continue, // an item re-exported at the crate root, or a macro
                Some(l) if l < from_layer => continue,
                Some(l) if l == from_layer => {
                    format!("`{module}` and `{to}` are in the same layer")
                }
                Some(_) => format!(
                    "`{to}` comes later in the data flow than `{module}`: move the shared \
                     piece down, or pass it in"
                ),
            }
        };
        out.push(Violation {
            file: file.into(),
            line,
            from: module.into(),
            to,
            why,
        });
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every violation in the crate's `src/`.
pub fn check_tree(src: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let module = module_of(rel).unwrap();
        if matches!(module.as_str(), "lib" | "main" | "layering") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        out.extend(check_text(&rel.display().to_string(), &module, &text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_run_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let v = check_tree(&src);
        let text: Vec<String> = v.iter().map(|v| v.to_string()).collect();
        assert!(
            v.is_empty(),
            "imports against the data flow:\n{}",
            text.join("\n")
        );
    }

    #[test]
    fn every_top_level_module_has_a_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let mut seen = BTreeMap::new();
        for line in lib.lines() {
            if let Some(m) = line.trim().strip_prefix("pub mod ") {
                let m = m.trim_end_matches(';');
                seen.insert(m.to_string(), layer_of(m));
            }
        }
        for (m, l) in &seen {
            assert!(l.is_some(), "src/lib.rs declares `{m}`, which LAYERS lacks");
        }
        for layer in LAYERS {
            for m in *layer {
                assert!(
                    seen.contains_key(*m),
                    "LAYERS names `{m}`, which src/lib.rs lacks"
                );
            }
        }
    }

    #[test]
    fn a_forward_import_is_caught() {
        // The board schema reaching into the boot code, as it once did.
        let v = check_text(
            "profile/mod.rs",
            "profile",
            "use crate::node::Role;\nuse crate::boot::rpi::RpiBoot; // wrong way\n",
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].line, v[0].to.as_str()), (2, "boot"));
        assert!(
            v[0].to_string().starts_with("profile/mod.rs:2:"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn grouped_imports_and_paths_count_too() {
        let v = check_text(
            "tree/mod.rs",
            "tree",
            "use crate::{\n    util::digest,\n    disk::{layout, Image},\n};\nlet x = crate::fs::cpio::X; // crate::build in a comment\n",
        );
        let got: Vec<(usize, &str)> = v.iter().map(|v| (v.line, v.to.as_str())).collect();
        assert_eq!(got, [(3, "disk"), (5, "fs")], "{v:?}");
    }

    #[test]
    fn the_command_line_is_a_leaf_and_same_layer_edges_fail() {
        let v = check_text("cli/mod.rs", "cli", "use crate::util::digest;\n");
        assert_eq!(v.len(), 1);
        assert!(v[0].why.contains("leaf"));
        let v = check_text("util/a.rs", "util", "use crate::progress::Reporter;\n");
        assert_eq!(v.len(), 1);
        assert!(v[0].why.contains("same layer"));
        let v = check_text(
            "commands/build.rs",
            "commands",
            "use crate::cli::BuildArgs;\n",
        );
        assert!(v.is_empty());
    }
}
