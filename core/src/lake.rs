//! The lake's layout: where each table's files go and how they are named and encoded.
//!
//! `<LAKE>/<table>/account_id=<id>/region=<region>/date=<YYYY-MM-DD>/<stem>[-<part>].parquet`.
//! The stem is derived from the source object, so re-processing an object replaces its files
//! instead of adding rows, and the Athena tables (partition projection) rely on these names.

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use sha2::{Digest, Sha256};

/// The CloudTrail records table.
pub const CLOUDTRAIL_TABLE: &str = "cloudtrail";
/// One row per Lambda invocation, from CloudWatch Logs.
pub const LAMBDA_INVOCATIONS_TABLE: &str = "lambda_invocations";
/// One row per `AWS/Lambda` metric-stream datapoint.
pub const LAMBDA_METRICS_TABLE: &str = "lambda_metrics";
/// Where rejected records and files are written, with the reason, as JSON Lines.
pub const REJECTED_DIR: &str = "_rejected";
/// Scratch space inside a local lake: staged files are renamed from here, so readers never see
/// half-written Parquet.
pub const STAGING_DIR: &str = "_staging";

/// Where the detect Lambda keeps its shard bodies (the DynamoDB items point at them). Ingest
/// must never read them: they are state, not logs.
pub const DETECT_STATE_DIR: &str = "detect-state";

/// Every top-level folder the pipeline itself writes. Inputs under these are never read back,
/// so the pipeline cannot loop on its own output.
pub const OWN_FOLDERS: &[&str] = &[
    CLOUDTRAIL_TABLE,
    LAMBDA_INVOCATIONS_TABLE,
    LAMBDA_METRICS_TABLE,
    REJECTED_DIR,
    STAGING_DIR,
    "findings",
    DETECT_STATE_DIR,
];

/// A lake prefix in one form, whatever the setting looked like (`lake`, `lake/`, `/lake/`):
/// empty, or ending in one `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// `key` relative to the lake root under `prefix` (any form [`normalize_prefix`] accepts), or
/// `None` when the key is outside the lake.
pub fn relative_key<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let key = key.trim_start_matches('/');
    let p = normalize_prefix(prefix);
    key.strip_prefix(p.as_str())
}

/// The value used for a partition whose value is missing or unusable.
pub const UNKNOWN: &str = "unknown";

/// The Hive partition of one row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub account_id: String,
    pub region: String,
    pub date: String,
}

impl Partition {
    /// Builds a partition from candidate values, sanitising each: an account id must be 12 digits
    /// and a region lowercase letters, digits and dashes, else the value becomes `unknown`, so a
    /// placeholder such as `"recipientAccountId"` cannot invent partitions Athena will not project.
    pub fn new(account_id: Option<&str>, region: Option<&str>, date: String) -> Self {
        Partition {
            account_id: account_id.filter(|a| is_account_id(a)).unwrap_or(UNKNOWN).to_string(),
            region: region.filter(|r| is_region(r)).unwrap_or(UNKNOWN).to_string(),
            date,
        }
    }

    /// Whether [`Partition::new`] would give these values this partition's account and region:
    /// a writer reuses the previous row's partition instead of building (and hashing) one a row.
    pub fn same_place(&self, account_id: Option<&str>, region: Option<&str>) -> bool {
        self.account_id == account_id.filter(|a| is_account_id(a)).unwrap_or(UNKNOWN)
            && self.region == region.filter(|r| is_region(r)).unwrap_or(UNKNOWN)
    }

    /// The folder of this partition in `table`, relative to the lake root.
    pub fn dir(&self, table: &str) -> String {
        format!("{table}/account_id={}/region={}/date={}", self.account_id, self.region, self.date)
    }
}

/// Twelve ASCII digits (leading zeros are common: ids are strings everywhere).
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A plausible AWS region name: a two-letter area, one or more lowercase words, a number
/// (`eu-west-1`, `us-gov-west-1`, `ap-southeast-5`). Strict, because a key or path segment that
/// merely looks like one (`pytest-1`, `logs-2`) must not become a partition.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.last().is_some_and(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The stem shared by every file made from one source object: a hash of where it came from and
/// which version of it was read (its ETag, or a hash of its content when there is no ETag).
pub fn object_stem(bucket: &str, key: &str, version: &str) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, version] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize()[..16])
}

/// The name prefix of a file `trailwatch compact` wrote: it holds the rows of other files of its
/// partition that were read already, so detect with state never reads it again.
pub const COMPACTED_PREFIX: &str = "compacted-";

/// The Parquet footer key under which a compacted file lists its sources, in row order, as a
/// JSON array of `[stem, rows]`.
pub const COMPACTED_SOURCES_KEY: &str = "trailwatch.compacted_sources";

/// True for a file (a key or a name) that compaction wrote.
pub fn is_compacted(key: &str) -> bool {
    key.rsplit('/').next().is_some_and(|n| n.starts_with(COMPACTED_PREFIX))
}

