//! The ingest Lambda's handler against a real S3 endpoint (moto on 127.0.0.1): every event
//! shape AWS delivers, duplicate delivery, and SQS partial batch responses.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{delivery, parquet_rows, record, Moto};
use trailwatch_core::s3::{S3Lake, S3Source};
use trailwatch_core::store::{LakeStore, ObjectBody, ObjectRef, ObjectSource, StoreError};
use trailwatch_core::time::wall_clock_millis;
use trailwatch_ingest::handler::{handle_event, Reply, Summary};
use trailwatch_ingest::Config;

const SRC: &str = "org-trail";
const LAKE: &str = "trailwatch-lake";
/// A key as CloudTrail writes it, plus a space and a plus sign to exercise key decoding.
const KEY: &str = "AWSLogs/o-abc123/111122223333/CloudTrail/eu-west-1/2024/01/02/111122223333_CloudTrail_eu-west-1_20240102T0000Z_a b+c.json.gz";

struct Env {
    _moto: Moto,
    rt: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    src: S3Source,
    lake: S3Lake,
    staging: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let moto = Moto::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s3 = moto.s3();
        for b in [SRC, LAKE] {
            rt.block_on(s3.create_bucket().bucket(b).send()).unwrap();
        }
        let staging = tempfile::tempdir().unwrap();
        let src = S3Source::new(s3.clone(), rt.handle().clone());
        let lake = S3Lake::new(s3.clone(), rt.handle().clone(), LAKE, "", staging.path().to_path_buf());
        Env { _moto: moto, rt, s3, src, lake, staging }
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        self.rt.block_on(self.s3.put_object().bucket(SRC).key(key).body(body.into()).send()).unwrap();
    }

    fn lake_objects(&self) -> BTreeMap<String, bytes::Bytes> {
        let keys = self.src.list(LAKE, "").unwrap();
        keys.into_iter()
            .map(|o| {
                let mut body = Vec::new();
                self.src.open(&o).unwrap().reader.read_to_end(&mut body).unwrap();
                (o.key, body.into())
            })
            .collect()
    }

    fn handle(&self, event: &Value) -> (Reply, Summary) {
        handle_event(event, &self.src, &self.lake, &Config::default(), wall_clock_millis())
            .expect("no transient failure")
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../testdata/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// S3 notifications form-encode keys: a space is `+`, a plus is `%2B`.
fn form_encode(key: &str) -> String {
    key.replace('+', "%2B").replace(' ', "+")
}

/// Points every object reference inside an AWS fixture (through SQS bodies and SNS messages)
/// at `bucket`/`key`, encoding the key the way each envelope does.
fn retarget(v: &mut Value, bucket: &str, key: &str) {
    match v {
        Value::Object(m) => {
            if let Some(s3) = m.get_mut("s3") {
                s3["bucket"]["name"] = json!(bucket);
                s3["object"]["key"] = json!(form_encode(key));
                s3["object"]["size"] = json!(1000);
            }
            if m.contains_key("detail-type") {
                m["detail"]["bucket"]["name"] = json!(bucket);
                m["detail"]["object"]["key"] = json!(key);
            }
            if m.contains_key("s3Bucket") {
                m.insert("s3Bucket".into(), json!(bucket));
                m.insert("s3ObjectKey".into(), json!([key]));
            }
            for (k, child) in m.iter_mut() {
                if k == "s3" || k == "detail" {
                    continue;
                }
                if let Value::String(s) = child {
                    if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                        if inner.is_object() {
                            retarget(&mut inner, bucket, key);
                            *s = inner.to_string();
                        }
                    }
                } else {
                    retarget(child, bucket, key);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| retarget(x, bucket, key)),
        _ => {}
    }
}

#[test]
fn every_event_shape_lands_the_object_once() {
    let env = Env::new();
    let records: Vec<Value> = (0..5).map(|i| record(i, &format!("2024-01-02T00:0{i}:00Z"))).collect();
    env.put(KEY, delivery(&records, 3));
    let shapes = [
        "s3-object-created.json",
        "sqs-s3-object-created.json",
        "sns-s3-object-created.json",
        "sqs-sns-s3-object-created.json",
        "eventbridge-object-created.json",
        "sns-cloudtrail-delivery-notice.json",
        "sqs-s3-powertools.json",
    ];
    let mut first_keys: Option<Vec<String>> = None;
    for shape in shapes {
        let mut ev = fixture(shape);
        retarget(&mut ev, SRC, KEY);
        let (reply, summary) = env.handle(&ev);
        if let Reply::Sqs(r) = &reply {
            assert!(r.batch_item_failures.is_empty(), "{shape}: {r:?}");
        }
        assert_eq!(summary.records, 5, "{shape}: {summary:?}");
        assert_eq!(summary.objects_ingested, 1, "{shape}");
        // The same object through any envelope names the same lake files: the ETag comes from
        // S3's answer, not from the event.
        let keys = summary.lake_keys.clone();
        assert!(
            keys.iter().all(|k| k.starts_with("cloudtrail/account_id=111122223333/region=eu-west-1/date=2024-01-02/")),
            "{keys:?}"
        );
        assert_eq!(&keys, first_keys.get_or_insert(keys.clone()), "{shape}");
    }
    let lake = env.lake_objects();
    assert_eq!(lake.len(), 1, "{:?}", lake.keys());
    for (k, body) in &lake {
        assert!(k.ends_with(".parquet"), "{k}");
        assert_eq!(parquet_rows(body.clone()), 5, "{k}");
    }
}

#[test]
fn duplicate_delivery_replaces_instead_of_adding() {
    let env = Env::new();
    let records: Vec<Value> = (0..4).map(|i| record(i, "2024-01-02T23:59:59Z")).collect();
    env.put(KEY, delivery(&records, 2));
    let mut ev = fixture("sqs-s3-object-created.json");
    retarget(&mut ev, SRC, KEY);
    let runs: Vec<Summary> = (0..3).map(|_| env.handle(&ev).1).collect();
    assert_eq!(runs[0].lake_keys, runs[1].lake_keys);
    assert_eq!(runs[1].lake_keys, runs[2].lake_keys);
    let lake = env.lake_objects();
    assert_eq!(lake.len(), 1, "{:?}", lake.keys());
    assert_eq!(lake.values().map(|b| parquet_rows(b.clone())).sum::<usize>(), 4);
}

#[test]
fn test_events_digests_and_own_output_are_no_ops() {
    let env = Env::new();
    env.put(
        "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2024/01/02/d.json.gz",
        delivery(&[json!({"digestStartTime": "x"})], 1),
    );
    let (_, s) = env.handle(&fixture("s3-test-event.json"));
    assert_eq!(s, Summary::default());
    let mut ev = fixture("s3-object-created.json");
    retarget(&mut ev, SRC, "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2024/01/02/d.json.gz");
    let (_, s) = env.handle(&ev);
    assert_eq!((s.objects_skipped, s.records), (1, 0));
    let mut ev = fixture("s3-object-created.json");
    retarget(&mut ev, LAKE, "cloudtrail/account_id=111122223333/region=eu-west-1/date=2024-01-02/x.parquet");
    let (_, s) = env.handle(&ev);
    assert_eq!(s.objects_skipped, 1);
    assert!(env.lake_objects().is_empty());
}

/// Fails reads of keys containing "flaky" the way a throttled S3 does; everything else is real.
struct Flaky<'a>(&'a S3Source);

impl ObjectSource for Flaky<'_> {
    fn open(&self, obj: &ObjectRef) -> Result<ObjectBody<'_>, StoreError> {
        if obj.key.contains("flaky") {
            return Err(StoreError {
                op: "get",
                uri: obj.uri(),
                message: "SlowDown: Please reduce your request rate.".into(),
                retryable: true,
            });
        }
        self.0.open(obj)
    }
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, StoreError> {
        self.0.list(bucket, prefix)
    }
}

