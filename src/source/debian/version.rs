//! Debian version comparison, as dpkg does it (`deb-version(7)`):
//! `[epoch:]upstream[-revision]`, compared part by part; within a part, runs of non-digits
//! compare with letters before non-letters and `~` before everything (even the end), then
//! runs of digits compare numerically.

use std::cmp::Ordering;
use std::fmt;

/// A version relation in a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le, // `<` and `>` are obsolete spellings of `<=` and `>=`
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether `have` satisfies `have OP want`.
    pub fn holds(self, have: &str, want: &str) -> bool {
        let o = compare(have, want);
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Eq => o == Ordering::Equal,
            Op::Ge => o != Ordering::Less,
            Op::Gt => o == Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a version into (epoch, upstream, revision).
fn split(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(0), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// The sort weight of one character in a non-digit run.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            let o = weight(ca).cmp(&weight(cb));
            if o != Ordering::Equal {
                return o;
            }
            i += usize::from(ca.is_some());
            j += usize::from(cb.is_some());
        }
        // Digit run, numerically (leading zeros do not count).
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let o = compare_digits(&a[si..i], &b[sj..j]);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn compare_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    const PAIRS: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Equal),
        ("1.0", "1.1", Less),
        ("1.10", "1.9", Greater),
        ("1.0~rc1", "1.0", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0~", "1.0", Less),
        ("1.0", "1.0+b1", Less),
        ("1.0a", "1.0", Greater),
        ("1.0a", "1.0+", Less),
        ("1:0.1", "2.0", Greater),
        ("0:1.0", "1.0", Equal),
        ("1.0-1", "1.0-2", Less),
        ("1.0-10", "1.0-9", Greater),
        ("2.36-9+deb12u14", "2.36-9+deb12u4", Greater),
        ("6.12.117-1", "6.12.9-1", Greater),
        ("1.2.3-1~bpo12+1", "1.2.3-1", Less),
        ("007", "7", Equal),
        ("3.0-1-1", "3.0-1", Greater),
    ];

    #[test]
    fn known_pairs() {
        for (a, b, want) in PAIRS {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// Cross-check with dpkg itself, the reference implementation, when it is installed.
    #[test]
    fn agrees_with_dpkg() {
        if std::process::Command::new("dpkg")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("dpkg is not installed: install it (apt-get install -y dpkg) to run this test");
        }
        for (a, b, want) in PAIRS {
            let st = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, "lt", b])
                .status()
                .unwrap();
            assert_eq!(st.success(), *want == Less, "dpkg disagrees on {a} < {b}");
        }
    }

    #[test]
    fn ops() {
        assert!(Op::parse(">=").unwrap().holds("2.0", "2.0"));
        assert!(!Op::parse(">>").unwrap().holds("2.0", "2.0"));
        assert!(Op::parse("<<").unwrap().holds("2.0~1", "2.0"));
        assert!(Op::parse("=").unwrap().holds("1:2", "1:2"));
        assert!(Op::parse("!").is_none());
    }
}
