//! Peak memory stays bounded when the inputs grow (issue 8): a build's resident memory must
//! not scale with the size of what goes into the image.
//!
//! Both tests measure real resident memory: the kernel's VmHWM of this process around an
//! unpack, and the child's `ru_maxrss` from `wait4` for a whole build. They run one at a time
//! (a lock), so one does not disturb the other's figure.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::*;
use edgeimg::source::debian::unpack_deb_spilling;
use edgeimg::tree::spill::Spill;
use edgeimg::tree::{Tree, TreePath};
use edgeimg::util::memstat::{peak_rss_kib, rss_kib};

const MIB: u64 = 1024 * 1024;
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `len` pseudo-random bytes (incompressible, reproducible): byte `p` depends only on the seed
/// and `p`, whatever buffer sizes the reader is called with.
struct Noise {
    seed: u64,
    pos: u64,
    len: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Noise {
        Noise { seed, pos: 0, len }
    }
}

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let mut done = 0;
        while done < n {
            let word = mix(self.seed.wrapping_mul(0x1000_0000_01b3) ^ (self.pos / 8)).to_le_bytes();
            let off = (self.pos % 8) as usize;
            let take = (8 - off).min(n - done);
            buf[done..done + take].copy_from_slice(&word[off..off + take]);
            done += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

fn write_noise(path: &Path, seed: u64, len: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    std::io::copy(&mut Noise::new(seed, len), &mut f).unwrap();
    f.flush().unwrap();
}

/// A `.deb` (uncompressed members) holding `files` files of `each` random bytes.
fn big_deb(dir: &Path, files: u64, each: u64) -> std::path::PathBuf {
    let data = dir.join("data.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&data).unwrap());
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("./usr/lib/big/blob{i}")).unwrap();
        h.set_size(each);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append(&h, Noise::new(i + 1, each)).unwrap();
    }
    tar.into_inner().unwrap().flush().unwrap();

    let mut control = tar::Builder::new(Vec::new());
    let text = b"Package: big\nVersion: 1\nArchitecture: all\n";
    let mut h = tar::Header::new_gnu();
    h.set_path("./control").unwrap();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    control.append(&h, &text[..]).unwrap();
    let control = control.into_inner().unwrap();

    let deb = dir.join("big_1_all.deb");
    let mut ar = ar::Builder::new(std::fs::File::create(&deb).unwrap());
    ar.append(
        &ar::Header::new(b"debian-binary".to_vec(), 4),
        &b"2.0\n"[..],
    )
    .unwrap();
    ar.append(
        &ar::Header::new(b"control.tar".to_vec(), control.len() as u64),
        &control[..],
    )
    .unwrap();
    let len = std::fs::metadata(&data).unwrap().len();
    ar.append(
        &ar::Header::new(b"data.tar".to_vec(), len),
        std::fs::File::open(&data).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&data).unwrap();
    deb
}

#[test]
fn a_large_package_unpacks_without_holding_its_files_in_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (files, each) = (6, 50 * MIB);
    let deb = big_deb(dir.path(), files, each);

    let spill = Spill::new_in(dir.path()).unwrap();
    let mut tree = Tree::new();
    let before = rss_kib().unwrap();
    unpack_deb_spilling(&deb, &mut tree, &mut |_: &TreePath| true, &spill).unwrap();
    let growth_mib = (peak_rss_kib().unwrap().saturating_sub(before)) / 1024;

    eprintln!("peak memory growth while unpacking 300 MiB of files: {growth_mib} MiB");
    // 300 MiB of files went through; memory grew by a few buffers at most.
    assert!(
        growth_mib < 48,
        "unpacking {} MiB of files raised peak memory by {growth_mib} MiB",
        files * each / MIB
    );
    assert_eq!(tree.content_size(), files * each);
    assert_eq!(spill.bytes(), files * each);
    // The content is all there, byte for byte.
    let mut want = Vec::new();
    Noise::new(4, each).read_to_end(&mut want).unwrap();
    assert!(tree.read("usr/lib/big/blob3").unwrap()[..] == want[..]);
    drop(want);
}

/// Peak resident memory (MiB) of a child process, from `wait4`.
fn run_measured(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    // Reaped by wait4 below, which also gives the child's resource usage (`Child::wait` does not).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("running edgeimg");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value to fill; the pid is our own child, waited once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (status, usage.ru_maxrss as u64 / 1024)
}

#[test]
fn a_400_mib_k0s_builds_under_512_mib_of_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Incompressible and always the same, so the shared cache keeps one copy across runs.
    let k0s = dir.path().join("k0s");
    write_noise(&k0s, 0x006b_3073, 400 * MIB);
    let out = dir.path().join("out");
    let log = std::fs::File::create(dir.path().join("build.log")).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["build", "--board", "x86-64", "--role", "worker"])
        .args(["--hostname", "memory", "--json"])
        .arg("--k0s-binary")
        .arg(&k0s)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("--out")
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(log);
    let (status, peak_mib) = run_measured(cmd);
    let log = std::fs::read_to_string(dir.path().join("build.log")).unwrap();
    assert!(status.success(), "build failed:\n{log}");
    // The k0s really went into the root partition.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["root_size"].as_u64().unwrap() > 400 * MIB);
    assert!(
        peak_mib < 512,
        "peak resident memory of the build: {peak_mib} MiB (limit 512 MiB)"
    );
    eprintln!("peak resident memory with a 400 MiB k0s: {peak_mib} MiB");
}
