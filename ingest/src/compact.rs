//! Compaction: merges a closed partition-day's small files (one per delivered object) into a few
//! large ones, so Athena and detect open tens of files instead of thousands.
//!
//! Plain S3 has no atomic swap, so the order is what keeps readers right: the merged file is
//! stored first, then its inputs are deleted. Between the two (one batch of deletes: seconds) a
//! reader listing the partition sees both; a crash between them leaves both until the next run,
//! which finishes the job. That run, and every later one, resolves rows by their source object
//! (the stem every lake file is named after): a file ingest wrote wins over a merged copy of the
//! same stem (a re-delivered object replaces its rows), and among merged copies the first, by
//! name, wins. Running it again over a compacted partition does nothing.
//!
//! Detect does not read merged rows again: a compacted file is named `compacted-...` and detect
//! with state skips such files, since compaction only takes files older than `settled_before`
//! (detect reads each file within minutes of its arrival). The detect Lambda ignores their
//! notices for the same reason.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::{Digest, Sha256};
use trailwatch_core::lake::{
    file_stem, hex, is_compacted, writer_properties, CLOUDTRAIL_TABLE, COMPACTED_PREFIX, COMPACTED_SOURCES_KEY,
    LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE,
};
use trailwatch_core::schema::{cloudtrail_schema, lambda_invocations_schema, lambda_metrics_schema};
use trailwatch_core::store::{LakeStore, ObjectRef, ObjectSource};
use trailwatch_core::time::EpochMillis;

use crate::error::IngestError;

/// About the size Athena reads best: large enough that a partition-day is one file or a few.
pub const TARGET_FILE_BYTES: u64 = 128 << 20;

/// Which files compaction may take.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Partitions dated before this day (`YYYY-MM-DD`) are closed: nothing new is expected in
    /// them but late deliveries.
    pub before_date: String,
    /// Files the store last wrote after this (ms since the epoch, the store's clock) are left for
    /// a later run: detect may not have read them yet.
    pub settled_before: EpochMillis,
    /// A merged file is closed when its inputs reach this many bytes.
    pub target_bytes: u64,
}

/// Partitions this many days before today are closed: one day past detect's retention, so
/// detect has moved past them.
pub const DEFAULT_CLOSED_AFTER_DAYS: i64 = 4;
/// Files this young are left for a later run: a day and an hour. Every file in a closed
/// partition is a late delivery into a partition past detect's retention; the detect Lambda reads
/// it on its notice, but a CLI detect finds it only at its next full listing of the lake, at most
/// a day later (`trailwatch_detect::run::FULL_LISTING_EVERY`). Merged before that, its rows would
/// never be read: detect with state skips merged files.
pub const DEFAULT_MIN_AGE_MINUTES: i64 = 25 * 60;

impl CompactOptions {
    /// The options for a run at `now` (ms, the wall clock).
    pub fn at(now: EpochMillis, closed_after_days: i64, min_age_minutes: i64, target_mb: u64) -> Self {
        CompactOptions {
            before_date: trailwatch_core::time::utc_date(now - closed_after_days.max(0) * 86_400_000 + 86_400_000),
            settled_before: now - min_age_minutes.max(0) * 60_000,
            target_bytes: target_mb.max(1) << 20,
        }
    }
}

/// What a compaction run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Partition-days rewritten.
    pub partitions: u64,
    /// Files in those partitions before and after.
    pub files_before: u64,
    pub files_after: u64,
    /// Rows written to merged files, and rows left out as older copies of a re-delivered or
    /// already merged object.
    pub rows: u64,
    pub rows_superseded: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Files left as they were because they could not be merged: (uri, reason).
    pub skipped: Vec<(String, String)>,
}

