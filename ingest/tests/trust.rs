//! "Trust: a forged timestamp must not blind detection, and nothing is dropped without a trace":
//! future-dated records are kept and reported, unreadable messages and awslogs payloads are
//! recorded under `_rejected/`, awslogs payloads are streamed under the decompression caps, and
//! an object's files reach the lake all or nothing.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use support::{delivery, record};
use trailwatch_core::lake::object_stem;
use trailwatch_core::store::{LakeStore, LocalFiles, LocalLake, ObjectRef, StoreError};
use trailwatch_core::time::{parse_rfc3339_millis, wall_clock_millis, EpochMillis};
use trailwatch_ingest::handler::{handle_event, Reply};
use trailwatch_ingest::{ingest_awslogs, ingest_object_at, BadKind, Config, IngestError};

fn at(iso: &str) -> EpochMillis {
    parse_rfc3339_millis(iso).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|f| !f.starts_with("_staging"));
    out.sort();
    out
}

fn json_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn fixture(path: &str) -> Value {
    let path = format!("{}/../testdata/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

struct Case {
    dir: tempfile::TempDir,
    lake: LocalLake,
    inputs: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join("in");
        fs::create_dir_all(&inputs).unwrap();
        let lake = LocalLake::new(dir.path().join("lake"));
        Case { dir, lake, inputs }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> ObjectRef {
        let p = self.inputs.join(name);
        fs::write(&p, bytes).unwrap();
        ObjectRef::local(&p)
    }

    fn lake_files(&self) -> Vec<String> {
        files(self.lake.root())
    }
}

#[test]
fn future_dated_records_are_kept_counted_and_named() {
    let c = Case::new();
    let now = at("2024-01-02T12:00:00Z");
    let records = [
        record(0, "2024-01-01T10:00:00Z"),
        record(1, "2024-01-02T12:04:59Z"), // inside the 5 minutes
        record(2, "2024-01-02T13:00:00Z"),
        record(3, "2031-06-01T00:00:00Z"), // a forged date, years ahead
    ];
    let obj = c.file("forged.json.gz", &delivery(&records, 1));
    let r = ingest_object_at(&LocalFiles, &obj, &c.lake, &Config::default(), now).unwrap();
    assert_eq!(r.records, 4, "future-dated records are evidence: kept");
    assert_eq!(r.future_records, 2, "{r:?}");
    assert_eq!(r.max_future_event_time.as_deref(), Some("2031-06-01T00:00:00.000Z"));
    assert!(r.uri.ends_with("forged.json.gz"));
    // Each in its own partition like any other row.
    let lake = c.lake_files();
    assert!(lake.iter().any(|f| f.contains("/date=2031-06-01/")), "{lake:?}");
    let rows: usize = lake.iter().map(|f| support::parquet_rows(fs::read(c.lake.root().join(f)).unwrap().into())).sum();
    assert_eq!(rows, 4);

    // The skew is configurable; the clock is the caller's.
    let strict = Config { max_future_skew: Duration::ZERO, ..Config::default() };
    let r = ingest_object_at(&LocalFiles, &obj, &c.lake, &strict, now).unwrap();
    assert_eq!(r.future_records, 3);
    let r = ingest_object_at(&LocalFiles, &obj, &c.lake, &Config::default(), at("2032-01-01T00:00:00Z")).unwrap();
    assert_eq!((r.future_records, r.max_future_event_time), (0, None));
}

#[test]
fn future_dated_invocations_are_named_in_the_lambda_summary() {
    let c = Case::new();
    let event = fixture("cloudwatch/lambda-subscription-event.json");
    let cfg = Config { default_region: Some("eu-central-1".into()), ..Config::default() };
    // The payload's REPORT line is from 2024-01-02; a clock a day earlier makes it future-dated.
    let (_, s) = handle_event(&event, &LocalFiles, &c.lake, &cfg, at("2024-01-01T00:00:00Z")).unwrap();
    assert_eq!((s.records, s.future_records), (1, 1), "{s:?}");
    assert_eq!(s.future_dated.len(), 1);
    let f = &s.future_dated[0];
    assert!(f.object.starts_with("awslogs/111122223333/aws/lambda/orders/2024/01/02/"), "{f:?}");
    assert_eq!(f.records, 1);
    assert!(f.max_event_time.starts_with("2024-01-02T"), "{f:?}");
    let (_, s) = handle_event(&event, &LocalFiles, &c.lake, &cfg, at("2024-01-03T00:00:00Z")).unwrap();
    assert_eq!((s.future_records, s.future_dated.len()), (0, 0));
}

#[test]
fn awslogs_events_are_named_from_their_payload_as_before() {
    let c = Case::new();
    let event = fixture("cloudwatch/lambda-subscription-event.json");
    let (_, s) = handle_event(&event, &LocalFiles, &c.lake, &Config::default(), wall_clock_millis()).unwrap();
    let stem = object_stem(
        "",
        "awslogs/111122223333/aws/lambda/orders/2024/01/02/[$LATEST]0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "37530000000170416440000000000000000000000000000000000019:37530000000170416440012000000000000000000000000000000022",
    );
    assert_eq!(s.lake_keys.len(), 1);
    assert!(s.lake_keys[0].ends_with(&format!("/{stem}.parquet")), "{:?} vs {stem}", s.lake_keys);
}

fn payload_with_message(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/f",
        "logStream": "2024/01/02/[$LATEST]abc", "subscriptionFilters": ["x"],
        "logEvents": [{"id": "1", "timestamp": 1704153600000i64, "message": message}]
    }))
    .unwrap()
}

