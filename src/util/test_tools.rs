//! Helpers for tests that judge outputs with the standard tools.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Fails the test with an installation hint when a checking tool is absent.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
    assert!(found, "this test needs `{tool}`: install it (Debian: apt-get install gdisk fdisk squashfs-tools xz-utils bmap-tools)");
}

/// Runs a tool, asserts success, returns its stdout (stderr appended, for messages).
pub fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = run_tool_status(tool, args);
    assert!(out.0, "`{tool} {}` failed:\n{}", args.join(" "), out.1);
    out.1
}

/// Runs a tool; returns (success, stdout + stderr).
pub fn run_tool_status(tool: &str, args: &[&str]) -> (bool, String) {
    let path = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| tool.into());
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{tool}`: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs `cmd` with `input` on its stdin and returns what it printed. The input is written
/// from a thread of its own: a child that prints before it has read all its input would
/// otherwise block on a full pipe while we block on its stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}
