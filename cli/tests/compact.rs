//! Compaction keeps every row exactly once, however it is interrupted or repeated, and detect
//! neither reads merged rows again nor misses any.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectSource};
use trailwatch_core::time::{format_rfc3339_millis, parse_rfc3339_millis, wall_clock_millis};
use trailwatch_detect::state::DirState;
use trailwatch_detect::{detect_lake, DetectConfig, DetectRun, LakeLocation};
use trailwatch_ingest::compact::{compact_lake, CompactOptions, CompactReport};

const HOUR: i64 = 3_600_000;

/// One CloudTrail delivery of `n` calls starting at `t`; the last delivery also stops logging,
/// so every detect run over the whole lake has a finding to compare.
fn delivery(dir: &Path, name: &str, t: i64, n: i64, id0: i64, stop: bool) {
    let mut recs: Vec<_> = (0..n)
        .map(|k| {
            let time = format_rfc3339_millis(t + k * 20_000);
            json!({
                "eventVersion": "1.09", "eventTime": format!("{}Z", &time[..19]),
                "eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances",
                "awsRegion": "eu-west-1", "sourceIPAddress": "10.0.0.1", "userAgent": "aws-cli/2",
                "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/app",
                    "accountId": "111122223333"},
                "eventID": format!("00000000-0000-4000-8000-{:012}", id0 + k),
                "eventType": "AwsApiCall", "recipientAccountId": "111122223333"
            })
        })
        .collect();
    if stop {
        recs.push(json!({
            "eventVersion": "1.09", "eventTime": format!("{}Z", &format_rfc3339_millis(t + 60_000)[..19]),
            "eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging",
            "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.7", "userAgent": "aws-cli/2",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/intruder",
                "accountId": "111122223333"},
            "eventID": "ffffffff-0000-4000-8000-000000000001",
            "eventType": "AwsApiCall", "recipientAccountId": "111122223333"
        }));
    }
    let path = dir.join(format!("AWSLogs/111122223333/CloudTrail/eu-west-1/{name}.json.gz"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(serde_json::to_vec(&json!({ "Records": recs })).unwrap().as_slice()).unwrap();
    gz.finish().unwrap();
}

/// Six days of hourly deliveries of 30 calls each: 144 objects, 4,321 records.
fn inputs(dir: &Path) {
    let t0 = parse_rfc3339_millis("2026-01-05T00:00:00Z").unwrap();
    for h in 0..144 {
        delivery(dir, &format!("h{h:03}"), t0 + h * HOUR, 30, h * 100, h == 143);
    }
}

fn ingest(input: &Path, lake: &LocalLake) {
    for obj in LocalFiles.list("", input.to_str().unwrap()).unwrap() {
        trailwatch_ingest::ingest_object(&LocalFiles, &obj, lake, &Default::default()).unwrap();
    }
}

/// Everything closed and settled: the lake is a finished replay.
fn all_now() -> CompactOptions {
    CompactOptions::at(wall_clock_millis(), 0, 0, 128)
}

fn compact(lake: &Path) -> CompactReport {
    let r = compact_lake(&LocalFiles, "", lake.to_str().unwrap(), &LocalLake::new(lake), &all_now()).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    r
}

/// Parquet files and rows per event id in the lake's CloudTrail table.
fn rows(lake: &Path) -> (usize, HashMap<String, usize>) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut files = 0;
    let mut ids = HashMap::new();
    for obj in LocalFiles.list("", lake.join("cloudtrail").to_str().unwrap()).unwrap() {
        if !obj.key.ends_with(".parquet") {
            continue;
        }
        files += 1;
        let r = SerializedFileReader::new(std::fs::File::open(&obj.key).unwrap()).unwrap();
        for row in r.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let id = row.get_column_iter().find(|(n, _)| n.as_str() == "event_id").map(|(_, v)| v.to_string()).unwrap();
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    (files, ids)
}

fn detect(lake: &Path, state: &Path) -> DetectRun {
    let loc = LakeLocation { bucket: String::new(), prefix: lake.to_string_lossy().into_owned() };
    detect_lake(&LocalFiles, &loc, &DirState::new(state), &DetectConfig::default(), wall_clock_millis()).unwrap()
}

fn summary(run: &DetectRun) -> Vec<(String, String, i64)> {
    run.findings.iter().map(|f| (f.kind.to_string(), f.subject.clone(), f.start)).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for obj in LocalFiles.list("", from.to_str().unwrap()).unwrap() {
        let rel = Path::new(&obj.key).strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&obj.key, to.join(rel)).unwrap();
    }
}

