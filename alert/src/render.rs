//! Findings to SNS publishes: one publish per alert, carrying a plain-text `email` body a person
//! can act on in ten seconds and a `default` JSON body (Finding-shaped) for machine subscribers.
//!
//! Every message fits SNS's publish limit whatever the finding holds: attacker-controlled text is
//! escaped and capped ([`crate::text`]), lists are shortened, a message that is still too large is
//! re-rendered with smaller caps, and digests split in halves until each part fits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{json, Value};
use trailwatch_core::finding::{Contributor, Finding, Severity, Status, FINDINGS_TABLE};
use trailwatch_core::lake::{CLOUDTRAIL_TABLE, LAMBDA_INVOCATIONS_TABLE, LAMBDA_METRICS_TABLE};
use trailwatch_core::time::{format_rfc3339_millis, utc_date, EpochMillis};

use crate::text::{field, quoted, subject_line};

/// SNS's limit for one publish: the message (the JSON structure with every protocol's body), the
/// subject and the message attributes together.
pub const MAX_PUBLISH_BYTES: usize = 262_144;
/// SNS subjects: at most 100 printable ASCII characters.
pub const MAX_SUBJECT: usize = 100;

/// Contributors and evidence ids kept in the JSON body.
const JSON_LIST_MAX: usize = 20;
/// Contributors and evidence ids shown in the email.
const EMAIL_LIST_MAX: usize = 5;
/// Bytes of the SQL expression for a subject in an evidence query; longer ones match a prefix.
const SQL_SUBJECT_MAX: usize = 2048;
/// Bytes of the SQL expression for an account id or region (real ones are far shorter).
const SQL_PARTITION_MAX: usize = 128;
/// The smallest field cap tried when a message has to shrink to fit.
const MIN_FIELD_CHARS: usize = 16;
/// Bytes of one attribute value, and values in one `String.Array`.
const ATTR_MAX: usize = 256;
const ATTR_ARRAY_MAX: usize = 50;
/// Caps for values detect writes itself (kind, account, region, id): bounded even if not ours.
const SHORT_MAX: usize = 64;
const ID_MAX: usize = 256;
/// Characters of a subject on one digest line.
const DIGEST_SUBJECT_MAX: usize = 120;
/// Kinds listed in a digest's counts before "N other kinds".
const DIGEST_KINDS_MAX: usize = 20;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const PREFIX: &str = "[trailwatch]";

/// How messages are rendered.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// The Glue database the evidence queries name.
    pub athena_database: String,
    /// The Athena workgroup the email tells people to run the queries in.
    pub athena_workgroup: String,
    /// Characters of one attacker-controlled field (subject, summary, contributor value, evidence
    /// id) in the email and the JSON.
    pub max_field_chars: usize,
    /// Findings listed in one digest email before "and N more".
    pub max_digest_entries: usize,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            athena_database: "trailwatch".into(),
            athena_workgroup: "trailwatch".into(),
            max_field_chars: 300,
            max_digest_entries: 50,
        }
    }
}

/// An SNS message attribute value; subscription filter policies match on these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// DataType `String`.
    String(String),
    /// DataType `String.Array`: a filter policy matches if any element matches.
    StringArray(Vec<String>),
}

impl AttrValue {
    /// The SNS `DataType`.
    pub fn data_type(&self) -> &'static str {
        match self {
            AttrValue::String(_) => "String",
            AttrValue::StringArray(_) => "String.Array",
        }
    }

    /// The SNS `StringValue`: a `String.Array` is sent as JSON array text.
    pub fn string_value(&self) -> String {
        match self {
            AttrValue::String(s) => s.clone(),
            AttrValue::StringArray(v) => serde_json::to_string(v).unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// One SNS publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// At most [`MAX_SUBJECT`] printable ASCII characters.
    pub subject: String,
    /// The plain-text body email subscribers get.
    pub email: String,
    /// JSON for SQS, Lambda and HTTPS subscribers.
    pub default: String,
    /// `kind`, `severity`, `account_id`, `region`, `status`, `digest`, and `finding_id` for
    /// single alerts.
    pub attributes: BTreeMap<String, AttrValue>,
    /// The (id, status) pairs this message carries, for the sent-records that dedup retries.
    pub findings: Vec<(String, Status)>,
}

impl Message {
    /// The body for `MessageStructure=json`: one string per protocol.
    pub fn message_json(&self) -> String {
        json!({ "default": self.default, "email": self.email }).to_string()
    }

    /// Bytes counted against [`MAX_PUBLISH_BYTES`].
    pub fn publish_size(&self) -> usize {
        self.message_json().len()
            + self.subject.len()
            + self.attributes.iter().map(|(k, v)| k.len() + v.data_type().len() + v.string_value().len()).sum::<usize>()
    }
}

/// The alert for an episode that opens. `folded`: how many repeated findings of the same kind and
/// subject were folded into it.
pub fn opened(f: &Finding, folded: usize, cfg: &RenderConfig) -> Message {
    fit(cfg.max_field_chars, |cap| {
        let mut json = finding_json(f, cap);
        if let Value::Object(m) = &mut json {
            m.insert("folded".into(), json!(folded));
        }
        Message {
            subject: single_subject(&format!("{PREFIX} {} {}", sev(f.severity), f.kind), f),
            email: opened_email(f, folded, cfg, cap),
            default: json.to_string(),
            attributes: single_attributes(f),
            findings: vec![(f.id.clone(), f.status)],
        }
    })
}

/// The short update for an episode that ended: when, how long, its peak.
pub fn closed(f: &Finding, cfg: &RenderConfig) -> Message {
    fit(cfg.max_field_chars, |cap| Message {
        subject: single_subject(&format!("{PREFIX} ended: {}", f.kind), f),
        email: closed_email(f, cap),
        default: finding_json(f, cap).to_string(),
        attributes: single_attributes(f),
        findings: vec![(f.id.clone(), f.status)],
    })
}

/// One message per account listing many findings, most severe first; split in halves,
/// recursively, until every part fits. No findings, no messages.
pub fn digest(account_id: &str, findings: &[&Finding], cfg: &RenderConfig) -> Vec<Message> {
    if findings.is_empty() {
        return Vec::new();
    }
    let mut sorted = findings.to_vec();
    sorted.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.start.cmp(&b.start)).then(a.id.cmp(&b.id)));
    let entries: Vec<Entry> = sorted.iter().map(|f| Entry::new(f, cfg.max_field_chars)).collect();
    let mut json_cost = vec![0];
    let mut line_cost = vec![0];
    for e in &entries {
        json_cost.push(json_cost.last().unwrap_or(&0) + json_escaped_len(&e.json) + 1);
        line_cost.push(line_cost.last().unwrap_or(&0) + json_escaped_len(&e.line) + 1);
    }
    let d = Digest { account: account_id, entries: &entries, totals: Totals::of(&sorted), cfg, json_cost, line_cost };
    let mut ranges = Vec::new();
    d.split(0..entries.len(), &mut ranges);
    let parts = ranges.len();
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let part = (parts > 1).then_some(Part { index: i + 1, of: parts, first: r.start + 1, last: r.end });
            let m = d.render(&entries[r.clone()], part);
            if m.publish_size() <= MAX_PUBLISH_BYTES || r.len() > 1 {
                return m;
            }
            // One finding too large even alone: shrink its fields.
            fit(cfg.max_field_chars, |cap| d.render(&[Entry::new(entries[r.start].f, cap)], part))
        })
        .collect()
}

