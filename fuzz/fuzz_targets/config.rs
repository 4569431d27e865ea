//! Arbitrary bytes into the daemon's config reader (`reaper serve --config`,
//! `reaper config check`). It must never panic, hang or blow up in memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reaper::config::ConfigFile;
use reaper::core::manifest::decode_utf8;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = decode_utf8("fuzz.yaml", data) {
        let _ = ConfigFile::parse("fuzz.yaml", text);
    }
});
