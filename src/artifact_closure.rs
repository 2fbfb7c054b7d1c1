//! The cached package closure: the `Packages` stanzas of the packages a plan resolves to,
//! stored under `<cache>/artifacts/closure/<key>`. Reading a suite's index (decompressing and
//! parsing tens of thousands of stanzas) and resolving dependencies is the bulk of a warm
//! build's first step; a hit replaces it with parsing a few dozen stanzas.
//!
//! The key covers the executable, the verified digests of the index files (so a new index
//! from the mirror is a miss), the mirror, suite, architecture, the wanted packages and the
//! names edgeimg provides itself. The `InRelease` signature and the index digests are still
//! checked on every build; an entry is checked against its own recorded digest when read,
//! and it is only stored after its stanzas were parsed back into exactly the resolved closure.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plan::{sha256_hex, Plan};
use crate::progress::Reporter;
use crate::source::debian::{control, Archive, IndexFile, Package};
use crate::source::Cache;

const HEADER: &str = "edgeimg closure v1 ";

/// The closure of `plan`'s packages from the suite's verified indexes of `components`, reused
/// from the artifact cache when `use_cache` and the same inputs were resolved before.
pub fn resolve_packages(
    cache: &Cache,
    plan: &Plan,
    components: &[&str],
    use_cache: bool,
    rep: &dyn Reporter,
) -> Result<Vec<Package>> {
    let arch = plan.board.arch.debian();
    let (signed_by, indexes) =
        Archive::fetch_indexes(cache, &plan.mirror, &plan.suite, arch, components, rep)?;
    let wanted = plan.wanted_packages();
    let provided = &plan.base.provided;
    let key = use_cache.then(|| key(plan, &indexes, &wanted, provided));
    if let Some(k) = &key {
        if let Some(pkgs) = load(&path(cache.root(), k)) {
            rep.step("package closure reused from the artifact cache");
            return Ok(pkgs);
        }
    }
    let mut texts = Vec::new();
    let mut all = Vec::new();
    for index in &indexes {
        let text = index.text(rep)?;
        all.extend(control::parse_packages(&text, &index.label)?);
        texts.push(text);
    }
    let mut archive = Archive::from_packages(&plan.mirror, &plan.suite, arch, all);
    archive.signed_by = signed_by;
    let packages = archive.resolve(&wanted, provided)?;
    if let Some(k) = &key {
        if let Some(mini) = closure_text(&texts, &packages) {
            let text = format!("{HEADER}{}\n{mini}", sha256_hex(mini.as_bytes()));
            let _ = crate::artifact::store(&path(cache.root(), k), &[text.as_bytes()]);
        }
    }
    Ok(packages)
}

fn path(cache_root: &Path, key: &str) -> PathBuf {
    crate::artifact::dir(cache_root).join("closure").join(key)
}

fn key(plan: &Plan, indexes: &[IndexFile], wanted: &[String], provided: &[String]) -> String {
    let mut parts: Vec<String> = vec![
        "edgeimg closure key v1".into(),
        crate::artifact_root::exe_digest_hex(),
        plan.mirror.clone(),
        plan.suite.clone(),
        plan.board.arch.debian().to_string(),
    ];
    for i in indexes {
        parts.push(format!("index {} {}", i.rel_path, i.sha256));
    }
    parts.extend(wanted.iter().map(|w| format!("wanted {w}")));
    parts.extend(provided.iter().map(|p| format!("provided {p}")));
    sha256_hex(parts.join("\0").as_bytes())
}

/// The closure read back from an entry, or `None` when it is missing or damaged.
fn load(path: &Path) -> Option<Vec<Package>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix(HEADER)?;
    let (digest, mini) = rest.split_once('\n')?;
    if sha256_hex(mini.as_bytes()) != digest {
        return None;
    }
    let pkgs = control::parse_packages(mini, "cached package closure").ok()?;
    (!pkgs.is_empty()).then_some(pkgs)
}

/// The stanzas of `closure`, in its order, taken from the index texts; `None` unless they
/// parse back into exactly `closure`.
fn closure_text(texts: &[String], closure: &[Package]) -> Option<String> {
    let wanted: HashSet<(&str, &str, &str)> = closure
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.architecture.as_str()))
        .collect();
    let mut found: std::collections::HashMap<(String, String, String), String> = Default::default();
    for text in texts {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                    .unwrap_or("")
            };
            let id = (field("Package:"), field("Version:"), field("Architecture:"));
            if wanted.contains(&id) {
                found
                    .entry((id.0.into(), id.1.into(), id.2.into()))
                    .or_insert_with(|| stanza.trim_matches('\n').to_string());
            }
        }
    }
    let mut mini = String::new();
    for p in closure {
        let s = found.get(&(p.name.clone(), p.version.clone(), p.architecture.clone()))?;
        mini.push_str(s);
        mini.push_str("\n\n");
    }
    let back = control::parse_packages(&mini, "cached package closure").ok()?;
    (back == closure).then_some(mini)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: pool/a_1.deb\n\
Size: 10\nSHA256: 0000000000000000000000000000000000000000000000000000000000000001\n\
Depends: b\n\nPackage: b\nVersion: 2\nArchitecture: all\nFilename: pool/b_2.deb\nSize: 20\n\
SHA256: 0000000000000000000000000000000000000000000000000000000000000002\n\n\
Package: c\nVersion: 3\nArchitecture: amd64\nFilename: pool/c_3.deb\nSize: 30\n\
SHA256: 0000000000000000000000000000000000000000000000000000000000000003\n";

    #[test]
    fn closure_stanzas_round_trip_and_damage_is_a_miss() {
        let all = control::parse_packages(INDEX, "t").unwrap();
        let closure: Vec<Package> = all.iter().filter(|p| p.name != "c").cloned().collect();
        let mini = closure_text(&[INDEX.to_string()], &closure).unwrap();
        assert!(!mini.contains("Package: c"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry");
        let text = format!("{HEADER}{}\n{mini}", sha256_hex(mini.as_bytes()));
        std::fs::write(&p, &text).unwrap();
        assert_eq!(load(&p).unwrap(), closure);
        std::fs::write(&p, text.replace("Version: 2", "Version: 3")).unwrap();
        assert!(load(&p).is_none(), "an edited entry is not used");
        std::fs::write(&p, "junk").unwrap();
        assert!(load(&p).is_none());
        // A package missing from the texts: nothing to store.
        assert!(closure_text(&[INDEX.replace("Package: b", "Package: z")], &closure).is_none());
    }
}
