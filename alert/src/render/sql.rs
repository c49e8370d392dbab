//! The Athena SQL of the evidence queries: safe literals, the subject's shape, the table and
//! filters for each kind.

use trailwatch_core::finding::{Finding, FindingKind};
use trailwatch_core::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE};
use trailwatch_core::time::{format_rfc3339_millis, utc_date, EpochMillis};

use super::kinds::KindAlert;
use super::{RenderConfig, DAY, HOUR};

/// Bytes of the SQL expression for a subject in an evidence query; longer ones match a prefix.
const SQL_SUBJECT_MAX: usize = 2048;
/// Bytes of the SQL expression for an account id or region (real ones are far shorter).
pub(super) const SQL_PARTITION_MAX: usize = 128;

/// A SQL string expression for exactly `s` on one line of printable ASCII: quotes doubled, and
/// anything else unsafe (controls, line breaks, non-ASCII, `<>&` the email must not carry)
/// spliced in as `chr(N)`, so attacker text can neither end the string nor add a line, and the
/// query still matches the exact value (Athena engine 2 and 3 both have `chr` and `||`).
pub(super) fn sql_str(s: &str) -> String {
    let safe = |c: char| matches!(c, ' '..='~') && !matches!(c, '<' | '>' | '&');
    let quote = |run: &str| format!("'{}'", run.replace('\'', "''"));
    let mut parts: Vec<String> = Vec::new();
    let mut run = String::new();
    for c in s.chars() {
        if safe(c) {
            run.push(c);
            continue;
        }
        if !run.is_empty() {
            parts.push(quote(&std::mem::take(&mut run)));
        }
        parts.push(format!("chr({})", c as u32));
    }
    if !run.is_empty() || parts.is_empty() {
        parts.push(quote(&run));
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        format!("({})", parts.join(" || "))
    }
}

/// The longest prefix of `v` whose SQL expression takes at most `max` bytes: its length in
/// characters, the expression, and whether it is all of `v`. Bounds a query whatever the subject.
fn sql_prefix(v: &str, max: usize) -> (usize, String, bool) {
    let whole = sql_str(v);
    if whole.len() <= max {
        return (v.chars().count(), whole, true);
    }
    let ends: Vec<usize> = v.char_indices().map(|(i, _)| i).skip(1).chain([v.len()]).collect();
    // The expression grows with the prefix: find the longest that fits.
    let (mut lo, mut hi) = (0, ends.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if sql_str(&v[..ends[mid - 1]]).len() <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let prefix = if lo == 0 { "" } else { &v[..ends[lo - 1]] };
    (lo, sql_str(prefix), false)
}

/// `col = 'v'`, or a prefix match when `v` is too long for a readable query.
pub(super) fn sql_eq(col: &str, v: &str, max: usize) -> String {
    match sql_prefix(v, max) {
        (_, lit, true) => format!("{col} = {lit}"),
        (n, lit, false) => format!("substr({col}, 1, {n}) = {lit}"),
    }
}

/// A quoted identifier from configuration, reduced to characters Glue names use.
fn ident(s: &str) -> String {
    let s: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    format!("\"{s}\"")
}

fn ts(ms: EpochMillis) -> String {
    let t = format_rfc3339_millis(ms);
    format!("TIMESTAMP '{}'", t.trim_end_matches('Z').replacen('T', " ", 1))
}

/// What a subject names, which decides the table and the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape<'a> {
    /// `source:name`, e.g. `s3.amazonaws.com:GetObject`.
    Api(&'a str, &'a str),
    /// A principal ARN (a role for assumed-role sessions).
    Arn,
    /// `type:principalId`, for identities without an ARN.
    Typed(&'a str, &'a str),
    /// An AWS service principal (`invokedBy`).
    Service,
    /// CloudTrail itself, for `log_silence`.
    Trail,
    /// A missing source warning (`source:lambda_logs`).
    Source(&'a str),
    /// A bare name: a Lambda function.
    Name,
}

/// What `subject` names for a finding of `kind`: what the kind reads it as, else what its form says.
pub(super) fn shape<'a>(kind: &FindingKind, subject: &'a str) -> Shape<'a> {
    kind.subject_means(subject).unwrap_or_else(|| form(subject))
}

