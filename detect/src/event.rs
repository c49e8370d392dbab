//! What detectors see: one event per lake row, reduced to the fields they use.

use trailwatch_core::time::EpochMillis;

/// A CloudTrail record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiCall {
    pub time: EpochMillis,
    pub account: String,
    pub region: String,
    pub source: String,
    pub name: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Who called: the role for assumed-role sessions (session names change every session), else
    /// the ARN, else the service (`invokedBy`) for `AWSService` identities, else `type:principalId`.
    pub principal: String,
    /// The caller's account, when CloudTrail names it.
    pub principal_account: Option<String>,
    pub source_ip: String,
    pub user_agent: String,
    pub event_id: String,
    /// The Lambda function a `lambda.amazonaws.com` call names (its bare name).
    pub function: Option<String>,
    /// `timeout` of Create/UpdateFunctionConfiguration requests, in seconds.
    pub function_timeout_s: Option<f64>,
    /// `reservedConcurrentExecutions` of a PutFunctionConcurrency request.
    pub reserved_concurrency: Option<f64>,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationStatus {
    Success,
    Error,
    Timeout,
    OutOfMemory,
    Unknown,
}

impl InvocationStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "success" => InvocationStatus::Success,
            "error" => InvocationStatus::Error,
            "timeout" => InvocationStatus::Timeout,
            "out_of_memory" => InvocationStatus::OutOfMemory,
            _ => InvocationStatus::Unknown,
        }
    }
}

/// A Lambda invocation from its REPORT line.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub account: String,
    pub region: String,
    pub function: String,
    pub duration_ms: f64,
    pub billed_ms: f64,
    pub memory_mb: f64,
    pub status: InvocationStatus,
    pub timeout_s: Option<f64>,
    /// The duplicate key: retries share a request id, never a log event id.
    pub log_event_id: String,
    pub request_id: Option<String>,
    /// `Runtime.ExitError`, `Sandbox.Timedout` ...: how a failed invocation failed.
    pub error_type: Option<String>,
}

/// An `AWS/Lambda` metric-stream datapoint of one function, or of the whole account and
/// region when `function` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub time: EpochMillis,
    pub account: String,
    pub region: String,
    pub metric: String,
    pub function: String,
    pub sum: f64,
    pub max: f64,
}

/// The lake tables detect reads; each has its own watermark per account and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    CloudTrail = 0,
    Invocations = 1,
    Metrics = 2,
}

/// One lake row.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Api(ApiCall),
    Invocation(Invocation),
    Metric(MetricPoint),
}

impl Event {
    /// Event time: when the call was made, when the invocation ended, the datapoint's minute.
    pub fn time(&self) -> EpochMillis {
        match self {
            Event::Api(a) => a.time,
            Event::Invocation(i) => i.end,
            Event::Metric(m) => m.time,
        }
    }

    pub fn table(&self) -> Table {
        match self {
            Event::Api(_) => Table::CloudTrail,
            Event::Invocation(_) => Table::Invocations,
            Event::Metric(_) => Table::Metrics,
        }
    }

    pub fn shard(&self) -> (&str, &str) {
        match self {
            Event::Api(a) => (&a.account, &a.region),
            Event::Invocation(i) => (&i.account, &i.region),
            Event::Metric(m) => (&m.account, &m.region),
        }
    }

    /// The hash that identifies a duplicate: CloudTrail's event id, the REPORT line's log event
    /// id, or a datapoint's metric, function and minute.
    pub fn dedup_key(&self, key: &crate::stats::HashKey) -> u64 {
        match self {
            Event::Api(a) => key.parts(&["ct", &a.event_id]),
            Event::Invocation(i) => key.parts(&["inv", &i.log_event_id]),
            Event::Metric(m) => key.parts(&["m", &m.metric, &m.function, &m.time.to_string()]),
        }
    }
}

/// The bare function name from what Lambda's API accepts: a name, `account:function:name`, or
/// an ARN, each optionally with `:qualifier`.
pub fn function_name(s: &str) -> &str {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.iter().position(|p| *p == "function") {
        Some(i) if i + 1 < parts.len() => parts[i + 1],
        _ => parts[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_from_every_form() {
        assert_eq!(function_name("orders"), "orders");
        assert_eq!(function_name("orders:prod"), "orders");
        assert_eq!(function_name("arn:aws:lambda:eu-west-1:111122223333:function:orders"), "orders");
        assert_eq!(function_name("arn:aws:lambda:eu-west-1:111122223333:function:orders:7"), "orders");
        assert_eq!(function_name("111122223333:function:orders"), "orders");
    }
}
