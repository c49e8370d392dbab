//! Rule matches become `rule_match` findings. A rule's matches in one account and region are one
//! episode while they keep coming less than `rules.group_minutes` apart in event time: the first
//! match opens it at once (an alert does not wait for a window to close), later ones add evidence,
//! and it closes when the CloudTrail watermark has passed its last match by that gap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{finding_id, Finding, FindingKind, RuleInfo, Severity, Status};
use trailwatch_core::time::{format_rfc3339_millis, EpochMillis};

use super::Ctx;
use crate::event::ApiCall;
use crate::sigma::correlation::{Correlation, Mark};
use crate::sigma::CorrHit;
use crate::window::{Contribs, MINUTE};

/// Matching event ids kept per episode (the alert's query lists them).
pub const RULE_EVIDENCE: usize = 20;

/// One rule's open episode in a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleEpisode {
    pub id: String,
    pub subject: String,
    pub severity: Severity,
    /// The rule as it was when the episode opened: the closing finding says the same.
    pub rule: RuleInfo,
    /// The first match's event time (the id depends on it, so it never moves).
    pub start: EpochMillis,
    /// The earliest and latest matches.
    pub first: EpochMillis,
    pub last: EpochMillis,
    pub count: u64,
    pub evidence: Vec<String>,
    pub top: Contribs,
}

/// Open episodes one rule (or correlation group) keeps in a shard; the one whose last match is
/// oldest closes when another opens.
pub const MAX_OPEN: usize = 8;

/// Whether a match at `t` belongs to `ep`: less than `gap` from its matches.
fn near(ep: &RuleEpisode, t: EpochMillis, gap: i64) -> bool {
    t < ep.last + gap && t > ep.first - gap
}

/// Marks a correlation group keeps (the newest); a group cannot grow without limit.
pub const MAX_MARKS: usize = crate::sigma::correlation::MAX_COUNT as usize;

/// A record a correlation counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrMark {
    pub t: EpochMillis,
    pub rule: u32,
    pub value: u64,
    pub event_id: String,
}

impl Mark for CorrMark {
    fn time(&self) -> i64 {
        self.t
    }
    fn rule(&self) -> u32 {
        self.rule
    }
    fn value(&self) -> u64 {
        self.value
    }
}

/// Open episodes of one shard, by rule id (correlations: by id and group), and the recent marks
/// of each correlation group. A rule may have several open episodes: a late delivery's matches
/// group in their own time, and a record claiming a far-future time does not hold the others up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleMatches {
    pub open: BTreeMap<String, Vec<RuleEpisode>>,
    #[serde(default)]
    pub marks: BTreeMap<String, Vec<CorrMark>>,
    /// The key of the last correlation hit, reused: most records match nothing new.
    #[serde(skip)]
    scratch: String,
}

impl RuleMatches {
    pub fn len(&self) -> usize {
        self.open.len() + self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.marks.is_empty()
    }

    /// The matches `a` carries: rules (indices in the config's rule set) and correlation marks.
    pub fn observe(&mut self, ctx: &mut Ctx, a: &ApiCall) {
        for &r in &a.rules {
            let Some(rule) = ctx.cfg.ruleset.rules.get(r as usize) else { continue };
            let head = Head { key: &rule.info.id, rule: &rule.info, severity: rule.severity, group: "" };
            self.hit(ctx, &head, a, &[]);
        }
        for h in &a.correlated {
            let Some(c) = ctx.cfg.ruleset.correlations.get(h.corr as usize) else { continue };
            let mut key = std::mem::take(&mut self.scratch);
            key.clear();
            key.push_str(&c.info.id);
            key.push('\u{1f}');
            key.push_str(&h.group);
            self.correlate(ctx, c, h, a, &key);
            self.scratch = key;
        }
    }

    /// One record's mark for correlation `c` in the group `key`: joins an open episode of the
    /// group, or is kept and may complete a window.
    fn correlate(&mut self, ctx: &mut Ctx, c: &Correlation, h: &CorrHit, a: &ApiCall, key: &str) {
        let head = Head { key, rule: &c.info, severity: c.severity, group: &h.group };
        let gap = ctx.cfg.rules.group_minutes as i64 * MINUTE;
        if self.open.get(key).is_some_and(|eps| eps.iter().any(|ep| near(ep, a.time, gap))) {
            self.hit(ctx, &head, a, &[]);
            return;
        }
        if !self.marks.contains_key(key) {
            if self.marks.len() >= ctx.cfg.baseline.max_keys {
                return;
            }
            self.marks.insert(key.to_string(), Vec::new());
        }
        let marks = self.marks.get_mut(key).expect("inserted above");
        let at = marks.partition_point(|m| m.t <= a.time);
        marks.insert(at, CorrMark { t: a.time, rule: h.rule, value: h.value, event_id: a.event_id.to_string() });
        let at = if marks.len() > MAX_MARKS {
            marks.remove(0);
            at.saturating_sub(1)
        } else {
            at
        };
        if let Some(w) = c.fires(marks, at) {
            let window = marks[w].to_vec();
            self.marks.remove(key);
            self.hit(ctx, &head, a, &window);
        }
    }

