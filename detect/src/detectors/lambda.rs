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
    num, push_evidence, window_start, Episode, Ids, Series, Subject, Tracker, Verdict, Windows, HOUR, MINUTE,
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
    pub evidence: Ids,
}

impl MinuteAgg {
    /// Nothing ran, started or was reported in the minute: its peak and invocations are 0.
    fn is_quiet(&self) -> bool {
        self.invocations == 0 && self.intervals.is_empty() && self.metric_peak <= 0.0 && self.cost == 0.0
    }
}

/// Cost and call volume are also judged per 5 minutes: a function whose invocations run ten
/// times longer at its usual call rate, or whose calls rise steadily without a per-minute peak,
/// never clears the per-minute minimums.
pub const COST_WIDTH: i64 = 5 * MINUTE;
/// Invocations a 5-minute window needs before its GB-seconds say anything about how long
/// invocations run.
const COST_MIN_INVOCATIONS: u64 = 3;

/// One 5-minute window of one function: what its invocations that ended in it cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CostAgg {
    /// Billed GB-seconds. Timed-out invocations are left out: `timeouts` reports those, and a
    /// hang that times out is not a function running longer.
    pub gb_seconds: f64,
    /// Billed milliseconds, for the mean concurrency (billed time / window).
    pub billed_ms: f64,
    pub invocations: u64,
    pub cost: f64,
    pub evidence: Ids,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuarterAgg {
    pub invocations: u64,
    pub timeouts: u64,
    pub durations: LogHistogram,
    pub evidence: Ids,
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
    #[serde(default)]
    pub fives: Windows<CostAgg>,
    /// Billed GB-seconds per 5 minutes.
    #[serde(default)]
    pub gbs: Series,
    /// Invocations per 5 minutes.
    #[serde(default)]
    pub calls5: Series,
    #[serde(default)]
    pub cost_ep: Tracker,
    /// Billed GB-seconds per invocation, from 5-minute windows with a few invocations.
    #[serde(default)]
    pub gbs_per_call: Moments,
    /// The event-time spans of the last per-minute and 5-minute episodes: one spike is one
    /// alert, whichever of the two sees it first.
    #[serde(default)]
    pub conc_span: (EpochMillis, EpochMillis),
    #[serde(default)]
    pub cost_span: (EpochMillis, EpochMillis),
}

/// What one minute or 5-minute window adds to a spike episode.
struct SpikeWindow<'a> {
    unit: &'a str,
    /// Extra cost of the window in USD.
    extra: f64,
    evidence: &'a Ids,
    /// Whether the episode was closed before this window.
    fresh: bool,
    early: bool,
    high_cost: f64,
    /// The smallest baseline the x20 severity rule divides by.
    floor: f64,
}

/// Steps a spike episode: a new one takes the window's cost, unit and evidence; a later final
/// window adds its cost and evidence; severity follows the episode's extra cost, or x20 the baseline.
fn step_spike(
    t: &mut Tracker,
    s: &Subject,
    span: (EpochMillis, EpochMillis),
    v: &Verdict,
    close: u32,
    x: SpikeWindow,
) -> Option<trailwatch_core::finding::Finding> {
    let f = t.step(s, span, v, close, |ep| {
        ep.cost = Some(x.extra);
        ep.detail = x.unit.to_string();
        ep.evidence = x.evidence.to_vec();
        ep.severity = Severity::Medium;
    });
    if v.anomalous {
        if let Some(ep) = t.episode_mut() {
            if !x.fresh && !x.early && ep.start != span.0 {
                ep.cost = Some(ep.cost.unwrap_or(0.0) + x.extra);
                for e in x.evidence.iter() {
                    push_evidence(&mut ep.evidence, e);
                }
            }
            let cost = ep.cost.unwrap_or(0.0);
            ep.severity = if cost >= 10.0 * x.high_cost {
                Severity::Critical
            } else if cost >= x.high_cost || v.observed >= 20.0 * v.expected.max(x.floor) {
                Severity::High
            } else {
                Severity::Medium
            };
        }
    }
    f
}

/// Whether `[a, b)` overlaps `span`, or comes within 15 minutes after it: a spike that one
/// detector reported and the other still sees is the same spike.
fn near(span: (EpochMillis, EpochMillis), a: EpochMillis, b: EpochMillis) -> bool {
    span.1 > span.0 && a < span.1 + 3 * COST_WIDTH && b > span.0
}

