//! Reading a node's serial console: the lines the image prints (`edgeimg: ready ...`,
//! `edgeimg: FAILED ...`, the kernel's panic line) and [`Watch`], the small state machine that
//! turns console lines and the passing of time into the end of a boot.
//!
//! Pure: no process, thread or clock. Times are durations since QEMU started, given by the
//! caller, so console transcripts test every ending.

use std::time::Duration;

use super::Expectations;

/// The console line a failed boot step prints before dropping to a rescue shell.
pub use crate::node::contract::FAILED_LINE as FAILED_MARKER;
/// The console line a node prints once it is up (the device contract).
pub use crate::node::contract::READY_LINE as READY_MARKER;
/// The one line of k0s's pre-flight checks, printed before k0s starts.
pub use crate::node::contract::SYSINFO_LINE as SYSINFO_MARKER;
/// What the kernel prints when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// What every line of edgeimg's initramfs starts with: a panic before the first one is the
/// emulator's fault, not the image's.
const INIT_PREFIX: &str = "edgeimg: ";
/// After the ready line, how long to keep reading (k0s and late steps print after it).
const SETTLE: Duration = Duration::from_secs(5);

/// The fields of a ready line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    pub role: String,
    pub hostname: String,
    pub root: String,
    pub k0s: String,
    /// The line from `edgeimg: ready` on, without what the console printed before it.
    pub text: String,
}

/// Finds and parses `edgeimg: ready role=<r> hostname=<h> root=<ro|rw> k0s=<v>` in a console line.
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let at = line.find(READY_MARKER)?;
    let text = line[at..].trim_end().to_string();
    let mut r = ReadyLine {
        role: String::new(),
        hostname: String::new(),
        root: String::new(),
        k0s: String::new(),
        text,
    };
    for tok in line[at + READY_MARKER.len()..].split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        match k {
            "role" => r.role = v.to_string(),
            "hostname" => r.hostname = v.to_string(),
            "root" => r.root = v.to_string(),
            "k0s" => r.k0s = v.to_string(),
            _ => {}
        }
    }
    Some(r)
}

/// The counts of the pre-flight checks' line
/// `edgeimg: sysinfo: N passed, W warnings (...), E errors (...)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SysinfoLine {
    pub passed: u32,
    pub warnings: u32,
    pub errors: u32,
    /// The line from `edgeimg: sysinfo:` on.
    pub text: String,
}

/// Finds and parses the pre-flight checks' line in a console line; None when it is not one
/// or its counts do not read.
pub fn parse_sysinfo_line(line: &str) -> Option<SysinfoLine> {
    let at = line.find(SYSINFO_MARKER)?;
    let text = line[at..].trim_end().to_string();
    let rest = &text[SYSINFO_MARKER.len()..];
    // Counts are the number before each word; the lists in parentheses may hold anything
    // but never these words after a ", " at their own level.
    let count = |word: &str| -> Option<u32> {
        let mut depth = 0usize;
        let mut start = 0usize;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    if let Some(n) = field(&rest[start..i], word) {
                        return Some(n);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        field(&rest[start..], word)
    };
    Some(SysinfoLine {
        passed: count("passed")?,
        warnings: count("warnings")?,
        errors: count("errors")?,
        text,
    })
}

/// `N WORD (...)` -> N.
fn field(part: &str, word: &str) -> Option<u32> {
    let mut words = part.split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next()? == word).then_some(n)
}

/// A console line without its line ending, carriage returns and terminal escape sequences
/// (the firmware clears the screen and sets colours on the serial port).
pub(super) fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates up to a final byte in @..~
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// What ends a watch.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stop<'a> {
    /// The ready line, as `expect` says, and then every one of `checks` on the console.
    Ready {
        expect: &'a Expectations,
        checks: &'a [String],
    },
    /// The first line holding this text (where a power cut is made).
    At(&'a str),
    /// Every line until QEMU exits by itself: under `-no-reboot` a reset of the guest (its
    /// watchdog, a reboot) ends QEMU. A panic or a failure line does not end the watch, since
    /// what follows it is the point.
    Exit,
}

