//! Any bytes through what alert reads and renders: a findings Parquet file from the lake, and
//! findings whose text fields are arbitrary (attacker-controlled). Reading must never panic;
//! every rendered message must fit SNS and keep a one-line printable subject.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_alert::render::{closed, digest, opened, RenderConfig, MAX_PUBLISH_BYTES, MAX_SUBJECT};
use trailwatch_core::finding::{Contributor, Finding, RuleInfo, Severity, Status};

fuzz_target!(|data: &[u8]| {
    let key = "findings/account_id=111122223333/region=eu-west-1/date=2026-01-01/x.parquet";
    let _ = trailwatch_core::finding::read_findings_parquet(key, data.to_vec());
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('|').map(str::to_string);
    let mut next = || parts.next().unwrap_or_default();
    let f = Finding {
        id: next(),
        kind: trailwatch_core::finding::FindingKind::parse(&next()),
        severity: Severity::High,
        account_id: next(),
        region: next(),
        subject: next(),
        start: data.len() as i64 * 1_000_000_007,
        end: None,
        observed: 1.0,
        baseline: 0.0,
        score: f64::NAN,
        estimated_cost_usd: Some(f64::INFINITY),
        summary: next(),
        top_contributors: vec![Contributor { dimension: next(), value: next(), count: 1 }],
        evidence: vec![next()],
        status: Status::Open,
        suppressed: false,
        suppression_reason: None,
        rule: Some(RuleInfo {
            id: next(),
            title: next(),
            level: next(),
            description: next(),
            falsepositives: vec![next(), next()],
            references: vec![next()],
            tags: vec![next()],
            file: next(),
        }),
    };
    let cfg = RenderConfig::default();
    let mut ms = vec![opened(&f, 3, &cfg), closed(&f, &cfg)];
    ms.extend(digest(&f.account_id, &[&f, &f], &cfg));
    for m in ms {
        assert!(m.publish_size() <= MAX_PUBLISH_BYTES);
        assert!(m.subject.len() <= MAX_SUBJECT && m.subject.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert!(!m.email.lines().any(|l| l.starts_with("Subject:")));
    }
});
