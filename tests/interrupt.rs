//! "Nothing lost, nothing leaked": a build stopped by SIGINT or SIGKILL at any point leaves the
//! output folder as the previous build published it (every name `SHA256SUMS` lists is there
//! with the listed bytes, and no final-named file of the stopped build is there), SIGINT leaves
//! no scratch or temporary file behind, and the next build removes what a SIGKILL left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn node(hostname: &str) -> String {
    format!("hostname = \"{hostname}\"\n\n[k0s]\nrole = \"worker\"\n")
}

/// Starts `edgeimg build` (x86-64 worker, node `hostname`) into `out`; stderr goes to a file.
fn spawn_build(dir: &Path, out: &Path, hostname: &str, extra: &[&str]) -> (Child, PathBuf) {
    let node_file = dir.join(format!("{hostname}.toml"));
    std::fs::write(&node_file, node(hostname)).unwrap();
    let log = dir.join(format!("{hostname}.log"));
    let mut args: Vec<String> = ["build", "--out"].map(String::from).into();
    args.push(out.display().to_string());
    args.extend(["--cache-dir".into(), cache_dir().display().to_string()]);
    args.extend(k0s_args());
    for a in ["--board", "x86-64", "--role", "worker", "--node"] {
        args.push(a.into());
    }
    args.push(node_file.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(own_bin())
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// A copy of the edgeimg binary for this test alone: the run takes minutes, and a shared
/// target folder may get another build of it meanwhile.
fn own_bin() -> PathBuf {
    static B: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("edgeimg");
        std::fs::copy(bin(), &p).unwrap();
        (d, p)
    })
    .1
    .clone()
}

/// Every path under `d` (not following symlinks), relative to `d`.
fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(d) else {
        return v;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        v.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&p));
        }
    }
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Scratch and temporary files of a build: `.<name>.tmp-<pid>-<n>`, spill folders, staging
/// folders and generations other than the published one.
fn leftovers(out: &Path) -> Vec<PathBuf> {
    let current = std::fs::read_link(out.join(".edgeimg/current")).ok();
    walk(out)
        .into_iter()
        .filter(|p| {
            let n = name(p);
            let stale_generation = p.parent() == Some(&out.join(".edgeimg"))
                && n != "current"
                && n != "lock"
                && Some(Path::new(&n)) != current.as_deref();
            n.contains(".tmp-")
                || n.starts_with(".edgeimg-spill")
                || n.starts_with(".edgeimg-staging")
                || stale_generation
        })
        .collect()
}

/// What a reader of the folder sees: `sha256sum -c --strict SHA256SUMS` passes, and every
/// visible file of the folder is one that SHA256SUMS lists (nothing of another build beside
/// it). Returns SHA256SUMS and the problems found.
fn one_whole_set(out: &Path, when: &str) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let sums = match std::fs::read_to_string(out.join("SHA256SUMS")) {
        Ok(s) => s,
        Err(e) => return (String::new(), vec![format!("{when}: no SHA256SUMS: {e}")]),
    };
    let o = Command::new("sha256sum")
        .args(["-c", "--strict", "--quiet", "SHA256SUMS"])
        .current_dir(out)
        .output()
        .unwrap();
    if !o.status.success() {
        problems.push(format!(
            "{when}: SHA256SUMS does not describe the folder: {}{}",
            stdout(&o).trim(),
            stderr(&o).trim()
        ));
    }
    let listed: Vec<&str> = sums.lines().filter_map(|l| l.split("  ").nth(1)).collect();
    for e in std::fs::read_dir(out).unwrap() {
        let n = name(&e.unwrap().path());
        if !n.starts_with('.') && n != "SHA256SUMS" && !listed.contains(&n.as_str()) {
            problems.push(format!(
                "{when}: {n} is in the folder but not in SHA256SUMS"
            ));
        }
    }
    (sums, problems)
}

fn assert_one_whole_set(out: &Path, when: &str) -> String {
    let (sums, problems) = one_whole_set(out, when);
    assert!(problems.is_empty(), "{problems:#?}");
    sums
}

/// Waits until some path under `out` satisfies `pred` (or the build ends); returns whether one
/// did while the build was still running.
fn wait_for(child: &mut Child, out: &Path, what: &str, pred: impl Fn(&str) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(400);
    while Instant::now() < until {
        if walk(out).iter().any(|p| pred(&name(p))) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            eprintln!("the build ended before {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    panic!("{what} did not appear in 400 s");
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn an_interrupted_build_leaves_the_previous_set_and_no_scratch_files() {
    need("sha256sum");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let (mut first, log) = spawn_build(d.path(), &out, "old-set", &[]);
    assert!(
        first.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let old = assert_one_whole_set(&out, "after the first build");

    // Points of a build (a fresh root, so the spill folder is used), each stopped by SIGINT
    // and by SIGKILL.
    type Point = (&'static str, fn(&str) -> bool);
    let points: [Point; 3] = [
        ("the spill folder", |n| n.starts_with(".edgeimg-spill")),
        ("the temporary image", |n| {
            n.starts_with(".x86-64-worker.img.tmp-")
        }),
        ("the temporary .img.xz", |n| {
            n.starts_with(".x86-64-worker.img.xz.tmp-")
        }),
    ];
    let mut stopped = 0;
    let mut problems: Vec<String> = Vec::new();
    for (what, pred) in points {
        for (sig, sig_name) in [(libc::SIGINT, "SIGINT"), (libc::SIGKILL, "SIGKILL")] {
            let host = format!("new-{stopped}");
            let (mut child, log) = spawn_build(d.path(), &out, &host, &["--no-artifact-cache"]);
            let reached = wait_for(&mut child, &out, what, pred);
            signal(&child, sig);
            let status = child.wait().unwrap();
            let when = format!("{sig_name} at {what}");
            assert!(reached, "{when}: never reached");
            assert!(
                !status.success(),
                "{when}: the build finished anyway:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            // The previous set, whole, and nothing of the stopped build under a final name.
            let (sums, p) = one_whole_set(&out, &when);
            problems.extend(p);
            if sums != old {
                problems.push(format!("{when}: SHA256SUMS changed"));
            }
            if sig == libc::SIGINT {
                let left = leftovers(&out);
                if !left.is_empty() {
                    problems.push(format!("{when} left {left:?}"));
                }
            }
            stopped += 1;
        }
    }

    // The next build starts by removing what the killed ones left, and publishes its set.
    let (mut next, log) = spawn_build(d.path(), &out, "next-set", &[]);
    assert!(
        next.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let (new, p) = one_whole_set(&out, "after the next build");
    problems.extend(p);
    assert_ne!(new, old);
    let left = leftovers(&out);
    if !left.is_empty() {
        problems.push(format!("the next build kept {left:?}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
