//! Detect's tuning, from one TOML file: thresholds, minimum sizes, Lambda prices, per-function
//! settings and suppressions. Every field has a default, so an empty file is a valid config and
//! `trailwatch config` prints the effective one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::Finding;
use trailwatch_core::time::{days_from_civil, EpochMillis};

use crate::error::DetectError;
pub use crate::sigma::{Rules, RulesConfig};

/// All of detect's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    pub lateness: Lateness,
    /// How far event time is trusted.
    pub time: TimeRules,
    pub baseline: Baseline,
    /// Calls per 5-minute window of one API (`source:name`) in one account and region.
    #[serde(deserialize_with = "rule::api_call_rate")]
    pub api_call_rate: RateRule,
    /// Failed calls (not throttles, which are `throttling`) per 5-minute window of one API.
    #[serde(deserialize_with = "rule::api_error_rate")]
    pub api_error_rate: RateRule,
    /// Calls per 5-minute window of one principal.
    #[serde(deserialize_with = "rule::principal_call_rate")]
    pub principal_call_rate: RateRule,
    pub enumeration: Enumeration,
    /// Throttled calls per 5-minute window, per function (Invoke) or per API.
    #[serde(deserialize_with = "rule::throttling")]
    pub throttling: RateRule,
    pub concurrency: Concurrency,
    pub timeouts: Timeouts,
    pub unusual_invocation: UnusualInvocation,
    pub log_silence: LogSilence,
    pub retry_storm: RetryStorm,
    pub event_loss: EventLoss,
    pub noisy_neighbour: NoisyNeighbour,
    pub prices: Prices,
    /// Per-function settings, by function name.
    pub functions: BTreeMap<String, FunctionSettings>,
    /// Findings to mute until a date. Muted findings are still written, never alerted.
    pub suppress: Vec<Suppression>,
    /// Sigma rules: how matches group into findings, values for `expand` placeholders.
    pub rules: RulesConfig,
    /// The loaded rules (`--rules`, or the Lambda's rules location): not part of the TOML.
    #[serde(skip)]
    pub ruleset: Rules,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            lateness: Lateness::default(),
            time: TimeRules::default(),
            baseline: Baseline::default(),
            api_call_rate: rule::API_CALL_RATE,
            api_error_rate: rule::API_ERROR_RATE,
            principal_call_rate: rule::PRINCIPAL_CALL_RATE,
            enumeration: Enumeration::default(),
            throttling: rule::THROTTLING,
            concurrency: Concurrency::default(),
            timeouts: Timeouts::default(),
            unusual_invocation: UnusualInvocation::default(),
            log_silence: LogSilence::default(),
            retry_storm: RetryStorm::default(),
            event_loss: EventLoss::default(),
            noisy_neighbour: NoisyNeighbour::default(),
            prices: Prices::default(),
            functions: BTreeMap::new(),
            suppress: Vec::new(),
            rules: RulesConfig::default(),
            ruleset: Rules::default(),
        }
    }
}

/// How long after a window ends its data may still arrive (event time behind the newest record
/// of the same account, region and table). Later data is still deduplicated and checked for
/// novelty, but no longer changes closed windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lateness {
    /// CloudTrail delivers within about 15 minutes.
    pub cloudtrail_minutes: u32,
    /// Firehose buffers up to 5 minutes, then delivers.
    pub logs_minutes: u32,
    pub metrics_minutes: u32,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness { cloudtrail_minutes: 20, logs_minutes: 10, metrics_minutes: 10 }
    }
}

/// Event time is evidence, not authority: how far it may run ahead of the wall clock, and how
/// far one source may lead the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeRules {
    /// Records claiming a time further ahead of the processing wall clock than this are reported
    /// (`event_time_skew`) and never move a watermark or the clock. CloudTrail stamps its own
    /// records; CloudWatch Logs accepts events up to 2 hours ahead, so an application whose
    /// clock runs fast is reported too, which is the point.
    pub max_future_skew_minutes: u32,
    /// A table's watermark moves at most this far past the newest time that a second source
    /// (another delivered object) or the deployment's confirmed clock agrees on.
    pub max_source_lead_minutes: u32,
}