/// Why a boot failed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum Failure {
    #[error("the node reported a failure: {0}")]
    Reported(String),
    /// The kernel panicked before the initramfs printed anything: an emulator fault, worth
    /// booting again.
    #[error("the kernel panicked before the initramfs ran: {0}")]
    EarlyPanic(String),
    #[error("the kernel panicked: {0}")]
    Panic(String),
    #[error("ready line differs ({}): {line}", .mismatches.join("; "))]
    ReadyDiffers {
        mismatches: Vec<String>,
        line: String,
        /// When it showed.
        seconds: f64,
    },
    #[error("k0s's pre-flight checks found errors: {0}")]
    Sysinfo(String),
    #[error("the node printed its ready line without k0s's pre-flight checks before it (no `{}` line)", SYSINFO_MARKER.trim_end())]
    NoSysinfo,
    #[error("the node came up, but the console never showed: {}", .0.join(", "))]
    NeverShowed(Vec<String>),
    #[error("timed out after {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("QEMU exited before the node was ready")]
    Exited,
}

/// Where a boot got to: the ready line (or the line holding the stop marker) and when.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Reached {
    pub line: String,
    pub seconds: f64,
}

/// What one console line did to the watch.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    /// Nothing decided: read on.
    Pending,
    /// The ready line showed after `seconds` and says what was expected: read on for the
    /// settle time and the extra checks.
    Ready { seconds: f64 },
    /// The watch is over.
    End(Result<Reached, Failure>),
}

impl Event {
    /// When the ready line showed, if this line was it (matching or not).
    pub fn ready_after(&self) -> Option<f64> {
        match self {
            Event::Ready { seconds } => Some(*seconds),
            Event::End(Err(Failure::ReadyDiffers { seconds, .. })) => Some(*seconds),
            _ => None,
        }
    }
}

/// One boot's console, read until `stop`, a failure, or the timeout.
#[derive(Debug)]
pub(super) struct Watch<'a> {
    stop: Stop<'a>,
    timeout: Duration,
    console: Vec<String>,
    /// When the last line came.
    last_at: Duration,
    /// The ready line, once it showed, and when reading may end (every extra check present).
    ready: Option<(Reached, Duration)>,
}

