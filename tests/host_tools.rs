//! Every host tool a test uses is installed by `scripts/install-deps test`.
//!
//! The tools are collected from the code, not from a list kept by hand:
//! - in `src/**/*.rs` and `tests/**/*.rs`, the helper calls that name a tool with a string
//!   literal (`need("tool", "package")`, `need("tool")`, `need_tool`, `require_tool`, `require`,
//!   `run_tool`, `run_tool_status`, `tool_ok`, `mtools`, `run`, `Command::new`), also when the
//!   literal comes from the array of a `for` loop (`for tool in ["a", "b"] { require_tool(tool) }`,
//!   or a position of its tuples);
//! - the `[qemu]` table of each board (`system` and the `packages` that provide it), which the
//!   boot tests hand to `need(&spec.system)`;
//! - the commands run by `scripts/test`, `scripts/bench` and `scripts/compare-builds`.
//!
//! Each tool maps to where it comes from: the package named in the call or the board, else the
//! `TOOLS` table below. A tool that is in neither fails the test, asking for a table entry; a
//! Debian package that `scripts/install-deps test` does not install fails it, naming the tool
//! and the package to add.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a tool comes from when the call that uses it names no package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source<'a> {
    /// A Debian package `scripts/install-deps test` must install.
    Apt(&'a str),
    /// A package of Debian's essential set (Essential: yes): on every Debian system, never
    /// removed by apt without force, so install-deps need not list it.
    Essential(&'a str),
    /// Installed by `scripts/install-deps test` with pip (a `pip_install NAME[==VERSION]` line).
    Pip(&'a str),
    /// The Rust toolchain (rustup): install-deps checks it with `command -v TOOL`.
    Rustup,
}

use Source::*;

/// Tool -> source, for the tools whose call names no package. Keep it sorted.
const TOOLS: &[(&str, Source<'static>)] = &[
    ("bash", Essential("bash")),
    ("bmaptool", Apt("bmap-tools")),
    ("busybox", Apt("busybox-static")),
    ("cargo", Rustup),
    ("cat", Essential("coreutils")),
    ("chmod", Essential("coreutils")),
    ("cmp", Essential("diffutils")),
    ("cp", Essential("coreutils")),
    ("cpio", Apt("cpio")),
    ("cut", Essential("coreutils")),
    ("dash", Essential("dash")),
    ("date", Essential("coreutils")),
    ("dd", Essential("coreutils")),
    ("depmod", Apt("kmod")),
    ("diff", Essential("diffutils")),
    ("dirname", Essential("coreutils")),
    ("dpkg", Essential("dpkg")),
    ("dtc", Apt("device-tree-compiler")),
    ("fdtget", Apt("device-tree-compiler")),
    ("dpkg-deb", Essential("dpkg")),
    ("dpkg-query", Essential("dpkg")),
    ("du", Essential("coreutils")),
    ("dumpe2fs", Apt("e2fsprogs")),
    ("e2fsck", Apt("e2fsprogs")),
    ("fdisk", Apt("fdisk")),
    ("find", Essential("findutils")),
    ("fsck.fat", Apt("dosfstools")),
    ("git", Apt("git")),
    ("gpg", Apt("gpg")),
    ("grep", Essential("grep")),
    ("groff", Apt("groff-base")),
    ("gzip", Essential("gzip")),
    ("head", Essential("coreutils")),
    ("kubectl", Apt("kubernetes-client")),
    ("man", Apt("man-db")),
    ("mcopy", Apt("mtools")),
    ("mdir", Apt("mtools")),
    ("minfo", Apt("mtools")),
    ("mkdir", Essential("coreutils")),
    ("mkfs.ext4", Apt("e2fsprogs")),
    ("mkfs.fat", Apt("dosfstools")),
    ("mkfs.vfat", Apt("dosfstools")),
    ("mkimage", Apt("u-boot-tools")),
    ("mksquashfs", Apt("squashfs-tools")),
    ("mmd", Apt("mtools")),
    ("modprobe", Apt("kmod")),
    ("mtype", Apt("mtools")),
    ("objcopy", Apt("binutils")),
    ("objdump", Apt("binutils")),
    ("od", Essential("coreutils")),
    ("openssl", Apt("openssl")),
    ("pyspdxtools", Pip("spdx-tools")),
    ("python3", Apt("python3")),
    ("readelf", Apt("binutils")),
    ("resize2fs", Apt("e2fsprogs")),
    ("rm", Essential("coreutils")),
    ("sbverify", Apt("sbsigntool")),
    ("sed", Essential("sed")),
    ("sfdisk", Apt("fdisk")),
    ("sgdisk", Apt("gdisk")),
    ("sh", Essential("dash")),
    ("sha256sum", Essential("coreutils")),
    ("shellcheck", Apt("shellcheck")),
    ("sort", Essential("coreutils")),
    ("stat", Essential("coreutils")),
    ("strace", Apt("strace")),
    ("tail", Essential("coreutils")),
    ("tar", Essential("tar")),
    ("time", Apt("time")),
    ("tr", Essential("coreutils")),
    ("unsquashfs", Apt("squashfs-tools")),
    ("vde_switch", Apt("vde2")),
    ("veritysetup", Apt("cryptsetup-bin")),
    ("virt-fw-vars", Pip("virt-firmware")),
    ("xz", Apt("xz-utils")),
    ("zstd", Apt("zstd")),
];

/// The scripts whose commands count as test tools.
const SCRIPTS: &[&str] = &["scripts/test", "scripts/bench", "scripts/compare-builds"];

/// Helper functions whose first argument, a string literal, names a host tool.
const HELPERS: &[&str] = &[
    "need",
    "need_tool",
    "require_tool",
    "require",
    "run_tool",
    "run_tool_status",
    "tool_ok",
    "mtools",
    "run",
];

/// One place a tool is used.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Use {
    tool: String,
    /// Packages named where it is used (`need("tool", "package")`, a board's `[qemu] packages`).
    packages: Vec<String>,
    /// file:line (or file: [qemu]).
    at: String,
}

// ---------------------------------------------------------------------------------------------
// Rust sources: a small lexer (identifiers, string literals, punctuation; comments skipped),
// then the helper calls and `for` loops over literal arrays.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

fn lex_rust(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a string body starting after its opening quote; returns (content, next index).
    let string = |mut i: usize, line: &mut usize| -> (String, usize) {
        let mut s = String::new();
        while i < c.len() && c[i] != '"' {
            if c[i] == '\n' {
                *line += 1;
            }
            if c[i] == '\\' && i + 1 < c.len() {
                let e = c[i + 1];
                s.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                if e == '\n' {
                    *line += 1;
                }
                i += 2;
                continue;
            }
            s.push(c[i]);
            i += 1;
        }
        (s, i + 1)
    };
    while i < c.len() {
        let ch = c[i];
        let at = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let (s, next) = string(i + 1, &mut line);
            out.push((Tok::Str(s), at));
            i = next;
        } else if (ch == 'r' || (ch == 'b' && c.get(i + 1) == Some(&'r')))
            && matches!(c.get(i + 1 + usize::from(ch == 'b')), Some('"') | Some('#'))
        {
            // Raw string: r"..." / r#"..."# / br"...".
            let mut j = i + 1 + usize::from(ch == 'b');
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push((Tok::Ident(ch.to_string()), at));
                i += 1;
                continue;
            }
            j += 1;
            let mut s = String::new();
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                s.push(c[j]);
                j += 1;
            }
            out.push((Tok::Str(s), at));
            i = j;
        } else if ch == 'b' && c.get(i + 1) == Some(&'"') {
            let (s, next) = string(i + 2, &mut line);
            out.push((Tok::Str(s), at));
            i = next;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push((Tok::Other, at));
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push((Tok::Other, at));
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push((Tok::Other, at));
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), at));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
            out.push((Tok::Other, at));
        } else {
            out.push((Tok::Punct(ch), at));
            i += 1;
        }
    }
    out
}

