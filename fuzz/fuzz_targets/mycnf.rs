//! Fuzzes the my.cnf reader and `import-mycnf` (vip_agent::config::mycnf and ::import):
//! an option file is read line by line, its greatdb_ha settings turned into a config
//! file. Whatever the input, nothing panics, and every config file the import prints is
//! TOML the config reader takes (it may still name problems: a bad value stays bad,
//! and the host is not looked at).
//!
//! Seeds (fuzz/seeds/mycnf): option files with greatdb_ha settings.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vip_agent::config::{self, import, mycnf};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = mycnf::read_str(text, Path::new("/etc/my.cnf"));
    let Ok(imported) = import::import(&file, None) else {
        return;
    };
    for instance in imported.instances {
        if let Err(errors) = config::parse(&instance.toml) {
            for e in &errors.0 {
                assert!(
                    !e.message.starts_with("invalid TOML"),
                    "import-mycnf printed a file that is not TOML: {e}\n{}",
                    instance.toml
                );
            }
        }
    }
});
