//! Node config parser, checks and rendering: any text gives a config or an error, never a panic.
#![no_main]

use edgeimg::node::NodeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = NodeConfig::from_toml_str(text, std::path::Path::new("fuzz.toml")) {
        if cfg.check().is_ok() {
            let _ = cfg.render();
        }
    }
});
