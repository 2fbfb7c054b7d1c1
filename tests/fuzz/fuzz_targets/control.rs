//! Debian control / Packages parser: any text gives a result or an error, never a panic.
#![no_main]

use edgeimg::source::debian::control::{parse_deps, parse_packages, parse_stanzas};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(stanzas) = parse_stanzas(text, "fuzz") {
        for st in &stanzas {
            for (_, v) in &st.fields {
                let _ = parse_deps(v);
            }
        }
    }
    let _ = parse_packages(text, "fuzz");
});
