//! Nothing is skipped without a trace: a file delivered late into a partition older than the
//! retention is read by the next full listing (counted late, named in the summary), and read
//! once; files read before are not read again; runs in between list only recent partitions.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectSource};
use trailwatch_core::time::{format_rfc3339_millis, parse_rfc3339_millis, wall_clock_millis};
use trailwatch_detect::state::{DirState, StateStore};
use trailwatch_detect::{detect_lake, DetectConfig, LakeLocation};

const HOUR: i64 = 3_600_000;

/// One CloudTrail delivery of `n` calls starting at `t`.
fn delivery(dir: &Path, name: &str, t: i64, n: i64, id0: i64) {
    let recs: Vec<_> = (0..n)
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
    let path = dir.join(format!("AWSLogs/111122223333/CloudTrail/eu-west-1/{name}.json.gz"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(serde_json::to_vec(&json!({ "Records": recs })).unwrap().as_slice()).unwrap();
    gz.finish().unwrap();
}

fn ingest(input: &Path, lake: &LocalLake) {
    for obj in LocalFiles.list("", input.to_str().unwrap()).unwrap() {
        trailwatch_ingest::ingest_object(&LocalFiles, &obj, lake, &Default::default()).unwrap();
    }
}

#[test]
fn late_files_in_old_partitions_are_read_once_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, lake_dir) = (tmp.path().join("in"), tmp.path().join("lake"));
    let t0 = parse_rfc3339_millis("2026-01-05T00:00:00Z").unwrap();
    // Six days, a delivery an hour.
    for h in 0..144 {
        delivery(&input, &format!("h{h:03}"), t0 + h * HOUR, 30, h * 100);
    }
    let lake = LocalLake::new(&lake_dir);
    ingest(&input, &lake);
    let cfg = DetectConfig::default();
    let state = DirState::new(tmp.path().join("state"));
    let loc = LakeLocation { bucket: String::new(), prefix: lake_dir.to_string_lossy().into_owned() };
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, wall_clock_millis()).unwrap();
    assert_eq!((run.files_late, run.counters.too_late), (0, 0));
    assert!(run.files_read >= 144);
    run.commit(&state).unwrap();
    assert!(state.load_meta().unwrap().last_listed.is_some());

    // Nothing new: nothing is read, the old days are not read again.
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, wall_clock_millis()).unwrap();
    assert_eq!((run.files_read, run.files_late), (0, 0));
    run.commit(&state).unwrap();

    // A delivery for the first day (past the 3-day retention) and one for the newest arrive now.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let late_in = tmp.path().join("late");
    delivery(&late_in, "late", t0 + 5 * HOUR, 12, 900_000);
    delivery(&late_in, "recent", t0 + 143 * HOUR + 1_000, 5, 950_000);
    ingest(&late_in, &lake);
    // Within a day of the last full listing, a run lists only the partitions inside the
    // retention: it reads the recent file, not the late one.
    let now = wall_clock_millis();
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now).unwrap();
    assert!(!run.full_listing);
    assert_eq!((run.files_read, run.files_late), (1, 0));
    run.commit(&state).unwrap();
    // A day later a run lists every partition and finds the late file.
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now + 24 * HOUR).unwrap();
    assert!(run.full_listing);
    assert_eq!(run.files_late, 1, "the late file was skipped");
    assert_eq!(run.files_read, 1);
    assert_eq!(run.counters.too_late, 12, "{:?}", run.counters);
    run.commit(&state).unwrap();

    // Read once, by recent-only and full listings alike.
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now + 25 * HOUR).unwrap();
    assert_eq!((run.full_listing, run.files_read, run.files_late, run.counters.too_late), (false, 0, 0, 0));
    run.commit(&state).unwrap();
    let run = detect_lake(&LocalFiles, &loc, &state, &cfg, now + 48 * HOUR).unwrap();
    assert_eq!((run.full_listing, run.files_read, run.files_late, run.counters.too_late), (true, 0, 0, 0));
}
