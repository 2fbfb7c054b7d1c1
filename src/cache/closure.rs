//! The cached package closure: the packages a plan resolves to (as JSON), stored under
//! `<cache>/artifacts/closure/<key>`. Reading a suite's index (decompressing and
//! parsing tens of thousands of stanzas) and resolving dependencies is the bulk of a warm
//! build's first step; a hit replaces it with parsing a few dozen stanzas.
//!
//! The key covers the executable, the verified digests of the index files (so a new index
//! from the mirror is a miss), the mirror, suite, architecture, the wanted packages and the
//! names edgeimg provides itself. The `InRelease` signature and the index digests are still
//! checked on every build; an entry is checked against its own recorded digest when read.
//! The indexes are read as streams and dropped after resolving: nothing of the whole suite
//! outlives this step (it is the largest memory figure of a build).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plan::{sha256_hex, Plan};
use crate::progress::Reporter;
use crate::source::debian::{Archive, Package, SuiteIndexes};
use crate::source::Cache;

const HEADER: &str = "edgeimg closure v3 ";

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
    // Each suite's InRelease is verified on its own, like the main one.
    let mut suites = Vec::new();
    for suite in plan.suites() {
        let (signed_by, indexes) =
            Archive::fetch_indexes(cache, &plan.mirror, &suite, arch, components, rep)?;
        suites.push(SuiteIndexes {
            suite,
            signed_by,
            indexes,
        });
    }
    let wanted = plan.wanted_packages();
    let provided = &plan.provided_packages();
    let key = use_cache.then(|| key(plan, &suites, &wanted, provided));
    if let Some(k) = &key {
        if let Some(pkgs) = load(&path(cache.root(), k)) {
            rep.step("package closure reused from the artifact cache");
            return Ok(pkgs);
        }
    }
    let pins: Vec<(String, String)> = plan
        .package_suites
        .iter()
        .map(|p| (p.pattern.clone(), p.suite.clone()))
        .collect();
    let archive = Archive::from_suites(&plan.mirror, &plan.suite, arch, &suites, &pins, rep)?;
    let packages = archive.resolve(&wanted, provided)?;
    drop(archive);
    if let Some(k) = &key {
        let _ = store(&path(cache.root(), k), &packages);
    }
    Ok(packages)
}

fn path(cache_root: &Path, key: &str) -> PathBuf {
    crate::cache::dir(cache_root).join("closure").join(key)
}

fn key(plan: &Plan, suites: &[SuiteIndexes], wanted: &[String], provided: &[String]) -> String {
    let mut parts: Vec<String> = vec![
        "edgeimg closure key v1".into(),
        crate::cache::root::exe_digest_hex(),
        plan.mirror.clone(),
        plan.suite.clone(),
        plan.board.arch.debian().to_string(),
    ];
    for s in suites {
        for i in &s.indexes {
            parts.push(format!("index {} {} {}", s.suite, i.rel_path, i.sha256));
        }
    }
    for p in &plan.package_suites {
        parts.push(format!("pin {} {}", p.pattern, p.suite));
    }
    parts.extend(wanted.iter().map(|w| format!("wanted {w}")));
    parts.extend(provided.iter().map(|p| format!("provided {p}")));
    sha256_hex(parts.join("\0").as_bytes())
}

/// Stores `closure` with its digest (a failed store only costs the next build time).
fn store(path: &Path, closure: &[Package]) -> Result<()> {
    let json = serde_json::to_string(closure)?;
    let text = format!("{HEADER}{}\n{json}", sha256_hex(json.as_bytes()));
    Ok(crate::util::atomic::store(path, &[text.as_bytes()])?)
}

/// The closure read back from an entry, or `None` when it is missing or damaged.
fn load(path: &Path) -> Option<Vec<Package>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix(HEADER)?;
    let (digest, json) = rest.split_once('\n')?;
    if sha256_hex(json.as_bytes()) != digest {
        return None;
    }
    let pkgs: Vec<Package> = serde_json::from_str(json).ok()?;
    (!pkgs.is_empty()).then_some(pkgs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::debian::control;

    const INDEX: &str = "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: pool/a_1.deb\n\
Size: 10\nSHA256: 0000000000000000000000000000000000000000000000000000000000000001\n\
Depends: b\n\nPackage: b\nVersion: 2\nArchitecture: all\nFilename: pool/b_2.deb\nSize: 20\n\
SHA256: 0000000000000000000000000000000000000000000000000000000000000002\n\n\
Package: c\nVersion: 3\nArchitecture: amd64\nFilename: pool/c_3.deb\nSize: 30\n\
SHA256: 0000000000000000000000000000000000000000000000000000000000000003\n";

    #[test]
    fn closure_round_trips_and_damage_is_a_miss() {
        let closure: Vec<Package> = control::parse_packages(INDEX, "t")
            .unwrap()
            .into_iter()
            .filter(|p| p.name != "c")
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry");
        store(&p, &closure).unwrap();
        assert_eq!(load(&p).unwrap(), closure);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("\"c\""));
        std::fs::write(&p, text.replace("\"2\"", "\"3\"")).unwrap();
        assert!(load(&p).is_none(), "an edited entry is not used");
        std::fs::write(&p, "junk").unwrap();
        assert!(load(&p).is_none());
    }
}
