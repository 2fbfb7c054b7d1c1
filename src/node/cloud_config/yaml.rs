//! The YAML reading of cloud-config: [saphyr-parser]'s events built into a tree that keeps the
//! line and column of every node and how each scalar was written, then typed the way
//! cloud-init's own reader (PyYAML's `SafeLoader`, YAML 1.1) types it.
//!
//! Why saphyr-parser: it is the maintained successor of yaml-rust/yaml-rust2 (same authors),
//! pure Rust, and passes the YAML test suite, so block scalars (`>`, `|2`, chomping),
//! multi-line plain scalars, escapes (`\u00e9`), document markers (`...`) and tab rules are
//! read as YAML says; every event and every error carries a line and column. Its event level
//! keeps what a typed tree throws away: whether a scalar was quoted and its tag. That matters
//! because cloud-init reads YAML 1.1, where an unquoted `0644` is the octal number 420,
//! `yes`/`on` are booleans and `2024-01-01` is a date, while YAML 1.2 crates (serde_yaml_ng,
//! saphyr's own loader, yaml-rust2) read `0644` as 644 and `yes` as text. Typing plain
//! scalars here with PyYAML's resolver rules gives the values cloud-init would see.
//!
//! [saphyr-parser]: https://docs.rs/saphyr-parser

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting of mappings and sequences read (a cloud-config needs four or five levels;
/// the bound keeps a hostile file from exhausting the stack).
pub const MAX_DEPTH: usize = 32;

/// A YAML node with where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub col: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in document order, each a scalar's text (merge keys `<<` already merged).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// A scalar as written: its text after YAML's folding and escapes, whether it was plain
/// (unquoted, not a block scalar) and its tag (`str`, `binary`, ... for `!!str`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub plain: bool,
    pub tag: Option<String>,
}

/// What PyYAML's `SafeLoader` makes of a scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    Null,
    Bool(bool),
    Int(i64),
    /// A float, timestamp or other non-text value edgeimg has no use for: its YAML type name.
    Other(&'static str),
    Str(String),
    Binary(Vec<u8>),
}

/// A YAML error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn err<T, E: From<YamlError>>(span: &Span, message: impl Into<String>) -> Result<T, E> {
    Err(YamlError {
        line: span.start.line(),
        col: span.start.col() + 1,
        message: message.into(),
    }
    .into())
}

/// An open collection while the tree is built.
enum Open {
    Seq(Node, usize),
    Map(OpenMap),
}

/// A mapping being read: the key whose value is awaited, and an index of its keys (a search
/// through a list made 200,000 keys take a minute).
struct OpenMap {
    node: Node,
    anchor: usize,
    pending: Option<Key>,
    /// Hash of a key -> its entry (the text is compared there; a collision of two different
    /// keys falls back to a search). Holding hashes, not copies of the keys, halves the
    /// memory a mapping of many keys takes.
    index: HashMap<u64, usize>,
    /// Keys that came in through `<<`: an explicit key replaces them.
    merged: HashSet<String>,
}

/// Why [`parse_with`] stopped: the YAML, or the caller's check of a top-level key.
#[derive(Debug)]
pub enum Stop<E> {
    Yaml(YamlError),
    Key(E),
}

impl<E> From<YamlError> for Stop<E> {
    fn from(e: YamlError) -> Self {
        Stop::Yaml(e)
    }
}

/// Parses one YAML document; an empty document is `None` (cloud-init reads it as `{}`).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    parse_with(text, |_: &Key| Ok::<(), ()>(())).map_err(|e| match e {
        Stop::Yaml(e) => e,
        Stop::Key(()) => unreachable!("the check accepts every key"),
    })
}

