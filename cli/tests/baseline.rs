//! The warm start learns exactly what streaming detect learns over the same days: the same lake
//! through `trailwatch_baseline::learn` and through `detect_lake` gives the same shard state
//! (up to the order of heavy-hitter lists and evidence, which depend on tie order).
#![cfg(feature = "baseline")]

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectSource};
use trailwatch_detect::state::{DirState, StateStore};
use trailwatch_detect::{detect_lake, DetectConfig, LakeLocation};

fn record(t: i64, i: u64, api: &str, principal: &str, error: Option<&str>) -> Value {
    let time = trailwatch_core::time::format_rfc3339_millis(t);
    let mut r = json!({
        "eventVersion": "1.09", "eventTime": format!("{}Z", &time[..19]), "eventSource": "ec2.amazonaws.com",
        "eventName": api, "awsRegion": "eu-west-1", "sourceIPAddress": "10.0.0.1", "userAgent": "aws-cli/2",
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::111122223333:assumed-role/{principal}/s{i}"),
            "accountId": "111122223333", "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::111122223333:role/{principal}")}}},
        "eventID": format!("00000000-0000-4000-8000-{i:012}"), "requestID": format!("r{i}"), "eventType": "AwsApiCall",
        "readOnly": true, "managementEvent": true, "recipientAccountId": "111122223333", "eventCategory": "Management"
    });
    if let Some(e) = error {
        r["errorCode"] = json!(e);
    }
    if api == "Invoke" {
        r["eventSource"] = json!("lambda.amazonaws.com");
        r["requestParameters"] = json!({"functionName": "arn:aws:lambda:eu-west-1:111122223333:function:orders"});
    }
    r
}

/// Four days of deliveries, one file per account-region per hour, some records a file late
/// and some delivered twice.
fn write_inputs(dir: &Path) {
    let t0 = trailwatch_core::time::parse_rfc3339_millis("2026-01-05T00:00:00Z").unwrap();
    let mut id = 0u64;
    let mut carry: Vec<Value> = vec![];
    for h in 0..96i64 {
        let mut recs = std::mem::take(&mut carry);
        let busy = (8..18).contains(&(h % 24));
        for k in 0..(if busy { 120 } else { 30 }) {
            id += 1;
            let t = t0 + h * 3_600_000 + k * 25_000;
            let api = ["DescribeInstances", "DescribeVolumes", "Invoke", "GetConsoleOutput"][(id % 4) as usize];
            let principal = if id.is_multiple_of(3) { "batch" } else { "app" };
            let error = id.is_multiple_of(17).then_some("AccessDenied");
            let r = record(t, id, api, principal, error);
            if id.is_multiple_of(29) {
                carry.push(r.clone());
            }
            if id.is_multiple_of(13) && k > 100 {
                carry.push(r);
            } else {
                recs.push(r);
            }
        }
        let key = dir.join(format!(
            "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/01/{:02}/111122223333_CloudTrail_eu-west-1_h{h:03}.json.gz",
            5 + h / 24
        ));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(key).unwrap(), flate2::Compression::fast());
        gz.write_all(serde_json::to_vec(&json!({ "Records": recs })).unwrap().as_slice()).unwrap();
        gz.finish().unwrap();
    }
}

/// The shard as JSON, without what depends on the order of ties.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["top", "err_top", "deny_top", "evidence", "err_evidence", "deny_evidence"] {
                m.remove(k);
            }
            m.values_mut().for_each(normalise);
        }
        Value::Array(a) => {
            a.iter_mut().for_each(normalise);
            if a.iter().all(Value::is_number) {
                a.sort_by(|x, y| x.as_f64().partial_cmp(&y.as_f64()).unwrap());
            }
        }
        _ => {}
    }
}

#[test]
fn warm_start_matches_streaming_detect() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake) = (tmp.path().join("in"), tmp.path().join("lake"));
    write_inputs(&input);
    let store = LocalLake::new(&lake);
    for obj in LocalFiles.list("", input.to_str().unwrap()).unwrap() {
        trailwatch_ingest::ingest_object(&LocalFiles, &obj, &store, &Default::default()).unwrap();
    }
    let cfg = DetectConfig::default();
    let streaming = DirState::new(tmp.path().join("a"));
    let loc = LakeLocation { bucket: String::new(), prefix: lake.to_string_lossy().into_owned() };
    let run = detect_lake(&LocalFiles, &loc, &streaming, &cfg, trailwatch_core::time::wall_clock_millis()).unwrap();
    assert!(run.counters.events > 5_000, "{:?}", run.counters);
    run.commit(&streaming).unwrap();

    let warm = DirState::new(tmp.path().join("b"));
    // The same deployment: the same hash key, so the same state.
    let secret = streaming.load_meta().unwrap().secret;
    assert!(secret.is_some());
    let meta = trailwatch_detect::state::Meta {
        version: trailwatch_detect::engine::STATE_VERSION,
        secret,
        ..Default::default()
    };
    warm.save_meta(&meta).unwrap();
    let report = trailwatch_baseline::learn(&lake, &warm, &cfg, trailwatch_core::time::wall_clock_millis()).unwrap();
    assert_eq!(report.days, 4);

    let (a, b) = (streaming.load_shards().unwrap(), warm.load_shards().unwrap());
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    // polars drops duplicates across a whole day before the engine sees them; streaming drops
    // them in the engine. The same events count either way.
    assert!(a[0].counters.duplicates > 0);
    assert_eq!(b[0].counters.duplicates, 0);
    assert_eq!((a[0].counters.events, a[0].counters.too_late), (b[0].counters.events, b[0].counters.too_late));
    assert!(a[0].apis.len() >= 3 && a[0].functions.len() == 1);
    let (mut ja, mut jb) = (serde_json::to_value(&a[0]).unwrap(), serde_json::to_value(&b[0]).unwrap());
    normalise(&mut ja);
    normalise(&mut jb);
    ja["counters"]["duplicates"] = json!(0);
    assert!(ja == jb, "states differ");
    assert_eq!(streaming.load_meta().unwrap().clock, warm.load_meta().unwrap().clock);

    // A detect run after the warm start has nothing left to read.
    let run = detect_lake(&LocalFiles, &loc, &warm, &cfg, trailwatch_core::time::wall_clock_millis()).unwrap();
    assert_eq!(run.files_read, 0);
}
