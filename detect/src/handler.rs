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
}

/// Where findings go once computed: the lake's findings table, then alert. Called before the
/// shard is stored, so a crash re-sends (same ids) rather than loses.
pub trait Deliver: Sync {
    fn deliver(&self, findings: &[Finding]) -> Result<(), DetectError>;
}

/// What one invocation did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects_read: u64,
    pub objects_unchanged: u64,
    /// Objects that are not lake table files (findings, rejects) or not Parquet.
    pub objects_ignored: u64,
    /// Lake files that could not be decoded: recorded as read, with the reason logged.
    pub objects_bad: u64,
    pub shards: u64,
    /// Conditional writes refused because another invocation stored the shard first.
    pub conflicts: u64,
    pub findings: u64,
}

/// A lake object of a table, with its key relative to the lake root.
type LakeObject = (ObjectRef, String, Table);

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
/// EventBridge), or a sweep (`{"sweep": true}`, or an EventBridge scheduled event).
pub fn handle_event(
    event: &Value,
    lake_prefix: &str,
    src: &dyn ObjectSource,
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
) -> Result<Summary, DetectError> {
    let sweep = event.get("sweep").and_then(Value::as_bool) == Some(true)
        || event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if sweep {
        return sweep_all(store, out, cfg);
    }
    let mut objects = Vec::new();
    for unit in decode_event(event) {
        match unit.objects {
            Ok(o) => objects.extend(o),
            Err(why) => tracing::warn!(reason = %why, "event unit ignored"),
        }
    }
    handle_objects(&objects, lake_prefix, src, store, out, cfg)
}

/// Reads the new lake objects and updates their shards.
pub fn handle_objects(
    objects: &[ObjectRef],
    lake_prefix: &str,
    src: &dyn ObjectSource,
    store: &dyn ShardStore,
    out: &dyn Deliver,
    cfg: &DetectConfig,
) -> Result<Summary, DetectError> {
    let mut summary = Summary::default();
    let prefix = lake_prefix.trim_matches('/');
    let mut by_shard: BTreeMap<(String, String), Vec<LakeObject>> = BTreeMap::new();
    for obj in objects {
        let rel = obj.key.strip_prefix(prefix).unwrap_or(&obj.key).trim_start_matches('/');
        match (table_of(rel), partition_of(rel), obj.key.ends_with(".parquet")) {
            (Some(t), Some((a, r, _)), true) => {
                by_shard.entry((a, r)).or_default().push((obj.clone(), rel.to_string(), t))
            }
            _ => summary.objects_ignored += 1,
        }
    }
    for ((account, region), objs) in by_shard {
        summary.shards += 1;
        // Read each object once; retries after a conflict only re-run the detectors.
        let mut read: Vec<(String, String, Result<Vec<Event>, String>)> = Vec::new();
        for (obj, rel, table) in &objs {
            let body = src.open(obj)?;
            let version = version_of(obj, body.etag.clone());
            let mut buf = Vec::new();
            let mut r = body.reader;
            std::io::Read::read_to_end(&mut r, &mut buf).map_err(|e| {
                DetectError::Store(trailwatch_core::store::StoreError {
                    op: "read",
                    uri: obj.uri(),
                    message: e.to_string(),
                    retryable: true,
                })
            })?;
            let mut events = Vec::new();
            let res = read_file(bytes::Bytes::from(buf), *table, &account, &region, &mut events).map(|_| events);
            if let Err(why) = &res {
                tracing::error!(object = %obj.uri(), reason = %why, "bad lake file");
            }
            read.push((rel.clone(), version, res));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let clock = store.raise_clock(None)?;
            let (expected, mut shard) = match store.load(&account, &region)? {
                Some((v, s)) => (Some(v), s),
                None => (None, Shard::new(&account, &region)),
            };
            let mut events: Vec<&Event> = Vec::new();
            let mut fresh = Vec::new();
            for (rel, version, res) in &read {
                if shard.manifest.get(rel) == Some(version) {
                    continue;
                }
                fresh.push((rel.clone(), version.clone()));
                if let Ok(ev) = res {
                    events.extend(ev.iter());
                }
            }
            if fresh.is_empty() {
                summary.objects_unchanged += read.len() as u64;
                break;
            }
            events.sort_by_key(|e| e.time());
            for (rel, version) in &fresh {
                shard.manifest.insert(rel.clone(), version.clone());
            }
            let mut engine = Engine::new([shard], clock);
            for e in &events {
                engine.observe(cfg, e);
            }
            engine.advance(cfg);
            let findings = engine.take_findings(cfg);
            let clock = engine.clock;
            let mut shard = engine.shards.into_values().next().expect("one shard");
            if let Some(c) = clock {
                prune_manifest(&mut shard, c);
            }
            out.deliver(&findings)?;
            if store.save(&shard, expected)? {
                store.raise_clock(clock)?;
                summary.objects_read += fresh.len() as u64;
                summary.objects_unchanged += (read.len() - fresh.len()) as u64;
                summary.objects_bad += read.iter().filter(|(_, _, r)| r.is_err()).count() as u64;
                summary.findings += findings.len() as u64;
                break;
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
    Ok(summary)
}

/// Advances every shard against the deployment's clock: silence is noticed although the silent
/// shard has no new objects.
pub fn sweep_all(store: &dyn ShardStore, out: &dyn Deliver, cfg: &DetectConfig) -> Result<Summary, DetectError> {
    let mut summary = Summary::default();
    let clock = store.raise_clock(None)?;
    for (account, region) in store.shards()? {
        summary.shards += 1;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some((v, shard)) = store.load(&account, &region)? else { break };
            let mut engine = Engine::new([shard], clock);
            engine.advance(cfg);
            let findings = engine.take_findings(cfg);
            let shard = engine.shards.into_values().next().expect("one shard");
            if findings.is_empty() {
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
