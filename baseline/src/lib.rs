//! Warm start: learns detect's baselines from the lake's history, so a new deployment is useful
//! at once instead of after days of streaming.
//!
//! polars does the heavy reading: a lazy scan of each day's Parquet files, projected to the
//! columns detectors use, struct fields pulled out, duplicates dropped across the whole day
//! (streaming only sees duplicates within its lateness horizon) and sorted by event time. The
//! rows then go through detect's own engine, day by day ([`feed_day`]), so the state is exactly
//! the state streaming detect builds over the same days. Only this crate links polars; no
//! Lambda binary does.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;
use trailwatch_core::finding::Finding;
use trailwatch_core::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE};
use trailwatch_core::store::{LocalFiles, ObjectSource};
use trailwatch_detect::engine::Engine;
use trailwatch_detect::event::{ApiCall, Event, Invocation, InvocationStatus};
use trailwatch_detect::read::{lambda_params, partition_of, principal};
use trailwatch_detect::run::{feed_day, local_version, source_of, version_of};
use trailwatch_detect::state::StateStore;
use trailwatch_detect::{DetectConfig, DetectError};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("scanning {what}: {source}")]
    Scan { what: String, source: PolarsError },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Detect(#[from] DetectError),
}

/// What the warm start read and learned.
#[derive(Debug, Default)]
pub struct Report {
    pub days: usize,
    pub files: usize,
    pub rows: usize,
    pub shards: usize,
    /// Findings in the history, as streaming detect would have reported them.
    pub findings: Vec<Finding>,
}

/// One lake file: table, account, region, date, path, version.
struct File {
    table: &'static str,
    account: String,
    region: String,
    path: String,
    version: String,
    rel: String,
}

fn scan_err(what: &str) -> impl FnOnce(PolarsError) -> BaselineError + '_ {
    move |source| BaselineError::Scan { what: what.to_string(), source }
}

/// Learns from every day of the local lake at `lake` and saves the state to `store`. Days are
/// replayed in order; the state in `store` is continued, so this also catches up a lagging one.
/// `now` is the wall clock: records claiming later times are reported, not learned from.
pub fn learn(lake: &Path, store: &dyn StateStore, cfg: &DetectConfig, now: i64) -> Result<Report, BaselineError> {
    let mut meta = store.load_meta()?;
    let key = meta.hash_key()?;
    let mut engine = Engine::new(store.load_shards()?, meta.clock).with_now(now).with_key(key);
    let mut days: BTreeMap<String, Vec<File>> = BTreeMap::new();
    let root = lake.to_string_lossy().trim_end_matches('/').to_string();
    for table in [CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE] {
        let dir = format!("{root}/{table}");
        if !Path::new(&dir).exists() {
            continue;
        }
        for obj in LocalFiles.list("", &dir).map_err(DetectError::from)? {
            if !obj.key.ends_with(".parquet") {
                continue;
            }
            let rel = obj.key.strip_prefix(&root).unwrap_or(&obj.key).trim_start_matches('/').to_string();
            // What detect's next run compares arrivals with, as if it had listed the lake.
            if let Some(m) = obj.modified {
                if meta.last_listed.is_none_or(|n| m > n) {
                    (meta.last_listed, meta.last_listed_keys) = (Some(m), vec![]);
                }
                if meta.last_listed == Some(m) {
                    meta.last_listed_keys.push(rel.clone());
                }
            }
            let Some((account, region, date)) = partition_of(&rel) else { continue };
            // The version detect records for a local file: a hash of its bytes.
            let bytes =
                std::fs::read(&obj.key).map_err(|e| BaselineError::Read { path: obj.key.clone(), source: e })?;
            let known = engine.shards.get(&(account.clone(), region.clone())).and_then(|s| s.manifest.get(&rel));
            let version = version_of(&obj).unwrap_or_else(|| local_version(known.map(String::as_str), &bytes));
            if known == Some(&version) {
                continue;
            }
            days.entry(date).or_default().push(File { table, account, region, path: obj.key.clone(), version, rel });
        }
    }
    let mut report = Report { days: days.len(), ..Report::default() };
    for (date, files) in days {
        let mut events = Vec::new();
        for table in [CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE] {
            let of_table: Vec<&File> = files.iter().filter(|f| f.table == table).collect();
            if of_table.is_empty() {
                continue;
            }
            let what = format!("{table} {date}");
            let df = scan(table, &of_table).collect().map_err(scan_err(&what))?;
            report.rows += df.height();
            let by_path: BTreeMap<&str, &File> = of_table.iter().map(|f| (f.path.as_str(), *f)).collect();
            if table == CLOUDTRAIL_TABLE {
                cloudtrail_events(&df, &by_path, &mut events).map_err(scan_err(&what))?;
            } else {
                invocation_events(&df, &by_path, &mut events).map_err(scan_err(&what))?;
            }
            report.files += of_table.len();
        }
        feed_day(&mut engine, cfg, events);
        for f in &files {
            engine.shard_mut(&f.account, &f.region).manifest.insert(f.rel.clone(), f.version.clone());
        }
        tracing::info!(%date, files = files.len(), "learned");
    }
    if let Some(c) = engine.clock() {
        for s in engine.shards.values_mut() {
            trailwatch_detect::run::prune_manifest(s, c);
        }
    }
    report.findings = engine.take_findings(cfg);
    report.shards = engine.shards.len();
    for s in engine.shards.values() {
        store.save_shard(s)?;
    }
    meta.clock = engine.confirmed;
    store.save_meta(&meta)?;
    Ok(report)
}

