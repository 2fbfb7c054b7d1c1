//! `edgeimg serve DIR`: a plain, read-only HTTP/1.1 file server for trying network boot
//! files. GET and HEAD, single byte ranges (`Range: bytes=a-b`, `a-`, `-n`), one access log
//! line per request (handed to the caller: the library does not print). Only regular files
//! inside DIR are served: `..`, NUL and paths that resolve (through symlinks) outside DIR are
//! refused with 403; everything else that is not a file is 404.
//!
//! Many nodes netbooting at once, and clients that are slow, idle or gone, are served side by
//! side: see [`Limits`] for what one client can hold and for how long. A request line over
//! 8 KiB is answered 414, a head over 16 KiB 431, a head that does not arrive whole within
//! [`Limits::head`] 408, and each of these closes the connection.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The longest request line answered (longer: 414).
const MAX_LINE: usize = 8 * 1024;
/// The largest request head answered (larger: 431).
const MAX_HEAD: usize = 16 * 1024;

/// How long clients may take, and how many are served at once.
///
/// Every connection has a thread of its own, so a client that is slow, idle or gone holds
/// only itself: the accept loop never waits for a worker, and up to `max_connections`
/// clients are served at once (more are answered 503 at once and closed). What a client can
/// hold a thread for is bounded: the first byte of a request must come within `idle` (of the
/// connection's start or of the previous response), the whole head within `head` of its first
/// byte (however it trickles in), and each write of the response must make progress within
/// `write`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From the first byte of a request head to its end.
    pub head: Duration,
    /// Waiting for the first byte of a request (a new or a kept-alive connection).
    pub idle: Duration,
    /// One write of a response to a client that does not read.
    pub write: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Keep the connection after answering `Connection: close` and HTTP/1.0 (the answer still
    /// says `Connection: close`, so the client closes it): QEMU's `guestfwd` to a TCP address
    /// carries every guest connection over one host connection, in turn, and a closed one is
    /// not reopened.
    pub keep_open: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(5),
            write: Duration::from_secs(30),
            max_connections: 512,
            keep_open: false,
        }
    }
}

impl Limits {
    /// For QEMU's `guestfwd` (`serve --qemu-guestfwd`): the one host connection stays open
    /// across requests that ask to close it, and between guest connections, which can be
    /// minutes apart while a guest boots.
    pub fn qemu_guestfwd() -> Self {
        Limits {
            idle: Duration::from_secs(3600),
            keep_open: true,
            ..Limits::default()
        }
    }
}

