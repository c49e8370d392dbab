//! Bad input: each case gets a clear error or reject naming the object, and the good records
//! and files around it survive.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use support::{delivery, record};
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectRef};
use trailwatch_ingest::{ingest_object, BadKind, Config, IngestError, ObjectReport, Outcome};

fn ingest(lake: &LocalLake, path: &Path) -> Result<ObjectReport, IngestError> {
    ingest_object(&LocalFiles, &ObjectRef::local(path), lake, &Config::default())
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Rows in every Parquet file under `dir`.
fn lake_rows(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    for entry in entries {
        let p = entry.unwrap().path();
        if p.is_dir() {
            n += lake_rows(&p);
        } else if p.extension().is_some_and(|e| e == "parquet") {
            n += support::parquet_rows(fs::read(&p).unwrap().into());
        }
    }
    n
}

fn rejects(lake: &Path) -> Vec<Value> {
    let dir = lake.join("_rejected/cloudtrail");
    let Ok(entries) = fs::read_dir(&dir) else { return vec![] };
    entries
        .flat_map(|e| {
            fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

struct Case {
    dir: tempfile::TempDir,
    lake: LocalLake,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path().join("lake"));
        Case { dir, lake }
    }
    fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = self.dir.path().join("in").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }
    fn lake_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("lake")
    }
}

fn bad_kind(r: Result<ObjectReport, IngestError>) -> (BadKind, String) {
    match r {
        Err(e @ IngestError::BadObject { kind, .. }) => {
            assert!(!e.is_retryable());
            (kind, e.to_string())
        }
        other => panic!("expected a bad object, got {other:?}"),
    }
}