#[test]
fn compaction_keeps_every_row_once_and_detect_sees_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake) = (tmp.path().join("in"), tmp.path().join("lake"));
    inputs(&input);
    ingest(&input, &LocalLake::new(&lake));
    let (files, ids) = rows(&lake);
    assert_eq!((files, ids.len()), (144, 4_321));
    let plain = detect(&lake, &tmp.path().join("s-plain"));
    assert!(!plain.findings.is_empty());

    let r = compact(&lake);
    assert_eq!((r.partitions, r.files_before, r.files_after, r.rows, r.rows_superseded), (6, 144, 6, 4_321, 0));
    let (files, after) = rows(&lake);
    assert_eq!((files, &after), (6, &ids), "one file per partition-day, every row once");
    // Each merged row keeps the source it was delivered in: a day's file holds 24 sources.
    let day = LocalFiles
        .list("", lake.join("cloudtrail").to_str().unwrap())
        .unwrap()
        .into_iter()
        .find(|o| o.key.contains("date=2026-01-06"))
        .unwrap();
    let mut events = vec![];
    let bytes = std::fs::read(&day.key).unwrap();
    let decoded =
        trailwatch_detect::read::Decoded::new(bytes.into(), trailwatch_detect::event::Table::CloudTrail).unwrap();
    decoded.events("111122223333", "eu-west-1", 0, &mut events).unwrap();
    let sources: std::collections::HashSet<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!((events.len(), sources.len()), (720, 24));
    assert!(!sources.contains(&0));
    // From empty state, detect over the compacted lake sees what it saw before.
    let merged = detect(&lake, &tmp.path().join("s-merged"));
    assert_eq!((merged.counters.events, merged.counters.duplicates), (plain.counters.events, 0));
    assert_eq!(summary(&merged), summary(&plain));
    // Again: nothing to do.
    assert_eq!(compact(&lake).partitions, 0);

    // An object ingested again (an SQS redelivery) writes its files again, beside the merged copy
    // of the same rows: the next run keeps one copy.
    let one = LocalFiles.list("", input.to_str().unwrap()).unwrap().remove(10);
    trailwatch_ingest::ingest_object(&LocalFiles, &one, &LocalLake::new(&lake), &Default::default()).unwrap();
    assert_eq!(rows(&lake).0, 7);
    let r = compact(&lake);
    assert_eq!((r.partitions, r.files_before, r.files_after, r.rows_superseded), (1, 2, 1, 30));
    assert_eq!(rows(&lake), (6, ids.clone()));
}

#[test]
fn a_crash_between_store_and_delete_is_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake) = (tmp.path().join("in"), tmp.path().join("lake"));
    inputs(&input);
    ingest(&input, &LocalLake::new(&lake));
    let (_, ids) = rows(&lake);
    // The state a crash after storing the merged files and before deleting the inputs leaves:
    // every input and every merged file.
    let saved = tmp.path().join("saved");
    copy_dir(&lake, &saved);
    compact(&lake);
    let merged_once = tmp.path().join("merged-once");
    copy_dir(&lake, &merged_once);
    copy_dir(&saved, &lake);
    assert_eq!(rows(&lake).0, 150);
    let r = compact(&lake);
    assert_eq!((r.files_before, r.files_after, r.rows, r.rows_superseded), (150, 6, 4_321, 4_321));
    assert_eq!(rows(&lake), (6, ids.clone()));
    // Two merged copies of the same rows (a crash in a rewrite): one is kept.
    copy_dir(&merged_once, &lake);
    assert_eq!(rows(&lake).0, 12);
    compact(&lake);
    assert_eq!(rows(&lake), (6, ids));
}

