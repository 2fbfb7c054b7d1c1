//! The terminal reporter: progress bars on a terminal, plain lines otherwise (CI logs), all on
//! stderr so stdout keeps the results.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::progress::{Reporter, Task};

/// What a task counts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Bytes,
    Count,
}

/// Progress on stderr: bars on a terminal, plain lines otherwise (CI logs).
pub(crate) struct Console {
    multi: indicatif::MultiProgress,
    tty: bool,
    lock: Mutex<()>,
    /// Bars on screen now: lines go above them through indicatif only while there are some.
    bars: Arc<AtomicUsize>,
}

/// How a line reaches stderr.
#[derive(Debug, PartialEq)]
enum Route {
    /// Above the bars, through indicatif (it redraws them below the line).
    AboveBars,
    /// A plain line with its newline. indicatif's `println` with no bar on screen leaves the
    /// line without one, so lines captured from a terminal ran together.
    Plain,
}

fn route(tty: bool, bars: usize) -> Route {
    if tty && bars > 0 {
        Route::AboveBars
    } else {
        Route::Plain
    }
}

/// The bar's template for `unit`: byte sizes and rates, or plain counts.
fn template(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        Unit::Count => "{msg:30!} [{bar:30}] {pos}/{len} {eta}",
    }
}

/// `12.5 MiB`, `300 KiB`, `17 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// The line a task prints when it finishes without a terminal.
fn plain_line(msg: &str, done: u64, total: u64, unit: Unit, secs: f64) -> String {
    let amount = match unit {
        Unit::Bytes => format!("{}/{}", human_bytes(done), human_bytes(total)),
        Unit::Count => format!("{done}/{total}"),
    };
    format!("    {msg} ({amount} in {secs:.1} s)")
}

impl Console {
    pub(crate) fn new() -> Self {
        Console {
            multi: indicatif::MultiProgress::new(),
            tty: std::io::stderr().is_terminal(),
            lock: Mutex::new(()),
            bars: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn line(&self, s: &str) {
        let _g = self.lock.lock();
        match route(self.tty, self.bars.load(Ordering::SeqCst)) {
            Route::AboveBars => {
                let _ = self.multi.println(s);
            }
            Route::Plain => eprintln!("{s}"),
        }
    }

    fn start(&self, label: &str, total: u64, unit: Unit) -> Box<dyn Task> {
        if !self.tty {
            return Box::new(PlainTask {
                label: label.to_string(),
                done: 0,
                total,
                unit,
                started: std::time::Instant::now(),
            });
        }
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(template(unit))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars.fetch_add(1, Ordering::SeqCst);
        Box::new(BarTask {
            bar,
            bars: self.bars.clone(),
            done: false,
        })
    }
}

impl Reporter for Console {
    fn step(&self, message: &str) {
        self.line(&format!("==> {message}"));
    }

    fn task(&self, label: &str, total: u64) -> Box<dyn Task> {
        self.start(label, total, Unit::Bytes)
    }

    fn count_task(&self, label: &str, total: u64) -> Box<dyn Task> {
        self.start(label, total, Unit::Count)
    }

    fn warn(&self, message: &str) {
        // Warnings may quote user input (a path, a value).
        self.line(&format!(
            "warning: {}",
            crate::util::text::for_terminal(message)
        ));
    }
}

struct BarTask {
    bar: indicatif::ProgressBar,
    bars: Arc<AtomicUsize>,
    done: bool,
}

impl BarTask {
    fn off_screen(&mut self) {
        if !self.done {
            self.done = true;
            self.bar.finish_and_clear();
            self.bars.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Task for BarTask {
    fn advance(&mut self, units: u64) {
        self.bar.inc(units);
    }
    fn finish(&mut self, message: &str) {
        self.off_screen();
        if !message.is_empty() {
            eprintln!("    {message}");
        }
    }
}

impl Drop for BarTask {
    fn drop(&mut self) {
        self.off_screen();
    }
}

/// Without a terminal, a task prints one line when it finishes.
struct PlainTask {
    label: String,
    done: u64,
    total: u64,
    unit: Unit,
    started: std::time::Instant,
}

impl Task for PlainTask {
    fn advance(&mut self, units: u64) {
        self.done += units;
    }
    fn finish(&mut self, message: &str) {
        let msg = if message.is_empty() {
            &self.label
        } else {
            message
        };
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            plain_line(msg, self.done, self.total, self.unit, secs)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_not_shown_as_bytes() {
        assert!(template(Unit::Count).contains("{pos}/{len}"));
        assert!(!template(Unit::Count).contains("bytes"));
        assert!(template(Unit::Bytes).contains("{bytes}/{total_bytes}"));
        // Both templates are valid for indicatif.
        for u in [Unit::Bytes, Unit::Count] {
            indicatif::ProgressStyle::with_template(template(u)).unwrap();
        }
        assert_eq!(
            plain_line("unpacking packages", 34, 43, Unit::Count, 1.0),
            "    unpacking packages (34/43 in 1.0 s)"
        );
        assert_eq!(
            plain_line("fetching k0s", 3 << 20, 6 << 20, Unit::Bytes, 2.0),
            "    fetching k0s (3.0 MiB/6.0 MiB in 2.0 s)"
        );
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn lines_go_through_indicatif_only_above_a_bar() {
        assert_eq!(route(true, 0), Route::Plain);
        assert_eq!(route(false, 2), Route::Plain);
        assert_eq!(route(true, 1), Route::AboveBars);
    }

    #[test]
    fn a_finished_or_dropped_bar_is_off_screen() {
        let c = Console {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::hidden(),
            ),
            tty: true,
            lock: Mutex::new(()),
            bars: Arc::new(AtomicUsize::new(0)),
        };
        let mut a = c.count_task("packages", 3);
        let b = c.task("bytes", 3);
        assert_eq!(c.bars.load(Ordering::SeqCst), 2);
        a.finish("");
        a.finish("");
        assert_eq!(c.bars.load(Ordering::SeqCst), 1);
        drop(b);
        drop(a);
        assert_eq!(c.bars.load(Ordering::SeqCst), 0);
    }
}
