//! Finding a Debian mirror in the build host's own APT configuration.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::control::parse_stanzas;

/// One `deb` source: a URI and the suites it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
}

/// Returns the first http(s) Debian archive URI configured under `<root>/etc/apt`, or `None`.
///
/// Security archives (`*-security` suites, URIs ending in `debian-security`) and `.disabled*`
/// files are skipped. URIs whose path ends in `/debian` are preferred; other http(s) URIs are
/// a fallback because some mirrors use other paths.
pub fn apt_mirror(root: &Path) -> Result<Option<String>> {
    let sources = read_sources(root)?;
    let usable: Vec<&AptSource> = sources
        .iter()
        .filter(|s| s.uri.starts_with("http://") || s.uri.starts_with("https://"))
        .filter(|s| !s.uri.trim_end_matches('/').ends_with("debian-security"))
        .filter(|s| !s.suites.iter().all(|x| x.ends_with("-security")))
        .collect();
    let debian = usable
        .iter()
        .find(|s| s.uri.trim_end_matches('/').ends_with("/debian"));
    Ok(debian
        .or(usable.first())
        .map(|s| s.uri.trim_end_matches('/').to_string()))
}

/// All `deb` sources, one-line files first (`sources.list`, then `sources.list.d/*.list` in
/// name order), then deb822 `sources.list.d/*.sources` in name order.
fn read_sources(root: &Path) -> Result<Vec<AptSource>> {
    let etc = root.join("etc/apt");
    let mut out = Vec::new();
    let main = etc.join("sources.list");
    if main.is_file() {
        out.extend(parse_one_line(&read(&main)?));
    }
    let dir = etc.join("sources.list.d");
    let mut files: Vec<_> = match fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "list"))
    {
        out.extend(parse_one_line(&read(f)?));
    }
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        out.extend(parse_deb822(&read(f)?, &f.display().to_string()));
    }
    Ok(out)
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading APT sources {}", p.display()))
}

/// `deb [opts] URI suite [components...]` lines.
fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => rest = rest[i + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(AptSource {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

/// deb822 stanzas with `Types: deb`, `URIs:`, `Suites:`; `Enabled: no` is skipped. An
/// unparsable file is skipped (APT itself would complain about it, not edgeimg).
fn parse_deb822(text: &str, name: &str) -> Vec<AptSource> {
    let Ok(stanzas) = parse_stanzas(text, name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for st in stanzas {
        if !st
            .get("Types")
            .unwrap_or("")
            .split_whitespace()
            .any(|t| t == "deb")
        {
            continue;
        }
        if st
            .get("Enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let suites: Vec<String> = st
            .get("Suites")
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        for uri in st.get("URIs").unwrap_or("").split_whitespace() {
            out.push(AptSource {
                uri: uri.to_string(),
                suites: suites.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn deb822_skips_security_and_disabled() {
        let d = root_with(&[(
            "etc/apt/sources.list.d/debian.sources",
            "Types: deb\n# comment\nURIs: http://mirror.example/debian-security\nSuites: trixie-security\nComponents: main\n\n\
             Types: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n\n\
             Types: deb\nURIs: http://off.example/debian\nSuites: trixie\nEnabled: no\n\n\
             Types: deb\nURIs: http://mirror.example/debian/\nSuites: trixie trixie-updates\nComponents: main\n",
        )]);
        assert_eq!(
            apt_mirror(d.path()).unwrap().as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_format_with_options_and_preference() {
        let d = root_with(&[
            (
                "etc/apt/sources.list",
                "# deb http://commented.example/debian trixie main\n\
                 deb [arch=amd64 signed-by=/x.gpg] https://other.example/repo stable main\n\
                 deb http://sec.example/debian bookworm-security main\n\
                 deb [trusted=yes] http://mirror.example/debian bookworm main contrib\n",
            ),
            (
                "etc/apt/sources.list.d/x.list.disabled-by-someone",
                "deb http://disabled.example/debian trixie main\n",
            ),
        ]);
        assert_eq!(
            apt_mirror(d.path()).unwrap().as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn falls_back_to_any_http_archive_and_none_when_empty() {
        let d = root_with(&[(
            "etc/apt/sources.list.d/a.list",
            "deb http://only.example/mirror trixie main\n",
        )]);
        assert_eq!(
            apt_mirror(d.path()).unwrap().as_deref(),
            Some("http://only.example/mirror")
        );
        let d = root_with(&[(
            "etc/apt/sources.list",
            "deb file:/srv/repo trixie main\ndeb cdrom:[x]/ trixie main\n",
        )]);
        assert_eq!(apt_mirror(d.path()).unwrap(), None);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(apt_mirror(empty.path()).unwrap(), None);
    }

    /// On a Debian build host, the mirror is found (the CI and dev machines have one).
    #[test]
    fn host_sources_parse() {
        let m = apt_mirror(Path::new("/")).unwrap();
        if let Some(m) = m {
            assert!(m.starts_with("http"), "{m}");
        }
    }
}
