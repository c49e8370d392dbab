//! What detectors see: one event per lake row, reduced to the fields they use.
//!
//! Text fields borrow from the decoded Arrow batches ([`Str`]): a run over the lake no longer
//! allocates and frees a dozen strings a row (that was a third of a run over a compacted lake).

use std::borrow::Cow;

use trailwatch_core::time::EpochMillis;

/// A text field: borrowed from the batch it was read from, or owned (tests, derived values).
pub type Str<'a> = Cow<'a, str>;

/// A CloudTrail record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiCall<'a> {
    pub time: EpochMillis,
    pub account: Str<'a>,
    pub region: Str<'a>,
    pub source: Str<'a>,
    pub name: Str<'a>,
    pub error_code: Option<Str<'a>>,
    pub error_message: Option<Str<'a>>,
    /// Who called: the role for assumed-role sessions (session names change every session), else
    /// the ARN, else the service (`invokedBy`) for `AWSService` identities, else `type:principalId`.
    pub principal: Str<'a>,
    /// The caller's account, when CloudTrail names it.
    pub principal_account: Option<Str<'a>>,
    pub source_ip: Str<'a>,
    pub user_agent: Str<'a>,
    pub event_id: Str<'a>,
    /// The Lambda function a `lambda.amazonaws.com` call names (its bare name).
    pub function: Option<Str<'a>>,
    /// `timeout` of Create/UpdateFunctionConfiguration requests, in seconds.
    pub function_timeout_s: Option<f64>,
    /// `reservedConcurrentExecutions` of a PutFunctionConcurrency request.
    pub reserved_concurrency: Option<f64>,
    /// The rules (indices in the config's rule set) this record matches that report matches.
    pub rules: Vec<u32>,
    /// Its matches of rules that correlation rules count.
    pub correlated: Vec<crate::sigma::CorrHit>,
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
pub struct Invocation<'a> {
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub account: Str<'a>,
    pub region: Str<'a>,
    pub function: Str<'a>,
    pub duration_ms: f64,
    pub billed_ms: f64,
    pub memory_mb: f64,
    pub status: InvocationStatus,
    pub timeout_s: Option<f64>,
    /// The duplicate key: retries share a request id, never a log event id.
    pub log_event_id: Str<'a>,
    pub request_id: Option<Str<'a>>,
    /// `Runtime.ExitError`, `Sandbox.Timedout` ...: how a failed invocation failed.
    pub error_type: Option<Str<'a>>,
}

