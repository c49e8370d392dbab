//! The failure modes behind Lambda denial of service, which no CloudTrail-only tool sees: retry
//! storms (asynchronous events retried under one request id; a stream-triggered function stuck
//! on a record it cannot process), lost events (dropped, undeliverable, or about to expire) and
//! noisy neighbours (one function exhausting the account's concurrency, throttling the others).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{FindingKind, Severity};
use trailwatch_core::time::EpochMillis;

use super::{alpha_for, Ctx};
use crate::config::RateRule;
use crate::event::{Invocation, InvocationStatus};
use crate::window::{num, Contribs, Episode, Ids, Series, Subject, Tracker, Verdict, Windows, HOUR, MINUTE};

/// Steps an episode with the closed window `w`: a new episode is filled by `fill`; an open one is
/// filled again when `w` was judged early (what it held then was partial), or extended by `add`
/// for a later window. The early mark is forgotten once `w` reaches it.
#[allow(clippy::too_many_arguments)]
fn step_closed(
    t: &mut Tracker,
    early: &mut Option<EpochMillis>,
    s: &Subject,
    w: EpochMillis,
    v: &Verdict,
    close: u32,
    mut fill: impl FnMut(&mut Episode),
    add: impl FnOnce(&mut Episode),
) -> Option<trailwatch_core::finding::Finding> {
    let fresh = !t.is_open();
    let f = t.step(s, (w, w + WIDTH), v, close, &mut fill);
    if v.anomalous && !fresh {
        if let Some(ep) = t.episode_mut() {
            if *early == Some(w) {
                fill(ep);
            } else if w > ep.start {
                add(ep);
            }
        }
    }
    if early.is_some_and(|e| e <= w) {
        *early = None;
    }
    f
}

/// Retries, lost events and the pool are counted per 5 minutes.
pub const WIDTH: i64 = 5 * MINUTE;
/// Lambda retries an asynchronous event for at most 6 hours: a request id is kept a little longer.
const REQUEST_TTL: i64 = 7 * HOUR;
/// A stuck stream is followed minute by minute.
const STREAM_WIDTH: i64 = MINUTE;
/// Minutes without errors (or with the age falling back) that end a stuck-stream run.
const STREAM_QUIET_MINUTES: u32 = 3;

/// Request ids of failed invocations of one function, to recognise their retries: Lambda
/// retries a failed asynchronous event with the same request id, seconds to hours later, so a
/// retry often arrives in another file, or another day, than its first attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempts {
    /// Hash of the request id -> (its earliest attempt's end, attempts seen).
    pub ids: crate::stats::KeyedMap<(EpochMillis, u32)>,
    pub newest: EpochMillis,
}

impl Attempts {
    /// Records an attempt of request `id` ending at `t`. Returns its attempt number when it is a
    /// retry of a failure seen before. Only failures are remembered: Lambda retries nothing else.
    pub fn attempt(&mut self, id: u64, t: EpochMillis, failed: bool, cap: usize) -> Option<u32> {
        self.newest = self.newest.max(t);
        if let Some(e) = self.ids.get_mut(&id) {
            e.0 = e.0.min(t);
            e.1 += 1;
            return Some(e.1);
        }
        if failed {
            if self.ids.len() >= cap.max(2) {
                self.prune(cap);
            }
            self.ids.insert(id, (t, 1));
        }
        None
    }

    /// Forgets ids older than Lambda's retry horizon; past `cap`, the older half.
    fn prune(&mut self, cap: usize) {
        let horizon = self.newest - REQUEST_TTL;
        self.ids.retain(|_, e| e.0 >= horizon);
        if self.ids.len() >= cap.max(2) {
            let mut times: Vec<EpochMillis> = self.ids.values().map(|e| e.0).collect();
            let mid = times.len() / 2;
            let (_, median, _) = times.select_nth_unstable(mid);
            let median = *median;
            self.ids.retain(|_, e| e.0 > median);
        }
    }
}

/// One 5-minute window of a function's retries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetryAgg {
    /// Second and later attempts that ended in the window.
    pub retries: u64,
    /// Distinct requests among them that reached their second attempt here.
    pub requests: u64,
    pub max_attempt: u32,
    pub top: Contribs,
    /// Request ids retried.
    pub evidence: Ids,
}

/// One minute of a stream-triggered function.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamMinute {
    /// The largest `IteratorAge` datapoint, in ms; `None` when the minute had none.
    pub age: Option<f64>,
    /// Failed invocations, from the `Errors` metric and from REPORT lines (the larger).
    pub errors_metric: f64,
    pub errors_logs: u64,
    pub top: Contribs,
    pub evidence: Ids,
}

/// A stream function failing while its iterator falls behind, minute after minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamRun {
    pub since: EpochMillis,
    pub start_age: f64,
    pub last_age: f64,
    pub last: EpochMillis,
    pub errors: f64,
    pub quiet: u32,
}