fn form(subject: &str) -> Shape<'_> {
    if let Some((src, name)) = subject.split_once(':') {
        if src.ends_with(".amazonaws.com") && !src.contains(char::is_whitespace) {
            return Shape::Api(src, name);
        }
    }
    if subject.starts_with("arn:") {
        Shape::Arn
    } else if let Some(s) = subject.strip_prefix("source:") {
        Shape::Source(s)
    } else if let Some((t, p)) = subject.split_once(':') {
        Shape::Typed(t, p)
    } else if subject.ends_with(".amazonaws.com") {
        Shape::Service
    } else {
        Shape::Name
    }
}

pub(super) struct Query {
    pub(super) select: &'static str,
    pub(super) table: &'static str,
    pub(super) filters: Vec<String>,
    pub(super) tail: &'static [&'static str],
}

const CLOUDTRAIL_COLUMNS: &str = "event_time, event_source, event_name, user_identity.arn AS principal_arn, \
                                  source_ip_address, user_agent, error_code, event_id";
const INVOCATION_COLUMNS: &str =
    "start_time, end_time, duration_ms, billed_duration_ms, memory_size_mb, status, error_type, request_id, log_stream";
const BY_TIME: &[&str] = &["ORDER BY event_time", "LIMIT 1000"];

/// Partition filters for `[from, to)`: every date the span touches (from `from` on when open).
fn partitions(f: &Finding, from: EpochMillis, to: Option<EpochMillis>) -> Vec<String> {
    let d1 = utc_date(from);
    let date = match to {
        None => format!("date >= {}", sql_str(&d1)),
        Some(to) => {
            let d2 = utc_date(to.saturating_sub(1).max(from));
            if d1 == d2 {
                format!("date = {}", sql_str(&d1))
            } else {
                format!("date BETWEEN {} AND {}", sql_str(&d1), sql_str(&d2))
            }
        }
    };
    vec![sql_eq("account_id", &f.account_id, SQL_PARTITION_MAX), sql_eq("region", &f.region, SQL_PARTITION_MAX), date]
}

/// Rows that overlap `[from, to)`: `first_col` is when a row starts, `last_col` when it ends.
fn times(first_col: &str, last_col: &str, from: EpochMillis, to: Option<EpochMillis>) -> Vec<String> {
    let mut v = vec![format!("{last_col} >= {}", ts(from))];
    if let Some(to) = to {
        v.push(format!("{first_col} < {}", ts(to)));
    }
    v
}

/// CloudTrail rows of the subject: an API, or a principal in whichever field names it.
fn cloudtrail_subject(subject: &str, sh: Shape) -> String {
    let m = SQL_SUBJECT_MAX;
    match sh {
        Shape::Api(src, name) => format!("{} AND {}", sql_eq("event_source", src, m), sql_eq("event_name", name, m)),
        Shape::Arn => format!(
            "({} OR {})",
            sql_eq("user_identity.arn", subject, m),
            sql_eq("user_identity.session_context.session_issuer.arn", subject, m)
        ),
        Shape::Typed(t, p) => {
            format!("{} AND {}", sql_eq("user_identity.type", t, m), sql_eq("user_identity.principal_id", p, m))
        }
        Shape::Service => sql_eq("user_identity.invoked_by", subject, m),
        Shape::Trail | Shape::Source(_) | Shape::Name => format!(
            "({} OR {} OR {})",
            sql_eq("user_identity.arn", subject, m),
            sql_eq("user_identity.principal_id", subject, m),
            sql_eq("user_identity.invoked_by", subject, m)
        ),
    }
}

/// A ready query for the finding's evidence, one line per element, ending with `;`. Which query a
/// kind gets is [`KindAlert::evidence`]; the queries are below.
pub(super) fn evidence_query(f: &Finding, cfg: &RenderConfig) -> Vec<String> {
    let sh = shape(&f.kind, &f.subject);
    sql_lines(cfg, &f.kind.evidence(f, sh))
}

fn with(mut a: Vec<String>, b: Vec<String>) -> Vec<String> {
    a.extend(b);
    a
}

/// The function the subject names, exactly or by a prefix.
fn function(f: &Finding) -> String {
    sql_eq("function_name", &f.subject, SQL_SUBJECT_MAX)
}

/// Invocations of the function per minute: load, billed time, slowest, failures.
pub(super) fn invocations_per_minute(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: "date_trunc('minute', start_time) AS minute, count(*) AS invocations, \
                 sum(billed_duration_ms) AS billed_ms, max(duration_ms) AS max_duration_ms, \
                 count_if(status != 'success') AS failed",
        table: LAMBDA_INVOCATIONS_TABLE,
        filters: with(partitions(f, from, to), with(vec![function(f)], times("start_time", "end_time", from, to))),
        tail: &["GROUP BY 1", "ORDER BY 1"],
    }
}

