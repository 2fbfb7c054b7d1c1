//! User text on its way to a terminal: control characters escaped (a value must not move
//! the cursor, retitle the window or clear the screen), bidirectional overrides escaped (it
//! must not reorder what is shown around it), and long values cut (an error must not repeat
//! a 100 MB value).

use std::borrow::Cow;
use std::fmt::Write;

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Characters a terminal acts on or that reorder the text around them: C0 and C1 controls,
/// DEL, and the bidirectional marks, embeddings, overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `value` for a message or a listing: unsafe characters written as escapes (`\n`,
/// `\u{1b}`), and at most `max` characters of it, a longer value cut with its length in
/// bytes (`xxxx… (104857600 bytes)`).
pub fn shown(value: &str, max: usize) -> String {
    render(value, max, false, false)
}

/// A message of several lines from elsewhere (a parser's): like [`shown`], but its line
/// breaks and tabs are kept.
pub fn message(text: &str, max: usize) -> String {
    render(text, max, false, true)
}

/// [`shown`] in double quotes, with `"` and `\` escaped too, like `{:?}` of a string.
pub fn quoted(value: &str, max: usize) -> String {
    format!("\"{}\"", render(value, max, true, false))
}

/// The longest a value is shown in an error message, in characters.
pub const IN_ERRORS: usize = 80;

/// [`quoted`] with the length for error messages.
pub fn q(value: &str) -> String {
    quoted(value, IN_ERRORS)
}

fn render(value: &str, max: usize, quotes: bool, layout: bool) -> String {
    let mut out = String::with_capacity(value.len().min(max) + 2);
    for (n, c) in value.chars().enumerate() {
        if n == max {
            let _ = write!(out, "… ({} bytes)", value.len());
            break;
        }
        if layout && (c == '\n' || c == '\t') {
            out.push(c);
        } else if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else if quotes && (c == '"' || c == '\\') {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A whole message or listing for a terminal: unsafe characters escaped, except the line
/// breaks and tabs that lay it out.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// JSON text with every unsafe character left in it written as a `\uXXXX` escape. JSON
/// writers escape C0 controls inside strings already (a raw line break or tab is the
/// layout's, and stays); DEL, C1 controls and bidirectional marks pass through them and
/// reach the terminal. Those can only stand inside strings, where the escape means the same
/// character, so the document is unchanged.
pub fn json_for_terminal(json: String) -> String {
    let escape = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t' | ' ');
    if !json.chars().any(escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escape(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(shown("plain text ü", 100), "plain text ü");
        assert_eq!(
            shown("a\u{1b}]0;x\u{7}b\nc\u{9b}\u{7f}\u{202e}", 100),
            "a\\u{1b}]0;x\\u{7}b\\nc\\u{9b}\\u{7f}\\u{202e}"
        );
        assert_eq!(quoted("say \"hi\" \\o/", 100), r#""say \"hi\" \\o/""#);
        assert_eq!(quoted("a\tb", 100), format!("{:?}", "a\tb"));
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let big = "h".repeat(100_000_000);
        let s = q(&big);
        assert_eq!(
            s,
            format!("\"{}… (100000000 bytes)\"", "h".repeat(IN_ERRORS))
        );
        // Cut by characters, never inside one.
        assert_eq!(shown("äöü", 2), "äö… (6 bytes)");
        assert_eq!(shown("äöü", 3), "äöü");
    }

    #[test]
    fn messages_keep_their_lines() {
        assert_eq!(message("a\n\tb\u{1b}c", 100), "a\n\tb\\u{1b}c");
        assert_eq!(message("abc\ndef", 5), "abc\nd… (7 bytes)");
        assert!(matches!(for_terminal("a\n\tb"), Cow::Borrowed(_)));
        assert_eq!(for_terminal("a\n\u{1b}[2Jb\r"), "a\n\\u{1b}[2Jb\\r");
    }

    #[test]
    fn json_stays_the_same_document() {
        let v = serde_json::json!({ "k": "a\u{1b}b\u{7f}c\u{9b}d\u{202e}e\nf", "n": [1, 2] });
        for raw in [
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap(),
        ] {
            let safe = json_for_terminal(raw.clone());
            assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), v);
            assert_eq!(safe.lines().count(), raw.lines().count());
        }
    }
}
