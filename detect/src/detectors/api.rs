//! API call-rate and error-rate anomalies per API (`source:name`) and per principal, enumeration
//! (one principal touching many distinct APIs and being denied), and throttled calls.

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::Severity;
use trailwatch_core::time::EpochMillis;

use super::{alpha_for, is_denial, Ctx};
use crate::config::RateRule;
use crate::event::ApiCall;
use crate::stats::{BoundedSet, HashKey};
use crate::window::{num, Contribs, Episode, Ids, Series, Subject, Tracker, Verdict, Windows, MINUTE};
use trailwatch_core::finding::FindingKind;

/// CloudTrail delivers about every 5 minutes: rates are counted per 5-minute window.
pub const WIDTH: i64 = 5 * MINUTE;

/// One 5-minute window of one API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiAgg {
    pub calls: u64,
    pub errors: u64,
    pub top: Contribs,
    pub err_top: Contribs,
    pub evidence: Ids,
    pub err_evidence: Ids,
}

/// Windows closer together than this are one burst (a sweep that straddles a window boundary;
/// a principal that calls steadily makes one long burst, never a schedule).
const BURST_MERGE: i64 = 30 * MINUTE;
/// How far a burst may drift from its schedule and still count as the schedule's.
const BURST_TOLERANCE: i64 = 10 * MINUTE;
/// A schedule may skip runs: a gap of up to this many periods still matches.
const BURST_MAX_MULTIPLE: i64 = 6;
/// Principals and gaps remembered per API.
const BURST_PRINCIPALS: usize = 16;
const BURST_GAPS: usize = 8;

/// The bursts one principal made on one API: when the last began, and the gaps seen between
/// them. A scheduled job (AWS Config, a scanner, a backup) bursts again after a gap it has used
/// before; a first sweep, or the same role bursting off its schedule, does not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// The keyed hash of the principal.
    pub who: u64,
    /// When the last burst began.
    pub last: EpochMillis,
    pub gaps: Vec<i64>,
    /// The last window of the last burst.
    #[serde(default)]
    pub until: EpochMillis,
}

/// Whether `gap` is `period` or a whole multiple of it up to `max_k` (runs skipped), within
/// the drift allowed.
fn multiple_of(gap: i64, period: i64, max_k: i64) -> bool {
    if period <= 0 {
        return false;
    }
    let k = ((gap as f64 / period as f64).round() as i64).max(1);
    k <= max_k && (gap - k * period).abs() <= BURST_TOLERANCE * k.min(2)
}

impl Burst {
    /// Whether a burst starting at `w` keeps a gap (or a whole multiple of one) seen before.
    pub fn recurs_at(&self, w: EpochMillis) -> bool {
        let gap = w - self.last;
        self.gaps.iter().any(|&g| multiple_of(gap, g, BURST_MAX_MULTIPLE))
    }
}

/// Bursts per principal on one API, bounded: the least recently bursting principal goes first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bursts {
    pub items: Vec<Burst>,
}

impl Bursts {
    pub fn get(&self, who: u64) -> Option<&Burst> {
        self.items.iter().find(|b| b.who == who)
    }

    /// Records a burst by `who` in the window starting at `w`.
    pub fn record(&mut self, who: u64, w: EpochMillis) {
        match self.items.iter_mut().find(|b| b.who == who) {
            Some(b) if w - b.until.max(b.last) < BURST_MERGE => b.until = b.until.max(w),
            Some(b) => {
                // Only periods are kept: a gap that is a multiple of a known one (skipped runs)
                // confirms it, and a shorter period replaces the multiples it explains. Kept as
                // gaps, the multiples once pushed the period itself out of the bounded list.
                // The least recently confirmed period goes first.
                let gap = w - b.last;
                b.last = w;
                b.until = w;
                if let Some(i) = b.gaps.iter().position(|&g| multiple_of(gap, g, i64::MAX)) {
                    let g = b.gaps.remove(i);
                    b.gaps.push(g);
                    return;
                }
                b.gaps.retain(|&g| !multiple_of(g, gap, i64::MAX));
                if b.gaps.len() >= BURST_GAPS {
                    b.gaps.remove(0);
                }
                b.gaps.push(gap);
            }
            None => {
                if self.items.len() >= BURST_PRINCIPALS {
                    if let Some(i) = self.items.iter().enumerate().min_by_key(|(_, b)| b.last).map(|(i, _)| i) {
                        self.items.remove(i);
                    }
                }
                self.items.push(Burst { who, last: w, gaps: Vec::new(), until: w });
            }
        }
    }
}

