//! Dependency closure over one archive, in the spirit of apt but without its scoring: follow
//! Depends and Pre-Depends (never Recommends or Suggests), take the first satisfiable
//! alternative unless another one is already selected, and pick the newest version that meets
//! every constraint seen so far.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use thiserror::Error;

use super::control::{Dep, Package};
use super::Archive;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("cannot satisfy {dep}, needed by {chain}: {reason}")]
    Unsatisfiable {
        dep: String,
        chain: String,
        reason: String,
    },
}

/// How apt would rank providers of a virtual package; lower is preferred.
fn priority_rank(p: &Package) -> u8 {
    match p.priority.as_deref() {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        Some("extra") => 4,
        _ => 5,
    }
}

pub(super) struct Resolver<'a> {
    archive: &'a Archive,
    provided: HashSet<&'a str>,
    selected: BTreeMap<String, &'a Package>,
    /// Who pulled each selected package in (`None` for a wanted one), for error chains.
    parent: HashMap<String, Option<String>>,
    queue: VecDeque<&'a Package>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(archive: &'a Archive, provided: &'a [String]) -> Self {
        Resolver {
            archive,
            provided: provided.iter().map(String::as_str).collect(),
            selected: BTreeMap::new(),
            parent: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    pub(super) fn run(mut self, wanted: &[String]) -> Result<Vec<Package>, ResolveError> {
        for w in wanted {
            let dep = Dep {
                name: w.clone(),
                arch_qualifier: None,
                constraint: None,
            };
            self.satisfy(std::slice::from_ref(&dep), None)?;
        }
        while let Some(pkg) = self.queue.pop_front() {
            for group in pkg.pre_depends.iter().chain(&pkg.depends) {
                self.satisfy(group, Some(&pkg.name))?;
            }
        }
        Ok(self.selected.into_values().cloned().collect())
    }

    fn satisfy(&mut self, alts: &[Dep], parent: Option<&str>) -> Result<(), ResolveError> {
        if alts.iter().any(|d| self.provided.contains(d.name.as_str())) {
            return Ok(());
        }
        if alts.iter().any(|d| self.met_by_selection(d)) {
            return Ok(());
        }
        let mut reasons = Vec::new();
        for dep in alts {
            match self.candidate(dep) {
                Ok(p) => {
                    self.select(p, parent);
                    return Ok(());
                }
                Err(r) => reasons.push(r),
            }
        }
        let dep = alts
            .iter()
            .map(Dep::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
        Err(ResolveError::Unsatisfiable {
            dep,
            chain: self.chain(parent),
            reason: reasons.join("; "),
        })
    }

    fn select(&mut self, p: &'a Package, parent: Option<&str>) {
        self.parent
            .insert(p.name.clone(), parent.map(str::to_string));
        self.selected.insert(p.name.clone(), p);
        self.queue.push_back(p);
    }

    /// `bar <- baz <- k0s-node (wanted)`.
    fn chain(&self, from: Option<&str>) -> String {
        let mut names = Vec::new();
        let mut cur = from.map(str::to_string);
        while let Some(n) = cur {
            if names.contains(&n) {
                break;
            }
            cur = self.parent.get(&n).cloned().flatten();
            names.push(n);
        }
        match names.is_empty() {
            true => "the wanted package list".to_string(),
            false => format!("{} (wanted)", names.join(" <- ")),
        }
    }

    fn arch_ok(&self, dep: &Dep) -> bool {
        match dep.arch_qualifier.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(a) => a == self.archive.arch,
        }
    }

    fn met_by_selection(&self, dep: &Dep) -> bool {
        if !self.arch_ok(dep) {
            return false;
        }
        if let Some(p) = self.selected.get(&dep.name) {
            if version_ok(dep, &p.version) {
                return true;
            }
        }
        self.archive
            .providers_of(&dep.name)
            .iter()
            .any(|(pkg, ver, provided_ver)| {
                self.selected.get(pkg).is_some_and(|s| &s.version == ver)
                    && provide_ok(dep, provided_ver.as_deref())
            })
    }

    /// The package to select for `dep`, or why there is none.
    fn candidate(&self, dep: &Dep) -> Result<&'a Package, String> {
        if !self.arch_ok(dep) {
            return Err(format!(
                "{dep}: architecture {} is not being built",
                dep.arch_qualifier.as_deref().unwrap_or("")
            ));
        }
        let archive: &'a Archive = self.archive;
        let versions = archive.versions(&dep.name);
        if let Some(sel) = self.selected.get(&dep.name) {
            // One version per name: a second, different requirement cannot be met alongside.
            return Err(format!(
                "{} {} is already selected (by {})",
                sel.name,
                sel.version,
                self.chain(Some(&sel.name))
            ));
        }
        if let Some(p) = versions.iter().find(|p| version_ok(dep, &p.version)) {
            return Ok(p);
        }
        let mut providers: Vec<&'a Package> = archive
            .providers_of(&dep.name)
            .iter()
            .filter(|(_, _, pv)| provide_ok(dep, pv.as_deref()))
            .filter_map(|(pkg, ver, _)| archive.versions(pkg).iter().find(|p| &p.version == ver))
            .filter(|p| !self.selected.contains_key(&p.name))
            .collect();
        providers.sort_by(|a, b| {
            priority_rank(a)
                .cmp(&priority_rank(b))
                .then_with(|| a.name.cmp(&b.name))
        });
        if let Some(p) = providers.first() {
            return Ok(p);
        }
        if versions.is_empty() && archive.providers_of(&dep.name).is_empty() {
            return Err(format!(
                "{} is not in the archive's {} suite",
                dep.name,
                archive.suite_of(&dep.name)
            ));
        }
        let have: Vec<&str> = versions.iter().map(|p| p.version.as_str()).collect();
        match have.is_empty() {
            true => Err(format!("no provider of {} matches {dep}", dep.name)),
            false => Err(format!("only {} {} available", dep.name, have.join(", "))),
        }
    }
}