impl StreamRun {
    /// Folds one minute in; `None` when the run ended.
    fn step(run: Option<StreamRun>, w: EpochMillis, m: &StreamMinute) -> Option<StreamRun> {
        let Some(age) = m.age else { return run };
        let errors = m.errors_metric.max(m.errors_logs as f64);
        match run {
            Some(mut r) => {
                // The age may plateau for a minute between datapoints, but a run whose age falls
                // back (the iterator caught up) or that stops failing ends.
                let rising = age >= r.last_age * 0.95;
                if rising && errors > 0.0 {
                    r.last_age = r.last_age.max(age);
                    r.last = w + STREAM_WIDTH;
                    r.errors += errors;
                    r.quiet = 0;
                } else {
                    r.quiet += 1;
                }
                (r.quiet < STREAM_QUIET_MINUTES && age >= r.start_age).then_some(r)
            }
            None if errors > 0.0 => {
                Some(StreamRun { since: w, start_age: age, last_age: age, last: w + STREAM_WIDTH, errors, quiet: 0 })
            }
            None => None,
        }
    }

    /// Stuck: failing for `stream_minutes` while the age grew by at least half the time that
    /// passed (a blocked shard ages one for one) to at least `stream_min_age_seconds`.
    fn stuck(&self, ctx: &Ctx) -> bool {
        let rs = &ctx.cfg.retry_storm;
        let span = self.last - self.since;
        span >= rs.stream_minutes as i64 * MINUTE
            && self.last_age >= rs.stream_min_age_seconds * 1000.0
            && self.last_age - self.start_age >= 0.5 * span as f64
            && self.quiet == 0
    }
}

/// One 5-minute window of a function's lost or ageing asynchronous events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LossAgg {
    pub dropped: f64,
    pub dead_letter_errors: f64,
    pub destination_failures: f64,
    /// The largest `AsyncEventAge`, in ms.
    pub max_age: f64,
}

impl LossAgg {
    fn lost(&self) -> f64 {
        self.dropped + self.dead_letter_errors + self.destination_failures
    }
}

/// What trailwatch keeps about one function's failures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailureKey {
    pub name: String,
    pub last_seen: EpochMillis,
    pub attempts: Attempts,
    pub retry_win: Windows<RetryAgg>,
    /// Retries per 5 minutes.
    pub retries: Series,
    pub retry_ep: Tracker,
    pub stream_win: Windows<StreamMinute>,
    pub stream_run: Option<StreamRun>,
    pub stream_ep: Tracker,
    pub loss_win: Windows<LossAgg>,
    pub loss_ep: Tracker,
    /// The window an episode opened early on, whose partial counts the episode holds until the
    /// window is final and replaces them.
    pub retry_early: Option<EpochMillis>,
    pub loss_early: Option<EpochMillis>,
}

fn failed(status: InvocationStatus) -> bool {
    matches!(status, InvocationStatus::Error | InvocationStatus::Timeout | InvocationStatus::OutOfMemory)
}

fn status_word(status: InvocationStatus) -> &'static str {
    match status {
        InvocationStatus::Success => "success",
        InvocationStatus::Error => "error",
        InvocationStatus::Timeout => "timeout",
        InvocationStatus::OutOfMemory => "out_of_memory",
        InvocationStatus::Unknown => "unknown",
    }
}

impl FailureKey {
    pub fn observe_invocation(&mut self, ctx: &mut Ctx, inv: &Invocation) -> bool {
        self.last_seen = self.last_seen.max(inv.end);
        let bad = failed(inv.status);
        let mut counted = true;
        if let Some(rid) = inv.request_id.as_deref().filter(|r| !r.is_empty()) {
            let cap = ctx.cfg.retry_storm.max_request_ids;
            if let Some(n) = self.attempts.attempt(ctx.key.str(rid), inv.end, bad, cap) {
                match self.retry_win.at(inv.end, WIDTH) {
                    Some(agg) => {
                        agg.retries += 1;
                        agg.requests += u64::from(n == 2);
                        agg.max_attempt = agg.max_attempt.max(n);
                        agg.top.add("status", status_word(inv.status), 1);
                        agg.top.add("error_type", inv.error_type.as_deref().unwrap_or(""), 1);
                        agg.evidence.push(rid);
                    }
                    None => counted = false,
                }
            }
        }
        if bad {
            if let Some(m) = self.stream_win.at(inv.end, STREAM_WIDTH) {
                m.errors_logs += 1;
                m.top.add("error_type", inv.error_type.as_deref().unwrap_or(""), 1);
                if let Some(rid) = inv.request_id.as_deref() {
                    m.evidence.push(rid);
                }
            }
        }
        counted
    }