/// The function's slowest invocations in the episode.
pub(super) fn slowest_invocations(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: INVOCATION_COLUMNS,
        table: LAMBDA_INVOCATIONS_TABLE,
        filters: with(partitions(f, from, to), with(vec![function(f)], times("start_time", "end_time", from, to))),
        tail: &["ORDER BY duration_ms DESC", "LIMIT 100"],
    }
}

/// The function's throttles and concurrency from the metric stream.
pub(super) fn throttle_metrics(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: "\"timestamp\", metric_name, value_sum, value_max",
        table: LAMBDA_METRICS_TABLE,
        filters: with(
            partitions(f, from, to),
            with(
                vec![
                    "metric_name IN ('Throttles', 'ConcurrentExecutions')".into(),
                    sql_eq("element_at(dimensions, 'FunctionName')", &f.subject, SQL_SUBJECT_MAX),
                ],
                times("\"timestamp\"", "\"timestamp\"", from, to),
            ),
        ),
        tail: &["ORDER BY \"timestamp\", metric_name"],
    }
}

/// The function's attempts per minute: attempts beyond distinct request ids are asynchronous
/// retries; failed attempts with a stream's new ids each time are a stuck stream.
pub(super) fn attempts_per_minute(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: "date_trunc('minute', end_time) AS minute, count(*) AS attempts, \
                 count(DISTINCT request_id) AS requests, count_if(status != 'success') AS failed, \
                 max(error_type) AS an_error_type",
        table: LAMBDA_INVOCATIONS_TABLE,
        filters: with(partitions(f, from, to), with(vec![function(f)], times("start_time", "end_time", from, to))),
        tail: &["GROUP BY 1", "ORDER BY 1"],
    }
}

/// The function's asynchronous-event metrics: age, drops, dead-letter and destination failures.
pub(super) fn async_event_metrics(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: "\"timestamp\", metric_name, value_sum, value_max",
        table: LAMBDA_METRICS_TABLE,
        filters: with(
            partitions(f, from, to),
            with(
                vec![
                    "metric_name IN ('AsyncEventsReceived', 'AsyncEventAge', 'AsyncEventsDropped', 'DeadLetterErrors', 'DestinationDeliveryFailures')".into(),
                    sql_eq("element_at(dimensions, 'FunctionName')", &f.subject, SQL_SUBJECT_MAX),
                ],
                times("\"timestamp\"", "\"timestamp\"", from, to),
            ),
        ),
        tail: &["ORDER BY \"timestamp\", metric_name"],
    }
}

/// Concurrency and throttles of every function of the account and region, and the account's own
/// concurrency (no function): who took the pool and who was starved.
pub(super) fn pool_per_function(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: "\"timestamp\", coalesce(element_at(dimensions, 'FunctionName'), '(account)') AS function_name, \
                 metric_name, value_sum, value_max",
        table: LAMBDA_METRICS_TABLE,
        filters: with(
            partitions(f, from, to),
            with(
                vec![
                    "metric_name IN ('Throttles', 'ConcurrentExecutions', 'ClaimedAccountConcurrency')".into(),
                    "element_at(dimensions, 'Resource') IS NULL".into(),
                ],
                times("\"timestamp\"", "\"timestamp\"", from, to),
            ),
        ),
        tail: &["ORDER BY \"timestamp\", metric_name, value_max DESC", "LIMIT 5000"],
    }
}

/// Throttled calls of the API the subject names.
pub(super) fn throttled_calls(f: &Finding, sh: Shape) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: CLOUDTRAIL_COLUMNS,
        table: CLOUDTRAIL_TABLE,
        filters: with(
            partitions(f, from, to),
            with(
                times("event_time", "event_time", from, to),
                vec![
                    cloudtrail_subject(&f.subject, sh),
                    "regexp_like(error_code, 'Throttl|RequestLimitExceeded|TooManyRequests|SlowDown|ProvisionedThroughputExceeded')"
                        .into(),
                ],
            ),
        ),
        tail: BY_TIME,
    }
}