fn is_punct(t: Option<&(Tok, usize)>, ch: char) -> bool {
    matches!(t, Some((Tok::Punct(p), _)) if *p == ch)
}

/// Index just past the bracket closing the one at `open` (`(`, `[` or `{`).
fn close(toks: &[(Tok, usize)], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, (t, _)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The top-level comma-separated parts of the tokens between `open` and its closing bracket.
fn parts(toks: &[(Tok, usize)], open: usize) -> Vec<&[(Tok, usize)]> {
    let end = close(toks, open) - 1;
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, open + 1);
    for j in open + 1..end {
        match toks[j].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                out.push(&toks[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    if start < end {
        out.push(&toks[start..end]);
    }
    out
}

/// Whether the token at `i` starts a call that takes a tool name: a helper (not a method, not
/// its definition) or `Command::new`.
fn tool_call(toks: &[(Tok, usize)], i: usize) -> bool {
    let Tok::Ident(name) = &toks[i].0 else {
        return false;
    };
    if !is_punct(toks.get(i + 1), '(') {
        return false;
    }
    let before = |k: usize| i.checked_sub(k).and_then(|j| toks.get(j));
    if name == "new" {
        return is_punct(before(1), ':')
            && is_punct(before(2), ':')
            && matches!(before(3), Some((Tok::Ident(c), _)) if c == "Command");
    }
    HELPERS.contains(&name.as_str())
        && !is_punct(before(1), '.')
        && !matches!(before(1), Some((Tok::Ident(f), _)) if f == "fn")
}

fn rust_uses(file: &str, src: &str) -> Vec<Use> {
    let toks = lex_rust(src);
    let mut out = Vec::new();
    let at = |line: usize| format!("{file}:{line}");
    for i in 0..toks.len() {
        if !tool_call(&toks, i) {
            continue;
        }
        if let Some((Tok::Str(tool), line)) = toks.get(i + 2) {
            let mut packages = Vec::new();
            if is_punct(toks.get(i + 3), ',') {
                if let (Some((Tok::Ident(n), _)), Some((Tok::Str(p), _))) =
                    (toks.get(i), toks.get(i + 4))
                {
                    if n == "need" {
                        packages.push(p.clone());
                    }
                }
            }
            out.push(Use {
                tool: tool.clone(),
                packages,
                at: at(*line),
            });
        }
    }
    // for PATTERN in [ ... ] { ... helper(IDENT) ... }
    for i in 0..toks.len() {
        if toks[i].0 != Tok::Ident("for".into()) {
            continue;
        }
        let Some(in_at) =
            (i + 1..toks.len().min(i + 20)).find(|&j| toks[j].0 == Tok::Ident("in".into()))
        else {
            continue;
        };
        if !is_punct(toks.get(in_at + 1), '[') {
            continue;
        }
        let pattern: Vec<String> = toks[i + 1..in_at]
            .iter()
            .filter_map(|(t, _)| match t {
                Tok::Ident(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let tuple = is_punct(toks.get(i + 1), '(');
        let array_end = close(&toks, in_at + 1);
        if !is_punct(toks.get(array_end), '{') {
            continue;
        }
        let body_end = close(&toks, array_end);
        // Pattern names handed to a tool call in the body: `helper(x)`, `Command::new(x)`.
        let mut used = BTreeSet::new();
        for j in array_end..body_end {
            if tool_call(&toks, j) {
                let mut k = j + 2;
                if is_punct(toks.get(k), '&') {
                    k += 1;
                }
                if let Some((Tok::Ident(x), _)) = toks.get(k) {
                    if let Some(pos) = pattern.iter().position(|p| p == x) {
                        if is_punct(toks.get(k + 1), ')') || is_punct(toks.get(k + 1), ',') {
                            used.insert(pos);
                        }
                    }
                }
            }
        }
        for element in parts(&toks, in_at + 1) {
            for &pos in &used {
                let item = if tuple {
                    match element.first() {
                        Some((Tok::Punct('('), _)) => parts(element, 0).get(pos).copied(),
                        _ => None,
                    }
                } else {
                    Some(element)
                };
                if let Some([(Tok::Str(tool), line)]) = item {
                    out.push(Use {
                        tool: tool.clone(),
                        packages: Vec::new(),
                        at: at(*line),
                    });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shell scripts: the words in command position (after a newline, `;`, `|`, `&&`, `||`, `(`,
// `then`, `do`, ..., inside `$(...)`, `<(...)` and double quotes too), minus assignments,
// builtins, keywords, the script's own functions, variables and paths. Heredoc bodies, quoted
// text and `for`/`case` word lists are not commands.

const SHELL_WORDS: &[&str] = &[
    "!",
    "{",
    "}",
    "[",
    "[[",
    "]]",
    "alias",
    "break",
    "case",
    "cd",
    "command",
    "continue",
    "declare",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fi",
    "for",
    "function",
    "if",
    "in",
    "local",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "test",
    "then",
    "time",
    "trap",
    "true",
    "type",
    "ulimit",
    "umask",
    "unset",
    "until",
    "wait",
    "while",
    ".",
    ":",
];

struct Shell {
    c: Vec<char>,
    i: usize,
    line: usize,
    commands: Vec<(String, usize)>,
    functions: BTreeSet<String>,
    heredocs: Vec<(String, bool)>,
}

impl Shell {
    fn peek(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    /// After a newline: skips pending heredoc bodies.
    fn newline(&mut self) {
        self.line += 1;
        self.i += 1;
        for (delim, strip_tabs) in std::mem::take(&mut self.heredocs) {
            loop {
                let start = self.i;
                while self.i < self.c.len() && self.c[self.i] != '\n' {
                    self.i += 1;
                }
                let text: String = self.c[start..self.i].iter().collect();
                self.i += 1;
                self.line += 1;
                let text = if strip_tabs {
                    text.trim_start_matches('\t')
                } else {
                    &text
                };
                if text == delim || self.i >= self.c.len() {
                    break;
                }
            }
        }
    }

    /// Parses commands until `end` (a closing char for `$(`/`(`/`<(`; None: end of text).
    fn commands(&mut self, end: Option<char>) {
        let mut at_command = true;
        // Words that are not commands until this word: `in` (for, case), `do` (for).
        let mut skip_until: Option<&str> = None;
        let mut in_case = 0;
        let mut case_pattern = false;
        while self.i < self.c.len() {
            let ch = self.c[self.i];
            if Some(ch) == end {
                self.i += 1;
                return;
            }
            match ch {
                '\n' => {
                    self.newline();
                    at_command = !case_pattern;
                }
                ' ' | '\t' => self.i += 1,
                '\\' if self.peek(1) == Some('\n') => {
                    self.i += 1;
                    self.newline();
                }
                '#' => {
                    while self.i < self.c.len() && self.c[self.i] != '\n' {
                        self.i += 1;
                    }
                }
                ';' => {
                    self.i += 1;
                    if self.peek(0) == Some(';') {
                        self.i += 1;
                        case_pattern = in_case > 0;
                        at_command = false;
                    } else {
                        at_command = true;
                    }
                }
                '|' | '&' => {
                    self.i += 1;
                    if self.peek(0) == Some(ch) {
                        self.i += 1;
                    }
                    if !case_pattern {
                        at_command = true;
                    }
                }
                '(' => {
                    self.i += 1;
                    if self.peek(0) == Some('(') {
                        self.skip_to("))");
                    } else {
                        self.commands(Some(')'));
                    }
                    at_command = false;
                }
                ')' => {
                    self.i += 1;
                    if case_pattern {
                        case_pattern = false;
                    }
                    at_command = true;
                }
                '<' | '>' => {
                    if matches!(self.peek(1), Some('(')) {
                        self.i += 2;
                        self.commands(Some(')'));
                    } else if ch == '<' && self.peek(1) == Some('<') && self.peek(2) != Some('<') {
                        self.i += 2;
                        let strip = self.peek(0) == Some('-');
                        if strip {
                            self.i += 1;
                        }
                        while self.peek(0) == Some(' ') {
                            self.i += 1;
                        }
                        let mut delim = String::new();
                        while let Some(d) = self
                            .peek(0)
                            .filter(|d| !matches!(d, ' ' | '\t' | '\n' | ';' | '|' | '&' | ')'))
                        {
                            if !matches!(d, '\'' | '"' | '\\') {
                                delim.push(d);
                            }
                            self.i += 1;
                        }
                        self.heredocs.push((delim, strip));
                    } else {
                        while matches!(self.peek(0), Some('<' | '>' | '&')) {
                            self.i += 1;
                        }
                        while self.peek(0) == Some(' ') {
                            self.i += 1;
                        }
                        self.word();
                    }
                }
                _ => {
                    let start_line = self.line;
                    let w = self.word();
                    if w.is_empty() {
                        self.i += 1;
                        continue;
                    }
                    if case_pattern {
                        if w == "esac" {
                            in_case -= 1;
                            case_pattern = false;
                        }
                        continue;
                    }
                    if let Some(until) = skip_until {
                        if w == until {
                            skip_until = None;
                            if w == "in" && in_case > 0 {
                                case_pattern = true;
                            }
                            at_command = w == "do";
                        }
                        continue;
                    }
                    if !at_command {
                        continue;
                    }
                    match w.as_str() {
                        "for" | "select" => skip_until = Some("do"),
                        "case" => {
                            in_case += 1;
                            skip_until = Some("in");
                        }
                        "esac" => {
                            in_case -= 1;
                            case_pattern = false;
                        }
                        "[[" => {
                            self.skip_to("]]");
                            at_command = false;
                        }
                        "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "{"
                        | "time" => {}
                        // After these only operators or redirections follow.
                        "fi" | "done" | "}" => at_command = false,
                        // `3<file`: a redirection of file descriptor 3.
                        _ if w.chars().all(|c| c.is_ascii_digit())
                            && matches!(self.peek(0), Some('<' | '>')) => {}
                        _ if is_assignment(&w) => {
                            if w.ends_with('=') && self.peek(0) == Some('(') {
                                // NAME=( words ): array contents are not commands.
                                self.i += 1;
                                self.skip_words_to(')');
                            }
                        }
                        _ => {
                            at_command = false;
                            let rest: String = self.c[self.i..].iter().take(4).collect();
                            if rest.trim_start().starts_with("()") {
                                // NAME() { body }: the body starts in command position.
                                while self.peek(0) != Some(')') {
                                    self.i += 1;
                                }
                                self.i += 1;
                                at_command = true;
                                self.functions.insert(w);
                            } else {
                                self.commands.push((w, start_line));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Skips to just past `pat` (for `((...))` and `[[ ... ]]`), parsing `$(...)` inside.
    fn skip_to(&mut self, pat: &str) {
        let p: Vec<char> = pat.chars().collect();
        while self.i < self.c.len() {
            if self.c[self.i..].starts_with(&p) {
                self.i += p.len();
                return;
            }
            if self.c[self.i] == '$' && self.peek(1) == Some('(') {
                self.i += 2;
                self.commands(Some(')'));
            } else if self.c[self.i] == '"' {
                self.i += 1;
                self.double_quoted();
            } else if self.c[self.i] == '\'' {
                self.single_quoted();
            } else if self.c[self.i] == '\n' {
                self.newline();
            } else {
                self.i += 1;
            }
        }
    }

    /// Skips words (quotes and substitutions parsed) up to the closing `end`.
    fn skip_words_to(&mut self, end: char) {
        while self.i < self.c.len() && self.c[self.i] != end {
            match self.c[self.i] {
                '\n' => self.newline(),
                ' ' | '\t' => self.i += 1,
                '#' => {
                    while self.i < self.c.len() && self.c[self.i] != '\n' {
                        self.i += 1;
                    }
                }
                _ => {
                    if self.word().is_empty() {
                        self.i += 1;
                    }
                }
            }
        }
        self.i += 1;
    }

    fn single_quoted(&mut self) {
        self.i += 1;
        while self.i < self.c.len() && self.c[self.i] != '\'' {
            if self.c[self.i] == '\n' {
                self.line += 1;
            }
            self.i += 1;
        }
        self.i += 1;
    }

    /// Inside "...": only `$(...)` and backquotes hold commands.
    fn double_quoted(&mut self) {
        while self.i < self.c.len() && self.c[self.i] != '"' {
            match self.c[self.i] {
                '\\' => self.i += 2,
                '$' if self.peek(1) == Some('(') && self.peek(2) == Some('(') => {
                    self.i += 3;
                    self.skip_to("))");
                }
                '$' if self.peek(1) == Some('(') => {
                    self.i += 2;
                    self.commands(Some(')'));
                }
                '$' if self.peek(1) == Some('{') => {
                    self.i += 2;
                    self.braced();
                }
                '\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
        self.i += 1;
    }

    /// `${...}`: may hold quotes; no commands counted.
    fn braced(&mut self) {
        let mut depth = 1;
        while self.i < self.c.len() && depth > 0 {
            match self.c[self.i] {
                '{' => depth += 1,
                '}' => depth -= 1,
                '\\' => self.i += 1,
                '\'' => {
                    self.single_quoted();
                    continue;
                }
                '"' => {
                    self.i += 1;
                    self.double_quoted();
                    continue;
                }
                '\n' => self.line += 1,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// One shell word; its literal text (quoted parts kept with their quotes, substitutions
    /// parsed for commands and kept as `$`).
    fn word(&mut self) -> String {
        let mut w = String::new();
        while self.i < self.c.len() {
            let ch = self.c[self.i];
            match ch {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | ')' => break,
                '(' => break,
                '\'' => {
                    w.push('\'');
                    self.single_quoted();
                }
                '"' => {
                    w.push('"');
                    self.i += 1;
                    self.double_quoted();
                }
                '\\' => {
                    if let Some(n) = self.peek(1) {
                        w.push(n);
                    }
                    self.i += 2;
                }
                '$' if self.peek(1) == Some('(') && self.peek(2) == Some('(') => {
                    w.push('$');
                    self.i += 3;
                    self.skip_to("))");
                }
                '$' if self.peek(1) == Some('(') => {
                    w.push('$');
                    self.i += 2;
                    self.commands(Some(')'));
                }
                '$' if self.peek(1) == Some('{') => {
                    w.push('$');
                    self.i += 2;
                    self.braced();
                }
                '`' => {
                    w.push('$');
                    self.i += 1;
                    while self.i < self.c.len() && self.c[self.i] != '`' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                _ => {
                    w.push(ch);
                    self.i += 1;
                }
            }
        }
        w
    }
}

fn is_assignment(w: &str) -> bool {
    let Some(eq) = w.find('=') else {
        return false;
    };
    let name = w[..eq].trim_end_matches('+');
    let name = name.split('[').next().unwrap_or("");
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The external commands a shell script runs, with their lines.
fn shell_commands(src: &str) -> Vec<(String, usize)> {
    let mut sh = Shell {
        c: src.chars().collect(),
        i: 0,
        line: 1,
        commands: Vec::new(),
        functions: BTreeSet::new(),
        heredocs: Vec::new(),
    };
    sh.commands(None);
    let functions = sh.functions.clone();
    sh.commands
        .into_iter()
        .filter(|(w, _)| {
            !SHELL_WORDS.contains(&w.as_str())
                && !functions.contains(w)
                && !w.contains(['$', '"', '\'', '/', '='])
        })
        .collect()
}

/// The first literal of each argument list `(["tool", ...` in a Python script (subprocess
/// calls and the script's run/timed helpers take the command as a list).
fn python_commands(src: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let mut rest = line;
        while let Some(p) = rest.find("([") {
            rest = &rest[p + 2..];
            let t = rest.trim_start();
            if let Some(q) = t.strip_prefix('"') {
                if let Some(e) = q.find('"') {
                    out.push((q[..e].to_string(), n + 1));
                }
            }
        }
    }
    out
}

fn script_uses(file: &str, src: &str) -> Vec<Use> {
    let first = src.lines().next().unwrap_or("");
    let (interpreter, commands) = if first.contains("python") {
        ("python3", python_commands(src))
    } else if first.contains("bash") || first.contains("/sh") {
        (
            if first.contains("bash") { "bash" } else { "sh" },
            shell_commands(src),
        )
    } else {
        ("", Vec::new())
    };
    let mut out: Vec<Use> = commands
        .into_iter()
        .map(|(tool, line)| Use {
            tool,
            packages: Vec::new(),
            at: format!("{file}:{line}"),
        })
        .collect();
    if !interpreter.is_empty() {
        out.push(Use {
            tool: interpreter.into(),
            packages: Vec::new(),
            at: format!("{file}:1"),
        });
    }
    out
}

fn board_uses(file: &str, src: &str) -> Vec<Use> {
    let value: toml::Value = toml::from_str(src).unwrap_or_else(|e| panic!("{file}: {e}"));
    let Some(qemu) = value.get("qemu") else {
        return Vec::new();
    };
    let Some(system) = qemu.get("system").and_then(|s| s.as_str()) else {
        return Vec::new();
    };
    let packages = qemu
        .get("packages")
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    vec![Use {
        tool: system.into(),
        packages,
        at: format!("{file}: [qemu]"),
    }]
}

// ---------------------------------------------------------------------------------------------
// scripts/install-deps: the packages of the `test` branch, and the check.

/// The words of a bash array starting at `packages=(` / `packages+=(` in `text`.
fn array_words(text: &str, start: &str) -> Option<Vec<String>> {
    let from = text.find(start)? + start.len();
    let end = from + text[from..].find(')')?;
    Some(
        text[from..end]
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split_whitespace())
            .map(String::from)
            .collect(),
    )
}

/// What `scripts/install-deps test` installs: the base `packages=(...)` plus the `packages+=(...)`
/// inside `if [ "$what" = test ]; then ... fi`, and the pip and toolchain lines.
struct InstallDeps {
    packages: BTreeSet<String>,
    /// The PyPI packages of its `pip_install NAME[==VERSION]` lines.
    pip: BTreeSet<String>,
    text: String,
}

fn parse_install_deps(text: &str) -> Result<InstallDeps, String> {
    let mut packages: BTreeSet<String> = array_words(text, "packages=(")
        .ok_or("scripts/install-deps: no `packages=(...)` array")?
        .into_iter()
        .collect();
    let branch = text
        .find("if [ \"$what\" = test ]; then")
        .ok_or("scripts/install-deps: no `if [ \"$what\" = test ]; then` branch")?;
    let body = &text[branch..];
    let fi = body
        .lines()
        .position(|l| l.trim() == "fi")
        .ok_or("scripts/install-deps: the test branch has no `fi`")?;
    let body: String = body.lines().take(fi).collect::<Vec<_>>().join("\n");
    let test = array_words(&body, "packages+=(")
        .ok_or("scripts/install-deps: no `packages+=(...)` in the test branch")?;
    packages.extend(test);
    Ok(InstallDeps {
        packages,
        pip: pip_installs(text),
        text: text.to_string(),
    })
}

/// The package names that `pip_install SPEC` calls name (not the function's definition).
fn pip_installs(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split("pip_install ").nth(1))
        .filter_map(|spec| spec.split_whitespace().next())
        .map(|spec| spec.split("==").next().unwrap_or(spec).to_string())
        .collect()
}

fn table() -> BTreeMap<&'static str, Source<'static>> {
    TOOLS.iter().copied().collect()
}

/// Every problem: a tool without a source, or a source install-deps does not provide.
fn check(uses: &[Use], deps: &InstallDeps, table: &BTreeMap<&str, Source<'static>>) -> Vec<String> {
    let mut by_tool: BTreeMap<&str, Vec<&Use>> = BTreeMap::new();
    for u in uses {
        by_tool.entry(u.tool.as_str()).or_default().push(u);
    }
    let mut problems = Vec::new();
    for (tool, uses) in by_tool {
        let at = uses
            .iter()
            .map(|u| u.at.as_str())
            .take(3)
            .collect::<Vec<_>>()
            .join(", ");
        let named: BTreeSet<&str> = uses
            .iter()
            .flat_map(|u| u.packages.iter().map(String::as_str))
            .collect();
        let sources: Vec<Source> = if !named.is_empty() {
            if let Some(Apt(p) | Essential(p)) = table.get(tool) {
                if !named.contains(p) {
                    problems.push(format!(
                        "`{tool}` ({at}): the call names package(s) {named:?} but the TOOLS table of tests/host_tools.rs says `{p}`: make them agree"
                    ));
                }
            }
            named
                .iter()
                .map(|&p| match table.get(tool) {
                    Some(Essential(e)) if *e == p => Essential(p),
                    _ => Apt(p),
                })
                .collect()
        } else if let Some(s) = table.get(tool) {
            vec![*s]
        } else {
            problems.push(format!(
                "`{tool}` ({at}) is used by the tests but has no entry in the TOOLS table of tests/host_tools.rs: add it with the Debian package that provides it (`dpkg -S $(command -v {tool})`), and that package to `scripts/install-deps test`"
            ));
            continue;
        };
        for s in sources {
            match s {
                Apt(p) if !deps.packages.contains(p) => problems.push(format!(
                    "`{tool}` ({at}) comes from the Debian package `{p}`, which `scripts/install-deps test` does not install: add `{p}` to its packages"
                )),
                Pip(p) if !deps.pip.contains(p) => problems.push(format!(
                    "`{tool}` ({at}) comes from `{p}` (pip), which `scripts/install-deps test` does not install: add a `pip_install {p}` line"
                )),
                Rustup if !deps.text.contains(&format!("command -v {tool}")) => problems.push(format!(
                    "`{tool}` ({at}) comes with the Rust toolchain: `scripts/install-deps` should check it with `command -v {tool}`"
                )),
                _ => {}
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The repository.

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // tests/fuzz is its own crate (cargo-fuzz), built only by scripts/fuzz.
            if p.ends_with("tests/fuzz") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn all_uses() -> Vec<Use> {
    let root = repo();
    let rel = |p: &Path| p.strip_prefix(&root).unwrap().display().to_string();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut uses = Vec::new();
    for f in &files {
        uses.extend(rust_uses(&rel(f), &std::fs::read_to_string(f).unwrap()));
    }
    let mut boards: Vec<_> = std::fs::read_dir(root.join("boards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    boards.sort();
    for b in boards
        .iter()
        .filter(|b| b.extension().is_some_and(|e| e == "toml"))
    {
        uses.extend(board_uses(&rel(b), &std::fs::read_to_string(b).unwrap()));
    }
    for s in SCRIPTS {
        let text = std::fs::read_to_string(root.join(s)).unwrap_or_else(|e| panic!("{s}: {e}"));
        uses.extend(script_uses(s, &text));
    }
    uses
}

#[test]
fn every_tool_the_tests_use_is_installed_by_install_deps() {
    let uses = all_uses();
    let text = std::fs::read_to_string(repo().join("scripts/install-deps")).unwrap();
    let deps = parse_install_deps(&text).unwrap();
    let problems = check(&uses, &deps, &table());
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    // The scan sees the tools it was written for (a scanner that finds nothing proves nothing).
    let tools: BTreeSet<&str> = uses.iter().map(|u| u.tool.as_str()).collect();
    for t in [
        "shellcheck",
        "busybox",
        "unsquashfs",
        "depmod",
        "veritysetup",
        "gzip",
        "qemu-system-x86_64",
        "qemu-system-aarch64",
        "cargo",
        "mksquashfs",
        "zstd",
    ] {
        assert!(
            tools.contains(t),
            "the scan no longer finds `{t}`: {tools:?}"
        );
    }
}

/// Every TOOLS entry is still needed (a stale entry would hide that a tool left the tests);
/// prints the tool -> source table the check works from (`--nocapture` to see it).
#[test]
fn tool_table_has_no_stale_entries() {
    let uses = all_uses();
    let table = table();
    let mut rows: BTreeMap<&str, (BTreeSet<String>, usize)> = BTreeMap::new();
    for u in &uses {
        let row = rows.entry(u.tool.as_str()).or_default();
        row.1 += 1;
        if u.packages.is_empty() {
            if let Some(s) = table.get(u.tool.as_str()) {
                row.0.insert(format!("{s:?}"));
            }
        } else {
            row.0.extend(
                u.packages
                    .iter()
                    .map(|p| format!("Apt({p:?}), named where used")),
            );
        }
    }
    for (tool, (sources, n)) in &rows {
        println!(
            "{tool:22} {n:3} use(s)  {}",
            sources.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let stale: Vec<&str> = TOOLS
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !rows.contains_key(t))
        .collect();
    assert!(
        stale.is_empty(),
        "TOOLS in tests/host_tools.rs lists tools no test, board or script uses any more: {stale:?}: remove them"
    );
    let mut sorted: Vec<&str> = TOOLS.iter().map(|(t, _)| *t).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), TOOLS.len(), "TOOLS has a tool twice");
}

// ---------------------------------------------------------------------------------------------
// The checker itself.

const FAKE_INSTALL_DEPS: &str = r#"#!/usr/bin/env bash
set -euo pipefail
what=${1:-build}
packages=(gcc make pkg-config ca-certificates)
if [ "$what" = test ]; then
  packages+=(gdisk fdisk dosfstools mtools squashfs-tools cpio xz-utils zstd bmap-tools
             busybox-static   # the device's shell
             e2fsprogs)
fi
pip_install() {
  python3 -m pip install -q "$1"
}
if [ "$what" = test ]; then
  command -v pyspdxtools >/dev/null 2>&1 || pip_install spdx-tools==0.8.5
fi
command -v cargo >/dev/null 2>&1 || exit 1
"#;

const FAKE_TEST: &str = r#"
fn need(tool: &str, package: &str) {}
#[test]
fn scripts_pass_shellcheck() {
    need("busybox", "busybox-static");
    need("shellcheck", "shellcheck");
    // need("commented-out", "busybox-static")
    let s = "need(\"in-a-string\", \"busybox-static\")";
    let out = Command::new("sfdisk").arg("-J").output();
}
"#;

#[test]
fn checker_catches_a_package_install_deps_lacks() {
    let deps = parse_install_deps(FAKE_INSTALL_DEPS).unwrap();
    assert!(deps.packages.contains("busybox-static") && deps.packages.contains("e2fsprogs"));
    assert!(deps.packages.contains("gcc"), "the base packages count too");
    let uses = rust_uses("src/fake.rs", FAKE_TEST);
    let tools: Vec<&str> = uses.iter().map(|u| u.tool.as_str()).collect();
    assert_eq!(tools, ["busybox", "shellcheck", "sfdisk"]);
    let problems = check(&uses, &deps, &table());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`shellcheck` (src/fake.rs:6)")
            && problems[0].contains("Debian package `shellcheck`")
            && problems[0].contains("add `shellcheck`"),
        "{}",
        problems[0]
    );
    // With the package added, nothing is missing.
    let fixed = FAKE_INSTALL_DEPS.replace("zstd bmap-tools", "zstd bmap-tools shellcheck");
    assert!(check(&uses, &parse_install_deps(&fixed).unwrap(), &table()).is_empty());
}

#[test]
fn checker_catches_a_tool_missing_from_the_table_and_other_sources() {
    let deps = parse_install_deps(FAKE_INSTALL_DEPS).unwrap();
    let u = |tool: &str| Use {
        tool: tool.into(),
        packages: Vec::new(),
        at: "tests/fake.rs:1".into(),
    };
    let p = check(&[u("frobnicate")], &deps, &table());
    assert!(
        p.len() == 1 && p[0].contains("`frobnicate`") && p[0].contains("TOOLS table"),
        "{p:?}"
    );
    // Essential, pip and toolchain sources.
    assert!(check(
        &[u("sha256sum"), u("pyspdxtools"), u("cargo")],
        &deps,
        &table()
    )
    .is_empty());
    let no_pip = FAKE_INSTALL_DEPS.replace("|| pip_install spdx-tools==0.8.5", "|| true");
    let p = check(
        &[u("pyspdxtools")],
        &parse_install_deps(&no_pip).unwrap(),
        &table(),
    );
    assert!(p.len() == 1 && p[0].contains("spdx-tools"), "{p:?}");
    // A call that disagrees with the table.
    let wrong = Use {
        packages: vec!["busybox".into()],
        ..u("busybox")
    };
    let p = check(&[wrong], &deps, &table());
    assert!(p.iter().any(|m| m.contains("make them agree")), "{p:?}");
    // No test branch: an error, not an empty list.
    assert!(parse_install_deps("packages=(gcc)\n").is_err());
}

#[test]
fn rust_scan_follows_for_loops_and_tuples() {
    let src = r##"
        for tool in ["sgdisk", "unsquashfs"] { require_tool(tool); }
        for (compression, tool, args) in [
            (Compression::Gzip, "gzip", vec!["-t"]),
            (Compression::Zstd, "zstd", vec!["-t", "-q"]),
        ] {
            require(tool);
            let out = run_with_stdin(Command::new(tool).args(&args), &a);
        }
        for name in ["not", "a", "tool"] { println!("{name}"); }
        fn run(cmd: &str) {}
        x.run("method-not-a-tool");
        let c = '"'; need_tool("depmod");
        let r = r#"need("raw-string")"#;
    "##;
    let tools: BTreeSet<String> = rust_uses("f.rs", src).into_iter().map(|u| u.tool).collect();
    let want: BTreeSet<String> = ["sgdisk", "unsquashfs", "gzip", "zstd", "depmod"]
        .map(String::from)
        .into();
    assert_eq!(tools, want);
}

#[test]
fn shell_scan_finds_commands_not_words() {
    let src = r#"#!/usr/bin/env bash
set -euo pipefail
helper() { echo hi; }
packages=(gcc make
          not-a-command)
CARGO_TARGET_DIR=x cargo build --release
out=$(sha256sum "$f" | cut -d' ' -f1)
case $1 in -h | --help) helper ;; *) zstd -dc "$f" ;; esac
for f in a b c; do mcopy "$f"; done
if [ -n "$x" ] && ! grep -q y <<<"$z"; then helper; fi
echo "$(git rev-parse HEAD) and $((1 + 2))"
diff <(sort a) <(sort b) >/dev/null || true
"$bin" build
text='python3 inside quotes
is not run'
cat <<'EOF'
unsquashfs -ls in a heredoc
EOF
while read -r l; do :; done < <(find . -type f)
while read -r a && read -r b <&3; do :; done <x 3<y
"#;
    let cmds: Vec<String> = shell_commands(src).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        cmds,
        [
            "cargo",
            "sha256sum",
            "cut",
            "zstd",
            "mcopy",
            "grep",
            "git",
            "diff",
            "sort",
            "sort",
            "cat",
            "find"
        ]
    );
}
