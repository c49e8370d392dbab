//! Lake Parquet files to detector events: only the columns detectors use are decoded.

use std::borrow::Cow;
use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetStatisticsPolicy;
use serde::Deserialize;

use crate::event::{function_name, ApiCall, Event, Invocation, InvocationStatus, MetricPoint, Table};
use crate::footer::Schemas;
use crate::sigma::record::BatchView;
use crate::sigma::Rules;
use crate::strs::Strs;
use trailwatch_core::time::EpochMillis;

/// The account and region of a lake file, from its Hive path (`.../account_id=X/region=Y/...`).
pub fn partition_of(key: &str) -> Option<(String, String, String)> {
    let mut account = None;
    let mut region = None;
    let mut date = None;
    for seg in key.split('/') {
        if let Some(v) = seg.strip_prefix("account_id=") {
            account = Some(v.to_string());
        } else if let Some(v) = seg.strip_prefix("region=") {
            region = Some(v.to_string());
        } else if let Some(v) = seg.strip_prefix("date=") {
            date = Some(v.to_string());
        }
    }
    Some((account?, region?, date?))
}

const CLOUDTRAIL_COLS: &[&str] = &[
    "event_time",
    "event_source",
    "event_name",
    "error_code",
    "error_message",
    "user_identity",
    "source_ip_address",
    "user_agent",
    "event_id",
    "request_parameters",
];
/// The leaves of `user_identity` that [`principal`] and `principal_account` read, by path below it.
const USER_IDENTITY_LEAVES: &[&[&str]] = &[
    &["type"],
    &["arn"],
    &["account_id"],
    &["invoked_by"],
    &["principal_id"],
    &["session_context", "session_issuer", "arn"],
];
const INVOCATION_COLS: &[&str] = &[
    "function_name",
    "start_time",
    "end_time",
    "duration_ms",
    "billed_duration_ms",
    "memory_size_mb",
    "status",
    "timeout_seconds",
    "log_event_id",
    "request_id",
    "error_type",
];
const METRIC_COLS: &[&str] = &["metric_name", "dimensions", "timestamp", "value_sum", "value_max"];

/// Metrics detectors use; other `AWS/Lambda` datapoints are not turned into events.
const METRICS_USED: &[&str] = &[
    "Throttles",
    "ConcurrentExecutions",
    "Errors",
    "IteratorAge",
    "AsyncEventAge",
    "AsyncEventsDropped",
    "DeadLetterErrors",
    "DestinationDeliveryFailures",
    "ClaimedAccountConcurrency",
];
/// Of those, the ones whose account-level datapoints (no dimensions) are read too.
const ACCOUNT_METRICS: &[&str] = &["ConcurrentExecutions", "ClaimedAccountConcurrency"];

/// A lake file's decoded columns, which its events borrow their text from: decode a day's files,
/// then turn them into events that live as long as the batches.
#[derive(Debug, Clone)]
pub struct Decoded {
    table: Table,
    batches: Vec<RecordBatch>,
    /// Row ranges of the batches (by index), each with the source its rows came from (`None`:
    /// the file's own). A compacted file has a range per delivered object: thousands a batch.
    parts: Vec<(Option<u64>, usize, Range<usize>)>,
    /// Rules evaluated on each CloudTrail row as it becomes an event.
    rules: Rules,
}

impl Decoded {
    /// Decodes the columns detectors read from one lake file of `table`.
    pub fn new(data: Bytes, table: Table) -> Result<Decoded, String> {
        Decoded::with_rules(data, table, &Rules::default())
    }

    /// Decodes the columns detectors and `rules` read; each CloudTrail event carries the rules
    /// its record matches.
    pub fn with_rules(data: Bytes, table: Table, rules: &Rules) -> Result<Decoded, String> {
        Decoded::read(data, table, rules, &mut Schemas::default())
    }

