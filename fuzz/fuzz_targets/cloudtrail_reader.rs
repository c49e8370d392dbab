//! Any bytes through the whole CloudTrail read path: gzip sniffing and decoding with its caps,
//! the streaming splitter, record parsing and Arrow building. It must never panic.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use trailwatch_ingest::convert::{parse_record, CloudTrailBatch};
use trailwatch_ingest::decompress::{self, DecompressLimits};
use trailwatch_ingest::split::{Limits, Splitter};

fuzz_target!(|data: &[u8]| {
    let limits = DecompressLimits { max_bytes: 16 << 20, max_ratio: 200, ratio_after: 1 << 20 };
    let Ok(opened) = decompress::open(data, limits, true) else { return };
    let mut reader = opened.reader;
    let mut splitter = Splitter::new(&mut reader, Limits { max_record_bytes: 64 << 10, max_depth: 32 });
    let mut buf = Vec::new();
    let mut batch = CloudTrailBatch::new();
    while let Ok(Some(meta)) = splitter.next_record(&mut buf) {
        if meta.oversized.is_some() || meta.too_deep {
            continue;
        }
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(&buf) {
            if let Ok(row) = parse_record(raw) {
                batch.push(&row, buf.len());
            }
        }
        if batch.len() >= 64 {
            let b = batch.finish();
            assert_eq!(b.num_rows(), 64);
        }
    }
    let _ = batch.finish();
    let mut rest = Vec::new();
    let _ = reader.take(1 << 20).read_to_end(&mut rest);
    let _ = opened.hash.finish();
});