pub struct Server {
    listener: TcpListener,
    root: PathBuf,
    limits: Limits,
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
        Ok(Server {
            listener,
            root,
            limits: Limits::default(),
        })
    }

    /// Other limits than [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until the process ends; `log` gets one record per request.
    pub fn run(self, log: Arc<dyn Fn(&AccessRecord) + Send + Sync>) -> Result<()> {
        let busy = Arc::new(AtomicUsize::new(0));
        let root = Arc::new(self.root);
        let limits = Arc::new(self.limits);
        for conn in self.listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            if busy.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                busy.fetch_sub(1, Ordering::SeqCst);
                // A fresh socket's send buffer takes this whole; the client is not waited for.
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                );
                let _ = stream.shutdown(Shutdown::Write);
                continue;
            }
            let (done, root, log, limits) =
                (busy.clone(), root.clone(), log.clone(), limits.clone());
            let spawned = std::thread::Builder::new()
                .name("serve-conn".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let _ = handle(stream, &root, &limits, &*log);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

enum Next {
    KeepOpen,
    Close,
}

/// Serves one connection: requests one after another (HTTP/1.1 keep-alive) until the client
/// closes it, the protocol says to close (`Connection: close`, HTTP/1.0 without
/// `Connection: keep-alive`, a request with a body, a head over the limits), or a limit of
/// [`Limits`] passes.
fn handle(
    stream: TcpStream,
    root: &Path,
    limits: &Limits,
    log: &dyn Fn(&AccessRecord),
) -> Result<()> {
    stream.set_write_timeout(Some(limits.write))?;
    let peer = stream.peer_addr()?;
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    while let Next::KeepOpen = one_request(&mut conn, peer, root, limits, log)? {}
    // Closing: the client reads the end of the answer, then end of file.
    let _ = conn.stream.shutdown(Shutdown::Write);
    Ok(())
}

/// A connection and the bytes read from it that no request has used yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What came in as the next request head.
#[derive(Debug, PartialEq)]
enum Head {
    /// The head's lines, without the empty line that ends it.
    Lines(Vec<String>),
    /// Nothing came (the client closed, or stayed silent for `idle`): close without a word.
    Quiet,
    /// Part of a head came, but not all of it within `head`.
    TimedOut,
    /// A request line longer than [`MAX_LINE`].
    LineTooLong,
    /// A head larger than [`MAX_HEAD`].
    TooLarge,
}

impl Conn {
    /// Reads the next request head against the deadlines of `limits`.
    fn read_head(&mut self, limits: &Limits) -> std::io::Result<Head> {
        let waiting = Instant::now();
        let mut first_byte: Option<Instant> = None;
        let mut chunk = [0u8; 8192];
        loop {
            // Empty lines before a request are allowed (RFC 9112 2.2).
            let skip = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.drain(..skip);
            if !self.buf.is_empty() && first_byte.is_none() {
                first_byte = Some(Instant::now());
            }
            match scan_head(&self.buf) {
                Some(Ok(end)) => return Ok(Head::Lines(self.take_head(end))),
                Some(Err(refused)) => return Ok(refused),
                None => {}
            }
            let deadline = match first_byte {
                Some(t) => t + limits.head,
                None => waiting + limits.idle,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(if first_byte.is_some() {
                    Head::TimedOut
                } else {
                    Head::Quiet
                });
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Head::Quiet),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the first `end` bytes off the buffer as the lines of a head.
    fn take_head(&mut self, end: usize) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        text.lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// The length of the head at the start of `buf` up to and with its ending empty line.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// Whether `buf` starts with a whole head (`Ok(its length)`) or already breaks a limit
/// (`Err`); `None`: read on.
fn scan_head(buf: &[u8]) -> Option<Result<usize, Head>> {
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_len > MAX_LINE {
        return Some(Err(Head::LineTooLong));
    }
    match head_end(buf) {
        Some(end) if end > MAX_HEAD => Some(Err(Head::TooLarge)),
        Some(end) => Some(Ok(end)),
        None if buf.len() > MAX_HEAD => Some(Err(Head::TooLarge)),
        None => None,
    }
}

fn one_request(
    conn: &mut Conn,
    peer: SocketAddr,
    root: &Path,
    limits: &Limits,
    log: &dyn Fn(&AccessRecord),
) -> Result<Next> {
    let head = match conn.read_head(limits)? {
        Head::Lines(lines) => lines,
        Head::Quiet => return Ok(Next::Close),
        refused => {
            let (status, reason) = match refused {
                Head::TimedOut => (408, "Request Timeout"),
                Head::LineTooLong => (414, "URI Too Long"),
                _ => (431, "Request Header Fields Too Large"),
            };
            let r = Reply {
                method: "",
                conn: "close",
            };
            let sent = r.simple(&mut conn.stream, status, reason, "");
            log(&AccessRecord {
                peer,
                method: String::new(),
                target: String::new(),
                status,
                bytes: 0,
            });
            sent?;
            return Ok(Next::Close);
        }
    };
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
    let connection = header("connection").unwrap_or_default();
    let has_token = |t: &str| {
        connection
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(t))
    };
    // RFC 9112 9.3: HTTP/1.1 persists unless it says close; HTTP/1.0 only when it asks for
    // keep-alive. A request with a body is not ours to read: answer it and close.
    let wants_close = match version {
        "HTTP/1.1" => has_token("close"),
        "HTTP/1.0" => !has_token("keep-alive"),
        _ => true,
    };
    let has_body =
        header("content-length").is_some_and(|c| c != "0") || header("transfer-encoding").is_some();
    let mut rec = AccessRecord {
        peer,
        method: method.clone(),
        target: target.clone(),
        status: 0,
        bytes: 0,
    };
    let r = Reply {
        method: &method,
        conn: if wants_close || has_body {
            "close"
        } else {
            "keep-alive"
        },
    };
    let result = respond(
        &mut conn.stream,
        root,
        &r,
        &target,
        range.as_deref(),
        &mut rec,
    );
    log(&rec);
    result?;
    let close = has_body || (wants_close && !limits.keep_open);
    Ok(if close { Next::Close } else { Next::KeepOpen })
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

/// The server's limits under load and against slow or idle clients, on 127.0.0.1 only; every
/// loop is bounded in count and time.
#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    const BODY: &[u8] = b"hello netboot\n";

    /// A server on 127.0.0.1 for a folder with one file, `f`.
    fn start(limits: Limits) -> (tempfile::TempDir, SocketAddr) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), BODY).unwrap();
        let server = Server::bind(d.path(), "127.0.0.1:0")
            .unwrap()
            .with_limits(limits);
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || server.run(Arc::new(|_: &AccessRecord| {})));
        (d, addr)
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Reads one response (head and Content-Length body); returns (status, head).
    fn read_response(s: &mut TcpStream) -> (u16, String) {
        read_answer(s, true)
    }

    /// [`read_response`], without a body after a HEAD request (`body` false).
    fn read_answer(s: &mut TcpStream, body: bool) -> (u16, String) {
        let mut raw = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..p]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|v| v.parse().unwrap())
                    .filter(|_| body)
                    .unwrap_or(0);
                while raw.len() < p + 4 + len {
                    let n = s.read(&mut b).expect("reading the body");
                    assert!(n > 0, "closed in the body");
                    raw.extend_from_slice(&b[..n]);
                }
                return (head[9..12].parse().unwrap(), head);
            }
            let n = s.read(&mut b).expect("reading the response head");
            assert!(n > 0, "closed before a response: {raw:?}");
            raw.extend_from_slice(&b[..n]);
        }
    }

    /// How long until the server closes `s` (read gives 0 or an error), at most `max`.
    fn closed_within(s: &mut TcpStream, max: Duration) -> Option<Duration> {
        let t = Instant::now();
        s.set_read_timeout(Some(max)).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return Some(t.elapsed()),
            }
        }
    }

    #[test]
    fn forty_open_connections_do_not_keep_a_get_waiting() {
        let (_d, addr) = start(Limits::default());
        let mut held = Vec::new();
        // Clients that got their reply and keep the connection (keep-alive)...
        for _ in 0..14 {
            let mut s = connect(addr);
            s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            held.push(s);
        }
        // ...clients that send nothing, and clients with an unfinished request.
        for i in 0..26 {
            let mut s = connect(addr);
            if i % 2 == 0 {
                s.write_all(b"GET /f HTTP/1.1\r\nHost:").unwrap();
            }
            held.push(s);
        }
        let t = Instant::now();
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).0, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        drop(held);
    }

    #[test]
    fn a_slow_loris_is_dropped_at_the_head_deadline() {
        let limits = Limits {
            head: Duration::from_secs(3),
            ..Limits::default()
        };
        let (_d, addr) = start(limits);
        let mut s = connect(addr);
        let mut reader = s.try_clone().unwrap();
        let watcher =
            std::thread::spawn(move || closed_within(&mut reader, Duration::from_secs(12)));
        let t = Instant::now();
        // One byte every 2 s, for at most 12 s.
        for b in b"GET /f HTTP/1.1\r\n".iter().take(6) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let closed = watcher.join().unwrap();
        let at = closed.map(|_| t.elapsed());
        let at = at.expect("the slow client still holds its connection");
        assert!(
            at >= Duration::from_millis(2900) && at < Duration::from_secs(8),
            "closed after {at:?}"
        );
    }

    #[test]
    fn connection_close_and_http_1_0_are_answered_and_closed() {
        let (_d, addr) = start(Limits::default());
        for req in [
            "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /f HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n",
            "GET /f HTTP/1.0\r\n\r\n",
            "HEAD /f HTTP/1.0\r\nHost: x\r\n\r\n",
        ] {
            let mut s = connect(addr);
            s.write_all(req.as_bytes()).unwrap();
            let (status, head) = read_answer(&mut s, !req.starts_with("HEAD"));
            assert_eq!(status, 200, "{req:?}");
            assert!(head.contains("Connection: close"), "{req:?}: {head}");
            let closed = closed_within(&mut s, Duration::from_secs(2));
            assert!(closed.is_some(), "{req:?}: the socket stayed open");
        }
        // HTTP/1.0 that asks for keep-alive, and HTTP/1.1, keep the connection.
        for req in [
            "GET /f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "GET /f HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let mut s = connect(addr);
            s.write_all(req.as_bytes()).unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            s.write_all(req.as_bytes()).unwrap();
            assert_eq!(read_response(&mut s).0, 200, "{req:?}: second request");
        }
    }

    #[test]
    fn an_idle_keep_alive_connection_is_closed_after_the_idle_time() {
        let limits = Limits {
            idle: Duration::from_millis(500),
            ..Limits::default()
        };
        let (_d, addr) = start(limits);
        let mut s = connect(addr);
        s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).0, 200);
        let closed = closed_within(&mut s, Duration::from_secs(4)).expect("still open");
        assert!(closed < Duration::from_secs(2), "{closed:?}");
    }

    #[test]
    fn overlong_request_lines_get_414_and_oversized_heads_431() {
        let (_d, addr) = start(Limits::default());
        let mut s = connect(addr);
        let line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10 * 1024));
        s.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_response(&mut s).0, 414);
        assert!(closed_within(&mut s, Duration::from_secs(2)).is_some());

        let mut s = connect(addr);
        let mut req = String::from("GET /f HTTP/1.1\r\nHost: x\r\n");
        for i in 0..24 {
            req.push_str(&format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        assert_eq!(read_response(&mut s).0, 431);
        assert!(closed_within(&mut s, Duration::from_secs(2)).is_some());
    }

    #[test]
    fn the_qemu_relay_setting_keeps_the_connection_across_connection_close() {
        let (_d, addr) = start(Limits::qemu_guestfwd());
        let mut s = connect(addr);
        for _ in 0..3 {
            s.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s).0, 200);
        }
    }
}
