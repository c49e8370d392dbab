//! The detect Lambda's logic, generic over small traits so tests can run it against any S3 and
//! DynamoDB endpoint.
//!
//! Each invocation handles the lake objects its event names. They are grouped by shard
//! (account and region, from the Hive path), and each shard is loaded, updated and stored with
//! an optimistic conditional write. When another invocation stored the shard in between, the
//! write is refused and the shard is recomputed from the newer state, so concurrent invocations
//! never lose an update. A scheduled sweep advances every shard against the deployment's clock,
//! so an account that stops logging is noticed although none of its objects arrive.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use trailwatch_core::finding::Finding;
use trailwatch_core::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE};
use trailwatch_core::notification::decode_event;
use trailwatch_core::store::{ObjectRef, ObjectSource};
use trailwatch_core::time::EpochMillis;

use crate::config::DetectConfig;
use crate::engine::{Engine, Shard};
use crate::error::DetectError;
use crate::event::{Event, Table};
use crate::read::{partition_of, read_file};
use crate::run::prune_manifest;
use crate::stats::HashKey;

/// Shard state with optimistic concurrency.
pub trait ShardStore: Sync {
    /// The stored shard and its version, or `None` for a shard never stored.
    fn load(&self, account: &str, region: &str) -> Result<Option<(u64, Shard)>, DetectError>;
    /// Stores `shard` as the version after `expected` only if the stored version is still
    /// `expected` (`None`: only if absent). `Ok(false)` when another writer got there first.
    fn save(&self, shard: &Shard, expected: Option<u64>) -> Result<bool, DetectError>;
    /// Raises the deployment's clock (newest event time anywhere) to `t` and returns it.
    fn raise_clock(&self, t: Option<EpochMillis>) -> Result<Option<EpochMillis>, DetectError>;
    /// Every stored shard, for the sweep.
    fn shards(&self) -> Result<Vec<(String, String)>, DetectError>;
    /// The deployment's hash key, made once (by whichever invocation comes first) and kept.
    fn hash_key(&self) -> Result<HashKey, DetectError>;
}

/// Where findings go once computed: the lake's findings table, then alert. Called before the
/// shard is stored, so a crash re-sends (same ids) rather than loses. Also where what cannot be
/// read is recorded, with the reason, so nothing is dropped without a trace.
pub trait Deliver: Sync {
    fn deliver(&self, findings: &[Finding]) -> Result<(), DetectError>;
    /// Records `what` (a lake object's URI, or an SQS message) as unreadable, with `reason`,
    /// under the lake's `_rejected/` folder.
    fn reject(&self, what: &str, reason: &str) -> Result<(), DetectError>;
}

/// What one invocation did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects_read: u64,
    pub objects_unchanged: u64,
    /// Objects that are not lake table files (findings, rejects) or not Parquet.
    pub objects_ignored: u64,
    /// Lake files that could not be decoded, and messages that name no object: recorded under
    /// `_rejected/` with the reason, then acknowledged (a retry cannot fix them).
    pub objects_bad: u64,
    /// Objects or shards that failed transiently: their SQS messages are answered as batch item
    /// failures (or the invocation fails, without SQS) so they are tried again.
    pub objects_retry: u64,
    pub shards: u64,
    /// Conditional writes refused because another invocation stored the shard first.
    pub conflicts: u64,
    pub findings: u64,
    /// Records claiming times ahead of the wall clock (reported as `event_time_skew`).
    pub future_records: u64,
    /// The deployment's event-time clock after this event (the newest time two sources agree
    /// on), when there is one: the wall clock minus it is how far detection lags.
    pub clock: Option<EpochMillis>,
    /// SQS message ids to answer as batch item failures.
    #[serde(skip)]
    pub failed_messages: Vec<String>,
    /// Whether the event came from SQS (answered with a partial batch response).
    #[serde(skip)]
    pub from_sqs: bool,
}

impl Summary {
    /// Seconds from the deployment's clock to `now` (never negative), if the clock is known.
    pub fn lag_seconds(&self, now: EpochMillis) -> Option<f64> {
        self.clock.map(|c| (now - c).max(0) as f64 / 1000.0)
    }