/// [`parse`], calling `check` on each key of the top-level mapping as soon as it is read: a
/// document whose first key is already refused is not read (and held in memory) whole.
pub fn parse_with<E>(
    text: &str,
    mut check: impl FnMut(&Key) -> Result<(), E>,
) -> Result<Option<Node>, Stop<E>> {
    // Alias expansion is bounded by the size of the input (a "billion laughs" file is
    // refused instead of filling the memory).
    let budget = 2 * text.len() + 1024;
    let mut made = 0usize;
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text).keep_tags(true);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            // The scanner's own bound on flow collections (`[[[...`), said as ours is.
            message: if e.info().contains("recursion limit") {
                format!("nested deeper than {MAX_DEPTH} levels (a cloud-config needs a few)")
            } else {
                e.info().to_string()
            },
        })?;
        let line = span.start.line();
        let col = span.start.col() + 1;
        let at = |value| Node { line, col, value };
        let (node, anchor) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return err(
                        &span,
                        "a second YAML document (after `---` or `...`): cloud-init reads one \
                         document; remove the rest",
                    );
                }
                continue;
            }
            Event::SequenceStart(anchor, tag) => {
                open_check(&stack, &span, tag.as_deref(), "seq")?;
                made += 1;
                stack.push(Open::Seq(at(Value::Seq(Vec::new())), anchor));
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                open_check(&stack, &span, tag.as_deref(), "map")?;
                made += 1;
                stack.push(Open::Map(OpenMap {
                    node: at(Value::Map(Vec::new())),
                    anchor,
                    pending: None,
                    index: HashMap::new(),
                    merged: HashSet::new(),
                }));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(n, a)) => (n, a),
                Some(Open::Map(m)) => match m.pending {
                    None => (m.node, m.anchor),
                    Some(k) => return err(&span, format!("the key `{}` has no value", k.text)),
                },
                None => return err(&span, "unbalanced collection"),
            },
            Event::Scalar(text, style, anchor, tag) => {
                made += 1;
                let tag = match tag.as_deref() {
                    None => None,
                    Some(t) => Some(tag_name(t).ok_or_else(|| YamlError {
                        line,
                        col,
                        message: format!(
                            "the tag {t} is not one cloud-init reads (YAML's own only: !!str, \
                             !!binary, !!int, !!bool, !!null)"
                        ),
                    })?),
                };
                let node = at(Value::Scalar(Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag,
                }));
                (node, anchor)
            }
            Event::Alias(id) => {
                let Some(n) = anchors.get(&id) else {
                    return err(&span, "an alias (*name) to an unknown anchor");
                };
                made += weight(n);
                if made > budget {
                    return err(
                        &span,
                        "aliases expand to far more than the file holds: refused (a YAML bomb?)",
                    );
                }
                let mut n = n.clone();
                n.line = line;
                n.col = col;
                (n, 0)
            }
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        let stack_len = stack.len();
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq(s, _)) => {
                if let Value::Seq(items) = &mut s.value {
                    items.push(node);
                }
            }
            Some(Open::Map(m)) => match m.pending.take() {
                None => {
                    let Value::Scalar(k) = node.value else {
                        return err(
                            &span,
                            "a mapping or sequence used as a key: keys are plain names",
                        );
                    };
                    let key = Key {
                        text: k.text,
                        line: node.line,
                        col: node.col,
                    };
                    if stack_len == 1 {
                        check(&key).map_err(Stop::Key)?;
                    }
                    m.pending = Some(key);
                }
                Some(key) => m.insert(key, node)?,
            },
        }
    }
    Ok(root)
}

/// Before a collection opens: the depth bound, and a tag that agrees (`!!seq`, `!!map`).
fn open_check(
    stack: &[Open],
    span: &Span,
    tag: Option<&saphyr_parser::Tag>,
    kind: &str,
) -> Result<(), YamlError> {
    if stack.len() >= MAX_DEPTH {
        return err(
            span,
            format!("nested deeper than {MAX_DEPTH} levels (a cloud-config needs a few)"),
        );
    }
    if let Some(t) = tag {
        match tag_name(t) {
            Some(name) if name == kind => {}
            _ => return err(span, format!("the tag {t} does not fit a {kind}")),
        }
    }
    Ok(())
}

fn hash_of(key: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = HASHER.with(|b| b.build_hasher());
    h.write(key.as_bytes());
    h.finish()
}

thread_local! {
    static HASHER: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new();
}

impl OpenMap {
    /// The entry holding `key`, if any.
    fn find(index: &HashMap<u64, usize>, entries: &[(Key, Node)], key: &str) -> Option<usize> {
        match index.get(&hash_of(key)) {
            None => None,
            Some(&i) if entries[i].0.text == key => Some(i),
            Some(_) => entries.iter().position(|(k, _)| k.text == key),
        }
    }

    fn remember(index: &mut HashMap<u64, usize>, key: &str, pos: usize) {
        index.entry(hash_of(key)).or_insert(pos);
    }