/// Renders with `cap`, halving it until the message fits.
fn fit(cap: usize, render: impl Fn(usize) -> Message) -> Message {
    let mut cap = cap;
    loop {
        let m = render(cap);
        if m.publish_size() <= MAX_PUBLISH_BYTES || cap <= MIN_FIELD_CHARS {
            debug_assert!(m.publish_size() <= MAX_PUBLISH_BYTES, "{} bytes", m.publish_size());
            return m;
        }
        cap = (cap / 2).max(MIN_FIELD_CHARS);
    }
}

// ---- the JSON body ----

/// At most `max` characters, ending with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    // Noncharacters would make SQS refuse the whole message.
    let ok = |c: char| if crate::text::is_noncharacter(c) { '\u{FFFD}' } else { c };
    if s.chars().count() <= max {
        return s.chars().map(ok).collect();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).map(ok).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

/// JSON has no NaN or infinity (serde_json writes `null`, which would not read back as f64).
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

/// The finding with its strings and lists capped, still a `Finding` so machines can read it as one.
fn capped(f: &Finding, cap: usize) -> Finding {
    Finding {
        id: clip(&f.id, ID_MAX),
        kind: match &f.kind {
            trailwatch_core::finding::FindingKind::Other(k) => {
                trailwatch_core::finding::FindingKind::Other(clip(k, SHORT_MAX))
            }
            k => k.clone(),
        },
        severity: f.severity,
        account_id: clip(&f.account_id, SHORT_MAX),
        region: clip(&f.region, SHORT_MAX),
        subject: clip(&f.subject, cap),
        start: f.start,
        end: f.end,
        observed: finite(f.observed),
        baseline: finite(f.baseline),
        score: finite(f.score),
        estimated_cost_usd: f.estimated_cost_usd.filter(|c| !c.is_nan()).map(finite),
        summary: clip(&f.summary, cap),
        top_contributors: f
            .top_contributors
            .iter()
            .take(JSON_LIST_MAX)
            .map(|c| Contributor {
                dimension: clip(&c.dimension, cap.min(SHORT_MAX)),
                value: clip(&c.value, cap),
                count: c.count,
            })
            .collect(),
        evidence: f.evidence.iter().take(JSON_LIST_MAX).map(|e| clip(e, cap)).collect(),
        status: f.status,
        suppressed: f.suppressed,
        suppression_reason: f.suppression_reason.as_deref().map(|r| clip(r, cap)),
    }
}

fn finding_json(f: &Finding, cap: usize) -> Value {
    serde_json::to_value(capped(f, cap)).expect("a Finding serializes to JSON")
}

/// Bytes `s` takes inside a JSON string (what it adds to [`Message::message_json`]).
fn json_escaped_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(s.len(), |j| j.len() - 2)
}

// ---- attributes and subjects ----

/// Attribute values: printable ASCII, bounded, never empty (SNS rejects empty values).
fn attr(s: &str) -> String {
    let v = subject_line(s, ATTR_MAX);
    if v.is_empty() {
        "unknown".into()
    } else {
        v
    }
}

fn one_or_many(values: BTreeSet<String>) -> AttrValue {
    let mut v: Vec<String> = values.into_iter().take(ATTR_ARRAY_MAX).collect();
    if v.len() == 1 {
        AttrValue::String(v.remove(0))
    } else {
        AttrValue::StringArray(v)
    }
}

fn single_attributes(f: &Finding) -> BTreeMap<String, AttrValue> {
    let s = |v: &str| AttrValue::String(attr(v));
    BTreeMap::from([
        ("kind".to_string(), s(f.kind.as_str())),
        ("severity".to_string(), s(f.severity.as_str())),
        ("account_id".to_string(), s(&f.account_id)),
        ("region".to_string(), s(&f.region)),
        ("status".to_string(), s(f.status.as_str())),
        ("digest".to_string(), s("false")),
        ("finding_id".to_string(), s(&f.id)),
    ])
}

/// `head subject account/region`, the subject getting what room is left so the account and
/// region stay visible however long it is.
fn single_subject(head: &str, f: &Finding) -> String {
    let head = subject_line(head, 60);
    let tail = subject_line(&format!("{}/{}", f.account_id, f.region), 36);
    let room = MAX_SUBJECT.saturating_sub(head.len() + tail.len() + 2);
    let subj = subject_line(&f.subject, room);
    let parts: Vec<&str> =
        [head.as_str(), subj.as_str(), tail.as_str()].into_iter().filter(|p| !p.is_empty()).collect();
    subject_line(&parts.join(" "), MAX_SUBJECT)
}

// ---- the email ----

fn sev(s: Severity) -> String {
    s.as_str().to_ascii_uppercase()
}

fn kind_words(kind: &str) -> String {
    match kind {
        "concurrency_spike" => "concurrency spike".into(),
        "throttling" => "throttling".into(),
        "timeouts" => "timeouts".into(),
        "unusual_invocation" => "unusual invocation".into(),
        "api_call_rate" => "unusual API call rate".into(),
        "api_error_rate" => "unusual API error rate".into(),
        "log_silence" => "log silence".into(),
        "event_time_skew" => "event time ahead of the clock".into(),
        other => field(&other.replace('_', " "), SHORT_MAX),
    }
}