/// The lake's tables and their schemas.
fn tables() -> [(&'static str, SchemaRef); 3] {
    [
        (CLOUDTRAIL_TABLE, cloudtrail_schema()),
        (LAMBDA_INVOCATIONS_TABLE, lambda_invocations_schema()),
        (LAMBDA_METRICS_TABLE, lambda_metrics_schema()),
    ]
}

fn date_of(rel: &str) -> Option<&str> {
    rel.split('/').find_map(|s| s.strip_prefix("date="))
}

/// Compacts every closed partition-day of the lake at `bucket`/`prefix` (a local lake: empty
/// bucket, the folder as prefix). A partition that fails is reported in the error and left as it
/// was; the ones before it stay compacted.
pub fn compact_lake(
    src: &dyn ObjectSource,
    bucket: &str,
    prefix: &str,
    lake: &dyn LakeStore,
    opts: &CompactOptions,
) -> Result<CompactReport, IngestError> {
    let root = prefix.trim_end_matches('/');
    let mut report = CompactReport::default();
    for (table, schema) in tables() {
        let table_prefix = if root.is_empty() { format!("{table}/") } else { format!("{root}/{table}/") };
        let listed = match src.list(bucket, &table_prefix) {
            Ok(l) => l,
            Err(e) if !e.retryable && bucket.is_empty() => continue, // no such table yet
            Err(e) => return Err(e.into()),
        };
        let mut parts: BTreeMap<String, Vec<(String, ObjectRef)>> = BTreeMap::new();
        for obj in listed {
            let rel = obj.key.strip_prefix(root).unwrap_or(&obj.key).trim_start_matches('/').to_string();
            let closed = date_of(&rel).is_some_and(|d| d < opts.before_date.as_str());
            if !closed || !rel.ends_with(".parquet") {
                continue;
            }
            let dir = rel.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
            parts.entry(dir).or_default().push((rel, obj));
        }
        for (dir, files) in parts {
            match compact_partition(src, lake, &dir, files, &schema, opts, &mut report) {
                Ok(()) => {}
                // The store is down or refusing: stop, the next run starts over.
                Err(e) if e.is_retryable() && !matches!(e, IngestError::Encode { .. }) => return Err(e),
                // A file that does not read: its partition stays as it was, the others go on.
                Err(e) => {
                    tracing::warn!(partition = %dir, error = %e, "partition left as it is");
                    report.skipped.push((dir, e.to_string()));
                }
            }
        }
    }
    Ok(report)
}

/// An input file downloaded to the staging folder.
struct Input {
    rel: String,
    obj: ObjectRef,
    /// Its local copy, once fetched.
    local: Option<PathBuf>,
    /// For a compacted file, its sources in row order.
    sources: Option<Vec<(String, u64)>>,
}

fn staging_err(uri: &str, path: &Path, source: io::Error) -> IngestError {
    IngestError::Staging { uri: uri.to_string(), path: path.to_path_buf(), source }
}

fn encode_err(uri: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Encode { uri: uri.to_string(), detail: e.to_string() }
}

fn download(src: &dyn ObjectSource, obj: &ObjectRef, dir: &Path, n: usize) -> Result<PathBuf, IngestError> {
    let local = dir.join(format!("in-{n}.parquet"));
    let body = src.open(obj)?;
    let mut reader = body.reader;
    let mut f = File::create(&local).map_err(|e| staging_err(&obj.uri(), &local, e))?;
    io::copy(&mut reader, &mut f).map_err(|e| {
        IngestError::Store(trailwatch_core::store::StoreError {
            op: "read",
            uri: obj.uri(),
            message: e.to_string(),
            retryable: true,
        })
    })?;
    Ok(local)
}

/// The sources a compacted file lists in its footer.
fn read_sources(local: &Path, uri: &str) -> Result<Vec<(String, u64)>, String> {
    let f = File::open(local).map_err(|e| e.to_string())?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string())?;
    let kv = b.metadata().file_metadata().key_value_metadata();
    let v = kv
        .and_then(|kv| kv.iter().find(|k| k.key == COMPACTED_SOURCES_KEY))
        .and_then(|k| k.value.as_deref())
        .ok_or_else(|| format!("{uri}: no {COMPACTED_SOURCES_KEY} in its footer"))?;
    let sources: Vec<(String, u64)> = serde_json::from_str(v).map_err(|e| format!("{uri}: {e}"))?;
    let total: u64 = sources.iter().map(|s| s.1).sum();
    if total != b.metadata().file_metadata().num_rows() as u64 {
        return Err(format!(
            "{uri}: its sources count {total} rows, the file holds {}",
            b.metadata().file_metadata().num_rows()
        ));
    }
    Ok(sources)
}

