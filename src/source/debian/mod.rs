//! The Debian archive chain: APT sources, the signed `InRelease`, `Packages` indexes,
//! dependency resolution and `.deb` unpacking.

pub mod apt;
pub mod control;
pub mod deb;
pub mod release;
pub mod resolve;
pub mod version;

pub use control::{Dep, Package};
pub use deb::{unpack_deb, unpack_deb_spilling, unpack_deb_with, DebError, DebInfo, UnpackOptions};
pub use version::Op;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::progress::Reporter;
use crate::source::{Cache, FetchItem};
use release::{Keyring, Release};

/// How long a cached `InRelease` is trusted to be current before it is fetched again.
const INRELEASE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One suite of a Debian archive for one architecture: every package of the chosen components,
/// reached through a verified chain (InRelease signature -> Packages sha256).
#[derive(Debug, Clone)]
pub struct Archive {
    pub mirror: String,
    pub suite: String,
    pub arch: String,
    /// Owners of the keys that signed the suite's InRelease (empty for hand-made archives).
    pub signed_by: Vec<String>,
    /// By name; newest version first.
    packages: BTreeMap<String, Vec<Package>>,
    /// Virtual name -> (package, package version, provided version).
    providers: BTreeMap<String, Vec<(String, String, Option<String>)>>,
    /// (pattern, suite): packages matching a pattern (first match) come from that suite.
    pins: Vec<(String, String)>,
}

/// One suite's verified indexes, and who signed its `InRelease`.
#[derive(Debug, Clone)]
pub struct SuiteIndexes {
    pub suite: String,
    pub signed_by: Vec<String>,
    pub indexes: Vec<IndexFile>,
}

/// A `.deb` in the cache, verified against its `Packages` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDeb {
    pub package: Package,
    pub path: PathBuf,
}

impl Archive {
    /// Fetches and verifies `<mirror>/dists/<suite>/InRelease` and the `Packages` index of each
    /// component for `arch` (`amd64`, `arm64`, `armhf`).
    pub fn load(
        cache: &Cache,
        mirror: &str,
        suite: &str,
        arch: &str,
        components: &[&str],
        rep: &dyn Reporter,
    ) -> Result<Archive> {
        let (signed_by, indexes) =
            Archive::fetch_indexes(cache, mirror, suite, arch, components, rep)?;
        Archive::from_indexes(mirror, suite, arch, signed_by, &indexes, rep)
    }

    /// The archive the verified `indexes` list (read as streams), signed by `signed_by`.
    pub fn from_indexes(
        mirror: &str,
        suite: &str,
        arch: &str,
        signed_by: Vec<String>,
        indexes: &[IndexFile],
        rep: &dyn Reporter,
    ) -> Result<Archive> {
        let mut all = Vec::new();
        for index in indexes {
            all.extend(index.parse(rep)?);
        }
        let mut archive = Archive::from_packages(mirror, suite, arch, all);
        archive.signed_by = signed_by;
        Ok(archive)
    }

    /// One archive over several suites of one mirror: a package comes from the suite the first
    /// matching `pins` entry (pattern, suite) names, or from `main` when none matches; the
    /// other suites' packages of that name are left out, whatever their versions (an explicit
    /// choice, not "newest wins"). `suites` holds `main`'s indexes and those of each pinned
    /// suite.
    pub fn from_suites(
        mirror: &str,
        main: &str,
        arch: &str,
        suites: &[SuiteIndexes],
        pins: &[(String, String)],
        rep: &dyn Reporter,
    ) -> Result<Archive> {
        let mut parsed = Vec::new();
        let mut signed_by = Vec::new();
        for s in suites {
            let mut pkgs = Vec::new();
            for index in &s.indexes {
                pkgs.extend(index.parse(rep)?);
            }
            parsed.push((s.suite.clone(), pkgs));
            for who in &s.signed_by {
                if !signed_by.contains(who) {
                    signed_by.push(who.clone());
                }
            }
        }
        let mut archive = Archive::from_suite_packages(mirror, main, arch, parsed, pins);
        archive.signed_by = signed_by;
        Ok(archive)
    }

