//! The `default` JSON body: the finding, capped, still readable as a `Finding`.

use serde_json::Value;
use trailwatch_core::finding::{Contributor, Finding, FindingKind, RuleInfo};

use super::{ID_MAX, SHORT_MAX};

/// Contributors and evidence ids kept in the JSON body.
pub(super) const JSON_LIST_MAX: usize = 20;

/// At most `max` characters, ending with `…` when cut.
pub(super) fn clip(s: &str, max: usize) -> String {
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
            FindingKind::Other(k) => FindingKind::Other(clip(k, SHORT_MAX)),
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
        rule: f.rule.as_ref().map(|r| RuleInfo {
            id: clip(&r.id, SHORT_MAX),
            title: clip(&r.title, cap),
            level: clip(&r.level, SHORT_MAX),
            description: clip(&r.description, cap),
            falsepositives: r.falsepositives.iter().take(JSON_LIST_MAX).map(|x| clip(x, cap)).collect(),
            references: r.references.iter().take(JSON_LIST_MAX).map(|x| clip(x, cap)).collect(),
            tags: r.tags.iter().take(JSON_LIST_MAX).map(|x| clip(x, SHORT_MAX)).collect(),
            file: clip(&r.file, cap),
        }),
    }
}

pub(super) fn finding_json(f: &Finding, cap: usize) -> Value {
    serde_json::to_value(capped(f, cap)).expect("a Finding serializes to JSON")
}

/// Bytes `s` takes inside a JSON string (what it adds to [`Message::message_json`]).
pub(super) fn json_escaped_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(s.len(), |j| j.len() - 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;
    use crate::render::*;

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
}
