//! The terminal reporter: progress bars on a terminal, plain lines otherwise (CI logs), all on
//! stderr so stdout keeps the results.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use crate::progress::{Reporter, Task};

/// Progress on stderr: bars on a terminal, plain lines otherwise (CI logs).
pub(crate) struct Console {
    multi: indicatif::MultiProgress,
    tty: bool,
    lock: Mutex<()>,
}

impl Console {
    pub(crate) fn new() -> Self {
        Console {
            multi: indicatif::MultiProgress::new(),
            tty: std::io::stderr().is_terminal(),
            lock: Mutex::new(()),
        }
    }

    fn line(&self, s: &str) {
        let _g = self.lock.lock();
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            eprintln!("{s}");
        }
    }
}

impl Reporter for Console {
    fn step(&self, message: &str) {
        self.line(&format!("==> {message}"));
    }

    fn task(&self, label: &str, total: u64) -> Box<dyn Task> {
        if !self.tty {
            return Box::new(PlainTask {
                label: label.to_string(),
                done: 0,
                total,
                started: std::time::Instant::now(),
            });
        }
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Box::new(BarTask { bar })
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
}

impl Task for BarTask {
    fn advance(&mut self, units: u64) {
        self.bar.inc(units);
    }
    fn finish(&mut self, message: &str) {
        self.bar.finish_and_clear();
        if !message.is_empty() {
            eprintln!("    {message}");
        }
    }
}

/// Without a terminal, a task prints one line when it finishes.
struct PlainTask {
    label: String,
    done: u64,
    total: u64,
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
        eprintln!(
            "    {msg} ({}/{} in {:.1} s)",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }
}
