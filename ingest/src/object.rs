//! One object's ingest: sniffs what its content is and routes every value to its table.
//!
//! Content decides, never the key: CloudTrail records (enveloped, bare arrays, JSON Lines,
//! LookupEvents rows), CloudWatch Logs subscription payloads (Firehose-concatenated, or inside a
//! Lambda subscription event), metric-stream datapoints, and export-task text files.

use std::io::{BufRead, Read};
use std::time::Duration;

use serde_json::value::RawValue;
use trailwatch_core::lake::{self, is_region, Partition};
use trailwatch_core::s3key::{cloudtrail_key_hints, KeyHints};
use trailwatch_core::store::{is_transient_io, LakeStore};
use trailwatch_core::time::{utc_date, EpochMillis};

use crate::cloudwatch::{
    self, AwsLogsEvent, Datapoint, ExportReader, InvocationBatch, InvocationRow, MetricBatch, Payload,
};
use crate::convert::{self, CloudTrailBatch, RawObject};
use crate::decompress::{self, Encoding};
use crate::error::{BadKind, IngestError};
use crate::json;
use crate::platform::{self, LogEvent};
use crate::split::{InPlaceError, RecordMeta, SplitError, Splitter};
use crate::writer::{self, PartitionedWriter, RejectLine, RejectWriter, Staged, TableBatch, MAX_REJECT_TEXT};
use crate::{Config, ObjectReport, Outcome};

#[cfg(test)]
thread_local! {
    /// How many times a CloudWatch Logs payload was parsed on this thread (tests only).
    static PAYLOAD_PARSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Parses a CloudWatch Logs payload; every parse of one goes through here.
fn parse_payload<'t, T: serde::Deserialize<'t>>(text: &'t [u8]) -> serde_json::Result<T> {
    #[cfg(test)]
    PAYLOAD_PARSES.with(|c| c.set(c.get() + 1));
    serde_json::from_slice(text)
}

/// Where one stream's lake files are named from.
#[derive(Debug, Clone)]
pub(crate) enum Naming {
    /// An object: its bucket and key, and the version read (an ETag; `None`: the content hash).
    Object { bucket: String, key: String, version: Option<String> },
    /// A Lambda subscription event: named after the payload inside it, once it has been read;
    /// `placeholder` names it until then (and if it holds no payload).
    AwsLogs { placeholder: String },
}

/// The owner, log group, stream and first and last event ids of a subscription event's payload.
#[derive(Debug, Default)]
struct AwsLogsName {
    key: Option<String>,
    first: Option<String>,
    last: Option<String>,
}

/// Records whose event time is further ahead of the processing clock than the allowed skew.
#[derive(Debug)]
struct FutureCheck {
    /// Event times after this (ms since the epoch) are future-dated.
    after: i64,
    records: u64,
    max: Option<i64>,
}

impl FutureCheck {
    fn new(now: EpochMillis, skew: Duration) -> Self {
        FutureCheck { after: now.saturating_add(skew.as_millis() as i64), records: 0, max: None }
    }

    fn check(&mut self, event_time: i64) {
        if event_time > self.after {
            self.records += 1;
            self.max = Some(self.max.map_or(event_time, |m| m.max(event_time)));
        }
    }
}

/// The writers and rejects of one object.
struct Sinks<'a> {
    lake: &'a dyn LakeStore,
    cfg: &'a Config,
    bucket: &'a str,
    /// The object's key; for a subscription event, `awslogs/<owner>/<group>/<stream>` once known.
    key: String,
    uri: String,
    /// Set for a Lambda subscription event: its name, learned from its payload.
    awslogs: Option<AwsLogsName>,
    future: FutureCheck,
    hints: KeyHints,
    /// A region named by a key segment (Firehose prefixes such as `.../eu-west-1/...`).
    key_region: Option<String>,
    cloudtrail: Option<PartitionedWriter<CloudTrailBatch>>,
    /// The partition of the last CloudTrail row and its day: most rows share their neighbour's.
    last_partition: Option<(i64, Partition)>,
    invocations: Option<PartitionedWriter<InvocationBatch>>,
    metrics: Option<PartitionedWriter<MetricBatch>>,
    rejects: RejectWriter,
    _dir: tempfile::TempDir,
    /// Values recognised as CloudTrail, CloudWatch or metrics (accepted or not).
    recognised: u64,
    skipped: u64,
}

fn writer<'w, B: TableBatch>(
    slot: &'w mut Option<PartitionedWriter<B>>,
    lake: &dyn LakeStore,
    uri: &str,
    cfg: &Config,
) -> Result<&'w mut PartitionedWriter<B>, IngestError> {
    if slot.is_none() {
        *slot = Some(PartitionedWriter::new(lake, uri, cfg.writer)?);
    }
    Ok(slot.as_mut().expect("set above"))
}