impl Default for TimeRules {
    fn default() -> Self {
        TimeRules { max_future_skew_minutes: 5, max_source_lead_minutes: 10 }
    }
}

/// How baselines learn and how much state they may keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Baseline {
    /// Weight of a new window in a baseline once it has 1/alpha observations.
    pub alpha: f64,
    /// A key fires only after this much history (event time since it was first seen).
    pub min_history_days: f64,
    /// Days of observations a seasonal slot (an hour of a weekday, or of a weekend day) needs
    /// before it is trusted over its fallback (the same hour of the other kind of day, then the
    /// key's overall baseline). Counted in days, so minute, 5-minute and hourly series agree.
    pub slot_full_days: f64,
    /// Keys idle this long are forgotten.
    pub key_ttl_days: f64,
    /// At most this many keys per detector and account-region; new keys beyond it are counted but
    /// not tracked, so sprayed principals or IPs cannot grow the state without limit.
    pub max_keys: usize,
    /// An episode ends after this many normal windows in a row.
    pub close_after_windows: u32,
    /// A window still open may fire early when what it holds so far already exceeds every
    /// threshold by this factor. The counts judged early (calls, throttles, invocations, peak
    /// concurrency, GB-seconds) only grow as a window fills, so 1 fires no window that would not
    /// fire when final; above 1 trades minutes for margin.
    pub early_factor: f64,
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            alpha: 0.02,
            min_history_days: 3.0,
            slot_full_days: 3.0,
            key_ttl_days: 21.0,
            max_keys: 20_000,
            close_after_windows: 3,
            early_factor: 1.0,
        }
    }
}

/// A count anomaly: at least `z` standard deviations above the seasonal baseline, at least
/// `min_count` in the window, and at least `min_ratio` times the baseline. All three, so a quiet
/// key does not page anyone over two calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    pub z: f64,
    pub min_count: f64,
    pub min_ratio: f64,
}

/// Each rate rule's defaults, and deserializers that fill a rule's missing fields from its own
/// defaults (so `[api_call_rate] z = 7` alone keeps `min_count = 15`, and `api_error_rate`'s
/// `min_count` stays 30).
mod rule {
    use super::RateRule;
    use serde::{Deserialize, Deserializer};

    pub const API_CALL_RATE: RateRule = RateRule { z: 6.0, min_count: 15.0, min_ratio: 5.0 };
    pub const API_ERROR_RATE: RateRule = RateRule { z: 6.0, min_count: 30.0, min_ratio: 5.0 };
    pub const PRINCIPAL_CALL_RATE: RateRule = RateRule { z: 8.0, min_count: 200.0, min_ratio: 8.0 };
    pub const THROTTLING: RateRule = RateRule { z: 4.0, min_count: 20.0, min_ratio: 3.0 };

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partial {
        z: Option<f64>,
        min_count: Option<f64>,
        min_ratio: Option<f64>,
    }

    fn merge<'de, D: Deserializer<'de>>(d: D, dflt: RateRule) -> Result<RateRule, D::Error> {
        let p = Partial::deserialize(d)?;
        Ok(RateRule {
            z: p.z.unwrap_or(dflt.z),
            min_count: p.min_count.unwrap_or(dflt.min_count),
            min_ratio: p.min_ratio.unwrap_or(dflt.min_ratio),
        })
    }

    pub fn api_call_rate<'de, D: Deserializer<'de>>(d: D) -> Result<RateRule, D::Error> {
        merge(d, API_CALL_RATE)
    }
    pub fn api_error_rate<'de, D: Deserializer<'de>>(d: D) -> Result<RateRule, D::Error> {
        merge(d, API_ERROR_RATE)
    }
    pub fn principal_call_rate<'de, D: Deserializer<'de>>(d: D) -> Result<RateRule, D::Error> {
        merge(d, PRINCIPAL_CALL_RATE)
    }
    pub fn throttling<'de, D: Deserializer<'de>>(d: D) -> Result<RateRule, D::Error> {
        merge(d, THROTTLING)
    }
}

