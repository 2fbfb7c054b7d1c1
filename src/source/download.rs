//! Moving bytes from a URL (or a local file) into a writer, with progress.
//!
//! The cache decides where the bytes go and whether they are right; this module only knows
//! how to read `http(s)://`, `file://` and plain paths.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::progress::{ProgressReader, Reporter};

/// Where a URL string points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    Local(PathBuf),
}

impl Location {
    /// `http://` and `https://` go to the network; `file://` URLs and anything without a
    /// scheme are local paths (tests and `--k0s-binary` use them).
    pub fn parse(url: &str) -> Result<Location> {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Location::Http(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(percent_decode(rest))));
        }
        if url.contains("://") {
            bail!("{url}: unsupported URL scheme (use http://, https://, file:// or a plain path)");
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

/// Decodes `%XX` escapes (file URLs may carry them, e.g. `%2B` for `+`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes the characters of a path segment that are not safe in a URL (`+` becomes `%2B`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blocking HTTP client with timeouts that suit large downloads over slow links: the
/// connection must open quickly, but a read may wait a while.
pub fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .redirects(10)
        .try_proxy_from_env(true)
        .user_agent(concat!("edgeimg/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Copies the content at `url` into `out`, reporting bytes to a task named `label`.
/// Returns the number of bytes copied.
pub fn copy_url(
    agent: &ureq::Agent,
    url: &str,
    out: &mut dyn Write,
    label: &str,
    rep: &dyn Reporter,
) -> Result<u64> {
    let (reader, total): (Box<dyn Read>, u64) = match Location::parse(url)? {
        Location::Http(u) => {
            let resp = agent.get(&u).call().map_err(|e| http_error(&u, e))?;
            let total = resp
                .header("Content-Length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            (Box::new(resp.into_reader()), total)
        }
        Location::Local(p) => {
            let f = File::open(&p).with_context(|| format!("{label}: opening {}", p.display()))?;
            let total = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), total)
        }
    };
    let mut reader = ProgressReader::new(reader, rep.task(label, total));
    let n = io::copy(&mut reader, out).with_context(|| format!("{label}: reading {url}"))?;
    reader.finish(label);
    Ok(n)
}

fn http_error(url: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            anyhow::anyhow!("GET {url}: HTTP {code} {}", resp.status_text())
        }
        ureq::Error::Transport(t) => {
            anyhow::anyhow!("GET {url}: {t} (is the network or the mirror reachable?)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_classified() {
        assert_eq!(
            Location::parse("https://x.example/a").unwrap(),
            Location::Http("https://x.example/a".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/a%2Bb").unwrap(),
            Location::Local("/tmp/a+b".into())
        );
        assert_eq!(
            Location::parse("rel/path").unwrap(),
            Location::Local("rel/path".into())
        );
        assert!(Location::parse("ftp://x/y").is_err());
    }

    #[test]
    fn plus_is_encoded() {
        assert_eq!(percent_encode("v1.34.10+k0s.0"), "v1.34.10%2Bk0s.0");
    }
}
