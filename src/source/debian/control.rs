//! Debian control files (`deb822` stanzas: `Field: value`, continuation lines, blank lines
//! between stanzas) and the package model read from `Packages` indexes.

use thiserror::Error;

use super::version::Op;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("{source_name} line {line}: continuation line before any field")]
    Continuation { source_name: String, line: usize },
    #[error("{source_name} line {line}: expected `Field: value`, found {text:?}")]
    NoColon {
        source_name: String,
        line: usize,
        text: String,
    },
    #[error("{source_name}: stanza at line {line} has no {field} field")]
    Missing {
        source_name: String,
        line: usize,
        field: &'static str,
    },
    #[error("{source_name}: package {package}: bad {field} value {value:?}")]
    BadValue {
        source_name: String,
        package: String,
        field: &'static str,
        value: String,
    },
    #[error("{source_name}: package {package}: bad dependency {text:?} in {field}")]
    BadDep {
        source_name: String,
        package: String,
        field: &'static str,
        text: String,
    },
}

/// One stanza: fields in file order. Field names compare case-insensitively (deb822).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    /// The 1-based line the stanza starts on (for error messages).
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses deb822 text into stanzas. Multi-line values keep their continuation lines joined by
/// `\n` (with the leading space removed); `#` comment lines are skipped.
pub fn parse_stanzas(text: &str, source_name: &str) -> Result<Vec<Stanza>, ControlError> {
    let mut out = Vec::new();
    let mut b = StanzaBuilder::default();
    for (i, raw) in text.lines().enumerate() {
        if let Some(st) = b.line(i + 1, raw, source_name)? {
            out.push(st);
        }
    }
    out.extend(b.finish());
    Ok(out)
}

/// Assembles stanzas one line at a time, so that a large index can be read as a stream: only
/// the stanza being read is held, never the whole text or every stanza.
#[derive(Default)]
struct StanzaBuilder {
    cur: Stanza,
}

impl StanzaBuilder {
    /// Takes line number `n` (1-based, without its line ending); returns a stanza when this
    /// line ends one.
    fn line(
        &mut self,
        n: usize,
        raw: &str,
        source_name: &str,
    ) -> Result<Option<Stanza>, ControlError> {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !self.cur.fields.is_empty() {
                return Ok(Some(std::mem::take(&mut self.cur)));
            }
            return Ok(None);
        }
        if line.starts_with('#') {
            return Ok(None);
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((_, v)) = self.cur.fields.last_mut() else {
                return Err(ControlError::Continuation {
                    source_name: source_name.into(),
                    line: n,
                });
            };
            v.push('\n');
            v.push_str(line[1..].trim_end());
            return Ok(None);
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(ControlError::NoColon {
                source_name: source_name.into(),
                line: n,
                text: line.into(),
            });
        };
        if self.cur.fields.is_empty() {
            self.cur.line = n;
        }
        self.cur
            .fields
            .push((k.trim().to_string(), v.trim().to_string()));
        Ok(None)
    }

    /// The last stanza, when the text does not end with a blank line.
    fn finish(self) -> Option<Stanza> {
        (!self.cur.fields.is_empty()).then_some(self.cur)
    }
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dep {
    pub name: String,
    /// `any`, `native` or an architecture name after `:`.
    pub arch_qualifier: Option<String>,
    pub constraint: Option<(Op, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// Parses a dependency field (`a (>= 1) | b, c:any`) into groups of alternatives.
/// Architecture restrictions (`[amd64]`) and build profiles (`<!nocheck>`) are dropped: they
/// only appear in source packages' build dependencies.
pub fn parse_deps(value: &str) -> Result<Vec<Vec<Dep>>, String> {
    let mut groups = Vec::new();
    for group in value.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_dep(alt.trim()).ok_or_else(|| alt.trim().to_string())?);
        }
        groups.push(alts);
    }
    Ok(groups)
}

