//! The detect engine: routes each event to its account-region shard, drops duplicates, moves
//! the shard's per-table watermarks, and closes windows when they are final.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::Finding;
use trailwatch_core::time::EpochMillis;

use crate::config::DetectConfig;
use crate::dedup::Dedup;
use crate::detectors::api::{ApiKey, PrincipalKey, ThrottleKey};
use crate::detectors::failure::{FailureKey, Pool};
use crate::detectors::lambda::FunctionKey;
use crate::detectors::rules::RuleMatches;
use crate::detectors::silence::{SourceWarning, TrailSilence};
use crate::detectors::skew::FutureTime;
use crate::detectors::{is_throttle, Ctx};
use crate::event::{ApiCall, Event, InvocationStatus, Table};
use crate::stats::{HashKey, KeyedMap};
use crate::window::{window_start, DAY, HOUR, MINUTE};

/// Bumped when the serialized state changes shape or meaning; older state is refused with a
/// clear error rather than misread. 2: keys are keyed hashes ([`HashKey`]).
pub const STATE_VERSION: u32 = 2;

/// Keys of one detector in one shard, capped: beyond `max_keys` new keys are only counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyed<K> {
    pub keys: KeyedMap<K>,
    /// Events of keys that could not be tracked because the cap was reached.
    pub untracked: u64,
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Keyed { keys: KeyedMap::default(), untracked: 0 }
    }
}

impl<K> Keyed<K> {
    pub fn get_or_insert(&mut self, h: u64, max: usize, make: impl FnOnce() -> K) -> Option<&mut K> {
        if !self.keys.contains_key(&h) {
            if self.keys.len() >= max {
                self.untracked += 1;
                return None;
            }
            self.keys.insert(h, make());
        }
        self.keys.get_mut(&h)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets keys last seen before `before`, unless `busy` (an episode is open).
    pub fn evict(&mut self, before: EpochMillis, last_seen: impl Fn(&K) -> EpochMillis, busy: impl Fn(&K) -> bool) {
        self.keys.retain(|_, k| busy(k) || last_seen(k) >= before);
    }
}

/// Counts a shard keeps about its input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub events: u64,
    pub duplicates: u64,
    /// Events later than the allowed lateness: checked for novelty, not counted in windows.
    pub too_late: u64,
    /// Events claiming a time ahead of the processing wall clock by more than the allowed skew:
    /// reported as `event_time_skew`, kept out of every window and watermark.
    #[serde(default)]
    pub future: u64,
}

/// The newest event time of the two sources (lake files of different source objects) that
/// reached furthest in one table. A watermark moves past what a second source confirms by at
/// most [`TimeRules::max_source_lead_minutes`](crate::config::TimeRules), so one file cannot
/// drag a shard's time forward.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// (source, newest time), newest first, at most two, distinct sources.
    pub top: Vec<(u64, EpochMillis)>,
}

impl Sources {
    pub fn observe(&mut self, source: u64, t: EpochMillis) {
        match self.top.iter().position(|(s, _)| *s == source) {
            // A known source not moving past its time, or the newest moving on, keeps the order
            // as it is (the common cases, every event: sorting each time was 1% of a run).
            Some(i) if t <= self.top[i].1 => return,
            Some(0) => {
                self.top[0].1 = t;
                return;
            }
            Some(i) => self.top[i].1 = t,
            None => self.top.push((source, t)),
        }
        self.top.sort_by_key(|s| std::cmp::Reverse(s.1));
        self.top.truncate(2);
    }

    /// The newest time of any source.
    pub fn newest(&self) -> Option<EpochMillis> {
        self.top.first().map(|s| s.1)
    }

    /// The newest time a second source has reached too.
    pub fn confirmed(&self) -> Option<EpochMillis> {
        self.top.get(1).map(|s| s.1)
    }
}