impl<'a> Watch<'a> {
    pub fn new(stop: Stop<'a>, timeout: Duration) -> Watch<'a> {
        Watch {
            stop,
            timeout,
            console: Vec::new(),
            last_at: Duration::ZERO,
            ready: None,
        }
    }

    /// Every console line so far, in order.
    #[cfg(test)]
    pub fn console(&self) -> &[String] {
        &self.console
    }

    pub fn into_console(self) -> Vec<String> {
        self.console
    }

    /// When (since QEMU started) [`Watch::time_up`] is due if no line comes first: the end of
    /// the settle time once the node is ready and every extra check showed, else the timeout.
    pub fn wake_at(&self) -> Duration {
        match &self.ready {
            Some((_, settled)) if self.missing().is_empty() => (*settled).min(self.timeout),
            _ => self.timeout,
        }
    }

    /// A console line, read `at` after QEMU started.
    pub fn feed(&mut self, line: String, at: Duration) -> Event {
        let seconds = at.as_secs_f64();
        self.console.push(line);
        self.last_at = at;
        if matches!(self.stop, Stop::Exit) {
            return Event::Pending;
        }
        let line = self.console.last().expect("just pushed");
        if let Stop::At(marker) = self.stop {
            if line.contains(marker) {
                return Event::End(Ok(Reached {
                    line: line.trim().to_string(),
                    seconds,
                }));
            }
        }
        if line.contains(FAILED_MARKER) {
            return Event::End(Err(Failure::Reported(line.trim().to_string())));
        }
        if line.contains(KERNEL_PANIC) {
            let early = !self.console.iter().any(|l| l.contains(INIT_PREFIX));
            let line = line.trim().to_string();
            return Event::End(Err(if early {
                Failure::EarlyPanic(line)
            } else {
                Failure::Panic(line)
            }));
        }
        let Stop::Ready { expect, .. } = self.stop else {
            return Event::Pending;
        };
        if self.ready.is_some() {
            return Event::Pending;
        }
        if let Some(sysinfo) = parse_sysinfo_line(line) {
            if sysinfo.errors > 0 {
                return Event::End(Err(Failure::Sysinfo(sysinfo.text)));
            }
            return Event::Pending;
        }
        let Some(ready) = parse_ready_line(line) else {
            return Event::Pending;
        };
        if !self.console.iter().any(|l| parse_sysinfo_line(l).is_some()) {
            return Event::End(Err(Failure::NoSysinfo));
        }
        let mismatches = expect.mismatches(&ready);
        if !mismatches.is_empty() {
            return Event::End(Err(Failure::ReadyDiffers {
                mismatches,
                line: ready.text,
                seconds,
            }));
        }
        let reached = Reached {
            line: ready.text,
            seconds,
        };
        self.ready = Some((reached, at + SETTLE));
        Event::Ready { seconds }
    }

    /// No line came before [`Watch::wake_at`].
    pub fn time_up(&mut self) -> Result<Reached, Failure> {
        self.end_without_line(Failure::Timeout(self.timeout))
    }

    /// QEMU closed its console (it exited). Watching for that, the end is its last line.
    pub fn closed(&mut self) -> Result<Reached, Failure> {
        if matches!(self.stop, Stop::Exit) {
            return Ok(Reached {
                line: self.console.last().map_or("", |l| l.trim()).to_string(),
                seconds: self.last_at.as_secs_f64(),
            });
        }
        self.end_without_line(Failure::Exited)
    }

    /// Ready and every extra check present: done; ready but a check missing: that; not
    /// ready: `otherwise`.
    fn end_without_line(&mut self, otherwise: Failure) -> Result<Reached, Failure> {
        match self.ready.take() {
            Some((reached, _)) => {
                let missing = self.missing();
                if missing.is_empty() {
                    Ok(reached)
                } else {
                    Err(Failure::NeverShowed(missing))
                }
            }
            None => Err(otherwise),
        }
    }

    /// The extra checks not on the console yet.
    fn missing(&self) -> Vec<String> {
        let Stop::Ready { checks, .. } = self.stop else {
            return Vec::new();
        };
        checks
            .iter()
            .filter(|c| !self.console.iter().any(|l| l.contains(c.as_str())))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &str =
        "[   12.3] edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0";
    const SYSINFO: &str =
        "edgeimg: sysinfo: 52 passed, 1 warnings (memory 480 MiB < 500 MiB), 0 errors";
    const TIMEOUT: Duration = Duration::from_secs(20);

    fn expect() -> Expectations {
        Expectations {
            role: "worker".into(),
            hostname: "n1".into(),
            root_ro: true,
            k0s_version: "v1.34.10+k0s.0".into(),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Feeds `lines` one second apart from t=1 s; the last event.
    fn transcript(w: &mut Watch, lines: &[&str]) -> Event {
        let mut last = Event::Pending;
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(last, Event::Pending, "ended before {l:?}");
            last = w.feed(l.to_string(), secs(1.0 + i as f64));
        }
        last
    }

    #[test]
    fn a_ready_line_ends_the_watch_after_the_settle_time() {
        let e = expect();
        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &[],
            },
            TIMEOUT,
        );
        assert_eq!(w.wake_at(), TIMEOUT);
        let ev = transcript(&mut w, &["BdsDxe: loading", SYSINFO, &format!("{READY}\r")]);
        assert_eq!(ev, Event::Ready { seconds: 3.0 });
        assert_eq!(ev.ready_after(), Some(3.0));
        assert_eq!(w.wake_at(), secs(8.0));
        // A second ready line is just a line.
        assert_eq!(w.feed(READY.into(), secs(4.0)), Event::Pending);
        assert_eq!(
            w.time_up(),
            Ok(Reached {
                line: "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0".into(),
                seconds: 3.0
            })
        );
        assert_eq!(w.console().len(), 4);
    }

    #[test]
    fn the_settle_time_never_passes_the_timeout() {
        let e = expect();
        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &[],
            },
            TIMEOUT,
        );
        w.feed(SYSINFO.into(), secs(17.0));
        w.feed(READY.into(), secs(18.0));
        assert_eq!(w.wake_at(), TIMEOUT);
    }

    #[test]
    fn extra_checks_are_waited_for_after_the_ready_line() {
        let e = expect();
        let checks = vec!["k0s-stand-in: worker".to_string(), "late".to_string()];
        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &checks,
            },
            TIMEOUT,
        );
        let ev = transcript(&mut w, &["k0s-stand-in: worker (early)", SYSINFO, READY]);
        assert_eq!(ev, Event::Ready { seconds: 3.0 });
        assert_eq!(w.wake_at(), TIMEOUT, "waits on for `late`");
        assert_eq!(w.feed("late step".into(), secs(9.0)), Event::Pending);
        assert_eq!(w.wake_at(), secs(8.0), "due at once");
        assert_eq!(w.time_up().unwrap().seconds, 3.0);

        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &checks,
            },
            TIMEOUT,
        );
        transcript(&mut w, &[SYSINFO, READY]);
        assert_eq!(
            w.time_up().unwrap_err().to_string(),
            "the node came up, but the console never showed: k0s-stand-in: worker, late"
        );
    }

    #[test]
    fn a_failed_step_ends_the_watch_at_once() {
        let e = expect();
        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &[],
            },
            TIMEOUT,
        );
        let ev = transcript(
            &mut w,
            &[
                "edgeimg: data: mkfs",
                "  edgeimg: FAILED: mkfs.ext4 /dev/vda3 \r",
            ],
        );
        let Event::End(Err(f)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            f.to_string(),
            "the node reported a failure: edgeimg: FAILED: mkfs.ext4 /dev/vda3"
        );
        assert_eq!(w.console().len(), 2);
    }

    #[test]
    fn a_panic_before_the_initramfs_is_early_and_after_it_is_not() {
        let e = expect();
        let stop = Stop::Ready {
            expect: &e,
            checks: &[],
        };
        let panic = "[ 2.5] Kernel panic - not syncing: Fatal exception in interrupt";
        let mut w = Watch::new(stop, TIMEOUT);
        assert_eq!(
            transcript(&mut w, &["EFI stub: loaded", panic]),
            Event::End(Err(Failure::EarlyPanic(panic.into())))
        );
        let mut w = Watch::new(stop, TIMEOUT);
        let ev = transcript(
            &mut w,
            &[
                "edgeimg: init: modules",
                "Kernel panic - not syncing: Attempted to kill init!",
            ],
        );
        let Event::End(Err(f)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            f.to_string(),
            "the kernel panicked: Kernel panic - not syncing: Attempted to kill init!"
        );
    }

    #[test]
    fn a_wrong_ready_line_fails_with_every_difference() {
        let e = expect();
        let mut w = Watch::new(
            Stop::Ready {
                expect: &e,
                checks: &[],
            },
            TIMEOUT,
        );
        let ev = transcript(
            &mut w,
            &[
                SYSINFO,
                "edgeimg: ready role=controller hostname=n1 root=rw k0s=v1.34.10+k0s.0",
            ],
        );
        assert_eq!(
            ev.ready_after(),
            Some(2.0),
            "reported as ready, then failed"
        );
        let Event::End(Err(f)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            f.to_string(),
            "ready line differs (role: expected \"worker\", got \"controller\"; root: expected \
             \"ro\", got \"rw\"): edgeimg: ready role=controller hostname=n1 root=rw \
             k0s=v1.34.10+k0s.0"
        );
    }

    #[test]
    fn no_ready_line_times_out_or_ends_with_qemu() {
        let e = expect();
        let stop = Stop::Ready {
            expect: &e,
            checks: &[],
        };
        let mut w = Watch::new(stop, TIMEOUT);
        transcript(&mut w, &["BdsDxe: failed to load Boot0001", "Shell>"]);
        assert_eq!(w.wake_at(), TIMEOUT);
        assert_eq!(w.time_up().unwrap_err().to_string(), "timed out after 20 s");
        let mut w = Watch::new(stop, TIMEOUT);
        transcript(&mut w, &["BdsDxe: loading"]);
        assert_eq!(
            w.closed().unwrap_err().to_string(),
            "QEMU exited before the node was ready"
        );
        // Exiting after the ready line is the end of a good boot.
        let mut w = Watch::new(stop, TIMEOUT);
        transcript(&mut w, &[SYSINFO, READY]);
        assert_eq!(w.closed().unwrap().seconds, 2.0);
    }

    #[test]
    fn a_stop_marker_ends_the_watch_at_its_line() {
        let mut w = Watch::new(Stop::At("edgeimg: data:"), TIMEOUT);
        let ev = transcript(
            &mut w,
            &["edgeimg: boot: found", " edgeimg: data: growing\r"],
        );
        assert_eq!(
            ev,
            Event::End(Ok(Reached {
                line: "edgeimg: data: growing".into(),
                seconds: 2.0
            }))
        );
        // The marker wins over a failure on the same line; ready lines are just lines.
        let mut w = Watch::new(Stop::At(FAILED_MARKER), TIMEOUT);
        assert_eq!(transcript(&mut w, &[READY]), Event::Pending);
        let ev = w.feed("edgeimg: FAILED: verity".into(), secs(3.0));
        assert!(matches!(ev, Event::End(Ok(_))), "{ev:?}");
        let mut w = Watch::new(Stop::At("never"), TIMEOUT);
        transcript(&mut w, &["edgeimg: boot: found"]);
        assert_eq!(w.time_up(), Err(Failure::Timeout(TIMEOUT)));
    }

    #[test]
    fn watching_for_the_exit_reads_past_panics_and_ends_when_qemu_does() {
        let mut w = Watch::new(Stop::Exit, TIMEOUT);
        let ev = transcript(
            &mut w,
            &[
                "edgeimg: init: modules",
                "edgeimg: FAILED: something",
                "Kernel panic - not syncing: sysrq triggered crash",
                READY,
            ],
        );
        assert_eq!(ev, Event::Pending);
        assert_eq!(
            w.closed(),
            Ok(Reached {
                line: READY.trim().into(),
                seconds: 4.0
            })
        );
        let mut w = Watch::new(Stop::Exit, TIMEOUT);
        transcript(&mut w, &["edgeimg: init: modules"]);
        assert_eq!(
            w.time_up(),
            Err(Failure::Timeout(TIMEOUT)),
            "QEMU never exited"
        );
    }

    #[test]
    fn the_ready_line_needs_clean_pre_flight_checks_before_it() {
        let e = expect();
        let stop = Stop::Ready {
            expect: &e,
            checks: &[],
        };
        let mut w = Watch::new(stop, TIMEOUT);
        let ev = transcript(&mut w, &["edgeimg: boot: system ready", READY]);
        assert_eq!(ev, Event::End(Err(Failure::NoSysinfo)));
        assert!(Failure::NoSysinfo
            .to_string()
            .contains("no `edgeimg: sysinfo:` line"));
        let mut w = Watch::new(stop, TIMEOUT);
        let bad = "edgeimg: sysinfo: 50 passed, 0 warnings, 1 errors (CONFIG_NETFILTER_XT_TARGET_REDIRECT)";
        assert_eq!(
            transcript(&mut w, &[bad]),
            Event::End(Err(Failure::Sysinfo(bad.into())))
        );
    }

    #[test]
    fn sysinfo_lines_are_parsed() {
        let l = parse_sysinfo_line(&format!("[ 9.1] {SYSINFO}\r")).unwrap();
        assert_eq!((l.passed, l.warnings, l.errors), (52, 1, 0));
        assert_eq!(l.text, SYSINFO);
        // Lists may hold commas and the words themselves.
        let l = parse_sysinfo_line(
            "edgeimg: sysinfo: 3 passed, 2 warnings (a, 9 errors; b), 2 errors (x, 1 passed; y)",
        )
        .unwrap();
        assert_eq!((l.passed, l.warnings, l.errors), (3, 2, 2));
        assert_eq!(parse_sysinfo_line("edgeimg: sysinfo: broken"), None);
        assert_eq!(parse_sysinfo_line("edgeimg: ready role=worker"), None);
    }

    #[test]
    fn console_lines_lose_escapes() {
        assert_eq!(
            strip_escapes("\u{1b}[2J\u{1b}[01;01H\u{1b}[=3hBdsDxe: x\r\n"),
            "BdsDxe: x"
        );
        assert_eq!(
            strip_escapes("\u{1b}[1m\u{1b}[37m\u{1b}[40miPXE\u{1b}[0m ok"),
            "iPXE ok"
        );
    }

    #[test]
    fn ready_line_is_parsed_and_checked() {
        let line = "[   12.3] edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0\r";
        let r = parse_ready_line(line).unwrap();
        assert_eq!(
            r.text,
            "edgeimg: ready role=worker hostname=n1 root=ro k0s=v1.34.10+k0s.0"
        );
        assert_eq!(
            (
                r.role.as_str(),
                r.hostname.as_str(),
                r.root.as_str(),
                r.k0s.as_str()
            ),
            ("worker", "n1", "ro", "v1.34.10+k0s.0")
        );
        assert!(expect().mismatches(&r).is_empty());
        let bad = parse_ready_line(
            "edgeimg: ready role=controller hostname=n1 root=rw k0s=v1.34.10+k0s.0",
        )
        .unwrap();
        assert_eq!(
            expect().mismatches(&bad),
            vec![
                "role: expected \"worker\", got \"controller\"",
                "root: expected \"ro\", got \"rw\""
            ]
        );
        assert!(parse_ready_line("edgeimg: network: dhcp").is_none());
    }

    #[test]
    fn a_node_without_a_hostname_must_name_itself_from_its_mac() {
        let mut e = expect();
        e.hostname = crate::qemu::Hostname::FromMac;
        let with = |h: &str| {
            let line =
                format!("edgeimg: ready role=worker hostname={h} root=ro k0s=v1.34.10+k0s.0");
            e.mismatches(&parse_ready_line(&line).unwrap())
        };
        assert!(with("edgeimg-525400123456").is_empty());
        assert!(with("edgeimg").is_empty(), "no network card");
        assert_eq!(
            with("pi4-worker"),
            ["hostname: expected edgeimg-<MAC> (no hostname configured), got \"pi4-worker\""]
        );
        assert_eq!(with("edgeimg-52540012345").len(), 1, "11 digits");
        assert_eq!(with("edgeimg-52540012345g").len(), 1, "not hex");
    }
}