/// The span an episode covers after a step: the open episode's, or the closed finding's.
fn span_after(
    t: &Tracker,
    f: &Option<trailwatch_core::finding::Finding>,
    old: (EpochMillis, EpochMillis),
) -> (EpochMillis, EpochMillis) {
    match (&t.episode, f) {
        (Some(ep), _) => (ep.start, ep.last),
        (None, Some(f)) => (f.start, f.end.unwrap_or(f.start)),
        _ => old,
    }
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
                    if agg.intervals.capacity() == 0 {
                        agg.intervals.reserve(8);
                    }
                    agg.intervals.push((start, end));
                }
                if m == window_start(start, MINUTE_WIDTH) {
                    agg.invocations += 1;
                    agg.cost += cost;
                    agg.evidence.push(evidence);
                }
                counted = true;
            }
            m += MINUTE_WIDTH;
        }
        if let Some(c) = self.fives.at(inv.end, COST_WIDTH) {
            c.invocations += 1;
            if inv.status != InvocationStatus::Timeout {
                c.gb_seconds += inv.billed_ms / 1000.0 * inv.memory_mb / 1024.0;
                c.billed_ms += inv.billed_ms;
                c.cost += cost;
                c.evidence.push(evidence);
            }
        }
        let qw = ctx.cfg.timeouts.window_minutes as i64 * MINUTE;
        if let Some(q) = self.quarters.at(inv.end, qw) {
            q.invocations += 1;
            q.durations.add(inv.duration_ms.max(0.01));
            if inv.status == InvocationStatus::Timeout {
                q.timeouts += 1;
                q.evidence.push(evidence);
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
            (new_p, "new_principal", &*a.principal, 0u8, Some(p)),
            (new_acct, "new_account", a.principal_account.as_deref().unwrap_or(""), 1, acct),
            (new_ip, "new_source_ip", &*a.source_ip, 2, Some(ip)),
            (new_ua, "new_user_agent", &*a.user_agent, 3, Some(ua)),
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
        let dims: Vec<&str> = ep.top.dims.iter().map(|(d, _)| d.as_ref()).collect();
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
        let watermark = logs_final.saturating_add(ctx.cfg.lateness.logs_minutes as i64 * MINUTE);
        self.advance_spikes(ctx, logs_final, watermark);
        self.advance_quarters(ctx, logs_final, watermark);
        let alpha = alpha_for(ctx.cfg.baseline.alpha, HOUR);
        // Quiet hours are learned even while a silence episode is open: for a batch job the
        // episode lasts until its next run, and skipping those hours would keep its baseline
        // from ever learning that it is idle most of the day.
        let mut hours = std::mem::take(&mut self.hours);
        hours.finalize(logs_final, HOUR, |w, n| self.hourly.learn(w, n as f64, alpha, HOUR));
        self.hours = hours;
        self.close_novelty(ctx, cloudtrail_final.max(logs_final));
    }

    /// The minute windows and the 5-minute windows, finalized side by side in event time (so
    /// each knows whether the other already reported a spike), then the newest open ones early.
    /// `complete_before`: the logs' watermark; windows ending before it miss only late data.
    fn advance_spikes(&mut self, ctx: &mut Ctx, final_before: EpochMillis, complete_before: EpochMillis) {
        // Stop at the end of each open 5-minute window, then at `final_before`; found one at a
        // time (finalizing only removes windows) rather than collected, which cost 4% of a run.
        let mut last = EpochMillis::MIN;
        loop {
            let b = self
                .fives
                .open
                .iter()
                .map(|(w, _)| w + COST_WIDTH)
                .find(|&b| b > last && b < final_before)
                .unwrap_or(final_before);
            self.finalize_minutes(ctx, b);
            self.finalize_fives(ctx, b);
            if b == final_before {
                break;
            }
            last = b;
        }
        // Early: peaks, invocations and GB-seconds only grow as a window fills, so an open window
        // already over the bars will be over them when final. Every open window, in order.
        let factor = ctx.cfg.baseline.early_factor;
        // Taken out and put back rather than cloned: the judges do not read open windows.
        let minutes = std::mem::take(&mut self.minutes.open);
        for (w, agg) in &minutes {
            self.judge_minute(ctx, *w, agg, factor, true);
        }
        self.minutes.open = minutes;
        let fives = std::mem::take(&mut self.fives.open);
        for (w, agg) in &fives {
            let v = self.judge_five(ctx, *w, agg, factor, complete_before);
            self.report_five(ctx, *w, agg, v, true);
        }
        self.fives.open = fives;
    }

    fn finalize_minutes(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let alpha = alpha_for(ctx.cfg.baseline.alpha, MINUTE_WIDTH);
        let (conc_rule, rate_rule) = inv_rule(ctx);
        let quiet_is_normal = conc_rule.min_count > 0.0 && rate_rule.min_count > 0.0;
        let mut minutes = std::mem::take(&mut self.minutes);
        minutes.finalize(final_before, MINUTE_WIDTH, |w, agg| {
            // Most of a function's minutes hold nothing. Such a minute is below both minimums, so
            // never anomalous, and with no episode open judging it steps nothing: learn its zeros
            // without judging (a fifth of a run over a compacted lake went to judging them).
            if quiet_is_normal && agg.is_quiet() && !self.conc_ep.is_open() {
                self.concurrency.learn(w, 0.0, alpha, MINUTE_WIDTH);
                self.rate.learn(w, 0.0, alpha, MINUTE_WIDTH);
                return;
            }
            let (vc, vr) = self.judge_minute(ctx, w, &agg, 1.0, false);
            if !vc.anomalous && !vr.anomalous {
                self.concurrency.learn(w, vc.observed, alpha, MINUTE_WIDTH);
                self.rate.learn(w, vr.observed, alpha, MINUTE_WIDTH);
                if agg.invocations > 0 {
                    self.cost_per_invocation.observe(agg.cost / agg.invocations as f64, alpha);
                }
            }
        });
        self.minutes = minutes;
    }

    /// One minute's peak concurrency and invocations against the function's baseline (`factor`
    /// above 1 for a window still open); steps the per-minute episode.
    fn judge_minute(
        &mut self,
        ctx: &mut Ctx,
        w: EpochMillis,
        agg: &MinuteAgg,
        factor: f64,
        early: bool,
    ) -> (Verdict, Verdict) {
        let b = ctx.cfg.baseline.clone();
        let (conc_rule, rate_rule) = inv_rule(ctx);
        let high_cost = ctx.cfg.concurrency.high_cost_usd;
        let peak = (peak_overlap(&agg.intervals, w, w + MINUTE_WIDTH) as f64).max(agg.metric_peak);
        let vc = self.concurrency.judge(w, peak, &conc_rule, &b, factor);
        let vr = self.rate.judge(w, agg.invocations as f64, &rate_rule, &b, factor);
        let v = if vc.anomalous || !vr.anomalous { vc } else { vr };
        let expected_cost = self.rate.expected(w, &b).mean.max(0.0) * self.cost_per_invocation.mean;
        let extra = (agg.cost - expected_cost).max(0.0);
        if early && (!v.anomalous || self.conc_ep.is_open()) {
            return (vc, vr);
        }
        // The 5-minute episode already reports this spike: one alert, not two.
        if !self.conc_ep.is_open() && (self.cost_ep.is_open() || near(self.cost_span, w, w + MINUTE_WIDTH)) {
            return (vc, vr);
        }
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::ConcurrencySpike,
            subject: name,
            describe: describe_concurrency,
        };
        let fresh = !self.conc_ep.is_open();
        let unit = if vc.anomalous || !vr.anomalous { "concurrent executions" } else { "invocations a minute" };
        let close = if early { u32::MAX } else { b.close_after_windows };
        let f = step_spike(
            &mut self.conc_ep,
            &s,
            (w, w + MINUTE_WIDTH),
            &v,
            close,
            SpikeWindow { unit, extra, evidence: &agg.evidence, fresh, early, high_cost, floor: 1.0 },
        );
        if v.anomalous {
            if let Some(ep) = self.conc_ep.episode_mut() {
                ep.top = Default::default();
                ep.top.add("invocations_per_minute", &agg.invocations.to_string(), agg.invocations);
            }
        }
        self.conc_span = span_after(&self.conc_ep, &f, self.conc_span);
        ctx.out.extend(f);
        (vc, vr)
    }

    fn finalize_fives(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let alpha = alpha_for(ctx.cfg.baseline.alpha, COST_WIDTH);
        let quiet_is_normal = ctx.cfg.concurrency.min_window_invocations > 0.0;
        let mut fives = std::mem::take(&mut self.fives);
        fives.finalize(final_before, COST_WIDTH, |w, agg| {
            // As for minutes: no invocations is below the bars, so learn the zeros unjudged.
            if quiet_is_normal && agg.invocations == 0 && agg.gb_seconds == 0.0 && !self.cost_ep.is_open() {
                self.gbs.learn(w, 0.0, alpha, COST_WIDTH);
                self.calls5.learn(w, 0.0, alpha, COST_WIDTH);
                return;
            }
            let (vg, vi) = self.judge_five(ctx, w, &agg, 1.0, EpochMillis::MAX);
            self.report_five(ctx, w, &agg, (vg, vi), false);
            if !vg.anomalous && !vi.anomalous {
                self.gbs.learn(w, vg.observed, alpha, COST_WIDTH);
                self.calls5.learn(w, vi.observed, alpha, COST_WIDTH);
                if agg.invocations >= COST_MIN_INVOCATIONS {
                    self.gbs_per_call.observe(agg.gb_seconds / agg.invocations as f64, alpha);
                }
            }
        });
        self.fives = fives;
    }

    /// Five minutes' billed GB-seconds and invocations against the function's own baseline. No
    /// per-minute minimum applies, so a small function's tenfold bill counts. GB-seconds count
    /// only when the invocations themselves ran longer (their mean GB-seconds `min_ratio` times
    /// the usual, over at least a few of them): one slow request in a quiet window is the tail
    /// of a lognormal, not a bill; more requests at the usual length are the invocations rule's.
    /// GB-seconds per invocation can fall as a window fills, so an open window's GB-seconds are
    /// judged only once it ended before `complete_before`.
    fn judge_five(
        &self,
        ctx: &Ctx,
        w: EpochMillis,
        agg: &CostAgg,
        factor: f64,
        complete_before: EpochMillis,
    ) -> (Verdict, Verdict) {
        let (b, c) = (&ctx.cfg.baseline, &ctx.cfg.concurrency);
        let gbs_rule = RateRule { z: c.z, min_count: c.min_gb_seconds, min_ratio: c.min_ratio };
        let calls_rule = RateRule { z: c.z, min_count: c.min_window_invocations, min_ratio: c.min_ratio };
        let mut vg = self.gbs.judge(w, agg.gb_seconds, &gbs_rule, b, factor);
        let per_call = agg.gb_seconds / (agg.invocations.max(1)) as f64;
        vg.anomalous &= w + COST_WIDTH <= complete_before
            && agg.invocations >= COST_MIN_INVOCATIONS
            && self.gbs_per_call.n > 0
            && per_call >= c.min_ratio * factor * self.gbs_per_call.mean;
        let vi = self.calls5.judge(w, agg.invocations as f64, &calls_rule, b, factor);
        (vg, vi)
    }

    fn report_five(&mut self, ctx: &mut Ctx, w: EpochMillis, agg: &CostAgg, (vg, vi): (Verdict, Verdict), early: bool) {
        let b = ctx.cfg.baseline.clone();
        let high_cost = ctx.cfg.concurrency.high_cost_usd;
        let (v, unit) = if vg.anomalous || !vi.anomalous { (vg, GBS) } else { (vi, "invocations in 5 minutes") };
        if self.conc_ep.is_open() || (early && (!v.anomalous || self.cost_ep.is_open())) {
            return;
        }
        // The per-minute episode already reported this spike.
        if !self.cost_ep.is_open() && near(self.conc_span, w, w + COST_WIDTH) {
            return;
        }
        // What the window would have cost at the baseline's GB-seconds.
        let expected = self.gbs.expected(w, &b).mean.max(0.0);
        let extra = if agg.gb_seconds > 0.0 { agg.cost * (1.0 - expected / agg.gb_seconds).max(0.0) } else { 0.0 };
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::ConcurrencySpike,
            subject: name,
            describe: describe_cost,
        };
        let fresh = !self.cost_ep.is_open();
        let mean_conc = agg.billed_ms / COST_WIDTH as f64;
        let close = if early { u32::MAX } else { b.close_after_windows };
        let f = step_spike(
            &mut self.cost_ep,
            &s,
            (w, w + COST_WIDTH),
            &v,
            close,
            SpikeWindow { unit, extra, evidence: &agg.evidence, fresh, early, high_cost, floor: 1e-9 },
        );
        if v.anomalous {
            if let Some(ep) = self.cost_ep.episode_mut() {
                ep.top = Default::default();
                ep.top.add("invocations_in_5_minutes", &agg.invocations.to_string(), agg.invocations);
                ep.top.add("mean_concurrency", &format!("{mean_conc:.2}"), 1);
            }
        }
        self.cost_span = span_after(&self.cost_ep, &f, self.cost_span);
        ctx.out.extend(f);
    }

    /// Timeout windows: final ones are judged and learned; an open one that already ended
    /// before the logs' watermark (`complete_before`) misses only late data and is judged early.
    fn advance_quarters(&mut self, ctx: &mut Ctx, final_before: EpochMillis, complete_before: EpochMillis) {
        let r = ctx.cfg.timeouts.clone();
        let alpha = alpha_for(ctx.cfg.baseline.alpha, r.window_minutes as i64 * MINUTE);
        let width = r.window_minutes as i64 * MINUTE;
        let mut quarters = std::mem::take(&mut self.quarters);
        quarters.finalize(final_before, width, |w, q| {
            let (v, rate, p95) = self.step_quarter(ctx, w, &q, false);
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
        for (w, q) in &quarters.open {
            if w + width <= complete_before {
                self.step_quarter(ctx, *w, q, true);
            }
        }
        self.quarters = quarters;
    }

    /// One timeout window judged (rate against the baseline, or p95 creeping up to the
    /// timeout) and the episode stepped; returns the verdict, the timeout rate and the p95.
    fn step_quarter(&mut self, ctx: &mut Ctx, w: EpochMillis, q: &QuarterAgg, early: bool) -> (Verdict, f64, f64) {
        let r = ctx.cfg.timeouts.clone();
        let b = ctx.cfg.baseline.clone();
        let width = r.window_minutes as i64 * MINUTE;
        let timeout_ms = self.timeout_s.or_else(|| ctx.cfg.functions.get(&self.name).and_then(|f| f.timeout_seconds));
        let timeout_ms = timeout_ms.map(|s| s * 1000.0);
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
            (Verdict { observed: rate, expected: self.timeout_rate.mean, z, anomalous: rate_anomalous }, "timeout rate")
        } else {
            let c = creep_at.unwrap_or(1.0);
            (Verdict { observed: p95, expected: self.p95.mean, z: p95 / c, anomalous: true }, P95)
        };
        if early && (!v.anomalous || self.to_ep.is_open()) {
            return (v, rate, p95);
        }
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::Timeouts,
            subject: name,
            describe: describe_timeouts,
        };
        let fresh = !self.to_ep.is_open();
        let close = if early { u32::MAX } else { b.close_after_windows };
        let f = self.to_ep.step(&s, (w, w + width), &v, close, |ep| {
            ep.detail = match timeout_ms {
                Some(t) => format!("{detail}; timeout {} s", t / 1000.0),
                None => detail.to_string(),
            };
            ep.evidence = q.evidence.to_vec();
            ep.severity = if rate >= 0.5 { Severity::High } else { Severity::Medium };
            ep.top.add("timeouts", &q.timeouts.to_string(), q.timeouts);
            ep.top.add("p95_ms", &format!("{p95:.0}"), q.invocations);
        });
        if v.anomalous && !fresh && !early {
            if let Some(ep) = self.to_ep.episode_mut() {
                for e in q.evidence.iter() {
                    push_evidence(&mut ep.evidence, e);
                }
                if rate >= 0.5 {
                    ep.severity = Severity::High;
                }
            }
        }
        ctx.out.extend(f);
        (v, rate, p95)
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
        self.conc_ep.is_open()
            || self.cost_ep.is_open()
            || self.to_ep.is_open()
            || self.silence_ep.is_open()
            || self.novelty.episode.is_some()
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

/// The `detail` of a 5-minute episode judged on GB-seconds.
const GBS: &str = "GB-seconds in 5 minutes";

fn describe_cost(ep: &Episode) -> String {
    let cost = ep.cost.map(|c| format!(", about ${c:.2} extra so far")).unwrap_or_default();
    let what = if ep.detail == GBS { "billed" } else { "had" };
    format!(
        "Lambda function {} {} {} {} against a baseline of {} ({}x){}",
        ep.subject,
        what,
        num(ep.observed),
        ep.detail,
        num(ep.baseline),
        num((ep.observed / ep.baseline.max(1e-9)).min(9999.0).round()),
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
