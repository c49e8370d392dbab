//! The finding: what detect emits and alert, the lake's `findings` table and Athena consume.
//!
//! One JSON object per finding. An episode is reported twice with the same `id`: once `open`
//! when it starts (`end` null) and once `closed` when it ends, so consumers can update rather
//! than add.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::timestamp_type;
use crate::time::{format_rfc3339_millis, parse_rfc3339_millis, EpochMillis};

/// The lake table findings are written to, next to the evidence.
pub const FINDINGS_TABLE: &str = "findings";

/// How urgent a finding is; ordered, so `max` gives a digest's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Whether an episode is starting or has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Closed => "closed",
        }
    }
}

/// What a finding is about. Serialised as the snake_case names the lake and the JSON have always
/// carried. A kind this build does not know (read from a lake a newer build wrote) is kept as
/// `Other`, so it stays readable; code that handles kinds matches exhaustively, so a new kind
/// does not compile until every stage handles it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    ConcurrencySpike,
    Throttling,
    Timeouts,
    UnusualInvocation,
    ApiCallRate,
    ApiErrorRate,
    LogSilence,
    EventTimeSkew,
    /// Failed invocations retried over and over: async retries under one request id, or a
    /// stream function stuck on a record it cannot process.
    RetryStorm,
    /// Asynchronous events dropped, undeliverable to their dead-letter queue or destination, or
    /// about to expire.
    EventLoss,
    /// One function exhausting the account's concurrency while others are throttled with it.
    NoisyNeighbour,
    /// Records matching a detection rule (Sigma); the finding's `rule` says which.
    RuleMatch,
    /// A kind unknown to this build, by name.
    Other(String),
}

impl FindingKind {
    /// Every kind this build emits.
    pub const ALL: &'static [FindingKind] = &[
        FindingKind::ConcurrencySpike,
        FindingKind::Throttling,
        FindingKind::Timeouts,
        FindingKind::UnusualInvocation,
        FindingKind::ApiCallRate,
        FindingKind::ApiErrorRate,
        FindingKind::LogSilence,
        FindingKind::EventTimeSkew,
        FindingKind::RetryStorm,
        FindingKind::EventLoss,
        FindingKind::NoisyNeighbour,
        FindingKind::RuleMatch,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            FindingKind::ConcurrencySpike => "concurrency_spike",
            FindingKind::Throttling => "throttling",
            FindingKind::Timeouts => "timeouts",
            FindingKind::UnusualInvocation => "unusual_invocation",
            FindingKind::ApiCallRate => "api_call_rate",
            FindingKind::ApiErrorRate => "api_error_rate",
            FindingKind::LogSilence => "log_silence",
            FindingKind::EventTimeSkew => "event_time_skew",
            FindingKind::RetryStorm => "retry_storm",
            FindingKind::EventLoss => "event_loss",
            FindingKind::NoisyNeighbour => "noisy_neighbour",
            FindingKind::RuleMatch => "rule_match",
            FindingKind::Other(s) => s,
        }
    }

    /// The kind named `s`; `Other` when this build does not know it.
    pub fn parse(s: &str) -> Self {
        FindingKind::ALL.iter().find(|k| k.as_str() == s).cloned().unwrap_or_else(|| FindingKind::Other(s.to_string()))
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FindingKind {
    fn from(s: &str) -> Self {
        FindingKind::parse(s)
    }
}

impl PartialEq<&str> for FindingKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for FindingKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FindingKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FindingKind::parse(&String::deserialize(d)?))
    }
}

/// One dimension value that contributed most to a finding (a principal, an IP, an error code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contributor {
    pub dimension: String,
    pub value: String,
    pub count: u64,
}

/// The detection rule behind a `rule_match` finding: what the alert tells a reader about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// The rule's `id` (a UUID in Sigma), or its title when it has none.
    pub id: String,
    pub title: String,
    /// Sigma's `level`: informational, low, medium, high, critical.
    pub level: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub falsepositives: Vec<String>,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The rule file it was loaded from, relative to the rules folder.
    #[serde(default)]
    pub file: String,
}

/// A finding, as JSON: times are RFC 3339 UTC strings of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable: a hash of kind, account, region, subject and episode start ([`finding_id`]), so a
    /// re-run or a retried invocation yields the same id.
    pub id: String,
    /// `concurrency_spike`, `throttling`, ... ([`FindingKind`]); more may come, so JSON consumers
    /// treat it as a string.
    pub kind: FindingKind,
    pub severity: Severity,
    pub account_id: String,
    pub region: String,
    /// A function name, an API as `source:name`, or a principal ARN.
    pub subject: String,
    #[serde(with = "rfc3339")]
    pub start: EpochMillis,
    #[serde(with = "rfc3339_opt")]
    pub end: Option<EpochMillis>,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub estimated_cost_usd: Option<f64>,
    pub summary: String,
    pub top_contributors: Vec<Contributor>,
    pub evidence: Vec<String>,
    pub status: Status,
    /// Muted by a suppression: still written to the lake and the findings file, never alerted.
    #[serde(default)]
    pub suppressed: bool,
    /// Why it was muted, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression_reason: Option<String>,
    /// The rule that matched, for `rule_match` findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleInfo>,
}

