//! Per-function detectors: concurrency spikes with their extra cost (denial of wallet),
//! timeouts and p95 duration creeping toward the timeout, unusual invokers, and functions whose
//! logs stop.

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{FindingKind, Severity, Status};
use trailwatch_core::time::EpochMillis;

use super::{alpha_for, Ctx};
use crate::config::RateRule;
use crate::event::{ApiCall, Invocation, InvocationStatus};
use crate::stats::{peak_overlap, BoundedSet, LogHistogram, Moments};
use crate::window::{
    num, push_evidence, window_start, Episode, Series, Subject, Tracker, Verdict, Windows, HOUR, MINUTE,
};

/// Concurrency and invocation rate are judged per minute.
pub const MINUTE_WIDTH: i64 = MINUTE;
/// Invocation intervals kept per minute for the exact peak; beyond, the peak is a lower bound.
const MAX_INTERVALS: usize = 20_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MinuteAgg {
    /// `[start, end)` of the invocations running during this minute.
    pub intervals: Vec<(EpochMillis, EpochMillis)>,
    /// Invocations that started in this minute.
    pub invocations: u64,
    /// Their cost in USD.
    pub cost: f64,
    /// `ConcurrentExecutions` maximum from the metric stream.
    pub metric_peak: f64,
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuarterAgg {
    pub invocations: u64,
    pub timeouts: u64,
    pub durations: LogHistogram,
    pub evidence: Vec<String>,
}

/// Invokers a function has seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Novelty {
    pub first: Option<EpochMillis>,
    pub principals: BoundedSet,
    pub accounts: BoundedSet,
    pub ips: BoundedSet,
    pub agents: BoundedSet,
    /// Invocations per UTC hour of day.
    pub hours: Vec<u64>,
    pub episode: Option<Episode>,
    /// Novel invocations in the episode so far.
    pub count: u32,
    /// (dimension, hash) of the episode's new values, learned when it ends.
    pub pending: Vec<(u8, u64)>,
}

/// Everything trailwatch keeps about one function.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionKey {
    pub name: String,
    pub last_seen: EpochMillis,
    pub minutes: Windows<MinuteAgg>,
    pub concurrency: Series,
    pub rate: Series,
    pub cost_per_invocation: Moments,
    pub conc_ep: Tracker,
    pub quarters: Windows<QuarterAgg>,
    pub timeouts: Series,
    pub timeout_rate: Moments,
    pub p95: Moments,
    pub to_ep: Tracker,
    /// The configured timeout, learned from logs or CloudTrail.
    pub timeout_s: Option<f64>,
    pub hours: Windows<u64>,
    pub hourly: Series,
    pub last_invocation: Option<EpochMillis>,
    pub silence_ep: Tracker,
    pub novelty: Novelty,
    /// Which sources have mentioned the function.
    pub seen_in_logs: bool,
    pub seen_invoke_events: bool,
}

fn inv_rule(ctx: &Ctx) -> (RateRule, RateRule) {
    let c = &ctx.cfg.concurrency;
    (
        RateRule { z: c.z, min_count: c.min_concurrency, min_ratio: c.min_ratio },
        RateRule { z: c.z, min_count: c.min_invocations, min_ratio: c.min_ratio },
    )
}

impl FunctionKey {
    pub fn observe_invocation(&mut self, ctx: &mut Ctx, inv: &Invocation) -> bool {
        self.seen_in_logs = true;
        self.last_seen = self.last_seen.max(inv.end);
        if let Some(t) = inv.timeout_s {
            self.timeout_s = Some(t);
        }
        let cost = ctx.cfg.prices.cost(ctx.region, ctx.cfg.is_arm64(&self.name), inv.billed_ms, inv.memory_mb, 1.0);
        let evidence = inv.request_id.as_deref().unwrap_or(&inv.log_event_id);
        let mut counted = false;
        let (start, end) = (inv.start.min(inv.end), inv.end.max(inv.start + 1));
        let mut m = window_start(start, MINUTE_WIDTH);
        while m < end {
            if let Some(agg) = self.minutes.at(m, MINUTE_WIDTH) {
                if agg.intervals.len() < MAX_INTERVALS {
                    agg.intervals.push((start, end));
                }
                if m == window_start(start, MINUTE_WIDTH) {
                    agg.invocations += 1;
                    agg.cost += cost;
                    push_evidence(&mut agg.evidence, evidence);
                }
                counted = true;
            }
            m += MINUTE_WIDTH;
        }
        let qw = ctx.cfg.timeouts.window_minutes as i64 * MINUTE;
        if let Some(q) = self.quarters.at(inv.end, qw) {
            q.invocations += 1;
            q.durations.add(inv.duration_ms.max(0.01));
            if inv.status == InvocationStatus::Timeout {
                q.timeouts += 1;
                push_evidence(&mut q.evidence, evidence);
            }
        }
        if let Some(h) = self.hours.at(inv.end, HOUR) {
            *h += 1;
        }
        self.last_invocation = Some(self.last_invocation.map_or(inv.end, |l| l.max(inv.end)));
        self.end_silence(ctx, inv.end);
        counted
    }

