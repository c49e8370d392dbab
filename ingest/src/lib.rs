//! The ingest stage: reads CloudTrail deliveries (gzipped or plain, enveloped, bare arrays, JSON
//! Lines, LookupEvents exports) and writes the `cloudtrail` table of the Parquet lake.
//!
//! Pure and synchronous: objects come in through [`ObjectSource`], files go out through
//! [`LakeStore`]. The Lambda binary (`src/main.rs`, feature `lambda`) and the CLI wrap it.

pub mod cloudwatch;
pub mod compact;
pub mod convert;
pub mod decompress;
pub mod error;
pub mod handler;
mod json;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod legacy;
mod object;
pub mod platform;
pub mod split;
pub mod writer;

use trailwatch_core::lake;
use trailwatch_core::s3key::cloudtrail_key_hints;
use trailwatch_core::store::{LakeStore, ObjectRef, ObjectSource};

pub use error::{BadKind, IngestError};

pub use object::{ingest_awslogs, ingest_reader};

use std::time::Duration;

use trailwatch_core::time::{wall_clock_millis, EpochMillis};

use decompress::DecompressLimits;
use writer::{RejectLine, RejectWriter, WriterLimits};

/// Everything ingest can be tuned with; the defaults suit a Lambda with 512 MB.
#[derive(Debug, Clone)]
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
    /// How far a record's event time may be ahead of the processing time before it counts as
    /// future-dated. Such records are kept (they are evidence) but counted and reported, because
    /// a forged timestamp could otherwise push detection's notion of "now" ahead. Default 5
    /// minutes (the Lambda reads `MAX_FUTURE_SKEW_MINUTES`).
    pub max_future_skew: Duration,
}

/// The default [`Config::max_future_skew`].
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

impl Default for Config {
    fn default() -> Self {
        Config {
            decompress: DecompressLimits::default(),
            split: split::Limits::default(),
            writer: WriterLimits::default(),
            default_region: None,
            export_log_groups: Vec::new(),
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
        }
    }
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
    /// Records dated more than [`Config::max_future_skew`] after the processing time. They are
    /// in the lake like any other row; this counts them so the object can be looked at.
    pub future_records: u64,
    /// The latest of those event times (RFC 3339, UTC), when there are any.
    pub max_future_event_time: Option<String>,
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
            future_records: 0,
            max_future_event_time: None,
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

/// [`ingest_object_at`] with the processing time read from the wall clock when called; kept for
/// callers that do not pass one yet.
pub fn ingest_object(
    src: &dyn ObjectSource,
    obj: &ObjectRef,
    lake: &dyn LakeStore,
    cfg: &Config,
) -> Result<ObjectReport, IngestError> {
    ingest_object_at(src, obj, lake, cfg, wall_clock_millis())
}

/// Ingests one object into the lake. On error nothing of it is left in the lake: files are
/// staged and only stored once the whole object was read, and if storing them fails partway,
/// those stored are deleted again. `now` is the processing time (ms since the epoch), against which records dated
/// more than [`Config::max_future_skew`] ahead are counted.
pub fn ingest_object_at(
    src: &dyn ObjectSource,
    obj: &ObjectRef,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<ObjectReport, IngestError> {
    if let Some(why) = skip_reason(obj, lake) {
        return Ok(ObjectReport::skipped(obj.uri(), why));
    }
    let body = src.open(obj)?;
    // S3's ETag names the version read; without one the content hash does.
    let version = body.etag.or_else(|| obj.etag.clone()).map(|e| e.trim_matches('"').to_string());
    ingest_reader(body.reader, &obj.bucket, &obj.key, version, lake, cfg, now)
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
        message_id: None,
        reason: &reason,
        record: None,
    })?;
    let stem = lake::object_stem(&obj.bucket, &obj.key, obj.etag.as_deref().unwrap_or("").trim_matches('"'));
    Ok(rejects.commit(lake, FAILED_OBJECTS, &stem)?.expect("one line was written"))
}

/// Where unreadable messages go: event units naming no object (an SQS body that is not a
/// notification) and Lambda subscription events whose payload failed as a whole.
pub const REJECTED_MESSAGES: &str = "messages";

/// Records a message that could not be used under `_rejected/messages/`, with the reason and its
/// text (up to 64 KiB), so it is acknowledged without disappearing. `message_id` is the SQS
/// message id, if any. The file is named from the id and the text, so a redelivery replaces it.
/// Returns the key written.
pub fn record_message(
    lake: &dyn LakeStore,
    message_id: Option<&str>,
    text: &str,
    reason: &str,
) -> Result<String, IngestError> {
    let stem = lake::object_stem("", message_id.unwrap_or(""), &lake::object_stem("", "", text));
    let uri = format!("{}/{}/{stem}", lake::REJECTED_DIR, REJECTED_MESSAGES);
    let dir = writer::staging_dir(lake, &uri)?;
    let mut rejects = RejectWriter::new(dir.path(), &uri);
    rejects.push(&RejectLine {
        bucket: "",
        key: "",
        index: None,
        line: None,
        message_id,
        reason,
        record: Some(writer::truncate(text, writer::MAX_REJECT_TEXT)),
    })?;
    Ok(rejects.commit(lake, REJECTED_MESSAGES, &stem)?.expect("one line was written"))
}