#[test]
fn detect_with_state_does_not_read_merged_rows_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake, state) = (tmp.path().join("in"), tmp.path().join("lake"), tmp.path().join("state"));
    inputs(&input);
    ingest(&input, &LocalLake::new(&lake));
    let first = detect(&lake, &state);
    assert_eq!(first.files_read, 144);
    first.commit(&DirState::new(&state)).unwrap();
    compact(&lake);
    let again = detect(&lake, &state);
    assert_eq!((again.files_read, again.counters.events), (0, 0));
    assert!(again.findings.is_empty(), "{:?}", summary(&again));
    again.commit(&DirState::new(&state)).unwrap();
    // New data after compaction is read as usual.
    let t = parse_rfc3339_millis("2026-01-11T00:00:00Z").unwrap();
    delivery(&tmp.path().join("in2"), "next", t, 30, 50_000, false);
    ingest(&tmp.path().join("in2"), &LocalLake::new(&lake));
    let next = detect(&lake, &state);
    assert_eq!((next.files_read, next.counters.events), (1, 30));
}

#[test]
fn full_merged_files_are_left_alone_until_a_source_comes_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake) = (tmp.path().join("in"), tmp.path().join("lake"));
    inputs(&input);
    ingest(&input, &LocalLake::new(&lake));
    let (_, ids) = rows(&lake);
    // A target of one byte: every input fills a merged file of its own.
    let tiny = CompactOptions { target_bytes: 1, ..all_now() };
    let run =
        |o: &CompactOptions| compact_lake(&LocalFiles, "", lake.to_str().unwrap(), &LocalLake::new(&lake), o).unwrap();
    let r = run(&tiny);
    assert_eq!((r.partitions, r.files_after), (6, 144));
    assert_eq!(run(&tiny).partitions, 0, "full files are not fetched again");
    let one = LocalFiles.list("", input.to_str().unwrap()).unwrap().remove(10);
    trailwatch_ingest::ingest_object(&LocalFiles, &one, &LocalLake::new(&lake), &Default::default()).unwrap();
    // Settled by the options' clock only: options made before the file arrived leave it be.
    assert_eq!(run(&tiny).partitions, 0);
    let r = run(&CompactOptions { target_bytes: 1, ..all_now() });
    assert_eq!((r.partitions, r.files_before, r.files_after, r.rows_superseded), (1, 25, 24, 30));
    assert_eq!(rows(&lake), (144, ids));
}

/// A late delivery into a closed partition waits, under the default options, until a CLI
/// detect's next full listing (at most a day later) has read it; merged earlier, detect with
/// state would skip it and its rows would never be read.
#[test]
fn late_files_in_closed_partitions_wait_for_the_next_full_listing() {
    use trailwatch_detect::state::StateStore;
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake) = (tmp.path().join("in"), tmp.path().join("lake"));
    inputs(&input);
    ingest(&input, &LocalLake::new(&lake));
    let state = DirState::new(tmp.path().join("state"));
    let loc = LakeLocation { bucket: String::new(), prefix: lake.to_string_lossy().into_owned() };
    let cfg = DetectConfig::default();
    let now = wall_clock_millis();
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now).unwrap();
    run.commit(&state).unwrap();
    // A delivery for the first day arrives; the hourly compaction runs two hours later.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let late = tmp.path().join("late");
    delivery(&late, "late", parse_rfc3339_millis("2026-01-05T05:00:00Z").unwrap(), 12, 900_000, false);
    ingest(&late, &LocalLake::new(&lake));
    let defaults = |at: i64| CompactOptions::at(at, 4, trailwatch_ingest::compact::DEFAULT_MIN_AGE_MINUTES, 128);
    let at =
        |t: i64| compact_lake(&LocalFiles, "", lake.to_str().unwrap(), &LocalLake::new(&lake), &defaults(t)).unwrap();
    assert_eq!(at(now + 2 * HOUR).partitions, 0, "nothing has waited a day and an hour yet");
    // The next full listing, a day later, finds it.
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now + 24 * HOUR).unwrap();
    assert!(run.full_listing);
    assert_eq!((run.files_late, run.counters.too_late), (1, 12));
    run.commit(&state).unwrap();
    assert!(state.load_meta().unwrap().last_full_listing.is_some());
    // After that it may be merged: nothing is read again.
    assert_eq!(at(now + 26 * HOUR).rows, 4_321 + 12);
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now + 48 * HOUR).unwrap();
    assert_eq!((run.files_read, run.files_late, run.counters.too_late), (0, 0, 0));
}
