//! Findings to SNS publishes: one publish per alert, carrying a plain-text `email` body a person
//! can act on in ten seconds and a `default` JSON body (Finding-shaped) for machine subscribers.
//!
//! Every message fits SNS's publish limit whatever the finding holds: attacker-controlled text is
//! escaped and capped ([`crate::text`]), lists are shortened, a message that is still too large is
//! re-rendered with smaller caps, and digests split in halves until each part fits.

mod digest;
mod email;
mod json;
mod kinds;
mod sql;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use trailwatch_core::finding::{Finding, Status};

use crate::text::subject_line;

pub use digest::digest;

use email::{closed_email, opened_email, sev};
use json::finding_json;

/// SNS's limit for one publish: the message (the JSON structure with every protocol's body), the
/// subject and the message attributes together.
pub const MAX_PUBLISH_BYTES: usize = 262_144;
/// SNS subjects: at most 100 printable ASCII characters.
pub const MAX_SUBJECT: usize = 100;

/// The smallest field cap tried when a message has to shrink to fit.
const MIN_FIELD_CHARS: usize = 16;
/// Bytes of one attribute value, and values in one `String.Array`.
const ATTR_MAX: usize = 256;
const ATTR_ARRAY_MAX: usize = 50;
/// Caps for values detect writes itself (kind, account, region, id): bounded even if not ours.
const SHORT_MAX: usize = 64;
const ID_MAX: usize = 256;
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

/// The Athena query for a finding's evidence, as its email gives it (one string, lines joined):
/// for pages other than the email, such as `trailwatch report`.
pub fn athena_query(f: &Finding, cfg: &RenderConfig) -> String {
    sql::evidence_query(f, cfg).join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;
    use crate::render::json::JSON_LIST_MAX;
    use trailwatch_core::finding::{Contributor, Severity};

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
}

/// What the tests of every part share.
#[cfg(test)]
mod fixtures {
    use super::*;
    use trailwatch_core::finding::{finding_id, Contributor, Severity};
    use trailwatch_core::time::{parse_rfc3339_millis, EpochMillis};

    pub(super) const ACCOUNT: &str = "111122223333";
    pub(super) const REGION: &str = "eu-west-1";

    pub(super) fn t(s: &str) -> EpochMillis {
        parse_rfc3339_millis(s).unwrap()
    }

    pub(super) fn finding(kind: &str, subject: &str) -> Finding {
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
            rule: None,
        }
    }

    pub(super) fn assert_fits(m: &Message) {
        assert!(m.publish_size() <= MAX_PUBLISH_BYTES, "{} bytes", m.publish_size());
        assert!(m.subject.len() <= MAX_SUBJECT && !m.subject.is_empty(), "{}", m.subject);
        assert!(m.subject.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{:?}", m.subject);
        for (k, v) in &m.attributes {
            assert!(!v.string_value().is_empty(), "{k}");
        }
    }

    pub(super) fn sql_of(email: &str) -> String {
        let start = email.find("Evidence query").expect("has a query");
        let end = email[start..].find("\n\n").map_or(email.len(), |e| start + e);
        email[start..end].to_string()
    }
}
