//! `edgeimg serve DIR`: a plain, read-only HTTP/1.1 file server for trying network boot
//! files. GET and HEAD, single byte ranges (`Range: bytes=a-b`, `a-`, `-n`), one access log
//! line per request (handed to the caller: the library does not print). Only regular files
//! inside DIR are served: `..`, NUL and paths that resolve (through symlinks) outside DIR are
//! refused with 403; everything else that is not a file is 404.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// At most this many connections are served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 32;
/// Request head size limit.
const MAX_HEAD: usize = 16 * 1024;

pub struct Server {
    listener: TcpListener,
    root: PathBuf,
}

/// One served request, for the access log.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub peer: SocketAddr,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub bytes: u64,
}

impl std::fmt::Display for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} \"{} {}\" {} {}",
            self.peer,
            self.method,
            self.target.escape_debug(),
            self.status,
            self.bytes
        )
    }
}

impl Server {
    /// Binds `listen` (`127.0.0.1:8080`; port 0 picks a free one) to serve `root`.
    pub fn bind(root: &Path, listen: &str) -> Result<Server> {
        let root = root
            .canonicalize()
            .with_context(|| format!("serve: {} is not a readable folder", root.display()))?;
        if !root.is_dir() {
            anyhow::bail!("serve: {} is not a folder", root.display());
        }
        let listener = TcpListener::bind(listen).with_context(|| {
            format!("serve: cannot listen on {listen} (in use? give another --listen ADDR:PORT)")
        })?;
        Ok(Server { listener, root })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until the process ends; `log` gets one record per request.
    pub fn run(self, log: Arc<dyn Fn(&AccessRecord) + Send + Sync>) -> Result<()> {
        let busy = Arc::new(AtomicUsize::new(0));
        let root = Arc::new(self.root);
        for conn in self.listener.incoming() {
            let Ok(stream) = conn else { continue };
            while busy.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                std::thread::sleep(Duration::from_millis(10));
            }
            busy.fetch_add(1, Ordering::SeqCst);
            let (busy, root, log) = (busy.clone(), root.clone(), log.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &root, &*log);
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(())
    }
}

/// How long a connection may wait for its next request.
const IDLE: Duration = Duration::from_secs(120);

enum Next {
    KeepOpen,
    Close,
}

/// Serves one connection: requests one after another (HTTP/1.1 keep-alive) until the client
/// closes it, asks for `Connection: close`, or is idle for [`IDLE`]. (QEMU's `guestfwd` to a
/// TCP address carries every guest connection over one host connection, in turn.)
fn handle(stream: TcpStream, root: &Path, log: &dyn Fn(&AccessRecord)) -> Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    while let Next::KeepOpen = one_request(&mut reader, &mut stream, peer, root, log)? {}
    Ok(())
}

fn one_request(
    reader: &mut BufReader<TcpStream>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    root: &Path,
    log: &dyn Fn(&AccessRecord),
) -> Result<Next> {
    let mut head: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut total = 0;
    loop {
        line.clear();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
        total += n;
        if n == 0 {
            if head.is_empty() {
                return Ok(Next::Close);
            }
            break;
        }
        if line == "\r\n" || line == "\n" {
            if head.is_empty() {
                continue; // empty lines before a request are allowed (RFC 9112 2.2)
            }
            break;
        }
        head.push(line.trim_end().to_string());
        if total > MAX_HEAD {
            break;
        }
    }
    let request = head.first().cloned().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("");
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let range = header("range");
    // Every answer has a Content-Length, so the connection stays usable after it even when
    // the client asked for `Connection: close` (the client then closes it): QEMU's guestfwd
    // needs its one host connection kept. A request with a body is not ours to read: answer
    // it and close.
    let wants_close = version != "HTTP/1.1"
        || header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let keep = total <= MAX_HEAD
        && header("content-length").is_none_or(|c| c == "0")
        && header("transfer-encoding").is_none();
    let mut rec = AccessRecord {
        peer,
        method: method.clone(),
        target: target.clone(),
        status: 0,
        bytes: 0,
    };
    let conn = if keep && !wants_close {
        "keep-alive"
    } else {
        "close"
    };
    let r = Reply {
        method: &method,
        conn,
    };
    let result = respond(stream, root, &r, &target, range.as_deref(), &mut rec);
    log(&rec);
    result?;
    Ok(if keep { Next::KeepOpen } else { Next::Close })
}

struct Reply<'a> {
    method: &'a str,
    conn: &'a str,
}

impl Reply<'_> {
    /// A short text answer (errors).
    fn simple(
        &self,
        stream: &mut TcpStream,
        status: u16,
        reason: &str,
        extra: &str,
    ) -> Result<u16> {
        let body = format!("{status} {reason}\n");
        write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: {}\r\n\r\n",
            body.len(),
            self.conn
        )?;
        if self.method != "HEAD" {
            stream.write_all(body.as_bytes())?;
        }
        stream.flush()?;
        Ok(status)
    }
}

