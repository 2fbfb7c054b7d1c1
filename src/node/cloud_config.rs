//! `#cloud-config` YAML accepted as a node config, for the keys that map onto [`NodeConfig`]
//! (the list is [`SUPPORTED`], documented in the README's "cloud-config" section):
//! `hostname`/`fqdn`, `ssh_authorized_keys` and `users` (keys for root, the only login of an
//! edgeimg node; any other user is refused by name), `write_files` (`path`, `content`,
//! `encoding` b64/gzip/gz+b64, `owner`, `permissions`, `append`, `defer`), `runcmd`,
//! `bootcmd`, `ntp`, `timezone`, a `k0s:` block with the node config's `[k0s]` keys, and three
//! settings edgeimg already behaves as (`manage_etc_hosts: true`, `ssh_pwauth: false`,
//! `disable_root: false`). Any other key is an error naming it, its line and the README.
//!
//! The YAML itself is read by a real YAML parser and typed as cloud-init's reader types it
//! (see [`yaml`]); values then take cloud-init's meaning (`permissions: 0644` is octal, a
//! `runcmd` word list is quoted and joined as cloud-init's `shellify` does). Every error
//! names the file, line and key.

pub mod yaml;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::{ContentEncoding, FileMode, FileSpec, K0sConfig, NodeConfig, NodeError, Problem};
use crate::util::text::{q, shown, IN_ERRORS};
use yaml::{Key, Node, Typed, Value};

pub use yaml::MAX_DEPTH;

/// The top-level keys edgeimg reads, in the order the README lists them.
pub const SUPPORTED: &[&str] = &[
    "hostname",
    "fqdn",
    "ssh_authorized_keys",
    "users",
    "write_files",
    "runcmd",
    "bootcmd",
    "ntp",
    "timezone",
    "k0s",
    "manage_etc_hosts",
    "ssh_pwauth",
    "disable_root",
];

/// Where the README lists what is supported (named in the errors).
const README: &str = "README.md, section \"cloud-config\"";

/// Whether `text` is a cloud-config document: its first line is `#cloud-config` (maybe
/// followed by blanks or a comment), or `## template: jinja` and then that line.
pub fn is_cloud_config(text: &str) -> bool {
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("");
    if is_jinja_header(first) {
        first = lines.next().unwrap_or("");
    }
    match first.trim_end().strip_prefix("#cloud-config") {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t']),
        None => false,
    }
}

/// cloud-init's `## template: jinja` first line (blanks around the words allowed).
fn is_jinja_header(line: &str) -> bool {
    line.strip_prefix("##")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("template:"))
        .is_some_and(|r| r.trim().eq_ignore_ascii_case("jinja"))
}

/// The file being read, for errors: they name it and the line.
struct Ctx<'a> {
    origin: &'a Path,
    /// Node-config key (`files[0].mode`) -> cloud-config key and line, so that a problem
    /// found by the node config's own validation names what the user wrote.
    origins: Vec<(String, String, usize)>,
}