impl<'a> Sinks<'a> {
    fn reject(
        &mut self,
        index: Option<u64>,
        line: Option<u64>,
        reason: &str,
        text: Option<&[u8]>,
    ) -> Result<(), IngestError> {
        let text = text.map(|t| writer::truncate(std::str::from_utf8(t).unwrap_or("<not UTF-8>"), MAX_REJECT_TEXT));
        self.rejects.push(&RejectLine {
            bucket: self.bucket,
            key: &self.key,
            index,
            line,
            message_id: None,
            reason,
            record: text,
        })
    }

    fn region_for_logs(&self) -> Option<&str> {
        self.key_region.as_deref().or(self.cfg.default_region.as_deref())
    }

    /// A CloudTrail record; `owner` is the account of the payload that carried it, if any.
    fn cloudtrail(&mut self, text: &str, m: &RecordMeta, owner: Option<&str>) -> Result<(), IngestError> {
        self.cloudtrail_checked(text, m, owner).map(|_| ())
    }

    /// A CloudTrail record; `owner` is the account of the payload that carried it, if any.
    /// Returns false when the text was not JSON at all.
    fn cloudtrail_checked(&mut self, text: &str, m: &RecordMeta, owner: Option<&str>) -> Result<bool, IngestError> {
        match convert::parse_record_text(text) {
            Ok(row) => {
                self.cloudtrail_row(&row, text.len(), owner)?;
                Ok(true)
            }
            Err(e) => {
                self.reject(Some(m.index), Some(m.line), &e.to_string(), Some(text.as_bytes()))?;
                Ok(!matches!(e, convert::RecordError::Json(_)))
            }
        }
    }

    /// A record the splitter offers in place (see [`Splitter::records_in_place`]): its length
    /// when it is a valid row, `None` to leave it to the splitter and [`Sinks::cloudtrail_checked`];
    /// `declined` is set when it was left for a reason other than the text ending inside it.
    fn cloudtrail_in_place(&mut self, text: &str, declined: &mut bool) -> Result<Option<usize>, IngestError> {
        match json::parse_prefix(text, self.cfg.split.max_depth) {
            Ok((row, len)) => {
                self.cloudtrail_row(&row, len, None)?;
                Ok(Some(len))
            }
            Err(cut) => {
                *declined = !cut;
                Ok(None)
            }
        }
    }

    fn cloudtrail_row(&mut self, row: &convert::Row<'_>, size: usize, owner: Option<&str>) -> Result<(), IngestError> {
        if matches!(&row.values[event_type_index()], convert::Val::Str(t) if t == "AwsCloudTrailInsight") {
            self.skipped += 1;
            return Ok(());
        }
        let account = self.hints.account_id.as_deref().or(row.recipient_account_id()).or(owner);
        let region = self.hints.region.as_deref().or(row.aws_region());
        let day = row.event_time.div_euclid(86_400_000);
        let p = match &mut self.last_partition {
            Some((d, p)) if *d == day && p.same_place(account, region) => p,
            last => &last.insert((day, Partition::new(account, region, utc_date(row.event_time)))).1,
        };
        self.future.check(row.event_time);
        writer(&mut self.cloudtrail, self.lake, &self.uri, self.cfg)?.push(p, row, size)
    }

    /// The Lambda invocations (and CloudTrail records) in one log stream's events.
    fn log_events(
        &mut self,
        owner: &str,
        group: &str,
        stream: &str,
        events: &[LogEvent],
        m: &RecordMeta,
    ) -> Result<(), IngestError> {
        self.recognised += 1;
        let mut lambda = Vec::with_capacity(events.len());
        for e in events {
            let msg = e.message.trim_start();
            if msg.starts_with('{') && msg.contains("\"eventVersion\"") {
                // CloudTrail delivered through CloudWatch Logs.
                match serde_json::from_str::<&RawValue>(msg.trim_end()) {
                    Ok(raw) => self.cloudtrail(raw.get(), m, Some(owner))?,
                    Err(err) => self.reject(
                        Some(m.index),
                        Some(m.line),
                        &format!("log event {}: invalid JSON: {err}", e.id),
                        Some(msg.as_bytes()),
                    )?,
                }
            } else {
                lambda.push(*e);
            }
        }
        let region = self.region_for_logs().map(str::to_string);
        for inv in platform::invocations(group, stream, &lambda) {
            let p = Partition::new(Some(owner), region.as_deref(), utc_date(inv.end_time));
            let row = InvocationRow { inv: &inv, log_group: group, log_stream: stream };
            self.future.check(inv.end_time);
            writer(&mut self.invocations, self.lake, &self.uri, self.cfg)?.push(&p, &row, 256)?;
        }
        Ok(())
    }

