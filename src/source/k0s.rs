//! The k0s release binary: a pinned download, or a local file that is hashed and recorded.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::cache::{normalize_digest, Cache, CacheError};
use super::download::percent_encode;
use crate::progress::Reporter;

/// Where k0s publishes its release assets; `{version}` and `{arch}` are filled in.
pub const DEFAULT_URL_TEMPLATE: &str =
    "https://github.com/k0sproject/k0s/releases/download/{version}/k0s-{version}-{arch}";

/// The architectures k0s publishes binaries for, named as k0s names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum K0sArch {
    Amd64,
    Arm64,
    Arm,
}

impl K0sArch {
    pub fn as_str(self) -> &'static str {
        match self {
            K0sArch::Amd64 => "amd64",
            K0sArch::Arm64 => "arm64",
            K0sArch::Arm => "arm",
        }
    }

    /// The k0s architecture for a Debian architecture (`armhf` runs k0s's `arm` build).
    pub fn from_debian(arch: &str) -> Result<K0sArch> {
        match arch {
            "amd64" => Ok(K0sArch::Amd64),
            "arm64" => Ok(K0sArch::Arm64),
            "armhf" => Ok(K0sArch::Arm),
            other => bail!(
                "no k0s build for Debian architecture {other:?} (amd64, arm64 and armhf have one)"
            ),
        }
    }
}

impl fmt::Display for K0sArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for K0sArch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "amd64" => Ok(K0sArch::Amd64),
            "arm64" => Ok(K0sArch::Arm64),
            "arm" => Ok(K0sArch::Arm),
            other => bail!("unknown k0s architecture {other:?} (expected amd64, arm64 or arm)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K0sSource {
    /// Downloaded from `template` (see [`DEFAULT_URL_TEMPLATE`]) and checked against `sha256`.
    Url { template: String, sha256: String },
    /// A binary the user supplies (`--k0s-binary`): hashed and recorded, not pinned.
    LocalFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K0sSpec {
    /// The release tag, e.g. `v1.34.10+k0s.0`.
    pub version: String,
    pub arch: K0sArch,
    pub source: K0sSource,
}

impl K0sSpec {
    /// The download URL for a template: `{version}` is URL-encoded (`+` becomes `%2B`).
    pub fn url_from(&self, template: &str) -> String {
        template
            .replace("{version}", &percent_encode(&self.version))
            .replace("{arch}", self.arch.as_str())
    }
}

/// The k0s binary a build uses, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K0sBinary {
    /// The verified file in the cache.
    pub path: PathBuf,
    pub sha256: String,
    /// Where it came from (a URL, or the local path given).
    pub url: String,
    pub version: String,
}