    /// [`Archive::from_suites`] from packages already read: (suite, its packages).
    pub fn from_suite_packages(
        mirror: &str,
        main: &str,
        arch: &str,
        suites: Vec<(String, Vec<Package>)>,
        pins: &[(String, String)],
    ) -> Archive {
        let mut all = Vec::new();
        for (suite, pkgs) in suites {
            all.extend(pkgs.into_iter().filter_map(|mut p| {
                (suite_of(pins, main, &p.name) == suite).then(|| {
                    p.suite = suite.clone();
                    p
                })
            }));
        }
        let mut archive = Archive::from_packages(mirror, main, arch, all);
        archive.pins = pins.to_vec();
        archive
    }

    /// The suite the package `name` is taken from.
    pub fn suite_of(&self, name: &str) -> &str {
        suite_of(&self.pins, &self.suite, name)
    }

    /// The verified `Packages` index files of `components` (not yet read), and who signed
    /// the `InRelease` naming them.
    pub fn fetch_indexes(
        cache: &Cache,
        mirror: &str,
        suite: &str,
        arch: &str,
        components: &[&str],
        rep: &dyn Reporter,
    ) -> Result<(Vec<String>, Vec<IndexFile>)> {
        let mirror = mirror.trim_end_matches('/');
        let label = format!("{suite} InRelease");
        let url = format!("{mirror}/dists/{suite}/InRelease");
        rep.step(&format!("checking the signature of {url}"));
        let keyring = Keyring::debian()?;
        let verify = |max_age| -> Result<Release> {
            let path = cache.fetch_url(&url, &label, Some(max_age), rep)?;
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Release::verify(&data, &keyring, &format!("{label} ({url})"))
        };
        let release = match verify(INRELEASE_MAX_AGE) {
            Ok(r) => r,
            // A cached copy that no longer verifies (damaged on disk, or the mirror was
            // mid-update) is fetched once more before giving up; offline there is nothing to do.
            Err(e) if !cache.is_offline() => {
                rep.warn(&format!("{e:#}; fetching {url} again"));
                verify(Duration::ZERO)?
            }
            Err(e) => return Err(e),
        };
        if let Some(until) = release.valid_until() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if now > until {
                rep.warn(&format!(
                    "{url} expired (Valid-Until {}); the mirror may be stale",
                    release.fields.get("Valid-Until").unwrap_or("")
                ));
            }
        }
        let mut indexes = Vec::new();
        for comp in components {
            indexes.push(fetch_index(
                cache, mirror, suite, arch, comp, &release, rep,
            )?);
        }
        Ok((release.signed_by, indexes))
    }

    /// An archive from packages already read (tests, or indexes obtained another way).
    /// Packages of other architectures than `arch` and `all` are left out.
    pub fn from_packages(mirror: &str, suite: &str, arch: &str, pkgs: Vec<Package>) -> Archive {
        let mut packages: BTreeMap<String, Vec<Package>> = BTreeMap::new();
        for mut p in pkgs
            .into_iter()
            .filter(|p| p.architecture == arch || p.architecture == "all")
        {
            if p.suite.is_empty() {
                p.suite = suite.to_string();
            }
            // Nearly every name has one version: a default Vec would reserve room for four
            // packages per name, tens of MiB over a whole suite.
            packages
                .entry(p.name.clone())
                .or_insert_with(|| Vec::with_capacity(1))
                .push(p);
        }
        let mut providers: BTreeMap<String, Vec<(String, String, Option<String>)>> =
            BTreeMap::new();
        for versions in packages.values_mut() {
            versions.sort_by(|a, b| {
                version::compare(&b.version, &a.version).then_with(|| a.filename.cmp(&b.filename))
            });
            versions.dedup_by(|a, b| a.version == b.version);
            for p in versions.iter() {
                for (virt, v) in &p.provides {
                    providers.entry(virt.clone()).or_default().push((
                        p.name.clone(),
                        p.version.clone(),
                        v.clone(),
                    ));
                }
            }
        }
        Archive {
            mirror: mirror.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            arch: arch.to_string(),
            signed_by: Vec::new(),
            packages,
            providers,
            pins: Vec::new(),
        }
    }

    /// The newest version of a real package.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.versions(name).first()
    }

    /// Every version of a real package, newest first.
    pub fn versions(&self, name: &str) -> &[Package] {
        self.packages.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Packages providing a virtual name: (package, its version, provided version).
    pub fn providers_of(&self, name: &str) -> &[(String, String, Option<String>)] {
        self.providers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of distinct package names.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The dependency closure of `wanted` (real or virtual names), sorted by name. Names in
    /// `provided` stand for things edgeimg does itself: they count as installed and are not
    /// followed.
    pub fn resolve(
        &self,
        wanted: &[String],
        provided: &[String],
    ) -> Result<Vec<Package>, resolve::ResolveError> {
        resolve::Resolver::new(self, provided).run(wanted)
    }
}

/// The suite of `pins` (pattern, suite) whose pattern first matches `name`, else `main`.
fn suite_of<'a>(pins: &'a [(String, String)], main: &'a str, name: &str) -> &'a str {
    pins.iter()
        .find(|(pattern, _)| crate::util::text::glob_match(pattern, name))
        .map_or(main, |(_, s)| s.as_str())
}

/// One component's `Packages` index, in the cache, checked against the signed `InRelease`.
#[derive(Debug, Clone)]
pub struct IndexFile {
    pub path: PathBuf,
    /// Its path under `dists/<suite>/` (the compression is read from its extension).
    pub rel_path: String,
    pub sha256: String,
    pub url: String,
    pub label: String,
}

impl IndexFile {
    /// The packages it lists, read as a stream (the decompressed index is never held whole).
    pub fn parse(&self, rep: &dyn Reporter) -> Result<Vec<Package>> {
        rep.step(&format!("reading {}", self.label));
        read_index(&self.path, &self.rel_path, &self.label)
            .with_context(|| format!("{}: decompressing {}", self.label, self.url))
    }
}

/// Fetches and verifies one component's `Packages` index.
fn fetch_index(
    cache: &Cache,
    mirror: &str,
    suite: &str,
    arch: &str,
    comp: &str,
    release: &Release,
    rep: &dyn Reporter,
) -> Result<IndexFile> {
    let label = format!("{suite}/{comp} Packages ({arch})");
    let (rel_path, index) = release.packages_index(comp, arch, &label)?;
    let url = if release.acquire_by_hash {
        format!(
            "{mirror}/dists/{suite}/{comp}/binary-{arch}/by-hash/SHA256/{}",
            index.sha256
        )
    } else {
        format!("{mirror}/dists/{suite}/{rel_path}")
    };
    let path = cache.fetch_verified(&url, &index.sha256, Some(index.size), &label, rep)?;
    Ok(IndexFile {
        path,
        rel_path: rel_path.to_string(),
        sha256: index.sha256.clone(),
        url,
        label,
    })
}

/// Decompresses and parses a `Packages` index as a stream (bounded memory).
fn read_index(path: &Path, name: &str, label: &str) -> Result<Vec<Package>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let f = std::io::BufReader::new(f);
    let r: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(f))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    control::read_packages(std::io::BufReader::with_capacity(1 << 16, r), label)
}