impl Ctx<'_> {
    fn err(&self, line: usize, col: usize, key: &str, message: impl AsRef<str>) -> NodeError {
        let message = if key.is_empty() {
            message.as_ref().to_string()
        } else {
            format!("{}: {}", shown(key, IN_ERRORS), message.as_ref())
        };
        NodeError::Parse {
            origin: self.origin.to_path_buf(),
            line,
            column: col,
            message,
        }
    }

    fn at(&self, n: &Node, key: &str, message: impl AsRef<str>) -> NodeError {
        self.err(n.line, n.col, key, message)
    }

    fn key_err(&self, k: &Key, key: &str, message: impl AsRef<str>) -> NodeError {
        self.err(k.line, k.col, key, message)
    }

    fn origin_of(&mut self, node_key: impl Into<String>, cc_key: impl Into<String>, line: usize) {
        self.origins.push((node_key.into(), cc_key.into(), line));
    }

    /// `files[0].mode` -> `write_files[0].permissions (line 7)`: the longest registered
    /// node-config key that `key` starts with.
    fn rename(&self, key: &str) -> String {
        let best = self
            .origins
            .iter()
            .filter(|(n, _, _)| {
                key.strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|(n, _, _)| n.len());
        match best {
            Some((n, cc, line)) => format!("{cc}{} (line {line})", &key[n.len()..]),
            None => key.to_string(),
        }
    }

    /// The value as text; anything YAML types otherwise is refused with the fix.
    fn text(&self, n: &Node, key: &str) -> Result<String, NodeError> {
        let Value::Scalar(s) = &n.value else {
            return Err(self.at(n, key, "expected a single value, found a list or mapping"));
        };
        match s.typed().map_err(|m| self.at(n, key, m))? {
            Typed::Str(t) => Ok(t),
            Typed::Null => Err(self.at(n, key, "is empty")),
            Typed::Binary(_) => Err(self.at(n, key, "expected text, found !!binary")),
            other => Err(self.at(
                n,
                key,
                format!(
                    "{} is read as {} by YAML 1.1 (cloud-init's reader), not as text: quote it ('{}')",
                    q(&s.text),
                    type_name(&other),
                    s.text
                ),
            )),
        }
    }

    fn boolean(&self, n: &Node, key: &str) -> Result<bool, NodeError> {
        if let Value::Scalar(s) = &n.value {
            if let Ok(Typed::Bool(b)) = s.typed() {
                return Ok(b);
            }
        }
        Err(self.at(n, key, "expected true or false"))
    }

    fn list<'n>(&self, n: &'n Node, key: &str, what: &str) -> Result<&'n [Node], NodeError> {
        match &n.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self.at(n, key, format!("expected a list of {what}"))),
        }
    }

    fn map<'n>(&self, n: &'n Node, key: &str, what: &str) -> Result<&'n [(Key, Node)], NodeError> {
        match &n.value {
            Value::Map(entries) => Ok(entries),
            _ => Err(self.at(n, key, format!("expected a mapping ({what})"))),
        }
    }

    /// A list of texts, or one text (cloud-init takes both for keys and servers).
    fn strings(&self, n: &Node, key: &str) -> Result<Vec<(String, usize)>, NodeError> {
        match &n.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, y)| Ok((self.text(y, &format!("{key}[{i}]"))?, y.line)))
                .collect(),
            Value::Scalar(_) => Ok(vec![(self.text(n, key)?, n.line)]),
            Value::Map(_) => Err(self.at(n, key, "expected a list")),
        }
    }

    /// `runcmd`/`bootcmd`: each item a shell line, or a list of words quoted and joined as
    /// cloud-init's `shellify` does (`'word'`, a `'` written as `'\''`).
    fn commands(&self, n: &Node, key: &str) -> Result<Vec<(String, usize)>, NodeError> {
        self.list(n, key, "commands")?
            .iter()
            .enumerate()
            .map(|(i, y)| {
                let k = format!("{key}[{i}]");
                let cmd = match &y.value {
                    Value::Scalar(_) => self.text(y, &k)?,
                    Value::Seq(words) => words
                        .iter()
                        .enumerate()
                        .map(|(j, w)| {
                            self.text(w, &format!("{k}[{j}]"))
                                .map(|s| super::shell_quote(&s))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .join(" "),
                    Value::Map(_) => {
                        return Err(self.at(
                            y,
                            &k,
                            "expected a command (a line or a list of words)",
                        ))
                    }
                };
                Ok((cmd, y.line))
            })
            .collect()
    }
}

fn type_name(t: &Typed) -> &'static str {
    match t {
        Typed::Null => "null",
        Typed::Bool(_) => "a boolean",
        Typed::Int(_) => "an integer",
        Typed::Other("float") => "a float",
        Typed::Other("timestamp") => "a date",
        Typed::Other(_) => "a non-text value",
        Typed::Str(_) => "text",
        Typed::Binary(_) => "binary",
    }
}