/// Who invoked the function, from CloudTrail's Lambda data events.
pub(super) fn invoke_calls(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: CLOUDTRAIL_COLUMNS,
        table: CLOUDTRAIL_TABLE,
        filters: with(
            partitions(f, from, to),
            with(
                times("event_time", "event_time", from, to),
                vec![
                    "event_source = 'lambda.amazonaws.com' AND event_name LIKE 'Invoke%'".into(),
                    // Contains, since requests name the function by name, ARN or partial ARN.
                    format!(
                        "strpos(json_extract_scalar(request_parameters, '$.functionName'), {}) > 0",
                        sql_prefix(&f.subject, SQL_SUBJECT_MAX).1
                    ),
                ],
            ),
        ),
        tail: BY_TIME,
    }
}

/// Calls that stop or change the trail, from an hour before the silence.
pub(super) fn trail_changes(f: &Finding) -> Query {
    let (before, to) = (f.start.saturating_sub(HOUR), f.end);
    Query {
        select: CLOUDTRAIL_COLUMNS,
        table: CLOUDTRAIL_TABLE,
        filters: with(
            partitions(f, before, to),
            with(
                times("event_time", "event_time", before, to),
                vec![
                    "event_source = 'cloudtrail.amazonaws.com'".into(),
                    "event_name IN ('StopLogging', 'DeleteTrail', 'UpdateTrail', 'PutEventSelectors')".into(),
                ],
            ),
        ),
        tail: BY_TIME,
    }
}

/// The function's last invocations before it went quiet.
pub(super) fn last_invocations(f: &Finding) -> Query {
    let (before, to) = (f.start.saturating_sub(HOUR), f.end);
    Query {
        select: INVOCATION_COLUMNS,
        table: LAMBDA_INVOCATIONS_TABLE,
        filters: with(partitions(f, before, to), with(vec![function(f)], times("start_time", "end_time", before, to))),
        tail: &["ORDER BY end_time DESC", "LIMIT 20"],
    }
}

/// Records per day over the week before, for the source `src` that went missing.
pub(super) fn records_per_day(f: &Finding, src: &str) -> Query {
    let week = f.start.saturating_sub(7 * DAY);
    let (table, extra) = match src {
        "lambda_logs" => (LAMBDA_INVOCATIONS_TABLE, vec![]),
        "lambda_data_events" => {
            (CLOUDTRAIL_TABLE, vec!["event_source = 'lambda.amazonaws.com' AND event_name LIKE 'Invoke%'".to_string()])
        }
        _ => (CLOUDTRAIL_TABLE, vec![]),
    };
    Query {
        select: "date, count(*) AS records",
        table,
        filters: with(partitions(f, week, f.end), extra),
        tail: &["GROUP BY date", "ORDER BY date"],
    }
}

/// Records still claiming a time ahead of the moment the query runs; their partitions are their
/// claimed days.
pub(super) fn records_ahead_of_the_clock(f: &Finding) -> Query {
    let (select, table, time): (&'static str, &'static str, &str) = match f.subject.as_str() {
        LAMBDA_INVOCATIONS_TABLE => (INVOCATION_COLUMNS, LAMBDA_INVOCATIONS_TABLE, "end_time"),
        LAMBDA_METRICS_TABLE => {
            ("timestamp, metric_name, dimensions, value_sum, value_max", LAMBDA_METRICS_TABLE, "timestamp")
        }
        _ => (CLOUDTRAIL_COLUMNS, CLOUDTRAIL_TABLE, "event_time"),
    };
    let tail: &'static [&'static str] = match table {
        CLOUDTRAIL_TABLE => &["ORDER BY event_time DESC", "LIMIT 1000"],
        LAMBDA_INVOCATIONS_TABLE => &["ORDER BY end_time DESC", "LIMIT 1000"],
        _ => &["ORDER BY timestamp DESC", "LIMIT 1000"],
    };
    Query {
        select,
        table,
        filters: with(partitions(f, f.start, None), vec![format!("{time} > current_timestamp")]),
        tail,
    }
}

/// The function's invocations in the episode.
pub(super) fn invocations(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    Query {
        select: INVOCATION_COLUMNS,
        table: LAMBDA_INVOCATIONS_TABLE,
        filters: with(partitions(f, from, to), with(vec![function(f)], times("start_time", "end_time", from, to))),
        tail: &["ORDER BY start_time", "LIMIT 1000"],
    }
}