/// Downloads the `.deb` of each package (in parallel) into the cache, each checked against the
/// sha256 and size from the verified `Packages` index.
pub fn fetch_debs(
    cache: &Cache,
    mirror: &str,
    pkgs: &[Package],
    rep: &dyn Reporter,
) -> Result<Vec<FetchedDeb>> {
    let mirror = mirror.trim_end_matches('/');
    let items: Vec<FetchItem> = pkgs
        .iter()
        .map(|p| FetchItem {
            url: format!("{mirror}/{}", p.filename),
            sha256: p.sha256.clone(),
            size: Some(p.size),
            label: format!("{} {} ({})", p.name, p.version, p.architecture),
        })
        .collect();
    let paths = cache.fetch_many(&items, rep)?;
    Ok(pkgs
        .iter()
        .cloned()
        .zip(paths)
        .map(|(package, path)| FetchedDeb { package, path })
        .collect())
}
pub use apt::apt_mirror;

/// Helpers for tests that use the real archive through the build host's APT mirror.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;

    use crate::source::Cache;

    /// The host's mirror, or `None` (after saying why) when the host has none: such tests skip.
    pub fn mirror_or_skip(test: &str) -> Option<String> {
        match super::apt_mirror(Path::new("/")) {
            Ok(Some(m)) => Some(m),
            _ => {
                eprintln!(
                    "SKIPPED {test}: no Debian mirror in /etc/apt (configure one to run this test)"
                );
                None
            }
        }
    }

    /// A cache kept between test runs so the archive is downloaded once per machine.
    pub fn shared_cache() -> Cache {
        Cache::new(std::env::temp_dir().join("edgeimg-test-cache"), false).unwrap()
    }
}