/// The lazy scan of one day of a table: the columns detectors use, deduplicated on the table's
/// duplicate key across the day, in event-time order.
fn scan(table: &str, files: &[&File]) -> LazyFrame {
    let paths: Vec<PlRefPath> = files.iter().map(|f| PlRefPath::new(f.path.as_str())).collect();
    // Partition values come from each file's path (`file`), as detect reads them, not from
    // polars' Hive parsing: account ids stay strings.
    let args = ScanArgsParquet {
        include_file_paths: Some("file".into()),
        hive_options: HiveOptions { enabled: Some(false), ..HiveOptions::default() },
        ..ScanArgsParquet::default()
    };
    let lf = match LazyFrame::scan_parquet_files(paths.into_iter().collect(), args) {
        Ok(lf) => lf,
        Err(e) => return DataFrame::empty().lazy().select([lit(e.to_string()).alias("error")]),
    };
    let ms = |c: &str| col(c).cast(DataType::Int64);
    if table == CLOUDTRAIL_TABLE {
        let ui = |f: &str| col("user_identity").struct_().field_by_name(f);
        lf.select([
            col("file"),
            ms("event_time").alias("t"),
            col("event_source"),
            col("event_name"),
            col("error_code"),
            col("error_message"),
            col("source_ip_address"),
            col("user_agent"),
            col("event_id"),
            col("request_parameters"),
            ui("type").alias("ui_type"),
            ui("arn").alias("ui_arn"),
            ui("account_id").alias("ui_account"),
            ui("invoked_by").alias("ui_by"),
            ui("principal_id").alias("ui_pid"),
            ui("session_context")
                .struct_()
                .field_by_name("session_issuer")
                .struct_()
                .field_by_name("arn")
                .alias("ui_issuer"),
        ])
        .unique_stable_generic(Some(vec![col("event_id")]), UniqueKeepStrategy::First)
        .sort(["t"], SortMultipleOptions::default().with_maintain_order(true))
    } else {
        lf.select([
            col("file"),
            col("function_name"),
            ms("start_time").alias("start"),
            ms("end_time").alias("t"),
            col("duration_ms"),
            col("billed_duration_ms"),
            col("memory_size_mb"),
            col("status"),
            col("timeout_seconds"),
            col("log_event_id"),
            col("request_id"),
            col("error_type"),
        ])
        .unique_stable_generic(Some(vec![col("log_event_id")]), UniqueKeepStrategy::First)
        .sort(["t"], SortMultipleOptions::default().with_maintain_order(true))
    }
}

/// Owned text: a day's frames are dropped table by table, before its events are fed.
fn owned(s: &str) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Owned(s.to_string())
}

fn strs<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<&'a StringChunked> {
    df.column(name)?.str()
}