    /// The reply for Lambda: a partial batch response for SQS (`batchItemFailures`), else the
    /// summary itself.
    pub fn reply(&self) -> Value {
        if self.from_sqs {
            trailwatch_core::batch::BatchResponse::new(self.failed_messages.iter().cloned()).to_value()
        } else {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// A lake object of a table, with its key relative to the lake root and the SQS message that
/// named it.
struct LakeObject {
    obj: ObjectRef,
    rel: String,
    table: Table,
    message: Option<String>,
}

/// Attempts per shard before giving up (and letting Lambda retry the event).
const MAX_ATTEMPTS: u32 = 16;

fn table_of(rel: &str) -> Option<Table> {
    match rel.split('/').next()? {
        CLOUDTRAIL_TABLE => Some(Table::CloudTrail),
        LAMBDA_INVOCATIONS_TABLE => Some(Table::Invocations),
        LAMBDA_METRICS_TABLE => Some(Table::Metrics),
        _ => None,
    }
}

fn version_of(obj: &ObjectRef, etag: Option<String>) -> String {
    etag.or_else(|| obj.etag.clone()).map(|e| e.trim_matches('"').to_string()).unwrap_or_default()
}

/// Handles a Lambda event: S3 notifications of lake objects (direct, via SQS, SNS or
/// EventBridge), or a sweep (`{"sweep": true}`, or an EventBridge scheduled event). `now` is the
/// wall clock. Without SQS, a transient failure fails the invocation (after the rest was done)
/// so Lambda retries it; with SQS, only the failed messages come back.
pub fn handle_event(
    event: &Value,
    lake_prefix: &str,
    src: &dyn ObjectSource,
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
    now: EpochMillis,
) -> Result<Summary, DetectError> {
    let sweep = event.get("sweep").and_then(Value::as_bool) == Some(true)
        || event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if sweep {
        return sweep_all(store, out, cfg, now);
    }
    let units = decode_event(event);
    let from_sqs = units.iter().any(|u| u.message_id.is_some());
    let mut summary = Summary { from_sqs, ..Summary::default() };
    let mut objects = Vec::new();
    for unit in units {
        match unit.objects {
            Ok(o) => objects.extend(o.into_iter().map(|o| (o, unit.message_id.clone()))),
            Err(why) => {
                let what = match &unit.message_id {
                    Some(id) => format!("sqs message {id}"),
                    None => "event".to_string(),
                };
                tracing::error!(%what, reason = %why, "unreadable notification");
                summary.objects_bad += 1;
                if let Err(e) = out.reject(&what, &why) {
                    tracing::warn!(%what, error = %e, "recording the rejection failed; will retry");
                    summary.objects_retry += 1;
                    summary.failed_messages.extend(unit.message_id);
                }
            }
        }
    }
    let first_error = handle_named(&objects, lake_prefix, src, store, out, cfg, now, &mut summary);
    summary.failed_messages.sort();
    summary.failed_messages.dedup();
    match first_error {
        Some(e) if !from_sqs => Err(e),
        _ => Ok(summary),
    }
}

/// Reads the new lake objects and updates their shards.
pub fn handle_objects(
    objects: &[ObjectRef],
    lake_prefix: &str,
    src: &dyn ObjectSource,
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
    now: EpochMillis,
) -> Result<Summary, DetectError> {
    let named: Vec<(ObjectRef, Option<String>)> = objects.iter().map(|o| (o.clone(), None)).collect();
    let mut summary = Summary::default();
    match handle_named(&named, lake_prefix, src, store, out, cfg, now, &mut summary) {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// A file read for one shard: its key, version, events (or why it could not be decoded), and
/// the message that named it.
struct ReadFile {
    rel: String,
    version: String,
    events: Result<Vec<Event<'static>>, String>,
    source: u64,
}

/// Does the work of [`handle_event`]; returns the first error that should make the caller try
/// again (every shard is still attempted), having noted the failed messages in `summary`.
#[allow(clippy::too_many_arguments)]
fn handle_named(
    objects: &[(ObjectRef, Option<String>)],
    lake_prefix: &str,
    src: &dyn ObjectSource,
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
    now: EpochMillis,
    summary: &mut Summary,
) -> Option<DetectError> {
    let mut first_error: Option<DetectError> = None;
    let mut by_shard: BTreeMap<(String, String), Vec<LakeObject>> = BTreeMap::new();
    for (obj, message) in objects {
        // S3 keys have no leading `/` (a prefix given as `/lake/` still means `lake/`); local
        // paths do: both compare without it.
        let rel =
            trailwatch_core::lake::relative_key(&obj.key, lake_prefix).unwrap_or(&obj.key).trim_start_matches('/');
        // A compacted file's rows were read as the files it merged (the notice of its put is
        // not new data).
        let fresh = obj.key.ends_with(".parquet") && !trailwatch_core::lake::is_compacted(rel);
        match (table_of(rel), partition_of(rel), fresh) {
            (Some(table), Some((a, r, _)), true) => by_shard.entry((a, r)).or_default().push(LakeObject {
                obj: obj.clone(),
                rel: rel.to_string(),
                table,
                message: message.clone(),
            }),
            _ => summary.objects_ignored += 1,
        }
    }
    for ((account, region), objs) in by_shard {
        summary.shards += 1;
        // Read each object once; retries after a conflict only re-run the detectors.
        let mut read: Vec<ReadFile> = Vec::new();
        let mut shard_messages: Vec<String> = Vec::new();
        for o in &objs {
            match read_object(o, &account, &region, src, out, &cfg.ruleset) {
                Ok(Some(r)) => {
                    shard_messages.extend(o.message.clone());
                    if r.events.is_err() {
                        summary.objects_bad += 1;
                    }
                    read.push(r);
                }
                // Gone for good (deleted since the notice): recorded, nothing to read.
                Ok(None) => summary.objects_bad += 1,
                Err(e) => {
                    tracing::warn!(object = %o.obj.uri(), error = %e, "lake object failed, will be retried");
                    summary.objects_retry += 1;
                    summary.failed_messages.extend(o.message.clone());
                    first_error.get_or_insert(e);
                }
            }
        }
        if read.is_empty() {
            continue;
        }
        if let Err(e) = update_shard(&account, &region, &read, store, out, cfg, now, summary) {
            tracing::error!(shard = %format!("{account}/{region}"), error = %e, retryable = e.is_retryable(), "shard update failed, will be retried");
            summary.objects_retry += read.len() as u64;
            summary.failed_messages.extend(shard_messages);
            first_error.get_or_insert(e);
        }
    }
    first_error
}

/// Reads one lake object. A file that does not decode is recorded under `_rejected/` and comes
/// back with its reason (the manifest then marks it read); `Ok(None)` for an object that is
/// gone; `Err` when trying again can help (or the rejection could not be recorded).
fn read_object(
    o: &LakeObject,
    account: &str,
    region: &str,
    src: &dyn ObjectSource,
    out: &dyn Deliver,
    rules: &crate::sigma::Rules,
) -> Result<Option<ReadFile>, DetectError> {
    let uri = o.obj.uri();
    let body = match src.open(&o.obj) {
        Ok(b) => b,
        Err(e) if e.retryable => return Err(e.into()),
        Err(e) => {
            tracing::error!(object = %uri, error = %e, "lake object cannot be read");
            out.reject(&uri, &e.to_string())?;
            return Ok(None);
        }
    };
    let version = version_of(&o.obj, body.etag.clone());
    let mut buf = Vec::new();
    let mut r = body.reader;
    std::io::Read::read_to_end(&mut r, &mut buf).map_err(|e| {
        DetectError::Store(trailwatch_core::store::StoreError {
            op: "read",
            uri: uri.clone(),
            message: e.to_string(),
            retryable: true,
        })
    })?;
    let mut events = Vec::new();
    let events = match read_file(bytes::Bytes::from(buf), o.table, account, region, rules, &mut events) {
        Ok(()) => Ok(events),
        Err(why) => {
            tracing::error!(object = %uri, reason = %why, "bad lake file");
            out.reject(&uri, &format!("not a readable lake file: {why}"))?;
            Err(why)
        }
    };
    Ok(Some(ReadFile { rel: o.rel.clone(), version, events, source: crate::run::source_of(&o.rel) }))
}

/// Loads, updates and stores one shard with an optimistic conditional write, recomputing from
/// the newer state when another invocation stored it in between.
#[allow(clippy::too_many_arguments)]
fn update_shard(
    account: &str,
    region: &str,
    read: &[ReadFile],
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
    now: EpochMillis,
    summary: &mut Summary,
) -> Result<(), DetectError> {
    let key = store.hash_key()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let clock = store.raise_clock(None)?;
        let (expected, mut shard) = match store.load(account, region)? {
            Some((v, s)) => (Some(v), s),
            None => (None, Shard::new(account, region)),
        };
        let mut events: Vec<(u64, &Event)> = Vec::new();
        let mut fresh = Vec::new();
        for r in read {
            if shard.manifest.get(&r.rel) == Some(&r.version) {
                continue;
            }
            fresh.push((r.rel.clone(), r.version.clone()));
            if let Ok(ev) = &r.events {
                events.extend(ev.iter().map(|e| (r.source, e)));
            }
        }
        if fresh.is_empty() {
            summary.objects_unchanged += read.len() as u64;
            return Ok(());
        }
        events.sort_by_key(|(_, e)| e.time());
        for (rel, version) in &fresh {
            shard.manifest.insert(rel.clone(), version.clone());
        }
        let future_before = shard.counters.future;
        let mut engine = Engine::new([shard], clock).with_now(now).with_key(key);
        for (source, e) in &events {
            engine.observe_from(cfg, e, *source);
        }
        engine.advance(cfg);
        let findings = engine.take_findings(cfg);
        let (confirmed, effective) = (engine.confirmed, engine.clock());
        let mut shard = engine.shards.into_values().next().expect("one shard");
        if let Some(c) = effective {
            prune_manifest(&mut shard, c);
        }
        out.deliver(&findings)?;
        if store.save(&shard, expected)? {
            let clock = store.raise_clock(confirmed)?;
            summary.clock = summary.clock.max(clock);
            summary.objects_read += fresh.len() as u64;
            summary.objects_unchanged += (read.len() - fresh.len()) as u64;
            summary.findings += findings.len() as u64;
            summary.future_records += shard.counters.future - future_before;
            return Ok(());
        }
        summary.conflicts += 1;
        if attempt >= MAX_ATTEMPTS {
            return Err(DetectError::State {
                location: format!("shard {account}/{region}"),
                message: format!("{attempt} conflicting writes in a row"),
                retryable: true,
            });
        }
    }
}

/// Advances every shard against the deployment's clock: silence is noticed although the silent
/// shard has no new objects.
pub fn sweep_all(
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
    now: EpochMillis,
) -> Result<Summary, DetectError> {
    let clock = store.raise_clock(None)?;
    let mut summary = Summary { clock, ..Summary::default() };
    let key = store.hash_key()?;
    for (account, region) in store.shards()? {
        summary.shards += 1;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some((v, shard)) = store.load(&account, &region)? else { break };
            let before = shard.size();
            let mut engine = Engine::new([shard], clock).with_now(now).with_key(key);
            engine.advance(cfg);
            let findings = engine.take_findings(cfg);
            let shard = engine.shards.into_values().next().expect("one shard");
            // Nothing to tell and nothing forgotten: no write. Evicted keys and pruned dedup
            // buckets are saved, so an idle shard's state shrinks.
            if findings.is_empty() && shard.size() == before {
                break;
            }
            out.deliver(&findings)?;
            if store.save(&shard, Some(v))? {
                summary.findings += findings.len() as u64;
                break;
            }
            summary.conflicts += 1;
            if attempt == MAX_ATTEMPTS {
                return Err(DetectError::State {
                    location: format!("shard {account}/{region}"),
                    message: format!("{attempt} conflicting writes in a row"),
                    retryable: true,
                });
            }
        }
    }
    Ok(summary)
}
