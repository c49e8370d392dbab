//! Differential: any text through ingest's single-pass record parser and through the serde_json
//! path it replaced (`trailwatch_ingest::legacy`, built under `--cfg fuzzing`). Both must accept
//! or reject alike and build the same row; `assert_same` panics on any difference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        trailwatch_ingest::legacy::assert_same(text);
    }
});