/// One API in one account and region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiKey {
    pub label: String,
    pub calls: Series,
    pub errors: Series,
    pub win: Windows<ApiAgg>,
    pub call_ep: Tracker,
    pub err_ep: Tracker,
    pub last_seen: EpochMillis,
    /// Who burst on this API, and on what schedule.
    #[serde(default)]
    pub bursts: Bursts,
}

impl ApiKey {
    /// Counts a call (an error when `failed`, throttles excluded). False when it came too late.
    pub fn observe(&mut self, a: &ApiCall, failed: bool) -> bool {
        self.last_seen = self.last_seen.max(a.time);
        let Some(agg) = self.win.at(a.time, WIDTH) else { return false };
        agg.calls += 1;
        agg.top.add("principal", &a.principal, 1);
        agg.top.add("source_ip", &a.source_ip, 1);
        agg.top.add("user_agent", &a.user_agent, 1);
        agg.evidence.push(&a.event_id);
        if failed {
            agg.errors += 1;
            agg.err_top.add("error_code", a.error_code.as_deref().unwrap_or(""), 1);
            agg.err_top.add("principal", &a.principal, 1);
            agg.err_evidence.push(&a.event_id);
        }
        true
    }

    /// The window's calls judged, less those of every principal bursting on its own schedule:
    /// the window is anomalous only if the other callers alone would be (two sweepers whose
    /// runs meet in one window are both left out). Every final window in which a principal
    /// alone made `min_count` calls is recorded as its burst, anomalous or not: once an hour
    /// slot has learned a sweep, its runs there no longer stand out, and a schedule seen only
    /// where it stands out would look like runs skipped.
    fn judge_calls(&mut self, ctx: &Ctx, w: EpochMillis, agg: &ApiAgg, factor: f64, early: bool) -> Verdict {
        let (rule, b) = (&ctx.cfg.api_call_rate, &ctx.cfg.baseline);
        let v = self.calls.judge(w, agg.calls as f64, rule, b, factor);
        if (agg.calls as f64) < rule.min_count {
            return v;
        }
        let burst_like = v.observed >= rule.min_count * factor
            && v.observed >= rule.min_ratio * factor * v.expected.max(1e-9)
            && v.z >= rule.z * factor;
        let Some((_, top)) = agg.top.dims.iter().find(|(d, _)| d == "principal") else { return v };
        let mut scheduled = 0u64;
        for (principal, n) in top.sorted() {
            if (n as f64) < rule.min_count && !burst_like {
                break;
            }
            let who = ctx.key.str(&principal);
            if burst_like && self.bursts.get(who).is_some_and(|bu| bu.recurs_at(w)) {
                scheduled += n;
            }
            if !early && n as f64 >= rule.min_count {
                self.bursts.record(who, w);
            }
        }
        if scheduled == 0 {
            return v;
        }
        let rest = self.calls.judge(w, agg.calls.saturating_sub(scheduled) as f64, rule, b, factor);
        Verdict { anomalous: rest.anomalous, ..v }
    }

    /// Judges one window; `early` for one still open (its counts can only grow), which may open
    /// an episode but never extends or closes one.
    fn check(&mut self, ctx: &mut Ctx, w: EpochMillis, agg: &ApiAgg, factor: f64, early: bool) -> (Verdict, Verdict) {
        let b = &ctx.cfg.baseline;
        let vc = self.judge_calls(ctx, w, agg, factor, early);
        let ve = self.errors.judge(w, agg.errors as f64, &ctx.cfg.api_error_rate, b, factor);
        let span = (w, w + WIDTH);
        let close = if early { u32::MAX } else { b.close_after_windows };
        for (v, kind, tracker, top, ev) in [
            (&vc, FindingKind::ApiCallRate, &mut self.call_ep, &agg.top, &agg.evidence),
            (&ve, FindingKind::ApiErrorRate, &mut self.err_ep, &agg.err_top, &agg.err_evidence),
        ] {
            if early && (!v.anomalous || tracker.is_open()) {
                continue;
            }
            let unit = if kind == FindingKind::ApiCallRate { "calls" } else { "failed calls" };
            let s = Subject {
                account: ctx.account,
                region: ctx.region,
                kind,
                subject: &self.label,
                describe: describe_rate,
            };
            let fresh = !tracker.is_open();
            let f = tracker.step(&s, span, v, close, |ep| {
                ep.absorb(top, ev);
                ep.severity = if v.observed >= 20.0 * v.expected.max(1.0) { Severity::High } else { Severity::Medium };
                ep.detail = unit.into();
            });
            if v.anomalous && !fresh {
                if let Some(ep) = tracker.episode_mut() {
                    if ep.start != w {
                        ep.absorb(top, ev);
                    }
                }
            }
            ctx.out.extend(f);
        }
        (vc, ve)
    }