    /// [`Decoded::with_rules`], reusing the schemas of earlier files of a run: for the many
    /// small files of a lake as ingest wrote it.
    pub fn read(data: Bytes, table: Table, rules: &Rules, schemas: &mut Schemas) -> Result<Decoded, String> {
        let (mut batches, mut parts) = (Vec::new(), Vec::new());
        let extra = if table == Table::CloudTrail && !rules.is_empty() { rules.columns() } else { vec![] };
        read_batches(data, table, &extra, schemas, |bi, src, b, rows| {
            if bi == batches.len() {
                batches.push(b.clone());
            }
            parts.push((src, bi, rows));
            Ok(())
        })?;
        Ok(Decoded { table, batches, parts, rules: rules.clone() })
    }

    /// Batches of the lake schema already in memory (rule samples, tests), with `rules`.
    pub fn from_batches(table: Table, batches: Vec<RecordBatch>, rules: &Rules) -> Decoded {
        let parts = batches.iter().enumerate().map(|(i, b)| (None, i, 0..b.num_rows())).collect();
        Decoded { table, batches, parts, rules: rules.clone() }
    }

    pub fn rows(&self) -> usize {
        self.parts.iter().map(|(_, _, r)| r.len()).sum()
    }

    /// The file's events for the shard `(account, region)`, each with its source: `source` for a
    /// file ingest wrote, and for a compacted file the source of each row's original file (its
    /// footer lists them), so watermarks over a compacted lake still need two delivered objects
    /// to agree.
    pub fn events<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        source: u64,
        out: &mut Vec<(u64, Event<'a>)>,
    ) -> Result<(), String> {
        let (views, parts) = self.views(account, region, source)?;
        for p in parts {
            let rows = &views[p.batch];
            out.extend(p.range.filter_map(|i| rows.event(i)).map(|e| (p.source, e)));
        }
        Ok(())
    }

    /// The file's batches with their columns resolved (once a batch), and its parts: row ranges
    /// of those batches, each with its source as [`Decoded::events`] gives it, for the shard
    /// `(account, region)`. Fails, before any row, on a missing column.
    pub fn views<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        source: u64,
    ) -> Result<(Vec<Rows<'a>>, Vec<Part>), String> {
        let mut views = Vec::with_capacity(self.batches.len());
        for b in &self.batches {
            views.push(match self.table {
                Table::CloudTrail => Rows::CloudTrail(CloudTrailRows::new(b, account, region, &self.rules)?),
                Table::Invocations => Rows::Invocations(InvocationRows::new(b, account, region)?),
                Table::Metrics => Rows::Metrics(MetricRows::new(b, account, region)?),
            });
        }
        let parts = self
            .parts
            .iter()
            .map(|(src, bi, rows)| Part { source: src.unwrap_or(source), batch: *bi, range: rows.clone() })
            .collect();
        Ok((views, parts))
    }
}

/// Reads one lake file of `table` into owned events for the shard `(account, region)`.
pub fn read_file(
    data: Bytes,
    table: Table,
    account: &str,
    region: &str,
    rules: &Rules,
    out: &mut Vec<Event<'static>>,
) -> Result<(), String> {
    let d = Decoded::with_rules(data, table, rules)?;
    let mut tmp = Vec::with_capacity(d.rows());
    d.events(account, region, 0, &mut tmp)?;
    out.extend(tmp.into_iter().map(|(_, e)| e.into_owned()));
    Ok(())
}

/// The row ranges of a compacted file's sources, as (source, rows), from its footer.
fn compacted_ranges(kv: Option<&Vec<parquet::file::metadata::KeyValue>>) -> Result<Option<Vec<(u64, usize)>>, String> {
    let Some(v) = kv
        .and_then(|kv| kv.iter().find(|k| k.key == trailwatch_core::lake::COMPACTED_SOURCES_KEY))
        .and_then(|k| k.value.as_deref())
    else {
        return Ok(None);
    };
    // Borrowed where the JSON has no escapes: a compacted file lists thousands of sources.
    let list: Vec<(Cow<str>, u64)> = serde_json::from_str::<Vec<(Borrowed, u64)>>(v)
        .map(|l| l.into_iter().map(|(s, n)| (s.0, n)).collect())
        .map_err(|e| format!("compacted sources: {e}"))?;
    Ok(Some(list.into_iter().map(|(stem, n)| (crate::stats::hash_str(&stem), n as usize)).collect()))
}