/// One principal touching many distinct APIs and being denied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Enumeration {
    /// Minutes the distinct APIs are counted over (a multiple of 5).
    pub window_minutes: u32,
    pub min_distinct_denied_apis: u32,
    pub min_denials: u32,
    pub min_denied_fraction: f64,
    /// Standard deviations above the principal's usual distinct denied APIs.
    pub z: f64,
}

impl Default for Enumeration {
    fn default() -> Self {
        Enumeration {
            window_minutes: 15,
            min_distinct_denied_apis: 10,
            min_denials: 20,
            min_denied_fraction: 0.3,
            z: 4.0,
        }
    }
}

/// Per-function concurrency and invocation rate, per minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Concurrency {
    pub z: f64,
    pub min_ratio: f64,
    /// Peak concurrent executions in a minute.
    pub min_concurrency: f64,
    /// Invocations in a minute.
    pub min_invocations: f64,
    /// Severity rises to high above this estimated extra cost in an episode, critical at 10x.
    pub high_cost_usd: f64,
    /// Billed GB-seconds in 5 minutes (timeouts left out), judged with `z` and `min_ratio`
    /// against the function's own baseline: the bill of a function that runs longer at its usual
    /// call rate.
    pub min_gb_seconds: f64,
    /// Invocations in 5 minutes: a rise too spread out for the per-minute minimums.
    pub min_window_invocations: f64,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            z: 6.0,
            min_ratio: 4.0,
            min_concurrency: 10.0,
            min_invocations: 120.0,
            high_cost_usd: 5.0,
            min_gb_seconds: 2.0,
            min_window_invocations: 50.0,
        }
    }
}

/// Timeout rate per function, and p95 duration approaching the configured timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    pub window_minutes: u32,
    pub min_timeouts: u32,
    /// Timeouts / invocations in the window.
    pub min_rate: f64,
    pub min_ratio: f64,
    pub z: f64,
    /// p95 duration at or above this fraction of the timeout is "creeping".
    pub p95_fraction: f64,
    /// Invocations a window needs before its p95 means anything.
    pub min_invocations: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            window_minutes: 15,
            min_timeouts: 5,
            min_rate: 0.1,
            min_ratio: 4.0,
            z: 4.0,
            p95_fraction: 0.8,
            min_invocations: 20,
        }
    }
}

/// A function invoked by a principal, account, IP or user agent it has never seen, or at an hour
/// it is never used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnusualInvocation {
    /// Days of a function's history that only learn.
    pub baseline_days: f64,
    /// Novel invocations an episode needs before it fires; one from another account is enough.
    pub min_events: u32,
    /// Distinct values kept per function and dimension; beyond it the dimension stops alerting.
    pub max_values: usize,
    /// An episode ends after this long without novel invocations.
    pub episode_minutes: u32,
}

impl Default for UnusualInvocation {
    fn default() -> Self {
        UnusualInvocation { baseline_days: 7.0, min_events: 3, max_values: 1000, episode_minutes: 60 }
    }
}

/// Logs that stop arriving when the baseline says they should.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSilence {
    /// No record for at least this long (event time).
    pub min_gap_minutes: u32,
    /// The baseline must expect at least this many CloudTrail records in the gap.
    pub min_expected_records: f64,
    /// ... or this many invocations of a function.
    pub min_expected_invocations: f64,
    /// Hours of CloudTrail in an account-region before a missing source is reported.
    pub source_check_hours: u32,
}

impl Default for LogSilence {
    fn default() -> Self {
        LogSilence {
            min_gap_minutes: 45,
            min_expected_records: 100.0,
            min_expected_invocations: 60.0,
            source_check_hours: 24,
        }
    }
}

