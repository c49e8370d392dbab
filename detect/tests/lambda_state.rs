//! The detect Lambda's handler against real S3 and DynamoDB (moto in server mode): concurrent
//! invocations on the same shard never lose an update, duplicate deliveries are read once, and
//! the sweep visits every shard.
#![cfg(feature = "aws")]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use parquet::arrow::ArrowWriter;
use trailwatch_core::finding::Finding;
use trailwatch_core::s3::S3Source;
use trailwatch_core::schema::lambda_invocations_schema;
use trailwatch_core::store::ObjectRef;
use trailwatch_core::testing::{create_state_table, Moto};
use trailwatch_detect::aws::DynamoS3Store;
use trailwatch_detect::handler::{handle_event, handle_objects, Deliver, ShardStore};
use trailwatch_detect::{DetectConfig, DetectError, Shard};

const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z

/// A `lambda_invocations` Parquet file of `rows` invocations, ids unique to `file`.
fn invocations_file(file: usize, rows: usize) -> Vec<u8> {
    let schema = lambda_invocations_schema();
    let s = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from((0..rows).map(f).collect::<Vec<_>>()))
    };
    let end: Vec<i64> = (0..rows).map(|i| T0 + (file * rows + i) as i64 * 1000).collect();
    let ts = |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) };
    let f = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![Some(v); rows])) };
    let i = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![Some(v); rows])) };
    let columns: Vec<ArrayRef> = vec![
        s(&|_| Some("orders".into())),
        s(&|_| Some("$LATEST".into())),
        s(&|r| Some(format!("req-{file}-{r}"))),
        ts(end.iter().map(|e| e - 100).collect()),
        ts(end),
        f(100.0),
        i(100),
        i(512),
        i(60),
        Arc::new(Float64Array::from(vec![None::<f64>; rows])),
        Arc::new(Float64Array::from(vec![None::<f64>; rows])),
        s(&|_| Some("success".into())),
        s(&|_| None),
        Arc::new(Float64Array::from(vec![None::<f64>; rows])),
        s(&|_| Some("/aws/lambda/orders".into())),
        s(&|_| Some("2026/01/05/[$LATEST]abc".into())),
        s(&|r| Some(format!("{file:028}{r:028}"))),
        s(&|_| None),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// The wall clock the handler is given: after the test data (2026-01-05).
const NOW: i64 = 1_800_000_000_000;

#[derive(Default)]
struct Collect(Mutex<Vec<Finding>>);

impl Deliver for Collect {
    fn deliver(&self, findings: &[Finding]) -> Result<(), DetectError> {
        self.0.lock().unwrap().extend_from_slice(findings);
        Ok(())
    }

    fn reject(&self, what: &str, reason: &str) -> Result<(), DetectError> {
        panic!("nothing here is unreadable: {what}: {reason}")
    }
}

/// A store that, on the first save of each shard, lets another invocation (`interloper`) update
/// that shard in between the caller's load and save: the caller's conditional write is then
/// refused however the threads happen to be scheduled, so the retry path always runs.
struct Interleaved<'a> {
    inner: &'a DynamoS3Store,
    interloper: &'a (dyn Fn(&str) + Sync),
    raced: Mutex<BTreeSet<String>>,
}

impl ShardStore for Interleaved<'_> {
    fn load(&self, account: &str, region: &str) -> Result<Option<(u64, Shard)>, DetectError> {
        self.inner.load(account, region)
    }

    fn save(&self, shard: &Shard, expected: Option<u64>) -> Result<bool, DetectError> {
        if self.raced.lock().unwrap().insert(shard.region.clone()) {
            (self.interloper)(&shard.region);
        }
        self.inner.save(shard, expected)
    }

    fn raise_clock(&self, t: Option<i64>) -> Result<Option<i64>, DetectError> {
        self.inner.raise_clock(t)
    }

    fn shards(&self) -> Result<Vec<(String, String)>, DetectError> {
        self.inner.shards()
    }

    fn hash_key(&self) -> Result<trailwatch_detect::stats::HashKey, DetectError> {
        self.inner.hash_key()
    }
}