    /// A function-level datapoint of the metrics this detector reads.
    pub fn observe_metric(&mut self, metric: &str, t: EpochMillis, sum: f64, max: f64) -> bool {
        self.last_seen = self.last_seen.max(t);
        match metric {
            "IteratorAge" | "Errors" => {
                let Some(m) = self.stream_win.at(t, STREAM_WIDTH) else { return false };
                if metric == "IteratorAge" {
                    m.age = Some(m.age.unwrap_or(0.0).max(max));
                } else {
                    m.errors_metric += sum;
                }
                true
            }
            _ => {
                let Some(l) = self.loss_win.at(t, WIDTH) else { return false };
                match metric {
                    "AsyncEventsDropped" => l.dropped += sum,
                    "DeadLetterErrors" => l.dead_letter_errors += sum,
                    "DestinationDeliveryFailures" => l.destination_failures += sum,
                    "AsyncEventAge" => l.max_age = l.max_age.max(max),
                    _ => {}
                }
                true
            }
        }
    }

    /// Closes final windows. `history`: whether the shard has enough history for a baseline (a
    /// key is born with its function's first failure, so its own history cannot tell).
    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis, history: bool) {
        self.advance_retries(ctx, final_before, history);
        self.advance_stream(ctx, final_before);
        self.advance_loss(ctx, final_before);
    }

    fn advance_retries(&mut self, ctx: &mut Ctx, final_before: EpochMillis, history: bool) {
        let b = ctx.cfg.baseline.clone();
        let rs = &ctx.cfg.retry_storm;
        let rule = RateRule { z: rs.z, min_count: rs.min_retries, min_ratio: rs.min_ratio };
        let alpha = alpha_for(b.alpha, WIDTH);
        let judge = |series: &Series, w: EpochMillis, agg: &RetryAgg, factor: f64| {
            let x = agg.retries as f64;
            let mut v = series.judge(w, x, &rule, &b, factor);
            let e = series.expected(w, &b);
            v.anomalous = history
                && x >= rule.min_count * factor
                && x >= rule.min_ratio * factor * e.mean.max(1e-9)
                && v.z >= rule.z * factor;
            v
        };
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::RetryStorm,
            subject: name,
            describe: describe_retries,
        };
        let mut win = std::mem::take(&mut self.retry_win);
        win.finalize(final_before, WIDTH, |w, agg| {
            let v = judge(&self.retries, w, &agg, 1.0);
            let f = step_closed(
                &mut self.retry_ep,
                &mut self.retry_early,
                &s,
                w,
                &v,
                b.close_after_windows,
                |ep| retry_episode(ep, &agg),
                |ep| add_retries(ep, &agg),
            );
            ctx.out.extend(f);
            if !v.anomalous {
                self.retries.learn(w, v.observed, alpha, WIDTH);
            }
        });
        for (w, agg) in &win.open {
            let v = judge(&self.retries, *w, agg, b.early_factor);
            if v.anomalous && !self.retry_ep.is_open() {
                let f = self.retry_ep.step(&s, (*w, w + WIDTH), &v, u32::MAX, |ep| retry_episode(ep, agg));
                ctx.out.extend(f);
                self.retry_early = Some(*w);
            }
        }
        self.retry_win = win;
    }

    fn advance_stream(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::RetryStorm,
            subject: name,
            describe: describe_stream,
        };
        let close = ctx.cfg.baseline.close_after_windows;
        let mut win = std::mem::take(&mut self.stream_win);
        win.finalize(final_before, STREAM_WIDTH, |w, m| {
            if m.age.is_none() && self.stream_run.is_none() && !self.stream_ep.is_open() {
                return;
            }
            self.stream_run = StreamRun::step(self.stream_run.take(), w, &m);
            let fresh = !self.stream_ep.is_open();
            let mut v = stream_verdict(ctx, self.stream_run.as_ref());
            // Once stuck, the episode lasts as long as the run: its first minutes, judged final
            // after an early opening, and minutes the age only plateaued belong to it.
            if !fresh {
                v.anomalous = self.stream_run.as_ref().is_some_and(|r| r.quiet == 0);
            }
            let run = &self.stream_run;
            let f = self.stream_ep.step(&s, (w, w + STREAM_WIDTH), &v, close, |ep| stream_episode(ep, run, &m));
            if v.anomalous && !fresh {
                if let (Some(ep), Some(r)) = (self.stream_ep.episode_mut(), &self.stream_run) {
                    stream_detail(ep, r, &m);
                }
            }
            ctx.out.extend(f);
        });
        // Early: the open minutes folded into a copy of the run.
        if !self.stream_ep.is_open() {
            let mut run = self.stream_run.clone();
            for (w, m) in &win.open {
                run = StreamRun::step(run, *w, m);
                let v = stream_verdict(ctx, run.as_ref());
                if v.anomalous {
                    let r = &run;
                    ctx.out.extend(
                        self.stream_ep.step(&s, (*w, w + STREAM_WIDTH), &v, u32::MAX, |ep| stream_episode(ep, r, m)),
                    );
                    break;
                }
            }
        }
        self.stream_win = win;
    }

    fn advance_loss(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let name = &self.name;
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::EventLoss,
            subject: name,
            describe: describe_loss,
        };
        let max_age = ctx
            .cfg
            .functions
            .get(&self.name)
            .and_then(|f| f.max_event_age_seconds)
            .unwrap_or(ctx.cfg.event_loss.max_event_age_seconds)
            * 1000.0;
        let fraction = ctx.cfg.event_loss.age_fraction;
        let verdict = |l: &LossAgg| Verdict {
            observed: l.lost(),
            expected: max_age / 1000.0,
            z: l.max_age / 1000.0,
            anomalous: l.lost() > 0.0 || l.max_age >= fraction * max_age,
        };
        let close = ctx.cfg.baseline.close_after_windows;
        let mut win = std::mem::take(&mut self.loss_win);
        win.finalize(final_before, WIDTH, |w, l| {
            let v = verdict(&l);
            let f = step_closed(
                &mut self.loss_ep,
                &mut self.loss_early,
                &s,
                w,
                &v,
                close,
                |ep| loss_episode(ep, &l),
                |ep| add_loss(ep, &l),
            );
            ctx.out.extend(f);
        });
        for (w, l) in &win.open {
            let v = verdict(l);
            if v.anomalous && !self.loss_ep.is_open() {
                ctx.out.extend(self.loss_ep.step(&s, (*w, w + WIDTH), &v, u32::MAX, |ep| loss_episode(ep, l)));
                self.loss_early = Some(*w);
            }
        }
        self.loss_win = win;
    }

    pub fn busy(&self) -> bool {
        self.retry_ep.is_open() || self.stream_ep.is_open() || self.loss_ep.is_open()
    }
}