/// Files with more rows than this (compacted ones) read their strings as views.
const VIEW_ROWS: i64 = trailwatch_core::lake::PLAIN_FILE_ROWS as i64;

/// Decodes the columns detectors read (and the leaves below `extra` paths, lake names from the
/// root, which rules read), batch by batch; `each` gets a batch, a range of its rows (a compacted
/// file's rows of one source; ranges, not slices, since a slice per delivered object cost
/// allocations) and the source they came from.
fn read_batches(
    data: Bytes,
    table: Table,
    extra: &[Vec<&'static str>],
    schemas: &mut Schemas,
    mut each: impl FnMut(usize, Option<u64>, &RecordBatch, Range<usize>) -> Result<(), String>,
) -> Result<(), String> {
    // The Arrow schema ingest embeds (base64 flatbuffers) is not decoded: the Parquet types say
    // all the reader needs, and decoding it for every small file cost ~4% of a run.
    // Nor are column statistics: nothing here prunes on them.
    let mut options = ArrowReaderOptions::new()
        .with_skip_arrow_metadata(true)
        .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll);
    let raw = crate::footer::schema_range(&data).map(|r| data.slice(r));
    let known = raw.as_ref().and_then(|r| schemas.get(r));
    let seen = known.is_some();
    if let Some(s) = known {
        options = options.with_parquet_schema(s);
    }
    let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(data.clone(), options.clone())
        .map_err(|e| e.to_string())?;
    if let (Some(raw), false) = (&raw, seen) {
        schemas.insert(raw, builder.metadata().file_metadata().schema_descr_ptr());
    }
    // A large file's strings are read as views into its decoded pages and dictionaries
    // (`Strs`), not copied value by value into growing buffers: 4.5% fewer instructions over a
    // compacted lake. A small file's pages are too short for that to pay for building the views.
    if builder.metadata().file_metadata().num_rows() > VIEW_ROWS {
        let hint = std::sync::Arc::new(crate::strs::with_views(builder.schema()));
        let meta = ArrowReaderMetadata::try_new(builder.metadata().clone(), options.with_schema(hint))
            .map_err(|e| e.to_string())?;
        builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta);
    }
    let wanted = match table {
        Table::CloudTrail => CLOUDTRAIL_COLS,
        Table::Invocations => INVOCATION_COLS,
        Table::Metrics => METRIC_COLS,
    };
    // Leaves, not roots: `user_identity` has some twenty leaves and detectors read six; every
    // column chunk read costs a page reader and a codec.
    let parquet_schema = builder.parquet_schema();
    let mut leaves = Vec::new();
    let mut found = vec![false; wanted.len()];
    for (i, c) in parquet_schema.columns().iter().enumerate() {
        let path = c.path().parts();
        let w = wanted.iter().position(|n| *n == path[0]);
        if let Some(w) = w {
            found[w] = true;
        }
        if !extra.is_empty() && (path[0] == trailwatch_core::schema::UNKNOWN_FIELDS || under_any(path, extra)) {
            leaves.push(i);
            continue;
        }
        if w.is_none() {
            continue;
        }
        if path[0] != "user_identity" || USER_IDENTITY_LEAVES.iter().any(|l| l.iter().eq(path[1..].iter())) {
            leaves.push(i);
        }
    }
    if let Some(w) = found.iter().position(|f| !f) {
        return Err(format!("no column {}", wanted[w]));
    }
    let mask = ProjectionMask::leaves(parquet_schema, leaves);
    let ranges = compacted_ranges(builder.metadata().file_metadata().key_value_metadata())?;
    let reader = builder.with_projection(mask).with_batch_size(8192).build().map_err(|e| e.to_string())?;
    let (mut range, mut left) = (0usize, ranges.as_ref().and_then(|r| r.first()).map_or(0, |r| r.1));
    for (bi, batch) in reader.enumerate() {
        let batch = batch.map_err(|e| e.to_string())?;
        let Some(ranges) = &ranges else {
            each(bi, None, &batch, 0..batch.num_rows())?;
            continue;
        };
        let mut off = 0;
        while off < batch.num_rows() {
            while left == 0 {
                range += 1;
                left = ranges.get(range).ok_or("compacted sources: more rows than listed")?.1;
            }
            let n = left.min(batch.num_rows() - off);
            each(bi, Some(ranges[range].0), &batch, off..off + n)?;
            off += n;
            left -= n;
        }
    }
    Ok(())
}

