//! The ingest stage: reads CloudTrail deliveries (gzipped or plain, enveloped, bare arrays, JSON
//! Lines, LookupEvents exports) and writes the `cloudtrail` table of the Parquet lake.
//!
//! Pure and synchronous: objects come in through [`ObjectSource`], files go out through
//! [`LakeStore`]. The Lambda binary (`src/main.rs`, feature `lambda`) and the CLI wrap it.

pub mod convert;
pub mod decompress;
pub mod error;
pub mod event;
pub mod handler;
pub mod split;
pub mod writer;

use serde_json::value::RawValue;
use trailwatch_core::lake::{self, Partition};
use trailwatch_core::s3key::cloudtrail_key_hints;
use trailwatch_core::store::{is_transient_io, LakeStore, ObjectRef, ObjectSource};
use trailwatch_core::time::utc_date;

pub use error::{BadKind, IngestError};

use decompress::{DecompressLimits, Encoding};
use split::{RecordMeta, SplitError, Splitter};
use writer::{PartitionedWriter, RejectLine, RejectWriter, WriterLimits, MAX_REJECT_TEXT};

/// Everything ingest can be tuned with; the defaults suit a Lambda with 512 MB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    pub decompress: DecompressLimits,
    pub split: split::Limits,
    pub writer: WriterLimits,
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
    /// Records deliberately not stored (CloudTrail Insights events).
    pub skipped_records: u64,
    /// Lake keys written: Parquet files, then the rejects file if any.
    pub lake_keys: Vec<String>,
}

impl ObjectReport {
    fn skipped(obj: &ObjectRef, why: impl Into<String>) -> Self {
        ObjectReport {
            uri: obj.uri(),
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

fn has_key(raw: &RawValue, keys: &[&str]) -> bool {
    serde_json::from_str::<convert::RawObject>(raw.get())
        .is_ok_and(|o| o.0.iter().any(|(k, _)| keys.contains(&k.as_ref())))
}

fn looks_like_cloudtrail(bytes: &[u8]) -> bool {
    const KEYS: [&[u8]; 3] = [b"\"eventTime\"", b"\"eventName\"", b"\"eventSource\""];
    KEYS.iter().any(|k| bytes.windows(k.len()).any(|w| w == *k))
}

/// Maps a split error to the object's error: a dropped connection can be retried, the rest is
/// the content's fault.
fn split_error(uri: &str, e: SplitError) -> IngestError {
    match e {
        SplitError::Io { line, source } if is_transient_io(&source) => {
            IngestError::Interrupted { uri: uri.to_string(), line, detail: source.to_string() }
        }
        SplitError::Io { source, .. } if decompress::is_bomb(&source) => {
            IngestError::BadObject { uri: uri.to_string(), kind: BadKind::Bomb, detail: source.to_string() }
        }
        SplitError::Io { line, source } => {
            let detail = match source.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    format!("truncated at line {line} (the stream ends mid-member)")
                }
                _ => format!("{source} (at line {line})"),
            };
            IngestError::BadObject { uri: uri.to_string(), kind: BadKind::Gzip, detail }
        }
        other => IngestError::BadObject { uri: uri.to_string(), kind: BadKind::Json, detail: other.to_string() },
    }
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
        return Ok(ObjectReport::skipped(obj, why));
    }
    let uri = obj.uri();
    let body = src.open(obj)?;
    let etag = body.etag.or_else(|| obj.etag.clone());
    let opened = decompress::open(body.reader, cfg.decompress, etag.is_none());
    let decompress::Opened { mut reader, encoding, hash } = opened.map_err(|e| {
        if is_transient_io(&e) {
            IngestError::Interrupted { uri: uri.clone(), line: 0, detail: e.to_string() }
        } else {
            IngestError::BadObject { uri: uri.clone(), kind: BadKind::Gzip, detail: e.to_string() }
        }
    })?;
    if encoding == Encoding::Empty {
        return Ok(ObjectReport::skipped(obj, "zero-byte object"));
    }
    let hints = cloudtrail_key_hints(&obj.key);
    let mut out = PartitionedWriter::new(lake, &uri, lake::CLOUDTRAIL_TABLE, cfg.writer)?;
    let mut rejects = RejectWriter::new(out.dir(), &uri);
    let mut splitter = Splitter::new(&mut reader, cfg.split);
    let (mut cloudtrail_like, mut insights) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(16 << 10);
    let mut inner = String::new();