/// Starts (or restarts, when its first window is final) an episode's totals.
fn retry_episode(ep: &mut Episode, agg: &RetryAgg) {
    ep.severity = Severity::High;
    ep.observed = 0.0;
    ep.score = 0.0;
    ep.detail.clear();
    ep.top = Contribs::default();
    ep.evidence.clear();
    add_retries(ep, agg);
}

/// Totals of an episode ride in `cost`-free fields: `observed` the retries so far, `score` the
/// highest attempt, `detail` the requests retried.
fn add_retries(ep: &mut Episode, agg: &RetryAgg) {
    ep.observed += agg.retries as f64;
    ep.score = ep.score.max(agg.max_attempt as f64);
    let requests: u64 = ep.detail.parse().unwrap_or(0) + agg.requests;
    ep.detail = requests.to_string();
    ep.absorb(&agg.top, &agg.evidence);
}

fn describe_retries(ep: &Episode) -> String {
    let requests = ep.detail.parse::<u64>().unwrap_or(0);
    format!(
        "Lambda function {} retried {} failed asynchronous event(s) {} time(s) (up to attempt {}; usually {} retries in 5 minutes): every retry repeats the work, its cost and its side effects",
        ep.subject,
        requests.max(1),
        num(ep.observed),
        num(ep.score),
        num(ep.baseline)
    )
}

fn stream_verdict(ctx: &Ctx, run: Option<&StreamRun>) -> Verdict {
    match run {
        Some(r) => Verdict {
            observed: r.last_age / 1000.0,
            expected: r.start_age / 1000.0,
            z: r.errors,
            anomalous: r.stuck(ctx),
        },
        None => Verdict { observed: 0.0, expected: 0.0, z: 0.0, anomalous: false },
    }
}

fn stream_episode(ep: &mut Episode, run: &Option<StreamRun>, m: &StreamMinute) {
    ep.severity = Severity::High;
    if let Some(r) = run {
        stream_detail(ep, r, m);
    }
}

/// The run's numbers, for the summary: `observed` the age in seconds, `baseline` the age when
/// the failures began, `score` the failed attempts.
fn stream_detail(ep: &mut Episode, r: &StreamRun, m: &StreamMinute) {
    ep.start = ep.start.min(r.since);
    ep.observed = r.last_age / 1000.0;
    ep.baseline = r.start_age / 1000.0;
    ep.score = r.errors;
    ep.detail = "stream".into();
    ep.absorb(&m.top, &m.evidence);
}

fn describe_stream(ep: &Episode) -> String {
    format!(
        "Lambda function {} failed {} time(s) on its stream while its IteratorAge rose from {} s to {} s: a record it cannot process (a poison record) is retried and blocks its shard; records behind it wait and will expire",
        ep.subject,
        num(ep.score),
        num(ep.baseline),
        num(ep.observed)
    )
}

fn loss_episode(ep: &mut Episode, l: &LossAgg) {
    ep.observed = 0.0;
    ep.score = 0.0;
    ep.top = Contribs::default();
    add_loss(ep, l);
}