/// All state of one account and region. Shards never share keys, so they can be stored and
/// updated independently.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shard {
    pub version: u32,
    pub account: String,
    pub region: String,
    /// The newest event time seen per table ([`Table`] order).
    pub watermark: [Option<EpochMillis>; 3],
    /// The oldest event time seen per table.
    pub first: [Option<EpochMillis>; 3],
    pub dedup: Dedup,
    pub apis: Keyed<ApiKey>,
    pub principals: Keyed<PrincipalKey>,
    pub throttles: Keyed<ThrottleKey>,
    pub functions: Keyed<FunctionKey>,
    pub trail: TrailSilence,
    pub no_data_events: SourceWarning,
    pub no_logs: SourceWarning,
    pub counters: Counters,
    /// Per table: the sources that reached furthest, the evidence watermarks advance on.
    #[serde(default)]
    pub sources: [Sources; 3],
    /// Per table: records claiming times ahead of the wall clock.
    #[serde(default)]
    pub future: [FutureTime; 3],
    /// Lake key -> the version read (ETag, or size and modification time), for this shard's
    /// objects, so a run or invocation reads only new or changed ones. Pruned to the last
    /// [`RETENTION_DAYS`](crate::run::RETENTION_DAYS) of partitions.
    pub manifest: BTreeMap<String, String>,
    /// Retry storms and lost events, per function.
    #[serde(default)]
    pub failures: Keyed<FailureKey>,
    /// The account-region's concurrency pool, for noisy neighbours.
    #[serde(default)]
    pub pool: Pool,
    /// Open episodes of Sigma rule matches.
    #[serde(default)]
    pub rule_matches: RuleMatches,
}

/// The lateness of a table, in ms.
fn lateness(cfg: &DetectConfig, table: Table) -> i64 {
    let l = &cfg.lateness;
    MINUTE
        * match table {
            Table::CloudTrail => l.cloudtrail_minutes,
            Table::Invocations => l.logs_minutes,
            Table::Metrics => l.metrics_minutes,
        } as i64
}

/// The earlier of two optional times; either alone when the other is missing.
fn earlier(a: Option<EpochMillis>, b: Option<EpochMillis>) -> Option<EpochMillis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

impl Shard {
    pub fn new(account: &str, region: &str) -> Self {
        Shard { version: STATE_VERSION, account: account.into(), region: region.into(), ..Default::default() }
    }

    /// How much the shard holds: keys of every detector and remembered event ids. The sweep
    /// saves a shard whose size changed although it found nothing.
    pub fn size(&self) -> usize {
        self.apis.len()
            + self.principals.len()
            + self.throttles.len()
            + self.functions.len()
            + self.failures.len()
            + self.pool.reserved.len()
            + self.rule_matches.len()
            + self.dedup.len()
    }

    /// Final-before time of a table: windows ending at or before it are final.
    fn final_before(&self, cfg: &DetectConfig, table: Table) -> Option<EpochMillis> {
        self.watermark[table as usize].map(|w| w - lateness(cfg, table))
    }