/// The subject's CloudTrail calls in the episode.
pub(super) fn api_calls(f: &Finding, sh: Shape) -> Query {
    let (from, to) = (f.start, f.end);
    let filters = with(
        partitions(f, from, to),
        with(times("event_time", "event_time", from, to), vec![cloudtrail_subject(&f.subject, sh)]),
    );
    Query { select: CLOUDTRAIL_COLUMNS, table: CLOUDTRAIL_TABLE, filters, tail: BY_TIME }
}

/// The records a rule matched: the evidence ids within the episode's days and the day before
/// (the whole episode when the finding lists no ids).
pub(super) fn rule_events(f: &Finding) -> Query {
    let (from, to) = (f.start, f.end);
    // Late matches can join an episode before its start: the day before is searched too.
    let mut filters = partitions(f, from - DAY, to.map(|t| t.max(from + 1)));
    let ids: Vec<String> =
        f.evidence.iter().take(super::json::JSON_LIST_MAX).map(|e| sql_prefix(e, SQL_SUBJECT_MAX).1).collect();
    if ids.is_empty() {
        filters.extend(times("event_time", "event_time", from, to));
    } else {
        filters.push(format!("event_id IN ({})", ids.join(", ")));
    }
    Query { select: CLOUDTRAIL_COLUMNS, table: CLOUDTRAIL_TABLE, filters, tail: BY_TIME }
}

/// The subject's failed CloudTrail calls in the episode.
pub(super) fn api_errors(f: &Finding, sh: Shape) -> Query {
    let mut q = api_calls(f, sh);
    q.filters.push("error_code IS NOT NULL".into());
    q
}

