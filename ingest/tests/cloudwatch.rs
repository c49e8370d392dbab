//! CloudWatch data into the lake: Firehose-concatenated subscription payloads (multi-member
//! gzip), a Lambda subscription event through the handler, export-task files and metric streams.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectRef};
use trailwatch_core::time::wall_clock_millis;
use trailwatch_ingest::handler::handle_event;
use trailwatch_ingest::{ingest_object, BadKind, Config, IngestError, Outcome};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/cloudwatch")
}

/// Every batch of a table, by partition folder.
fn table(lake: &Path, name: &str) -> BTreeMap<String, Vec<RecordBatch>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<RecordBatch>>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let bytes = bytes::Bytes::from(fs::read(&p).unwrap());
                let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
                let part = p.parent().unwrap().strip_prefix(root).unwrap().display().to_string();
                out.entry(part).or_default().extend(r.map(|b| b.unwrap()));
            }
        }
    }
    walk(&lake.join(name), &lake.join(name), &mut out);
    out
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap().as_string::<i32>();
            (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect::<Vec<_>>()
        })
        .collect()
}

fn floats(batches: &[RecordBatch], col: &str) -> Vec<Option<f64>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap().as_primitive::<Float64Type>();
            (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect::<Vec<_>>()
        })
        .collect()
}

fn ingest(lake: &LocalLake, path: &Path, cfg: &Config) -> Result<trailwatch_ingest::ObjectReport, IngestError> {
    ingest_object(&LocalFiles, &ObjectRef::local(path), lake, cfg)
}

fn firehose_file() -> PathBuf {
    let dir = fixtures().join("firehose/eu-west-1/2024/01/02/03");
    fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path()
}

#[test]
fn firehose_payloads_become_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    let r = ingest(&lake, &firehose_file(), &Config::default()).unwrap();
    assert_eq!(r.outcome, Outcome::Ingested);
    assert_eq!((r.records, r.rejected, r.skipped_records), (6, 0, 1), "{r:?}");
    let t = table(dir.path(), "lambda_invocations");
    // The region comes from the Firehose prefix, the account from the payload's owner.
    assert_eq!(t.keys().collect::<Vec<_>>(), vec!["account_id=111122223333/region=eu-west-1/date=2024-01-02"]);
    let b = &t.values().next().unwrap()[..];
    let ids = strings(b, "request_id");
    let status = strings(b, "status");
    let by_id: BTreeMap<String, String> =
        ids.iter().zip(&status).map(|(i, s)| (i.clone().unwrap()[..8].to_string(), s.clone().unwrap())).collect();
    assert_eq!(by_id["11111111"], "unknown");
    assert_eq!(by_id["33333333"], "timeout");
    assert_eq!(by_id["44444444"], "out_of_memory");
    assert_eq!(by_id["55555555"], "success");
    assert_eq!(by_id["66666666"], "timeout");
    let names = strings(b, "function_name");
    assert_eq!(names.iter().filter(|n| n.as_deref() == Some("orders")).count(), 4);
    assert_eq!(names.iter().filter(|n| n.as_deref() == Some("billing")).count(), 2);
    let versions = strings(b, "function_version");
    assert!(versions.contains(&Some("7".into())) && versions.contains(&Some("$LATEST".into())));
    let pos = |id: &str| ids.iter().position(|x| x.as_deref().is_some_and(|x| x.starts_with(id))).unwrap();
    let init = floats(b, "init_duration_ms");
    assert_eq!(init[pos("11111111")], Some(402.17));
    assert_eq!(init[pos("22222222")], None);
    assert_eq!(init[pos("55555555")], Some(250.3));
    assert_eq!(floats(b, "timeout_seconds")[pos("33333333")], Some(3.0));
    let xray = strings(b, "xray_trace_id");
    assert_eq!(xray[pos("11111111")].as_deref(), Some("1-65937c30-0a1b2c3d4e5f60718293a4b5"));
    assert_eq!(xray[pos("55555555")].as_deref(), Some("1-65937c44-1a2b3c4d5e6f708192a3b4c5"));
    // start = end - duration, whatever START lines the payload had.
    let start = b[0].column_by_name("start_time").unwrap().as_primitive::<TimestampMillisecondType>().clone();
    let end = b[0].column_by_name("end_time").unwrap().as_primitive::<TimestampMillisecondType>().clone();
    let i = pos("11111111");
    assert_eq!(end.value(i) - start.value(i), 119);
    let event_ids = strings(b, "log_event_id");
    assert_eq!(event_ids.iter().collect::<std::collections::HashSet<_>>().len(), 6, "the REPORT line's id is unique");
    // Processing the object again replaces its files.
    let again = ingest(&lake, &firehose_file(), &Config::default()).unwrap();
    assert_eq!(again.lake_keys, r.lake_keys);
}