/// `observed` the events lost so far, `score` the oldest age in seconds, `baseline` the maximum
/// age; the breakdown per metric in `top`.
fn add_loss(ep: &mut Episode, l: &LossAgg) {
    ep.observed += l.lost();
    ep.score = ep.score.max(l.max_age / 1000.0);
    let mut top = Contribs::default();
    for (metric, n) in [
        ("AsyncEventsDropped", l.dropped),
        ("DeadLetterErrors", l.dead_letter_errors),
        ("DestinationDeliveryFailures", l.destination_failures),
    ] {
        if n > 0.0 {
            top.add("metric", metric, n.round() as u64);
        }
    }
    ep.absorb(&top, &Ids::default());
    ep.severity = if ep.observed > 0.0 { Severity::High } else { Severity::Medium };
}

fn describe_loss(ep: &Episode) -> String {
    let of = |m: &str| {
        ep.top
            .dims
            .iter()
            .filter(|(d, _)| d == "metric")
            .flat_map(|(_, t)| t.sorted())
            .find(|(v, _)| v == m)
            .map_or(0, |(_, n)| n)
    };
    let mut parts = Vec::new();
    let dropped = of("AsyncEventsDropped");
    if dropped > 0 {
        parts.push(format!(
            "{dropped} asynchronous event(s) were dropped without being processed (they went nowhere unless an on-failure destination or dead-letter queue is set)"
        ));
    }
    let dlq = of("DeadLetterErrors");
    if dlq > 0 {
        parts.push(format!("{dlq} event(s) could not be sent to its dead-letter queue (check the queue or topic, its policy and KMS key)"));
    }
    let dest = of("DestinationDeliveryFailures");
    if dest > 0 {
        parts.push(format!(
            "{dest} event(s) could not be delivered to its on-failure destination (check the destination, its policy and KMS key)"
        ));
    }
    if ep.score > 0.0 || parts.is_empty() {
        parts.push(format!(
            "its oldest queued event waited {} of the {} allowed, after which Lambda drops it",
            hours(ep.score),
            hours(ep.baseline)
        ));
    }
    format!("Lambda function {} is losing events: {}", ep.subject, parts.join("; "))
}

fn hours(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{} min", num((seconds / 60.0).round()))
    }
}

/// One function in one 5-minute window of the account's pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolUse {
    /// Throttled Invoke calls in CloudTrail, and those whose message names the reason.
    pub throttled_calls: u64,
    pub reserved_reason: u64,
    pub account_reason: u64,
    /// `Throttles` from the metric stream.
    pub throttles_metric: f64,
    /// Billed time of invocations that ended in the window, for the mean concurrency.
    pub billed_ms: f64,
    /// `ConcurrentExecutions` maximum from the metric stream.
    pub peak: f64,
}

impl PoolUse {
    fn throttles(&self) -> f64 {
        (self.throttled_calls as f64).max(self.throttles_metric)
    }

    fn concurrency(&self) -> f64 {
        self.peak.max(self.billed_ms / WIDTH as f64)
    }
}

/// Functions tracked per pool window: beyond, new names are not.
const POOL_FUNCTIONS: usize = 512;

/// One 5-minute window of an account-region's concurrency pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolAgg {
    pub functions: BTreeMap<String, PoolUse>,
    /// Account-level `ClaimedAccountConcurrency` / `ConcurrentExecutions` maximum.
    pub account_peak: f64,
    /// Event ids of throttled Invoke calls.
    pub evidence: Ids,
}

impl PoolAgg {
    /// Hands `name`'s use to `f`, adding the function while there is room. A closure rather than
    /// a returned reference, so the function is searched once when it is already there, as it
    /// mostly is (twice was 3% of a run over a compacted lake).
    fn with_function(&mut self, name: &str, f: impl FnOnce(&mut PoolUse)) {
        let full = self.functions.len() >= POOL_FUNCTIONS;
        match self.functions.get_mut(name) {
            Some(u) => f(u),
            None if full => {}
            None => f(self.functions.entry(name.to_string()).or_default()),
        }
    }
}

/// Why Lambda throttled an Invoke, when its message says (`TooManyRequestsException` carries a
/// `Reason`; CloudTrail keeps it in the message only sometimes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The function's own reserved concurrency.
    Reserved,
    /// The account's concurrency in the region.
    Account,
    Unknown,
}

impl ThrottleReason {
    pub fn of(message: Option<&str>) -> Self {
        match message {
            Some(m) if m.contains("ReservedFunctionConcurrentInvocationLimitExceeded") => ThrottleReason::Reserved,
            Some(m) if m.contains("ConcurrentInvocationLimitExceeded") => ThrottleReason::Account,
            _ => ThrottleReason::Unknown,
        }
    }
}

/// Functions whose reserved concurrency is remembered.
const RESERVED_CAP: usize = 5000;

