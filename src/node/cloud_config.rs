//! `#cloud-config` YAML accepted as a node config, for the subset that maps onto
//! [`NodeConfig`]: `hostname`, `ssh_authorized_keys`, `users[].ssh_authorized_keys` (the keys
//! go to root, the only login on an edgeimg node), `write_files` (`path`, `content`,
//! `permissions`, `owner: root[:root]`), `runcmd`, `bootcmd`, `ntp` (`enabled`, `servers`,
//! `pools`), `timezone`, and a `k0s:` block with the node config's `[k0s]` keys. Anything
//! else is an error naming the key.
//!
//! The YAML reader covers what cloud-config files use: block mappings and sequences, plain,
//! single- and double-quoted scalars, `|`/`>` block scalars, flow sequences of scalars and
//! comments. Anchors, tags and flow mappings are rejected with the line they are on.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use toml::{Table, Value};

use super::NodeConfig;
use crate::util::text::{q, shown, IN_ERRORS};

/// Deepest nesting of mappings and sequences read (a cloud-config needs four or five levels;
/// the bound keeps a hostile file from exhausting the stack).
pub const MAX_DEPTH: usize = 32;

/// Whether `text` is a cloud-config document (its first line is `#cloud-config`).
pub fn is_cloud_config(text: &str) -> bool {
    text.lines().next().map(str::trim_end) == Some("#cloud-config")
}

/// A parsed YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

