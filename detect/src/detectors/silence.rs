//! CloudTrail that stops arriving for an account and region while its baseline says it should
//! (an attacker's `StopLogging` otherwise looks like a quiet night), the `StopLogging` call
//! itself, and missing sources.

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{FindingKind, Severity, Status};
use trailwatch_core::time::EpochMillis;

use super::lambda::expected_between;
use super::{alpha_for, Ctx};
use crate::event::ApiCall;
use crate::window::{num, push_evidence, Episode, Series, Subject, Tracker, Verdict, Windows, HOUR, MINUTE};

/// The subject of CloudTrail silence findings.
pub const CLOUDTRAIL_SUBJECT: &str = "cloudtrail";

/// The end of a trail episode's `detail` when a call stopped the trail (`StopLogging called`).
const CALLED: &str = " called";

/// A trail stopped by a call, or CloudTrail records that stopped arriving.
fn describe_trail(ep: &Episode) -> String {
    if ep.detail.ends_with(CALLED) {
        format!("{} for this account and region: CloudTrail may stop recording", ep.detail)
    } else {
        format!(
            "CloudTrail records stopped arriving ({}) although about {} were expected since",
            ep.detail,
            num(ep.baseline)
        )
    }
}

/// A source a detector needs is missing (`detail` says which and how to enable it).
fn describe_source(ep: &Episode) -> String {
    format!("{}: {}", ep.subject, ep.detail)
}

/// Calls that stop or remove a trail.
fn stops_trail(a: &ApiCall) -> bool {
    a.source == "cloudtrail.amazonaws.com"
        && matches!(&*a.name, "StopLogging" | "DeleteTrail")
        && a.error_code.is_none()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrailSilence {
    pub hours: Windows<u64>,
    pub hourly: Series,
    pub last_record: Option<EpochMillis>,
    pub ep: Tracker,
}

impl TrailSilence {
    pub fn observe(&mut self, ctx: &mut Ctx, a: &ApiCall) {
        if let Some(h) = self.hours.at(a.time, HOUR) {
            *h += 1;
        }
        self.last_record = Some(self.last_record.map_or(a.time, |l| l.max(a.time)));
        let gap = ctx.cfg.log_silence.min_gap_minutes as i64 * MINUTE;
        if stops_trail(a) {
            let subject = Subject {
                account: ctx.account,
                region: ctx.region,
                kind: FindingKind::LogSilence,
                subject: CLOUDTRAIL_SUBJECT,
                describe: describe_trail,
            };
            match self.ep.episode_mut() {
                Some(ep) => {
                    ep.top.add("principal", &a.principal, 1);
                    push_evidence(&mut ep.evidence, &a.event_id);
                }
                None => {
                    let v = Verdict { observed: 0.0, expected: 0.0, z: 10.0, anomalous: true };
                    let mut ep = Episode::new(&subject, a.time, a.time, &v);
                    ep.severity = Severity::High;
                    ep.detail = format!("{}{CALLED}", a.name);
                    ep.top.add("principal", &a.principal, 1);
                    ep.top.add("source_ip", &a.source_ip, 1);
                    ep.top.add("user_agent", &a.user_agent, 1);
                    push_evidence(&mut ep.evidence, &a.event_id);
                    ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Open, describe_trail));
                    self.ep.episode = Some(ep);
                }
            }
            return;
        }
        // Records again, a gap after the episode began: the trail is back.
        if let Some(ep) = self.ep.episode_mut() {
            if a.time >= ep.start + gap {
                ep.last = a.time;
                let f = ep.finding(ctx.account, ctx.region, Status::Closed, describe_trail);
                self.ep.episode = None;
                ctx.out.push(f);
            }
        }
    }

    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let alpha = alpha_for(ctx.cfg.baseline.alpha, HOUR);
        let silent = self.ep.is_open();
        let mut hours = std::mem::take(&mut self.hours);
        hours.finalize(final_before, HOUR, |w, n| {
            if !silent {
                self.hourly.learn(w, n as f64, alpha, HOUR);
            }
        });
        self.hours = hours;
    }

    /// `now`: the deployment's event-time clock less lateness (other accounts' and regions' data
    /// keep it moving while this one is silent).
    pub fn check(&mut self, ctx: &mut Ctx, now: EpochMillis) {
        let r = &ctx.cfg.log_silence;
        let Some(last) = self.last_record else { return };
        if now - last < r.min_gap_minutes as i64 * MINUTE || !self.hourly.has_history(last, &ctx.cfg.baseline) {
            return;
        }
        let expected = expected_between(&self.hourly, &ctx.cfg.baseline, last, now);
        if expected < r.min_expected_records {
            return;
        }
        match self.ep.episode_mut() {
            // A StopLogging episode now has its silence too.
            Some(ep) => {
                ep.baseline = ep.baseline.max(expected);
                ep.score = ep.score.max(expected.sqrt());
            }
            None => {
                let s = Subject {
                    account: ctx.account,
                    region: ctx.region,
                    kind: FindingKind::LogSilence,
                    subject: CLOUDTRAIL_SUBJECT,
                    describe: describe_trail,
                };
                let v = Verdict { observed: 0.0, expected, z: expected.sqrt(), anomalous: true };
                let f = self.ep.step(&s, (last, now), &v, u32::MAX, |ep| {
                    ep.severity = Severity::High;
                    ep.detail = "no CloudTrail records".into();
                });
                ctx.out.extend(f);
            }
        }
    }
}

/// A once-only warning that a source a detector needs is missing, as an `info` finding that
/// closes if the source appears.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceWarning {
    pub ep: Option<Episode>,
    pub warned: bool,
}

impl SourceWarning {
    /// `missing`: whether the source is absent now; `what` its subject (`source:...`).
    pub fn update(&mut self, ctx: &mut Ctx, missing: bool, what: &str, why: &str, at: EpochMillis) {
        match (&self.ep, missing) {
            (None, true) if !self.warned => {
                let s = Subject {
                    account: ctx.account,
                    region: ctx.region,
                    kind: FindingKind::LogSilence,
                    subject: what,
                    describe: describe_source,
                };
                let v = Verdict { observed: 0.0, expected: 0.0, z: 0.0, anomalous: true };
                let mut ep = Episode::new(&s, at, at, &v);
                ep.severity = Severity::Info;
                ep.detail = why.to_string();
                ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Open, describe_source));
                self.ep = Some(ep);
                self.warned = true;
            }
            (Some(_), false) => {
                if let Some(mut ep) = self.ep.take() {
                    ep.last = at;
                    ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Closed, describe_source));
                }
            }
            _ => {}
        }
    }
}