    /// Feeds one event from `source` (events of one lake source object share it). `clock`: the
    /// deployment's confirmed clock; `now`: the processing wall clock, when known. Returns the
    /// time a second source confirms in this event's table, for the deployment clock.
    pub fn observe(
        &mut self,
        cfg: &DetectConfig,
        out: &mut Vec<Finding>,
        ev: &Event,
        input: Input,
    ) -> Option<EpochMillis> {
        let Input { source, clock, now, key } = input;
        let t = ev.time();
        let table = ev.table();
        let ti = table as usize;
        if let Some(now) = now.filter(|&n| t > n + cfg.time.max_future_skew_minutes as i64 * MINUTE) {
            self.counters.future += 1;
            let at = self.watermark[ti].or_else(|| self.watermark.iter().flatten().max().copied());
            let at = at.unwrap_or_else(|| window_start(now, HOUR));
            let mut ctx = Ctx { cfg, account: &self.account, region: &self.region, out, key: &key };
            self.future[ti].observe(&mut ctx, ev, now, at);
            // A rule matches what a record says, whatever time it claims.
            if let Event::Api(a) = ev {
                if !a.rules.is_empty() || !a.correlated.is_empty() {
                    self.rule_matches.observe(&mut ctx, a);
                }
            }
            return None;
        }
        // Duplicates first, against the watermark before this event: a second copy of a record in
        // another file is not a second source.
        let horizon = self.watermark[ti].map_or(t, |w| w.max(t)) - lateness(cfg, table) - HOUR;
        if t >= horizon && self.dedup.seen(t, ev.dedup_key(&key)) {
            self.counters.duplicates += 1;
            return None;
        }
        self.sources[ti].observe(source, t);
        let src = &self.sources[ti];
        let newest = src.newest().unwrap_or(t);
        let base = match (src.confirmed(), clock) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let cand = base.map_or(newest, |b| newest.min(b + cfg.time.max_source_lead_minutes as i64 * MINUTE));
        let confirmed = src.confirmed();
        let wm = self.watermark[ti].map_or(cand, |w| w.max(cand));
        self.counters.events += 1;
        self.watermark[ti] = Some(wm);
        self.first[ti] = Some(self.first[ti].map_or(t, |f| f.min(t)));
        let mut ctx = Ctx { cfg, account: &self.account, region: &self.region, out, key: &key };
        let max = cfg.baseline.max_keys;
        let counted = match ev {
            Event::Api(a) => {
                if !a.rules.is_empty() || !a.correlated.is_empty() {
                    self.rule_matches.observe(&mut ctx, a);
                }
                observe_pool(&mut self.pool, a);
                observe_api(
                    &mut ctx,
                    a,
                    (&mut self.apis, &mut self.principals, &mut self.throttles, &mut self.functions),
                    &mut self.trail,
                )
            }
            Event::Invocation(inv) => {
                self.pool.observe_invocation(inv);
                let h = key.parts(&[&inv.function]);
                // Only functions that fail need failure state: a retry follows a failure.
                let failed = !matches!(inv.status, InvocationStatus::Success | InvocationStatus::Unknown);
                let failures = match (failed || self.failures.keys.contains_key(&h))
                    .then(|| {
                        self.failures.get_or_insert(h, max, || FailureKey {
                            name: inv.function.to_string(),
                            ..Default::default()
                        })
                    })
                    .flatten()
                {
                    Some(f) => f.observe_invocation(&mut ctx, inv),
                    None => true,
                };
                let functions = match self
                    .functions
                    .get_or_insert(h, max, || FunctionKey { name: inv.function.to_string(), ..Default::default() })
                {
                    Some(f) => f.observe_invocation(&mut ctx, inv),
                    None => true,
                };
                failures && functions
            }
            // Account-level datapoints (no function) are the pool's alone.
            Event::Metric(m) if m.function.is_empty() => {
                self.pool.observe_metric("", &m.metric, m.time, m.sum, m.max);
                true
            }
            Event::Metric(m) => match &*m.metric {
                "Throttles" if m.sum > 0.0 => {
                    self.pool.observe_metric(&m.function, &m.metric, m.time, m.sum, m.max);
                    let h = key.parts(&["fn", &m.function]);
                    match self
                        .throttles
                        .get_or_insert(h, max, || ThrottleKey { label: m.function.to_string(), ..Default::default() })
                    {
                        Some(k) => k.observe_metric(m.time, m.sum),
                        None => true,
                    }
                }
                "ConcurrentExecutions" => {
                    self.pool.observe_metric(&m.function, &m.metric, m.time, m.sum, m.max);
                    if let Some(f) = self.functions.get_or_insert(key.parts(&[&m.function]), max, || FunctionKey {
                        name: m.function.to_string(),
                        ..Default::default()
                    }) {
                        f.observe_concurrency_metric(m.time, m.max);
                    }
                    true
                }
                "Errors"
                | "IteratorAge"
                | "AsyncEventAge"
                | "AsyncEventsDropped"
                | "DeadLetterErrors"
                | "DestinationDeliveryFailures" => {
                    // Nothing to say about a function whose datapoints are all zero: no key for it.
                    let h = key.parts(&[&m.function]);
                    let known = self.failures.keys.contains_key(&h);
                    let worth = m.sum > 0.0 || m.max > 0.0;
                    match (known || worth).then(|| {
                        self.failures
                            .get_or_insert(h, max, || FailureKey { name: m.function.to_string(), ..Default::default() })
                    }) {
                        Some(Some(f)) => f.observe_metric(&m.metric, m.time, m.sum, m.max),
                        _ => true,
                    }
                }
                _ => true,
            },
        };
        if !counted {
            self.counters.too_late += 1;
        }
        confirmed
    }