    /// Closes windows the watermark has passed, judging and then learning each.
    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let alpha = alpha_for(ctx.cfg.baseline.alpha, WIDTH);
        // A window without calls is below both minimums, so never anomalous, and with no episode
        // open judging it steps nothing: learn its zeros without judging.
        let quiet_is_normal = ctx.cfg.api_call_rate.min_count > 0.0 && ctx.cfg.api_error_rate.min_count > 0.0;
        let mut win = std::mem::take(&mut self.win);
        win.finalize(final_before, WIDTH, |w, agg| {
            if quiet_is_normal && agg.calls == 0 && agg.errors == 0 && !self.busy() {
                self.calls.learn(w, 0.0, alpha, WIDTH);
                self.errors.learn(w, 0.0, alpha, WIDTH);
                return;
            }
            let (vc, ve) = self.check(ctx, w, &agg, 1.0, false);
            if !vc.anomalous {
                self.calls.learn(w, vc.observed, alpha, WIDTH);
            }
            if !ve.anomalous {
                self.errors.learn(w, ve.observed, alpha, WIDTH);
            }
        });
        // Early: an open window whose calls so far already clear the bars will clear them when
        // final, since counts only grow. Every open window, not only the newest: with CloudTrail's
        // delivery delay a burst sits a few windows behind the newest record.
        for (w, agg) in &win.open {
            self.check(ctx, *w, agg, ctx.cfg.baseline.early_factor, true);
        }
        self.win = win;
    }

    pub fn busy(&self) -> bool {
        self.call_ep.is_open() || self.err_ep.is_open()
    }
}

/// Distinct APIs kept per principal window.
const API_SET_CAP: usize = 512;

/// One 5-minute window of one principal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrincipalAgg {
    pub calls: u64,
    pub denials: u64,
    pub denied_apis: BoundedSet,
    pub top: Contribs,
    pub evidence: Ids,
    pub deny_top: Contribs,
    pub deny_evidence: Ids,
}

/// One principal in one account and region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrincipalKey {
    pub label: String,
    pub calls: Series,
    /// Distinct denied APIs per enumeration window.
    pub denied: Series,
    pub win: Windows<PrincipalAgg>,
    /// The last final windows, as many as the enumeration window spans.
    pub recent: Vec<(EpochMillis, PrincipalAgg)>,
    pub call_ep: Tracker,
    pub enum_ep: Tracker,
    pub last_seen: EpochMillis,
}

impl PrincipalKey {
    pub fn observe(&mut self, a: &ApiCall, api: &str, key: &HashKey) -> bool {
        self.last_seen = self.last_seen.max(a.time);
        let Some(agg) = self.win.at(a.time, WIDTH) else { return false };
        agg.calls += 1;
        agg.top.add("api", api, 1);
        agg.top.add("source_ip", &a.source_ip, 1);
        agg.evidence.push(&a.event_id);
        if is_denial(a.error_code.as_deref()) {
            agg.denials += 1;
            agg.denied_apis.insert(key.str(api), API_SET_CAP);
            agg.deny_top.add("denied_api", api, 1);
            agg.deny_top.add("error_code", a.error_code.as_deref().unwrap_or(""), 1);
            agg.deny_top.add("source_ip", &a.source_ip, 1);
            agg.deny_top.add("user_agent", &a.user_agent, 1);
            agg.deny_evidence.push(&a.event_id);
        }
        true
    }