    /// Adds one entry: a duplicate key is an error (YAML requires unique keys; PyYAML would
    /// keep the last silently); `<<` merges mappings in (YAML 1.1 merge keys, as PyYAML
    /// does: the mapping's own keys win, wherever they stand).
    fn insert(&mut self, key: Key, value: Node) -> Result<(), YamlError> {
        let Value::Map(entries) = &mut self.node.value else {
            unreachable!("an open mapping holds a mapping")
        };
        if key.text == "<<" {
            let maps: Vec<Node> = match value.value {
                Value::Seq(items) => items,
                _ => vec![value],
            };
            for m in maps {
                let Value::Map(merged) = m.value else {
                    return Err(YamlError {
                        line: key.line,
                        col: key.col,
                        message: "`<<` merges mappings only".into(),
                    });
                };
                for (k, v) in merged {
                    if Self::find(&self.index, entries, &k.text).is_none() {
                        Self::remember(&mut self.index, &k.text, entries.len());
                        self.merged.insert(k.text.clone());
                        entries.push((k, v));
                    }
                }
            }
            return Ok(());
        }
        match Self::find(&self.index, entries, &key.text) {
            Some(pos) if self.merged.remove(&key.text) => entries[pos] = (key, value),
            Some(pos) => {
                return Err(YamlError {
                    line: key.line,
                    col: key.col,
                    message: format!(
                        "duplicate key `{}` (first on line {})",
                        crate::util::text::shown(&key.text, crate::util::text::IN_ERRORS),
                        entries[pos].0.line
                    ),
                })
            }
            None => {
                Self::remember(&mut self.index, &key.text, entries.len());
                entries.push((key, value));
            }
        }
        Ok(())
    }
}

/// The nodes in a subtree (the cost of copying it for an alias).
fn weight(n: &Node) -> usize {
    match &n.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => 1 + items.iter().map(weight).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + weight(v)).sum::<usize>(),
    }
}

/// `str` for `!!str`; `None` for a tag outside YAML's own set.
fn tag_name(t: &saphyr_parser::Tag) -> Option<String> {
    (t.handle == "tag:yaml.org,2002:" || t.handle == "!!").then(|| t.suffix.clone())
}

impl Scalar {
    /// The value PyYAML's `SafeLoader` gives this scalar: an explicit tag decides, quoted and
    /// block scalars are text, plain ones go through the YAML 1.1 resolvers.
    pub fn typed(&self) -> Result<Typed, String> {
        let t = self.text.as_str();
        match self.tag.as_deref() {
            Some("str") => return Ok(Typed::Str(self.text.clone())),
            Some("binary") => {
                let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                if compact.is_empty() {
                    return Ok(Typed::Binary(Vec::new()));
                }
                return crate::node::check::base64_decode(&compact)
                    .map(Typed::Binary)
                    .ok_or_else(|| "!!binary content is not valid base64".into());
            }
            Some("int") => {
                return int11(t)
                    .map(Typed::Int)
                    .ok_or_else(|| format!("!!int {} is not an integer", crate::util::text::q(t)))
            }
            Some("bool") => {
                return bool11(t)
                    .map(Typed::Bool)
                    .ok_or_else(|| format!("!!bool {} is not a boolean", crate::util::text::q(t)))
            }
            Some("null") => return Ok(Typed::Null),
            Some("float") => return Ok(Typed::Other("float")),
            Some("timestamp") => return Ok(Typed::Other("timestamp")),
            Some(other) => return Err(format!("the tag !!{other} does not fit a scalar")),
            None => {}
        }
        if !self.plain {
            return Ok(Typed::Str(self.text.clone()));
        }
        Ok(resolve11(t))
    }
}

/// PyYAML's implicit resolvers (`yaml/resolver.py`, YAML 1.1) for a plain scalar.
pub fn resolve11(t: &str) -> Typed {
    if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
        return Typed::Null;
    }
    if let Some(b) = bool11(t) {
        return Typed::Bool(b);
    }
    if is_int11(t) {
        // Out of range of i64: still a number, not text.
        return int11(t).map(Typed::Int).unwrap_or(Typed::Other("int"));
    }
    if is_float11(t) {
        return Typed::Other("float");
    }
    if is_timestamp11(t) {
        return Typed::Other("timestamp");
    }
    if t == "=" {
        // `tag:yaml.org,2002:value`: SafeLoader has no constructor for it and fails.
        return Typed::Other("value");
    }
    Typed::Str(t.to_string())
}

