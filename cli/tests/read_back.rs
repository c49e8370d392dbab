//! What ingest writes, detect reads back: the lake contract seen from both sides, on the bundled
//! fixtures. Detect's events borrow their text from the decoded batches, so these also check that
//! borrowing picks the right rows of nested columns (a map's entries, a struct's leaves).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use trailwatch_core::store::{LocalFiles, LocalLake, ObjectSource};
use trailwatch_detect::event::{Event, Table};
use trailwatch_detect::read::Decoded;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// Ingests `input` into a fresh lake and decodes every file of `table` back into events.
fn round_trip(input: &Path, table: &str, t: Table) -> Vec<Decoded> {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    for obj in LocalFiles.list("", input.to_str().unwrap()).unwrap() {
        // Some fixtures are deliberately unreadable; their neighbours still land.
        let _ = trailwatch_ingest::ingest_object(&LocalFiles, &obj, &lake, &Default::default());
    }
    let files = LocalFiles.list("", dir.path().join(table).to_str().unwrap()).unwrap();
    assert!(!files.is_empty(), "ingest wrote no {table} file");
    files.iter().map(|f| Decoded::new(std::fs::read(&f.key).unwrap().into(), t).unwrap()).collect()
}

/// A fresh lake holding every table, ingested from the CloudTrail and CloudWatch fixtures.
fn every_table_ingested() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lake = LocalLake::new(dir.path());
    for input in ["cloudtrail", "cloudwatch/metric-stream", "cloudwatch/firehose", "cloudwatch/export"] {
        for obj in LocalFiles.list("", testdata().join(input).to_str().unwrap()).unwrap() {
            // Some fixtures are deliberately unreadable; their neighbours still land.
            let _ = trailwatch_ingest::ingest_object(&LocalFiles, &obj, &lake, &Default::default());
        }
    }
    dir
}

/// Every decoded file's events, read from `source`, borrowing from `decoded`.
fn events_of(decoded: &[Decoded], source: u64) -> Vec<(u64, Event<'_>)> {
    let mut events = Vec::new();
    for d in decoded {
        d.events("111122223333", "eu-west-1", source, &mut events).unwrap();
    }
    events
}

#[test]
fn metric_datapoints_keep_their_own_dimensions() {
    let decoded = round_trip(&testdata().join("cloudwatch/metric-stream"), "lambda_metrics", Table::Metrics);
    let events = events_of(&decoded, 7);
    let points: Vec<(&str, &str, f64)> = events
        .iter()
        .map(|(_, e)| match e {
            Event::Metric(m) => (&*m.metric, &*m.function, m.sum),
            other => panic!("not a metric: {other:?}"),
        })
        .collect();
    // The account-level datapoint has no dimensions; the function's throttles name it.
    assert!(points.iter().any(|p| p.0 == "ConcurrentExecutions" && p.1.is_empty()), "{points:?}");
    assert!(points.contains(&("Throttles", "orders", 19.0)), "{points:?}");
    assert!(events.iter().all(|(s, _)| *s == 7), "a file ingest wrote is its own source");
    // Text is borrowed from the batches, not copied per row.
    for (_, e) in &events {
        let Event::Metric(m) = e else { unreachable!() };
        assert!(matches!((&m.metric, &m.function), (Cow::Borrowed(_), Cow::Borrowed(_))), "{m:?}");
    }
}

#[test]
fn cloudtrail_rows_read_back_borrowed_and_owned_where_derived() {
    let decoded = round_trip(&testdata().join("cloudtrail"), "cloudtrail", Table::CloudTrail);
    let events = events_of(&decoded, 1);
    assert!(events.len() > 10, "{} events", events.len());
    let calls: Vec<_> = events
        .iter()
        .map(|(_, e)| match e {
            Event::Api(a) => a,
            other => panic!("not an API call: {other:?}"),
        })
        .collect();
    assert!(calls.iter().all(|a| !a.event_id.is_empty() && !a.name.is_empty() && !a.source.is_empty()));
    assert!(calls.iter().all(|a| matches!((&a.name, &a.event_id), (Cow::Borrowed(_), Cow::Borrowed(_)))));
    // Each row keeps its own fields (the Stratus CloudTrail-stop fixture's one record).
    let stop = calls.iter().find(|a| a.event_id == "10163ed2-2253-469d-a5ee-cbc6651f8934").expect("StopLogging read");
    assert_eq!((&*stop.name, &*stop.source), ("StopLogging", "cloudtrail.amazonaws.com"));
    // Owned copies outlive the batches, field for field.
    let owned: Vec<Event<'static>> = events.iter().map(|(_, e)| e.clone().into_owned()).collect();
    assert!(owned.iter().zip(&events).all(|(o, (_, e))| o == e));
    drop(events);
    drop(decoded);
    let stop = owned.iter().find_map(|e| match e {
        Event::Api(a) if a.event_id == "10163ed2-2253-469d-a5ee-cbc6651f8934" => Some(a),
        _ => None,
    });
    assert_eq!(stop.map(|a| (&*a.name, &*a.source)), Some(("StopLogging", "cloudtrail.amazonaws.com")));
}