/// Whether a Parquet leaf (its path, with the `list`/`element` levels of lists) lies below one of
/// `paths` (lake names from the root).
fn under_any(leaf: &[String], paths: &[Vec<&'static str>]) -> bool {
    let named: Vec<&str> =
        leaf.iter().map(String::as_str).filter(|s| !matches!(*s, "list" | "element" | "item")).collect();
    paths.iter().any(|p| named.len() >= p.len() && named.iter().zip(p).all(|(a, b)| a == b))
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    b.column_by_name(name).ok_or_else(|| format!("no column {name}"))
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<Strs<'a>, String> {
    Strs::of(col(b, name)?.as_ref()).ok_or_else(|| format!("column {name} is not a string"))
}

fn child<'a>(s: &'a StructArray, name: &str) -> Option<Strs<'a>> {
    s.column_by_name(name).and_then(|c| Strs::of(c.as_ref()))
}

fn get<'a>(a: Option<Strs<'a>>, i: usize) -> Option<&'a str> {
    a.and_then(|a| a.get(i))
}

/// A string borrowed from the JSON text when it has no escapes, else owned. (serde's own `Cow`
/// support borrows only a bare `Cow`, not one inside an `Option` or a tuple.)
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Borrowed<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// What detectors read from Lambda's request parameters.
#[derive(Deserialize)]
struct LambdaParams<'a> {
    #[serde(rename = "functionName", borrow, default)]
    function_name: Option<Borrowed<'a>>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(rename = "reservedConcurrentExecutions", default)]
    reserved: Option<f64>,
}

/// What detectors read from a Lambda API call's request parameters.
#[derive(Debug, Default, PartialEq)]
pub struct LambdaRequest<'a> {
    pub function: Option<Cow<'a, str>>,
    pub timeout_s: Option<f64>,
    pub reserved_concurrency: Option<f64>,
}

/// Who called: the role of an assumed-role session (session names change every session), else
/// the ARN, else the service for `AWSService` identities, else `type:principalId`.
pub fn principal<'a>(
    ty: Option<&'a str>,
    issuer: Option<&'a str>,
    arn: Option<&'a str>,
    invoked_by: Option<&'a str>,
    principal_id: Option<&'a str>,
) -> Cow<'a, str> {
    match (ty, issuer, arn, invoked_by) {
        (Some("AssumedRole"), Some(role), _, _) => Cow::Borrowed(role),
        (_, _, Some(arn), _) => Cow::Borrowed(arn),
        (_, _, _, Some(by)) => Cow::Borrowed(by),
        _ => Cow::Owned(format!("{}:{}", ty.unwrap_or("unknown"), principal_id.unwrap_or("unknown"))),
    }
}

/// The function a Lambda API call names, the timeout and reserved concurrency it sets, from its
/// request parameters.
pub fn lambda_params<'a>(event_source: &str, request_parameters: Option<&'a str>) -> LambdaRequest<'a> {
    if event_source != "lambda.amazonaws.com" {
        return LambdaRequest::default();
    }
    match request_parameters.and_then(|p| serde_json::from_str::<LambdaParams>(p).ok()) {
        Some(p) => LambdaRequest {
            function: p.function_name.map(|f| match f.0 {
                Cow::Borrowed(f) => Cow::Borrowed(function_name(f)),
                Cow::Owned(f) => Cow::Owned(function_name(&f).to_string()),
            }),
            timeout_s: p.timeout,
            reserved_concurrency: p.reserved,
        },
        None => LambdaRequest::default(),
    }
}

