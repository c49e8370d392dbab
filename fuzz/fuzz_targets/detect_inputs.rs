//! Any bytes through what detect parses: lake Parquet files of each table, the TOML config,
//! saved shard state and Lambda event envelopes of lake objects. They must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_detect::event::Table;

fuzz_target!(|data: &[u8]| {
    for table in [Table::CloudTrail, Table::Invocations, Table::Metrics] {
        let mut out = Vec::new();
        let _ = trailwatch_detect::read::read_file(
            bytes::Bytes::copy_from_slice(data),
            table,
            "111122223333",
            "eu-west-1",
            &Default::default(),
            &mut out,
        );
    }
    let _ = trailwatch_detect::state::decode_shard(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = trailwatch_detect::DetectConfig::from_toml(text, "fuzz");
        let _ = trailwatch_detect::read::partition_of(text);
        let _ = trailwatch_detect::event::function_name(text);
    }
});