/// A number without noise: integers as integers, else three decimals at most.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.abs() >= 1e15 || (x != 0.0 && x.abs() < 0.001) {
        return format!("{x:.3e}");
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn usd(x: f64) -> String {
    if x.is_finite() {
        format!("${x:.2}")
    } else {
        "unknown".into()
    }
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn kv(e: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let gap = if label.len() >= 12 { " " } else { "" };
    let _ = writeln!(e, "  {label:<12}{gap}{value}");
}

fn headline(f: &Finding, cap: usize) -> String {
    format!(
        "{} {}: {} in {}/{}",
        sev(f.severity),
        kind_words(f.kind.as_str()),
        quoted(&f.subject, cap),
        field(&f.account_id, SHORT_MAX),
        field(&f.region, SHORT_MAX)
    )
}

fn opened_email(f: &Finding, folded: usize, cfg: &RenderConfig, cap: usize) -> String {
    let mut e = String::new();
    let _ = writeln!(e, "{}\n", headline(f, cap));
    kv(&mut e, "Account", &field(&f.account_id, SHORT_MAX));
    kv(&mut e, "Region", &field(&f.region, SHORT_MAX));
    kv(&mut e, "Subject", &quoted(&f.subject, cap));
    let end = f.end.map_or_else(|| "ongoing".to_string(), format_rfc3339_millis);
    kv(&mut e, "When", &format!("{} to {end}", format_rfc3339_millis(f.start)));
    kv(&mut e, "Observed", &format!("{} vs baseline {} (score {})", num(f.observed), num(f.baseline), num(f.score)));
    if let Some(c) = f.estimated_cost_usd {
        kv(&mut e, "Est. cost", &format!("{} USD extra over this episode (denial of wallet)", usd(c)));
    }
    kv(&mut e, "Summary", &quoted(&f.summary, cap));
    if f.suppressed {
        kv(&mut e, "Suppressed", &quoted(f.suppression_reason.as_deref().unwrap_or(""), cap));
    }
    if !f.top_contributors.is_empty() {
        let _ = writeln!(e, "  Top contributors:");
        for c in f.top_contributors.iter().take(EMAIL_LIST_MAX) {
            let _ = writeln!(e, "    {}: {} ({})", field(&c.dimension, SHORT_MAX), quoted(&c.value, cap), c.count);
        }
        more(&mut e, f.top_contributors.len());
    }
    if !f.evidence.is_empty() {
        let _ = writeln!(e, "  Evidence:");
        for id in f.evidence.iter().take(EMAIL_LIST_MAX) {
            let _ = writeln!(e, "    {}", quoted(id, cap));
        }
        more(&mut e, f.evidence.len());
    }
    if folded > 0 {
        let noun = if folded == 1 { "finding" } else { "findings" };
        kv(&mut e, "Folded", &format!("{folded} more {noun} of the same kind and subject were folded into this alert"));
    }
    let _ = writeln!(e, "\nEvidence query (Athena, workgroup {}):", field(&cfg.athena_workgroup, SHORT_MAX));
    for l in evidence_query(f, cfg) {
        let _ = writeln!(e, "  {l}");
    }
    let _ = writeln!(e, "\nWhat to do first:");
    for l in runbook(f) {
        let _ = writeln!(e, "  - {l}");
    }
    let _ = writeln!(e, "\nFinding id: {}", field(&f.id, ID_MAX));
    e
}

fn more(e: &mut String, total: usize) {
    if total > EMAIL_LIST_MAX {
        let _ = writeln!(e, "    … and {} more", total - EMAIL_LIST_MAX);
    }
}

fn closed_email(f: &Finding, cap: usize) -> String {
    let mut e = String::new();
    let _ = writeln!(e, "Ended: {}\n", headline(f, cap));
    kv(&mut e, "Started", &format_rfc3339_millis(f.start));
    match f.end {
        Some(end) => {
            kv(&mut e, "Ended", &format_rfc3339_millis(end));
            kv(&mut e, "Duration", &duration(end.saturating_sub(f.start)));
        }
        None => kv(&mut e, "Ended", "unknown"),
    }
    kv(&mut e, "Peak", &format!("{} vs baseline {} (score {})", num(f.observed), num(f.baseline), num(f.score)));
    if let Some(c) = f.estimated_cost_usd {
        kv(&mut e, "Est. cost", &format!("{} USD extra over the episode (denial of wallet)", usd(c)));
    }
    kv(&mut e, "Summary", &quoted(&f.summary, cap));
    let _ = writeln!(e, "\nFinding id: {}", field(&f.id, ID_MAX));
    e
}

/// One or two lines of runbook: the first thing to check, then how to contain it.
fn runbook(f: &Finding) -> [&'static str; 2] {
    match (f.kind.as_str(), shape(f.kind.as_str(), &f.subject)) {
        ("concurrency_spike", _) => [
            "Check who invokes the function (the query above, CloudTrail Invoke events, event source mappings, API Gateway).",
            "If the load is not legitimate, cap it: set reserved concurrency on the function (0 stops it) or throttle the caller.",
        ],
        ("throttling", _) => [
            "Check the concurrency and API quotas (Service Quotas, reserved concurrency) and who is using them up.",
            "Make callers retry with backoff and jitter; ask for a quota increase only if the load is legitimate.",
        ],
        ("timeouts", _) => [
            "Check the downstream dependency the function waits on (database, HTTP API, queue) for latency or errors.",
            "Compare the function's timeout setting with its duration; fail fast with client timeouts before raising it.",
        ],
        ("unusual_invocation", _) => [
            "Verify the invoking principal, source IP and user agent above with the function's owner.",
            "If unknown: revoke its access (function resource policy, role trust, access keys) and rotate its credentials.",
        ],
        ("api_call_rate" | "api_error_rate", _) => [
            "Review the principal's activity in the query above: which APIs, from which IPs and user agents.",
            "Enumeration (many denied APIs) means stolen credentials: deny the principal (SCP or deny policy) and rotate them.",
        ],
        ("log_silence", Shape::Trail) => [
            "Check the trail: StopLogging or DeleteTrail calls (query above), trail status, the bucket and its policy.",
            "Restore logging (StartLogging) and review what the caller did while it was off.",
        ],
        ("log_silence", Shape::Source(_)) => [
            "A source trailwatch needs is missing: the summary says which and how to enable it.",
            "Until it is enabled, the detectors that need it are blind.",
        ],
        ("log_silence", _) => [
            "Check whether the function still runs (its triggers, its log group subscription to the ingest bucket).",
            "If logs were cut on purpose (subscription or log group deleted), restore them and review who did it.",
        ],
        ("event_time_skew", _) => [
            "Find who wrote the records (query above, contributors): check who can write to the log bucket or log group, and a clock that runs fast.",
            "Forged times can hide activity: review the account's real activity around the time the records arrived.",
        ],
        _ => [
            "Run the evidence query above and review the activity around the episode.",
            "If it is unexpected, contact the owner of the subject and contain it (revoke access, throttle).",
        ],
    }
}

// ---- evidence queries ----

/// A SQL string expression for exactly `s` on one line of printable ASCII: quotes doubled, and
/// anything else unsafe (controls, line breaks, non-ASCII, `<>&` the email must not carry)
/// spliced in as `chr(N)`, so attacker text can neither end the string nor add a line, and the
/// query still matches the exact value (Athena engine 2 and 3 both have `chr` and `||`).
fn sql_str(s: &str) -> String {
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
fn sql_eq(col: &str, v: &str, max: usize) -> String {
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
enum Shape<'a> {
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

fn shape<'a>(kind: &str, subject: &'a str) -> Shape<'a> {
    if let Some((src, name)) = subject.split_once(':') {
        if src.ends_with(".amazonaws.com") && !src.contains(char::is_whitespace) {
            return Shape::Api(src, name);
        }
    }
    if subject.starts_with("arn:") {
        Shape::Arn
    } else if kind == "log_silence" && subject == "cloudtrail" {
        Shape::Trail
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

struct Query {
    select: &'static str,
    table: &'static str,
    filters: Vec<String>,
    tail: &'static [&'static str],
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

/// A ready query for the finding's evidence, one line per element, ending with `;`.
fn evidence_query(f: &Finding, cfg: &RenderConfig) -> Vec<String> {
    let (s, m) = (f.subject.as_str(), SQL_SUBJECT_MAX);
    let sh = shape(f.kind.as_str(), s);
    let (from, to) = (f.start, f.end);
    let before = f.start.saturating_sub(HOUR);
    let with = |mut a: Vec<String>, b: Vec<String>| {
        a.extend(b);
        a
    };
    let q = match (f.kind.as_str(), sh) {
        ("concurrency_spike", Shape::Name) => Query {
            select: "date_trunc('minute', start_time) AS minute, count(*) AS invocations, \
                     sum(billed_duration_ms) AS billed_ms, max(duration_ms) AS max_duration_ms, \
                     count_if(status != 'success') AS failed",
            table: LAMBDA_INVOCATIONS_TABLE,
            filters: with(
                partitions(f, from, to),
                with(vec![sql_eq("function_name", s, m)], times("start_time", "end_time", from, to)),
            ),
            tail: &["GROUP BY 1", "ORDER BY 1"],
        },
        ("timeouts", Shape::Name) => Query {
            select: INVOCATION_COLUMNS,
            table: LAMBDA_INVOCATIONS_TABLE,
            filters: with(
                partitions(f, from, to),
                with(vec![sql_eq("function_name", s, m)], times("start_time", "end_time", from, to)),
            ),
            tail: &["ORDER BY duration_ms DESC", "LIMIT 100"],
        },
        // Throttled invocations never run, so they leave no REPORT line: the metric stream has them.
        ("throttling", Shape::Name) => Query {
            select: "\"timestamp\", metric_name, value_sum, value_max",
            table: LAMBDA_METRICS_TABLE,
            filters: with(
                partitions(f, from, to),
                with(
                    vec![
                        "metric_name IN ('Throttles', 'ConcurrentExecutions')".into(),
                        sql_eq("element_at(dimensions, 'FunctionName')", s, m),
                    ],
                    times("\"timestamp\"", "\"timestamp\"", from, to),
                ),
            ),
            tail: &["ORDER BY \"timestamp\", metric_name"],
        },
        ("throttling", Shape::Api(..)) => Query {
            select: CLOUDTRAIL_COLUMNS,
            table: CLOUDTRAIL_TABLE,
            filters: with(
                partitions(f, from, to),
                with(
                    times("event_time", "event_time", from, to),
                    vec![
                        cloudtrail_subject(s, sh),
                        "regexp_like(error_code, 'Throttl|RequestLimitExceeded|TooManyRequests|SlowDown|ProvisionedThroughputExceeded')"
                            .into(),
                    ],
                ),
            ),
            tail: BY_TIME,
        },
        ("unusual_invocation", Shape::Name) => Query {
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
                            sql_prefix(s, m).1
                        ),
                    ],
                ),
            ),
            tail: BY_TIME,
        },
        ("log_silence", Shape::Trail) => Query {
            select: CLOUDTRAIL_COLUMNS,
            table: CLOUDTRAIL_TABLE,
            filters: with(
                partitions(f, before, to),
                with(
                    times("event_time", "event_time", before, to),
                    vec!["event_source = 'cloudtrail.amazonaws.com'".into(),
                        "event_name IN ('StopLogging', 'DeleteTrail', 'UpdateTrail', 'PutEventSelectors')".into()],
                ),
            ),
            tail: BY_TIME,
        },
        ("log_silence", Shape::Name) => Query {
            select: INVOCATION_COLUMNS,
            table: LAMBDA_INVOCATIONS_TABLE,
            filters: with(
                partitions(f, before, to),
                with(vec![sql_eq("function_name", s, m)], times("start_time", "end_time", before, to)),
            ),
            tail: &["ORDER BY end_time DESC", "LIMIT 20"],
        },
        ("log_silence", Shape::Source(src)) => {
            let week = f.start.saturating_sub(7 * DAY);
            let (table, extra) = match src {
                "lambda_logs" => (LAMBDA_INVOCATIONS_TABLE, vec![]),
                "lambda_data_events" => (
                    CLOUDTRAIL_TABLE,
                    vec!["event_source = 'lambda.amazonaws.com' AND event_name LIKE 'Invoke%'".to_string()],
                ),
                _ => (CLOUDTRAIL_TABLE, vec![]),
            };
            Query {
                select: "date, count(*) AS records",
                table,
                filters: with(partitions(f, week, to), extra),
                tail: &["GROUP BY date", "ORDER BY date"],
            }
        }
        // Records still claiming a time ahead of the moment the query runs; their partitions
        // are their claimed days.
        ("event_time_skew", _) => {
            let (select, table, time): (&'static str, &'static str, &str) = match s {
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
                filters: with(partitions(f, from, None), vec![format!("{time} > current_timestamp")]),
                tail,
            }
        }
        (k, Shape::Name) if !k.starts_with("api_") => Query {
            select: INVOCATION_COLUMNS,
            table: LAMBDA_INVOCATIONS_TABLE,
            filters: with(
                partitions(f, from, to),
                with(vec![sql_eq("function_name", s, m)], times("start_time", "end_time", from, to)),
            ),
            tail: &["ORDER BY start_time", "LIMIT 1000"],
        },
        (k, _) => {
            let mut filters =
                with(partitions(f, from, to), with(times("event_time", "event_time", from, to), vec![cloudtrail_subject(s, sh)]));
            if k == "api_error_rate" {
                filters.push("error_code IS NOT NULL".into());
            }
            Query { select: CLOUDTRAIL_COLUMNS, table: CLOUDTRAIL_TABLE, filters, tail: BY_TIME }
        }
    };
    sql_lines(cfg, &q)
}