/// A CloudTrail batch's columns, resolved once, to turn any of its rows into an event.
pub struct CloudTrailRows<'a> {
    account: &'a str,
    region: &'a str,
    rules: &'a Rules,
    view: Option<BatchView<'a>>,
    time: &'a arrow_array::TimestampMillisecondArray,
    source: Strs<'a>,
    name: Strs<'a>,
    err: Strs<'a>,
    msg: Strs<'a>,
    ip: Strs<'a>,
    ua: Strs<'a>,
    id: Strs<'a>,
    params: Strs<'a>,
    ui_type: Option<Strs<'a>>,
    ui_arn: Option<Strs<'a>>,
    ui_acct: Option<Strs<'a>>,
    ui_by: Option<Strs<'a>>,
    ui_pid: Option<Strs<'a>>,
    issuer: Option<Strs<'a>>,
}

impl<'a> CloudTrailRows<'a> {
    fn new(b: &'a RecordBatch, account: &'a str, region: &'a str, rules: &'a Rules) -> Result<Self, String> {
        let ui = col(b, "user_identity")?.as_struct_opt().ok_or("user_identity is not a struct")?;
        let issuer = ui
            .column_by_name("session_context")
            .and_then(|c| c.as_struct_opt())
            .and_then(|sc| sc.column_by_name("session_issuer"))
            .and_then(|c| c.as_struct_opt())
            .and_then(|si| child(si, "arn"));
        Ok(CloudTrailRows {
            account,
            region,
            rules,
            view: (!rules.is_empty()).then(|| BatchView::new(b, &rules.fields)),
            time: col(b, "event_time")?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or("event_time is not a millisecond timestamp")?,
            source: strings(b, "event_source")?,
            name: strings(b, "event_name")?,
            err: strings(b, "error_code")?,
            msg: strings(b, "error_message")?,
            ip: strings(b, "source_ip_address")?,
            ua: strings(b, "user_agent")?,
            id: strings(b, "event_id")?,
            params: strings(b, "request_parameters")?,
            ui_type: child(ui, "type"),
            ui_arn: child(ui, "arn"),
            ui_acct: child(ui, "account_id"),
            ui_by: child(ui, "invoked_by"),
            ui_pid: child(ui, "principal_id"),
            issuer,
        })
    }

    fn time(&self, i: usize) -> Option<EpochMillis> {
        self.time.is_valid(i).then(|| self.time.value(i))
    }

    fn event(&self, i: usize) -> Option<Event<'a>> {
        let time = self.time(i)?;
        let (rules, ui) = (self.rules, (self.ui_type, self.issuer, self.ui_arn, self.ui_by, self.ui_pid));
        let principal = principal(get(ui.0, i), get(ui.1, i), get(ui.2, i), get(ui.3, i), get(ui.4, i));
        let event_source = get(Some(self.source), i).unwrap_or("");
        let lambda = lambda_params(event_source, get(Some(self.params), i));
        let event_name = get(Some(self.name), i).unwrap_or("");
        let (mut matched, mut hits) = (Vec::new(), Vec::new());
        if let Some(v) = &self.view {
            let row = v.row(i);
            rules.matches(&row, event_name, &mut matched);
            if !matched.is_empty() {
                rules.correlation_hits(&row, &matched, &mut hits);
            }
        }
        Some(Event::Api(ApiCall {
            time,
            account: Cow::Borrowed(self.account),
            region: Cow::Borrowed(self.region),
            source: Cow::Borrowed(event_source),
            name: Cow::Borrowed(event_name),
            error_code: get(Some(self.err), i).map(Cow::Borrowed),
            error_message: get(Some(self.msg), i).map(Cow::Borrowed),
            principal,
            principal_account: get(self.ui_acct, i).map(Cow::Borrowed),
            source_ip: Cow::Borrowed(get(Some(self.ip), i).unwrap_or("")),
            user_agent: Cow::Borrowed(get(Some(self.ua), i).unwrap_or("")),
            event_id: Cow::Borrowed(get(Some(self.id), i).unwrap_or("")),
            function: lambda.function,
            function_timeout_s: lambda.timeout_s,
            reserved_concurrency: lambda.reserved_concurrency,
            rules: matched.iter().filter(|&&r| rules.rules[r].generate).map(|&r| r as u32).collect(),
            correlated: hits,
        }))
    }
}