fn bad_kind(r: Result<trailwatch_ingest::ObjectReport, IngestError>) -> (BadKind, String) {
    match r {
        Err(e @ IngestError::BadObject { kind, .. }) => (kind, e.to_string()),
        other => panic!("expected a bad object, got {other:?}"),
    }
}

#[test]
fn awslogs_bombs_are_refused_while_streaming_and_recorded() {
    let c = Case::new();
    // Shaped like a payload, one log event of 32 MiB that gzip shrinks ~1000:1.
    let bomb = base64(&gz(&payload_with_message(&"A".repeat(32 << 20))));
    assert!(bomb.len() < 1 << 20, "a small event: {}", bomb.len());
    let (kind, msg) = bad_kind(ingest_awslogs(&bomb, &c.lake, &Config::default(), wall_clock_millis()));
    assert_eq!(kind, BadKind::Bomb, "{msg}");
    assert!(msg.contains("decompression refused") && msg.starts_with("awslogs/"), "{msg}");

    // Under the 200:1 ratio, but more than a payload can be (the record cap, here 1 MiB): refused
    // at the cap instead of being read whole.
    let mut x = 0x2545F4914F6CDD1Du64;
    let noise: String = (0..(2 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let cfg = Config {
        split: trailwatch_ingest::split::Limits { max_record_bytes: 1 << 20, max_depth: 64 },
        ..Config::default()
    };
    let big = base64(&gz(&payload_with_message(&noise)));
    let (kind, msg) = bad_kind(ingest_awslogs(&big, &c.lake, &cfg, wall_clock_millis()));
    assert_eq!(kind, BadKind::Bomb, "{msg}");
    assert!(msg.contains("exceeds the cap of 1048576 bytes"), "{msg}");

    // Through the handler: acknowledged (a retry cannot help) and recorded with the reason.
    let event = json!({"awslogs": {"data": bomb}});
    let (reply, s) = handle_event(&event, &LocalFiles, &c.lake, &Config::default(), wall_clock_millis()).unwrap();
    assert!(matches!(reply, Reply::Summary(_)));
    assert_eq!((s.objects_rejected, s.records, s.rejected_keys.len()), (1, 0, 1), "{s:?}");
    assert!(s.rejected_keys[0].starts_with("_rejected/messages/"), "{s:?}");
    let lines = json_lines(&c.lake.root().join(&s.rejected_keys[0]));
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["reason"].as_str().unwrap().contains("decompression refused"), "{lines:?}");
    assert_eq!(c.lake_files(), s.rejected_keys, "nothing else was written");
    // A redelivery replaces the record rather than adding one.
    let (_, again) = handle_event(&event, &LocalFiles, &c.lake, &Config::default(), wall_clock_millis()).unwrap();
    assert_eq!(again.rejected_keys, s.rejected_keys);
}

#[test]
fn unreadable_messages_are_recorded_and_acknowledged() {
    let c = Case::new();
    let mut batch = fixture("events/sqs-batch-partial-garbage.json");
    let garbage = batch["Records"][1].clone();
    batch["Records"] = json!([garbage]);
    let (reply, s) = handle_event(&batch, &LocalFiles, &c.lake, &Config::default(), wall_clock_millis()).unwrap();
    let Reply::Sqs(resp) = reply else { panic!("an SQS event gets a batch response") };
    assert!(resp.batch_item_failures.is_empty(), "a permanently bad message is acknowledged");
    assert_eq!((s.objects_rejected, s.rejected_keys.len()), (1, 1), "{s:?}");
    let lines = json_lines(&c.lake.root().join(&s.rejected_keys[0]));
    assert_eq!(lines[0]["message_id"], garbage["messageId"]);
    assert_eq!(lines[0]["record"], garbage["body"]);
    assert!(lines[0]["reason"].as_str().unwrap().contains("not JSON"), "{lines:?}");

    // When even recording fails, the message is failed so SQS brings it back.
    let broken = Broken(&c.lake);
    let (reply, _) = handle_event(&batch, &LocalFiles, &broken, &Config::default(), wall_clock_millis()).unwrap();
    let Reply::Sqs(resp) = reply else { panic!() };
    assert_eq!(resp.batch_item_failures.len(), 1);
    // A non-SQS event that is unreadable is recorded too.
    let (_, s) = handle_event(
        &json!({"what": "no objects here"}),
        &LocalFiles,
        &c.lake,
        &Config::default(),
        wall_clock_millis(),
    )
    .unwrap();
    assert_eq!(s.rejected_keys.len(), 1, "{s:?}");
}

/// A lake whose puts all fail transiently.
struct Broken<'a>(&'a LocalLake);