    let reject = |rejects: &mut RejectWriter, m: &RecordMeta, reason: &str, text: Option<&[u8]>| {
        let text = text.map(|t| writer::truncate(std::str::from_utf8(t).unwrap_or("<not UTF-8>"), MAX_REJECT_TEXT));
        rejects.push(&RejectLine {
            bucket: &obj.bucket,
            key: &obj.key,
            index: Some(m.index),
            line: Some(m.line),
            reason,
            record: text,
        })
    };

    while let Some(m) = splitter.next_record(&mut buf).map_err(|e| split_error(&uri, e))? {
        if let Some(size) = m.oversized {
            let cap = cfg.split.max_record_bytes;
            reject(&mut rejects, &m, &format!("record of {size} bytes exceeds the cap of {cap} bytes"), None)?;
            continue;
        }
        if m.too_deep {
            reject(&mut rejects, &m, &format!("record nests deeper than {} levels", cfg.split.max_depth), None)?;
            continue;
        }
        if cloudtrail_like == 0 && looks_like_cloudtrail(&buf) {
            cloudtrail_like += 1;
        }
        let mut raw: &RawValue = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                reject(&mut rejects, &m, &format!("invalid JSON: {e}"), Some(&buf))?;
                continue;
            }
        };
        if m.top_level {
            if m.index == 0 && has_key(raw, &["digestStartTime", "digestS3Object", "digestPublicKeyFingerprint"]) {
                return Ok(ObjectReport::skipped(obj, "CloudTrail digest file"));
            }
            // A LookupEvents export row carries the record as a JSON string.
            if let Ok(obj) = serde_json::from_str::<convert::RawObject>(raw.get()) {
                if let Some((_, v)) = obj.0.iter().find(|(k, _)| k == "CloudTrailEvent") {
                    match serde_json::from_str::<String>(v.get()) {
                        Ok(s) => inner = s,
                        Err(_) => inner = v.get().to_string(),
                    }
                    cloudtrail_like += 1;
                }
            }
            if !inner.is_empty() {
                match serde_json::from_str::<&RawValue>(&inner) {
                    Ok(r) => raw = r,
                    Err(e) => {
                        reject(&mut rejects, &m, &format!("CloudTrailEvent: invalid JSON: {e}"), Some(&buf))?;
                        inner.clear();
                        continue;
                    }
                }
            }
        }
        match convert::parse_record(raw) {
            Ok(row) => {
                if matches!(&row.values[event_type_index()], convert::Val::Str(t) if t == "AwsCloudTrailInsight") {
                    insights += 1;
                } else {
                    let account = hints.account_id.as_deref().or(row.recipient_account_id());
                    let region = hints.region.as_deref().or(row.aws_region());
                    let p = Partition::new(account, region, utc_date(row.event_time));
                    out.push(p, &row, raw.get().len())?;
                }
            }
            Err(r) => reject(&mut rejects, &m, &r.0, Some(raw.get().as_bytes()))?,
        }
        inner.clear();
    }
    let seen = splitter.records_seen();
    if seen > 0 && cloudtrail_like == 0 {
        return Err(IngestError::BadObject {
            uri,
            kind: BadKind::NotCloudTrail,
            detail: format!("{seen} JSON values, none with eventTime, eventName or eventSource"),
        });
    }
    if seen == 0 {
        return Ok(ObjectReport::skipped(obj, "no records"));
    }
    drop(reader);
    let version = match &etag {
        Some(etag) => etag.trim_matches('"').to_string(),
        None => hash.finish().unwrap_or_default(),
    };
    let stem = lake::object_stem(&obj.bucket, &obj.key, &version);
    let (records, rejected) = (out.rows(), rejects.count());
    // Rejects are staged in the writer's folder: store them before the writer lets it go.
    let rejects_key = rejects.commit(lake, lake::CLOUDTRAIL_TABLE, &stem)?;
    let mut lake_keys = out.commit(lake, &stem)?;
    lake_keys.extend(rejects_key);
    Ok(ObjectReport { uri, outcome: Outcome::Ingested, records, rejected, skipped_records: insights, lake_keys })
}

/// Records an object that could not be ingested under `_rejected/`, with the reason, so a
/// permanently bad object is acknowledged without disappearing. Returns the key written.
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
    Ok(rejects.commit(lake, lake::CLOUDTRAIL_TABLE, &stem)?.expect("one line was written"))
}

fn event_type_index() -> usize {
    static I: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *I.get_or_init(|| {
        trailwatch_core::schema::CLOUDTRAIL.iter().position(|c| c.name == "event_type").expect("schema has event_type")
    })
}
