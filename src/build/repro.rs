//! `edgeimg build --check-reproducible`: what the second build runs in, and how its outputs are
//! compared with the first one's.
//!
//! The second build runs as a separate process in another output folder, on a hard-linked copy
//! of the cache (offline, so both builds see the very same inputs), under another umask, time
//! zone and locale. Every output is compared byte for byte; the first difference is named by
//! file and offset.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// The environment of the second build, chosen to differ from a usual one.
pub const SECOND_UMASK: u32 = 0o077;
pub const SECOND_TZ: &str = "Pacific/Chatham";
pub const SECOND_LANG: &str = "C.UTF-8";

/// One file that differs between two builds.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub file: String,
    /// First differing byte; for files of different sizes with a common prefix, the shorter
    /// size.
    pub offset: u64,
    pub size_a: u64,
    pub size_b: u64,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} differs from byte {} on ({} vs {} bytes)",
            self.file, self.offset, self.size_a, self.size_b
        )
    }
}

/// The first difference between two files, or `None` if they are equal. Streams both.
pub fn first_difference(a: &Path, b: &Path) -> Result<Option<(u64, u64, u64)>> {
    let open = |p: &Path| -> Result<(BufReader<File>, u64)> {
        let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let len = f.metadata()?.len();
        Ok((BufReader::with_capacity(1 << 20, f), len))
    };
    let (mut ra, la) = open(a)?;
    let (mut rb, lb) = open(b)?;
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    loop {
        let na = read_full(&mut ra, &mut ba).with_context(|| format!("reading {}", a.display()))?;
        let nb = read_full(&mut rb, &mut bb).with_context(|| format!("reading {}", b.display()))?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some((pos + i as u64, la, lb)));
        }
        if na != nb {
            return Ok(Some((pos + n as u64, la, lb)));
        }
        if na == 0 {
            return Ok(None);
        }
        pos += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Compares the named files of two output folders; a file missing from either counts as a
/// difference at offset 0.
pub fn compare_outputs(a: &Path, b: &Path, names: &[String]) -> Result<Vec<Difference>> {
    let mut diffs = Vec::new();
    for name in names {
        let (pa, pb) = (a.join(name), b.join(name));
        if !pb.is_file() || !pa.is_file() {
            diffs.push(Difference {
                file: name.clone(),
                offset: 0,
                size_a: pa.metadata().map(|m| m.len()).unwrap_or(0),
                size_b: pb.metadata().map(|m| m.len()).unwrap_or(0),
            });
            continue;
        }
        if let Some((offset, size_a, size_b)) = first_difference(&pa, &pb)? {
            diffs.push(Difference {
                file: name.clone(),
                offset,
                size_a,
                size_b,
            });
        }
    }
    Ok(diffs)
}

/// Copies the tree `src` to `dst` (which must not exist) with hard links where the file system
/// allows, plain copies elsewhere. Symlinks are copied as links.
pub fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    for e in crate::util::host_dir::read_dir_sorted(src)? {
        let from = e.path();
        let to = dst.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            link_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from)?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("creating {}", to.display()))?;
        } else if ft.is_file() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// The arguments of the second build: the first one's, minus those naming where it writes or
/// whether it may download, plus the second build's out and cache folders, offline.
pub fn second_build_args(args: &[String], out: &Path, cache: &Path) -> Vec<String> {
    const WITH_VALUE: [&str; 2] = ["--out", "--cache-dir"];
    const FLAGS: [&str; 4] = [
        "--check-reproducible",
        "--offline",
        "--refresh",
        "--no-artifact-cache",
    ];
    let mut v = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if FLAGS.contains(&a.as_str()) || WITH_VALUE.iter().any(|w| a.starts_with(&format!("{w}=")))
        {
            continue;
        }
        v.push(a.clone());
    }
    v.push("--offline".into());
    // Every step runs again, so a build that reused cached artifacts is compared with one
    // that made them.
    v.push("--no-artifact-cache".into());
    v.push("--out".into());
    v.push(out.display().to_string());
    v.push("--cache-dir".into());
    v.push(cache.display().to_string());
    v
}

