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

/// Open episodes of one shard, by rule id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleMatches {
    pub open: BTreeMap<String, RuleEpisode>,
}

impl RuleMatches {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The matches `a` carries (rule indices in the config's rule set).
    pub fn observe(&mut self, ctx: &mut Ctx, a: &ApiCall) {
        let gap = ctx.cfg.rules.group_minutes as i64 * MINUTE;
        for &r in &a.rules {
            let Some(rule) = ctx.cfg.ruleset.rules.get(r as usize) else { continue };
            let t = a.time;
            match self.open.get_mut(&rule.info.id) {
                Some(ep) if t < ep.last + gap && t > ep.first - gap => {
                    ep.count += 1;
                    ep.first = ep.first.min(t);
                    ep.last = ep.last.max(t);
                    add(ep, a);
                }
                // Far before the open episode (a late delivery): an episode of its own, over at once.
                Some(ep) if t <= ep.first - gap => {
                    let mut own = open(ctx, &rule.info, rule.severity, a);
                    add(&mut own, a);
                    ctx.out.push(finding(ctx, &own, Status::Open));
                    ctx.out.push(finding(ctx, &own, Status::Closed));
                }
                found => {
                    if let Some(done) = found.map(|ep| std::mem::replace(ep, open(ctx, &rule.info, rule.severity, a))) {
                        ctx.out.push(finding(ctx, &done, Status::Closed));
                    }
                    let ep = self
                        .open
                        .entry(rule.info.id.clone())
                        .or_insert_with(|| open(ctx, &rule.info, rule.severity, a));
                    add(ep, a);
                    ctx.out.push(finding(ctx, ep, Status::Open));
                }
            }
        }
    }

    /// Closes episodes whose last match is a gap behind `final_before` (CloudTrail's).
    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let gap = ctx.cfg.rules.group_minutes as i64 * MINUTE;
        self.open.retain(|_, ep| {
            if ep.last + gap > final_before {
                return true;
            }
            ctx.out.push(finding(ctx, ep, Status::Closed));
            false
        });
    }
}

fn open(ctx: &Ctx, rule: &RuleInfo, severity: Severity, a: &ApiCall) -> RuleEpisode {
    let subject = if rule.id == rule.title { rule.title.clone() } else { format!("{} ({})", rule.title, rule.id) };
    RuleEpisode {
        id: finding_id(&FindingKind::RuleMatch, ctx.account, ctx.region, &subject, a.time),
        subject,
        severity,
        rule: rule.clone(),
        start: a.time,
        first: a.time,
        last: a.time,
        count: 1,
        evidence: vec![],
        top: Contribs::default(),
    }
}

fn add(ep: &mut RuleEpisode, a: &ApiCall) {
    if ep.evidence.len() < RULE_EVIDENCE && !a.event_id.is_empty() && !ep.evidence.iter().any(|e| *e == a.event_id) {
        ep.evidence.push(a.event_id.to_string());
    }
    ep.top.add("principal", &a.principal, 1);
    ep.top.add("event_name", &format!("{}:{}", a.source, a.name), 1);
    ep.top.add("source_ip", &a.source_ip, 1);
    ep.top.add("user_agent", &a.user_agent, 1);
}

fn finding(ctx: &Ctx, ep: &RuleEpisode, status: Status) -> Finding {
    let n = if ep.count == 1 { "1 record".to_string() } else { format!("{} records", ep.count) };
    let summary = match status {
        Status::Open => format!("rule {:?} matched {n} from {}", ep.rule.title, format_rfc3339_millis(ep.start)),
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