fn parse_dep(s: &str) -> Option<Dep> {
    let s = strip_bracketed(s, '[', ']');
    let s = strip_bracketed(&s, '<', '>');
    let s = s.trim();
    let (head, constraint) = match s.find('(') {
        Some(i) => {
            let inner = s[i + 1..].strip_suffix(')')?.trim();
            let split = inner.find(|c: char| !"<>=".contains(c))?;
            let op = Op::parse(inner[..split].trim())?;
            let ver = inner[split..].trim();
            if ver.is_empty() {
                return None;
            }
            (s[..i].trim(), Some((op, ver.to_string())))
        }
        None => (s, None),
    };
    let (name, arch_qualifier) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (head, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(Dep {
        name: name.to_string(),
        arch_qualifier,
        constraint,
    })
}

/// Removes `open ... close` groups, but only ones that are not version relations (`<` inside
/// `(...)` stays).
fn strip_bracketed(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth_paren = 0;
    let mut skipping = false;
    for c in s.chars() {
        match c {
            '(' => depth_paren += 1,
            ')' => depth_paren -= 1,
            _ => {}
        }
        if depth_paren == 0 && c == open {
            skipping = true;
            continue;
        }
        if skipping {
            if c == close {
                skipping = false;
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A binary package as listed in a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Path below the mirror root (`pool/main/...`).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub installed_size_kib: Option<u64>,
    pub depends: Vec<Vec<Dep>>,
    pub pre_depends: Vec<Vec<Dep>>,
    /// Virtual names provided, each with an optional version (`Provides: foo (= 1.2)`).
    pub provides: Vec<(String, Option<String>)>,
    /// The source package name (the package's own name when the field is absent).
    pub source: String,
    /// The source package's version: `Source: name (version)` when given (binNMUs, packages
    /// whose version differs from their source's), else the package's own version.
    pub source_version: String,
    pub essential: bool,
    pub priority: Option<String>,
    pub multi_arch: Option<String>,
    pub section: Option<String>,
    /// The suite whose index listed it (set when an [`super::Archive`] is made).
    #[serde(default)]
    pub suite: String,
}

impl Package {
    /// Reads a package from one `Packages` stanza.
    pub fn from_stanza(st: &Stanza, source_name: &str) -> Result<Package, ControlError> {
        let missing = |field| ControlError::Missing {
            source_name: source_name.into(),
            line: st.line,
            field,
        };
        let name = st
            .get("Package")
            .ok_or_else(|| missing("Package"))?
            .to_string();
        let bad = |field: &'static str, value: &str| ControlError::BadValue {
            source_name: source_name.into(),
            package: name.clone(),
            field,
            value: value.into(),
        };
        let deps = |field: &'static str| -> Result<Vec<Vec<Dep>>, ControlError> {
            match st.get(field) {
                None => Ok(Vec::new()),
                Some(v) => parse_deps(v).map_err(|text| ControlError::BadDep {
                    source_name: source_name.into(),
                    package: name.clone(),
                    field,
                    text,
                }),
            }
        };
        let size_str = st.get("Size").ok_or_else(|| missing("Size"))?;
        let sha256 = st
            .get("SHA256")
            .ok_or_else(|| missing("SHA256"))?
            .to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("SHA256", &sha256));
        }
        let provides = deps("Provides")?
            .into_iter()
            .flatten()
            .map(|d| {
                let version = match d.constraint {
                    Some((Op::Eq, v)) => Some(v),
                    _ => None,
                };
                (d.name, version)
            })
            .collect();
        let version = st
            .get("Version")
            .ok_or_else(|| missing("Version"))?
            .to_string();
        Ok(Package {
            architecture: st
                .get("Architecture")
                .ok_or_else(|| missing("Architecture"))?
                .to_string(),
            filename: st
                .get("Filename")
                .ok_or_else(|| missing("Filename"))?
                .to_string(),
            size: size_str.parse().map_err(|_| bad("Size", size_str))?,
            installed_size_kib: st.get("Installed-Size").and_then(|v| v.parse().ok()),
            depends: deps("Depends")?,
            pre_depends: deps("Pre-Depends")?,
            provides,
            source: st
                .get("Source")
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or(&name)
                .to_string(),
            source_version: st
                .get("Source")
                .and_then(|s| s.split_once('('))
                .and_then(|(_, v)| v.split_once(')'))
                .map(|(v, _)| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| version.clone()),
            version,
            essential: st
                .get("Essential")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            priority: st.get("Priority").map(str::to_string),
            multi_arch: st.get("Multi-Arch").map(str::to_string),
            section: st.get("Section").map(str::to_string),
            suite: String::new(),
            sha256,
            name,
        })
    }
}

/// Parses a whole `Packages` index.
pub fn parse_packages(text: &str, source_name: &str) -> Result<Vec<Package>, ControlError> {
    parse_stanzas(text, source_name)?
        .iter()
        .map(|st| Package::from_stanza(st, source_name))
        .collect()
}