/// Parses cloud-config `text` and maps it onto a validated node config. `origin` names the
/// file in errors and anchors relative paths (`k0s.token_file`).
pub fn from_cloud_config(text: &str, origin: &Path) -> Result<NodeConfig> {
    let what = shown(&origin.display().to_string(), 200);
    let doc = parse(text)
        .with_context(|| format!("{what}: not valid YAML (of the subset edgeimg reads)"))?;
    let Yaml::Map(top) = doc else {
        bail!("{what}: a cloud-config document is a mapping of keys");
    };
    let mut t = Table::new();
    let mut keys: Vec<Value> = Vec::new();
    let mut run_cmd = Vec::new();
    let mut boot_cmd = Vec::new();
    let mut files = Vec::new();
    let mut time = Table::new();
    for (k, v) in top {
        match k.as_str() {
            "hostname" => {
                t.insert("hostname".into(), Value::String(scalar(&v, &k, &what)?));
            }
            "ssh_authorized_keys" => keys.extend(strings(&v, &k, &what)?.into_iter().map(Value::String)),
            "users" => {
                let Yaml::List(users) = v else {
                    bail!("{what}: users: expected a list of users");
                };
                for (i, u) in users.iter().enumerate() {
                    let Yaml::Map(fields) = u else {
                        // `- default` means the distribution's default user: nothing to do.
                        if matches!(u, Yaml::Str(s) if s == "default") {
                            continue;
                        }
                        bail!("{what}: users[{i}]: expected a mapping");
                    };
                    for (fk, fv) in fields {
                        let key = format!("users[{i}].{}", shown(fk, IN_ERRORS));
                        match fk.as_str() {
                            "name" => {}
                            "ssh_authorized_keys" => keys.extend(
                                strings(fv, &key, &what)?
                                    .into_iter()
                                    .map(Value::String),
                            ),
                            _ => bail!("{what}: {key}: not supported by edgeimg (only `name` and `ssh_authorized_keys`: keys are authorized for root)"),
                        }
                    }
                }
            }
            "write_files" => {
                let Yaml::List(items) = v else {
                    bail!("{what}: write_files: expected a list");
                };
                for (i, item) in items.iter().enumerate() {
                    let Yaml::Map(fields) = item else {
                        bail!("{what}: write_files[{i}]: expected a mapping");
                    };
                    let mut f = Table::new();
                    for (fk, fv) in fields {
                        let key = format!("write_files[{i}].{}", shown(fk, IN_ERRORS));
                        match fk.as_str() {
                            "path" | "content" => {
                                f.insert(fk.clone(), Value::String(scalar(fv, &key, &what)?));
                            }
                            "permissions" => {
                                f.insert("mode".into(), Value::String(scalar(fv, &key, &what)?));
                            }
                            "owner" => {
                                let o = scalar(fv, &key, &what)?;
                                if o != "root" && o != "root:root" {
                                    bail!("{what}: {key}: {}: edgeimg writes files owned by root only", q(&o));
                                }
                            }
                            "encoding" => {
                                let e = scalar(fv, &key, &what)?;
                                if e != "text/plain" {
                                    bail!("{what}: {key}: {} is not supported (only plain text content)", q(&e));
                                }
                            }
                            _ => bail!("{what}: {key}: not supported by edgeimg (path, content, permissions, owner)"),
                        }
                    }
                    files.push(Value::Table(f));
                }
            }
            "runcmd" => run_cmd = commands(&v, &k, &what)?,
            "bootcmd" => boot_cmd = commands(&v, &k, &what)?,
            "timezone" => {
                time.insert("timezone".into(), Value::String(scalar(&v, &k, &what)?));
            }
            "ntp" => {
                let Yaml::Map(fields) = v else {
                    bail!("{what}: ntp: expected a mapping (enabled, servers, pools)");
                };
                let mut servers = Vec::new();
                let mut enabled = true;
                for (fk, fv) in fields {
                    let key = format!("ntp.{}", shown(&fk, IN_ERRORS));
                    match fk.as_str() {
                        "enabled" => enabled = boolean(&fv, &key, &what)?,
                        "servers" | "pools" => servers.extend(strings(&fv, &key, &what)?),
                        _ => bail!("{what}: {key}: not supported by edgeimg (enabled, servers, pools)"),
                    }
                }
                if !enabled {
                    servers.clear();
                }
                time.insert(
                    "ntp".into(),
                    Value::Array(servers.into_iter().map(Value::String).collect()),
                );
            }
            "k0s" => {
                t.insert("k0s".into(), to_toml(&v));
            }
            _ => bail!(
                "{what}: `{}` is not supported by edgeimg's cloud-config subset \
                 (hostname, ssh_authorized_keys, users, write_files, runcmd, bootcmd, ntp, timezone, k0s)",
                shown(&k, IN_ERRORS)
            ),
        }
    }
    if !keys.is_empty() {
        let mut ssh = Table::new();
        ssh.insert("authorized_keys".into(), Value::Array(keys));
        t.insert("ssh".into(), Value::Table(ssh));
    }
    let cmds = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    if !run_cmd.is_empty() {
        t.insert("run_cmd".into(), cmds(run_cmd));
    }
    if !boot_cmd.is_empty() {
        t.insert("boot_cmd".into(), cmds(boot_cmd));
    }
    if !files.is_empty() {
        t.insert("files".into(), Value::Array(files));
    }
    if !time.is_empty() {
        t.insert("time".into(), Value::Table(time));
    }
    let toml_text = toml::to_string(&t).context("converting the cloud-config")?;
    Ok(NodeConfig::from_toml_str(&toml_text, origin)?)
}

fn scalar(v: &Yaml, key: &str, what: &str) -> Result<String> {
    match v {
        Yaml::Str(s) => Ok(s.clone()),
        _ => bail!("{what}: {key}: expected a single value"),
    }
}

fn boolean(v: &Yaml, key: &str, what: &str) -> Result<bool> {
    match scalar(v, key, what)?.as_str() {
        "true" | "True" | "yes" | "on" => Ok(true),
        "false" | "False" | "no" | "off" => Ok(false),
        s => bail!("{what}: {key}: {} is not true or false", q(s)),
    }
}

fn strings(v: &Yaml, key: &str, what: &str) -> Result<Vec<String>> {
    match v {
        Yaml::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, y)| scalar(y, &format!("{key}[{i}]"), what))
            .collect(),
        Yaml::Str(s) => Ok(vec![s.clone()]),
        Yaml::Map(_) => bail!("{what}: {key}: expected a list"),
    }
}