    pub fn observe_concurrency_metric(&mut self, t: EpochMillis, max: f64) {
        self.last_seen = self.last_seen.max(t);
        if let Some(agg) = self.minutes.at(t, MINUTE_WIDTH) {
            agg.metric_peak = agg.metric_peak.max(max);
        }
    }

    /// A CloudTrail call naming this function: configuration changes teach the timeout, Invoke
    /// data events feed the invoker baseline.
    pub fn observe_call(&mut self, ctx: &mut Ctx, a: &ApiCall) {
        self.last_seen = self.last_seen.max(a.time);
        if let Some(t) = a.function_timeout_s {
            if a.error_code.is_none() {
                self.timeout_s = Some(t);
            }
        }
        if a.name.starts_with("Invoke") && a.error_code.is_none() {
            self.seen_invoke_events = true;
            self.novel_invocation(ctx, a);
        }
    }

    fn novel_invocation(&mut self, ctx: &mut Ctx, a: &ApiCall) {
        let r = ctx.cfg.unusual_invocation.clone();
        let n = &mut self.novelty;
        if n.hours.len() != 24 {
            n.hours = vec![0; 24];
        }
        let first = *n.first.get_or_insert(a.time);
        let hour = (a.time.rem_euclid(86_400_000) / HOUR) as usize;
        let key = ctx.key;
        let p = key.str(&a.principal);
        let acct = a.principal_account.as_deref().map(|s| key.str(s));
        let ip = key.str(&a.source_ip);
        let ua = key.str(&a.user_agent);
        let cap = r.max_values;
        let learning = ((a.time - first) as f64) < r.baseline_days * 86_400_000.0;
        let new_p = !n.principals.contains(p) && !n.principals.is_full(cap);
        let new_acct = acct.is_some_and(|h| !n.accounts.contains(h) && !n.accounts.is_full(cap));
        let new_ip = !n.ips.contains(ip) && !n.ips.is_full(cap);
        let new_ua = !n.agents.contains(ua) && !n.agents.is_full(cap);
        let total: u64 = n.hours.iter().sum();
        let new_hour = total >= 50 && n.hours[hour] == 0;
        let novel = !learning && (new_p || new_acct || (new_ip && new_ua) || new_hour);
        if !novel {
            n.principals.insert(p, cap);
            if let Some(h) = acct {
                n.accounts.insert(h, cap);
            }
            n.ips.insert(ip, cap);
            n.agents.insert(ua, cap);
            n.hours[hour] += 1;
            return;
        }
        // Another account's principal (not an AWS service) invoking the function.
        let foreign = new_acct && a.principal_account.as_deref().is_some_and(|x| x != ctx.account);
        let subject = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::UnusualInvocation,
            subject: &self.name,
            describe: describe_novelty,
        };
        let ep = n.episode.get_or_insert_with(|| {
            let v = Verdict { observed: 0.0, expected: 0.0, z: 0.0, anomalous: true };
            let mut ep = Episode::new(&subject, a.time, a.time, &v);
            ep.reported = false;
            ep.severity = Severity::Low;
            ep
        });
        n.count += 1;
        ep.last = ep.last.max(a.time);
        ep.observed = n.count as f64;
        let mut what = Vec::new();
        for (is_new, dim, value, code, h) in [
            (new_p, "new_principal", a.principal.as_str(), 0u8, Some(p)),
            (new_acct, "new_account", a.principal_account.as_deref().unwrap_or(""), 1, acct),
            (new_ip, "new_source_ip", a.source_ip.as_str(), 2, Some(ip)),
            (new_ua, "new_user_agent", a.user_agent.as_str(), 3, Some(ua)),
        ] {
            if is_new {
                ep.top.add(dim, value, 1);
                what.push(dim);
                if let Some(h) = h {
                    if !n.pending.contains(&(code, h)) {
                        n.pending.push((code, h));
                    }
                }
            }
        }
        if new_hour {
            ep.top.add("unusual_hour_utc", &format!("{hour:02}:00"), 1);
            what.push("unusual_hour");
        }
        push_evidence(&mut ep.evidence, &a.event_id);
        let sev = if foreign {
            Severity::High
        } else if new_p {
            Severity::Medium
        } else {
            Severity::Low
        };
        ep.severity = ep.severity.max(sev);
        let dims: Vec<&str> = ep.top.dims.iter().map(|(d, _)| d.as_str()).collect();
        ep.detail = dims.join(", ");
        ep.score = ep.score.max(if foreign { 10.0 } else { what.len() as f64 * 2.0 });
        if !ep.reported && (n.count >= r.min_events || foreign) {
            ep.reported = true;
            ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Open, describe_novelty));
        }
    }

    /// Ends a novelty episode once `episode_minutes` pass without novel invocations, and learns
    /// its values so each fires once.
    fn close_novelty(&mut self, ctx: &mut Ctx, now: EpochMillis) {
        let n = &mut self.novelty;
        let Some(ep) = &n.episode else { return };
        if now - ep.last < ctx.cfg.unusual_invocation.episode_minutes as i64 * MINUTE {
            return;
        }
        let ep = n.episode.take().expect("checked");
        if ep.reported {
            ctx.out.push(ep.finding(ctx.account, ctx.region, Status::Closed, describe_novelty));
        }
        let cap = ctx.cfg.unusual_invocation.max_values;
        for (code, h) in n.pending.drain(..) {
            let set = match code {
                0 => &mut n.principals,
                1 => &mut n.accounts,
                2 => &mut n.ips,
                _ => &mut n.agents,
            };
            set.insert(h, cap);
        }
        n.count = 0;
    }

    fn end_silence(&mut self, ctx: &mut Ctx, t: EpochMillis) {
        if let Some(ep) = self.silence_ep.episode_mut() {
            if t > ep.start {
                ep.last = t;
                let f = ep.finding(ctx.account, ctx.region, Status::Closed, describe_silence);
                self.silence_ep.episode = None;
                ctx.out.push(f);
            }
        }
    }

    /// Closes the minute, quarter and hour windows the logs' watermark has passed.
    pub fn advance(&mut self, ctx: &mut Ctx, logs_final: EpochMillis, cloudtrail_final: EpochMillis) {
        self.advance_minutes(ctx, logs_final);
        self.advance_quarters(ctx, logs_final);
        let alpha = alpha_for(ctx.cfg.baseline.alpha, HOUR);
        // Quiet hours are learned even while a silence episode is open: for a batch job the
        // episode lasts until its next run, and skipping those hours would keep its baseline
        // from ever learning that it is idle most of the day.
        let mut hours = std::mem::take(&mut self.hours);
        hours.finalize(logs_final, HOUR, |w, n| self.hourly.learn(w, n as f64, alpha, HOUR));
        self.hours = hours;
        self.close_novelty(ctx, cloudtrail_final.max(logs_final));
    }

    fn advance_minutes(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let b = ctx.cfg.baseline.clone();
        let (conc_rule, rate_rule) = inv_rule(ctx);
        let high_cost = ctx.cfg.concurrency.high_cost_usd;
        let alpha = alpha_for(b.alpha, MINUTE_WIDTH);
        let name = self.name.clone();
        let mut minutes = std::mem::take(&mut self.minutes);
        let judge = |me: &mut Self, ctx: &mut Ctx, w: EpochMillis, agg: &MinuteAgg, factor: f64| {
            let peak = (peak_overlap(&agg.intervals, w, w + MINUTE_WIDTH) as f64).max(agg.metric_peak);
            let vc = me.concurrency.judge(w, peak, &conc_rule, &b, factor);
            let vr = me.rate.judge(w, agg.invocations as f64, &rate_rule, &b, factor);
            let v = if vc.anomalous || !vr.anomalous { vc } else { vr };
            let expected_cost = me.rate.expected(w, &b).mean.max(0.0) * me.cost_per_invocation.mean;
            let extra = (agg.cost - expected_cost).max(0.0);
            let s = Subject {
                account: ctx.account,
                region: ctx.region,
                kind: FindingKind::ConcurrencySpike,
                subject: &name,
                describe: describe_concurrency,
            };
            let early = factor > 1.0;
            if early && (!v.anomalous || me.conc_ep.is_open()) {
                return (vc, vr);
            }
            let fresh = !me.conc_ep.is_open();
            let unit = if vc.anomalous || !vr.anomalous { "concurrent executions" } else { "invocations a minute" };
            let f = me.conc_ep.step(
                &s,
                (w, w + MINUTE_WIDTH),
                &v,
                if early { u32::MAX } else { b.close_after_windows },
                |ep| {
                    ep.cost = Some(extra);
                    ep.detail = unit.to_string();
                    ep.evidence = agg.evidence.clone();
                    ep.severity = Severity::Medium;
                },
            );
            if v.anomalous {
                if let Some(ep) = me.conc_ep.episode_mut() {
                    if !fresh && !early && ep.start != w {
                        ep.cost = Some(ep.cost.unwrap_or(0.0) + extra);
                        for e in &agg.evidence {
                            push_evidence(&mut ep.evidence, e);
                        }
                    }
                    let cost = ep.cost.unwrap_or(0.0);
                    ep.severity = if cost >= 10.0 * high_cost {
                        Severity::Critical
                    } else if cost >= high_cost || v.observed >= 20.0 * v.expected.max(1.0) {
                        Severity::High
                    } else {
                        Severity::Medium
                    };
                    ep.top = Default::default();
                    ep.top.add("invocations_per_minute", &agg.invocations.to_string(), agg.invocations);
                }
            }
            ctx.out.extend(f);
            (vc, vr)
        };
        minutes.finalize(final_before, MINUTE_WIDTH, |w, agg| {
            let (vc, vr) = judge(self, ctx, w, &agg, 1.0);
            if !vc.anomalous && !vr.anomalous {
                self.concurrency.learn(w, vc.observed, alpha, MINUTE_WIDTH);
                self.rate.learn(w, vr.observed, alpha, MINUTE_WIDTH);
                if agg.invocations > 0 {
                    self.cost_per_invocation.observe(agg.cost / agg.invocations as f64, alpha);
                }
            }
        });
        if let Some((w, agg)) = minutes.latest().cloned() {
            judge(self, ctx, w, &agg, b.early_factor);
        }
        self.minutes = minutes;
    }

    fn advance_quarters(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let r = ctx.cfg.timeouts.clone();
        let b = ctx.cfg.baseline.clone();
        let width = r.window_minutes as i64 * MINUTE;
        let alpha = alpha_for(b.alpha, width);
        let timeout_ms = self.timeout_s.or_else(|| ctx.cfg.functions.get(&self.name).and_then(|f| f.timeout_seconds));
        let timeout_ms = timeout_ms.map(|s| s * 1000.0);
        let name = self.name.clone();
        let mut quarters = std::mem::take(&mut self.quarters);
        quarters.finalize(final_before, width, |w, q| {
            let rate = if q.invocations > 0 { q.timeouts as f64 / q.invocations as f64 } else { 0.0 };
            let e = self.timeouts.expected(w, &b);
            let z = crate::stats::zscore(q.timeouts as f64, &e);
            let rate_anomalous = self.timeouts.has_history(w, &b)
                && q.timeouts >= r.min_timeouts as u64
                && rate >= r.min_rate
                && rate >= r.min_ratio * self.timeout_rate.mean
                && z >= r.z;
            let p95 = q.durations.quantile(0.95).unwrap_or(0.0);
            let creep_at = timeout_ms.map(|t| t * r.p95_fraction);
            let creeping = creep_at.is_some_and(|c| {
                q.invocations >= r.min_invocations as u64
                    && p95 >= c
                    && self.p95.n >= 4
                    && self.p95.mean < c
                    && self.timeouts.has_history(w, &b)
            });
            let (v, detail) = if rate_anomalous || !creeping {
                (
                    Verdict { observed: rate, expected: self.timeout_rate.mean, z, anomalous: rate_anomalous },
                    "timeout rate",
                )
            } else {
                let c = creep_at.unwrap_or(1.0);
                (Verdict { observed: p95, expected: self.p95.mean, z: p95 / c, anomalous: true }, P95)
            };
            let s = Subject {
                account: ctx.account,
                region: ctx.region,
                kind: FindingKind::Timeouts,
                subject: &name,
                describe: describe_timeouts,
            };
            let fresh = !self.to_ep.is_open();
            let f = self.to_ep.step(&s, (w, w + width), &v, b.close_after_windows, |ep| {
                ep.detail = match timeout_ms {
                    Some(t) => format!("{detail}; timeout {} s", t / 1000.0),
                    None => detail.to_string(),
                };
                ep.evidence = q.evidence.clone();
                ep.severity = if rate >= 0.5 { Severity::High } else { Severity::Medium };
                ep.top.add("timeouts", &q.timeouts.to_string(), q.timeouts);
                ep.top.add("p95_ms", &format!("{p95:.0}"), q.invocations);
            });
            if v.anomalous && !fresh {
                if let Some(ep) = self.to_ep.episode_mut() {
                    for e in &q.evidence {
                        push_evidence(&mut ep.evidence, e);
                    }
                    if rate >= 0.5 {
                        ep.severity = Severity::High;
                    }
                }
            }
            ctx.out.extend(f);
            if !v.anomalous {
                self.timeouts.learn(w, q.timeouts as f64, alpha, width);
                if q.invocations > 0 {
                    self.timeout_rate.observe(rate, alpha);
                }
                if q.invocations >= r.min_invocations as u64 {
                    self.p95.observe(p95, alpha);
                }
            }
        });
        self.quarters = quarters;
    }

    /// A function whose logs stop while its baseline says they should keep coming. `now` is the
    /// event-time clock of the whole deployment, less lateness.
    pub fn check_silence(&mut self, ctx: &mut Ctx, now: EpochMillis) {
        let r = &ctx.cfg.log_silence;
        let Some(last) = self.last_invocation else { return };
        if self.silence_ep.is_open() || now - last < r.min_gap_minutes as i64 * MINUTE {
            return;
        }
        if !self.hourly.has_history(last, &ctx.cfg.baseline) {
            return;
        }
        let expected = expected_between(&self.hourly, &ctx.cfg.baseline, last, now);
        if expected < r.min_expected_invocations {
            return;
        }
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::LogSilence,
            subject: &self.name,
            describe: describe_silence,
        };
        let v = Verdict { observed: 0.0, expected, z: expected.sqrt(), anomalous: true };
        let f = self.silence_ep.step(&s, (last, now), &v, u32::MAX, |ep| {
            ep.detail = "function logs".into();
            ep.severity = Severity::Medium;
        });
        ctx.out.extend(f);
    }

    pub fn busy(&self) -> bool {
        self.conc_ep.is_open() || self.to_ep.is_open() || self.silence_ep.is_open() || self.novelty.episode.is_some()
    }
}

