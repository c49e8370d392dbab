//! CloudWatch data: Logs subscription payloads (as Firehose writes them to S3, or as a Lambda
//! subscription event), export-task files, and metric streams in JSON, into the
//! `lambda_invocations` and `lambda_metrics` tables.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use serde::Deserialize;
use trailwatch_core::lake;
use trailwatch_core::schema;
use trailwatch_core::time::parse_rfc3339_millis;

use crate::platform::Invocation;
use crate::writer::TableBatch;

/// A CloudWatch Logs subscription payload (`DATA_MESSAGE` or `CONTROL_MESSAGE`).
#[derive(Debug, Deserialize)]
pub struct Payload<'a> {
    #[serde(rename = "messageType", borrow)]
    pub message_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub owner: Cow<'a, str>,
    #[serde(rename = "logGroup", default, borrow)]
    pub log_group: Cow<'a, str>,
    #[serde(rename = "logStream", default, borrow)]
    pub log_stream: Cow<'a, str>,
    #[serde(rename = "logEvents", default, borrow)]
    pub log_events: Vec<PayloadEvent<'a>>,
}

/// One log event of a payload.
#[derive(Debug, Deserialize)]
pub struct PayloadEvent<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    pub timestamp: i64,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// A Lambda subscription event: `{"awslogs":{"data":"<base64 of the gzipped payload>"}}`.
#[derive(Debug, Deserialize)]
pub struct AwsLogsEvent {
    pub awslogs: AwsLogsData,
}

#[derive(Debug, Deserialize)]
pub struct AwsLogsData {
    pub data: String,
}

/// Decodes base64 (standard alphabet, padding optional, whitespace ignored).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A metric-stream datapoint in JSON (one object a line, as Firehose writes them).
#[derive(Debug, Deserialize)]
pub struct Datapoint<'a> {
    #[serde(default, borrow)]
    pub metric_stream_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub account_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub metric_name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub dimensions: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    pub timestamp: i64,
    #[serde(default)]
    pub value: Stats,
    #[serde(default, borrow)]
    pub unit: Option<Cow<'a, str>>,
}

/// A datapoint's statistics.
#[derive(Debug, Default, Deserialize)]
pub struct Stats {
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
}

/// The namespace kept from metric streams.
pub const LAMBDA_NAMESPACE: &str = "AWS/Lambda";

/// An invocation with the stream it came from.
pub struct InvocationRow<'a> {
    pub inv: &'a Invocation,
    pub log_group: &'a str,
    pub log_stream: &'a str,
}

/// Rows of `lambda_invocations`.
pub struct InvocationBatch {
    function_name: StringBuilder,
    function_version: StringBuilder,
    request_id: StringBuilder,
    start_time: TimestampMillisecondBuilder,
    end_time: TimestampMillisecondBuilder,
    duration_ms: Float64Builder,
    billed_duration_ms: Int64Builder,
    memory_size_mb: Int64Builder,
    max_memory_used_mb: Int64Builder,
    init_duration_ms: Float64Builder,
    restore_duration_ms: Float64Builder,
    status: StringBuilder,
    error_type: StringBuilder,
    timeout_seconds: Float64Builder,
    log_group: StringBuilder,
    log_stream: StringBuilder,
    log_event_id: StringBuilder,
    xray_trace_id: StringBuilder,
    rows: usize,
    bytes: usize,
}

fn ts() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::new().with_timezone("UTC")
}