/// Parses cloud-config `text` and maps it onto a validated node config. `origin` names the
/// file in errors and anchors relative paths (`k0s.token_file`).
pub fn from_cloud_config(text: &str, origin: &Path) -> Result<NodeConfig, NodeError> {
    let mut cx = Ctx {
        origin,
        origins: Vec::new(),
    };
    if is_jinja_header(text.lines().next().unwrap_or("")) {
        if let Some((no, _)) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains("{{") || l.contains("{%") || l.contains("{#"))
        {
            return Err(cx.err(
                no + 1,
                1,
                "",
                "a jinja template (`## template: jinja`): edgeimg has no cloud-init instance \
                 data to render it with; write the values themselves",
            ));
        }
    }
    // Top-level keys are checked as they are read: a file of 200,000 unknown keys is refused
    // at its first one, not after all are held in memory.
    let doc = yaml::parse_with(text, |k: &Key| {
        if SUPPORTED.contains(&k.text.as_str()) {
            Ok(())
        } else {
            Err(unsupported(&cx, k))
        }
    })
    .map_err(|e| match e {
        yaml::Stop::Key(e) => e,
        yaml::Stop::Yaml(e) => cx.err(e.line, e.col, "", format!("not valid YAML: {}", e.message)),
    })?;
    let mut cfg = NodeConfig {
        origin: origin.to_path_buf(),
        ..NodeConfig::default()
    };
    let Some(doc) = doc else {
        return finish(cfg, &cx);
    };
    let top = cx.map(&doc, "", "a cloud-config document is a mapping of keys")?;
    let mut hostname: Option<String> = None;
    let mut fqdn: Option<(String, usize)> = None;
    let mut keys: Vec<(String, String, usize)> = Vec::new();
    for (k, v) in top {
        let key = k.text.as_str();
        match key {
            "hostname" => {
                hostname = Some(cx.text(v, key)?);
                cx.origin_of("hostname", "hostname", k.line);
            }
            "fqdn" => fqdn = Some((cx.text(v, key)?, k.line)),
            "ssh_authorized_keys" => {
                for (i, (s, line)) in cx.strings(v, key)?.into_iter().enumerate() {
                    keys.push((s, format!("{key}[{i}]"), line));
                }
            }
            "users" => users(&cx, v, &mut keys)?,
            "write_files" => {
                for (i, item) in cx.list(v, key, "files")?.iter().enumerate() {
                    let f = write_file(&mut cx, item, i, cfg.files.len())?;
                    cfg.files.push(f);
                }
            }
            "runcmd" | "bootcmd" => {
                let cmds = cx.commands(v, key)?;
                let name = if key == "runcmd" {
                    "run_cmd"
                } else {
                    "boot_cmd"
                };
                for (i, (_, line)) in cmds.iter().enumerate() {
                    cx.origin_of(format!("{name}[{i}]"), format!("{key}[{i}]"), *line);
                }
                cx.origin_of(name, key, k.line);
                let cmds = cmds.into_iter().map(|(c, _)| c).collect();
                if key == "runcmd" {
                    cfg.run_cmd = cmds;
                } else {
                    cfg.boot_cmd = cmds;
                }
            }
            "timezone" => {
                cfg.time.timezone = Some(cx.text(v, key)?);
                cx.origin_of("time.timezone", key, k.line);
            }
            "ntp" => {
                cfg.time.ntp = ntp(&cx, v)?;
                cx.origin_of("time.ntp", key, k.line);
            }
            "k0s" => {
                let value = to_toml(&cx, v, key)?;
                cfg.k0s = value.try_into::<K0sConfig>().map_err(|e| {
                    cx.at(v, key, crate::util::text::message(e.message().trim(), 300))
                })?;
                cx.origin_of("k0s", key, k.line);
            }
            // What edgeimg does anyway: accepted when they say so, refused otherwise.
            "manage_etc_hosts" => {
                let ok = match &v.value {
                    Value::Scalar(s) => {
                        matches!(s.typed(), Ok(Typed::Bool(true)))
                            || matches!(s.typed(), Ok(Typed::Str(t)) if t == "localhost")
                    }
                    _ => false,
                };
                if !ok {
                    return Err(cx.at(v, key, "edgeimg always writes /etc/hosts with the hostname: only `true` (or `localhost`) fits"));
                }
            }
            "ssh_pwauth" => {
                if cx.boolean(v, key)? {
                    return Err(cx.at(
                        v,
                        key,
                        "edgeimg's SSH server takes keys only, never passwords: only `false` fits",
                    ));
                }
            }
            "disable_root" => {
                if cx.boolean(v, key)? {
                    return Err(cx.at(v, key, "root is the only login of an edgeimg node (its keys come from ssh_authorized_keys): only `false` fits"));
                }
            }
            _ => return Err(unsupported(&cx, k)),
        }
    }
    // cloud-init: `hostname` wins; otherwise the first label of `fqdn`.
    if hostname.is_none() {
        if let Some((f, line)) = fqdn {
            hostname = Some(f.split('.').next().unwrap_or("").to_string());
            cx.origin_of("hostname", "fqdn", line);
        }
    }
    cfg.hostname = hostname;
    for (i, (k, cc, line)) in keys.into_iter().enumerate() {
        cx.origin_of(format!("ssh.authorized_keys[{i}]"), cc, line);
        cfg.ssh.authorized_keys.push(k);
    }
    finish(cfg, &cx)
}