#[allow(clippy::too_many_arguments)]
fn compact_partition(
    src: &dyn ObjectSource,
    lake: &dyn LakeStore,
    dir: &str,
    mut files: Vec<(String, ObjectRef)>,
    schema: &SchemaRef,
    opts: &CompactOptions,
    report: &mut CompactReport,
) -> Result<(), IngestError> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let settled = |o: &ObjectRef| o.modified.is_none_or(|m| m <= opts.settled_before);
    let plain: Vec<&(String, ObjectRef)> = files.iter().filter(|(r, o)| !is_compacted(r) && settled(o)).collect();
    let merged: Vec<&(String, ObjectRef)> = files.iter().filter(|(r, _)| is_compacted(r)).collect();
    let small = merged.iter().filter(|(_, o)| o.size.unwrap_or(0) < opts.target_bytes).count();
    // Full merged files are fetched (to read their footers) only when a file ingest wrote may
    // replace some of their rows: a partition-day of several full files costs nothing per run.
    if plain.is_empty() && small <= 1 {
        return Ok(());
    }
    let staging = crate::writer::staging_dir(lake, dir)?;
    let mut inputs: Vec<Input> = Vec::new();
    // Merged files are fetched now (their footers say which rows they hold); the others when
    // their bin is written, so the staging folder holds one bin's inputs at a time.
    for (rel, obj) in merged.iter().map(|f| (&f.0, &f.1)) {
        let local = download(src, obj, staging.path(), inputs.len())?;
        match read_sources(&local, &obj.uri()) {
            Ok(s) => inputs.push(Input { rel: rel.clone(), obj: obj.clone(), local: Some(local), sources: Some(s) }),
            Err(why) => {
                tracing::warn!(file = %obj.uri(), reason = %why, "compacted file left as it is");
                report.skipped.push((obj.uri(), why));
            }
        }
    }
    for (rel, obj) in plain.iter().map(|f| (&f.0, &f.1)) {
        inputs.push(Input { rel: rel.clone(), obj: obj.clone(), local: None, sources: None });
    }
    // Who owns each stem: a plain file over any merged copy, then the first merged file by name.
    let plain_stems: HashSet<&str> = inputs.iter().filter(|i| i.sources.is_none()).map(|i| file_stem(&i.rel)).collect();
    let mut owner: HashSet<String> = HashSet::new();
    let mut keep: Vec<Option<HashSet<String>>> = Vec::with_capacity(inputs.len());
    let mut rewrite = vec![false; inputs.len()];
    for (n, i) in inputs.iter().enumerate() {
        match &i.sources {
            Some(srcs) => {
                let mut k = HashSet::new();
                for (stem, _) in srcs {
                    if !plain_stems.contains(stem.as_str()) && owner.insert(stem.clone()) {
                        k.insert(stem.clone());
                    } else {
                        rewrite[n] = true;
                    }
                }
                if i.obj.size.unwrap_or(0) < opts.target_bytes {
                    rewrite[n] = true;
                }
                keep.push(Some(k));
            }
            None => {
                rewrite[n] = true;
                keep.push(None);
            }
        }
    }
    let chosen: Vec<usize> = (0..inputs.len()).filter(|&n| rewrite[n]).collect();
    let merged_small = chosen.iter().filter(|&&n| inputs[n].sources.is_some()).count();
    let any_dropped = chosen.iter().any(|&n| {
        inputs[n].sources.as_ref().is_some_and(|s| s.iter().any(|(st, _)| !keep[n].as_ref().unwrap().contains(st)))
    });
    if chosen.len() - merged_small == 0 && merged_small <= 1 && !any_dropped {
        return Ok(());
    }

    // Bins of about the target size, in name order (merged files first).
    let mut bins: Vec<Vec<usize>> = vec![vec![]];
    let mut bin_bytes = 0u64;
    for &n in &chosen {
        let size = inputs[n].obj.size.unwrap_or(0);
        if bin_bytes > 0 && bin_bytes + size > opts.target_bytes {
            bins.push(vec![]);
            bin_bytes = 0;
        }
        bins.last_mut().unwrap().push(n);
        bin_bytes += size;
    }
    let before = files.len() as u64;
    let mut written: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut consumed: Vec<usize> = Vec::new();
    let mut rows_total = 0u64;
    for bin in &bins {
        let mut h = Sha256::new();
        for &n in bin {
            let i = &inputs[n];
            h.update(i.rel.as_bytes());
            h.update(i.obj.size.unwrap_or(0).to_le_bytes());
            h.update(i.obj.etag.as_deref().unwrap_or("").as_bytes());
        }
        let name = format!("{COMPACTED_PREFIX}{}.parquet", hex(&h.finalize()[..16]));
        let out_rel = format!("{dir}/{name}");
        let out_path = staging.path().join(&name);
        let out_uri = format!("{}/{out_rel}", lake.root_uri().trim_end_matches('/'));
        let file = File::create(&out_path).map_err(|e| staging_err(&out_uri, &out_path, e))?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties()))
            .map_err(|e| encode_err(&out_uri, e))?;
        let mut sources: Vec<(String, u64)> = Vec::new();
        for &n in bin {
            let i = &mut inputs[n];
            let local = match i.local.take() {
                Some(l) => l,
                None => download(src, &i.obj, staging.path(), n)?,
            };
            // A file that does not read leaves the whole partition as it was (nothing is stored
            // or deleted before every input was read).
            let copied = copy_rows(i, &local, keep[n].as_ref(), schema, &mut w, &mut sources);
            let _ = std::fs::remove_file(&local);
            let dropped = copied.map_err(|why| encode_err(&i.obj.uri(), why))?;
            report.rows_superseded += dropped;
            consumed.push(n);
        }
        let rows: u64 = sources.iter().map(|s| s.1).sum();
        rows_total += rows;
        if rows == 0 {
            continue; // every row was an older copy: nothing to store
        }
        w.append_key_value_metadata(KeyValue::new(
            COMPACTED_SOURCES_KEY.to_string(),
            serde_json::to_string(&sources).expect("strings and numbers serialise"),
        ));
        w.close().map_err(|e| encode_err(&out_uri, e))?;
        let size = std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
        written.push((out_rel, out_path, size));
    }
    // Store every merged file before deleting anything: a crash in between leaves duplicates
    // that the next run resolves, never a loss.
    for (rel, path, _) in &written {
        lake.put_file(rel, path)?;
    }
    let written_rels: HashSet<&str> = written.iter().map(|w| w.0.as_str()).collect();
    for &n in &consumed {
        if !written_rels.contains(inputs[n].rel.as_str()) {
            lake.delete_file(&inputs[n].rel)?;
        }
    }
    report.partitions += 1;
    report.files_before += before;
    report.files_after += before - consumed.len() as u64 + written.len() as u64;
    report.rows += rows_total;
    let gone: HashSet<&str> = consumed.iter().map(|&n| inputs[n].rel.as_str()).collect();
    report.bytes_before += files.iter().map(|f| f.1.size.unwrap_or(0)).sum::<u64>();
    report.bytes_after +=
        files.iter().filter(|f| !gone.contains(f.0.as_str())).map(|f| f.1.size.unwrap_or(0)).sum::<u64>()
            + written.iter().map(|w| w.2).sum::<u64>();
    tracing::info!(partition = %dir, files_before = before, merged = consumed.len(), written = written.len(), rows = rows_total, "compacted");
    Ok(())
}