/// Retries that multiply a failure: asynchronous invocations retried under the same request id,
/// and a stream-triggered function failing on the same records while its iterator falls behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryStorm {
    /// Retries (second and later attempts of a request id) in 5 minutes.
    pub min_retries: f64,
    /// ... and at least this many times the function's usual retries.
    pub min_ratio: f64,
    pub z: f64,
    /// Request ids of failed invocations remembered per function, to recognise their retries
    /// (Lambda retries an asynchronous event for up to 6 hours).
    pub max_request_ids: usize,
    /// A stream function is stuck when its `IteratorAge` has risen for this long with errors.
    pub stream_minutes: u32,
    /// ... and the age has reached this many seconds.
    pub stream_min_age_seconds: f64,
}

impl Default for RetryStorm {
    fn default() -> Self {
        RetryStorm {
            min_retries: 10.0,
            min_ratio: 5.0,
            z: 4.0,
            max_request_ids: 20_000,
            stream_minutes: 10,
            stream_min_age_seconds: 300.0,
        }
    }
}

/// Asynchronous events Lambda dropped, could not hand on, or is about to drop: no baseline,
/// losing data is always worth an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLoss {
    /// The functions' maximum event age (Lambda's default, 6 hours), unless set per function.
    pub max_event_age_seconds: f64,
    /// `AsyncEventAge` at or above this fraction of the maximum is reported before events drop.
    pub age_fraction: f64,
}

impl Default for EventLoss {
    fn default() -> Self {
        EventLoss { max_event_age_seconds: 21_600.0, age_fraction: 0.5 }
    }
}

/// One function exhausting the account's concurrency and others throttled with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoisyNeighbour {
    /// The account's concurrency limit per region, which no log carries (Lambda's default).
    pub account_concurrency_limit: f64,
    /// Per account id, where the limit was raised (or is lower, as in new accounts).
    pub account_limits: BTreeMap<String, f64>,
    /// The pool counts as exhausted at this fraction of the limit.
    pub pool_fraction: f64,
    /// Functions throttled by the account's pool in one 5-minute window, the culprit included.
    pub min_functions: usize,
    /// Throttles the victims together need in the window.
    pub min_throttles: f64,
}

impl Default for NoisyNeighbour {
    fn default() -> Self {
        NoisyNeighbour {
            account_concurrency_limit: 1000.0,
            account_limits: BTreeMap::new(),
            pool_fraction: 0.9,
            min_functions: 2,
            min_throttles: 5.0,
        }
    }
}

impl NoisyNeighbour {
    pub fn limit(&self, account: &str) -> f64 {
        self.account_limits.get(account).copied().unwrap_or(self.account_concurrency_limit)
    }
}

/// Lambda prices in USD. The defaults are the public on-demand prices of us-east-1 (and most
/// regions): $0.0000166667 per GB-second on x86_64, $0.0000133334 on arm64, $0.20 per million
/// requests. Regions that charge more are set under `regions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    pub gb_second_x86_64: f64,
    pub gb_second_arm64: f64,
    pub per_million_requests: f64,
    pub regions: BTreeMap<String, RegionPrices>,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            gb_second_x86_64: 0.000_016_666_7,
            gb_second_arm64: 0.000_013_333_4,
            per_million_requests: 0.20,
            regions: BTreeMap::new(),
        }
    }
}

/// Overrides for one region; unset fields use the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    pub gb_second_x86_64: Option<f64>,
    pub gb_second_arm64: Option<f64>,
    pub per_million_requests: Option<f64>,
}