    /// Enumeration over `windows`: distinct denied APIs, denials, calls.
    fn enumeration<'a>(windows: impl Iterator<Item = &'a PrincipalAgg>) -> (f64, f64, f64) {
        let mut union = BoundedSet::default();
        let (mut denials, mut calls) = (0u64, 0u64);
        for a in windows {
            for h in &a.denied_apis.items {
                union.insert(*h, API_SET_CAP);
            }
            denials += a.denials;
            calls += a.calls;
        }
        (union.len() as f64, denials as f64, calls as f64)
    }

    fn enum_verdict<'a>(
        &self,
        ctx: &Ctx,
        t: EpochMillis,
        windows: impl Iterator<Item = &'a PrincipalAgg>,
        factor: f64,
    ) -> Verdict {
        let r = &ctx.cfg.enumeration;
        let (distinct, denials, calls) = Self::enumeration(windows);
        let e = self.denied.expected(t, &ctx.cfg.baseline);
        let z = crate::stats::zscore(distinct, &e);
        // No history needed: a principal that appears and starts probing is the case in point.
        let anomalous = distinct >= r.min_distinct_denied_apis as f64 * factor
            && denials >= r.min_denials as f64 * factor
            && denials >= r.min_denied_fraction * calls
            && z >= r.z * factor;
        Verdict { observed: distinct, expected: e.mean, z, anomalous }
    }

    /// Steps `tracker` with the windows `aggs` (an iterator, not a collected `Vec`: this runs
    /// for every principal's every window).
    fn report<'a>(
        ctx: &mut Ctx,
        tracker: &mut Tracker,
        s: &Subject,
        (span, v, close): ((i64, i64), &Verdict, u32),
        aggs: impl Iterator<Item = &'a PrincipalAgg> + Clone,
        deny: bool,
    ) {
        let fresh = !tracker.is_open();
        let f = tracker.step(s, span, v, close, |ep| {
            for a in aggs.clone() {
                if deny {
                    ep.absorb(&a.deny_top, &a.deny_evidence);
                } else {
                    ep.absorb(&a.top, &a.evidence);
                }
            }
            ep.severity = if deny { Severity::High } else { Severity::Medium };
            ep.detail = if deny { "enumeration".into() } else { "calls".into() };
        });
        if v.anomalous && !fresh {
            if let (Some(ep), Some(last)) = (tracker.episode_mut(), aggs.last()) {
                if deny {
                    ep.absorb(&last.deny_top, &last.deny_evidence);
                } else {
                    ep.absorb(&last.top, &last.evidence);
                }
            }
        }
        ctx.out.extend(f);
    }

    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let b = ctx.cfg.baseline.clone();
        let rule: RateRule = ctx.cfg.principal_call_rate.clone();
        let span_windows = (ctx.cfg.enumeration.window_minutes as i64 * MINUTE / WIDTH).max(1) as usize;
        let alpha = alpha_for(b.alpha, WIDTH);
        let mut win = std::mem::take(&mut self.win);
        // Taken and put back, not cloned: this runs for every principal on every advance.
        let label = std::mem::take(&mut self.label);
        let quiet_is_normal = rule.min_count > 0.0 && ctx.cfg.enumeration.min_distinct_denied_apis > 0;
        win.finalize(final_before, WIDTH, |w, agg| {
            // A window without calls, in a span without denials, is below every bar, and with no
            // episode open judging it steps nothing: learn its zeros without judging.
            if quiet_is_normal
                && agg.calls == 0
                && agg.denials == 0
                && !self.busy()
                && self.recent.iter().all(|(_, a)| a.denials == 0 && a.denied_apis.items.is_empty())
            {
                self.calls.learn(w, 0.0, alpha, WIDTH);
                self.recent.push((w, agg));
                let drop = self.recent.len().saturating_sub(span_windows);
                self.recent.drain(..drop);
                self.denied.learn(w, 0.0, alpha, WIDTH);
                return;
            }
            let s = Subject {
                account: ctx.account,
                region: ctx.region,
                kind: FindingKind::ApiCallRate,
                subject: &label,
                describe: describe_rate,
            };
            let vc = self.calls.judge(w, agg.calls as f64, &rule, &b, 1.0);
            Self::report(
                ctx,
                &mut self.call_ep,
                &s,
                ((w, w + WIDTH), &vc, b.close_after_windows),
                std::iter::once(&agg),
                false,
            );
            if !vc.anomalous {
                self.calls.learn(w, vc.observed, alpha, WIDTH);
            }
            self.recent.push((w, agg));
            let drop = self.recent.len().saturating_sub(span_windows);
            self.recent.drain(..drop);
            let aggs = self.recent.iter().map(|(_, a)| a);
            let ve = self.enum_verdict(ctx, w, aggs.clone(), 1.0);
            // The episode starts with the first window of the span that saw denials.
            let start = self.recent.iter().find(|(_, a)| a.denials > 0).map(|(s, _)| *s).unwrap_or(w);
            let s = Subject { kind: FindingKind::ApiErrorRate, describe: describe_enumeration, ..s };
            Self::report(ctx, &mut self.enum_ep, &s, ((start, w + WIDTH), &ve, b.close_after_windows), aggs, true);
            if !ve.anomalous {
                self.denied.learn(w, ve.observed, alpha, WIDTH);
            }
        });
        // Early: the final windows of the span plus the open ones.
        if !self.enum_ep.is_open() && !win.open.is_empty() {
            let keep = (self.recent.len() + win.open.len()).saturating_sub(span_windows);
            let aggs = self.recent.iter().chain(win.open.iter()).map(|(_, a)| a).skip(keep);
            let v = self.enum_verdict(ctx, win.open[0].0, aggs.clone(), b.early_factor);
            if v.anomalous {
                let start = self
                    .recent
                    .iter()
                    .chain(win.open.iter())
                    .find(|(_, a)| a.denials > 0)
                    .map(|(s, _)| *s)
                    .unwrap_or(win.open[0].0);
                let end = win.open.back().map(|(s, _)| s + WIDTH).unwrap_or(start + WIDTH);
                let s = Subject {
                    account: ctx.account,
                    region: ctx.region,
                    kind: FindingKind::ApiErrorRate,
                    subject: &label,
                    describe: describe_enumeration,
                };
                Self::report(ctx, &mut self.enum_ep, &s, ((start, end), &v, u32::MAX), aggs, true);
            }
        }
        self.win = win;
        self.label = label;
    }

    pub fn busy(&self) -> bool {
        self.call_ep.is_open() || self.enum_ep.is_open()
    }
}