/// Copies the rows of one input into `w`, leaving out the stems of a compacted input not in
/// `keep`, and appends the rows' sources. Returns the rows left out.
fn copy_rows(
    i: &Input,
    local: &Path,
    keep: Option<&HashSet<String>>,
    schema: &SchemaRef,
    w: &mut ArrowWriter<File>,
    sources: &mut Vec<(String, u64)>,
) -> Result<u64, String> {
    let f = File::open(local).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| e.to_string())?
        .with_batch_size(8192)
        .build()
        .map_err(|e| e.to_string())?;
    // Row ranges of the input and whether they are kept.
    let ranges: Vec<(String, u64, bool)> = match (&i.sources, keep) {
        (Some(s), Some(k)) => s.iter().map(|(st, n)| (st.clone(), *n, k.contains(st))).collect(),
        _ => vec![(file_stem(&i.rel).to_string(), u64::MAX, true)],
    };
    let mut dropped = 0u64;
    let (mut range, mut left) = (0usize, ranges.first().map(|r| r.1).unwrap_or(0));
    let mut push_source = |stem: &str, n: u64| match sources.last_mut() {
        Some(last) if last.0 == stem => last.1 += n,
        _ => sources.push((stem.to_string(), n)),
    };
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        if batch.schema().fields() != schema.fields() {
            return Err("its columns are not the table's".into());
        }
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| e.to_string())?;
        let mut off = 0usize;
        while off < batch.num_rows() {
            while left == 0 {
                range += 1;
                left = ranges.get(range).map(|r| r.1).ok_or("more rows than its sources list")?;
            }
            let n = (batch.num_rows() - off).min(left.min(usize::MAX as u64) as usize);
            let (stem, _, kept) = &ranges[range];
            if *kept {
                w.write(&batch.slice(off, n)).map_err(|e| e.to_string())?;
                push_source(stem, n as u64);
            } else {
                dropped += n as u64;
            }
            off += n;
            left -= n as u64;
        }
    }
    Ok(dropped)
}