fn sql_lines(cfg: &RenderConfig, q: &Query) -> Vec<String> {
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

// ---- digests ----

/// One finding of a digest, its JSON and email line rendered once.
struct Entry<'a> {
    f: &'a Finding,
    json: String,
    line: String,
}

impl<'a> Entry<'a> {
    fn new(f: &'a Finding, cap: usize) -> Self {
        let line = format!(
            "  {} {} {} {} {} {}",
            sev(f.severity),
            field(f.kind.as_str(), SHORT_MAX),
            field(&f.region, SHORT_MAX),
            quoted(&f.subject, cap.min(DIGEST_SUBJECT_MAX)),
            format_rfc3339_millis(f.start),
            f.status.as_str()
        );
        Entry { f, json: finding_json(f, cap).to_string(), line }
    }
}

/// Counts over the whole digest, shown in every part.
struct Totals {
    n: usize,
    highest: Severity,
    by_severity: BTreeMap<Severity, usize>,
    by_kind: BTreeMap<String, usize>,
}

impl Totals {
    fn of(findings: &[&Finding]) -> Self {
        let mut t = Totals {
            n: findings.len(),
            highest: Severity::Info,
            by_severity: BTreeMap::new(),
            by_kind: BTreeMap::new(),
        };
        for f in findings {
            t.highest = t.highest.max(f.severity);
            *t.by_severity.entry(f.severity).or_default() += 1;
            *t.by_kind.entry(f.kind.to_string()).or_default() += 1;
        }
        t
    }
}