fn respond(
    stream: &mut TcpStream,
    root: &Path,
    r: &Reply,
    target: &str,
    range: Option<&str>,
    rec: &mut AccessRecord,
) -> Result<()> {
    if r.method != "GET" && r.method != "HEAD" {
        rec.status = r.simple(stream, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n")?;
        return Ok(());
    }
    let path = match resolve(root, target) {
        Resolved::File(p) => p,
        Resolved::Forbidden => {
            rec.status = r.simple(stream, 403, "Forbidden", "")?;
            return Ok(());
        }
        Resolved::NotFound => {
            rec.status = r.simple(stream, 404, "Not Found", "")?;
            return Ok(());
        }
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) => {
            rec.status = r.simple(stream, 404, "Not Found", "")?;
            return Ok(());
        }
    };
    let size = file.metadata()?.len();
    let (status, start, len) = match range.map(|h| parse_range(h, size)) {
        None | Some(RangeReq::Ignore) => (200, 0, size),
        Some(RangeReq::Bytes(a, b)) => (206, a, b - a + 1),
        Some(RangeReq::Unsatisfiable) => {
            rec.status = r.simple(
                stream,
                416,
                "Range Not Satisfiable",
                &format!("Content-Range: bytes */{size}\r\n"),
            )?;
            return Ok(());
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n",
        if status == 206 { "Partial Content" } else { "OK" },
        content_type(&path)
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + len - 1
        ));
    }
    head.push_str(&format!("Connection: {}\r\n\r\n", r.conn));
    stream.write_all(head.as_bytes())?;
    rec.status = status;
    if r.method == "GET" {
        file.seek(SeekFrom::Start(start))?;
        rec.bytes = std::io::copy(&mut file.take(len), stream)?;
        if rec.bytes < len {
            anyhow::bail!("{} shrank while being served", path.display());
        }
    }
    stream.flush()?;
    Ok(())
}

enum Resolved {
    File(PathBuf),
    Forbidden,
    NotFound,
}

/// Maps a request target to a regular file inside `root`.
fn resolve(root: &Path, target: &str) -> Resolved {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(decoded) = percent_decode(path) else {
        return Resolved::Forbidden;
    };
    if !decoded.starts_with('/') || decoded.contains('\0') || decoded.contains('\\') {
        return Resolved::Forbidden;
    }
    let mut p = root.to_path_buf();
    for comp in decoded.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Resolved::Forbidden,
            c => p.push(c),
        }
    }
    // Symlinks are followed only while they stay inside the served folder.
    let Ok(real) = p.canonicalize() else {
        return Resolved::NotFound;
    };
    if !real.starts_with(root) {
        return Resolved::Forbidden;
    }
    if real.is_file() {
        Resolved::File(real)
    } else {
        Resolved::NotFound
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, PartialEq)]
enum RangeReq {
    /// Not a single byte range we understand: serve the whole file (allowed by RFC 9110).
    Ignore,
    Bytes(u64, u64),
    Unsatisfiable,
}

fn parse_range(h: &str, size: u64) -> RangeReq {
    let Some(spec) = h.strip_prefix("bytes=") else {
        return RangeReq::Ignore;
    };
    if spec.contains(',') {
        return RangeReq::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeReq::Ignore,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeReq::Unsatisfiable,
            Ok(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            Err(_) => return RangeReq::Ignore,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeReq::Ignore;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeReq::Ignore,
                }
            };
            (start, end)
        }
    };
    if size == 0 || parsed.0 >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Bytes(parsed.0, parsed.1)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("ipxe") | Some("conf") | Some("env") | Some("toml") | Some("sh") => {
            "text/plain; charset=utf-8"
        }
        _ if p.file_name().is_some_and(|n| n == "SHA256SUMS") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeReq::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Bytes(90, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeReq::Bytes(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeReq::Ignore);
        assert_eq!(parse_range("bytes=9-3", 100), RangeReq::Ignore);
    }

    #[test]
    fn paths() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("srv");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out")).unwrap();
        std::os::unix::fs::symlink("a/f", root.join("in")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(matches!(resolve(&root, "/a/f"), Resolved::File(_)));
        assert!(matches!(resolve(&root, "/in"), Resolved::File(_)));
        assert!(matches!(resolve(&root, "/out"), Resolved::Forbidden));
        assert!(matches!(resolve(&root, "/../secret"), Resolved::Forbidden));
        assert!(matches!(
            resolve(&root, "/a/%2e%2e/%2e%2e/secret"),
            Resolved::Forbidden
        ));
        assert!(matches!(resolve(&root, "/a"), Resolved::NotFound));
        assert!(matches!(resolve(&root, "/nope"), Resolved::NotFound));
        assert!(matches!(resolve(&root, "a/f"), Resolved::Forbidden));
    }
}
