//! Fuzzes the config file reader and its rules (vip_agent::config::parse): the file is
//! the operator's, but a typo must give an error, never a panic. Whatever the input,
//! `parse` returns a config or a list of problems, and each problem prints on one line.
//! The same text through `control_socket` (what the CLI verbs read) must not panic
//! either.
//!
//! Seeds (fuzz/seeds/config_file): the packaged example and small files with one
//! problem each.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vip_agent::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // a config file is read as UTF-8: anything else fails before parsing
    };
    match config::parse(text) {
        Ok(cfg) => {
            // A valid config is whole: its VIPs are all unicast, its names non-empty.
            assert!(!cfg.instance.is_empty());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }
    let _ = config::control_socket(text);
});