/// An account-region's shared concurrency pool: who uses it, who is throttled, and what each
/// function usually takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pool {
    pub win: Windows<PoolAgg>,
    /// Reserved concurrency per function, from PutFunctionConcurrency calls.
    pub reserved: BTreeMap<String, f64>,
    /// Each function's usual mean concurrency per window.
    pub usual: BTreeMap<String, f64>,
    pub ep: Tracker,
    /// The window an episode opened early on (see [`FailureKey::retry_early`]).
    pub early: Option<EpochMillis>,
}

impl Pool {
    pub fn observe_throttled_invoke(&mut self, function: &str, t: EpochMillis, message: Option<&str>, event_id: &str) {
        let Some(agg) = self.win.at(t, WIDTH) else { return };
        agg.evidence.push(event_id);
        agg.with_function(function, |u| {
            u.throttled_calls += 1;
            match ThrottleReason::of(message) {
                ThrottleReason::Reserved => u.reserved_reason += 1,
                ThrottleReason::Account => u.account_reason += 1,
                ThrottleReason::Unknown => {}
            }
        });
    }

    /// `function` empty: an account-level datapoint.
    pub fn observe_metric(&mut self, function: &str, metric: &str, t: EpochMillis, sum: f64, max: f64) {
        let Some(agg) = self.win.at(t, WIDTH) else { return };
        if function.is_empty() {
            agg.account_peak = agg.account_peak.max(max);
            return;
        }
        agg.with_function(function, |u| match metric {
            "Throttles" => u.throttles_metric += sum,
            "ConcurrentExecutions" => u.peak = u.peak.max(max),
            _ => {}
        });
    }

    pub fn observe_invocation(&mut self, inv: &Invocation) {
        let Some(agg) = self.win.at(inv.end, WIDTH) else { return };
        agg.with_function(&inv.function, |u| u.billed_ms += inv.billed_ms);
    }

    /// PutFunctionConcurrency sets it, DeleteFunctionConcurrency removes it.
    pub fn set_reserved(&mut self, function: &str, reserved: Option<f64>) {
        match reserved {
            Some(r) if self.reserved.len() < RESERVED_CAP || self.reserved.contains_key(function) => {
                self.reserved.insert(function.to_string(), r);
            }
            Some(_) => {}
            None => {
                self.reserved.remove(function);
            }
        }
    }

    /// Whether `u`'s throttles were its own reserved concurrency's: the message says so, or the
    /// function has reserved concurrency (which the account's pool cannot take from it) and no
    /// message says otherwise.
    fn own_limit(&self, name: &str, u: &PoolUse) -> bool {
        u.reserved_reason > 0 || (u.account_reason == 0 && self.reserved.contains_key(name))
    }

    /// The window judged: who took the pool, who was throttled by it.
    fn judge(&self, ctx: &Ctx, agg: &PoolAgg) -> (Verdict, Option<Verdicts>) {
        let nn = &ctx.cfg.noisy_neighbour;
        let limit = nn.limit(ctx.account);
        let pool_throttled: Vec<(&String, &PoolUse)> =
            agg.functions.iter().filter(|(n, u)| u.throttles() > 0.0 && !self.own_limit(n, u)).collect();
        let rise = |n: &str, u: &PoolUse| u.concurrency() - self.usual.get(n).copied().unwrap_or(0.0);
        let culprit = agg
            .functions
            .iter()
            .filter(|(n, u)| rise(n, u) > 0.0 && !self.reserved.contains_key(*n))
            .max_by(|a, b| rise(a.0, a.1).total_cmp(&rise(b.0, b.1)));
        let victims: Vec<(String, f64)> = pool_throttled
            .iter()
            .filter(|(n, _)| culprit.is_none_or(|(c, _)| c != *n))
            .map(|(n, u)| ((*n).clone(), u.throttles()))
            .collect();
        let victim_throttles: f64 = victims.iter().map(|v| v.1).sum();
        let culprit_conc = culprit.map_or(0.0, |(_, u)| u.concurrency());
        // The pool is exhausted when the account says so, or, without account-level metrics, when
        // the culprit alone takes most of it.
        let exhausted = agg.account_peak >= nn.pool_fraction * limit
            || (agg.account_peak == 0.0 && culprit_conc >= 0.5 * nn.pool_fraction * limit);
        let anomalous = pool_throttled.len() >= nn.min_functions
            && !victims.is_empty()
            && victim_throttles >= nn.min_throttles
            && exhausted;
        let v =
            Verdict { observed: agg.account_peak.max(culprit_conc), expected: limit, z: victim_throttles, anomalous };
        let own: Vec<(String, f64)> = agg
            .functions
            .iter()
            .filter(|(n, u)| u.throttles() > 0.0 && self.own_limit(n, u))
            .map(|(n, u)| (n.clone(), u.throttles()))
            .collect();
        let detail = Verdicts {
            culprit: culprit.map(|(n, u)| (n.clone(), u.concurrency(), self.usual.get(n).copied().unwrap_or(0.0))),
            victims,
            own,
        };
        (v, anomalous.then_some(detail))
    }