#[test]
fn sqs_batch_fails_only_the_transient_messages() {
    let env = Env::new();
    env.put(KEY, delivery(&[record(1, "2024-01-02T10:00:00Z")], 1));
    env.put(
        "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/02/corrupt.json.gz",
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad],
    );
    env.put(
        "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/02/flaky.json.gz",
        delivery(&[record(2, "2024-01-02T10:00:00Z")], 1),
    );
    let mut batch = fixture("sqs-batch-partial-garbage.json");
    let template = batch["Records"][0].clone();
    let message = |id: &str, key: &str| {
        let mut m = template.clone();
        m["messageId"] = json!(id);
        retarget(&mut m, SRC, key);
        m
    };
    let garbage = batch["Records"][1].clone();
    batch["Records"] = json!([
        message("good", KEY),
        garbage,
        message("missing", "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/02/never-written.json.gz"),
        message("corrupt", "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/02/corrupt.json.gz"),
        message("flaky", "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/02/flaky.json.gz"),
    ]);
    let (reply, summary) =
        handle_event(&batch, &Flaky(&env.src), &env.lake, &Config::default(), wall_clock_millis()).unwrap();
    let Reply::Sqs(resp) = reply else { panic!("an SQS event gets a batch response") };
    let failed: Vec<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["flaky"]);
    assert_eq!(summary.records, 1);
    // The garbage body, the missing and the corrupt object are acknowledged, and each has its
    // reason under _rejected/: the objects under objects/, the message under messages/.
    assert_eq!(summary.objects_rejected, 3, "{summary:?}");
    assert_eq!(summary.rejected_keys.len(), 3, "{summary:?}");
    let lake = env.lake_objects();
    let rejected: Vec<String> = lake
        .iter()
        .filter(|(k, _)| k.starts_with("_rejected/"))
        .map(|(_, b)| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    assert_eq!(rejected.len(), 3, "{:?}", lake.keys());
    assert!(rejected.iter().any(|r| r.contains("corrupt gzip") && r.contains("corrupt.json.gz")), "{rejected:?}");
    assert!(rejected.iter().any(|r| r.contains("NoSuchKey")), "{rejected:?}");
    let messages: Vec<Value> = lake
        .iter()
        .filter(|(k, _)| k.starts_with("_rejected/messages/") && k.ends_with(".jsonl"))
        .flat_map(|(_, b)| {
            String::from_utf8(b.to_vec())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let garbage = &fixture("sqs-batch-partial-garbage.json")["Records"][1];
    assert_eq!(messages[0]["message_id"], garbage["messageId"]);
    assert_eq!(messages[0]["record"], garbage["body"]);
    assert!(messages[0]["reason"].as_str().unwrap().contains("not JSON"), "{messages:?}");
    let _ = &env.staging;
}

/// The lake, except that its `n`th put (from 1) fails the way a throttled S3 does.
struct FailNthPut<'a> {
    inner: &'a S3Lake,
    n: usize,
    puts: AtomicUsize,
}

impl LakeStore for FailNthPut<'_> {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            return Err(StoreError {
                op: "put",
                uri: format!("s3://{LAKE}/{key}"),
                message: "SlowDown: Please reduce your request rate.".into(),
                retryable: true,
            });
        }
        self.inner.put_file(key, local)
    }
    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete_file(key)
    }
    fn staging_dir(&self) -> std::path::PathBuf {
        self.inner.staging_dir()
    }
    fn root_uri(&self) -> String {
        self.inner.root_uri()
    }
    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        self.inner.is_own_output(obj)
    }
}