pub(super) fn sql_lines(cfg: &RenderConfig, q: &Query) -> Vec<String> {
    let mut out =
        vec![format!("SELECT {}", q.select), format!("FROM {}.{}", ident(&cfg.athena_database), ident(q.table))];
    for (i, f) in q.filters.iter().enumerate() {
        out.push(format!("{} {f}", if i == 0 { "WHERE" } else { "  AND" }));
    }
    out.extend(q.tail.iter().map(|t| t.to_string()));
    if let Some(last) = out.last_mut() {
        last.push(';');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;
    use crate::render::*;

    #[test]
    fn sql_escapes_quotes_and_line_breaks_in_the_subject() {
        let f = finding("concurrency_spike", "o'rders\n; DROP TABLE x; --");
        let m = opened(&f, 0, &RenderConfig::default());
        let sql = sql_of(&m.email);
        assert!(sql.contains("AND function_name = ('o''rders' || chr(10) || '; DROP TABLE x; --')"), "{sql}");
        assert!(m.email.lines().all(|l| !l.trim_start().starts_with("; DROP") && !l.starts_with("DROP")));
        // Plain literals when nothing needs escaping beyond quotes.
        let f = finding("api_error_rate", "s3.amazonaws.com:Get'Object");
        let sql = sql_of(&opened(&f, 0, &RenderConfig::default()).email);
        assert!(sql.contains("event_source = 's3.amazonaws.com' AND event_name = 'Get''Object'"), "{sql}");
        assert!(sql.contains("error_code IS NOT NULL"));
        assert_eq!(sql_str("a\\b"), "'a\\b'");
        assert_eq!(sql_str("a\\b\n"), "('a\\b' || chr(10))");
        assert_eq!(sql_str("x\u{1F600}"), "('x' || chr(128512))");
        assert_eq!(sql_str("\n"), "chr(10)");
        assert_eq!(sql_str(""), "''");
        // Long values match a prefix whose expression fits, never cut inside a `chr(...)`.
        let long = "é\n".repeat(3000);
        let e = sql_eq("c", &long, 100);
        let lit = e.strip_prefix("substr(c, 1, ").unwrap().split_once(") = ").unwrap();
        assert!(lit.1.len() <= 100 && lit.1.starts_with("(chr(233) || chr(10)") && lit.1.ends_with(')'), "{e}");
        let n: usize = lit.0.parse().unwrap();
        assert_eq!(sql_str(&long.chars().take(n).collect::<String>()), lit.1);
        assert_eq!(sql_eq("c", "short", 100), "c = 'short'");
        // Configuration cannot break out of identifiers either.
        let cfg = RenderConfig { athena_database: "db\"; DROP\nx".into(), ..Default::default() };
        let sql = sql_of(&opened(&f, 0, &cfg).email);
        assert!(sql.contains("FROM \"db___DROP_x\".\"cloudtrail\""), "{sql}");
    }

    #[test]
    fn queries_pick_the_table_and_filters_for_the_kind() {
        let cfg = RenderConfig::default();
        let q = |f: &Finding| sql_of(&opened(f, 0, &cfg).email);
        let mut f = finding("concurrency_spike", "orders");
        f.start = t("2024-03-05T23:50:00Z");
        f.end = Some(t("2024-03-06T00:10:00Z"));
        let sql = q(&f);
        for want in [
            "FROM \"trailwatch\".\"lambda_invocations\"",
            "WHERE account_id = '111122223333'",
            "AND region = 'eu-west-1'",
            "AND date BETWEEN '2024-03-05' AND '2024-03-06'",
            "AND function_name = 'orders'",
            "AND end_time >= TIMESTAMP '2024-03-05 23:50:00.000'",
            "AND start_time < TIMESTAMP '2024-03-06 00:10:00.000'",
            "GROUP BY 1",
        ] {
            assert!(sql.contains(want), "{want} not in {sql}");
        }
        // An end at midnight does not reach into the next day.
        f.end = Some(t("2024-03-06T00:00:00Z"));
        assert!(q(&f).contains("AND date = '2024-03-05'"));
        // Ongoing: from the start day on, no upper time bound.
        let sql = q(&finding("api_call_rate", "arn:aws:iam::111122223333:role/ci"));
        assert!(sql.contains("AND date >= '2024-03-05'") && !sql.contains("event_time <"), "{sql}");
        assert!(sql.contains("FROM \"trailwatch\".\"cloudtrail\""));
        assert!(sql.contains("(user_identity.arn = 'arn:aws:iam::111122223333:role/ci' OR user_identity.session_context.session_issuer.arn = 'arn:aws:iam::111122223333:role/ci')"), "{sql}");
        let sql = q(&finding("api_call_rate", "Root:111122223333"));
        assert!(sql.contains("user_identity.type = 'Root' AND user_identity.principal_id = '111122223333'"), "{sql}");
        let sql = q(&finding("api_call_rate", "events.amazonaws.com"));
        assert!(sql.contains("user_identity.invoked_by = 'events.amazonaws.com'"), "{sql}");
        assert!(q(&finding("throttling", "orders")).contains("\"lambda_metrics\""));
        assert!(q(&finding("throttling", "dynamodb.amazonaws.com:PutItem")).contains("regexp_like(error_code"));
        let sql = q(&finding("unusual_invocation", "orders"));
        assert!(sql.contains("event_name LIKE 'Invoke%'") && sql.contains("'$.functionName'), 'orders') > 0"), "{sql}");
        let sql = q(&finding("log_silence", "cloudtrail"));
        assert!(
            sql.contains("'StopLogging'") && sql.contains("event_time >= TIMESTAMP '2024-03-05 09:00:00.000'"),
            "{sql}"
        );
        assert!(q(&finding("log_silence", "orders")).contains("\"lambda_invocations\""));
        assert!(q(&finding("log_silence", "source:lambda_logs")).contains("GROUP BY date"));
        assert!(q(&finding("new_kind", "orders")).contains("\"lambda_invocations\""));
        // Future-dated records: those still ahead of the moment the query runs, from the start
        // day on (their partitions are the days they claim).
        let sql = q(&finding("event_time_skew", "cloudtrail"));
        assert!(sql.contains("\"cloudtrail\"") && sql.contains("event_time > current_timestamp"), "{sql}");
        assert!(sql.contains("date >= '2024-03-05'") && !sql.contains("event_time <"), "{sql}");
        let sql = q(&finding("event_time_skew", "lambda_invocations"));
        assert!(sql.contains("\"lambda_invocations\"") && sql.contains("end_time > current_timestamp"), "{sql}");
        assert!(q(&finding("event_time_skew", "lambda_metrics")).contains("timestamp > current_timestamp"));
        // Every query is one statement ending with ';', no blank lines.
        for kind in ["timeouts", "throttling", "api_error_rate", "mystery"] {
            let sql = q(&finding(kind, "x"));
            assert!(sql.trim_end().ends_with(';') && sql.matches(';').count() == 1, "{sql}");
        }
        // Oversized subjects match a prefix, so the query stays bounded.
        let sql = q(&finding("timeouts", &"f".repeat(5000)));
        assert!(sql.contains("substr(function_name, 1, 2046) = 'fff"), "{}", &sql[..200]);
    }
}