/// `runcmd`: each item a shell line, or a list of words (quoted and joined, as cloud-init does).
fn commands(v: &Yaml, key: &str, what: &str) -> Result<Vec<String>> {
    let Yaml::List(items) = v else {
        bail!("{what}: {key}: expected a list of commands");
    };
    items
        .iter()
        .enumerate()
        .map(|(i, y)| match y {
            Yaml::Str(s) => Ok(s.clone()),
            Yaml::List(words) => Ok(words
                .iter()
                .map(|w| scalar(w, &format!("{key}[{i}]"), what).map(|s| super::shell_quote(&s)))
                .collect::<Result<Vec<_>>>()?
                .join(" ")),
            Yaml::Map(_) => bail!("{what}: {key}[{i}]: expected a command"),
        })
        .collect()
}

/// The `k0s:` block as TOML; scalars that look like booleans or integers stay strings, which
/// the node config's own validation then judges.
fn to_toml(v: &Yaml) -> Value {
    match v {
        Yaml::Str(s) => Value::String(s.clone()),
        Yaml::List(items) => Value::Array(items.iter().map(to_toml).collect()),
        Yaml::Map(m) => Value::Table(m.iter().map(|(k, v)| (k.clone(), to_toml(v))).collect()),
    }
}

/// One meaningful line: its indentation, text (comment stripped) and 1-based number.
#[derive(Debug)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
    no: usize,
    raw: &'a str,
}

/// Parses the YAML subset into a tree.
pub fn parse(text: &str) -> Result<Yaml> {
    let raw: Vec<&str> = text.lines().collect();
    let mut p = Parser {
        raw,
        pos: 0,
        depth: 0,
    };
    p.skip_blank();
    if p.pos >= p.raw.len() {
        return Ok(Yaml::Map(Vec::new()));
    }
    let indent = p.line().context("empty document")?.indent;
    let v = p.block(indent)?;
    p.skip_blank();
    if let Some(l) = p.line() {
        bail!("line {}: unexpected indentation", l.no);
    }
    Ok(v)
}

struct Parser<'a> {
    raw: Vec<&'a str>,
    pos: usize,
    /// Mappings and sequences open around the current line.
    depth: usize,
}

fn strip_comment(s: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\'' if !in_d => in_s = !in_s,
            b'"' if !in_s => in_d = !in_d,
            b'#' if !in_s && !in_d && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') => {
                return s[..i].trim_end();
            }
            _ => {}
        }
    }
    s.trim_end()
}