    fn payload(&mut self, p: &Payload, m: &RecordMeta) -> Result<(), IngestError> {
        if let Some(name) = &mut self.awslogs {
            // A subscription event is named after its payload (the first, should it hold more).
            if name.key.is_none() {
                let key = format!("awslogs/{}/{}/{}", p.owner, p.log_group.trim_start_matches('/'), p.log_stream);
                self.uri = key.clone();
                self.key = key.clone();
                name.key = Some(key);
                name.first = p.log_events.first().map(|e| e.id.to_string());
            }
            if let Some(e) = p.log_events.last() {
                name.last = Some(e.id.to_string());
            }
        }
        if p.message_type != "DATA_MESSAGE" {
            self.recognised += 1;
            self.skipped += 1;
            return Ok(());
        }
        let events: Vec<LogEvent> =
            p.log_events.iter().map(|e| LogEvent { id: &e.id, timestamp: e.timestamp, message: &e.message }).collect();
        self.log_events(&p.owner, &p.log_group, &p.log_stream, &events, m)
    }

    fn datapoint(&mut self, d: &Datapoint, size: usize) -> Result<(), IngestError> {
        self.recognised += 1;
        if d.namespace != cloudwatch::LAMBDA_NAMESPACE {
            self.skipped += 1;
            return Ok(());
        }
        let account = d.account_id.as_deref().or(self.hints.account_id.as_deref());
        let region = d.region.as_deref().or(self.key_region.as_deref());
        let p = Partition::new(account, region, utc_date(d.timestamp));
        self.future.check(d.timestamp);
        writer(&mut self.metrics, self.lake, &self.uri, self.cfg)?.push(&p, d, size)
    }

    /// A payload carried as base64 (of gzip, usually): a Lambda subscription event's
    /// `awslogs.data`, a Firehose transformation record's or a Kinesis record's `data`. A region
    /// the carrier names wins over the key's.
    fn encoded_payload(
        &mut self,
        what: &str,
        data: &str,
        region: Option<&str>,
        m: &RecordMeta,
    ) -> Result<(), IngestError> {
        let json = match decode_awslogs(data, self.cfg) {
            Ok(j) => j,
            Err(why) => return self.reject(Some(m.index), Some(m.line), &format!("{what}: {why}"), None),
        };
        match parse_payload::<Payload>(&json) {
            Ok(p) => {
                let saved = match region {
                    Some(r) => self.key_region.replace(r.to_string()),
                    None => self.key_region.clone(),
                };
                let out = self.payload(&p, m);
                self.key_region = saved;
                out
            }
            Err(e) => {
                self.reject(Some(m.index), Some(m.line), &format!("{what}: not a CloudWatch Logs payload: {e}"), None)
            }
        }
    }

    /// Stores the object's files, all or nothing ([`writer::store_all`]), named after `stem`.
    fn commit(self, stem: &str) -> Result<ObjectReport, IngestError> {
        let rejected = self.rejects.count();
        let table = if self.cloudtrail.is_none() && (self.invocations.is_some() || self.metrics.is_some()) {
            "cloudwatch"
        } else {
            lake::CLOUDTRAIL_TABLE
        };
        let mut records = 0;
        let mut staged: Vec<Staged> = Vec::new();
        if let Some(w) = self.cloudtrail {
            records += w.rows();
            staged.push(w.finish(stem)?);
        }
        if let Some(w) = self.invocations {
            records += w.rows();
            staged.push(w.finish(stem)?);
        }
        if let Some(w) = self.metrics {
            records += w.rows();
            staged.push(w.finish(stem)?);
        }
        // The rejects are staged in this object's folder (`_dir`), which lives until the end.
        let mut files: Vec<(String, std::path::PathBuf)> =
            staged.iter_mut().flat_map(|s| std::mem::take(&mut s.files)).collect();
        files.extend(self.rejects.finish(table, stem)?);
        let keys = writer::store_all(self.lake, &self.uri, &files)?;
        drop(staged);
        let future = &self.future;
        let max_future_event_time = future.max.map(trailwatch_core::time::format_rfc3339_millis);
        if future.records > 0 {
            tracing::warn!(
                object = %self.uri,
                future_records = future.records,
                max_event_time = max_future_event_time.as_deref().unwrap_or(""),
                "{}: {} record(s) dated more than {} s after the processing time (latest {}); kept in the lake",
                self.uri,
                future.records,
                self.cfg.max_future_skew.as_secs(),
                max_future_event_time.as_deref().unwrap_or(""),
            );
        }
        Ok(ObjectReport {
            uri: self.uri,
            outcome: Outcome::Ingested,
            records,
            rejected,
            skipped_records: self.skipped,
            future_records: self.future.records,
            max_future_event_time,
            lake_keys: keys,
        })
    }
}