#[cfg(test)]
mod network_tests {
    use super::testutil::{mirror_or_skip, shared_cache};
    use super::*;
    use crate::progress::Silent;
    use crate::tree::{Kind, Tree};

    /// The whole chain against the real archive: signed InRelease, Packages by sha256, closure,
    /// .deb by sha256, unpacking checked against `dpkg-deb`'s own listing.
    #[test]
    fn trixie_busybox_static_end_to_end() {
        let Some(mirror) = mirror_or_skip("trixie_busybox_static_end_to_end") else {
            return;
        };
        let cache = shared_cache();
        let archive =
            Archive::load(&cache, &mirror, "trixie", "amd64", &["main"], &Silent).unwrap();
        assert!(archive.len() > 30_000, "only {} packages", archive.len());
        assert!(!archive.signed_by.is_empty());

        let pkgs = archive
            .resolve(&["busybox-static".to_string()], &[])
            .unwrap();
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["busybox-static"],
            "busybox-static is statically linked and has no dependencies"
        );
        // A realistic closure resolves, stays small, and honours `provided`.
        let provided: Vec<String> = ["debconf", "debconf-2.0", "adduser", "init-system-helpers"]
            .map(String::from)
            .to_vec();
        let closure = archive
            .resolve(
                &["e2fsprogs".into(), "kmod".into(), "ca-certificates".into()],
                &provided,
            )
            .unwrap();
        let cn: Vec<&str> = closure.iter().map(|p| p.name.as_str()).collect();
        assert!(
            cn.contains(&"libc6") && cn.contains(&"e2fsprogs") && !cn.contains(&"debconf"),
            "{cn:?}"
        );
        assert!(cn.windows(2).all(|w| w[0] < w[1]), "sorted by name");

        let debs = fetch_debs(&cache, &archive.mirror, &pkgs, &Silent).unwrap();
        let mut tree = Tree::new();
        let info = unpack_deb(&debs[0].path, &mut tree, &mut |_| true).unwrap();
        assert_eq!(info.name(), Some("busybox-static"));
        assert!(matches!(
            tree.get("usr/bin/busybox").map(|e| &e.kind),
            Some(Kind::File(_))
        ));