impl<'a> Parser<'a> {
    fn skip_blank(&mut self) {
        while self.pos < self.raw.len() {
            let t = strip_comment(self.raw[self.pos]).trim();
            if t.is_empty() || t == "---" {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn line(&mut self) -> Option<Line<'a>> {
        self.skip_blank();
        let raw = *self.raw.get(self.pos)?;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        Some(Line {
            indent,
            text: strip_comment(raw).trim_start(),
            no: self.pos + 1,
            raw,
        })
    }

    /// A block (mapping or sequence) whose items sit at exactly `indent`.
    fn block(&mut self, indent: usize) -> Result<Yaml> {
        let first = self.line().context("missing block")?;
        if first.raw.starts_with('\t') || first.raw.trim_start_matches(' ').starts_with('\t') {
            bail!("line {}: tabs are not allowed for indentation", first.no);
        }
        if first.text == "-" || first.text.starts_with("- ") {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    /// Runs `f` one level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            bail!(
                "line {}: nested deeper than {MAX_DEPTH} levels (a cloud-config needs a few)",
                self.pos + 1
            );
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn sequence(&mut self, indent: usize) -> Result<Yaml> {
        self.nested(|p| p.sequence_items(indent))
    }

    fn sequence_items(&mut self, indent: usize) -> Result<Yaml> {
        let mut items = Vec::new();
        while let Some(l) = self.line() {
            if l.indent < indent {
                break;
            }
            if l.indent > indent {
                bail!("line {}: unexpected indentation", l.no);
            }
            if !(l.text == "-" || l.text.starts_with("- ")) {
                break;
            }
            let rest = l.text[1..].trim_start();
            self.pos += 1;
            if rest.is_empty() {
                let next = self
                    .line()
                    .with_context(|| format!("line {}: empty item", l.no))?;
                if next.indent <= indent {
                    items.push(Yaml::Str(String::new()));
                } else {
                    items.push(self.block(next.indent)?);
                }
            } else if is_mapping_start(rest) {
                // `- key: value` starts a mapping whose keys line up with `key`.
                let item_indent = indent + (l.text.len() - rest.len());
                self.pos -= 1;
                items.push(self.mapping_from(item_indent, Some(rest))?);
            } else {
                items.push(self.value(rest, l.no, indent)?);
            }
        }
        Ok(Yaml::List(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Yaml> {
        self.mapping_from(indent, None)
    }

    /// A mapping at `indent`; `first` is the text of its first entry when it starts after a
    /// `- ` on the current line.
    fn mapping_from(&mut self, indent: usize, first: Option<&'a str>) -> Result<Yaml> {
        self.nested(|p| p.mapping_entries(indent, first))
    }

    fn mapping_entries(&mut self, indent: usize, first: Option<&'a str>) -> Result<Yaml> {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        // Duplicates are found through a set: a list search made 200,000 keys take a minute.
        let mut seen: HashSet<String> = HashSet::new();
        let mut first = first;
        loop {
            let (text, no) = match first.take() {
                Some(t) => {
                    let no = self.pos + 1;
                    (t, no)
                }
                None => {
                    let Some(l) = self.line() else { break };
                    if l.indent < indent {
                        break;
                    }
                    if l.indent > indent {
                        bail!("line {}: unexpected indentation", l.no);
                    }
                    if l.text.starts_with("- ") || l.text == "-" {
                        break;
                    }
                    (l.text, l.no)
                }
            };
            self.pos += 1;
            let (key, rest) =
                split_key(text).with_context(|| format!("line {no}: expected `key: value`"))?;
            if !seen.insert(key.clone()) {
                bail!("line {no}: duplicate key `{}`", shown(&key, IN_ERRORS));
            }
            let value = if rest.is_empty() {
                match self.line() {
                    Some(n) if n.indent > indent => self.block(n.indent)?,
                    // A sequence may sit at the key's own indentation.
                    Some(n)
                        if n.indent == indent && (n.text.starts_with("- ") || n.text == "-") =>
                    {
                        self.sequence(indent)?
                    }
                    _ => Yaml::Str(String::new()),
                }
            } else {
                self.value(rest, no, indent)?
            };
            entries.push((key, value));
        }
        Ok(Yaml::Map(entries))
    }

    /// An inline value: a scalar, a flow sequence or a block scalar header.
    fn value(&mut self, rest: &str, no: usize, parent_indent: usize) -> Result<Yaml> {
        let c = rest.chars().next().unwrap_or(' ');
        match c {
            '|' | '>' => Ok(Yaml::Str(self.block_scalar(rest, no, parent_indent)?)),
            '[' => flow_sequence(rest, no),
            '{' => bail!("line {no}: flow mappings `{{...}}` are not supported: write the mapping as a block"),
            '&' | '*' | '!' => bail!("line {no}: anchors, aliases and tags are not supported"),
            _ => Ok(Yaml::Str(unquote(rest, no)?)),
        }
    }

    fn block_scalar(&mut self, header: &str, no: usize, parent_indent: usize) -> Result<String> {
        let folded = header.starts_with('>');
        let chomp = &header[1..];
        if !chomp.is_empty() && chomp != "-" && chomp != "+" {
            bail!(
                "line {no}: block scalar header {} is not supported (|, |-, |+, >, >-)",
                q(header)
            );
        }
        let mut lines: Vec<String> = Vec::new();
        let mut indent: Option<usize> = None;
        while self.pos < self.raw.len() {
            let raw = self.raw[self.pos];
            if raw.trim().is_empty() {
                lines.push(String::new());
                self.pos += 1;
                continue;
            }
            let ind = raw.len() - raw.trim_start_matches(' ').len();
            if ind <= parent_indent {
                break;
            }
            let i = *indent.get_or_insert(ind);
            if ind < i {
                break;
            }
            lines.push(raw[i..].to_string());
            self.pos += 1;
        }
        let mut trailing = 0;
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
            trailing += 1;
        }
        let mut s = if folded {
            let mut out = String::new();
            for (i, l) in lines.iter().enumerate() {
                if i > 0 {
                    out.push(if l.is_empty() || lines[i - 1].is_empty() {
                        '\n'
                    } else {
                        ' '
                    });
                }
                out.push_str(l);
            }
            out
        } else {
            lines.join("\n")
        };
        match chomp {
            "-" => {}
            "+" => {
                s.push('\n');
                s.push_str(&"\n".repeat(trailing));
            }
            _ => s.push('\n'),
        }
        Ok(s)
    }
}

fn is_mapping_start(s: &str) -> bool {
    split_key(s).is_some() && !s.starts_with(['"', '\'', '['])
}

/// `key: rest` -> (key, rest); the colon must be followed by a space or end the line.
fn split_key(s: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), q[end + 1..].strip_prefix(':')?)
    } else {
        let i = s
            .find(": ")
            .or_else(|| s.strip_suffix(':').map(|k| k.len()))?;
        (s[..i].trim().to_string(), &s[i + 1..])
    };
    if key.is_empty() || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest.trim()))
}

