//! Any bytes through what detect parses: lake Parquet files of each table, the TOML config,
//! saved shard state and Lambda event envelopes of lake objects. They must never panic. Each
//! table's read after the first goes through the schema cache the first filled (`footer`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_detect::event::Table;

fuzz_target!(|data: &[u8]| {
    let mut schemas = trailwatch_detect::footer::Schemas::default();
    let _ = trailwatch_detect::footer::schema_range(data);
    for table in [Table::CloudTrail, Table::Invocations, Table::Metrics] {
        let bytes = bytes::Bytes::copy_from_slice(data);
        if let Ok(d) = trailwatch_detect::read::Decoded::read(bytes, table, &Default::default(), &mut schemas) {
            let mut out = Vec::new();
            let _ = d.events("111122223333", "eu-west-1", 0, &mut out);
        }
    }
    let _ = trailwatch_detect::state::decode_shard(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = trailwatch_detect::DetectConfig::from_toml(text, "fuzz");
        let _ = trailwatch_detect::read::partition_of(text);
        let _ = trailwatch_detect::event::function_name(text);
    }
});