        // Compare with dpkg-deb, the reference reader of the format.
        let out = std::process::Command::new("dpkg-deb")
            .arg("-c")
            .arg(&debs[0].path)
            .output()
            .expect("dpkg-deb is needed for this test (apt-get install -y dpkg)");
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let mut count = 0;
        for line in listing.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let name = cols[5].trim_start_matches("./").trim_end_matches('/');
            if name.is_empty() {
                continue;
            }
            count += 1;
            let e = tree
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from the tree"));
            let size: u64 = cols[2].parse().unwrap();
            match &e.kind {
                Kind::File(c) => assert_eq!(c.len(), size, "{name}"),
                Kind::Dir => assert!(cols[0].starts_with('d'), "{name}"),
                Kind::Symlink(t) => assert!(line.ends_with(&format!("-> {t}")), "{line}"),
                other => panic!("{name}: unexpected {other:?}"),
            }
            assert_eq!(
                format!("{:o}", e.mode & 0o777),
                mode_octal(cols[0]),
                "{name}"
            );
        }
        assert_eq!(
            count + 1,
            tree.len(),
            "same number of entries as dpkg-deb lists"
        );

        // Warm cache: a new Cache in offline mode loads everything without a download.
        let offline = Cache::new(cache.root().to_path_buf(), true).unwrap();
        let again =
            Archive::load(&offline, &mirror, "trixie", "amd64", &["main"], &Silent).unwrap();
        fetch_debs(&offline, &again.mirror, &pkgs, &Silent).unwrap();
        assert_eq!(offline.downloads_made(), 0);
    }

    fn mode_octal(perms: &str) -> String {
        let bits = perms[1..].chars().enumerate().fold(0u32, |acc, (i, c)| {
            let on = !matches!(c, '-' | 'S' | 'T');
            acc | (u32::from(on) << (8 - i))
        });
        format!("{bits:o}")
    }
}

#[cfg(test)]
mod damaged_cache_tests {
    use super::testutil::{mirror_or_skip, shared_cache};
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Warnings(Mutex<Vec<String>>);
    impl Reporter for Warnings {
        fn step(&self, _: &str) {}
        fn task(&self, _: &str, _: u64) -> Box<dyn crate::progress::Task> {
            crate::progress::Silent.task("", 0)
        }
        fn warn(&self, m: &str) {
            self.0.lock().unwrap().push(m.to_string());
        }
    }

    /// A cached InRelease that no longer verifies is never used: offline it is an error,
    /// online it is fetched again (with a warning).
    #[test]
    fn damaged_inrelease_is_refetched_or_refused() {
        let Some(mirror) = mirror_or_skip("damaged_inrelease_is_refetched_or_refused") else {
            return;
        };
        let shared = shared_cache();
        Archive::load(
            &shared,
            &mirror,
            "trixie",
            "amd64",
            &["main"],
            &crate::progress::Silent,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url_dir = dir.path().join("url");
        std::fs::create_dir_all(&url_dir).unwrap();
        for e in std::fs::read_dir(shared.root().join("url")).unwrap() {
            let e = e.unwrap();
            let mut data = std::fs::read(e.path()).unwrap();
            // Damage one byte of the signed text (after the armor header).
            let at = data.iter().position(|&b| b == b'\n').unwrap() + 40;
            data[at] ^= 0x01;
            std::fs::write(url_dir.join(e.file_name()), data).unwrap();
        }
        std::os::unix::fs::symlink(shared.root().join("sha256"), dir.path().join("sha256"))
            .unwrap();

        let offline = Cache::new(dir.path().to_path_buf(), true).unwrap();
        let err = Archive::load(
            &offline,
            &mirror,
            "trixie",
            "amd64",
            &["main"],
            &crate::progress::Silent,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("no signature verifies"),
            "{err:#}"
        );

        let online = Cache::new(dir.path().to_path_buf(), false).unwrap();
        let rep = Warnings::default();
        Archive::load(&online, &mirror, "trixie", "amd64", &["main"], &rep).unwrap();
        assert_eq!(
            online.downloads_made(),
            1,
            "only the InRelease was fetched again"
        );
        assert!(rep
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("fetching") && w.contains("InRelease")));
    }
}