/// The `detail` of a timeouts episode about p95 duration creeping up to the timeout.
const P95: &str = "p95 duration";

fn describe_concurrency(ep: &Episode) -> String {
    let cost = ep.cost.map(|c| format!(", about ${c:.2} extra so far")).unwrap_or_default();
    format!(
        "Lambda function {} peaked at {} {} against a baseline of {}{}",
        ep.subject,
        num(ep.observed),
        ep.detail,
        num(ep.baseline),
        cost
    )
}

/// The timeout rate, or the p95 duration creeping up to the timeout.
fn describe_timeouts(ep: &Episode) -> String {
    if ep.detail.starts_with(P95) {
        format!(
            "Lambda function {}'s p95 duration reached {} ms, close to its timeout ({}), against a usual {} ms",
            ep.subject,
            num(ep.observed),
            ep.detail,
            num(ep.baseline)
        )
    } else {
        format!(
            "Lambda function {} timed out on {:.0}% of invocations against a usual {:.1}% ({})",
            ep.subject,
            ep.observed * 100.0,
            ep.baseline * 100.0,
            ep.detail
        )
    }
}

fn describe_novelty(ep: &Episode) -> String {
    format!(
        "Lambda function {} was invoked {} time(s) by callers never seen for it ({})",
        ep.subject,
        num(ep.observed),
        ep.detail
    )
}

fn describe_silence(ep: &Episode) -> String {
    format!(
        "Logs of {} stopped arriving ({}) although about {} were expected since",
        ep.subject,
        ep.detail,
        num(ep.baseline)
    )
}

/// What an hourly series expects over the whole hours after the one holding `from`, up to `to`
/// (at most two days). The rest of `from`'s own hour is left out: a job that stops at half past
/// stopped on time, whatever its hour's mean says.
pub fn expected_between(s: &Series, b: &crate::config::Baseline, from: EpochMillis, to: EpochMillis) -> f64 {
    let to = to.min(from + 48 * HOUR);
    let mut t = window_start(from, HOUR) + HOUR;
    let mut sum = 0.0;
    while t < to {
        let h_end = (t + HOUR).min(to);
        sum += s.expected(t, b).mean.max(0.0) * (h_end - t) as f64 / HOUR as f64;
        t = h_end;
    }
    sum
}