    /// A match of `head` by `a`; `window`: the records that made a correlation fire (they open
    /// its episode together, from the first of them).
    fn hit(&mut self, ctx: &mut Ctx, head: &Head, a: &ApiCall, window: &[CorrMark]) {
        let gap = ctx.cfg.rules.group_minutes as i64 * MINUTE;
        let t = a.time;
        if !self.open.contains_key(head.key) {
            self.open.insert(head.key.to_string(), Vec::new());
        }
        let eps = self.open.get_mut(head.key).expect("inserted above");
        // The episode this match belongs to: late matches join the one of their time, not the newest.
        if let Some(ep) = eps.iter_mut().find(|ep| near(ep, t, gap)) {
            ep.count += 1;
            ep.first = ep.first.min(t);
            ep.last = ep.last.max(t);
            add(ep, a);
            return;
        }
        if eps.len() >= MAX_OPEN {
            let oldest = (0..eps.len()).min_by_key(|&i| eps[i].last).expect("not empty");
            let done = eps.remove(oldest);
            ctx.out.push(finding(ctx, &done, Status::Closed));
        }
        let mut ep = open(ctx, head, a, window);
        add(&mut ep, a);
        ctx.out.push(finding(ctx, &ep, Status::Open));
        eps.push(ep);
    }

    /// Closes episodes whose last match is a gap behind `final_before` (CloudTrail's), and drops
    /// correlation marks no new on-time record can share a window with.
    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let gap = ctx.cfg.rules.group_minutes as i64 * MINUTE;
        self.open.retain(|_, eps| {
            eps.retain(|ep| {
                if ep.last + gap > final_before {
                    return true;
                }
                ctx.out.push(finding(ctx, ep, Status::Closed));
                false
            });
            !eps.is_empty()
        });
        let longest = ctx.cfg.ruleset.correlations.iter().map(|c| c.span).max().unwrap_or(0);
        self.marks.retain(|_, m| {
            m.retain(|x| x.t + longest > final_before);
            !m.is_empty()
        });
    }
}

/// What a match is of: a rule, or a correlation and the group it fired for.
struct Head<'a> {
    key: &'a str,
    rule: &'a RuleInfo,
    severity: Severity,
    group: &'a str,
}

fn open(ctx: &Ctx, head: &Head, a: &ApiCall, window: &[CorrMark]) -> RuleEpisode {
    let rule = head.rule;
    let mut subject = if rule.id == rule.title { rule.title.clone() } else { format!("{} ({})", rule.title, rule.id) };
    if !head.group.is_empty() {
        subject = format!("{subject}: {}", head.group);
    }
    let mut evidence: Vec<String> = window.iter().take(RULE_EVIDENCE).map(|m| m.event_id.clone()).collect();
    evidence.retain(|e| *e != a.event_id);
    let start = window.first().map_or(a.time, |m| m.t.min(a.time));
    let last = window.last().map_or(a.time, |m| m.t.max(a.time));
    RuleEpisode {
        id: finding_id(&FindingKind::RuleMatch, ctx.account, ctx.region, &subject, start),
        subject,
        severity: head.severity,
        rule: rule.clone(),
        start,
        first: start,
        last,
        count: window.len().max(1) as u64,
        evidence,
        top: Contribs::default(),
    }
}

fn add(ep: &mut RuleEpisode, a: &ApiCall) {
    if ep.evidence.len() < RULE_EVIDENCE && !a.event_id.is_empty() && !ep.evidence.iter().any(|e| *e == a.event_id) {
        ep.evidence.push(a.event_id.to_string());
    }
    ep.top.add("principal", &a.principal, 1);
    ep.top.add("event_name", &a.name, 1);
    ep.top.add("source_ip", &a.source_ip, 1);
    ep.top.add("user_agent", &a.user_agent, 1);
}

fn finding(ctx: &Ctx, ep: &RuleEpisode, status: Status) -> Finding {
    let n = if ep.count == 1 { "1 record".to_string() } else { format!("{} records", ep.count) };
    let summary = match status {
        Status::Open => format!("rule {:?} matched {n} from {}", ep.rule.title, format_rfc3339_millis(ep.start)),
        Status::Closed if ep.first == ep.last => {
            format!("rule {:?} matched {n} at {}", ep.rule.title, format_rfc3339_millis(ep.first))
        }
        Status::Closed => format!(
            "rule {:?} matched {n} from {} to {}",
            ep.rule.title,
            format_rfc3339_millis(ep.first),
            format_rfc3339_millis(ep.last)
        ),
    };
    Finding {
        id: ep.id.clone(),
        kind: FindingKind::RuleMatch,
        severity: ep.severity,
        account_id: ctx.account.to_string(),
        region: ctx.region.to_string(),
        subject: ep.subject.clone(),
        start: ep.start,
        end: (status == Status::Closed).then_some(ep.last.max(ep.start) + 1),
        observed: ep.count as f64,
        baseline: 0.0,
        score: ep.count as f64,
        estimated_cost_usd: None,
        summary,
        top_contributors: ep.top.to_list(3),
        evidence: ep.evidence.clone(),
        status,
        suppressed: false,
        suppression_reason: None,
        rule: Some(ep.rule.clone()),
    }
}
