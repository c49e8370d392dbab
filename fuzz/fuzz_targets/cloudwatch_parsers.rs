//! Any bytes through the CloudWatch parsers: Lambda platform lines (text and JSON), export-task
//! lines, subscription payloads and base64 carriers. They must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_ingest::cloudwatch::{base64_decode, ExportReader, Payload};
use trailwatch_ingest::platform::{function_from, invocations, LogEvent};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let events: Vec<LogEvent> = text
        .split('\u{1}')
        .enumerate()
        .map(|(i, m)| LogEvent { id: "id", timestamp: i as i64 * 1000 - 5, message: m })
        .collect();
    let (group, stream) = text.split_once('\u{2}').unwrap_or(("/aws/lambda/f", &text));
    let _ = function_from(group, stream);
    let _ = invocations(group, stream, &events);
    let mut r = ExportReader::new(data);
    for _ in 0..10_000 {
        match r.next_message() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let _ = serde_json::from_slice::<Payload>(data);
    let _ = base64_decode(&text);
});