/// Runs the second build (this executable, `args` rewritten by [`second_build_args`]) in a
/// scratch folder beside `out` under [`SECOND_UMASK`], [`SECOND_TZ`] and [`SECOND_LANG`], then
/// compares the files named by `outputs`. Returns how many were compared and the differences;
/// the scratch folder is removed. The second build's progress goes to this process's stderr.
pub fn check(
    args: &[String],
    outputs: &[PathBuf],
    out: &Path,
    cache_dir: &Path,
    rep: &dyn crate::progress::Reporter,
) -> Result<(usize, Vec<Difference>)> {
    let scratch = scratch_dir(out)?;
    // Removed on SIGINT/SIGTERM/SIGHUP too (the TempDir only on return or unwind).
    let _registered = crate::util::cleanup::register(scratch.path());
    let out2 = scratch.path().join("out");
    let cache2 = scratch.path().join("cache");
    rep.step(&format!(
        "reproducibility: second build in {} (cache copy, umask {SECOND_UMASK:03o}, TZ={SECOND_TZ}, LANG={SECOND_LANG})",
        out2.display(),
    ));
    link_tree(cache_dir, &cache2)?;
    let exe = std::env::current_exe().context("locating the edgeimg executable")?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(second_build_args(args, &out2, &cache2))
        .env("TZ", SECOND_TZ)
        .env("LANG", SECOND_LANG)
        .env("LC_ALL", SECOND_LANG)
        .stdout(std::process::Stdio::null());
    // SAFETY: umask is async-signal-safe and only changes the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::umask(SECOND_UMASK as libc::mode_t);
            Ok(())
        });
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        anyhow::bail!(
            "reproducibility check: the second build failed ({status}); see its messages above"
        );
    }
    let names: Vec<String> = outputs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let diffs = compare_outputs(out, &out2, &names)?;
    Ok((names.len(), diffs))
}

/// Where the second build goes: a fresh folder beside `out`.
pub fn scratch_dir(out: &Path) -> Result<tempfile::TempDir> {
    let parent = out
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(".edgeimg-repro-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        let mut data = vec![7u8; 200_000];
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, &data).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), None);
        data[131_075] = 8;
        std::fs::write(&b, &data).unwrap();
        assert_eq!(
            first_difference(&a, &b).unwrap(),
            Some((131_075, 200_000, 200_000))
        );
        std::fs::write(&b, &data[..100]).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some((100, 200_000, 100)));
    }

    #[test]
    fn compare_reports_missing_and_changed_files_only() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for (n, x, y) in [("same", "x", "x"), ("changed", "abc", "abd")] {
            std::fs::write(a.join(n), x).unwrap();
            std::fs::write(b.join(n), y).unwrap();
        }
        std::fs::write(a.join("gone"), "1").unwrap();
        let names: Vec<String> = ["same", "changed", "gone"].map(String::from).into();
        let diffs = compare_outputs(&a, &b, &names).unwrap();
        assert_eq!(diffs.len(), 2);
        assert_eq!(diffs[0].file, "changed");
        assert_eq!(diffs[0].offset, 2);
        assert_eq!(diffs[1].file, "gone");
        assert_eq!(diffs[1].size_b, 0);
        assert!(diffs[0].to_string().contains("changed differs from byte 2"));
    }

    #[test]
    fn link_tree_copies_files_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "data").unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        let dst = d.path().join("dst");
        link_tree(&src, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "data");
        assert_eq!(
            std::fs::read_link(dst.join("l")).unwrap(),
            PathBuf::from("sub/f")
        );
        assert!(
            link_tree(&src, &dst).is_err(),
            "an existing target is refused"
        );
    }

    #[test]
    fn second_build_args_replace_where_and_go_offline() {
        let args: Vec<String> = [
            "build",
            "--out",
            "o",
            "--cache-dir=/c",
            "--refresh",
            "--board",
            "x86-64",
            "--check-reproducible",
            "--offline",
        ]
        .map(String::from)
        .into();
        let v = second_build_args(&args, Path::new("/o2"), Path::new("/c2"));
        assert_eq!(
            v,
            [
                "build",
                "--board",
                "x86-64",
                "--offline",
                "--no-artifact-cache",
                "--out",
                "/o2",
                "--cache-dir",
                "/c2"
            ]
        );
    }
}