/// The stable id of an episode.
pub fn finding_id(kind: &FindingKind, account_id: &str, region: &str, subject: &str, start: EpochMillis) -> String {
    let mut h = Sha256::new();
    for part in [kind.as_str(), account_id, region, subject, &start.to_string()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    crate::lake::hex(&h.finalize()[..16])
}

mod rfc3339 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(t: &EpochMillis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_millis(*t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EpochMillis, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339_millis(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

mod rfc3339_opt {
    use super::*;
    pub fn serialize<S: serde::Serializer>(t: &Option<EpochMillis>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<EpochMillis>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_rfc3339_millis(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}"))),
        }
    }
}

/// The `findings` table: one row per emitted finding (opens and closes), partitioned like the
/// other tables by the finding's account, region and the UTC day of its `start`.
pub fn findings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
            let f = |n: &str, null: bool| Field::new(n, DataType::Float64, null);
            let contributor = DataType::Struct(Fields::from(vec![
                s("dimension", false),
                s("value", false),
                Field::new("count", DataType::Int64, false),
            ]));
            Arc::new(Schema::new(vec![
                s("id", false),
                s("kind", false),
                s("severity", false),
                s("subject", false),
                Field::new("start", timestamp_type(), false),
                Field::new("end", timestamp_type(), true),
                f("observed", false),
                f("baseline", false),
                f("score", false),
                f("estimated_cost_usd", true),
                s("summary", false),
                Field::new("top_contributors", DataType::List(Arc::new(Field::new("item", contributor, true))), false),
                Field::new("evidence", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
                s("status", false),
                Field::new("suppressed", DataType::Boolean, false),
                s("suppression_reason", true),
                // JSON of [`RuleInfo`] (Athena: `json_extract_scalar(rule, '$.title')`).
                s("rule", true),
            ]))
        })
        .clone()
}

/// Why a findings file could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("findings file {key}: {message}")]
pub struct FindingsReadError {
    pub key: String,
    pub message: String,
}

/// Reads a findings Parquet file written by detect back into findings. Account and region are
/// partition columns, so they come from the key (`.../account_id=/region=/date=/...`).
pub fn read_findings_parquet(key: &str, bytes: Vec<u8>) -> Result<Vec<Finding>, FindingsReadError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
    use arrow_array::Array;
    let err = |m: String| FindingsReadError { key: key.to_string(), message: m };
    let part = |name: &str| {
        key.split('/').find_map(|seg| seg.strip_prefix(name).and_then(|s| s.strip_prefix('='))).map(str::to_string)
    };
    let account_id = part("account_id").ok_or_else(|| err("no account_id= in the key".into()))?;
    let region = part("region").ok_or_else(|| err("no region= in the key".into()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| err(format!("no column {name}")));
        let text = |name: &str| -> Result<_, FindingsReadError> {
            col(name)?.as_string_opt::<i32>().cloned().ok_or_else(|| err(format!("column {name} is not text")))
        };
        let (id, kind, severity, subject, summary, status, reason) = (
            text("id")?,
            text("kind")?,
            text("severity")?,
            text("subject")?,
            text("summary")?,
            text("status")?,
            text("suppression_reason")?,
        );
        // Files written before rules existed have no `rule` column.
        let rule = match batch.column_by_name("rule") {
            Some(c) => Some(c.as_string_opt::<i32>().cloned().ok_or_else(|| err("column rule is not text".into()))?),
            None => None,
        };
        let ts = |name: &str| {
            col(name)?
                .as_primitive_opt::<TimestampMillisecondType>()
                .cloned()
                .ok_or_else(|| err(format!("column {name} is not a timestamp")))
        };
        let (start, end) = (ts("start")?, ts("end")?);
        let num = |name: &str| {
            col(name)?
                .as_primitive_opt::<Float64Type>()
                .cloned()
                .ok_or_else(|| err(format!("column {name} is not a double")))
        };
        let (observed, baseline, score, cost) =
            (num("observed")?, num("baseline")?, num("score")?, num("estimated_cost_usd")?);
        let suppressed =
            col("suppressed")?.as_boolean_opt().cloned().ok_or_else(|| err("suppressed is not a boolean".into()))?;
        let top = col("top_contributors")?
            .as_list_opt::<i32>()
            .cloned()
            .ok_or_else(|| err("top_contributors is not a list".into()))?;
        let evidence =
            col("evidence")?.as_list_opt::<i32>().cloned().ok_or_else(|| err("evidence is not a list".into()))?;
        for i in 0..batch.num_rows() {
            let severity = serde_json::from_value(serde_json::Value::String(severity.value(i).to_string()))
                .map_err(|e| err(format!("row {i}: severity: {e}")))?;
            let status = serde_json::from_value(serde_json::Value::String(status.value(i).to_string()))
                .map_err(|e| err(format!("row {i}: status: {e}")))?;
            let contribs = top.value(i);
            let bad = |what: &str| err(format!("row {i}: {what} has an unexpected type"));
            let contribs =
                contribs.as_struct_opt().filter(|c| c.num_columns() == 3).ok_or_else(|| bad("top_contributors"))?;
            let (dims, vals, counts) = (
                contribs.column(0).as_string_opt::<i32>().ok_or_else(|| bad("top_contributors.dimension"))?,
                contribs.column(1).as_string_opt::<i32>().ok_or_else(|| bad("top_contributors.value"))?,
                contribs.column(2).as_primitive_opt::<Int64Type>().ok_or_else(|| bad("top_contributors.count"))?,
            );
            let ev = evidence.value(i);
            let ev = ev.as_string_opt::<i32>().ok_or_else(|| bad("evidence"))?;
            out.push(Finding {
                id: id.value(i).to_string(),
                kind: FindingKind::parse(kind.value(i)),
                severity,
                account_id: account_id.clone(),
                region: region.clone(),
                subject: subject.value(i).to_string(),
                start: start.value(i),
                end: end.is_valid(i).then(|| end.value(i)),
                observed: observed.value(i),
                baseline: baseline.value(i),
                score: score.value(i),
                estimated_cost_usd: cost.is_valid(i).then(|| cost.value(i)),
                summary: summary.value(i).to_string(),
                top_contributors: (0..contribs.len())
                    .map(|j| Contributor {
                        dimension: dims.value(j).to_string(),
                        value: vals.value(j).to_string(),
                        count: counts.value(j).max(0) as u64,
                    })
                    .collect(),
                evidence: (0..ev.len()).map(|j| ev.value(j).to_string()).collect(),
                status,
                suppressed: suppressed.value(i),
                suppression_reason: reason.is_valid(i).then(|| reason.value(i).to_string()),
                rule: match rule.as_ref().filter(|r| r.is_valid(i)) {
                    Some(r) => Some(serde_json::from_str(r.value(i)).map_err(|e| err(format!("row {i}: rule: {e}")))?),
                    None => None,
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Finding {
        Finding {
            id: finding_id(&FindingKind::Throttling, "012345678901", "eu-west-1", "orders", 1_700_000_000_000),
            kind: "throttling".into(),
            severity: Severity::High,
            account_id: "012345678901".into(),
            region: "eu-west-1".into(),
            subject: "orders".into(),
            start: 1_700_000_000_000,
            end: None,
            observed: 120.0,
            baseline: 0.5,
            score: 30.0,
            estimated_cost_usd: None,
            summary: "s".into(),
            top_contributors: vec![Contributor { dimension: "error_code".into(), value: "X".into(), count: 3 }],
            evidence: vec!["e1".into()],
            status: Status::Open,
            suppressed: false,
            suppression_reason: None,
            rule: None,
        }
    }

    #[test]
    fn json_shape_is_the_contract() {
        let f = sample();
        let v: serde_json::Value = serde_json::to_value(&f).unwrap();
        assert_eq!(v["start"], "2023-11-14T22:13:20.000Z");
        assert!(v["end"].is_null());
        assert_eq!(v["severity"], "high");
        assert_eq!(v["status"], "open");
        assert_eq!(v["account_id"], "012345678901");
        let back: Finding = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let k = FindingKind::parse("k");
        let a = finding_id(&k, "1", "r", "s", 5);
        assert_eq!(a, finding_id(&k, "1", "r", "s", 5));
        assert_ne!(a, finding_id(&k, "1", "r", "s", 6));
        assert_ne!(finding_id(&"ab".into(), "c", "r", "s", 5), finding_id(&"a".into(), "bc", "r", "s", 5));
        // Ids did not change when kinds became an enum: the lake's ids stay the ids.
        assert_eq!(
            finding_id(&FindingKind::Throttling, "1", "r", "s", 5),
            finding_id(&FindingKind::Other("throttling".into()), "1", "r", "s", 5)
        );
    }

    #[test]
    fn kinds_keep_their_names_and_unknown_ones_stay_readable() {
        for k in FindingKind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(&serde_json::from_str::<FindingKind>(&json).unwrap(), k);
        }
        assert_eq!(FindingKind::parse("log_silence"), FindingKind::LogSilence);
        let later: FindingKind = serde_json::from_str("\"quota_exhaustion\"").unwrap();
        assert_eq!(later, FindingKind::Other("quota_exhaustion".into()));
        assert_eq!(serde_json::to_string(&later).unwrap(), "\"quota_exhaustion\"");
        assert_eq!(FindingKind::parse("retry_storm"), FindingKind::RetryStorm);
        assert!(FindingKind::EventTimeSkew == "event_time_skew");
        assert!(Severity::Critical > Severity::Info);
    }
}