/// Text that gzip cannot squeeze past the bomb guard's ratio.
fn incompressible(len: usize) -> String {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

fn good_records(n: usize) -> Vec<Value> {
    (0..n).map(|i| record(i, "2024-03-01T12:00:00Z")).collect()
}

#[test]
fn truncated_gzip_names_the_file_and_leaves_nothing() {
    let c = Case::new();
    let full = delivery(&good_records(50), 1);
    let p = c.file("truncated.json.gz", &full[..full.len() - 20]);
    let (kind, msg) = bad_kind(ingest(&c.lake, &p));
    assert_eq!(kind, BadKind::Gzip);
    assert!(msg.contains("truncated.json.gz") && msg.contains("truncated"), "{msg}");
    assert_eq!(lake_rows(&c.lake_dir()), 0);
}

#[test]
fn corrupt_gzip_is_a_bad_object() {
    let c = Case::new();
    let mut bytes = delivery(&good_records(50), 1);
    for b in &mut bytes[12..40] {
        *b = !*b;
    }
    let (kind, msg) = bad_kind(ingest(&c.lake, &c.file("corrupt.json.gz", &bytes)));
    assert_eq!(kind, BadKind::Gzip, "{msg}");
    assert!(msg.contains("corrupt.json.gz"));
}

#[test]
fn not_json_and_not_cloudtrail() {
    let c = Case::new();
    let (kind, msg) = bad_kind(ingest(&c.lake, &c.file("notes.txt", b"2024-01-01 12:00:00 hello world\n")));
    assert_eq!(kind, BadKind::Json);
    assert!(msg.contains("notes.txt") && msg.contains("line 1") && msg.contains("not JSON"), "{msg}");
    let (kind, msg) =
        bad_kind(ingest(&c.lake, &c.file("other.json.gz", &gz(br#"{"Records":[{"event":1},{"event":2}]}"#))));
    assert_eq!(kind, BadKind::NotCloudTrail);
    assert!(msg.contains("other.json.gz"), "{msg}");
    let (kind, _) =
        bad_kind(ingest(&c.lake, &c.file("cut.json", br#"{"Records":[{"eventTime":"2024-03-01T12:00:00Z"}"#)));
    assert_eq!(kind, BadKind::Json);
}

#[test]
fn bad_records_are_rejected_with_their_place_and_neighbours_kept() {
    let c = Case::new();
    let mut deep = String::from("{\"eventTime\":\"2024-03-01T12:00:00Z\",\"requestParameters\":");
    deep.push_str(&"[".repeat(200));
    deep.push_str(&"]".repeat(200));
    deep.push('}');
    let huge = json!({"eventTime": "2024-03-01T12:00:00Z", "eventName": incompressible(9 << 20)}).to_string();
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"Records\":[\n");
    let good = good_records(3);
    body.extend(serde_json::to_vec(&good[0]).unwrap());
    body.extend_from_slice(b",\n{\"eventTime\":\"yesterday\",\"eventName\":\"A\"},\n");
    body.extend(deep.as_bytes());
    body.extend_from_slice(b",\n{\"eventTime\":\"2024-03-01T12:00:00Z\",\"userAgent\":\"bad \xff\xfe utf8\"},\n");
    body.extend(huge.as_bytes());
    body.extend_from_slice(b",\n");
    body.extend(serde_json::to_vec(&good[1]).unwrap());
    body.extend_from_slice(b",\n");
    body.extend(serde_json::to_vec(&good[2]).unwrap());
    body.extend_from_slice(b"\n]}");
    let p = c.file("mixed.json.gz", &gz(&body));
    let r = ingest(&c.lake, &p).unwrap();
    assert_eq!((r.records, r.rejected), (3, 4), "{r:?}");
    assert_eq!(lake_rows(&c.lake_dir()), 3);
    let rej = rejects(&c.lake_dir());
    let reasons: Vec<(u64, u64, &str)> = rej
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert!(rej.iter().all(|r| r["key"].as_str().unwrap().ends_with("mixed.json.gz")));
    assert!(
        reasons[0].2.starts_with("eventTime: expected an ISO-8601 time") && reasons[0].0 == 1 && reasons[0].1 == 3,
        "{reasons:?}"
    );
    assert!(reasons[1].2.contains("nests deeper than 64"), "{reasons:?}");
    assert!(reasons[2].2.contains("invalid JSON") || reasons[2].2.contains("UTF-8"), "{reasons:?}");
    assert!(reasons[3].2.contains("exceeds the cap"), "{reasons:?}");
    // The reject keeps the record's text so it can be fixed and replayed.
    assert_eq!(rej[0]["record"], "{\"eventTime\":\"yesterday\",\"eventName\":\"A\"}");
}

#[test]
fn gzip_bomb_is_refused() {
    let c = Case::new();
    // An envelope opening then 1 GiB of whitespace, as 1024 gzip members of 1 MiB each (about
    // 1 MB compressed): valid JSON so far, refused by the ratio cap after a few MB.
    let mut bomb = gz(b"{\"Records\":[");
    let member = gz(&vec![b' '; 1 << 20]);
    for _ in 0..1024 {
        bomb.extend_from_slice(&member);
    }
    let (kind, msg) = bad_kind(ingest(&c.lake, &c.file("bomb.json.gz", &bomb)));
    assert_eq!(kind, BadKind::Bomb);
    assert!(msg.contains("bomb.json.gz") && msg.contains("ratio"), "{msg}");
}

#[test]
fn skipped_inputs_are_not_errors() {
    let c = Case::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.json.gz", vec![], "zero-byte"),
        ("no-records.json", br#"{"Records":[]}"#.to_vec(), "no records"),
        ("digest.json.gz", gz(br#"{"awsAccountId":"111122223333","digestStartTime":"2015-08-20T17:01:31Z","digestS3Object":"x","logFiles":[]}"#), "digest"),
        ("AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/01/01/d.json.gz", gz(b"{}"), "digest"),
    ];
    for (name, bytes, want) in cases {
        let r = ingest(&c.lake, &c.file(name, &bytes)).unwrap();
        match r.outcome {
            Outcome::Skipped(why) => assert!(why.contains(want), "{name}: {why}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(!c.lake_dir().join("cloudtrail").exists());
}

#[test]
fn one_bad_file_never_drops_its_neighbours() {
    let c = Case::new();
    c.file("a-good.json.gz", &delivery(&good_records(7), 2));
    c.file("b-truncated.json.gz", &delivery(&good_records(7), 1)[..30]);
    c.file("c-good.json", &serde_json::to_vec(&good_records(5)).unwrap());
    c.file("d-notjson.json", b"garbage");
    let objects =
        trailwatch_core::store::ObjectSource::list(&LocalFiles, "", c.dir.path().join("in").to_str().unwrap()).unwrap();
    let results: Vec<_> = objects.iter().map(|o| ingest_object(&LocalFiles, o, &c.lake, &Config::default())).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    assert_eq!(lake_rows(&c.lake_dir()), 12);
}