impl Prices {
    /// The cost of invocations: GB-seconds of billed duration times the price, plus requests.
    pub fn cost(&self, region: &str, arm64: bool, billed_ms: f64, memory_mb: f64, requests: f64) -> f64 {
        let r = self.regions.get(region);
        let gbs = if arm64 {
            r.and_then(|r| r.gb_second_arm64).unwrap_or(self.gb_second_arm64)
        } else {
            r.and_then(|r| r.gb_second_x86_64).unwrap_or(self.gb_second_x86_64)
        };
        let req = r.and_then(|r| r.per_million_requests).unwrap_or(self.per_million_requests);
        billed_ms / 1000.0 * memory_mb / 1024.0 * gbs + requests * req / 1e6
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionSettings {
    /// The configured timeout, when neither logs nor CloudTrail tell it.
    pub timeout_seconds: Option<f64>,
    /// `x86_64` (default) or `arm64`, for prices.
    pub architecture: Option<String>,
    /// The function's maximum event age, when not Lambda's default of 6 hours.
    pub max_event_age_seconds: Option<f64>,
}

/// Mutes findings that match every field given, until the end of the day `until` (UTC, compared
/// with the finding's event time so a replay of old data behaves like the live run did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    pub kind: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    /// Equal to the finding's subject.
    pub subject: Option<String>,
    /// Equal to one of the finding's top contributors' values (e.g. a scanner role's ARN).
    pub contributor: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    pub until: String,
    pub reason: String,
}

/// `YYYY-MM-DD` to the first millisecond after that day.
fn end_of_day(date: &str) -> Option<EpochMillis> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = date[0..4].parse().ok()?;
    let m: u32 = date[5..7].parse().ok()?;
    let d: u32 = date[8..10].parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&d) {
        return None;
    }
    Some((days_from_civil(y, m, d) + 1) * 86_400_000)
}

impl Suppression {
    pub fn matches(&self, f: &Finding) -> bool {
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        end_of_day(&self.until).is_some_and(|until| f.start < until)
            && eq(&self.kind, f.kind.as_str())
            && eq(&self.account_id, &f.account_id)
            && eq(&self.region, &f.region)
            && eq(&self.subject, &f.subject)
            && self.contributor.as_deref().is_none_or(|c| f.top_contributors.iter().any(|t| t.value == c))
    }
}