impl LakeStore for Broken<'_> {
    fn put_file(&self, key: &str, _: &Path) -> Result<Option<String>, StoreError> {
        Err(StoreError { op: "put", uri: key.into(), message: "SlowDown".into(), retryable: true })
    }
    fn staging_dir(&self) -> PathBuf {
        self.0.staging_dir()
    }
    fn root_uri(&self) -> String {
        self.0.root_uri()
    }
    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        self.0.is_own_output(obj)
    }
}

/// A local lake whose `n`th put (from 1) fails.
struct FailNthPut<'a> {
    inner: &'a LocalLake,
    n: usize,
    puts: AtomicUsize,
}

impl LakeStore for FailNthPut<'_> {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            return Err(StoreError { op: "put", uri: key.into(), message: "connection reset".into(), retryable: true });
        }
        self.inner.put_file(key, local)
    }
    fn delete_file(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete_file(key)
    }
    fn staging_dir(&self) -> PathBuf {
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
fn an_object_reaches_the_lake_all_or_nothing() {
    let c = Case::new();
    let mut records: Vec<Value> = (0..6).map(|i| record(i, &format!("2024-01-0{}T10:00:00Z", i % 3 + 1))).collect();
    records.push(json!({"eventName": "NoTime"}));
    let obj = c.file("three-days.json.gz", &delivery(&records, 2));
    let now = wall_clock_millis();
    // Three Parquet files and a rejects file: a failure at any of the four puts leaves nothing.
    for n in 1..=4 {
        let failing = FailNthPut { inner: &c.lake, n, puts: AtomicUsize::new(0) };
        let err = ingest_object_at(&LocalFiles, &obj, &failing, &Config::default(), now).unwrap_err();
        assert!(matches!(err, IngestError::Commit { .. }) && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("three-days.json.gz"), "{err}");
        assert_eq!(c.lake_files(), Vec::<String>::new(), "put {n} failed");
    }
    let r = ingest_object_at(&LocalFiles, &obj, &c.lake, &Config::default(), now).unwrap();
    assert_eq!(r.lake_keys.len(), 4, "{r:?}");
    assert_eq!(c.lake_files().len(), 4);
    // After a complete run, a failing re-run takes the object away whole rather than leaving part.
    let failing = FailNthPut { inner: &c.lake, n: 2, puts: AtomicUsize::new(0) };
    ingest_object_at(&LocalFiles, &obj, &failing, &Config::default(), now).unwrap_err();
    assert_eq!(c.lake_files(), Vec::<String>::new());
    // A lake that cannot delete is named in the error.
    let err = ingest_object_at(
        &LocalFiles,
        &obj,
        &NoDelete(FailNthPut { inner: &c.lake, n: 3, puts: AtomicUsize::new(0) }),
        &Config::default(),
        now,
    )
    .unwrap_err();
    let IngestError::Commit { removed, left, .. } = &err else { panic!("{err}") };
    assert_eq!((*removed, left.len()), (0, 4), "{err}");
    assert!(err.to_string().contains("could not be removed"), "{err}");
    let _ = &c.dir;
}

/// A lake that cannot delete (the trait's default).
struct NoDelete<'a>(FailNthPut<'a>);

impl LakeStore for NoDelete<'_> {
    fn put_file(&self, key: &str, local: &Path) -> Result<Option<String>, StoreError> {
        self.0.put_file(key, local)
    }
    fn staging_dir(&self) -> PathBuf {
        self.0.staging_dir()
    }
    fn root_uri(&self) -> String {
        self.0.root_uri()
    }
    fn is_own_output(&self, obj: &ObjectRef) -> bool {
        self.0.is_own_output(obj)
    }
}