/// Calls or failed calls of one API, or calls of one principal (`detail` is the unit).
fn describe_rate(ep: &Episode) -> String {
    format!(
        "{} {} in 5 minutes for {} against a baseline of {}",
        num(ep.observed),
        ep.detail,
        ep.subject,
        num(ep.baseline)
    )
}

/// One principal denied on many distinct APIs.
fn describe_enumeration(ep: &Episode) -> String {
    format!(
        "{} was denied on {} distinct APIs within minutes (usually {}): likely enumeration with limited permissions",
        ep.subject,
        num(ep.observed),
        num(ep.baseline)
    )
}

fn describe_throttling(ep: &Episode) -> String {
    format!(
        "{} throttled calls in 5 minutes for {} against a baseline of {}",
        num(ep.observed),
        ep.subject,
        num(ep.baseline)
    )
}

/// One 5-minute window of throttles of one function or API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThrottleAgg {
    /// Throttled calls in CloudTrail.
    pub calls: u64,
    /// `Throttles` from the metric stream (a sum over the window's datapoints).
    pub metric: f64,
    pub top: Contribs,
    pub evidence: Ids,
}

/// Throttles of one function (subject: its name) or one API (subject: `source:name`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThrottleKey {
    pub label: String,
    pub series: Series,
    pub win: Windows<ThrottleAgg>,
    pub ep: Tracker,
    pub last_seen: EpochMillis,
}

impl ThrottleKey {
    pub fn observe_call(&mut self, a: &ApiCall) -> bool {
        self.last_seen = self.last_seen.max(a.time);
        let Some(agg) = self.win.at(a.time, WIDTH) else { return false };
        agg.calls += 1;
        agg.top.add("error_code", a.error_code.as_deref().unwrap_or(""), 1);
        agg.top.add("principal", &a.principal, 1);
        agg.evidence.push(&a.event_id);
        true
    }

    pub fn observe_metric(&mut self, t: EpochMillis, throttles: f64) -> bool {
        self.last_seen = self.last_seen.max(t);
        let Some(agg) = self.win.at(t, WIDTH) else { return false };
        agg.metric += throttles;
        true
    }

