//! How library code reports progress without printing: `cli` is the only place that prints,
//! so long steps talk to a [`Reporter`] and the command line decides how (bars, plain lines,
//! JSON, nothing with `--quiet`).

use std::sync::Arc;

/// Receives progress from long-running steps. Implementations must be cheap to call often.
pub trait Reporter: Send + Sync {
    /// A one-line note about what is happening now ("resolving 42 packages").
    fn step(&self, message: &str);
    /// Starts a measured task of `total` bytes.
    fn task(&self, label: &str, total: u64) -> Box<dyn Task>;
    /// Starts a measured task of `total` things (packages, files), shown as counts.
    fn count_task(&self, label: &str, total: u64) -> Box<dyn Task> {
        self.task(label, total)
    }
    /// Something the user should know that does not stop the work.
    fn warn(&self, message: &str);
}

/// One measured task; dropped when done.
pub trait Task: Send {
    fn advance(&mut self, units: u64);
    fn finish(&mut self, message: &str);
}

/// Reports nothing: for `--quiet` and for tests.
pub struct Silent;

struct SilentTask;

impl Task for SilentTask {
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: &str) {}
}

impl Reporter for Silent {
    fn step(&self, _: &str) {}
    fn task(&self, _: &str, _: u64) -> Box<dyn Task> {
        Box::new(SilentTask)
    }
    fn warn(&self, _: &str) {}
}

/// A shared reporter handle.
pub type SharedReporter = Arc<dyn Reporter>;

/// A `Read` adapter that advances a task as bytes pass through.
pub struct ProgressReader<R> {
    inner: R,
    task: Box<dyn Task>,
}

impl<R> ProgressReader<R> {
    pub fn new(inner: R, task: Box<dyn Task>) -> Self {
        ProgressReader { inner, task }
    }

    pub fn finish(mut self, message: &str) -> R {
        self.task.finish(message);
        self.inner
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }
}