/// The decompression caps for one CloudWatch Logs payload carried as base64: the object caps,
/// and no more than the record cap in all (a payload is one record, and CloudWatch Logs sends at
/// most ~1 MB), so a 6 MB event cannot expand to the ~1.2 GB the 200:1 ratio would allow.
fn payload_limits(cfg: &Config) -> decompress::DecompressLimits {
    let max_bytes = cfg.decompress.max_bytes.min(cfg.split.max_record_bytes as u64);
    decompress::DecompressLimits { max_bytes, ..cfg.decompress }
}

/// base64 → gunzip when gzipped (every member, capped at [`payload_limits`]) → payload JSON,
/// for a payload inside an object (a Firehose or Kinesis record, itself under the record cap).
fn decode_awslogs(data: &str, cfg: &Config) -> Result<Vec<u8>, String> {
    let gz = cloudwatch::base64_decode(data).ok_or("not base64")?;
    let mut opened = decompress::open(&gz[..], payload_limits(cfg), false).map_err(|e| e.to_string())?;
    let mut json = Vec::new();
    opened.reader.read_to_end(&mut json).map_err(|e| {
        if decompress::is_bomb(&e) {
            format!("decompression refused: {e}")
        } else {
            format!("corrupt gzip: {e}")
        }
    })?;
    Ok(json)
}

/// Ingests a CloudWatch Logs subscription event delivered straight to the Lambda
/// (`{"awslogs":{"data":...}}`, `data` being the event's `awslogs.data`). The payload is streamed
/// like an object: gunzipped under the decompression caps (and at most the record cap in all),
/// split and parsed once. There is no S3 object, so its lake files are named from the payload's
/// owner, log group, stream and first and last event ids, and a redelivery replaces them.
pub fn ingest_awslogs(
    data: &str,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<ObjectReport, IngestError> {
    let digest = lake::object_stem("", "awslogs", data);
    let placeholder = format!("awslogs/{}", &digest[..16]);
    let Some(gz) = cloudwatch::base64_decode(data) else {
        return Err(IngestError::BadObject {
            uri: placeholder,
            kind: BadKind::Encoding,
            detail: "awslogs.data is not base64".into(),
        });
    };
    let capped = Config { decompress: payload_limits(cfg), ..cfg.clone() };
    ingest_stream(&gz[..], Naming::AwsLogs { placeholder }, lake, &capped, now)
}

/// A Firehose transformation event (`records[].data`), or a Kinesis record (`kinesis.data`).
#[derive(serde::Deserialize)]
struct Carrier {
    #[serde(default, alias = "awsRegion")]
    region: Option<String>,
    #[serde(default)]
    records: Vec<CarrierRecord>,
    #[serde(default)]
    kinesis: Option<CarrierRecord>,
}

#[derive(serde::Deserialize)]
struct CarrierRecord {
    data: String,
}

fn event_type_index() -> usize {
    static I: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *I.get_or_init(|| {
        trailwatch_core::schema::CLOUDTRAIL.iter().position(|c| c.name == "event_type").expect("schema has event_type")
    })
}

/// Maps a split error to the object's error: a dropped connection can be retried, the rest is
/// the content's fault.
fn split_error(uri: &str, e: SplitError) -> IngestError {
    match e {
        SplitError::Io { line, source } => io_error(uri, line, source),
        other => IngestError::BadObject { uri: uri.to_string(), kind: BadKind::Json, detail: other.to_string() },
    }
}

fn io_error(uri: &str, line: u64, source: std::io::Error) -> IngestError {
    let uri = uri.to_string();
    if is_transient_io(&source) {
        return IngestError::Interrupted { uri, line, detail: source.to_string() };
    }
    if decompress::is_bomb(&source) {
        return IngestError::BadObject { uri, kind: BadKind::Bomb, detail: source.to_string() };
    }
    // Line 0: the caller does not know the line (the stream failed before the splitter
    // counted any, or an export file's reader failed).
    let detail = match (source.kind(), line) {
        (std::io::ErrorKind::UnexpectedEof, 0) => "truncated (the stream ends mid-member)".to_string(),
        (std::io::ErrorKind::UnexpectedEof, _) => format!("truncated at line {line} (the stream ends mid-member)"),
        (_, 0) => source.to_string(),
        _ => format!("{source} (at line {line})"),
    };
    IngestError::BadObject { uri, kind: BadKind::Gzip, detail }
}

/// Which shape a JSON object has, judging by its members.
enum Shape {
    Payload,
    Datapoint,
    AwsLogs,
    /// A Firehose transformation event or a Kinesis record carrying payloads.
    Carrier,
    Digest,
    LookupRow,
    Record,
}

fn shape(raw: &RawValue) -> Shape {
    let Ok(obj) = serde_json::from_str::<RawObject>(raw.get()) else { return Shape::Record };
    let has = |k: &str| obj.0.iter().any(|(key, _)| key == k);
    if has("messageType") && has("logEvents") || has("messageType") && has("owner") {
        Shape::Payload
    } else if has("metric_stream_name") || (has("namespace") && has("metric_name") && has("timestamp")) {
        Shape::Datapoint
    } else if has("awslogs") {
        Shape::AwsLogs
    } else if has("kinesis") || has("records") && (has("deliveryStreamArn") || has("invocationId")) {
        Shape::Carrier
    } else if has("digestStartTime") || has("digestS3Object") || has("digestPublicKeyFingerprint") {
        Shape::Digest
    } else if has("CloudTrailEvent") {
        Shape::LookupRow
    } else {
        Shape::Record
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn looks_like_cloudtrail(bytes: &[u8]) -> bool {
    const KEYS: [&[u8]; 3] = [b"\"eventTime\"", b"\"eventName\"", b"\"eventSource\""];
    KEYS.iter().any(|k| bytes.windows(k.len()).any(|w| w == *k))
}

/// The (prefix, log group) an export-task key belongs to: the longest configured prefix.
fn export_log_group<'c>(cfg: &'c Config, key: &str) -> Option<&'c (String, String)> {
    cfg.export_log_groups.iter().filter(|(p, _)| key.starts_with(p.as_str())).max_by_key(|(p, _)| p.len())
}

/// The log stream of an export-task key `<prefix>/<task id>/<log stream>/000000.gz`; stream
/// names hold slashes of their own (`2024/01/02/[$LATEST]abc`).
fn export_stream<'k>(key: &'k str, prefix: &str) -> &'k str {
    let rest = key[prefix.len()..].trim_start_matches('/');
    let after_task = rest.split_once('/').map_or("", |(_, r)| r);
    after_task.rsplit_once('/').map_or("", |(stream, _)| stream)
}

