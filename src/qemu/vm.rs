//! One QEMU process with its console on a pipe: start it, hand each console line to a
//! [`Watch`], and kill it when the watch ends or on any error path. A boot whose emulated
//! kernel panicked before the initramfs ran is tried again. Errors carry the console's last
//! lines and QEMU's stderr.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::console::{parse_sysinfo_line, strip_escapes, Event, Failure, Stop, Watch};
use super::SmokeReport;
use crate::progress::Reporter;

/// How often a boot is tried again after the emulated kernel panicked before edgeimg's
/// initramfs printed anything (TCG faults seen under load: nothing on the disk changed yet).
const EARLY_PANIC_RETRIES: u32 = 2;
/// Console lines kept in error messages.
const TAIL_LINES: usize = 40;

/// The kernel panicked before the initramfs ran: an emulator fault, not the image's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EarlyPanic(String);

/// Kills QEMU when dropped, so no error path leaves a VM running.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots with QEMU and reads its console until `stop`, a failure, or the timeout; boots again
/// when the emulated kernel panicked before the initramfs ran.
pub(super) fn watch(
    qemu: &Path,
    args: &[String],
    timeout: Duration,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let mut attempt = 0;
    loop {
        match watch_once(qemu, args, timeout, stop, rep) {
            Err(e) if e.is::<EarlyPanic>() && attempt < EARLY_PANIC_RETRIES => {
                attempt += 1;
                rep.warn(&format!(
                    "the emulated kernel panicked before the initramfs ran (a QEMU fault; \
                     nothing was written): booting again ({attempt}/{EARLY_PANIC_RETRIES})"
                ));
            }
            other => return other,
        }
    }
}

/// One boot: reads the console until `stop`, a failure, or the timeout.
fn watch_once(
    qemu: &Path,
    args: &[String],
    timeout: Duration,
    stop: Stop,
    rep: &dyn Reporter,
) -> Result<SmokeReport> {
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let mut stderr = child.stderr.take().context("QEMU's stderr")?;
    let vm = Running { child };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut raw = Vec::new();
        // Lines, not UTF-8: firmware prints escape sequences and odd bytes.
        while r
            .read_until(b'\n', &mut raw)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let line = strip_escapes(&String::from_utf8_lossy(&raw));
            raw.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut w = Watch::new(stop, timeout);
    let outcome = loop {
        let now = started.elapsed();
        let wake = w.wake_at();
        if now >= wake {
            break w.time_up();
        }
        match rx.recv_timeout(wake - now) {
            Ok(line) => {
                let event = w.feed(line, started.elapsed());
                if let Some(secs) = event.ready_after() {
                    rep.step(&format!("node ready after {secs:.1} s"));
                }
                if let Event::End(end) = event {
                    break end;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break w.closed(),
        }
    };
    drop(vm); // kill QEMU now: a power cut when stopping at a marker
    let stderr_text = err_thread.join().unwrap_or_default();
    let console = w.into_console();
    match outcome {
        Ok(reached) => Ok(SmokeReport {
            ready_line: reached.line,
            boot_seconds: reached.seconds,
            sysinfo: console.iter().rev().find_map(|l| parse_sysinfo_line(l)),
            console,
            disk_copy: None,
        }),
        Err(failure) => Err(failure_error(&failure, &console, &stderr_text)),
    }
}

/// The failure with the console's last lines and QEMU's stderr; an early panic stays one.
fn failure_error(failure: &Failure, console: &[String], stderr: &str) -> anyhow::Error {
    let tail = console[console.len().saturating_sub(TAIL_LINES)..].join("\n");
    let mut msg = format!(
        "{failure}\n--- last {} console lines ---\n{tail}",
        console.len().min(TAIL_LINES)
    );
    if !stderr.trim().is_empty() {
        msg.push_str(&format!("\n--- QEMU stderr ---\n{}", stderr.trim()));
    }
    if matches!(failure, Failure::EarlyPanic(_)) {
        EarlyPanic(msg).into()
    } else {
        anyhow::anyhow!(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_last_console_lines_and_qemu_stderr() {
        let console: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        let e = failure_error(&Failure::Exited, &console, "  qemu: warning: x \n");
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "QEMU exited before the node was ready\n--- last 40 console lines ---\nline 10\n"
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with("line 49\n--- QEMU stderr ---\nqemu: warning: x"),
            "{msg}"
        );
        assert!(!e.is::<EarlyPanic>());
        let e = failure_error(&Failure::EarlyPanic("p".into()), &console[..1], "");
        assert!(e.is::<EarlyPanic>());
        assert_eq!(
            e.to_string(),
            "the kernel panicked before the initramfs ran: p\n--- last 1 console lines ---\nline 0"
        );
    }
}