impl Default for InvocationBatch {
    fn default() -> Self {
        InvocationBatch {
            function_name: StringBuilder::new(),
            function_version: StringBuilder::new(),
            request_id: StringBuilder::new(),
            start_time: ts(),
            end_time: ts(),
            duration_ms: Float64Builder::new(),
            billed_duration_ms: Int64Builder::new(),
            memory_size_mb: Int64Builder::new(),
            max_memory_used_mb: Int64Builder::new(),
            init_duration_ms: Float64Builder::new(),
            restore_duration_ms: Float64Builder::new(),
            status: StringBuilder::new(),
            error_type: StringBuilder::new(),
            timeout_seconds: Float64Builder::new(),
            log_group: StringBuilder::new(),
            log_stream: StringBuilder::new(),
            log_event_id: StringBuilder::new(),
            xray_trace_id: StringBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl TableBatch for InvocationBatch {
    type Row<'r> = InvocationRow<'r>;
    const TABLE: &'static str = lake::LAMBDA_INVOCATIONS_TABLE;

    fn schema() -> SchemaRef {
        schema::lambda_invocations_schema()
    }

    fn push(&mut self, r: &InvocationRow<'_>, size: usize) {
        let i = r.inv;
        self.function_name.append_option(i.function_name.as_deref());
        self.function_version.append_option(i.function_version.as_deref());
        self.request_id.append_value(&i.request_id);
        self.start_time.append_value(i.start_time);
        self.end_time.append_value(i.end_time);
        self.duration_ms.append_option(i.duration_ms);
        self.billed_duration_ms.append_option(i.billed_duration_ms);
        self.memory_size_mb.append_option(i.memory_size_mb);
        self.max_memory_used_mb.append_option(i.max_memory_used_mb);
        self.init_duration_ms.append_option(i.init_duration_ms);
        self.restore_duration_ms.append_option(i.restore_duration_ms);
        self.status.append_value(i.status.as_str());
        self.error_type.append_option(i.error_type.as_deref());
        self.timeout_seconds.append_option(i.timeout_seconds);
        self.log_group.append_option(non_empty(r.log_group));
        self.log_stream.append_option(non_empty(r.log_stream));
        self.log_event_id.append_value(&i.log_event_id);
        self.xray_trace_id.append_option(i.xray_trace_id.as_deref());
        self.rows += 1;
        self.bytes += size;
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn approx_bytes(&self) -> usize {
        self.bytes
    }

    fn finish(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.function_name.finish()),
            Arc::new(self.function_version.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.billed_duration_ms.finish()),
            Arc::new(self.memory_size_mb.finish()),
            Arc::new(self.max_memory_used_mb.finish()),
            Arc::new(self.init_duration_ms.finish()),
            Arc::new(self.restore_duration_ms.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.timeout_seconds.finish()),
            Arc::new(self.log_group.finish()),
            Arc::new(self.log_stream.finish()),
            Arc::new(self.log_event_id.finish()),
            Arc::new(self.xray_trace_id.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Self::schema(), cols).expect("builders follow the schema")
    }
}

/// Rows of `lambda_metrics`.
pub struct MetricBatch {
    stream: StringBuilder,
    namespace: StringBuilder,
    metric: StringBuilder,
    dimensions: MapBuilder<StringBuilder, StringBuilder>,
    timestamp: TimestampMillisecondBuilder,
    max: Float64Builder,
    min: Float64Builder,
    sum: Float64Builder,
    count: Float64Builder,
    unit: StringBuilder,
    rows: usize,
    bytes: usize,
}

impl Default for MetricBatch {
    fn default() -> Self {
        let names = MapFieldNames { entry: "entries".into(), key: "key".into(), value: "value".into() };
        MetricBatch {
            stream: StringBuilder::new(),
            namespace: StringBuilder::new(),
            metric: StringBuilder::new(),
            dimensions: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
            timestamp: ts(),
            max: Float64Builder::new(),
            min: Float64Builder::new(),
            sum: Float64Builder::new(),
            count: Float64Builder::new(),
            unit: StringBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }
}

impl TableBatch for MetricBatch {
    type Row<'r> = Datapoint<'r>;
    const TABLE: &'static str = lake::LAMBDA_METRICS_TABLE;

    fn schema() -> SchemaRef {
        schema::lambda_metrics_schema()
    }

    fn push(&mut self, d: &Datapoint<'_>, size: usize) {
        self.stream.append_option(d.metric_stream_name.as_deref());
        self.namespace.append_value(&d.namespace);
        self.metric.append_value(&d.metric_name);
        for (k, v) in &d.dimensions {
            self.dimensions.keys().append_value(k);
            self.dimensions.values().append_value(v);
        }
        self.dimensions.append(true).expect("keys and values have equal length");
        self.timestamp.append_value(d.timestamp);
        self.max.append_option(d.value.max);
        self.min.append_option(d.value.min);
        self.sum.append_option(d.value.sum);
        self.count.append_option(d.value.count);
        self.unit.append_option(d.unit.as_deref());
        self.rows += 1;
        self.bytes += size;
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn approx_bytes(&self) -> usize {
        self.bytes
    }

    fn finish(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.stream.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.dimensions.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.unit.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Self::schema(), cols).expect("builders follow the schema")
    }
}

/// One message of an export-task file with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLine {
    pub line: u64,
    pub timestamp: i64,
    pub message: String,
}

/// Reads export-task lines (`<ISO timestamp> <message>`); a line without a leading timestamp
/// continues the previous message (Lambda's REPORT carries its XRAY line that way).
pub struct ExportReader<R> {
    r: R,
    line: u64,
    pending: Option<ExportLine>,
    buf: String,
}

impl<R: BufRead> ExportReader<R> {
    pub fn new(r: R) -> Self {
        ExportReader { r, line: 0, pending: None, buf: String::new() }
    }

    /// The next message, `Ok(None)` at the end. Invalid UTF-8 is an error naming the line.
    pub fn next_message(&mut self) -> io::Result<Option<ExportLine>> {
        loop {
            self.buf.clear();
            let n = (&mut self.r).take(1 << 20).read_line(&mut self.buf)?;
            if n == 0 {
                return Ok(self.pending.take());
            }
            self.line += 1;
            let text = self.buf.trim_end_matches(['\n', '\r']);
            let stamp = text.split_once(' ').and_then(|(t, m)| parse_rfc3339_millis(t).map(|ms| (ms, m)));
            match stamp {
                Some((ms, msg)) => {
                    let next = ExportLine { line: self.line, timestamp: ms, message: msg.to_string() };
                    if let Some(done) = self.pending.replace(next) {
                        return Ok(Some(done));
                    }
                }
                None => match &mut self.pending {
                    Some(p) => {
                        p.message.push('\n');
                        p.message.push_str(text);
                    }
                    None if text.trim().is_empty() => {}
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("line {}: not an export-task line (`<ISO timestamp> <message>`)", self.line),
                        ))
                    }
                },
            }
        }
    }
}

