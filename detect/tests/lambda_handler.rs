//! The detect Lambda's handler on what goes wrong: an unreadable lake file is recorded under
//! `_rejected/` and marked read, a transient failure comes back as that SQS message's batch
//! item failure (or fails the invocation without SQS), and the sweep saves evictions although
//! it found nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use trailwatch_core::finding::Finding;
use trailwatch_core::store::{LocalFiles, ObjectBody, ObjectRef, ObjectSource, StoreError};
use trailwatch_core::time::EpochMillis;
use trailwatch_detect::detectors::api::ApiKey;
use trailwatch_detect::handler::{handle_event, Deliver, ShardStore};
use trailwatch_detect::stats::HashKey;
use trailwatch_detect::{DetectConfig, DetectError, Shard};

const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

#[derive(Default)]
struct Mem {
    shards: Mutex<HashMap<(String, String), (u64, Shard)>>,
    clock: Mutex<Option<EpochMillis>>,
    saves: Mutex<u64>,
}

impl ShardStore for Mem {
    fn load(&self, account: &str, region: &str) -> Result<Option<(u64, Shard)>, DetectError> {
        Ok(self.shards.lock().unwrap().get(&(account.into(), region.into())).cloned())
    }
    fn save(&self, shard: &Shard, expected: Option<u64>) -> Result<bool, DetectError> {
        let mut m = self.shards.lock().unwrap();
        let k = (shard.account.clone(), shard.region.clone());
        if m.get(&k).map(|(v, _)| *v) != expected {
            return Ok(false);
        }
        m.insert(k, (expected.map_or(1, |v| v + 1), shard.clone()));
        *self.saves.lock().unwrap() += 1;
        Ok(true)
    }
    fn raise_clock(&self, t: Option<EpochMillis>) -> Result<Option<EpochMillis>, DetectError> {
        let mut c = self.clock.lock().unwrap();
        if let Some(t) = t {
            *c = Some(c.map_or(t, |x| x.max(t)));
        }
        Ok(*c)
    }
    fn shards(&self) -> Result<Vec<(String, String)>, DetectError> {
        Ok(self.shards.lock().unwrap().keys().cloned().collect())
    }
    fn hash_key(&self) -> Result<HashKey, DetectError> {
        Ok(HashKey::new(1, 2))
    }
}

#[derive(Default)]
struct Out {
    findings: Mutex<Vec<Finding>>,
    rejects: Mutex<Vec<(String, String)>>,
}

impl Deliver for Out {
    fn deliver(&self, findings: &[Finding]) -> Result<(), DetectError> {
        self.findings.lock().unwrap().extend_from_slice(findings);
        Ok(())
    }
    fn reject(&self, what: &str, reason: &str) -> Result<(), DetectError> {
        self.rejects.lock().unwrap().push((what.into(), reason.into()));
        Ok(())
    }
}

/// Local files, except that keys containing `flaky` fail as the network would.
struct Flaky;

impl ObjectSource for Flaky {
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError> {
        if obj.key.contains("flaky") {
            return Err(StoreError { op: "get", uri: obj.uri(), message: "connection reset".into(), retryable: true });
        }
        LocalFiles.open(obj)
    }
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError> {
        LocalFiles.list(bucket, prefix)
    }
}

fn sqs(messages: &[(&str, Value)]) -> Value {
    json!({ "Records": messages.iter().map(|(id, body)| json!({
        "messageId": id,
        "eventSource": "aws:sqs",
        "body": body.to_string(),
    })).collect::<Vec<_>>() })
}

fn s3_notice(key: &str) -> Value {
    json!({ "Records": [{ "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": { "bucket": { "name": "" }, "object": { "key": key } } }] })
}