/// Fetches (or imports) the k0s binary described by `spec`.
pub fn fetch_k0s(cache: &Cache, spec: &K0sSpec, rep: &dyn Reporter) -> Result<K0sBinary> {
    let label = format!("k0s {} ({})", spec.version, spec.arch);
    match &spec.source {
        K0sSource::Url { template, sha256 } => {
            let url = spec.url_from(template);
            let expected = normalize_digest(sha256, &label).context(
                "the k0s sha256 is pinned in profiles/base.toml or given with --k0s-sha256",
            )?;
            let path = cache
                .fetch_verified(&url, &expected, None, &label, rep)
                .map_err(|e| match e.downcast_ref::<CacheError>() {
                    Some(CacheError::DigestMismatch {
                        actual, expected, ..
                    }) => anyhow::anyhow!(
                        "{label} from {url}: sha256 is {actual}, expected {expected} \
                         (pinned in profiles/base.toml or --k0s-sha256)"
                    ),
                    _ => e.context(format!(
                        "{label} could not be fetched from {url}: give a copy you have with \
                         --k0s-binary FILE (hashed and recorded in the manifest), or a mirror \
                         with --k0s-url URL ({{version}} and {{arch}} are filled in; the pinned \
                         sha256 still applies, --k0s-sha256 gives another)"
                    )),
                })?;
            Ok(K0sBinary {
                path,
                sha256: expected,
                url,
                version: spec.version.clone(),
            })
        }
        K0sSource::LocalFile(p) => {
            if !p.is_file() {
                bail!(
                    "{label}: {} is not a file (check --k0s-binary)",
                    p.display()
                );
            }
            let (path, sha256) = cache.import_unpinned(&p.display().to_string(), &label, rep)?;
            Ok(K0sBinary {
                path,
                sha256,
                url: p.display().to_string(),
                version: spec.version.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use sha2::{Digest, Sha256};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A one-thread HTTP server on 127.0.0.1 that serves `body` for any GET and counts requests
    /// along with the paths asked for.
    fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, ps) = (count.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                ps.lock()
                    .unwrap()
                    .push(line.split_whitespace().nth(1).unwrap_or("").to_string());
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(&body).unwrap();
            }
        });
        (format!("http://{addr}"), count, paths)
    }

    fn spec(template: String, sha256: String) -> K0sSpec {
        K0sSpec {
            version: "v1.34.10+k0s.0".into(),
            arch: K0sArch::Amd64,
            source: K0sSource::Url { template, sha256 },
        }
    }

    #[test]
    fn pinned_download_is_verified_and_cached() {
        let body = b"#!/bin/sh\necho k0s test double\n".to_vec();
        let (base, count, paths) = serve(body.clone());
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), false).unwrap();
        let s = spec(
            format!("{base}/dl/{{version}}/k0s-{{version}}-{{arch}}"),
            hex::encode(Sha256::digest(&body)),
        );
        let bin = fetch_k0s(&cache, &s, &Silent).unwrap();
        assert_eq!(std::fs::read(&bin.path).unwrap(), body);
        assert_eq!(
            bin.url,
            format!("{base}/dl/v1.34.10%2Bk0s.0/k0s-v1.34.10%2Bk0s.0-amd64")
        );
        assert_eq!(
            paths.lock().unwrap()[0],
            "/dl/v1.34.10%2Bk0s.0/k0s-v1.34.10%2Bk0s.0-amd64"
        );
        let again = fetch_k0s(&cache, &s, &Silent).unwrap();
        assert_eq!(again, bin);
        // A second process (new Cache) also finds it without asking the server.
        let cache2 = Cache::new(dir.path().to_path_buf(), false).unwrap();
        fetch_k0s(&cache2, &s, &Silent).unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wrong_digest_names_both_and_leaves_nothing() {
        let (base, _count, _) = serve(b"not k0s".to_vec());
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), false).unwrap();
        let pinned = "1adf41ced99f308325c2cfddd9361102e86fcc1fdd730fafef18dd5285372eb0".to_string();
        let err = fetch_k0s(
            &cache,
            &spec(format!("{base}/{{version}}"), pinned.clone()),
            &Silent,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        let actual = hex::encode(Sha256::digest(b"not k0s"));
        assert!(msg.contains(&pinned) && msg.contains(&actual), "{msg}");
        assert!(
            msg.contains("k0s v1.34.10+k0s.0 (amd64) from http://"),
            "{msg}"
        );
        assert!(msg.contains("--k0s-sha256"), "{msg}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn local_file_is_hashed_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k0s");
        std::fs::write(&f, b"local k0s").unwrap();
        let cache = Cache::new(dir.path().join("c"), false).unwrap();
        let s = K0sSpec {
            version: "v1".into(),
            arch: K0sArch::Arm,
            source: K0sSource::LocalFile(f.clone()),
        };
        let bin = fetch_k0s(&cache, &s, &Silent).unwrap();
        assert_eq!(bin.sha256, hex::encode(Sha256::digest(b"local k0s")));
        assert_eq!(bin.url, f.display().to_string());
        assert_eq!(std::fs::read(bin.path).unwrap(), b"local k0s");
        let missing = K0sSpec {
            source: K0sSource::LocalFile(dir.path().join("nope")),
            ..s
        };
        assert!(fetch_k0s(&cache, &missing, &Silent)
            .unwrap_err()
            .to_string()
            .contains("--k0s-binary"));
    }

    #[test]
    fn default_template_encodes_the_tag() {
        let s = spec(DEFAULT_URL_TEMPLATE.into(), String::new());
        assert!(s
            .url_from(DEFAULT_URL_TEMPLATE)
            .ends_with("/v1.34.10%2Bk0s.0/k0s-v1.34.10%2Bk0s.0-amd64"));
        assert_eq!(K0sArch::from_debian("armhf").unwrap(), K0sArch::Arm);
    }
}
