//! Any bytes as a Lambda event: envelope decoding and S3 key URL-decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = trailwatch_core::notification::decode_event(&v);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = trailwatch_core::s3key::decode_event_key(s);
        let _ = trailwatch_core::s3key::cloudtrail_key_hints(s);
        let _ = trailwatch_core::time::parse_rfc3339_millis(s);
    }
});