#[test]
fn bad_files_are_recorded_and_transient_failures_come_back_per_message() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().to_str().unwrap().to_string();
    let part = "cloudtrail/account_id=111122223333/region=eu-west-1/date=2026-01-05";
    std::fs::create_dir_all(tmp.path().join(part)).unwrap();
    let bad = format!("{lake}/{part}/0123abcd.parquet");
    std::fs::write(&bad, b"PAR1 this is not parquet").unwrap();
    let flaky = format!("{lake}/{part}/flaky.parquet");
    std::fs::write(&flaky, b"never read").unwrap();
    let gone = format!("{lake}/{part}/gone.parquet");

    let (store, out, cfg) = (Mem::default(), Out::default(), DetectConfig::default());
    let event = sqs(&[
        ("m-bad", s3_notice(&bad)),
        ("m-flaky", s3_notice(&flaky)),
        ("m-gone", s3_notice(&gone)),
        ("m-garbage", json!({"hello": "world"})),
    ]);
    let s = handle_event(&event, &lake, &Flaky, &store, &out, &cfg, NOW).unwrap();
    assert_eq!(s.failed_messages, vec!["m-flaky".to_string()]);
    assert_eq!(s.reply(), json!({ "batchItemFailures": [{ "itemIdentifier": "m-flaky" }] }));
    assert_eq!((s.objects_bad, s.objects_retry, s.objects_read), (3, 1, 1));
    let rejects = out.rejects.lock().unwrap().clone();
    let named: Vec<&str> = rejects.iter().map(|(w, _)| w.as_str()).collect();
    assert!(named.contains(&bad.as_str()) && named.contains(&gone.as_str()), "{rejects:?}");
    assert!(named.contains(&"sqs message m-garbage"), "{rejects:?}");
    assert!(rejects.iter().find(|(w, _)| *w == bad).unwrap().1.contains("not a readable lake file"));

    // The bad file is marked read: a redelivery neither rejects it again nor loops.
    let (_, shard) = store.load("111122223333", "eu-west-1").unwrap().unwrap();
    assert!(shard.manifest.keys().any(|k| k.ends_with("0123abcd.parquet")), "{:?}", shard.manifest);
    let s = handle_event(&sqs(&[("m-bad", s3_notice(&bad))]), &lake, &Flaky, &store, &out, &cfg, NOW).unwrap();
    assert!(s.failed_messages.is_empty());
    assert_eq!(s.objects_unchanged, 1);

    // Without SQS, a transient failure fails the invocation, as retryable.
    let e = handle_event(&s3_notice(&flaky), &lake, &Flaky, &store, &out, &cfg, NOW).unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[test]
fn a_sweep_saves_evictions_although_it_found_nothing() {
    let (store, out, cfg) = (Mem::default(), Out::default(), DetectConfig::default());
    let mut shard = Shard::new("111122223333", "eu-west-1");
    shard.version = trailwatch_detect::engine::STATE_VERSION;
    shard.watermark[0] = Some(T0 + 30 * DAY);
    shard.first[0] = Some(T0 + 29 * DAY);
    for i in 0..50u64 {
        let last_seen = if i < 40 { T0 } else { T0 + 30 * DAY };
        shard.apis.keys.insert(i, ApiKey { label: format!("api-{i}"), last_seen, ..Default::default() });
    }
    assert!(store.save(&shard, None).unwrap());
    let s = handle_event(&json!({"sweep": true}), "", &LocalFiles, &store, &out, &cfg, NOW).unwrap();
    assert_eq!(s.findings, 0);
    let (v, saved) = store.load("111122223333", "eu-west-1").unwrap().unwrap();
    assert_eq!(v, 2, "the sweep did not save the evictions");
    assert_eq!(saved.apis.len(), 10);

    // A second sweep has nothing to forget and writes nothing.
    handle_event(&json!({"sweep": true}), "", &LocalFiles, &store, &out, &cfg, NOW).unwrap();
    assert_eq!(*store.saves.lock().unwrap(), 2);
}

#[test]
fn every_sweep_reports_how_far_detection_lags_the_clock() {
    // The lag alarm's metric: a sweep runs on schedule even when no object arrives, so a
    // pipeline that stopped receiving data shows a growing lag instead of silence.
    let (store, out, cfg) = (Mem::default(), Out::default(), DetectConfig::default());
    let s = handle_event(&json!({"sweep": true}), "", &LocalFiles, &store, &out, &cfg, NOW).unwrap();
    assert_eq!(s.lag_seconds(NOW), None, "no clock yet: no metric rather than a made-up one");
    store.raise_clock(Some(NOW - 45 * 60_000)).unwrap();
    let s = handle_event(&json!({"sweep": true}), "", &LocalFiles, &store, &out, &cfg, NOW).unwrap();
    assert_eq!(s.lag_seconds(NOW), Some(2700.0));
    // A clock ahead of the wall clock (it cannot be by more than the skew guard) is no lag.
    assert_eq!(s.lag_seconds(NOW - 3_600_000), Some(0.0));
}