/// Ingests a stream of bytes as the object `bucket`/`key`. `version` (an ETag) names its lake
/// files; without one the content's hash does. `now` is the processing time: records dated more
/// than `cfg.max_future_skew` after it are kept, counted and reported.
pub fn ingest_reader(
    raw: impl Read,
    bucket: &str,
    key: &str,
    version: Option<String>,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<ObjectReport, IngestError> {
    let naming = Naming::Object { bucket: bucket.to_string(), key: key.to_string(), version };
    ingest_stream(raw, naming, lake, cfg, now)
}

pub(crate) fn ingest_stream(
    raw: impl Read,
    naming: Naming,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<ObjectReport, IngestError> {
    let (bucket, key, awslogs) = match &naming {
        Naming::Object { bucket, key, .. } => (bucket.as_str(), key.as_str(), None),
        Naming::AwsLogs { placeholder } => ("", placeholder.as_str(), Some(AwsLogsName::default())),
    };
    let hash_content = matches!(naming, Naming::Object { version: None, .. });
    let uri = if bucket.is_empty() { key.to_string() } else { format!("s3://{bucket}/{key}") };
    let opened = decompress::open(raw, cfg.decompress, hash_content);
    let decompress::Opened { mut reader, encoding, hash } = opened.map_err(|e| io_error(&uri, 0, e))?;
    if encoding == Encoding::Empty {
        return Ok(ObjectReport::skipped(uri, "zero-byte object"));
    }
    let dir = writer::staging_dir(lake, &uri)?;
    let mut sinks = Sinks {
        lake,
        cfg,
        bucket,
        key: key.to_string(),
        uri: uri.clone(),
        awslogs,
        future: FutureCheck::new(now, cfg.max_future_skew),
        hints: cloudtrail_key_hints(key),
        key_region: key.split('/').find(|s| is_region(s)).map(str::to_string),
        cloudtrail: None,
        last_partition: None,
        invocations: None,
        metrics: None,
        rejects: RejectWriter::new(dir.path(), &uri),
        _dir: dir,
        recognised: 0,
        skipped: 0,
    };
    let head = reader.fill_buf().map_err(|e| io_error(&uri, 0, e))?;
    let head = &head[head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len())..];
    let seen = if cloudwatch::looks_like_export(head) {
        export_file(&mut reader, &mut sinks)?
    } else {
        match json_values(&mut reader, &mut sinks)? {
            Some(seen) => seen,
            None => return Ok(ObjectReport::skipped(uri, "CloudTrail digest file")),
        }
    };
    drop(reader);
    if seen == 0 {
        return Ok(ObjectReport::skipped(uri, "no records"));
    }
    if sinks.recognised == 0 {
        return Err(IngestError::BadObject {
            uri,
            kind: BadKind::NotCloudTrail,
            detail: format!(
                "{seen} JSON values, none a CloudTrail record, CloudWatch Logs payload or metric datapoint"
            ),
        });
    }
    let stem = match (&naming, sinks.awslogs.take()) {
        (Naming::AwsLogs { placeholder }, Some(name)) => {
            let key = name.key.as_deref().unwrap_or(placeholder);
            let version = format!("{}:{}", name.first.unwrap_or_default(), name.last.unwrap_or_default());
            lake::object_stem("", key, &version)
        }
        (Naming::Object { bucket, key, version }, _) => {
            lake::object_stem(bucket, key, &version.clone().or_else(|| hash.finish()).unwrap_or_default())
        }
        (Naming::AwsLogs { placeholder }, None) => lake::object_stem("", placeholder, ""),
    };
    sinks.commit(&stem)
}

/// Every JSON value of the stream, routed by shape. Returns how many values were seen, or `None`
/// for a digest file.
fn json_values(reader: &mut dyn BufRead, sinks: &mut Sinks) -> Result<Option<u64>, IngestError> {
    let cfg = sinks.cfg;
    let uri = sinks.uri.clone();
    let mut splitter = Splitter::new(reader, cfg.split);
    let mut buf = Vec::with_capacity(16 << 10);
    let mut valid_json = 0u64;
    let mut first_json_error = None;
    let mut kinesis_elements = None;
    // Records left to the copying path before the in-place one is tried again: one after a try
    // that stopped at the end of its window (the record cut there), more after the parser
    // declined a record, so input the fast path keeps declining costs little.
    let mut copied_next = 0u32;
    loop {
        if copied_next == 0 && sinks.recognised > 0 && kinesis_elements == Some(false) {
            let mut declined = false;
            let took = splitter.records_in_place(|text, _| sinks.cloudtrail_in_place(text, &mut declined)).map_err(
                |e| match e {
                    InPlaceError::Split(e) => split_error(&uri, e),
                    InPlaceError::Sink(e) => e,
                },
            )?;
            valid_json += took;
            copied_next = if declined || took == 0 { 16 } else { 1 };
        }
        copied_next = copied_next.saturating_sub(1);
        let Some(m) = splitter.next_record(&mut buf).map_err(|e| split_error(&uri, e))? else { break };
        if let Some(size) = m.oversized {
            let cap = cfg.split.max_record_bytes;
            sinks.reject(
                Some(m.index),
                Some(m.line),
                &format!("record of {size} bytes exceeds the cap of {cap} bytes"),
                None,
            )?;
            continue;
        }
        if m.too_deep {
            sinks.reject(
                Some(m.index),
                Some(m.line),
                &format!("record nests deeper than {} levels", cfg.split.max_depth),
                None,
            )?;
            continue;
        }
        if sinks.recognised == 0 && looks_like_cloudtrail(&buf) {
            sinks.recognised += 1;
        }
        // Array elements are records (or Kinesis records): parsed once, straight into a row.
        // Whether array elements are Kinesis records is decided once, by the first element.
        let kinesis = !m.top_level && *kinesis_elements.get_or_insert_with(|| contains(&buf, b"\"kinesis\""));
        if !m.top_level && !kinesis {
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t,
                Err(e) => {
                    first_json_error.get_or_insert_with(|| format!("line {}: invalid UTF-8", m.line));
                    sinks.reject(Some(m.index), Some(m.line), &format!("invalid JSON: not UTF-8 ({e})"), Some(&buf))?;
                    continue;
                }
            };
            if sinks.cloudtrail_checked(text, &m, None)? {
                valid_json += 1;
            } else {
                first_json_error.get_or_insert_with(|| format!("line {}: not JSON", m.line));
            }
            continue;
        }
        let raw: &RawValue = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                first_json_error.get_or_insert_with(|| format!("line {}: {e}", m.line));
                sinks.reject(Some(m.index), Some(m.line), &format!("invalid JSON: {e}"), Some(&buf))?;
                continue;
            }
        };
        valid_json += 1;
        let bad = |what: &str, e: serde_json::Error| format!("{what}: {e}");
        let shape = shape(raw);
        if !m.top_level && !matches!(shape, Shape::Carrier) {
            sinks.cloudtrail(raw.get(), &m, None)?;
            continue;
        }
        if matches!(shape, Shape::Payload | Shape::Datapoint | Shape::AwsLogs | Shape::Carrier) {
            // Recognised, even when it turns out malformed and is rejected below.
            sinks.recognised += 1;
        }
        match shape {
            Shape::Digest if m.index == 0 => return Ok(None),
            Shape::Payload => match parse_payload::<Payload>(raw.get().as_bytes()) {
                Ok(p) => sinks.payload(&p, &m)?,
                Err(e) => sinks.reject(Some(m.index), Some(m.line), &bad("CloudWatch Logs payload", e), Some(&buf))?,
            },
            Shape::Datapoint => match serde_json::from_str::<Datapoint>(raw.get()) {
                Ok(d) => sinks.datapoint(&d, buf.len())?,
                Err(e) => sinks.reject(Some(m.index), Some(m.line), &bad("metric datapoint", e), Some(&buf))?,
            },
            Shape::AwsLogs => match serde_json::from_str::<AwsLogsEvent>(raw.get()) {
                Ok(ev) => sinks.encoded_payload("awslogs.data", &ev.awslogs.data, None, &m)?,
                Err(e) => sinks.reject(Some(m.index), Some(m.line), &bad("awslogs event", e), Some(&buf))?,
            },
            Shape::Carrier => match serde_json::from_str::<Carrier>(raw.get()) {
                Ok(c) => {
                    for r in c.records.iter().chain(&c.kinesis) {
                        sinks.encoded_payload("record data", &r.data, c.region.as_deref(), &m)?;
                    }
                }
                Err(e) => {
                    sinks.reject(Some(m.index), Some(m.line), &bad("Firehose or Kinesis record", e), Some(&buf))?
                }
            },
            Shape::LookupRow => {
                // A LookupEvents export row carries the record as a JSON string.
                sinks.recognised += 1;
                let inner = serde_json::from_str::<RawObject>(raw.get())
                    .ok()
                    .and_then(|o| o.0.into_iter().find(|(k, _)| k == "CloudTrailEvent"))
                    .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok());
                match inner.as_deref().map(serde_json::from_str::<&RawValue>) {
                    Some(Ok(r)) => sinks.cloudtrail(r.get(), &m, None)?,
                    _ => sinks.reject(Some(m.index), Some(m.line), "CloudTrailEvent: not a JSON record", Some(&buf))?,
                }
            }
            Shape::Digest | Shape::Record => sinks.cloudtrail(raw.get(), &m, None)?,
        }
    }
    if valid_json == 0 {
        if let Some(first) = first_json_error {
            return Err(IngestError::BadObject {
                uri,
                kind: BadKind::Json,
                detail: format!("no value is valid JSON ({first})"),
            });
        }
    }
    Ok(Some(splitter.records_seen()))
}

