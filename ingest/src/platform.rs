//! Lambda platform log lines → invocations.
//!
//! One invocation per REPORT line (text log format) or `platform.report` record (JSON log
//! format). Status comes from the REPORT itself, else from timeout and runtime-exit lines for
//! the same request id in the same slice of events, else `unknown` (a text REPORT without a
//! Status does not prove success). Nothing here panics on any input.

/// One log event of a CloudWatch Logs payload (or one message of an export-task file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEvent<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub message: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Timeout,
    OutOfMemory,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::OutOfMemory => "out_of_memory",
            Status::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Status {
        match s.trim().to_ascii_lowercase().as_str() {
            "success" => Status::Success,
            "timeout" => Status::Timeout,
            "error" | "failure" => Status::Error,
            _ => Status::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub request_id: String,
    pub start_time: i64,
    pub end_time: i64,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<i64>,
    pub memory_size_mb: Option<i64>,
    pub max_memory_used_mb: Option<i64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
    pub status: Status,
    pub error_type: Option<String>,
    pub timeout_seconds: Option<f64>,
    pub log_event_id: String,
    pub xray_trace_id: Option<String>,
}

/// The function name and version a log group and stream say: `/aws/lambda/<function>`, or a
/// custom group's stream `YYYY/MM/DD/<function>[<version>]<instance>`; the version from `[...]`.
pub fn function_from(log_group: &str, log_stream: &str) -> (Option<String>, Option<String>) {
    let tail = log_stream.rsplit('/').next().unwrap_or("");
    let (stream_name, version) = match (tail.find('['), tail.find(']')) {
        (Some(a), Some(b)) if a < b => {
            (Some(&tail[..a]).filter(|s| !s.is_empty()), Some(&tail[a + 1..b]).filter(|s| !s.is_empty()))
        }
        _ => (None, None),
    };
    let from_group = log_group.strip_prefix("/aws/lambda/").filter(|s| !s.is_empty());
    let name = from_group.or(stream_name).map(str::to_string);
    // A version means a Lambda stream; without a name it still says nothing about the function.
    (name, version.map(str::to_string))
}

/// Normalises the escapes some sources write literally (`\t`, `\n` as two characters).
fn unescape(msg: &str) -> std::borrow::Cow<'_, str> {
    if msg.contains("\\t") || msg.contains("\\n") {
        std::borrow::Cow::Owned(msg.replace("\\t", "\t").replace("\\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(msg)
    }
}

fn num_before(s: &str, unit: &str) -> Option<f64> {
    s.trim().strip_suffix(unit)?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A REPORT line's fields.
#[derive(Default)]
struct Report {
    request_id: String,
    duration: Option<f64>,
    billed: Option<i64>,
    memory: Option<i64>,
    max_memory: Option<i64>,
    init: Option<f64>,
    restore: Option<f64>,
    status: Option<Status>,
    error_type: Option<String>,
    trace: Option<String>,
}

fn parse_text_report(msg: &str) -> Option<Report> {
    let body = msg.trim_start().strip_prefix("REPORT RequestId:")?;
    let mut r = Report::default();
    let mut fields = body.split(['\t', '\n']);
    r.request_id = fields.next()?.trim().to_string();
    if r.request_id.is_empty() {
        return None;
    }
    for f in fields {
        let Some((k, v)) = f.split_once(':') else { continue };
        let v = v.trim();
        match k.trim() {
            "Duration" => r.duration = num_before(v, "ms"),
            "Billed Duration" => r.billed = num_before(v, "ms").map(|x| x as i64),
            "Memory Size" => r.memory = num_before(v, "MB").map(|x| x as i64),
            "Max Memory Used" => r.max_memory = num_before(v, "MB").map(|x| x as i64),
            "Init Duration" => r.init = num_before(v, "ms"),
            "Restore Duration" => r.restore = num_before(v, "ms"),
            "Status" => r.status = Some(Status::parse(v)),
            "Error Type" => r.error_type = Some(v.to_string()).filter(|s| !s.is_empty()),
            "XRAY TraceId" => r.trace = Some(v.to_string()).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    Some(r)
}

fn parse_json_report(msg: &str) -> Option<Report> {
    let t = msg.trim();
    if !t.starts_with('{') || !t.contains("platform.report") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    if v.get("type")?.as_str()? != "platform.report" {
        return None;
    }
    let rec = v.get("record")?;
    let m = rec.get("metrics");
    let f = |k: &str| m.and_then(|m| m.get(k)).and_then(serde_json::Value::as_f64).filter(|x| x.is_finite());
    let trace = rec
        .pointer("/tracing/value")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.split(';').find_map(|p| p.strip_prefix("Root=")))
        .map(str::to_string);
    Some(Report {
        request_id: rec.get("requestId")?.as_str()?.to_string(),
        duration: f("durationMs"),
        billed: f("billedDurationMs").map(|x| x as i64),
        memory: f("memorySizeMB").map(|x| x as i64),
        max_memory: f("maxMemoryUsedMB").map(|x| x as i64),
        init: f("initDurationMs"),
        restore: f("restoreDurationMs"),
        status: rec.get("status").and_then(serde_json::Value::as_str).map(Status::parse),
        error_type: rec.get("errorType").and_then(serde_json::Value::as_str).map(str::to_string),
        trace,
    })
}

/// What a non-REPORT line says about a request: (request id, timeout seconds, exit kind).
enum Signal {
    Timeout(String, Option<f64>),
    Exit(String, bool /* out of memory */, String /* error type */),
    Version(String, String),
}

fn signal(msg: &str) -> Option<Signal> {
    let t = msg.trim();
    if let Some(rest) = t.strip_prefix("START RequestId:") {
        let mut it = rest.split_whitespace();
        let id = it.next()?.to_string();
        let version = rest.split_once("Version:").map(|(_, v)| v.trim().to_string())?;
        return Some(Signal::Version(id, version));
    }
    if let Some(pos) = t.find("Task timed out after") {
        // `<timestamp> <request id> Task timed out after 3.00 seconds`
        let id = t[..pos].split_whitespace().last()?.to_string();
        let secs =
            t[pos + "Task timed out after".len()..].split_whitespace().next().and_then(|n| n.parse::<f64>().ok());
        return Some(Signal::Timeout(id, secs.filter(|s| s.is_finite())));
    }
    if let Some(rest) = t.strip_prefix("RequestId:") {
        if rest.contains("Error:") || rest.contains("Runtime.") {
            let id = rest.split_whitespace().next()?.to_string();
            let oom = rest.contains("out of memory") || rest.contains("Runtime.OutOfMemory");
            let kind =
                rest.split_whitespace().find(|w| w.starts_with("Runtime.")).unwrap_or("Runtime.ExitError").to_string();
            return Some(Signal::Exit(id, oom || rest.contains("signal: killed") && kind == "Runtime.ExitError", kind));
        }
    }
    if t.starts_with('{') && t.contains("platform.runtimeDone") {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let rec = v.get("record")?;
        let id = rec.get("requestId")?.as_str()?.to_string();
        match rec.get("status").and_then(serde_json::Value::as_str) {
            Some("timeout") => return Some(Signal::Timeout(id, None)),
            Some("error" | "failure") => {
                let et = rec.get("errorType").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
                return Some(Signal::Exit(id, et.contains("OutOfMemory"), et));
            }
            _ => {}
        }
    }
    if t.starts_with('{') && t.contains("platform.start") {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let rec = v.get("record")?;
        return Some(Signal::Version(
            rec.get("requestId")?.as_str()?.to_string(),
            rec.get("version")?.as_str()?.to_string(),
        ));
    }
    None
}

/// Every invocation the events report, in order.
pub fn invocations(log_group: &str, log_stream: &str, events: &[LogEvent]) -> Vec<Invocation> {
    let (name, stream_version) = function_from(log_group, log_stream);
    let mut signals = Vec::new();
    let mut reports = Vec::new();
    for e in events {
        let msg = unescape(e.message);
        if let Some(r) = parse_text_report(&msg).or_else(|| parse_json_report(&msg)) {
            reports.push((e, r));
        } else if let Some(s) = signal(&msg) {
            signals.push(s);
        }
    }
    reports
        .into_iter()
        .map(|(e, r)| {
            let mut status = r.status;
            let mut error_type = r.error_type;
            let mut timeout_seconds = None;
            let mut version = None;
            for s in &signals {
                match s {
                    Signal::Timeout(id, secs) if *id == r.request_id => {
                        timeout_seconds = timeout_seconds.or(*secs);
                        status.get_or_insert(Status::Timeout);
                    }
                    Signal::Exit(id, oom, kind) if *id == r.request_id => {
                        let oom = *oom || (r.memory.is_some() && r.memory == r.max_memory);
                        if status.is_none() || status == Some(Status::Error) && oom {
                            status = Some(if oom { Status::OutOfMemory } else { Status::Error });
                        }
                        if error_type.is_none() && !kind.is_empty() {
                            error_type = Some(kind.clone());
                        }
                    }
                    Signal::Version(id, v) if *id == r.request_id => version = Some(v.clone()),
                    _ => {}
                }
            }
            let duration = r.duration.unwrap_or(0.0);
            Invocation {
                function_name: name.clone(),
                function_version: version.or_else(|| stream_version.clone()),
                request_id: r.request_id,
                start_time: e.timestamp.saturating_sub(duration.round() as i64),
                end_time: e.timestamp,
                duration_ms: r.duration,
                billed_duration_ms: r.billed,
                memory_size_mb: r.memory,
                max_memory_used_mb: r.max_memory,
                init_duration_ms: r.init,
                restore_duration_ms: r.restore,
                status: status.unwrap_or(Status::Unknown),
                error_type,
                timeout_seconds,
                log_event_id: e.id.to_string(),
                xray_trace_id: r.trace,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ts: i64, m: &str) -> LogEvent<'static> {
        LogEvent {
            id: Box::leak(id.to_string().into_boxed_str()),
            timestamp: ts,
            message: Box::leak(m.to_string().into_boxed_str()),
        }
    }

    #[test]
    fn report_with_and_without_init_and_xray() {
        let evs = [
            ev("1", 1000, "REPORT RequestId: a\tDuration: 118.53 ms\tBilled Duration: 119 ms\tMemory Size: 512 MB\tMax Memory Used: 81 MB\tInit Duration: 402.17 ms\t\nXRAY TraceId: 1-abc-def\tSegmentId: 0a\tSampled: true\t\n"),
            ev("2", 2000, "REPORT RequestId: b\tDuration: 49.90 ms\tBilled Duration: 50 ms\tMemory Size: 512 MB\tMax Memory Used: 82 MB\t\n"),
            ev("3", 2001, "2024-01-02T03:00:00.005Z\tb\tINFO\tan application line\n"),
        ];
        let inv = invocations("/aws/lambda/orders", "2024/01/02/[$LATEST]abc", &evs);
        assert_eq!(inv.len(), 2);
        assert_eq!(inv[0].init_duration_ms, Some(402.17));
        assert_eq!(inv[0].xray_trace_id.as_deref(), Some("1-abc-def"));
        assert_eq!(inv[0].start_time, 1000 - 119);
        assert_eq!(inv[1].init_duration_ms, None);
        assert_eq!(inv[1].status, Status::Unknown);
        assert_eq!(inv[1].function_name.as_deref(), Some("orders"));
        assert_eq!(inv[1].function_version.as_deref(), Some("$LATEST"));
    }

    #[test]
    fn timeout_with_literal_escapes() {
        let evs = [
            ev("1", 10, "REPORT RequestId: 7c95\\tDuration: 3003.16 ms\\tBilled Duration: 3000 ms\\tMemory Size: 128 MB\\tMax Memory Used: 48 MB\\tInit Duration: 127.02 ms\\t\\n"),
            ev("2", 11, "2020-06-09T15:02:26.150Z 7c95 Task timed out after 3.00 seconds\\n\\n"),
        ];
        let inv = invocations("/aws/lambda/f", "", &evs);
        assert_eq!(inv[0].status, Status::Timeout);
        assert_eq!(inv[0].timeout_seconds, Some(3.0));
        assert_eq!(inv[0].init_duration_ms, Some(127.02));
    }

    #[test]
    fn out_of_memory_after_report_and_explicit_status() {
        let evs = [
            ev("1", 10, "REPORT RequestId: x\tDuration: 3003.28 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 35 MB\t"),
            ev("2", 11, "RequestId: x Error: Runtime exited with error: signal: killed\nRuntime.ExitError\n"),
            ev("3", 20, "REPORT RequestId: y\tDuration: 5.0 ms\tBilled Duration: 5 ms\tMemory Size: 128 MB\tMax Memory Used: 35 MB\tStatus: error\tError Type: Runtime.ExitError\n"),
        ];
        let inv = invocations("/aws/lambda/f", "", &evs);
        assert_eq!(inv[0].status, Status::OutOfMemory);
        assert_eq!(inv[0].error_type.as_deref(), Some("Runtime.ExitError"));
        assert_eq!(inv[1].status, Status::Error);
        assert_eq!(inv[1].error_type.as_deref(), Some("Runtime.ExitError"));
    }

    #[test]
    fn json_format_and_retries_sharing_a_request_id() {
        let evs = [
            ev(
                "1",
                10,
                r#"{"time":"t","type":"platform.report","record":{"requestId":"r","metrics":{"durationMs":209.8,"billedDurationMs":210,"memorySizeMB":256,"maxMemoryUsedMB":70,"initDurationMs":250.3},"tracing":{"value":"Root=1-65;Parent=5;Sampled=1"},"status":"success"}}"#,
            ),
            ev(
                "2",
                20,
                r#"{"time":"t","type":"platform.report","record":{"requestId":"r","metrics":{"durationMs":3000.0},"status":"timeout"}}"#,
            ),
            ev(
                "3",
                21,
                r#"{"timestamp":"t","level":"INFO","requestId":"r","message":"platform.report is just text here"}"#,
            ),
        ];
        let inv = invocations("/custom/app", "2023/11/16/my-fn[12]abcd", &evs);
        assert_eq!(inv.len(), 2);
        assert_eq!((inv[0].status, inv[1].status), (Status::Success, Status::Timeout));
        assert_eq!(inv[0].xray_trace_id.as_deref(), Some("1-65"));
        assert_eq!(inv[0].function_name.as_deref(), Some("my-fn"));
        assert_eq!(inv[0].function_version.as_deref(), Some("12"));
        assert_ne!(inv[0].log_event_id, inv[1].log_event_id);
    }

    #[test]
    fn names_and_garbage() {
        assert_eq!(function_from("/aws/rds/cluster", "x"), (None, None));
        for m in [
            "REPORT RequestId:",
            "REPORT RequestId: a\tDuration: NaN ms",
            "RequestId:",
            "{\"type\":\"platform.report\"",
            "Task timed out after",
            "é\\",
        ] {
            let _ = invocations("g", "s[", &[ev("1", i64::MIN, m)]);
        }
    }
}
