//! The process' own memory figures from `/proc/self/status` (Linux), for measuring that a
//! build's peak resident memory stays bounded.

/// One `/proc/self/status` field in KiB (`VmHWM`, `VmRSS`, ...); `None` where unavailable.
pub fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Peak resident memory of this process so far, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM")
}

/// Current resident memory of this process, in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS")
}

/// Hands memory the allocator holds but no longer uses back to the system. glibc keeps freed
/// heap memory for reuse, and per-thread arenas never reuse each other's: after a large,
/// short-lived structure (the suite's package index) is dropped, the process would otherwise
/// keep its pages for the rest of the build. A no-op where the C library has no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the kernel;
    // it takes no pointers and leaves every live allocation untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_memory_shows_in_current_and_peak() {
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let now = rss_kib().expect("VmRSS in /proc/self/status");
        let peak = peak_rss_kib().expect("VmHWM in /proc/self/status");
        assert!(now >= 64 * 1024, "{now} KiB resident with 64 MiB touched");
        assert!(peak >= now, "peak {peak} < current {now}");
        assert_eq!(status_kib("NoSuchField"), None);
    }
}