#[test]
fn an_upload_failing_midway_leaves_nothing_of_the_object() {
    let env = Env::new();
    // Three days, so three Parquet files, and a bad record, so a rejects file: four puts.
    let mut records: Vec<Value> = (0..6).map(|i| record(i, &format!("2024-01-0{}T10:00:00Z", i % 3 + 1))).collect();
    records.push(json!({"eventName": "NoTime"}));
    env.put(KEY, delivery(&records, 1));
    let mut ev = fixture("sqs-s3-object-created.json");
    retarget(&mut ev, SRC, KEY);
    for n in [2, 4] {
        let failing = FailNthPut { inner: &env.lake, n, puts: AtomicUsize::new(0) };
        let (reply, summary) = handle_event(&ev, &env.src, &failing, &Config::default(), wall_clock_millis()).unwrap();
        let Reply::Sqs(resp) = reply else { panic!("an SQS event gets a batch response") };
        assert_eq!(resp.batch_item_failures.len(), 1, "put {n}: the message is retried");
        assert_eq!(summary.objects_retry, 1, "{summary:?}");
        assert!(env.lake_objects().is_empty(), "put {n}: {:?}", env.lake_objects().keys());
    }
    // The retry stores every file.
    let (_, summary) = env.handle(&ev);
    assert_eq!((summary.records, summary.records_rejected), (6, 1), "{summary:?}");
    let lake = env.lake_objects();
    assert_eq!(lake.len(), 4, "{:?}", lake.keys());
    // A failure after a complete earlier run leaves none of it either, never a part.
    let failing = FailNthPut { inner: &env.lake, n: 3, puts: AtomicUsize::new(0) };
    handle_event(&ev, &env.src, &failing, &Config::default(), wall_clock_millis()).unwrap();
    assert!(env.lake_objects().is_empty(), "{:?}", env.lake_objects().keys());
}