/// True when the first bytes look like an export-task file: an ISO timestamp and a space.
pub fn looks_like_export(head: &[u8]) -> bool {
    let end = head.iter().position(|&b| b == b' ').unwrap_or(head.len()).min(40);
    std::str::from_utf8(&head[..end]).ok().and_then(parse_rfc3339_millis).is_some() && head.len() > end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("H4sI\nAAAA").unwrap(), [0x1f, 0x8b, 0x08, 0, 0, 0]);
        assert!(base64_decode("not*base64").is_none());
    }

    #[test]
    fn export_lines_join_continuations() {
        let text = "2024-01-02T03:04:05.000Z START RequestId: a Version: $LATEST\n2024-01-02T03:04:06.000Z REPORT RequestId: a\tDuration: 1.00 ms\t\nXRAY TraceId: 1-2-3\tSampled: true\t\n";
        let mut r = ExportReader::new(text.as_bytes());
        let a = r.next_message().unwrap().unwrap();
        assert_eq!((a.line, a.message.as_str()), (1, "START RequestId: a Version: $LATEST"));
        let b = r.next_message().unwrap().unwrap();
        assert_eq!(b.line, 2);
        assert!(b.message.ends_with("\nXRAY TraceId: 1-2-3\tSampled: true\t"), "{:?}", b.message);
        assert_eq!(r.next_message().unwrap(), None);
        assert!(looks_like_export(text.as_bytes()));
        assert!(!looks_like_export(b"{\"Records\":[]}"));
        assert!(ExportReader::new(&b"garbage line\n"[..]).next_message().is_err());
    }

    #[test]
    fn datapoints_and_payloads_parse() {
        let d: Datapoint = serde_json::from_str(r#"{"metric_stream_name":"s","account_id":"012345678901","region":"us-east-1","namespace":"AWS/Lambda","metric_name":"ConcurrentExecutions","dimensions":{},"timestamp":1611929698000,"value":{"max":5.0,"min":1.0,"sum":12.0,"count":4.0},"unit":"Count"}"#).unwrap();
        let mut b = MetricBatch::default();
        b.push(&d, 10);
        assert_eq!(b.finish().num_rows(), 1);
        let p: Payload = serde_json::from_str(r#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE"}]}"#).unwrap();
        assert_eq!(p.message_type, "CONTROL_MESSAGE");
    }
}