    /// Closes final windows, fires early where the evidence is overwhelming, checks silence
    /// against `clock` (the newest event time of the whole deployment) and evicts idle keys.
    pub fn advance(&mut self, cfg: &DetectConfig, out: &mut Vec<Finding>, clock: Option<EpochMillis>, key: &HashKey) {
        let ct_final = self.final_before(cfg, Table::CloudTrail);
        let logs_final = earlier(self.final_before(cfg, Table::Invocations), self.final_before(cfg, Table::Metrics));
        let throttle_final = earlier(ct_final, self.final_before(cfg, Table::Metrics));
        let history = match (self.first[0], self.watermark[0]) {
            (Some(f), Some(w)) => (w - f) as f64 >= cfg.baseline.min_history_days * DAY as f64,
            _ => self.first[2]
                .zip(self.watermark[2])
                .is_some_and(|(f, w)| (w - f) as f64 >= cfg.baseline.min_history_days * DAY as f64),
        };
        // Failures are judged on whichever tables the shard has: a deployment may have no trail.
        let any_history = (0..3).any(|t| {
            self.first[t]
                .zip(self.watermark[t])
                .is_some_and(|(f, w)| (w - f) as f64 >= cfg.baseline.min_history_days * DAY as f64)
        });
        let mut ctx = Ctx { cfg, account: &self.account, region: &self.region, out, key };
        for (ti, f) in self.future.iter_mut().enumerate() {
            f.advance(&mut ctx, self.watermark[ti]);
        }
        if let Some(fb) = ct_final {
            for k in self.apis.keys.values_mut() {
                k.advance(&mut ctx, fb);
            }
            for k in self.principals.keys.values_mut() {
                k.advance(&mut ctx, fb);
            }
            self.trail.advance(&mut ctx, fb);
            self.rule_matches.advance(&mut ctx, fb);
        }
        if let Some(fb) = throttle_final {
            for k in self.throttles.keys.values_mut() {
                k.advance(&mut ctx, fb, history);
            }
        }
        if let Some(fb) = logs_final {
            for k in self.failures.keys.values_mut() {
                k.advance(&mut ctx, fb, any_history);
            }
        }
        // Throttled Invoke calls come from CloudTrail, concurrency from logs and metrics.
        if let Some(fb) = earlier(ct_final, logs_final) {
            self.pool.advance(&mut ctx, fb);
        }
        let fn_final = logs_final.or(ct_final);
        if let Some(fb) = fn_final {
            let ctf = ct_final.unwrap_or(fb);
            for k in self.functions.keys.values_mut() {
                k.advance(&mut ctx, logs_final.unwrap_or(i64::MIN / 4), ctf);
            }
        }
        if let Some(clock) = clock {
            if self.watermark[0].is_some() {
                self.trail.check(&mut ctx, clock - lateness(cfg, Table::CloudTrail));
            }
            let now = clock - lateness(cfg, Table::Invocations);
            for k in self.functions.keys.values_mut() {
                k.check_silence(&mut ctx, now);
            }
        }
        // Missing sources, once CloudTrail has covered enough hours.
        if let (Some(f), Some(w)) = (self.first[0], self.watermark[0]) {
            if w - f >= cfg.log_silence.source_check_hours as i64 * HOUR && !self.functions.is_empty() {
                let no_events = !self.functions.keys.values().any(|k| k.seen_invoke_events);
                let no_logs = !self.functions.keys.values().any(|k| k.seen_in_logs);
                self.no_data_events.update(
                    &mut ctx,
                    no_events,
                    "source:lambda_data_events",
                    "no Lambda Invoke data events in CloudTrail: enable Lambda data events on the trail so unusual invokers can be seen",
                    w,
                );
                self.no_logs.update(
                    &mut ctx,
                    no_logs,
                    "source:lambda_logs",
                    "no Lambda REPORT lines: subscribe the functions' log groups (Firehose to the ingest bucket) so concurrency and timeouts can be watched",
                    w,
                );
            }
        }
        // Bounded state: forget idle keys and old dedup buckets.
        let newest = self.watermark.iter().flatten().max().copied();
        if let Some(now) = newest {
            let before = now - (cfg.baseline.key_ttl_days * DAY as f64) as i64;
            self.apis.evict(before, |k| k.last_seen, ApiKey::busy);
            self.principals.evict(before, |k| k.last_seen, PrincipalKey::busy);
            self.throttles.evict(before, |k| k.last_seen, ThrottleKey::busy);
            self.functions.evict(before, |k| k.last_seen, FunctionKey::busy);
            self.failures.evict(before, |k| k.last_seen, FailureKey::busy);
        }
        let oldest_horizon = [Table::CloudTrail, Table::Invocations, Table::Metrics]
            .iter()
            .filter_map(|&t| self.watermark[t as usize].map(|w| w - lateness(cfg, t) - HOUR))
            .min();
        if let Some(h) = oldest_horizon {
            self.dedup.prune(h);
        }
    }
}

/// What the concurrency pool learns from CloudTrail: throttled Invoke calls, and reserved
/// concurrency set or removed.
fn observe_pool(pool: &mut Pool, a: &ApiCall) {
    let Some(f) = a.function.as_deref() else { return };
    if a.name.starts_with("Invoke") && is_throttle(a.error_code.as_deref(), a.error_message.as_deref()) {
        pool.observe_throttled_invoke(f, a.time, a.error_message.as_deref(), &a.event_id);
    } else if a.error_code.is_none() && a.name.starts_with("PutFunctionConcurrency") {
        if let Some(r) = a.reserved_concurrency {
            pool.set_reserved(f, Some(r));
        }
    } else if a.error_code.is_none() && a.name.starts_with("DeleteFunctionConcurrency") {
        pool.set_reserved(f, None);
    }
}

