//! The ingest stage: reads CloudTrail deliveries (gzipped or plain, enveloped, bare arrays, JSON
//! Lines, LookupEvents exports) and writes the `cloudtrail` table of the Parquet lake.
//!
//! Pure and synchronous: objects come in through [`ObjectSource`], files go out through
//! [`LakeStore`]. The Lambda binary (`src/main.rs`, feature `lambda`) and the CLI wrap it.

pub mod cloudwatch;
pub mod convert;
pub mod decompress;
pub mod error;
pub mod event;
pub mod handler;
mod object;
pub mod platform;
pub mod split;
pub mod writer;

use trailwatch_core::lake;
use trailwatch_core::s3key::cloudtrail_key_hints;
use trailwatch_core::store::{LakeStore, ObjectRef, ObjectSource};

pub use error::{BadKind, IngestError};

pub use object::ingest_reader;

use decompress::DecompressLimits;
use writer::{RejectLine, RejectWriter, WriterLimits};

/// Everything ingest can be tuned with; the defaults suit a Lambda with 512 MB.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub decompress: DecompressLimits,
    pub split: split::Limits,
    pub writer: WriterLimits,
    /// The region of CloudWatch data whose object key names none (subscription payloads do not
    /// carry one); `unknown` when unset.
    pub default_region: Option<String>,
    /// Export-task keys do not name their log group: `(key prefix, log group)` pairs say it.
    /// The longest matching prefix wins.
    pub export_log_groups: Vec<(String, String)>,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records were read; `records` rows are in the lake.
    Ingested,
    /// Nothing to ingest, by design (digest file, empty object, own output): the reason.
    Skipped(String),
}

/// The result of ingesting one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    pub uri: String,
    pub outcome: Outcome,
    /// Rows written to the lake.
    pub records: u64,
    /// Records rejected (each has a line under `_rejected/`).
    pub rejected: u64,
    /// Records deliberately not stored (CloudTrail Insights events, CloudWatch control messages,
    /// metrics of other namespaces).
    pub skipped_records: u64,
    /// Lake keys written: Parquet files, then the rejects file if any.
    pub lake_keys: Vec<String>,
}

impl ObjectReport {
    fn skipped(uri: String, why: impl Into<String>) -> Self {
        ObjectReport {
            uri,
            outcome: Outcome::Skipped(why.into()),
            records: 0,
            rejected: 0,
            skipped_records: 0,
            lake_keys: vec![],
        }
    }
}

/// Why an object is skipped before it is opened, judging by its key and size alone.
pub fn skip_reason(obj: &ObjectRef, lake: &dyn LakeStore) -> Option<String> {
    if lake.is_own_output(obj) {
        return Some("the pipeline's own output".into());
    }
    if obj.size == Some(0) {
        return Some("zero-byte object".into());
    }
    let hints = cloudtrail_key_hints(&obj.key);
    if hints.is_digest {
        return Some("CloudTrail digest file".into());
    }
    if hints.is_insight {
        return Some("CloudTrail Insights file (Insights are not ingested)".into());
    }
    let name = obj.key.rsplit('/').next().unwrap_or("");
    if name == "aws-logs-write-test" || name.ends_with(".parquet") {
        return Some(format!("not a log delivery ({name})"));
    }
    None
}

/// Ingests one object into the lake. On error nothing of it is left in the lake (files are
/// staged and only stored once the whole object was read).
pub fn ingest_object(
    src: &dyn ObjectSource,
    obj: &ObjectRef,
    lake: &dyn LakeStore,
    cfg: &Config,
) -> Result<ObjectReport, IngestError> {
    if let Some(why) = skip_reason(obj, lake) {
        return Ok(ObjectReport::skipped(obj.uri(), why));
    }
    let body = src.open(obj)?;
    // S3's ETag names the version read; without one the content hash does.
    let version = body.etag.or_else(|| obj.etag.clone()).map(|e| e.trim_matches('"').to_string());
    ingest_reader(body.reader, &obj.bucket, &obj.key, version, lake, cfg)
}

/// Where rejects of objects that failed as a whole go.
pub const FAILED_OBJECTS: &str = "objects";

/// Records an object that could not be ingested under `_rejected/objects/`, with the reason, so
/// a permanently bad object is acknowledged without disappearing. Returns the key written.
pub fn record_failure(lake: &dyn LakeStore, obj: &ObjectRef, err: &IngestError) -> Result<String, IngestError> {
    let uri = obj.uri();
    let dir = writer::staging_dir(lake, &uri)?;
    let mut rejects = RejectWriter::new(dir.path(), &uri);
    let reason = err.to_string();
    rejects.push(&RejectLine {
        bucket: &obj.bucket,
        key: &obj.key,
        index: None,
        line: None,
        reason: &reason,
        record: None,
    })?;
    let stem = lake::object_stem(&obj.bucket, &obj.key, obj.etag.as_deref().unwrap_or("").trim_matches('"'));
    Ok(rejects.commit(lake, FAILED_OBJECTS, &stem)?.expect("one line was written"))
}