impl DetectConfig {
    /// Parses and checks a TOML config.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, DetectError> {
        let cfg: DetectConfig = toml::from_str(text)
            .map_err(|e| DetectError::Config { origin: origin.to_string(), message: e.to_string() })?;
        cfg.validate().map_err(|message| DetectError::Config { origin: origin.to_string(), message })?;
        Ok(cfg)
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }

    fn validate(&self) -> Result<(), String> {
        for (i, s) in self.suppress.iter().enumerate() {
            if end_of_day(&s.until).is_none() {
                return Err(format!("suppress[{i}]: until {:?} is not a YYYY-MM-DD date", s.until));
            }
            if s.reason.trim().is_empty() {
                return Err(format!("suppress[{i}]: a suppression needs a reason"));
            }
            if s.kind.is_none() && s.subject.is_none() && s.contributor.is_none() && s.account_id.is_none() {
                return Err(format!("suppress[{i}]: name at least a kind, subject, contributor or account_id"));
            }
        }
        if self.baseline.alpha <= 0.0 || self.baseline.alpha > 1.0 {
            return Err("baseline.alpha must be in (0, 1]".into());
        }
        if self.enumeration.window_minutes < 5 || !self.enumeration.window_minutes.is_multiple_of(5) {
            return Err("enumeration.window_minutes must be a positive multiple of 5".into());
        }
        if self.timeouts.window_minutes == 0 || 60 % self.timeouts.window_minutes != 0 {
            return Err("timeouts.window_minutes must divide 60".into());
        }
        if self.rules.group_minutes == 0 {
            return Err("rules.group_minutes must be at least 1".into());
        }
        Ok(())
    }

    /// The first suppression that mutes `f`.
    pub fn suppression_for(&self, f: &Finding) -> Option<&Suppression> {
        self.suppress.iter().find(|s| s.matches(f))
    }

    pub fn is_arm64(&self, function: &str) -> bool {
        self.functions.get(function).and_then(|f| f.architecture.as_deref()) == Some("arm64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_round_trips() {
        let cfg = DetectConfig::from_toml("", "t").unwrap();
        assert_eq!(cfg, DetectConfig::default());
        assert_eq!(DetectConfig::from_toml(&cfg.to_toml(), "t").unwrap(), cfg);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_suppressions() {
        let e = DetectConfig::from_toml("[throttling]\nz = 1\nmin_count = 1\nmin_ratio = 1\nzz = 3\n", "c.toml");
        assert!(e.unwrap_err().to_string().contains("c.toml"));
        let e = DetectConfig::from_toml("[[suppress]]\nkind = \"x\"\nuntil = \"soon\"\nreason = \"r\"\n", "c");
        assert!(e.unwrap_err().to_string().contains("YYYY-MM-DD"));
        let e = DetectConfig::from_toml("[[suppress]]\nuntil = \"2027-01-01\"\nreason = \"r\"\n", "c");
        assert!(e.unwrap_err().to_string().contains("at least"));
    }

    #[test]
    fn a_partial_rule_keeps_its_own_defaults() {
        let cfg = DetectConfig::from_toml("[api_call_rate]\nz = 7\n", "t").unwrap();
        assert_eq!(cfg.api_call_rate, RateRule { z: 7.0, min_count: 15.0, min_ratio: 5.0 });
        let cfg = DetectConfig::from_toml("[api_error_rate]\nmin_ratio = 2\n", "t").unwrap();
        assert_eq!(cfg.api_error_rate, RateRule { z: 6.0, min_count: 30.0, min_ratio: 2.0 });
        let cfg = DetectConfig::from_toml("[throttling]\n[principal_call_rate]\nz = 9\n", "t").unwrap();
        assert_eq!(cfg.throttling, RateRule { z: 4.0, min_count: 20.0, min_ratio: 3.0 });
        assert_eq!(cfg.principal_call_rate.min_count, 200.0);
        let e = DetectConfig::from_toml("[api_call_rate]\nzz = 7\n", "t").unwrap_err();
        assert!(e.to_string().contains("zz"), "{e}");
    }

    #[test]
    fn suppressions_need_real_dates() {
        let cfg = |until: &str| {
            DetectConfig::from_toml(&format!("[[suppress]]\nkind = \"x\"\nuntil = \"{until}\"\nreason = \"r\"\n"), "c")
        };
        for bad in ["2027-02-31", "2027-02-29", "2027-04-31", "2027-13-01", "2027-00-10", "2027-01-00"] {
            assert!(cfg(bad).unwrap_err().to_string().contains("YYYY-MM-DD"), "{bad}");
        }
        for good in ["2028-02-29", "2027-02-28", "2027-12-31", "2000-02-29"] {
            assert!(cfg(good).is_ok(), "{good}");
        }
        assert!(cfg("1900-02-29").is_err());
        assert_eq!(end_of_day("2027-03-01").unwrap() - end_of_day("2027-02-28").unwrap(), 86_400_000);
    }

    #[test]
    fn time_rules_default_and_parse() {
        let cfg = DetectConfig::from_toml("[time]\nmax_future_skew_minutes = 120\n", "t").unwrap();
        assert_eq!(cfg.time, TimeRules { max_future_skew_minutes: 120, max_source_lead_minutes: 10 });
        assert_eq!(DetectConfig::default().time.max_future_skew_minutes, 5);
    }

    #[test]
    fn prices_cost_gb_seconds_and_requests() {
        let p = Prices::default();
        // 1M invocations of 1 s at 1 GB: 1M GB-s.
        let c = p.cost("us-east-1", false, 1e9, 1024.0, 1e6);
        assert!((c - (16.6667 + 0.20)).abs() < 0.01, "{c}");
        assert!(p.cost("us-east-1", true, 1e9, 1024.0, 0.0) < c);
    }
}