fn observe_api(
    ctx: &mut Ctx,
    a: &ApiCall,
    (apis, principals, throttles, functions): (
        &mut Keyed<ApiKey>,
        &mut Keyed<PrincipalKey>,
        &mut Keyed<ThrottleKey>,
        &mut Keyed<FunctionKey>,
    ),
    trail: &mut TrailSilence,
) -> bool {
    // One buffer for the `source:name` label, not a `String` per call.
    thread_local!(static API: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    API.with_borrow_mut(|api| {
        api.clear();
        api.push_str(&a.source);
        api.push(':');
        api.push_str(&a.name);
        observe_api_labelled(ctx, a, api, (apis, principals, throttles, functions), trail)
    })
}

fn observe_api_labelled(
    ctx: &mut Ctx,
    a: &ApiCall,
    api: &str,
    (apis, principals, throttles, functions): (
        &mut Keyed<ApiKey>,
        &mut Keyed<PrincipalKey>,
        &mut Keyed<ThrottleKey>,
        &mut Keyed<FunctionKey>,
    ),
    trail: &mut TrailSilence,
) -> bool {
    let max = ctx.cfg.baseline.max_keys;
    let throttled = is_throttle(a.error_code.as_deref(), a.error_message.as_deref());
    let failed = a.error_code.is_some() && !throttled;
    let mut counted = true;
    // Per API, throttled calls are left out: AWS refused them, and `throttling` reports them.
    // Lambda Invoke data events are left out too: `concurrency_spike` watches each function's
    // invocation rate from its logs, which hold every invocation, not a trail's selection.
    let invoke = a.source == "lambda.amazonaws.com" && a.name.starts_with("Invoke");
    if !throttled && !invoke {
        if let Some(k) = apis.get_or_insert(ctx.key.parts(&[&a.source, &a.name]), max, || ApiKey {
            label: api.to_string(),
            ..Default::default()
        }) {
            counted &= k.observe(a, failed);
        }
    }
    if let Some(k) = principals.get_or_insert(ctx.key.parts(&[&a.principal]), max, || PrincipalKey {
        label: a.principal.to_string(),
        ..Default::default()
    }) {
        counted &= k.observe(a, api, ctx.key);
    }
    if throttled {
        let (h, label) = match (&a.function, a.name.starts_with("Invoke")) {
            (Some(f), true) => (ctx.key.parts(&["fn", f]), f.to_string()),
            _ => (ctx.key.parts(&["api", api]), api.to_string()),
        };
        if let Some(k) = throttles.get_or_insert(h, max, || ThrottleKey { label, ..Default::default() }) {
            counted &= k.observe_call(a);
        }
    }
    if let Some(f) = &a.function {
        if a.error_code.is_none() || throttled {
            if let Some(k) = functions
                .get_or_insert(ctx.key.parts(&[f]), max, || FunctionKey { name: f.to_string(), ..Default::default() })
            {
                k.observe_call(ctx, a);
            }
        }
    }
    trail.observe(ctx, a);
    counted
}

/// The whole deployment's detector state: one shard per account and region, and the clock
/// silence and retention are measured against.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub shards: BTreeMap<(String, String), Shard>,
    /// The deployment's confirmed clock: the newest event time that two sources of one table of
    /// one shard agree on, so no single file can move it (see [`Engine::clock`]).
    pub confirmed: Option<EpochMillis>,
    /// The processing wall clock: events ahead of it by more than the allowed skew are reported
    /// and kept out of time. `None` trusts every event time (tests, replays of fixed data).
    pub now: Option<EpochMillis>,
    /// The deployment's hash key ([`HashKey`]); the default key in tests.
    pub key: HashKey,
    findings: Vec<Finding>,
    /// The shard key of the last lookup, reused so finding an event's shard allocates nothing.
    scratch: (String, String),
}

/// What an event comes with besides itself.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// The lake source object it was read from (events of one object share it).
    pub source: u64,
    /// The deployment's confirmed clock.
    pub clock: Option<EpochMillis>,
    /// The processing wall clock, when known.
    pub now: Option<EpochMillis>,
    pub key: HashKey,
}

