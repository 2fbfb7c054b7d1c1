//! Output files that appear whole or not at all: written under `.<name>.tmp-<pid>` next to the
//! final name, fsynced, then renamed. Dropping an uncommitted file removes the temporary.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::image::sync_parent;

pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    temp_path: PathBuf,
    final_path: PathBuf,
}

impl AtomicFile {
    pub fn create(final_path: &Path) -> Result<AtomicFile> {
        let name = final_path
            .file_name()
            .with_context(|| format!("{} has no file name", final_path.display()))?
            .to_string_lossy();
        let dir = final_path.parent().unwrap_or(Path::new(""));
        let temp_path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&temp_path)
            .with_context(|| format!("creating {}", temp_path.display()))?;
        Ok(AtomicFile {
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            temp_path,
            final_path: final_path.to_path_buf(),
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Flushes, fsyncs and renames into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.temp_path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.temp_path.display()))?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp_path.display(),
                self.final_path.display()
            )
        })?;
        sync_parent(&self.final_path);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer
            .as_mut()
            .expect("writer present until commit")
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer
            .as_mut()
            .expect("writer present until commit")
            .flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}