    /// `history` says whether the shard has enough history: a throttle key is born with its
    /// first throttle, so its own history cannot tell.
    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis, history: bool) {
        let b = ctx.cfg.baseline.clone();
        let rule = ctx.cfg.throttling.clone();
        let alpha = alpha_for(b.alpha, WIDTH);
        let mut win = std::mem::take(&mut self.win);
        let label = &self.label;
        let judge = |series: &Series, w: EpochMillis, agg: &ThrottleAgg, factor: f64| {
            let x = (agg.calls as f64).max(agg.metric);
            let mut v = series.judge(w, x, &rule, &b, factor);
            // The key's own history starts with its first throttle; the shard's history decides.
            let e = series.expected(w, &b);
            v.anomalous = history
                && x >= rule.min_count * factor
                && x >= rule.min_ratio * factor * e.mean.max(1e-9)
                && v.z >= rule.z * factor;
            v
        };
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::Throttling,
            subject: label,
            describe: describe_throttling,
        };
        win.finalize(final_before, WIDTH, |w, agg| {
            let v = judge(&self.series, w, &agg, 1.0);
            let fresh = !self.ep.is_open();
            let f = self.ep.step(&s, (w, w + WIDTH), &v, b.close_after_windows, |ep| {
                ep.absorb(&agg.top, &agg.evidence);
                ep.severity = if v.observed >= 100.0 { Severity::High } else { Severity::Medium };
            });
            if v.anomalous && !fresh {
                if let Some(ep) = self.ep.episode_mut() {
                    if ep.start != w {
                        ep.absorb(&agg.top, &agg.evidence);
                    }
                }
            }
            ctx.out.extend(f);
            if !v.anomalous {
                self.series.learn(w, v.observed, alpha, WIDTH);
            }
        });
        for (w, agg) in &win.open {
            let (w, agg) = (*w, agg);
            let v = judge(&self.series, w, agg, b.early_factor);
            if v.anomalous && !self.ep.is_open() {
                let f = self.ep.step(&s, (w, w + WIDTH), &v, u32::MAX, |ep| {
                    ep.absorb(&agg.top, &agg.evidence);
                    ep.severity = Severity::High;
                });
                ctx.out.extend(f);
            }
        }
        self.win = win;
    }

    pub fn busy(&self) -> bool {
        self.ep.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::HOUR;

    #[test]
    fn a_burst_recurs_after_a_gap_seen_before_or_a_multiple_of_it() {
        let mut b = Bursts::default();
        let (who, t) = (7, 1_000 * HOUR);
        b.record(who, t);
        // The same sweep straddling a window boundary is one burst, not a 5-minute period.
        b.record(who, t + 5 * MINUTE);
        assert!(b.get(who).unwrap().gaps.is_empty());
        b.record(who, t + 5 * HOUR);
        let burst = b.get(who).unwrap();
        assert_eq!(burst.gaps, vec![5 * HOUR]);
        // On schedule (a few minutes late), after a skipped run, or far off it.
        assert!(burst.recurs_at(t + 10 * HOUR + 4 * MINUTE));
        assert!(burst.recurs_at(t + 15 * HOUR));
        assert!(!burst.recurs_at(t + 7 * HOUR + 30 * MINUTE));
        assert!(!b.get(8).is_some_and(|x| x.recurs_at(t + 10 * HOUR)), "another principal has no schedule");
    }

    #[test]
    fn skipped_runs_never_push_the_period_out() {
        // A 5-hour sweep whose runs are often not recorded (their window fell in an hour slot
        // that had learned them): gaps of 10, 15, ... 40 hours. Kept as gaps, eight of them
        // evicted the 5-hour period and the next on-schedule run fired (seed 3's false finding).
        let mut b = Bursts::default();
        let (who, t) = (7, 1_000 * HOUR);
        let mut at = t;
        b.record(who, at);
        at += 5 * HOUR;
        b.record(who, at);
        for k in [2, 8, 4, 14, 10, 3, 12, 6, 2, 8, 4] {
            at += k * 5 * HOUR; // skipped runs: gaps of 10 to 70 hours
            b.record(who, at);
        }
        let burst = b.get(who).unwrap();
        assert_eq!(burst.gaps, vec![5 * HOUR], "only the period is kept");
        assert!(burst.recurs_at(at + 5 * HOUR));
        // A shorter period found later replaces the multiples it explains.
        let mut b = Bursts::default();
        b.record(who, t);
        b.record(who, t + 12 * HOUR);
        b.record(who, t + 16 * HOUR);
        assert_eq!(b.get(who).unwrap().gaps, vec![4 * HOUR]);
    }

    #[test]
    fn the_burst_memory_is_bounded() {
        let mut b = Bursts::default();
        for who in 0..100u64 {
            for k in 0..20 {
                b.record(who, k * (1 + who as i64) * HOUR);
            }
        }
        assert_eq!(b.items.len(), BURST_PRINCIPALS);
        assert!(b.items.iter().all(|x| x.gaps.len() <= BURST_GAPS));
    }
}