fn cloudtrail_events(
    df: &DataFrame,
    files: &BTreeMap<&str, &File>,
    out: &mut Vec<(u64, Event<'static>)>,
) -> PolarsResult<()> {
    let t = df.column("t")?.i64()?;
    let [file, source, name, err, msg, ip, ua, id, params, ty, arn, acct, by, pid, issuer] = [
        "file",
        "event_source",
        "event_name",
        "error_code",
        "error_message",
        "source_ip_address",
        "user_agent",
        "event_id",
        "request_parameters",
        "ui_type",
        "ui_arn",
        "ui_account",
        "ui_by",
        "ui_pid",
        "ui_issuer",
    ]
    .map(|c| strs(df, c));
    let (file, source, name, err, msg, ip, ua, id, params) =
        (file?, source?, name?, err?, msg?, ip?, ua?, id?, params?);
    let (ty, arn, acct, by, pid, issuer) = (ty?, arn?, acct?, by?, pid?, issuer?);
    for i in 0..df.height() {
        let (Some(time), Some(f)) = (t.get(i), file.get(i).and_then(|p| files.get(p))) else { continue };
        let src = source.get(i).unwrap_or("");
        let lambda = lambda_params(src, params.get(i));
        out.push((
            source_of(&f.rel),
            Event::Api(ApiCall {
                time,
                account: f.account.clone().into(),
                region: f.region.clone().into(),
                source: src.to_string().into(),
                name: name.get(i).unwrap_or("").to_string().into(),
                error_code: err.get(i).map(owned),
                error_message: msg.get(i).map(owned),
                principal: principal(ty.get(i), issuer.get(i), arn.get(i), by.get(i), pid.get(i)).into_owned().into(),
                principal_account: acct.get(i).map(owned),
                source_ip: owned(ip.get(i).unwrap_or("")),
                user_agent: owned(ua.get(i).unwrap_or("")),
                event_id: owned(id.get(i).unwrap_or("")),
                function: lambda.function.map(|f| f.into_owned().into()),
                function_timeout_s: lambda.timeout_s,
                reserved_concurrency: lambda.reserved_concurrency,
                // History warms baselines; rules alert on what arrives from now on.
                rules: vec![],
                correlated: vec![],
            }),
        ));
    }
    Ok(())
}

fn invocation_events(
    df: &DataFrame,
    files: &BTreeMap<&str, &File>,
    out: &mut Vec<(u64, Event<'static>)>,
) -> PolarsResult<()> {
    let (t, start) = (df.column("t")?.i64()?, df.column("start")?.i64()?);
    let (dur, timeout) = (df.column("duration_ms")?.f64()?, df.column("timeout_seconds")?.f64()?);
    let (billed, mem) = (df.column("billed_duration_ms")?.i64()?, df.column("memory_size_mb")?.i64()?);
    let (file, func, status) = (strs(df, "file")?, strs(df, "function_name")?, strs(df, "status")?);
    let (leid, rid, etype) = (strs(df, "log_event_id")?, strs(df, "request_id")?, strs(df, "error_type")?);
    for i in 0..df.height() {
        let (Some(end), Some(function), Some(f)) = (t.get(i), func.get(i), file.get(i).and_then(|p| files.get(p)))
        else {
            continue;
        };
        let duration_ms = dur.get(i).unwrap_or(0.0);
        out.push((
            source_of(&f.rel),
            Event::Invocation(Invocation {
                start: start.get(i).unwrap_or(end),
                end,
                account: f.account.clone().into(),
                region: f.region.clone().into(),
                function: owned(function),
                duration_ms,
                billed_ms: billed.get(i).map(|b| b as f64).unwrap_or(duration_ms.ceil()),
                memory_mb: mem.get(i).map(|m| m as f64).unwrap_or(128.0),
                status: InvocationStatus::parse(status.get(i).unwrap_or("unknown")),
                timeout_s: timeout.get(i),
                log_event_id: owned(leid.get(i).unwrap_or("")),
                request_id: rid.get(i).map(owned),
                error_type: etype.get(i).map(owned),
            }),
        ));
    }
    Ok(())
}
