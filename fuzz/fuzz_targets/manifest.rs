//! Arbitrary bytes into the manifest reader, as `reaper apply` sees them: UTF-8 decoding with
//! positions, then the multi-document parser. It must never panic, hang or blow up in memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reaper::core::manifest::{decode_utf8, parse_batch, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = decode_utf8("fuzz.yaml", data) else {
        return;
    };
    // One file, and the same text split in two files: cross-file checks (a record declared
    // twice) run too.
    let _ = parse_batch(&[Source {
        name: "fuzz.yaml",
        content: text,
    }]);
    let mid = (0..=text.len() / 2)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let (a, b) = text.split_at(mid);
    if let Ok(parsed) = parse_batch(&[
        Source {
            name: "a.yaml",
            content: a,
        },
        Source {
            name: "b.yaml",
            content: b,
        },
    ]) {
        // What was accepted must name valid records.
        for r in &parsed.records {
            let owner = r.owner();
            assert!(reaper::core::model::validate_name(owner.name.as_str()).is_ok());
        }
    }
});