impl Engine {
    /// `confirmed`: the confirmed clock saved by the last run.
    pub fn new(shards: impl IntoIterator<Item = Shard>, confirmed: Option<EpochMillis>) -> Self {
        Engine {
            shards: shards.into_iter().map(|s| ((s.account.clone(), s.region.clone()), s)).collect(),
            confirmed,
            now: None,
            key: HashKey::default(),
            findings: Vec::new(),
            scratch: Default::default(),
        }
    }

    /// Sets the deployment's hash key (kept with the state).
    pub fn with_key(mut self, key: HashKey) -> Self {
        self.key = key;
        self
    }

    /// Sets the processing wall clock (ms since the epoch).
    pub fn with_now(mut self, now: EpochMillis) -> Self {
        self.now = Some(now);
        self
    }

    /// The clock silence and retention are measured against: the confirmed clock, or, before two
    /// sources of any table agree, the newest watermark.
    pub fn clock(&self) -> Option<EpochMillis> {
        self.confirmed.or_else(|| self.shards.values().flat_map(|s| s.watermark.iter().flatten()).max().copied())
    }

    /// Feeds an event whose source is not known: every such event counts as one source, so
    /// watermarks follow the newest event time (as in tests and the warm start).
    pub fn observe(&mut self, cfg: &DetectConfig, ev: &Event) {
        self.observe_from(cfg, ev, 0);
    }

    /// Feeds an event read from `source` (a hash of the lake source object it came from).
    pub fn observe_from(&mut self, cfg: &DetectConfig, ev: &Event, source: u64) {
        self.observe_routed(cfg, ev, source, false);
    }

    /// [`Engine::observe_from`], told by the caller when `ev`'s account and region are the same
    /// text as the last event's (the same live bytes, not merely equal ones): then the last
    /// event's shard is taken without comparing the names again, which were a twentieth of a
    /// run over a compacted lake in `memcmp` calls.
    pub(crate) fn observe_routed(&mut self, cfg: &DetectConfig, ev: &Event, source: u64, same_shard: bool) {
        let (account, region) = ev.shard();
        if !same_shard && (self.scratch.0.as_str(), self.scratch.1.as_str()) != (account, region) {
            self.scratch.0.clear();
            self.scratch.0.push_str(account);
            self.scratch.1.clear();
            self.scratch.1.push_str(region);
        }
        // One lookup when the shard exists, as it almost always does.
        let shard = match self.shards.get_mut(&self.scratch) {
            Some(s) => s,
            None => self.shards.entry(self.scratch.clone()).or_insert_with(|| Shard::new(account, region)),
        };
        let input = Input { source, clock: self.confirmed, now: self.now, key: self.key };
        if let Some(c) = shard.observe(cfg, &mut self.findings, ev, input) {
            self.confirmed = Some(self.confirmed.map_or(c, |x| x.max(c)));
        }
    }

    /// Closes every final window of every shard.
    pub fn advance(&mut self, cfg: &DetectConfig) {
        let clock = self.clock();
        for s in self.shards.values_mut() {
            s.advance(cfg, &mut self.findings, clock, &self.key);
        }
    }

    /// The shard of `(account, region)`, created when new.
    pub fn shard_mut(&mut self, account: &str, region: &str) -> &mut Shard {
        self.shards.entry((account.to_string(), region.to_string())).or_insert_with(|| Shard::new(account, region))
    }

    /// The findings emitted so far, with suppressions applied.
    pub fn take_findings(&mut self, cfg: &DetectConfig) -> Vec<Finding> {
        let mut out = std::mem::take(&mut self.findings);
        for f in &mut out {
            if let Some(s) = cfg.suppression_for(f) {
                f.suppressed = true;
                f.suppression_reason = Some(format!("{} (until {})", s.reason, s.until));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The two sources that reached furthest, newest first, ties in the order they came: as
        /// sorting every source's newest time after each event gives them.
        #[test]
        fn sources_keep_the_two_newest(seq in proptest::collection::vec((0u64..4, 0i64..50), 0..200)) {
            let mut got = Sources::default();
            let mut newest: Vec<(u64, EpochMillis)> = Vec::new();
            for &(s, t) in &seq {
                got.observe(s, t);
                match newest.iter_mut().find(|(x, _)| *x == s) {
                    Some(e) => e.1 = e.1.max(t),
                    None => newest.push((s, t)),
                }
                newest.sort_by_key(|e| std::cmp::Reverse(e.1));
                newest.truncate(2);
                proptest::prop_assert_eq!(&got.top, &newest);
            }
        }
    }
}