/// Which part of a split digest a message is.
#[derive(Debug, Clone, Copy)]
struct Part {
    index: usize,
    of: usize,
    first: usize,
    last: usize,
}

struct Digest<'a> {
    account: &'a str,
    entries: &'a [Entry<'a>],
    totals: Totals,
    cfg: &'a RenderConfig,
    /// Prefix sums of what each entry's JSON and line add to the publish, for a cheap lower bound.
    json_cost: Vec<usize>,
    line_cost: Vec<usize>,
}

impl Digest<'_> {
    /// Splits `r` in halves until each part fits, measured with the widest part label.
    fn split(&self, r: Range<usize>, out: &mut Vec<Range<usize>>) {
        let listed = r.start + r.len().min(self.cfg.max_digest_entries);
        let lower = self.json_cost[r.end] - self.json_cost[r.start] + self.line_cost[listed] - self.line_cost[r.start];
        let n = self.entries.len();
        let fits = || {
            let widest = Part { index: n, of: n, first: n, last: n };
            self.render(&self.entries[r.clone()], Some(widest)).publish_size() <= MAX_PUBLISH_BYTES
        };
        if r.len() == 1 || (lower <= MAX_PUBLISH_BYTES && fits()) {
            out.push(r);
        } else {
            let mid = r.start + r.len() / 2;
            self.split(r.start..mid, out);
            self.split(mid..r.end, out);
        }
    }

    fn render(&self, entries: &[Entry], part: Option<Part>) -> Message {
        let (t, cfg) = (&self.totals, self.cfg);
        let acct = subject_line(self.account, 32);
        let mut subject = format!("{PREFIX} {} findings in account {acct} (highest: {})", t.n, sev(t.highest));
        if let Some(p) = part {
            let _ = write!(subject, " [{}/{}]", p.index, p.of);
        }

        let mut e = String::new();
        let _ =
            writeln!(e, "{} findings in account {} (highest: {})", t.n, field(self.account, SHORT_MAX), sev(t.highest));
        if let Some(p) = part {
            let _ = writeln!(
                e,
                "Part {} of {}: findings {} to {} of {}, most severe first.",
                p.index, p.of, p.first, p.last, t.n
            );
        }
        let sevs: Vec<String> = t.by_severity.iter().rev().map(|(s, n)| format!("{} {n}", s.as_str())).collect();
        let mut kinds: Vec<(&String, &usize)> = t.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut kind_list: Vec<String> =
            kinds.iter().take(DIGEST_KINDS_MAX).map(|(k, n)| format!("{} {n}", field(k, SHORT_MAX))).collect();
        if kinds.len() > DIGEST_KINDS_MAX {
            kind_list.push(format!("{} other kinds", kinds.len() - DIGEST_KINDS_MAX));
        }
        e.push('\n');
        kv(&mut e, "By severity", &sevs.join(", "));
        kv(&mut e, "By kind", &kind_list.join(", "));
        let _ = writeln!(e, "\nFindings (severity, kind, region, subject, start, status):");
        for en in entries.iter().take(cfg.max_digest_entries) {
            e.push_str(&en.line);
            e.push('\n');
        }
        let rest = entries.len().saturating_sub(cfg.max_digest_entries);
        if rest > 0 {
            let _ = writeln!(e, "  … and {rest} more: query the findings table");
        }
        let _ = writeln!(e, "\nFindings query (Athena, workgroup {}):", field(&cfg.athena_workgroup, SHORT_MAX));
        for l in self.findings_query(entries) {
            let _ = writeln!(e, "  {l}");
        }

        let mut default = String::new();
        let (index, of) = part.map_or((1, 1), |p| (p.index, p.of));
        let _ = write!(
            default,
            "{{\"digest\":true,\"account_id\":{},\"count\":{},\"part\":{index},\"parts\":{of},\"findings\":[",
            Value::from(clip(self.account, SHORT_MAX)),
            entries.len()
        );
        for (i, en) in entries.iter().enumerate() {
            if i > 0 {
                default.push(',');
            }
            default.push_str(&en.json);
        }
        default.push_str("]}");

        let set = |g: &dyn Fn(&Finding) -> &str| entries.iter().map(|en| attr(g(en.f))).collect::<BTreeSet<_>>();
        let highest = entries.iter().map(|en| en.f.severity).max().unwrap_or(Severity::Info);
        let attributes = BTreeMap::from([
            ("kind".to_string(), one_or_many(set(&|f| f.kind.as_str()))),
            ("severity".to_string(), AttrValue::String(highest.as_str().into())),
            ("account_id".to_string(), AttrValue::String(attr(self.account))),
            ("region".to_string(), one_or_many(set(&|f| &f.region))),
            ("status".to_string(), one_or_many(set(&|f| f.status.as_str()))),
            ("digest".to_string(), AttrValue::String("true".into())),
        ]);

        Message {
            subject: subject_line(&subject, MAX_SUBJECT),
            email: e,
            default,
            attributes,
            findings: entries.iter().map(|en| (en.f.id.clone(), en.f.status)).collect(),
        }
    }

    /// The findings table for this account over the days the listed findings started on.
    fn findings_query(&self, entries: &[Entry]) -> Vec<String> {
        let first = entries.iter().map(|en| en.f.start).min().unwrap_or(0);
        let last = entries.iter().map(|en| en.f.start).max().unwrap_or(0);
        let (d1, d2) = (utc_date(first), utc_date(last));
        let date = if d1 == d2 {
            format!("date = {}", sql_str(&d1))
        } else {
            format!("date BETWEEN {} AND {}", sql_str(&d1), sql_str(&d2))
        };
        let q = Query {
            select: "\"start\", \"end\", severity, kind, region, subject, status, id",
            table: FINDINGS_TABLE,
            filters: vec![sql_eq("account_id", self.account, SQL_PARTITION_MAX), date],
            tail: &[
                "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 \
                 WHEN 'low' THEN 3 ELSE 4 END, \"start\"",
                "LIMIT 1000",
            ],
        };
        sql_lines(self.cfg, &q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::finding::finding_id;
    use trailwatch_core::time::parse_rfc3339_millis;

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "eu-west-1";

    fn t(s: &str) -> EpochMillis {
        parse_rfc3339_millis(s).unwrap()
    }

    fn finding(kind: &str, subject: &str) -> Finding {
        let start = t("2024-03-05T10:00:00Z");
        Finding {
            id: finding_id(&kind.into(), ACCOUNT, REGION, subject, start),
            kind: kind.into(),
            severity: Severity::High,
            account_id: ACCOUNT.into(),
            region: REGION.into(),
            subject: subject.into(),
            start,
            end: None,
            observed: 120.0,
            baseline: 0.5,
            score: 30.25,
            estimated_cost_usd: None,
            summary: "120 concurrent executions against a baseline of 0.5".into(),
            top_contributors: vec![Contributor {
                dimension: "principal".into(),
                value: "arn:aws:iam::1:role/x".into(),
                count: 7,
            }],
            evidence: vec!["e1".into(), "e2".into()],
            status: Status::Open,
            suppressed: false,
            suppression_reason: None,
        }
    }

    fn assert_fits(m: &Message) {
        assert!(m.publish_size() <= MAX_PUBLISH_BYTES, "{} bytes", m.publish_size());
        assert!(m.subject.len() <= MAX_SUBJECT && !m.subject.is_empty(), "{}", m.subject);
        assert!(m.subject.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{:?}", m.subject);
        for (k, v) in &m.attributes {
            assert!(!v.string_value().is_empty(), "{k}");
        }
    }

    fn sql_of(email: &str) -> String {
        let start = email.find("Evidence query").expect("has a query");
        let end = email[start..].find("\n\n").map_or(email.len(), |e| start + e);
        email[start..end].to_string()
    }

    #[test]
    fn opened_email_reads_in_ten_seconds() {
        let mut f = finding("concurrency_spike", "orders-api");
        f.estimated_cost_usd = Some(12.346);
        let m = opened(&f, 3, &RenderConfig::default());
        assert_fits(&m);
        assert_eq!(m.subject, "[trailwatch] HIGH concurrency_spike orders-api 111122223333/eu-west-1");
        let first = m.email.lines().next().unwrap();
        assert_eq!(first, "HIGH concurrency spike: \"orders-api\" in 111122223333/eu-west-1");
        for want in [
            "  Account:    111122223333",
            "  Region:     eu-west-1",
            "  Subject:    \"orders-api\"",
            "  When:       2024-03-05T10:00:00.000Z to ongoing",
            "  Observed:   120 vs baseline 0.5 (score 30.25)",
            "  Est. cost:  $12.35 USD extra over this episode (denial of wallet)",
            "    principal: \"arn:aws:iam::1:role/x\" (7)",
            "    \"e1\"",
            "  Folded:     3 more findings of the same kind and subject were folded into this alert",
            "Evidence query (Athena, workgroup trailwatch):",
            "  FROM \"trailwatch\".\"lambda_invocations\"",
            "What to do first:",
        ] {
            assert!(m.email.lines().any(|l| l == want), "missing {want:?} in\n{}", m.email);
        }
        assert!(m.email.contains("reserved concurrency"));
        assert!(m.email.trim_end().ends_with(&format!("Finding id: {}", f.id)));
        assert_eq!(m.findings, vec![(f.id.clone(), Status::Open)]);
        // No cost line when there is no estimate, no folded line when nothing was folded.
        let m = opened(&finding("timeouts", "orders-api"), 0, &RenderConfig::default());
        assert!(!m.email.contains("Est. cost") && !m.email.contains("Folded"));
        assert!(m.email.contains("timeout setting"));
    }

    #[test]
    fn crlf_in_a_user_agent_cannot_forge_header_lines() {
        let mut f = finding("api_error_rate", "arn:aws:iam::111122223333:role/ci");
        f.top_contributors.push(Contributor {
            dimension: "user_agent".into(),
            value: "curl/8\r\nSubject: x\r\n\r\nAll clear, ignore this alert".into(),
            count: 2,
        });
        let m = opened(&f, 0, &RenderConfig::default());
        assert_fits(&m);
        assert!(!m.subject.contains('\r') && !m.subject.contains('\n'));
        assert!(!m.email.contains('\r'));
        for l in m.email.lines() {
            assert!(!l.starts_with("Subject:") && !l.starts_with("All clear"), "{l:?}");
            assert!(!l.trim_start().starts_with("Subject: x"), "{l:?}");
        }
        let line = m.email.lines().find(|l| l.contains("Subject: x")).unwrap();
        assert_eq!(line, r#"    user_agent: "curl/8\r\nSubject: x\r\n\r\nAll clear, ignore this alert" (2)"#);
    }

    #[test]
    fn a_10kb_principal_still_fits_everywhere() {
        let subject = format!("arn:aws:iam::111122223333:role/{}", "A\u{202E}\u{1}".repeat(3_500));
        let mut f = finding("api_call_rate", &subject);
        f.summary = "s\n".repeat(5_000);
        f.top_contributors = (0..40)
            .map(|i| Contributor {
                dimension: "d\n".repeat(2000),
                value: format!("{i}{}", "\u{0}".repeat(10_000)),
                count: i,
            })
            .collect();
        f.evidence = (0..40).map(|i| format!("{i}{}", "<".repeat(10_000))).collect();
        f.suppression_reason = Some("r".repeat(10_000));
        f.id = "i".repeat(10_000);
        for cfg in [RenderConfig::default(), RenderConfig { max_field_chars: 10_000_000, ..Default::default() }] {
            for m in [opened(&f, 1, &cfg), closed(&f, &cfg)] {
                assert_fits(&m);
                assert!(m.subject.starts_with("[trailwatch] "), "{}", m.subject);
                assert!(m.subject.ends_with(" 111122223333/eu-west-1"), "{}", m.subject);
                if cfg.max_field_chars == 300 {
                    assert!(m.email.len() < 60_000, "email {} bytes", m.email.len());
                    assert!(m.default.len() < 120_000, "json {} bytes", m.default.len());
                }
                let back: Finding = serde_json::from_str(&m.default).unwrap();
                assert!(back.top_contributors.len() <= JSON_LIST_MAX && back.evidence.len() <= JSON_LIST_MAX);
                assert!(back.subject.chars().count() <= cfg.max_field_chars);
            }
        }
        // With the default caps nothing had to shrink: fields are exactly at the cap.
        let m = opened(&f, 1, &RenderConfig::default());
        let back: Finding = serde_json::from_str(&m.default).unwrap();
        assert_eq!(back.subject.chars().count(), 300);
        assert!(back.subject.ends_with('…'));
        assert!(m.email.lines().all(|l| l.chars().count() < 10_000));
    }

    #[test]
    fn markup_in_request_parameters_never_reaches_the_email() {
        let mut f = finding("unusual_invocation", "orders<script>");
        f.evidence = vec!["<script>alert(1)</script>".into()];
        f.top_contributors = vec![Contributor {
            dimension: "request_parameters".into(),
            value: "{\"a\":\"<script>x</script>&\"}".into(),
            count: 1,
        }];
        f.summary = "<b>bold</b>".into();
        for m in [opened(&f, 0, &RenderConfig::default()), closed(&f, &RenderConfig::default())] {
            for bad in ["<script", "</", "<b>", "&"] {
                assert!(!m.email.contains(bad), "{bad} in {}", m.email);
            }
            assert!(m.email.contains(r"\u003cscript\u003e"));
        }
        let m = opened(&f, 0, &RenderConfig::default());
        assert!(m.email.contains("('orders' || chr(60) || 'script' || chr(62))"), "{}", m.email);
        let d = digest(ACCOUNT, &[&f], &RenderConfig::default());
        assert!(!d[0].email.contains("<script") && !d[0].email.contains('&'));
    }

    #[test]
    fn lossily_decoded_bytes_become_one_safe_line() {
        let raw = String::from_utf8_lossy(b"ab\xff\xfe\r\nSubject: x").into_owned();
        let mut f = finding("api_call_rate", &raw);
        f.top_contributors[0].value = raw.clone();
        let m = opened(&f, 0, &RenderConfig::default());
        assert_fits(&m);
        assert_eq!(m.subject, "[trailwatch] HIGH api_call_rate ab?? Subject: x 111122223333/eu-west-1");
        assert!(m.email.lines().all(|l| !l.trim_start().starts_with("Subject: x")));
        assert!(m.email.contains("  Subject:    \"ab\u{FFFD}\u{FFFD}\\r\\nSubject: x\""));
        // The query matches the exact string, written with Unicode escapes.
        let want = "user_identity.type = ('ab' || chr(65533) || chr(65533) || chr(13) || chr(10) || 'Subject')";
        assert!(m.email.contains(want), "{}", sql_of(&m.email));
    }

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

    #[test]
    fn default_json_reads_back_as_a_finding() {
        let mut f = finding("throttling", "orders");
        f.observed = f64::NAN;
        f.score = f64::INFINITY;
        f.estimated_cost_usd = Some(f64::NAN);
        let m = opened(&f, 4, &RenderConfig::default());
        let back: Finding = serde_json::from_str(&m.default).unwrap();
        assert_eq!((back.id.as_str(), back.status), (f.id.as_str(), Status::Open));
        assert_eq!((back.observed, back.score, back.estimated_cost_usd), (0.0, f64::MAX, None));
        let v: Value = serde_json::from_str(&m.default).unwrap();
        assert_eq!(v["folded"], 4);
        // The SNS body is JSON with one string per protocol.
        let body: Value = serde_json::from_str(&m.message_json()).unwrap();
        assert_eq!(body["default"].as_str(), Some(m.default.as_str()));
        assert_eq!(body["email"].as_str(), Some(m.email.as_str()));
        let attrs: usize =
            m.attributes.iter().map(|(k, v)| k.len() + v.data_type().len() + v.string_value().len()).sum();
        assert_eq!(m.publish_size(), m.message_json().len() + m.subject.len() + attrs);

        let mut f = finding("concurrency_spike", "orders");
        f.end = Some(f.start + 65 * 60_000 + 4_000);
        f.status = Status::Closed;
        f.estimated_cost_usd = Some(3.0);
        let m = closed(&f, &RenderConfig::default());
        assert_fits(&m);
        assert_eq!(m.subject, "[trailwatch] ended: concurrency_spike orders 111122223333/eu-west-1");
        assert!(m.email.starts_with("Ended: HIGH concurrency spike: \"orders\""));
        assert!(
            m.email.contains("  Duration:   1h 5m\n") && m.email.contains("  Ended:      2024-03-05T11:05:04.000Z")
        );
        assert!(m.email.contains("  Peak:       120 vs baseline 0.5"));
        let back: Finding = serde_json::from_str(&m.default).unwrap();
        assert_eq!(back, f);
        assert_eq!(m.findings, vec![(f.id.clone(), Status::Closed)]);
        assert_eq!(m.attributes["status"], AttrValue::String("closed".into()));
    }

    #[test]
    fn attributes_are_typed_for_filter_policies() {
        let f = finding("concurrency_spike", "orders");
        let m = opened(&f, 0, &RenderConfig::default());
        let s = |v: &str| AttrValue::String(v.into());
        assert_eq!(m.attributes["kind"], s("concurrency_spike"));
        assert_eq!(m.attributes["severity"], s("high"));
        assert_eq!(m.attributes["account_id"], s(ACCOUNT));
        assert_eq!(m.attributes["region"], s(REGION));
        assert_eq!(m.attributes["status"], s("open"));
        assert_eq!(m.attributes["digest"], s("false"));
        assert_eq!(m.attributes["finding_id"], s(&f.id));
        assert_eq!(m.attributes["kind"].data_type(), "String");

        let mut a = finding("timeouts", "a");
        a.severity = Severity::Low;
        let mut b = finding("api_call_rate", "b");
        b.severity = Severity::Critical;
        b.status = Status::Closed;
        let c = finding("timeouts", "c");
        let d = digest(ACCOUNT, &[&a, &b, &c], &RenderConfig::default());
        assert_eq!(d.len(), 1);
        let at = &d[0].attributes;
        assert_eq!(at["severity"], s("critical"));
        assert_eq!(at["kind"], AttrValue::StringArray(vec!["api_call_rate".into(), "timeouts".into()]));
        assert_eq!(at["kind"].data_type(), "String.Array");
        assert_eq!(at["kind"].string_value(), r#"["api_call_rate","timeouts"]"#);
        assert_eq!(at["region"], s(REGION));
        assert_eq!(at["status"], AttrValue::StringArray(vec!["closed".into(), "open".into()]));
        assert_eq!(at["digest"], s("true"));
        assert_eq!(at["account_id"], s(ACCOUNT));
        assert!(!at.contains_key("finding_id"));
        let only_open = digest(ACCOUNT, &[&a, &c], &RenderConfig::default());
        assert_eq!(only_open[0].attributes["status"], s("open"));
        assert_eq!(only_open[0].attributes["severity"], s("high"));
    }

    #[test]
    fn digest_lists_most_severe_first_and_points_at_the_rest() {
        let mut fs = Vec::new();
        for i in 0..7 {
            let mut f = finding(if i % 2 == 0 { "timeouts" } else { "throttling" }, &format!("fn{i}"));
            f.severity = [Severity::Low, Severity::Critical, Severity::Medium][i % 3];
            f.start += (7 - i as i64) * DAY;
            f.id = format!("id{i}");
            fs.push(f);
        }
        let refs: Vec<&Finding> = fs.iter().collect();
        let cfg = RenderConfig { max_digest_entries: 3, ..Default::default() };
        let d = digest(ACCOUNT, &refs, &cfg);
        assert_eq!(d.len(), 1);
        let m = &d[0];
        assert_fits(m);
        assert_eq!(m.subject, "[trailwatch] 7 findings in account 111122223333 (highest: CRITICAL)");
        assert!(m.email.contains("  By severity: critical 2, medium 2, low 3\n"), "{}", m.email);
        assert!(m.email.contains("  By kind:    timeouts 4, throttling 3\n"), "{}", m.email);
        let listed: Vec<&str> = m
            .email
            .lines()
            .filter(|l| l.starts_with("  CRITICAL") || l.starts_with("  MEDIUM") || l.starts_with("  LOW"))
            .collect();
        assert_eq!(listed.len(), 3);
        // Critical first, the earlier start first among equals.
        assert!(listed[0].starts_with("  CRITICAL timeouts eu-west-1 \"fn4\" "), "{listed:?}");
        assert!(listed[1].contains("\"fn1\"") && listed[2].starts_with("  MEDIUM"), "{listed:?}");
        assert!(listed[0].ends_with(" open"));
        assert!(m.email.contains("  … and 4 more: query the findings table\n"));
        assert!(m.email.contains("  FROM \"trailwatch\".\"findings\""));
        assert!(
            m.email.contains("  WHERE account_id = '111122223333'\n    AND date BETWEEN '2024-03-06' AND '2024-03-12'"),
            "{}",
            m.email
        );
        let v: Value = serde_json::from_str(&m.default).unwrap();
        assert_eq!(v["digest"], true);
        assert_eq!(v["account_id"], ACCOUNT);
        assert_eq!(v["count"], 7);
        let all: Vec<Finding> = serde_json::from_value(v["findings"].clone()).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[0].id, "id4");
        assert!(digest(ACCOUNT, &[], &cfg).is_empty());
    }

    #[test]
    fn a_digest_of_5000_large_findings_splits_into_parts_that_fit() {
        let big = "x".repeat(2048);
        let fs: Vec<Finding> = (0..5000)
            .map(|i| {
                let mut f = finding("api_call_rate", &format!("{i}{big}"));
                f.id = format!("id{i:05}");
                f.status = if i % 3 == 0 { Status::Closed } else { Status::Open };
                f.summary = big.clone();
                f.top_contributors = (0..3)
                    .map(|_| Contributor { dimension: "user_agent".into(), value: big.clone(), count: 1 })
                    .collect();
                f.evidence = vec![big.clone(); 3];
                f
            })
            .collect();
        let refs: Vec<&Finding> = fs.iter().collect();
        let d = digest(ACCOUNT, &refs, &RenderConfig::default());
        assert!(d.len() > 1);
        let mut seen = BTreeSet::new();
        for (i, m) in d.iter().enumerate() {
            assert_fits(m);
            assert!(m.subject.ends_with(&format!(" [{}/{}]", i + 1, d.len())), "{}", m.subject);
            assert!(m.email.contains(&format!("Part {} of {}: findings ", i + 1, d.len())));
            let v: Value = serde_json::from_str(&m.default).unwrap();
            assert_eq!(v["findings"].as_array().unwrap().len(), m.findings.len());
            assert_eq!(v["count"], m.findings.len());
            for (id, status) in &m.findings {
                let n: usize = id[2..].parse().unwrap();
                assert_eq!(*status, fs[n].status);
                assert!(seen.insert(id.clone()), "{id} twice");
            }
        }
        assert_eq!(seen.len(), 5000);
    }

    #[test]
    fn one_huge_finding_in_a_digest_still_fits() {
        let mut f = finding("api_call_rate", &"\u{1}".repeat(5_000));
        f.top_contributors = vec![Contributor { dimension: "d".into(), value: "\u{1}".repeat(5_000), count: 1 }; 30];
        f.evidence = vec!["\u{1}".repeat(5_000); 30];
        let cfg = RenderConfig { max_field_chars: 1_000_000, max_digest_entries: 1_000_000, ..Default::default() };
        let d = digest(ACCOUNT, &[&f, &f], &cfg);
        assert!(!d.is_empty());
        for m in &d {
            assert_fits(m);
        }
        assert_eq!(d.iter().map(|m| m.findings.len()).sum::<usize>(), 2);
    }

    #[test]
    fn numbers_and_durations_read_plainly() {
        assert_eq!(num(120.0), "120");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(2.0 / 3.0), "0.667");
        assert_eq!(num(-0.0001), "-1.000e-4");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(duration(4_000), "4s");
        assert_eq!(duration(65 * 60_000), "1h 5m");
        assert_eq!(duration(-5), "0s");
        assert_eq!(duration(3 * DAY + HOUR), "3d 1h");
    }
}