/// An `AWS/Lambda` metric-stream datapoint of one function, or of the whole account and
/// region when `function` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint<'a> {
    pub time: EpochMillis,
    pub account: Str<'a>,
    pub region: Str<'a>,
    pub metric: Str<'a>,
    pub function: Str<'a>,
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
pub enum Event<'a> {
    Api(ApiCall<'a>),
    Invocation(Invocation<'a>),
    Metric(MetricPoint<'a>),
}

impl<'a> Event<'a> {
    /// The account and region when the event borrows them (from decoded lake rows that outlive
    /// it), with that lifetime: two events whose text is the same borrowed bytes share a shard.
    pub fn borrowed_shard(&self) -> Option<(&'a str, &'a str)> {
        match self.shard_text() {
            (Cow::Borrowed(a), Cow::Borrowed(r)) => Some((*a, *r)),
            _ => None,
        }
    }

    /// The account and region, as held.
    fn shard_text(&self) -> (&Cow<'a, str>, &Cow<'a, str>) {
        match self {
            Event::Api(a) => (&a.account, &a.region),
            Event::Invocation(i) => (&i.account, &i.region),
            Event::Metric(m) => (&m.account, &m.region),
        }
    }

    pub fn shard(&self) -> (&str, &str) {
        let (account, region) = self.shard_text();
        (account, region)
    }
}

impl Event<'_> {
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

    /// The same event, owning its text: to keep it past the batches it was read from.
    pub fn into_owned(self) -> Event<'static> {
        fn own(s: Str<'_>) -> Str<'static> {
            Cow::Owned(s.into_owned())
        }
        fn own_opt(s: Option<Str<'_>>) -> Option<Str<'static>> {
            s.map(own)
        }
        match self {
            Event::Api(a) => Event::Api(ApiCall {
                time: a.time,
                account: own(a.account),
                region: own(a.region),
                source: own(a.source),
                name: own(a.name),
                error_code: own_opt(a.error_code),
                error_message: own_opt(a.error_message),
                principal: own(a.principal),
                principal_account: own_opt(a.principal_account),
                source_ip: own(a.source_ip),
                user_agent: own(a.user_agent),
                event_id: own(a.event_id),
                function: own_opt(a.function),
                function_timeout_s: a.function_timeout_s,
                reserved_concurrency: a.reserved_concurrency,
                rules: a.rules,
                correlated: a.correlated,
            }),
            Event::Invocation(i) => Event::Invocation(Invocation {
                start: i.start,
                end: i.end,
                account: own(i.account),
                region: own(i.region),
                function: own(i.function),
                duration_ms: i.duration_ms,
                billed_ms: i.billed_ms,
                memory_mb: i.memory_mb,
                status: i.status,
                timeout_s: i.timeout_s,
                log_event_id: own(i.log_event_id),
                request_id: own_opt(i.request_id),
                error_type: own_opt(i.error_type),
            }),
            Event::Metric(m) => Event::Metric(MetricPoint {
                time: m.time,
                account: own(m.account),
                region: own(m.region),
                metric: own(m.metric),
                function: own(m.function),
                sum: m.sum,
                max: m.max,
            }),
        }
    }

    /// The hash that identifies a duplicate: CloudTrail's event id, the REPORT line's log event
    /// id, or a datapoint's metric, function and minute.
    pub fn dedup_key(&self, key: &crate::stats::HashKey) -> u64 {
        match self {
            Event::Api(a) => key.parts(&["ct", &a.event_id]),
            Event::Invocation(i) => key.parts(&["inv", &i.log_event_id]),
            Event::Metric(m) => key.parts(&["m", &m.metric, &m.function, decimal(m.time, &mut [0; 20])]),
        }
    }
}

/// `n` in decimal, as `to_string` writes it, without allocating (a metric's dedup key).
fn decimal(n: i64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    std::str::from_utf8(&buf[at..]).expect("ASCII digits")
}

/// The bare function name from what Lambda's API accepts: a name, `account:function:name`, or
/// an ARN, each optionally with `:qualifier`.
pub fn function_name(s: &str) -> &str {
    // The segment after the first `function` segment, else the first segment, found in one pass
    // over the bytes: splitting every ARN with `str::split` (or searching it with `str::find`)
    // cost about 900 instructions a call, 1% of a run over a compacted lake.
    let b = s.as_bytes();
    let end_of = |from: usize| b[from..].iter().position(|&c| c == b':').map_or(b.len(), |i| from + i);
    let mut start = 0;
    loop {
        let end = end_of(start);
        if end == b.len() {
            break;
        }
        if &b[start..end] == b"function" {
            return &s[end + 1..end_of(end + 1)];
        }
        start = end + 1;
    }
    &s[..end_of(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// As splitting on `:` and taking the segment after the first `function` one (else the
        /// first segment) gives it.
        #[test]
        fn function_names_are_the_segment_after_function(
            segs in proptest::collection::vec(proptest::sample::select(vec!["function", "fn", "", "a", "function:x", "arn"]), 0..6),
        ) {
            let s = segs.join(":");
            let mut parts = s.split(':');
            let want = match parts.position(|p| p == "function").and_then(|_| parts.next()) {
                Some(name) => name,
                None => s.split(':').next().unwrap_or(&s),
            };
            proptest::prop_assert_eq!(function_name(&s), want, "{}", s);
        }
    }

    #[test]
    fn decimals_are_those_to_string_writes() {
        for n in [0, 7, -7, 10, 1_767_225_600_000, i64::MAX, i64::MIN] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn function_names_from_every_form() {
        assert_eq!(function_name("orders"), "orders");
        assert_eq!(function_name("orders:prod"), "orders");
        assert_eq!(function_name("arn:aws:lambda:eu-west-1:111122223333:function:orders"), "orders");
        assert_eq!(function_name("arn:aws:lambda:eu-west-1:111122223333:function:orders:7"), "orders");
        assert_eq!(function_name("111122223333:function:orders"), "orders");
    }
}