/// Over the lake as ingest wrote it, a run decodes each table's schema once and reuses it for
/// every later file of that schema (`footer::Schemas`): the files of three tables, read in turn
/// through one cache, give exactly the events each gives read alone.
#[test]
fn files_read_through_one_schema_cache_give_what_they_give_alone() {
    let dir = every_table_ingested();
    let mut files = Vec::new();
    for (table, t) in [
        ("cloudtrail", Table::CloudTrail),
        ("lambda_invocations", Table::Invocations),
        ("lambda_metrics", Table::Metrics),
    ] {
        let listed = LocalFiles.list("", dir.path().join(table).to_str().unwrap()).unwrap();
        assert!(!listed.is_empty(), "ingest wrote no {table} file");
        files.extend(listed.into_iter().map(|f| (std::fs::read(&f.key).unwrap(), t)));
    }
    // Interleave the tables, so a hit must pick its own table's schema.
    files.sort_by_key(|(bytes, _)| trailwatch_core::lake::hex(&bytes[bytes.len() - 12..bytes.len() - 8]));
    assert!(files.len() > 3, "{} files", files.len());
    let rules = Default::default();
    let mut schemas = trailwatch_detect::footer::Schemas::default();
    let mut events = 0;
    for (bytes, t) in &files {
        let shared = Decoded::read(bytes.clone().into(), *t, &rules, &mut schemas).unwrap();
        let alone = Decoded::new(bytes.clone().into(), *t).unwrap();
        let (a, b) = (events_of(std::slice::from_ref(&shared), 1), events_of(std::slice::from_ref(&alone), 1));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        events += a.len();
    }
    assert!(events > 20, "{events} events");
    assert_eq!(schemas.len(), 3, "one schema a table");
}

/// A large file (a compacted partition) is read with its strings as views into the decoded pages
/// and dictionaries (`detect::strs`), a small one as plain strings: the same rows give the same
/// events, and the same Sigma rule matches, either way.
#[test]
fn large_files_read_as_string_views_give_what_plain_strings_give() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    let dir = every_table_ingested();
    let mut set = trailwatch_detect::sigma::RuleSet::default();
    set.add_bundled(&Default::default());
    set.finish();
    let rules = trailwatch_detect::sigma::Rules::new(set);
    assert!(!rules.is_empty(), "trailwatch's own rules");
    for (table, t) in [
        ("cloudtrail", Table::CloudTrail),
        ("lambda_invocations", Table::Invocations),
        ("lambda_metrics", Table::Metrics),
    ] {
        let mut batches = Vec::new();
        for f in LocalFiles.list("", dir.path().join(table).to_str().unwrap()).unwrap() {
            let bytes = bytes::Bytes::from(std::fs::read(&f.key).unwrap());
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
        // The table's rows over and over, past the size that reads views, in one file.
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "ingest wrote no {table} rows");
        let repeated: Vec<_> = batches.iter().cycle().take(batches.len() * (1100 / rows + 1)).cloned().collect();
        let total: usize = repeated.iter().map(|b| b.num_rows()).sum();
        assert!(total > 1024, "{total} rows");
        let mut big = Vec::new();
        let mut w = ArrowWriter::try_new(&mut big, repeated[0].schema(), None).unwrap();
        for b in &repeated {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        let viewed = Decoded::with_rules(big.into(), t, &rules).unwrap();
        let plain = Decoded::from_batches(t, repeated, &rules);
        let (a, b) = (events_of(std::slice::from_ref(&viewed), 1), events_of(std::slice::from_ref(&plain), 1));
        assert!(a.len() > 1000 || t == Table::Metrics, "{table}: {} events", a.len());
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{table}");
        if t == Table::CloudTrail {
            let matched = a.iter().filter(|(_, e)| matches!(e, Event::Api(c) if !c.rules.is_empty())).count();
            assert!(matched > 0, "some fixture matches a bundled rule");
        }
    }
}