/// [`parse_packages`] over a stream: each stanza becomes a [`Package`] as soon as it is read,
/// so memory holds the packages, not the index text (tens of MiB) nor all its stanzas.
pub fn read_packages(
    mut r: impl std::io::BufRead,
    source_name: &str,
) -> anyhow::Result<Vec<Package>> {
    let mut out = Vec::new();
    let mut b = StanzaBuilder::default();
    let mut buf = String::new();
    let mut n = 0;
    loop {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            break;
        }
        n += 1;
        let line = buf.strip_suffix('\n').unwrap_or(&buf);
        if let Some(st) = b.line(n, line, source_name)? {
            out.push(Package::from_stanza(&st, source_name)?);
        }
    }
    if let Some(st) = b.finish() {
        out.push(Package::from_stanza(&st, source_name)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Package: libfoo1\nVersion: 1:2.0-1\nArchitecture: amd64\n\
Depends: libc6 (>= 2.34), libbar | libbaz:any (<< 3~), perl:any\nPre-Depends: dpkg (>= 1.15)\n\
Provides: foo-api (= 2.0), foo-virtual\nSource: foo (2.0-1)\nPriority: optional\nMulti-Arch: same\n\
Filename: pool/main/f/foo/libfoo1_2.0-1_amd64.deb\nSize: 1234\n\
SHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF\nDescription: a library\n multi\n .\n line\n\n\
Package: bar\nVersion: 1\nArchitecture: all\nFilename: pool/b.deb\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nEssential: yes\n";

    #[test]
    fn streamed_index_reads_like_the_text() {
        let crlf = SAMPLE.replace('\n', "\r\n");
        for text in [SAMPLE.to_string(), crlf, format!("{SAMPLE}\n\n")] {
            let streamed = read_packages(std::io::Cursor::new(text.as_bytes()), "test").unwrap();
            assert_eq!(streamed, parse_packages(&text, "test").unwrap());
            assert_eq!(streamed.len(), 2);
        }
        let err = read_packages(&b"Package: x\nVersion: 1\n"[..], "idx").unwrap_err();
        assert_eq!(
            err.downcast_ref::<ControlError>(),
            parse_packages("Package: x\nVersion: 1\n", "idx")
                .err()
                .as_ref()
        );
        let err = read_packages(&b"A: 1\nnocolon\n"[..], "f").unwrap_err();
        assert!(format!("{err}").contains("line 2"), "{err}");
    }

    #[test]
    fn parses_packages_and_dependencies() {
        let pkgs = parse_packages(SAMPLE, "test").unwrap();
        assert_eq!(pkgs.len(), 2);
        let p = &pkgs[0];
        assert_eq!(p.name, "libfoo1");
        assert_eq!(p.version, "1:2.0-1");
        assert_eq!(p.source, "foo");
        assert_eq!(p.size, 1234);
        assert!(p.sha256.ends_with("abcdef") && !p.essential);
        assert_eq!(p.depends.len(), 3);
        assert_eq!(p.depends[0][0].constraint, Some((Op::Ge, "2.34".into())));
        assert_eq!(p.depends[1].len(), 2);
        assert_eq!(p.depends[1][1].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(p.depends[1][1].constraint, Some((Op::Lt, "3~".into())));
        assert_eq!(p.depends[1][1].to_string(), "libbaz:any (<< 3~)");
        assert_eq!(p.pre_depends[0][0].name, "dpkg");
        assert_eq!(
            p.provides,
            vec![
                ("foo-api".into(), Some("2.0".into())),
                ("foo-virtual".into(), None)
            ]
        );
        assert!(pkgs[1].essential);
        assert_eq!(pkgs[1].source, "bar");
    }

    #[test]
    fn multi_line_values_and_errors() {
        let st = parse_stanzas("A: 1\nB: x\n y\n\n\nC: 3\n", "f").unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].get("b"), Some("x\ny"));
        assert_eq!(st[1].line, 6);
        assert!(matches!(
            parse_stanzas(" x\n", "f"),
            Err(ControlError::Continuation { line: 1, .. })
        ));
        assert!(matches!(
            parse_stanzas("A: 1\nnocolon\n", "f"),
            Err(ControlError::NoColon { line: 2, .. })
        ));
        let err = parse_packages("Package: x\nVersion: 1\n", "idx").unwrap_err();
        assert!(err.to_string().contains("no Size field"), "{err}");
    }

    #[test]
    fn restrictions_are_dropped_and_garbage_refused() {
        let d = parse_deps("a [amd64] <!nocheck>, b (>= 1) [!armhf]").unwrap();
        assert_eq!(d[0][0].name, "a");
        assert_eq!(d[1][0].constraint, Some((Op::Ge, "1".into())));
        assert!(parse_deps("a (>= )").is_err());
        assert!(parse_deps("a (~ 1)").is_err());
        assert!(parse_deps("two words").is_err());
    }
}