    pub fn advance(&mut self, ctx: &mut Ctx, final_before: EpochMillis) {
        let close = ctx.cfg.baseline.close_after_windows;
        let alpha = alpha_for(ctx.cfg.baseline.alpha, WIDTH).max(0.05);
        let mut win = std::mem::take(&mut self.win);
        win.finalize(final_before, WIDTH, |w, agg| {
            let (v, detail) = self.judge(ctx, &agg);
            self.step(ctx, w, &v, detail.as_ref(), &agg, close);
            if !v.anomalous {
                // Learn each function's usual concurrency; functions idle in the window decay.
                for (n, u) in &agg.functions {
                    if !self.usual.contains_key(n) && self.usual.len() >= ctx.cfg.baseline.max_keys {
                        continue;
                    }
                    let e = self.usual.entry(n.clone()).or_insert(u.concurrency());
                    *e += alpha * (u.concurrency() - *e);
                }
                for (n, e) in self.usual.iter_mut() {
                    if !agg.functions.contains_key(n) {
                        *e *= 1.0 - alpha;
                    }
                }
                self.usual.retain(|_, e| *e >= 1e-3);
            }
        });
        if !self.ep.is_open() {
            for (w, agg) in &win.open {
                let (v, detail) = self.judge(ctx, agg);
                if v.anomalous {
                    self.step(ctx, *w, &v, detail.as_ref(), agg, u32::MAX);
                    self.early = Some(*w);
                    break;
                }
            }
        }
        self.win = win;
    }

    fn step(&mut self, ctx: &mut Ctx, w: EpochMillis, v: &Verdict, d: Option<&Verdicts>, agg: &PoolAgg, close: u32) {
        let subject = match (self.ep.episode.as_ref(), d.and_then(|d| d.culprit.as_ref())) {
            (Some(ep), _) => ep.subject.clone(),
            (None, Some((c, _, _))) => c.clone(),
            (None, None) => "account concurrency".to_string(),
        };
        let s = Subject {
            account: ctx.account,
            region: ctx.region,
            kind: FindingKind::NoisyNeighbour,
            subject: &subject,
            describe: describe_pool,
        };
        let fresh = !self.ep.is_open();
        let f = self.ep.step(&s, (w, w + WIDTH), v, close, |ep| pool_episode(ep, d, agg));
        if let (false, Some(ep)) = (fresh, self.ep.episode_mut()) {
            if self.early == Some(w) {
                pool_episode(ep, d, agg);
            } else if let (true, Some(d)) = (w > ep.start, d) {
                pool_detail(ep, d, agg);
            }
        }
        if self.early.is_some_and(|e| e <= w) && close != u32::MAX {
            self.early = None;
        }
        ctx.out.extend(f);
    }

    pub fn busy(&self) -> bool {
        self.ep.is_open()
    }
}

/// What a noisy-neighbour window found.
#[derive(Debug, Clone, PartialEq)]
struct Verdicts {
    /// (name, concurrency, usual concurrency).
    culprit: Option<(String, f64, f64)>,
    /// (name, throttles) of functions the pool throttled.
    victims: Vec<(String, f64)>,
    /// (name, throttles) of functions their own reserved concurrency throttled.
    own: Vec<(String, f64)>,
}

/// Starts (or restarts, when its first window is final) an episode's totals.
fn pool_episode(ep: &mut Episode, d: Option<&Verdicts>, agg: &PoolAgg) {
    ep.severity = Severity::High;
    ep.observed = 0.0;
    ep.score = 0.0;
    ep.detail.clear();
    ep.top = Contribs::default();
    ep.evidence.clear();
    if let Some(d) = d {
        pool_detail(ep, d, agg);
    }
}

/// `observed` the highest concurrency seen (the account's or the culprit's), `baseline` the
/// culprit's usual, `score` the victims' throttles; victims and own-limit throttles in `top`,
/// the limit in `detail`.
fn pool_detail(ep: &mut Episode, d: &Verdicts, agg: &PoolAgg) {
    let mut top = Contribs::default();
    if let Some((c, conc, usual)) = &d.culprit {
        if *c == ep.subject {
            ep.observed = ep.observed.max(*conc);
            ep.baseline = *usual;
        }
    }
    for (n, t) in &d.victims {
        top.add("throttled_by_pool", n, t.round().max(1.0) as u64);
    }
    for (n, t) in &d.own {
        top.add("throttled_by_own_reserved", n, t.round().max(1.0) as u64);
    }
    ep.score += d.victims.iter().map(|v| v.1).sum::<f64>();
    ep.detail = num(agg.account_peak.max(if ep.detail.is_empty() { 0.0 } else { ep.detail.parse().unwrap_or(0.0) }));
    ep.absorb(&top, &agg.evidence);
}