#[test]
fn lambda_subscription_event_through_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    let event: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fixtures().join("lambda-subscription-event.json")).unwrap()).unwrap();
    let cfg = Config { default_region: Some("eu-central-1".into()), ..Config::default() };
    let (_, s1) = handle_event(&event, &LocalFiles, &lake, &cfg, wall_clock_millis()).unwrap();
    let (_, s2) = handle_event(&event, &LocalFiles, &lake, &cfg, wall_clock_millis()).unwrap();
    assert_eq!(s1.records, 1);
    assert_eq!(s1.lake_keys, s2.lake_keys, "a redelivered event replaces its file");
    assert!(
        s1.lake_keys[0].starts_with("lambda_invocations/account_id=111122223333/region=eu-central-1/date=2024-01-02/"),
        "{:?}",
        s1.lake_keys
    );
    let garbage = serde_json::json!({"awslogs": {"data": "not base64 at all!"}});
    let (_, s) = handle_event(&garbage, &LocalFiles, &lake, &cfg, wall_clock_millis()).unwrap();
    assert_eq!(s.objects_rejected, 1, "{s:?}");
    assert_eq!((s.objects_ingested, s.records, s.lake_keys.len()), (0, 0, 0), "{s:?}");
    // Recorded with its reason, not only logged.
    assert_eq!(s.rejected_keys.len(), 1, "{s:?}");
    let line = fs::read_to_string(dir.path().join(&s.rejected_keys[0])).unwrap();
    assert!(line.contains("not base64") && line.contains("not base64 at all!"), "{line}");
}

#[test]
fn export_task_files_need_their_log_group() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    let root = fixtures().join("export");
    let file = walk_files(&root).into_iter().find(|p| p.ends_with("000000.gz")).unwrap();
    let err = ingest(&lake, &file, &Config::default()).unwrap_err();
    assert!(
        matches!(err, IngestError::BadObject { kind: BadKind::Json, .. })
            && err.to_string().contains("no log group is configured"),
        "{err}"
    );
    let prefix = root.join("exportedlogs").display().to_string();
    let cfg = Config {
        export_log_groups: vec![(prefix, "/aws/lambda/orders".into())],
        default_region: Some("eu-west-1".into()),
        ..Config::default()
    };
    let r = ingest(&lake, &file, &cfg).unwrap();
    assert_eq!(r.records, 4, "{r:?}");
    let t = table(dir.path(), "lambda_invocations");
    let b = t.values().next().unwrap();
    assert!(strings(b, "function_name").iter().all(|n| n.as_deref() == Some("orders")));
    assert!(strings(b, "log_stream").iter().all(|n| n.as_deref() == Some("2024/01/02/[$LATEST]0a1b2c3d")));
    assert!(strings(b, "status").contains(&Some("out_of_memory".into())));
    let test_object = root.join("exportedlogs/aws-logs-write-test");
    assert!(matches!(ingest(&lake, &test_object, &cfg).unwrap().outcome, Outcome::Skipped(_)));
}

#[test]
fn metric_streams_keep_lambda_datapoints() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    let file = walk_files(&fixtures().join("metric-stream")).pop().unwrap();
    let r = ingest(&lake, &file, &Config::default()).unwrap();
    assert_eq!((r.records, r.skipped_records), (5, 1), "{r:?}");
    let t = table(dir.path(), "lambda_metrics");
    assert_eq!(t.keys().collect::<Vec<_>>(), vec!["account_id=111122223333/region=eu-west-1/date=2024-01-02"]);
    let b = &t.values().next().unwrap()[0];
    let names = strings(std::slice::from_ref(b), "metric_name");
    let dims = b.column_by_name("dimensions").unwrap().as_map();
    let concurrency = names.iter().position(|n| n.as_deref() == Some("ConcurrentExecutions")).unwrap();
    assert_eq!(dims.value(concurrency).len(), 0, "account-level datapoints have no dimensions");
    let throttles = names.iter().position(|n| n.as_deref() == Some("Throttles")).unwrap();
    let d = dims.value(throttles);
    assert_eq!(d.column(0).as_string::<i32>().value(0), "FunctionName");
    assert_eq!(d.column(1).as_string::<i32>().value(0), "orders");
    assert_eq!(floats(std::slice::from_ref(b), "value_sum")[throttles], Some(19.0));
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