/// Events a chunk of an export file holds before it is parsed: cut just before a START line, so
/// an invocation's REPORT and the error lines after it stay together.
const EXPORT_CHUNK: usize = 8192;

fn export_file(reader: &mut dyn BufRead, sinks: &mut Sinks) -> Result<u64, IngestError> {
    let uri = sinks.uri.clone();
    let key = sinks.key.to_string();
    let Some((prefix, group)) = export_log_group(sinks.cfg, &key).cloned() else {
        return Err(IngestError::BadObject {
            uri,
            kind: BadKind::Json,
            detail: "a CloudWatch Logs export-task file, but no log group is configured for its key prefix (--export-log-group PREFIX=GROUP)".into(),
        });
    };
    let stream = export_stream(&key, &prefix).to_string();
    // The mapping may name the account as `ACCOUNT:GROUP` (log group names hold no colon);
    // else an account id among the key's segments; else `unknown`.
    let (account, group) = match group.split_once(':') {
        Some((a, g)) => (Some(a.to_string()), g.to_string()),
        None => (None, group),
    };
    let owner = account
        .or_else(|| key.split('/').find(|s| lake::is_account_id(s)).map(str::to_string))
        .unwrap_or_else(|| lake::UNKNOWN.to_string());
    let mut lines = ExportReader::new(reader);
    let mut chunk: Vec<(String, i64, String)> = Vec::new();
    let mut seen = 0;
    let meta = RecordMeta { index: 0, line: 0, top_level: true, oversized: None, too_deep: false };
    loop {
        let next = lines.next_message().map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData
                if e.get_ref().is_some_and(|i| !i.is::<decompress::BombError>()) && !is_transient_io(&e) =>
            {
                IngestError::BadObject { uri: uri.clone(), kind: BadKind::Json, detail: e.to_string() }
            }
            _ => io_error(&uri, 0, e),
        })?;
        let done = next.is_none();
        if let Some(l) = next {
            seen += 1;
            chunk.push((format!("{key}:{}", l.line), l.timestamp, l.message));
        }
        if chunk.len() >= EXPORT_CHUNK || done {
            let cut = if done {
                chunk.len()
            } else {
                chunk
                    .iter()
                    .rposition(|(_, _, m)| m.starts_with("START ") || m.contains("\"platform.start\""))
                    .filter(|&i| i > 0)
                    .unwrap_or(chunk.len())
            };
            let rest = chunk.split_off(cut);
            let events: Vec<LogEvent> =
                chunk.iter().map(|(id, ts, msg)| LogEvent { id, timestamp: *ts, message: msg }).collect();
            sinks.log_events(&owner, &group, &stream, &events, &meta)?;
            chunk = rest;
        }
        if done {
            return Ok(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_keys_name_task_and_stream() {
        let key = "exportedlogs/0b1c2d3e/2024/01/02/[$LATEST]0a1b2c3d/000000.gz";
        assert_eq!(export_stream(key, "exportedlogs"), "2024/01/02/[$LATEST]0a1b2c3d");
        assert_eq!(export_stream(key, "exportedlogs/"), "2024/01/02/[$LATEST]0a1b2c3d");
        assert_eq!(export_stream("p/task/000000.gz", "p"), "");
        let cfg = Config {
            export_log_groups: vec![("exp".into(), "/a".into()), ("exportedlogs".into(), "/b".into())],
            ..Config::default()
        };
        assert_eq!(export_log_group(&cfg, key).map(|(_, g)| g.as_str()), Some("/b"));
    }

    #[test]
    fn future_dated_means_beyond_the_skew() {
        let now_ms = 1_700_000_000_000;
        let mut f = FutureCheck::new(now_ms, Duration::from_secs(300));
        for t in [now_ms - 86_400_000, now_ms, now_ms + 300_000] {
            f.check(t);
        }
        assert_eq!((f.records, f.max), (0, None), "at most the skew ahead is not future-dated");
        f.check(now_ms + 300_001);
        f.check(now_ms + 3_600_000);
        f.check(now_ms + 400_000);
        assert_eq!((f.records, f.max), (3, Some(now_ms + 3_600_000)));
        let mut f = FutureCheck::new(now_ms, Duration::ZERO);
        f.check(now_ms + 1);
        assert_eq!(f.records, 1);
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        bytes
            .chunks(3)
            .flat_map(|c| {
                let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
                (0..4).map(move |i| if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' })
            })
            .collect()
    }

    #[test]
    fn an_awslogs_payload_is_parsed_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = trailwatch_core::store::LocalLake::new(dir.path());
        let payload = serde_json::json!({
            "messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/f",
            "logStream": "2024/01/02/[$LATEST]abc", "subscriptionFilters": ["x"],
            "logEvents": [
                {"id": "1", "timestamp": 1704153600000i64, "message": "START RequestId: r1 Version: $LATEST\n"},
                {"id": "2", "timestamp": 1704153600100i64, "message": "REPORT RequestId: r1\tDuration: 100.00 ms\tBilled Duration: 100 ms\tMemory Size: 128 MB\tMax Memory Used: 64 MB\t\n"}
            ]
        });
        let data = base64(&gz(&serde_json::to_vec(&payload).unwrap()));
        let before = PAYLOAD_PARSES.with(|c| c.get());
        let r = ingest_awslogs(&data, &lake, &Config::default(), trailwatch_core::time::wall_clock_millis()).unwrap();
        assert_eq!(r.records, 1, "{r:?}");
        assert_eq!(PAYLOAD_PARSES.with(|c| c.get()) - before, 1);
        assert_eq!(r.uri, "awslogs/111122223333/aws/lambda/f/2024/01/02/[$LATEST]abc");
        assert_eq!(
            r.lake_keys,
            vec![format!(
                "lambda_invocations/account_id=111122223333/region=unknown/date=2024-01-02/{}.parquet",
                lake::object_stem("", &r.uri, "1:2")
            )]
        );
    }
}