/// The stem of a lake file's name: the source object's hash for files ingest wrote (before the
/// `-<part>` or `.parquet`), the whole name without `.parquet` for compacted files.
pub fn file_stem(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    if name.starts_with(COMPACTED_PREFIX) {
        name.strip_suffix(".parquet").unwrap_or(name)
    } else {
        name.split(['-', '.']).next().unwrap_or(name)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// Rows per row group. CloudTrail rows are ~1-2 KB of JSON and compress ~15x with zstd, so 64k
/// rows make row groups of a few MB to tens of MB: large enough for Athena's scans, small enough
/// that the writer's buffer stays inside the ingest Lambda's memory budget.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Columns that hold a different value in every row (ids): a dictionary of them only adds
/// indices, and interning their strings was 4% of ingest.
const UNIQUE_COLUMNS: [&str; 4] = ["event_id", "request_id", "shared_event_id", "log_event_id"];

/// Free text besides the JSON columns: no query narrows them by range, so their min/max would
/// prune nothing (and comparing every value for them was 1.5% of ingest).
const TEXT_COLUMNS: [&str; 3] = ["user_agent", "error_message", "unknown_fields"];

/// Parquet settings for every file in the lake: zstd, chunk statistics for predicate pushdown,
/// dictionary encoding (Parquet falls back to plain per page when a dictionary stops paying);
/// no dictionary for [`UNIQUE_COLUMNS`], no statistics for them, [`TEXT_COLUMNS`] and the
/// CloudTrail columns that hold JSON.
pub fn writer_properties() -> WriterProperties {
    properties(true)
}

/// Files of at most this many rows, written whole at once, are written without dictionaries.
pub const PLAIN_FILE_ROWS: usize = 1024;

/// [`writer_properties`] with no dictionary at all, for a file of at most [`PLAIN_FILE_ROWS`]
/// rows. Most files ingest writes hold a few rows (one delivered object's records of one
/// partition); a dictionary there saves nothing after zstd, and costs every reader a second
/// page, a second decompression and a decoder per column: detect read such files in 23% fewer
/// instructions without them. Compaction writes its large files with dictionaries.
pub fn small_file_properties() -> WriterProperties {
    properties(false)
}

fn properties(dictionary: bool) -> WriterProperties {
    use parquet::schema::types::ColumnPath;
    let json = crate::schema::CLOUDTRAIL.iter().filter(|c| matches!(c.kind, crate::schema::Kind::Json)).map(|c| c.name);
    let mut builder = WriterProperties::builder();
    for c in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    for c in UNIQUE_COLUMNS.into_iter().chain(TEXT_COLUMNS).chain(json) {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
    }
    builder
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(dictionary)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_size_limit(256 << 10)
        .set_dictionary_page_size_limit(256 << 10)
        .set_created_by(concat!("trailwatch ", env!("CARGO_PKG_VERSION")).to_string())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_free_text_carry_no_statistics_and_ids_no_dictionary() {
        use parquet::schema::types::ColumnPath;
        let p = writer_properties();
        let col = |c: &str| ColumnPath::from(c);
        for c in ["event_name", "event_time", "recipient_account_id", "error_code"] {
            assert_eq!(p.statistics_enabled(&col(c)), EnabledStatistics::Chunk, "{c}");
            assert!(p.dictionary_enabled(&col(c)), "{c}");
        }
        for c in ["event_id", "request_parameters", "user_agent", "unknown_fields", "log_event_id"] {
            assert_eq!(p.statistics_enabled(&col(c)), EnabledStatistics::None, "{c}");
        }
        assert!(!p.dictionary_enabled(&col("event_id")));
        assert!(p.dictionary_enabled(&col("request_parameters")));
        let small = small_file_properties();
        for c in ["event_name", "event_id", "request_parameters", "user_identity.arn"] {
            assert!(!small.dictionary_enabled(&col(c)), "{c}");
        }
        assert_eq!(small.statistics_enabled(&col("event_time")), EnabledStatistics::Chunk);
        assert_eq!(small.statistics_enabled(&col("event_id")), EnabledStatistics::None);
    }

    #[test]
    fn partitions_sanitise_values() {
        let p = Partition::new(Some("012345678901"), Some("eu-west-3"), "2023-05-19".into());
        assert_eq!(p.dir("cloudtrail"), "cloudtrail/account_id=012345678901/region=eu-west-3/date=2023-05-19");
        let p = Partition::new(Some("recipientAccountId"), Some("../../etc"), "2023-05-19".into());
        assert_eq!((p.account_id.as_str(), p.region.as_str()), (UNKNOWN, UNKNOWN));
        assert_eq!(Partition::new(None, Some("awsRegion"), "d".into()).region, UNKNOWN);
        assert!(is_region("us-gov-west-1") && is_region("cn-north-1") && !is_region("US-EAST-1"));
        for not_region in ["pytest-1", "logs-2", "a-b-1", "eu-west-", "eu--1", "eu-west-123"] {
            assert!(!is_region(not_region), "{not_region}");
        }
    }

    #[test]
    fn prefixes_mean_the_same_with_or_without_slashes() {
        for p in ["lake", "lake/", "/lake/", "/lake"] {
            assert_eq!(normalize_prefix(p), "lake/");
            assert_eq!(relative_key("lake/findings/a.parquet", p), Some("findings/a.parquet"), "{p}");
            assert_eq!(relative_key("lakehouse/findings/a.parquet", p), None, "{p}");
        }
        for p in ["", "/"] {
            assert_eq!(normalize_prefix(p), "");
            assert_eq!(relative_key("findings/a.parquet", p), Some("findings/a.parquet"));
        }
        assert!(OWN_FOLDERS.contains(&DETECT_STATE_DIR));
    }

    #[test]
    fn stems_depend_on_every_part() {
        let a = object_stem("b", "k", "e");
        assert_eq!(a.len(), 32);
        assert_eq!(a, object_stem("b", "k", "e"));
        assert_ne!(a, object_stem("b", "k", "f"));
        assert_ne!(object_stem("ab", "c", ""), object_stem("a", "bc", ""));
    }
}
