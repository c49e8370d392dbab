//! The plain-text `email` body: the headline, the facts, the evidence query, what to do first.

use std::fmt::Write as _;

use trailwatch_core::finding::{Finding, RuleInfo, Severity};
use trailwatch_core::time::format_rfc3339_millis;

use super::kinds::KindAlert;
use super::sql::{evidence_query, shape};
use super::{RenderConfig, ID_MAX, SHORT_MAX};
use crate::text::{field, quoted};

/// Contributors and evidence ids shown in the email.
const EMAIL_LIST_MAX: usize = 5;

pub(super) fn sev(s: Severity) -> String {
    s.as_str().to_ascii_uppercase()
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

pub(super) fn kv(e: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let gap = if label.len() >= 12 { " " } else { "" };
    let _ = writeln!(e, "  {label:<12}{gap}{value}");
}

fn headline(f: &Finding, cap: usize) -> String {
    format!(
        "{} {}: {} in {}/{}",
        sev(f.severity),
        f.kind.title(),
        quoted(&f.subject, cap),
        field(&f.account_id, SHORT_MAX),
        field(&f.region, SHORT_MAX)
    )
}

pub(super) fn opened_email(f: &Finding, folded: usize, cfg: &RenderConfig, cap: usize) -> String {
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
    if let Some(r) = &f.rule {
        rule_lines(&mut e, r, cap);
    }
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
    for l in f.kind.first_steps(shape(&f.kind, &f.subject)) {
        let _ = writeln!(e, "  - {l}");
    }
    let _ = writeln!(e, "\nFinding id: {}", field(&f.id, ID_MAX));
    e
}

/// What the rule behind a `rule_match` says about itself: its words, its level, what else can
/// trip it and where to read more. Rule files come from anyone's repository: quoted like the rest.
fn rule_lines(e: &mut String, r: &RuleInfo, cap: usize) {
    kv(e, "Rule", &format!("{} (id {})", quoted(&r.title, cap), field(&r.id, ID_MAX)));
    kv(e, "Level", &field(&r.level, SHORT_MAX));
    if !r.description.is_empty() {
        kv(e, "Description", &quoted(&r.description, cap));
    }
    for (label, list) in [("False positives", &r.falsepositives), ("References", &r.references)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(e, "  {label}:");
        for x in list.iter().take(EMAIL_LIST_MAX) {
            let _ = writeln!(e, "    {}", quoted(x, cap));
        }
        more(e, list.len());
    }
}

fn more(e: &mut String, total: usize) {
    if total > EMAIL_LIST_MAX {
        let _ = writeln!(e, "    … and {} more", total - EMAIL_LIST_MAX);
    }
}

pub(super) fn closed_email(f: &Finding, cap: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;
    use crate::render::*;
    use trailwatch_core::finding::Contributor;

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
    fn rule_match_names_the_rule_its_level_false_positives_and_the_records() {
        let mut f = finding("rule_match", "AWS CloudTrail Important Change (4db60cc0-36fb-4f0d-a3ca-5a7d4a4e6dc6)");
        f.rule = Some(trailwatch_core::finding::RuleInfo {
            id: "4db60cc0-36fb-4f0d-a3ca-5a7d4a4e6dc6".into(),
            title: "AWS CloudTrail Important Change".into(),
            level: "medium".into(),
            description: "Detects disabling, deleting and updating of a Trail".into(),
            falsepositives: vec!["Valid change in a Trail".into()],
            references: vec![
                "https://docs.aws.amazon.com/awscloudtrail/latest/userguide/best-practices-security.html".into()
            ],
            tags: vec!["attack.defense-evasion".into()],
            file: "cloudtrail/aws_cloudtrail_disable_logging.yml".into(),
        });
        f.evidence = vec!["10163ed2-2253-469d-a5ee-cbc6651f8934".into(), "it's".into()];
        let m = opened(&f, 0, &RenderConfig::default());
        assert_fits(&m);
        assert!(m.email.starts_with("HIGH rule match: \"AWS CloudTrail Important Change ("), "{}", m.email);
        for want in [
            "  Rule:       \"AWS CloudTrail Important Change\" (id 4db60cc0-36fb-4f0d-a3ca-5a7d4a4e6dc6)",
            "  Level:      medium",
            "  Description: \"Detects disabling, deleting and updating of a Trail\"",
            "  False positives:",
            "    \"Valid change in a Trail\"",
            "  References:",
            "  FROM \"trailwatch\".\"cloudtrail\"",
            "    AND event_id IN ('10163ed2-2253-469d-a5ee-cbc6651f8934', 'it''s')",
        ] {
            assert!(m.email.lines().any(|l| l == want), "missing {want:?} in\n{}", m.email);
        }
        assert!(m.email.contains("the rule's false positives"));
        let json: trailwatch_core::finding::Finding = serde_json::from_str(&m.default).unwrap();
        assert_eq!(json.rule, f.rule);
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