fn bool11(t: &str) -> Option<bool> {
    match t {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn all(s: &str, f: impl Fn(char) -> bool) -> bool {
    s.chars().all(f)
}

fn strip_sign(t: &str) -> &str {
    t.strip_prefix(['-', '+']).unwrap_or(t)
}

/// `[-+]?(0b[01_]+ | 0[0-7_]+ | 0 | [1-9][0-9_]* | 0x[0-9a-fA-F_]+ | [1-9][0-9_]*(:[0-5]?[0-9])+)`
fn is_int11(t: &str) -> bool {
    let u = strip_sign(t);
    if let Some(b) = u.strip_prefix("0b") {
        return !b.is_empty() && all(b, |c| matches!(c, '0' | '1' | '_'));
    }
    if let Some(h) = u.strip_prefix("0x") {
        return !h.is_empty() && all(h, |c| c.is_ascii_hexdigit() || c == '_');
    }
    if u == "0" {
        return true;
    }
    if let Some(o) = u.strip_prefix('0') {
        return !o.is_empty() && all(o, |c| matches!(c, '0'..='7' | '_'));
    }
    let mut parts = u.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.starts_with(|c: char| ('1'..='9').contains(&c))
        && all(head, |c| c.is_ascii_digit() || c == '_');
    head_ok && parts.all(sexagesimal_part)
}

/// `[0-5]?[0-9]`
fn sexagesimal_part(p: &str) -> bool {
    let b = p.as_bytes();
    match b.len() {
        1 => b[0].is_ascii_digit(),
        2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
        _ => false,
    }
}

/// PyYAML's `construct_yaml_int`; `None` when not an integer or out of range.
fn int11(t: &str) -> Option<i64> {
    if !is_int11(t) {
        return None;
    }
    let v: String = t.chars().filter(|&c| c != '_').collect();
    let (neg, u) = match v.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, v.strip_prefix('+').unwrap_or(&v).to_string()),
    };
    let n: i64 = if u == "0" {
        0
    } else if let Some(b) = u.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(h) = u.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = u.strip_prefix('0') {
        i64::from_str_radix(o, 8).ok()?
    } else if u.contains(':') {
        let mut acc: i64 = 0;
        for p in u.split(':') {
            acc = acc.checked_mul(60)?.checked_add(p.parse().ok()?)?;
        }
        acc
    } else {
        u.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

/// `[-+]?([0-9][0-9_]*)\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9_]+([eE][-+][0-9]+)? |
/// [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
fn is_float11(t: &str) -> bool {
    if matches!(t, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let u = strip_sign(t);
    if matches!(u, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let exp_ok = |e: &str| {
        e.is_empty()
            || e.strip_prefix(['e', 'E'])
                .and_then(|r| r.strip_prefix(['-', '+']))
                .is_some_and(|d| !d.is_empty() && all(d, |c| c.is_ascii_digit()))
    };
    let digits_ = |s: &str| all(s, |c| c.is_ascii_digit() || c == '_');
    // `.5`: no sign allowed by PyYAML's pattern.
    if let Some(frac) = t.strip_prefix('.') {
        let end = frac.find(['e', 'E']).unwrap_or(frac.len());
        return end > 0 && digits_(&frac[..end]) && exp_ok(&frac[end..]);
    }
    let Some((int, rest)) = u.split_once('.') else {
        return false;
    };
    let int_ok = |s: &str| s.starts_with(|c: char| c.is_ascii_digit()) && digits_(s);
    if int.contains(':') {
        let mut parts = int.split(':');
        let head = parts.next().unwrap_or("");
        return int_ok(head) && parts.all(sexagesimal_part) && digits_(rest);
    }
    let end = rest.find(['e', 'E']).unwrap_or(rest.len());
    int_ok(int) && digits_(&rest[..end]) && exp_ok(&rest[end..])
}

/// `YYYY-MM-DD`, or that with a time (`[Tt]` or blanks, `H?H:MM:SS(.f*)?`, zone).
fn is_timestamp11(t: &str) -> bool {
    let b = t.as_bytes();
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if b.len() == 10
        && (0..4).all(d)
        && b[4] == b'-'
        && d(5)
        && d(6)
        && b[7] == b'-'
        && d(8)
        && d(9)
    {
        return true;
    }
    // The long form: year-month?-day? then a time.
    let mut i = 0;
    if !(0..4).all(d) || b.get(4) != Some(&b'-') {
        return false;
    }
    i += 5;
    let one_or_two = |i: &mut usize| -> bool {
        if !d(*i) {
            return false;
        }
        *i += 1;
        if d(*i) {
            *i += 1;
        }
        true
    };
    if !one_or_two(&mut i) || b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    if !one_or_two(&mut i) {
        return false;
    }
    match b.get(i) {
        Some(b'T' | b't') => i += 1,
        Some(b' ' | b'\t') => {
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        }
        _ => return false,
    }
    if !one_or_two(&mut i) || b.get(i) != Some(&b':') || !d(i + 1) || !d(i + 2) {
        return false;
    }
    i += 3;
    if b.get(i) != Some(&b':') || !d(i + 1) || !d(i + 2) {
        return false;
    }
    i += 3;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while d(i) {
            i += 1;
        }
    }
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match b.get(i) {
        None => true,
        Some(b'Z') => i + 1 == b.len(),
        Some(b'-' | b'+') => {
            i += 1;
            if !one_or_two(&mut i) {
                return false;
            }
            if b.get(i) == Some(&b':') {
                if !d(i + 1) || !d(i + 2) {
                    return false;
                }
                i += 3;
            }
            i == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The types PyYAML 6 gives these plain scalars (checked with `yaml.safe_load`).
    #[test]
    fn plain_scalars_are_typed_as_pyyaml_types_them() {
        for (t, want) in [
            ("0644", Typed::Int(420)),
            ("644", Typed::Int(644)),
            ("0o644", Typed::Str("0o644".into())),
            ("0x1f", Typed::Int(31)),
            ("0b101", Typed::Int(5)),
            ("1_000", Typed::Int(1000)),
            ("1:30", Typed::Int(90)),
            ("-12", Typed::Int(-12)),
            ("09", Typed::Str("09".into())),
            ("yes", Typed::Bool(true)),
            ("Off", Typed::Bool(false)),
            ("y", Typed::Str("y".into())),
            ("~", Typed::Null),
            ("", Typed::Null),
            ("1.5", Typed::Other("float")),
            ("1e3", Typed::Str("1e3".into())),
            ("1.0e+3", Typed::Other("float")),
            (".5", Typed::Other("float")),
            ("-.inf", Typed::Other("float")),
            ("10.0.0.1", Typed::Str("10.0.0.1".into())),
            ("2024-01-02", Typed::Other("timestamp")),
            ("2001-12-14t21:59:43.10-05:00", Typed::Other("timestamp")),
            ("2001-12-14 21:59:43.10 -5", Typed::Other("timestamp")),
            ("2024-1-2", Typed::Str("2024-1-2".into())),
            ("pool.ntp.org", Typed::Str("pool.ntp.org".into())),
            ("Europe/Berlin", Typed::Str("Europe/Berlin".into())),
        ] {
            assert_eq!(resolve11(t), want, "{t:?}");
        }
    }

    #[test]
    fn lines_styles_tags_and_merges() {
        let doc = "a: &x\n  k: 1\nb:\n  <<: *x\n  j: '2'\nc: !!binary aGk=\nd: !!str 0644\n";
        let root = parse(doc).unwrap().unwrap();
        let Value::Map(top) = root.value else {
            panic!()
        };
        assert_eq!(top[1].0.text, "b");
        assert_eq!(top[1].0.line, 3);
        let Value::Map(b) = &top[1].1.value else {
            panic!()
        };
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0.text, "k");
        let Value::Scalar(j) = &b[1].1.value else {
            panic!()
        };
        assert_eq!(j.typed().unwrap(), Typed::Str("2".into()));
        let Value::Scalar(c) = &top[2].1.value else {
            panic!()
        };
        assert_eq!(c.typed().unwrap(), Typed::Binary(b"hi".to_vec()));
        let Value::Scalar(d) = &top[3].1.value else {
            panic!()
        };
        assert_eq!(d.typed().unwrap(), Typed::Str("0644".into()));
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 1));
        assert!(
            e.message.contains("duplicate key `a` (first on line 1)"),
            "{e:?}"
        );
        let e = parse("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("tabs"), "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{e:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = (b'a' + i - 1) as char;
            let n = (b'a' + i) as char;
            doc.push_str(&format!(
                "{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            ));
        }
        let e = parse(&doc).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{e:?}");
    }
}