#[test]
fn concurrent_writers_never_lose_an_update() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let shared = rt.block_on(trailwatch_core::aws::load(Some(&moto.endpoint)));
    let s3 = trailwatch_core::aws::s3(&shared, None);
    let ddb = trailwatch_core::aws::dynamodb(&shared, None);
    rt.block_on(s3.create_bucket().bucket("lake").send()).unwrap();
    rt.block_on(create_state_table(&ddb, "state"));

    let key = |shard: &str, file: usize| {
        format!("lake/lambda_invocations/account_id=111122223333/region={shard}/date=2026-01-05/f{file:02}.parquet")
    };
    let rows = 50;
    for file in 0..16 {
        for shard in ["eu-west-1", "us-east-1"] {
            if shard == "us-east-1" && file >= 8 {
                continue;
            }
            let body = invocations_file(file, rows);
            rt.block_on(s3.put_object().bucket("lake").key(key(shard, file)).body(body.into()).send()).unwrap();
        }
    }
    // One more file a shard, for the invocation that writes in between a load and its save.
    let extra = |shard: &str| if shard == "us-east-1" { 8 } else { 16 };
    for shard in ["eu-west-1", "us-east-1"] {
        let body = invocations_file(extra(shard), rows);
        rt.block_on(s3.put_object().bucket("lake").key(key(shard, extra(shard))).body(body.into()).send()).unwrap();
    }

    let store = Arc::new(DynamoS3Store {
        ddb,
        s3: s3.clone(),
        handle: rt.handle().clone(),
        table: "state".into(),
        bucket: "lake".into(),
        prefix: "detect-state/".into(),
    });
    let src = Arc::new(S3Source::new(s3.clone(), rt.handle().clone()));
    let out = Arc::new(Collect::default());
    let cfg = Arc::new(DetectConfig::default());
    let interloper = |region: &str| {
        let objs = [ObjectRef::s3("lake", key(region, extra(region)))];
        let s = handle_objects(&objs, "lake", src.as_ref(), store.as_ref(), out.as_ref(), &cfg, NOW).unwrap();
        assert_eq!(s.objects_read, 1);
    };
    let racing = Interleaved { inner: store.as_ref(), interloper: &interloper, raced: Mutex::default() };
    let conflicts: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|w| {
                let (racing, src, out, cfg) = (&racing, src.clone(), out.clone(), cfg.clone());
                scope.spawn(move || {
                    let objs = vec![
                        ObjectRef::s3("lake", key("eu-west-1", 2 * w)),
                        ObjectRef::s3("lake", key("eu-west-1", 2 * w + 1)),
                        ObjectRef::s3("lake", key("us-east-1", w)),
                    ];
                    let s = handle_objects(&objs, "lake", src.as_ref(), racing, out.as_ref(), &cfg, NOW).unwrap();
                    assert_eq!(s.objects_read, 3);
                    s.conflicts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    eprintln!("conditional writes refused and recomputed: {conflicts}");
    // Each shard's first save was refused (the interloper wrote in between), and recomputed;
    // the threads' own races only add to that.
    assert_eq!(racing.raced.lock().unwrap().len(), 2);
    assert!(conflicts >= 2, "the retry path ran for each shard: {conflicts} conflicts");

    // No update was lost: every thread's files and the interloper's are in the shards.
    let (_, eu) = store.load("111122223333", "eu-west-1").unwrap().unwrap();
    let (_, us) = store.load("111122223333", "us-east-1").unwrap().unwrap();
    assert_eq!((eu.counters.events, eu.manifest.len()), (17 * rows as u64, 17));
    assert_eq!((us.counters.events, us.manifest.len()), (9 * rows as u64, 9));

    // The same notifications again (at-least-once delivery): nothing is read twice.
    let event = serde_json::json!({"Records": (0..17).map(|f| serde_json::json!({
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "lake"}, "object": {"key": key("eu-west-1", f)}}
    })).collect::<Vec<_>>()});
    let s = handle_event(&event, "lake", src.as_ref(), store.as_ref(), out.as_ref(), &cfg, NOW).unwrap();
    assert_eq!((s.objects_read, s.objects_unchanged), (0, 17));
    let (_, eu2) = store.load("111122223333", "eu-west-1").unwrap().unwrap();
    assert_eq!(eu2.counters.events, 17 * rows as u64);

    // The scheduled sweep visits every shard.
    let s = handle_event(
        &serde_json::json!({"detail-type": "Scheduled Event"}),
        "lake",
        src.as_ref(),
        store.as_ref(),
        out.as_ref(),
        &cfg,
        NOW,
    )
    .unwrap();
    assert_eq!(s.shards, 2);
    assert_eq!(store.shards().unwrap().len(), 2);
    drop(moto);
}

/// The recent-partition listing sends one listing per account and region folder, many at once:
/// over more folders than are listed at a time, the results equal the one-by-one listings, in
/// request order, and `StartAfter` still leaves out the older dates.
#[test]
fn concurrent_folder_listings_equal_sequential_ones() {
    use trailwatch_core::store::ObjectSource;
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let shared = rt.block_on(trailwatch_core::aws::load(Some(&moto.endpoint)));
    let s3 = trailwatch_core::aws::s3(&shared, None);
    rt.block_on(s3.create_bucket().bucket("lake").send()).unwrap();
    let regions = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
    for account in 0..6 {
        for region in regions {
            for day in 1..=4 {
                let key = format!(
                    "tw/cloudtrail/account_id={:012}/region={region}/date=2026-01-0{day}/f.parquet",
                    111_111_111_111u64 * (account + 1)
                );
                rt.block_on(s3.put_object().bucket("lake").key(key).body(vec![1u8].into()).send()).unwrap();
            }
        }
    }
    let src = S3Source::new(s3.clone(), rt.handle().clone());
    let accounts = src.list_folders("lake", "tw/cloudtrail/").unwrap();
    assert_eq!(accounts.len(), 6);
    let each = src.list_folders_each("lake", &accounts).unwrap();
    let one_by_one: Vec<Vec<String>> = accounts.iter().map(|a| src.list_folders("lake", a).unwrap()).collect();
    assert_eq!(each, one_by_one);
    let folders: Vec<String> = each.into_iter().flatten().collect();
    assert_eq!(folders.len(), 24, "more folders than are listed at a time");
    let requests: Vec<(String, String)> = folders.iter().map(|f| (f.clone(), format!("{f}date=2026-01-03"))).collect();
    let after = src.list_after_each("lake", &requests).unwrap();
    let one_by_one: Vec<Vec<ObjectRef>> = requests.iter().map(|(p, a)| src.list_after("lake", p, a).unwrap()).collect();
    assert_eq!(after, one_by_one);
    for (files, (folder, _)) in after.iter().zip(&requests) {
        let keys: Vec<&str> = files.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, [format!("{folder}date=2026-01-03/f.parquet"), format!("{folder}date=2026-01-04/f.parquet")]);
    }
}