fn version_ok(dep: &Dep, have: &str) -> bool {
    dep.constraint
        .as_ref()
        .is_none_or(|(op, want)| op.holds(have, want))
}

/// An unversioned Provides satisfies only unversioned dependencies (Debian policy 7.5).
fn provide_ok(dep: &Dep, provided_version: Option<&str>) -> bool {
    match (&dep.constraint, provided_version) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some((op, want)), Some(v)) => op.holds(v, want),
    }
}

#[cfg(test)]
mod tests {
    use super::super::control::parse_packages;
    use super::*;

    fn archive(stanzas: &str) -> Archive {
        let mut text = String::new();
        for (i, st) in stanzas.split("\n\n").enumerate() {
            text.push_str(st.trim());
            text.push_str(&format!(
                "\nArchitecture: amd64\nFilename: pool/{i}.deb\nSize: 1\nSHA256: {:064x}\n\n",
                i
            ));
        }
        Archive::from_packages(
            "http://mirror.example/debian",
            "trixie",
            "amd64",
            parse_packages(&text, "test").unwrap(),
        )
    }

    fn names(r: &[Package]) -> Vec<String> {
        r.iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const SAMPLE: &str = "Package: app\nVersion: 1\nDepends: libc6 (>= 2.36), mail-transport-agent | exim4, debconf (>= 0.5) | debconf-2.0\nRecommends: docs\n\n\
Package: libc6\nVersion: 2.41-1\nPre-Depends: libgcc-s1\n\n\
Package: libc6\nVersion: 2.35-1\n\n\
Package: libgcc-s1\nVersion: 14-1\nDepends: gcc-base (= 14-1)\n\n\
Package: gcc-base\nVersion: 14-1\n\n\
Package: postfix\nVersion: 3\nProvides: mail-transport-agent\nPriority: optional\n\n\
Package: aaa-mta\nVersion: 1\nProvides: mail-transport-agent\nPriority: extra\n\n\
Package: exim4\nVersion: 4\n\n\
Package: docs\nVersion: 1\n\n\
Package: debconf\nVersion: 1.5\nDepends: perl-base\n\n\
Package: perl-base\nVersion: 5";

    #[test]
    fn closure_follows_depends_and_prefers_priority_for_virtuals() {
        let a = archive(SAMPLE);
        let r = a.resolve(&s(&["app"]), &[]).unwrap();
        assert_eq!(
            names(&r),
            s(&[
                "app=1",
                "debconf=1.5",
                "gcc-base=14-1",
                "libc6=2.41-1",
                "libgcc-s1=14-1",
                "perl-base=5",
                "postfix=3"
            ])
        );
    }

    #[test]
    fn provided_names_are_not_followed() {
        let a = archive(SAMPLE);
        let r = a
            .resolve(&s(&["app"]), &s(&["debconf", "mail-transport-agent"]))
            .unwrap();
        assert_eq!(
            names(&r),
            s(&["app=1", "gcc-base=14-1", "libc6=2.41-1", "libgcc-s1=14-1"])
        );
    }

    #[test]
    fn already_selected_alternative_wins() {
        let a = archive(SAMPLE);
        let r = a.resolve(&s(&["exim4", "app"]), &s(&["debconf"])).unwrap();
        assert!(names(&r).contains(&"exim4=4".to_string()));
        assert!(
            !names(&r).iter().any(|n| n.starts_with("postfix")),
            "{:?}",
            names(&r)
        );
    }

    #[test]
    fn virtual_wanted_and_versioned_provides() {
        let a = archive(
            "Package: want\nVersion: 1\nDepends: api (>= 2)\n\n\
             Package: old-impl\nVersion: 9\nProvides: api (= 1)\n\n\
             Package: unversioned\nVersion: 9\nProvides: api\n\n\
             Package: new-impl\nVersion: 1\nProvides: api (= 2.5)",
        );
        assert_eq!(
            names(&a.resolve(&s(&["want"]), &[]).unwrap()),
            s(&["new-impl=1", "want=1"])
        );
        let r = a.resolve(&s(&["api"]), &[]).unwrap();
        assert_eq!(r.len(), 1, "one provider of the virtual wanted name");
    }

    #[test]
    fn unsatisfiable_names_the_chain() {
        let a = archive(
            "Package: k0s-node\nVersion: 1\nDepends: bar\n\n\
             Package: bar\nVersion: 1\nDepends: foo (>= 2)\n\n\
             Package: foo\nVersion: 1.0",
        );
        let err = a.resolve(&s(&["k0s-node"]), &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot satisfy foo (>= 2), needed by bar <- k0s-node (wanted): only foo 1.0 available"
        );
        let err = a.resolve(&s(&["nope"]), &[]).unwrap_err().to_string();
        assert!(
            err.contains("nope is not in the archive's trixie suite"),
            "{err}"
        );
    }

    #[test]
    fn arch_qualifiers() {
        let a = archive("Package: x\nVersion: 1\nDepends: perl:any, python3:native\n\nPackage: perl\nVersion: 5\n\nPackage: python3\nVersion: 3");
        assert_eq!(a.resolve(&s(&["x"]), &[]).unwrap().len(), 3);
        let b =
            archive("Package: x\nVersion: 1\nDepends: libc6:i386\n\nPackage: libc6\nVersion: 2");
        assert!(b.resolve(&s(&["x"]), &[]).is_err());
    }

    #[test]
    fn result_is_deterministic() {
        let a = archive(SAMPLE);
        let one = names(&a.resolve(&s(&["app", "docs"]), &[]).unwrap());
        let two = names(&a.resolve(&s(&["docs", "app"]), &[]).unwrap());
        assert_eq!(one, two);
    }

    fn stanzas(text: &str, first: usize) -> Vec<Package> {
        let mut out = String::new();
        for (i, st) in text.split("\n\n").enumerate() {
            out.push_str(st.trim());
            out.push_str(&format!(
                "\nArchitecture: amd64\nFilename: pool/{}.deb\nSize: 1\nSHA256: {:064x}\n\n",
                first + i,
                first + i
            ));
        }
        parse_packages(&out, "test").unwrap()
    }

    /// Two suites: a pinned name comes from its suite even when the main suite has a newer
    /// version, an unpinned one from the main suite even when the other has a newer one; each
    /// package says where it came from, and a pinned name absent from its suite is an error
    /// naming package and suite.
    #[test]
    fn pinned_packages_come_from_their_suite() {
        let main = stanzas(
            "Package: linux-image-amd64\nVersion: 9\nDepends: linux-image-9-amd64\n\n\
             Package: linux-image-9-amd64\nVersion: 9\nDepends: kmod\n\n\
             Package: kmod\nVersion: 30",
            0,
        );
        let bpo = stanzas(
            "Package: linux-image-amd64\nVersion: 7\nDepends: linux-image-7-amd64, linux-modules-7-amd64\n\n\
             Package: linux-image-7-amd64\nVersion: 7\nDepends: kmod\n\n\
             Package: linux-modules-7-amd64\nVersion: 7\n\n\
             Package: kmod\nVersion: 99",
            10,
        );
        let pins: Vec<(String, String)> = ["linux-image-*", "linux-modules-*"]
            .iter()
            .map(|p| (p.to_string(), "trixie-backports".to_string()))
            .collect();
        let a = Archive::from_suite_packages(
            "http://mirror.example/debian",
            "trixie",
            "amd64",
            vec![("trixie".into(), main), ("trixie-backports".into(), bpo)],
            &pins,
        );
        let r = a.resolve(&s(&["linux-image-amd64"]), &[]).unwrap();
        let got: Vec<(&str, &str, &str)> = r
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.suite.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("kmod", "30", "trixie"),
                ("linux-image-7-amd64", "7", "trixie-backports"),
                ("linux-image-amd64", "7", "trixie-backports"),
                ("linux-modules-7-amd64", "7", "trixie-backports"),
            ]
        );
        let err = a
            .resolve(&s(&["linux-image-9-amd64"]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux-image-9-amd64 is not in the archive's trixie-backports suite"),
            "{err}"
        );
    }
}
