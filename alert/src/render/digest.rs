//! Digests: one message per account listing many findings, split into parts that fit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use serde_json::Value;
use trailwatch_core::finding::{Finding, FindingKind, Severity, FINDINGS_TABLE};
use trailwatch_core::time::{format_rfc3339_millis, utc_date};

use super::email::{kv, sev};
use super::json::{clip, finding_json, json_escaped_len};
use super::sql::{sql_eq, sql_lines, sql_str, Query, SQL_PARTITION_MAX};
use super::{
    attr, fit, one_or_many, AttrValue, Message, RenderConfig, MAX_PUBLISH_BYTES, MAX_SUBJECT, PREFIX, SHORT_MAX,
};
use crate::text::{field, quoted, subject_line};

/// Characters of a subject on one digest line.
const DIGEST_SUBJECT_MAX: usize = 120;
/// Kinds listed in a digest's counts before "N other kinds".
const DIGEST_KINDS_MAX: usize = 20;

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
    by_kind: BTreeMap<FindingKind, usize>,
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
            *t.by_kind.entry(f.kind.clone()).or_default() += 1;
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
        let mut kinds: Vec<(&FindingKind, &usize)> = t.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.as_str().cmp(b.0.as_str())));
        let mut kind_list: Vec<String> =
            kinds.iter().take(DIGEST_KINDS_MAX).map(|(k, n)| format!("{} {n}", field(k.as_str(), SHORT_MAX))).collect();
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
    use crate::render::fixtures::*;
    use crate::render::*;
    use trailwatch_core::finding::Contributor;

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
}