fn unquote(s: &str, no: usize) -> Result<String> {
    if let Some(inner) = s.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .with_context(|| format!("line {no}: unterminated single quote"))?;
        return Ok(inner.replace("''", "'"));
    }
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .with_context(|| format!("line {no}: unterminated double quote"))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('/') => out.push('/'),
                other => bail!(
                    "line {no}: escape \\{} is not supported",
                    other.map(String::from).unwrap_or_default()
                ),
            }
        }
        return Ok(out);
    }
    Ok(s.to_string())
}

fn flow_sequence(s: &str, no: usize) -> Result<Yaml> {
    let inner = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .with_context(|| format!("line {no}: a flow sequence must be on one line: [a, b]"))?;
    if inner.contains(['[', '{']) {
        bail!("line {no}: nested flow collections are not supported");
    }
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match (quote, c) {
            (None, ',') => {
                items.push(cur.trim().to_string());
                cur.clear();
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                cur.push(c);
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        items.push(cur.trim().to_string());
    }
    Ok(Yaml::List(
        items
            .iter()
            .map(|i| unquote(i, no).map(Yaml::Str))
            .collect::<Result<_>>()?,
    ))
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
  - name: ops
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

    #[test]
    fn maps_the_subset_onto_the_node_config() {
        assert!(is_cloud_config(DOC));
        let c = from_cloud_config(DOC, Path::new("/x/user-data")).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("pi-07"));
        assert_eq!(c.ssh.authorized_keys.len(), 2);
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files[0].path, "/etc/motd.d/edge");
        assert_eq!(c.files[0].content, "hello\n  indented: \"kept\"\n");
        assert_eq!(c.files[0].mode.0, 0o600);
        assert_eq!(c.files[1].content, "a\tb");
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
    fn unsupported_keys_are_named() {
        let e = |doc: &str| format!("{:#}", from_cloud_config(doc, Path::new("u")).unwrap_err());
        let m = e("#cloud-config\npackages:\n  - vim\n");
        assert!(m.contains("`packages`"), "{m}");
        let m = e("#cloud-config\nusers:\n  - name: a\n    sudo: ALL\n");
        assert!(m.contains("users[0].sudo"), "{m}");
        let m = e("#cloud-config\nwrite_files:\n  - path: /etc/x\n    defer: true\n");
        assert!(m.contains("write_files[0].defer"), "{m}");
        let m = e("#cloud-config\nntp:\n  ntp_client: chrony\n");
        assert!(m.contains("ntp.ntp_client"), "{m}");
        let m = e("#cloud-config\nk0s:\n  rol: worker\n");
        assert!(m.contains("rol"), "{m}");
        let m = e("#cloud-config\nhostname: Bad_Name\n");
        assert!(m.contains("hostname"), "{m}");
        let m = e("#cloud-config\na: &x 1\n");
        assert!(m.contains("anchors"), "{m}");
        let c = from_cloud_config(
            "#cloud-config\nntp:\n  enabled: false\n  servers: [a]\n",
            Path::new("u"),
        )
        .unwrap();
        assert_eq!(c.time.ntp.as_deref(), Some(&[][..]));
    }
}