fn describe_pool(ep: &Episode) -> String {
    let list = |dim: &str| -> Vec<(String, u64)> {
        ep.top.dims.iter().filter(|(d, _)| d == dim).flat_map(|(_, t)| t.sorted()).collect()
    };
    let victims = list("throttled_by_pool");
    let names: Vec<String> = victims.iter().map(|(n, c)| format!("{n} ({c} throttles)")).collect();
    let who = victims.iter().map(|v| v.0.as_str()).collect::<Vec<_>>().join(", ");
    let account_peak = ep.detail.parse::<f64>().unwrap_or(0.0);
    let pool = if account_peak > 0.0 {
        format!("the account's concurrency in the region reached {}", num(account_peak))
    } else {
        "the account's shared concurrency ran out".to_string()
    };
    let head = if ep.subject == "account concurrency" {
        format!("{pool} and {} function(s) were throttled by it: {}", victims.len(), names.join(", "))
    } else {
        format!(
            "Lambda function {} ran {} concurrent (usually {}) and {pool}; {} other function(s) were throttled with it: {}. Cap {} with reserved concurrency, or reserve concurrency for {who}",
            ep.subject,
            num(ep.observed.round()),
            num(ep.baseline.round()),
            victims.len(),
            names.join(", "),
            ep.subject
        )
    };
    let own = list("throttled_by_own_reserved");
    if own.is_empty() {
        head
    } else {
        let o: Vec<String> = own.iter().map(|(n, _)| n.clone()).collect();
        format!("{head}. Throttled by their own reserved concurrency, not the pool: {}", o.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_counted_per_request_id_across_any_gap() {
        let mut a = Attempts::default();
        let t = 1_000 * HOUR;
        assert_eq!(a.attempt(1, t, true, 100), None, "a first failure is not a retry");
        assert_eq!(a.attempt(2, t, false, 100), None);
        assert_eq!(a.attempt(2, t + MINUTE, false, 100), None, "successes are not remembered");
        // Lambda's retries: a minute, then two more; the last one, hours later, in another file.
        assert_eq!(a.attempt(1, t + MINUTE, true, 100), Some(2));
        assert_eq!(a.attempt(1, t + 3 * MINUTE, true, 100), Some(3));
        assert_eq!(a.attempt(1, t + 5 * HOUR, false, 100), Some(4));
        // Out of order: the retry read before its first attempt still pairs up.
        assert_eq!(a.attempt(9, t + 2 * HOUR, true, 100), None);
        assert_eq!(a.attempt(9, t + 2 * HOUR - MINUTE, true, 100), Some(2));
    }

    #[test]
    fn request_memory_is_bounded_and_forgets_past_the_retry_horizon() {
        let mut a = Attempts::default();
        for i in 0..10_000u64 {
            a.attempt(i, i as i64 * 1000, true, 1000);
            assert!(a.ids.len() <= 1000);
        }
        // The newest are kept: a retry of a recent failure still pairs up.
        assert_eq!(a.attempt(9_999, 10_000_000, true, 1000), Some(2));
        let mut b = Attempts::default();
        b.attempt(1, 0, true, 10);
        for i in 2..12u64 {
            b.attempt(i, 8 * HOUR + i as i64, true, 10);
        }
        assert!(!b.ids.contains_key(&1), "older than Lambda retries for");
    }

    #[test]
    fn a_stream_run_needs_errors_and_a_rising_age() {
        let m = |age: f64, errors: u64| StreamMinute { age: Some(age), errors_logs: errors, ..Default::default() };
        let mut run = None;
        for i in 0..12 {
            run = StreamRun::step(run, i * MINUTE, &m(1_000.0 + i as f64 * 60_000.0, 5));
        }
        let r = run.clone().unwrap();
        assert_eq!((r.since, r.errors), (0, 60.0));
        // No errors for three minutes: the run ends, however old the iterator.
        let mut quiet = run.clone();
        for i in 12..15 {
            quiet = StreamRun::step(quiet, i * MINUTE, &m(800_000.0, 0));
        }
        assert!(quiet.is_none());
        // The age falling back below where it started ends it too.
        assert!(StreamRun::step(run, 12 * MINUTE, &m(10.0, 5)).is_none());
        // A load burst: the age rises, nothing fails, no run.
        let mut burst = None;
        for i in 0..20 {
            burst = StreamRun::step(burst, i * MINUTE, &m(i as f64 * 60_000.0, 0));
        }
        assert!(burst.is_none());
    }

    #[test]
    fn throttle_reasons_from_the_message() {
        assert_eq!(
            ThrottleReason::of(Some("Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded)")),
            ThrottleReason::Reserved
        );
        assert_eq!(ThrottleReason::of(Some("Reason: ConcurrentInvocationLimitExceeded")), ThrottleReason::Account);
        assert_eq!(ThrottleReason::of(Some("Rate Exceeded.")), ThrottleReason::Unknown);
        assert_eq!(ThrottleReason::of(None), ThrottleReason::Unknown);
    }
}