/// An invocations batch's columns, resolved once.
pub struct InvocationRows<'a> {
    account: &'a str,
    region: &'a str,
    start: &'a arrow_array::TimestampMillisecondArray,
    end: &'a arrow_array::TimestampMillisecondArray,
    dur: &'a arrow_array::Float64Array,
    timeout: &'a arrow_array::Float64Array,
    billed: &'a arrow_array::Int64Array,
    mem: &'a arrow_array::Int64Array,
    func: Strs<'a>,
    status: Strs<'a>,
    leid: Strs<'a>,
    rid: Strs<'a>,
    error_type: Strs<'a>,
}

impl<'a> InvocationRows<'a> {
    fn new(b: &'a RecordBatch, account: &'a str, region: &'a str) -> Result<Self, String> {
        let ts = |n: &str| {
            col(b, n)?.as_primitive_opt::<TimestampMillisecondType>().ok_or_else(|| format!("{n} is not a timestamp"))
        };
        let f64s = |n: &str| col(b, n)?.as_primitive_opt::<Float64Type>().ok_or_else(|| format!("{n} is not a double"));
        let i64s = |n: &str| col(b, n)?.as_primitive_opt::<Int64Type>().ok_or_else(|| format!("{n} is not a bigint"));
        Ok(InvocationRows {
            account,
            region,
            start: ts("start_time")?,
            end: ts("end_time")?,
            dur: f64s("duration_ms")?,
            timeout: f64s("timeout_seconds")?,
            billed: i64s("billed_duration_ms")?,
            mem: i64s("memory_size_mb")?,
            func: strings(b, "function_name")?,
            status: strings(b, "status")?,
            leid: strings(b, "log_event_id")?,
            rid: strings(b, "request_id")?,
            error_type: strings(b, "error_type")?,
        })
    }

    fn time(&self, i: usize) -> Option<EpochMillis> {
        (self.end.is_valid(i) && self.func.is_valid(i)).then(|| self.end.value(i))
    }

    fn event(&self, i: usize) -> Option<Event<'a>> {
        let function = get(Some(self.func), i)?;
        let end = self.time(i)?;
        let duration_ms = if self.dur.is_valid(i) { self.dur.value(i) } else { 0.0 };
        Some(Event::Invocation(Invocation {
            start: if self.start.is_valid(i) { self.start.value(i) } else { end },
            end,
            account: Cow::Borrowed(self.account),
            region: Cow::Borrowed(self.region),
            function: Cow::Borrowed(function),
            duration_ms,
            billed_ms: if self.billed.is_valid(i) { self.billed.value(i) as f64 } else { duration_ms.ceil() },
            memory_mb: if self.mem.is_valid(i) { self.mem.value(i) as f64 } else { 128.0 },
            status: InvocationStatus::parse(get(Some(self.status), i).unwrap_or("unknown")),
            timeout_s: self.timeout.is_valid(i).then(|| self.timeout.value(i)),
            log_event_id: Cow::Borrowed(get(Some(self.leid), i).unwrap_or("")),
            request_id: get(Some(self.rid), i).map(Cow::Borrowed),
            error_type: get(Some(self.error_type), i).map(Cow::Borrowed),
        }))
    }
}

/// A metrics batch's columns, resolved once.
pub struct MetricRows<'a> {
    account: &'a str,
    region: &'a str,
    name: Strs<'a>,
    ts: &'a arrow_array::TimestampMillisecondArray,
    sum: &'a arrow_array::Float64Array,
    max: &'a arrow_array::Float64Array,
    dims: &'a arrow_array::MapArray,
    keys: Strs<'a>,
    values: Strs<'a>,
}