fn unsupported(cx: &Ctx, k: &Key) -> NodeError {
    cx.key_err(
        k,
        "",
        format!(
            "`{}` is not supported by edgeimg's cloud-config (supported: {}; see {README})",
            shown(&k.text, IN_ERRORS),
            SUPPORTED.join(", ")
        ),
    )
}

/// Relative paths anchored at the file's folder, then the node config's own validation,
/// whose problems are renamed to the cloud-config keys and lines.
fn finish(mut cfg: NodeConfig, cx: &Ctx) -> Result<NodeConfig, NodeError> {
    let base = cx.origin.parent().unwrap_or(Path::new(""));
    cfg.k0s.token_file = cfg.k0s.token_file.take().map(|p| base.join(p));
    cfg.k0s.config_file = cfg.k0s.config_file.take().map(|p| base.join(p));
    match cfg.check() {
        Ok(_) => Ok(cfg),
        Err(NodeError::Invalid { origin, problems }) => Err(NodeError::Invalid {
            origin,
            problems: problems
                .into_iter()
                .map(|p| Problem {
                    key: cx.rename(&p.key),
                    message: p.message,
                })
                .collect(),
        }),
        Err(e) => Err(e),
    }
}

/// `users`: `default` (the distribution's user: nothing on edgeimg) and `root` with its keys.
fn users(cx: &Ctx, v: &Node, keys: &mut Vec<(String, String, usize)>) -> Result<(), NodeError> {
    let other = |n: &Node, key: &str, name: &str| {
        cx.at(
            n,
            key,
            format!(
                "{}: edgeimg nodes have one login, root, and create no other users; give the \
                 keys to root (`- name: root` with ssh_authorized_keys, or a top-level \
                 ssh_authorized_keys list)",
                q(name)
            ),
        )
    };
    let items: Vec<&Node> = match &v.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Scalar(_) => vec![v],
        Value::Map(_) => return Err(cx.at(v, "users", "expected a list of users")),
    };
    for (i, u) in items.into_iter().enumerate() {
        let ukey = format!("users[{i}]");
        if let Value::Scalar(_) = u.value {
            let name = cx.text(u, &ukey)?;
            if name == "default" {
                continue;
            }
            return Err(other(u, &ukey, &name));
        }
        let fields = cx.map(u, &ukey, "name, ssh_authorized_keys")?;
        let Some((_, name_node)) = fields.iter().find(|(k, _)| k.text == "name") else {
            return Err(cx.at(u, &ukey, "no `name`: give `name: root`"));
        };
        let name = cx.text(name_node, &format!("{ukey}.name"))?;
        if name != "root" {
            return Err(other(name_node, &format!("{ukey}.name"), &name));
        }
        for (fk, fv) in fields {
            let key = format!("{ukey}.{}", fk.text);
            match fk.text.as_str() {
                "name" => {}
                "ssh_authorized_keys" | "ssh-authorized-keys" => {
                    for (j, (s, line)) in cx.strings(fv, &key)?.into_iter().enumerate() {
                        keys.push((s, format!("{key}[{j}]"), line));
                    }
                }
                "lock_passwd" if cx.boolean(fv, &key)? => {}
                "lock_passwd" => {
                    return Err(cx.at(
                        fv,
                        &key,
                        "root has no password on an edgeimg node: only `true` fits",
                    ))
                }
                _ => {
                    return Err(cx.key_err(
                        fk,
                        &key,
                        format!(
                            "not supported by edgeimg (for root: name, ssh_authorized_keys, \
                             lock_passwd; see {README})"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// One `write_files` entry as a `[[files]]` entry (`n`: its index there).
fn write_file(cx: &mut Ctx, item: &Node, i: usize, n: usize) -> Result<FileSpec, NodeError> {
    let wkey = format!("write_files[{i}]");
    let fields = cx.map(item, &wkey, "path, content, ...")?;
    let mut f = FileSpec::new("", "");
    let mut path = None;
    let mut content: Vec<u8> = Vec::new();
    let mut content_node: Option<&Node> = None;
    let mut encoding: Option<(String, &Node)> = None;
    cx.origin_of(format!("files[{n}]"), wkey.clone(), item.line);
    for (fk, fv) in fields {
        let key = format!("{wkey}.{}", fk.text);
        let field = |cx: &mut Ctx, name: &str| {
            cx.origin_of(format!("files[{n}].{name}"), key.clone(), fk.line)
        };
        match fk.text.as_str() {
            "path" => {
                path = Some(cx.text(fv, &key)?);
                field(cx, "path");
            }
            "content" => {
                content = match &fv.value {
                    Value::Scalar(s) => match s.typed().map_err(|m| cx.at(fv, &key, m))? {
                        Typed::Binary(b) => b,
                        Typed::Null => Vec::new(),
                        _ => cx.text(fv, &key)?.into_bytes(),
                    },
                    _ => return Err(cx.at(fv, &key, "expected the file's content (text)")),
                };
                content_node = Some(fv);
                field(cx, "content");
            }
            "encoding" => encoding = Some((cx.text(fv, &key)?, fv)),
            "permissions" => {
                let Value::Scalar(s) = &fv.value else {
                    return Err(cx.at(fv, &key, "expected a mode like '0644'"));
                };
                // cloud-init's decode_perms: an integer as it is, text as octal digits.
                f.mode = match s.typed().map_err(|m| cx.at(fv, &key, m))? {
                    Typed::Int(v) => FileMode::from_int(v).map_err(|_| {
                        format!(
                            "{} is the number {v} ({v:#o}), not a mode: write '0{}' (quoted                              octal digits, as cloud-init reads them)",
                            s.text, s.text
                        )
                    }),
                    Typed::Str(t) => FileMode::parse_octal(&t),
                    _ => Err("expected a mode like '0644'".to_string()),
                }
                .map_err(|m| cx.at(fv, &key, m))?;
                field(cx, "mode");
            }
            "owner" => {
                f.owner = Some(cx.text(fv, &key)?);
                field(cx, "owner");
            }
            "append" => f.append = cx.boolean(fv, &key)?,
            "defer" => f.defer = cx.boolean(fv, &key)?,
            _ => {
                return Err(cx.key_err(
                    fk,
                    &key,
                    format!(
                        "not supported by edgeimg (path, content, encoding, owner, permissions, \
                         append, defer; see {README})"
                    ),
                ))
            }
        }
    }
    f.path = path.ok_or_else(|| cx.at(item, &wkey, "no `path`"))?;
    if let Some((enc, node)) = encoding {
        let key = format!("{wkey}.encoding");
        // cloud-init's canonicalize_extraction: lower case, trimmed.
        let (b64, gz) = match enc.trim().to_ascii_lowercase().as_str() {
            "b64" | "base64" => (true, false),
            "gz" | "gzip" => (false, true),
            "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => (true, true),
            "text/plain" => (false, false),
            _ => {
                return Err(cx.at(
                    node,
                    &key,
                    format!(
                        "{} is not one of b64, base64, gz, gzip, gz+b64, gzip+base64, text/plain",
                        q(&enc)
                    ),
                ))
            }
        };
        let at = content_node.unwrap_or(node);
        let ckey = format!("{wkey}.content");
        if b64 {
            let compact: String = String::from_utf8_lossy(&content)
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            content = if compact.is_empty() {
                Vec::new()
            } else {
                super::check::base64_decode(&compact).ok_or_else(|| {
                    cx.at(
                        at,
                        &ckey,
                        format!("is not valid base64 (encoding {})", q(&enc)),
                    )
                })?
            };
        }
        if gz {
            content = gunzip(&content).map_err(|m| cx.at(at, &ckey, m))?;
        }
    }
    match String::from_utf8(content) {
        Ok(t) => f.content = t,
        Err(e) => {
            use base64::Engine;
            f.content = base64::engine::general_purpose::STANDARD.encode(e.into_bytes());
            f.encoding = Some(ContentEncoding::Base64);
        }
    }
    Ok(f)
}

/// gzip data (one or more members), at most a little over the file size limit: a small
/// file that unpacks to gigabytes is stopped early (the limit itself is checked later).
fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(super::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("is not gzip data ({e})"))?;
    Ok(out)
}

/// `ntp`: cloud-init's module does nothing when `enabled` is false (the image's servers stay);
/// otherwise `servers` then `pools`, the image's default when both are empty.
fn ntp(cx: &Ctx, v: &Node) -> Result<Option<Vec<String>>, NodeError> {
    let (mut servers, mut pools) = (Vec::new(), Vec::new());
    let mut enabled = true;
    if let Value::Scalar(s) = &v.value {
        if s.typed() == Ok(Typed::Null) {
            return Ok(None);
        }
    }
    for (fk, fv) in cx.map(v, "ntp", "enabled, servers, pools")? {
        let key = format!("ntp.{}", fk.text);
        match fk.text.as_str() {
            "enabled" => enabled = cx.boolean(fv, &key)?,
            "servers" => servers.extend(cx.strings(fv, &key)?.into_iter().map(|(s, _)| s)),
            "pools" => pools.extend(cx.strings(fv, &key)?.into_iter().map(|(s, _)| s)),
            _ => {
                return Err(cx.key_err(
                    fk,
                    &key,
                    format!("not supported by edgeimg (enabled, servers, pools; see {README})"),
                ))
            }
        }
    }
    servers.extend(pools);
    Ok((enabled && !servers.is_empty()).then_some(servers))
}

/// The `k0s:` block as TOML values (typed as YAML 1.1 types them), for [`K0sConfig`].
fn to_toml(cx: &Ctx, v: &Node, key: &str) -> Result<toml::Value, NodeError> {
    Ok(match &v.value {
        Value::Scalar(s) => match s.typed().map_err(|m| cx.at(v, key, m))? {
            Typed::Str(t) => toml::Value::String(t),
            Typed::Bool(b) => toml::Value::Boolean(b),
            Typed::Int(i) => toml::Value::Integer(i),
            other => {
                return Err(cx.at(
                    v,
                    key,
                    format!(
                        "{} is {}: give text (quote it)",
                        q(&s.text),
                        type_name(&other)
                    ),
                ))
            }
        },
        Value::Seq(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, y)| to_toml(cx, y, &format!("{key}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut t = BTreeMap::new();
            for (k, y) in entries {
                t.insert(
                    k.text.clone(),
                    to_toml(cx, y, &format!("{key}.{}", k.text))?,
                );
            }
            toml::Value::Table(t.into_iter().collect())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"#cloud-config
# a comment
hostname: pi-07
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm2b3rn8wPGiY6y2dqZ2x9Xh6wDMbSK8PrQnj4YxZgq a@b
users:
  - default
  - name: root
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6yQ6pT8Pj0QZ6ZrE9mHk1mYtOQxv5n3Yb0n8lZ0m2x c@d"]
write_files:
  - path: /etc/motd.d/edge
    permissions: '0600'
    owner: root:root
    content: |
      hello
        indented: "kept"
  - path: /etc/one
    content: "a\tb"
    permissions: 0640
runcmd:
  - echo first   # trailing comment
  - [sh, -c, "echo it's quoted"]
bootcmd:
  - echo every boot
ntp:
  enabled: true
  servers: [10.0.0.1, "10.0.0.2"]
k0s:
  role: worker
  labels:
    zone: a
  args: ["--debug"]
"#;

    fn e(doc: &str) -> String {
        from_cloud_config(doc, Path::new("u"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn maps_the_keys_onto_the_node_config() {
        assert!(is_cloud_config(DOC));
        let c = from_cloud_config(DOC, Path::new("/x/user-data")).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("pi-07"));
        assert_eq!(c.ssh.authorized_keys.len(), 2);
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[0].path, "/etc/motd.d/edge");
        assert_eq!(c.files[0].content, "hello\n  indented: \"kept\"\n");
        assert_eq!(c.files[0].mode.0, 0o600);
        assert_eq!(c.files[0].owner.as_deref(), Some("root:root"));
        assert_eq!(c.files[1].content, "a\tb");
        // YAML 1.1, as cloud-init reads it: unquoted 0640 is octal.
        assert_eq!(c.files[1].mode.0, 0o640);
        assert_eq!(
            c.run_cmd,
            ["echo first", "'sh' '-c' 'echo it'\\''s quoted'"]
        );
        assert_eq!(c.boot_cmd, ["echo every boot"]);
        assert_eq!(
            c.time.ntp.as_deref(),
            Some(&["10.0.0.1".to_string(), "10.0.0.2".to_string()][..])
        );
        assert_eq!(c.role().unwrap().as_str(), "worker");
        assert_eq!(c.k0s.labels.0.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.k0s.args, ["--debug"]);
    }

    #[test]
    fn headers_cloud_init_takes() {
        assert!(is_cloud_config("#cloud-config  # a comment\nhostname: a\n"));
        assert!(is_cloud_config(
            "## template: jinja\n#cloud-config\nhostname: a\n"
        ));
        assert!(!is_cloud_config("#cloud-config-archive\n- a\n"));
        assert!(!is_cloud_config("hostname = \"a\"\n"));
        let c = from_cloud_config(
            "## template: jinja\n#cloud-config\nhostname: a\n",
            Path::new("u"),
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("a"));
        let m = e("## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n");
        assert!(m.contains("u:3:1") && m.contains("jinja"), "{m}");
    }

    #[test]
    fn the_measured_yaml_bugs_are_gone() {
        // Folded with a blank line: "a\nb c\n", as YAML (and PyYAML) reads it.
        let c = from_cloud_config(
            "#cloud-config\nwrite_files:\n  - path: /etc/a\n    content: >\n      a\n\n      b\n      c\n",
            Path::new("u"),
        )
        .unwrap();
        assert_eq!(c.files[0].content, "a\nb c\n");
        // Multi-line plain scalar, \u escape, |2, `...`.
        let c = from_cloud_config(
            "#cloud-config\nruncmd:\n  - echo one\n    two\n  - \"echo \\u00e9\"\nwrite_files:\n  - path: /etc/b\n    content: |2\n        x\n      y\n...\n",
            Path::new("u"),
        )
        .unwrap();
        assert_eq!(c.run_cmd, ["echo one two", "echo \u{e9}"]);
        assert_eq!(c.files[0].content, "  x\ny\n");
        // Tabs as indentation are not YAML.
        let m = e("#cloud-config\nntp:\n\tenabled: true\n");
        assert!(m.contains("u:3:") && m.contains("tabs"), "{m}");
    }

    #[test]
    fn unsupported_keys_are_named_with_their_line() {
        let m = e("#cloud-config\nhostname: a\npackages:\n  - vim\n");
        assert!(
            m.contains("u:3:1") && m.contains("`packages`") && m.contains("README.md"),
            "{m}"
        );
        let m = e("#cloud-config\nusers:\n  - name: root\n    sudo: ALL\n");
        assert!(m.contains("u:4:5") && m.contains("users[0].sudo"), "{m}");
        let m = e("#cloud-config\nusers:\n  - default\n  - name: ops\n");
        assert!(
            m.contains("u:4:")
                && m.contains("users[1].name")
                && m.contains("\"ops\"")
                && m.contains("one login, root"),
            "{m}"
        );
        let m = e("#cloud-config\nwrite_files:\n  - path: /etc/x\n    source: {uri: 'http://a'}\n");
        assert!(m.contains("write_files[0].source"), "{m}");
        let m = e("#cloud-config\nntp:\n  ntp_client: chrony\n");
        assert!(m.contains("ntp.ntp_client"), "{m}");
        let m = e("#cloud-config\nk0s:\n  rol: worker\n");
        assert!(m.contains("rol"), "{m}");
        let m = e("#cloud-config\nwrite_files:\n- path: /etc/a\n  permissions: 644\n");
        assert!(m.contains("u:4:16") && m.contains("write '0644'"), "{m}");
        let m = e("#cloud-config\nhostname: yes\n");
        assert!(m.contains("a boolean") && m.contains("quote it"), "{m}");
        // The node config's own validation names the cloud-config key and line.
        let m = e("#cloud-config\n\nhostname: Bad_Name\n");
        assert!(m.contains("hostname (line 3)"), "{m}");
        let m = e("#cloud-config\nwrite_files:\n- path: /bin/arch\n  content: x\n");
        assert!(m.contains("write_files[0].path (line 3)"), "{m}");
    }

    #[test]
    fn write_files_encodings_and_flags() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"zipped\n").unwrap();
        let gz = gz.finish().unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
        let doc = format!(
            "#cloud-config\nwrite_files:\n- path: /etc/a\n  encoding: b64\n  content: aGVsbG8=\n\
             - path: /etc/b\n  encoding: gz+b64\n  content: {b64}\n\
             - path: /etc/a\n  append: true\n  content: more\n  owner: app:app\n  defer: yes\n\
             - path: /etc/bin\n  content: !!binary /wA=\n"
        );
        let c = from_cloud_config(&doc, Path::new("u")).unwrap();
        assert_eq!(c.files[0].content, "hello");
        assert_eq!(c.files[1].content, "zipped\n");
        assert!(c.files[2].append && c.files[2].defer);
        assert_eq!(c.files[2].owner.as_deref(), Some("app:app"));
        assert_eq!(c.files[3].encoding, Some(ContentEncoding::Base64));
        assert_eq!(c.files[3].bytes().unwrap(), [0xff, 0x00]);
        let m =
            e("#cloud-config\nwrite_files:\n- path: /etc/a\n  encoding: gzip\n  content: nope\n");
        assert!(
            m.contains("write_files[0].content") && m.contains("gzip"),
            "{m}"
        );
        let m = e("#cloud-config\nwrite_files:\n- path: /etc/a\n  owner: '-x'\n");
        assert!(m.contains("write_files[0].owner (line 4)"), "{m}");
        // cloud-init leaves NTP alone when it is disabled.
        let c = from_cloud_config(
            "#cloud-config\nntp:\n  enabled: false\n  servers: [a]\n",
            Path::new("u"),
        )
        .unwrap();
        assert_eq!(c.time.ntp, None);
    }
}