impl<'a> MetricRows<'a> {
    fn new(b: &'a RecordBatch, account: &'a str, region: &'a str) -> Result<Self, String> {
        let dims = col(b, "dimensions")?.as_map_opt().ok_or("dimensions is not a map")?;
        Ok(MetricRows {
            account,
            region,
            name: strings(b, "metric_name")?,
            ts: col(b, "timestamp")?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or("timestamp is not a timestamp")?,
            sum: col(b, "value_sum")?.as_primitive_opt::<Float64Type>().ok_or("value_sum is not a double")?,
            max: col(b, "value_max")?.as_primitive_opt::<Float64Type>().ok_or("value_max is not a double")?,
            keys: Strs::of(dims.keys().as_ref()).ok_or("dimension names are not strings")?,
            values: Strs::of(dims.values().as_ref()).ok_or("dimension values are not strings")?,
            dims,
        })
    }

    fn time(&self, i: usize) -> Option<EpochMillis> {
        self.ts.is_valid(i).then(|| self.ts.value(i))
    }

    fn event(&self, i: usize) -> Option<Event<'a>> {
        let metric = get(Some(self.name), i)?;
        if !METRICS_USED.contains(&metric) {
            return None;
        }
        let time = self.time(i)?;
        let (keys, values) = (self.keys, self.values);
        // The map's whole key and value arrays, not `dims.value(i)`: names borrow from the batch.
        let entries = self.dims.value_offsets()[i] as usize..self.dims.value_offsets()[i + 1] as usize;
        let function =
            entries.clone().find(|&j| keys.value(j) == "FunctionName" && values.is_valid(j)).map(|j| values.value(j));
        // Account-level datapoints (no dimensions) are the shard's, for the metrics that have them.
        let function = match function {
            Some(f) => f,
            None if entries.is_empty() && ACCOUNT_METRICS.contains(&metric) => "",
            None => return None,
        };
        // A version or alias dimension would count the function twice.
        if entries.clone().any(|j| matches!(keys.value(j), "Resource" | "ExecutedVersion")) {
            return None;
        }
        Some(Event::Metric(MetricPoint {
            time,
            account: Cow::Borrowed(self.account),
            region: Cow::Borrowed(self.region),
            metric: Cow::Borrowed(metric),
            function: Cow::Borrowed(function),
            sum: if self.sum.is_valid(i) { self.sum.value(i) } else { 0.0 },
            max: if self.max.is_valid(i) { self.max.value(i) } else { 0.0 },
        }))
    }
}

/// A decoded batch's rows of one table, as events on demand: a day's rows are ordered by time
/// first and each becomes an event only when fed, so no vector of events (a few hundred bytes
/// each) is built, moved and dropped.
pub enum Rows<'a> {
    CloudTrail(CloudTrailRows<'a>),
    Invocations(InvocationRows<'a>),
    Metrics(MetricRows<'a>),
}

impl<'a> Rows<'a> {
    /// The event time of row `i`, or `None` when the row makes no event for want of it.
    pub fn time(&self, i: usize) -> Option<EpochMillis> {
        match self {
            Rows::CloudTrail(r) => r.time(i),
            Rows::Invocations(r) => r.time(i),
            Rows::Metrics(r) => r.time(i),
        }
    }

    /// Row `i` as an event, or `None` when it makes none (no time, a metric detectors ignore).
    pub fn event(&self, i: usize) -> Option<Event<'a>> {
        match self {
            Rows::CloudTrail(r) => r.event(i),
            Rows::Invocations(r) => r.event(i),
            Rows::Metrics(r) => r.event(i),
        }
    }
}

/// Rows of one source in a decoded batch: the source, the batch (an index into the views the
/// part came with) and the row range.
#[derive(Debug, Clone)]
pub struct Part {
    pub source: u64,
    pub batch: usize,
    pub range: Range<usize>,
}
