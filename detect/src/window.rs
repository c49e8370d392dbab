//! The machinery every detector shares: event-time windows that close on a watermark, seasonal
//! series that judge a window against its baseline, and episodes that turn a run of anomalous
//! windows into one `open` and one `closed` finding with the same id.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use trailwatch_core::finding::{finding_id, Contributor, Finding, FindingKind, Severity, Status};
use trailwatch_core::time::{format_rfc3339_millis, EpochMillis};

use crate::config::{Baseline, RateRule};
use crate::stats::{zscore, Expected, Seasonal, TopK};

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// At most this many empty windows are replayed into a baseline after a key was idle; beyond
/// it, older empty windows are skipped (two weeks of 5-minute windows).
const MAX_GAP_WINDOWS: i64 = 4032;

/// Open windows looked at from the newest before a binary search ([`Windows::at`]).
const NEAR: usize = 8;

/// The start of the window of `width` holding `t`.
pub fn window_start(t: EpochMillis, width: i64) -> EpochMillis {
    t.div_euclid(width) * width
}

/// A key's windows that may still change: each holds an aggregate of type `A`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Windows<A> {
    /// The first window not yet final; `None` before the first event.
    pub next: Option<EpochMillis>,
    /// Open windows, sorted by start. A deque: a day's batch opens a window for every minute of
    /// the day, and finalizing them from the front of a `Vec`, five at a time, moved all the
    /// rest each time (over a quarter of a run over a compacted lake).
    pub open: VecDeque<(EpochMillis, A)>,
}

impl<A> Default for Windows<A> {
    fn default() -> Self {
        Windows { next: None, open: VecDeque::new() }
    }
}

impl<A: Default> Windows<A> {
    /// The aggregate of the window holding `t`, or `None` when that window is already final (the
    /// event is later than the allowed lateness).
    pub fn at(&mut self, t: EpochMillis, width: i64) -> Option<&mut A> {
        let w = window_start(t, width);
        match self.next {
            Some(n) if w < n => return None,
            None => self.next = Some(w),
            _ => {}
        }
        // Most events fall in the newest open window, and nearly all the rest a few windows back
        // (an invocation's start minute, a record a little late): look there before searching
        // a day of open windows (binary search over the deque was 3% of a run).
        if self.open.back().is_some_and(|(s, _)| *s == w) {
            return self.open.back_mut().map(|(_, a)| a);
        }
        let n = self.open.len();
        let found = match self.open.iter().rev().take(NEAR).position(|(s, _)| *s <= w) {
            Some(k) if self.open[n - 1 - k].0 == w => Ok(n - 1 - k),
            Some(k) => Err(n - k),
            None if n <= NEAR => Err(0),
            None => self.open.binary_search_by_key(&w, |(s, _)| *s),
        };
        let i = match found {
            Ok(i) => i,
            Err(i) => {
                self.open.insert(i, (w, A::default()));
                i
            }
        };
        Some(&mut self.open[i].1)
    }

    /// Hands every window that ends at or before `final_before` to `f`, in order, with an empty
    /// aggregate for windows that saw nothing (a quiet window is data too).
    pub fn finalize(&mut self, final_before: EpochMillis, width: i64, mut f: impl FnMut(EpochMillis, A)) {
        let Some(mut next) = self.next else { return };
        // Most calls close nothing: leave the open windows where they are.
        if next + width > final_before {
            return;
        }
        let mut used = 0;
        while next + width <= final_before {
            let agg = match self.open.get_mut(used) {
                Some((s, a)) if *s == next => {
                    used += 1;
                    std::mem::take(a)
                }
                peeked => {
                    // A long idle gap: replay at most MAX_GAP_WINDOWS empty windows of it.
                    let target = peeked.map_or(window_start(final_before, width), |(s, _)| *s);
                    if target - next > MAX_GAP_WINDOWS * width {
                        next = target - MAX_GAP_WINDOWS * width;
                    }
                    A::default()
                }
            };
            f(next, agg);
            next += width;
        }
        self.open.drain(..used);
        self.next = Some(next);
    }

    /// The most recent open window.
    pub fn latest(&self) -> Option<&(EpochMillis, A)> {
        self.open.back()
    }
}

/// A seasonal series of one number per window, and since when it has history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    pub base: Seasonal,
    pub first: Option<EpochMillis>,
    /// Windows per hour (60 for minutes, 1 for hours): how many observations a seasonal slot
    /// gets in a day, so its trust can be counted in days whatever the window's width.
    #[serde(default)]
    pub per_hour: u32,
}

/// A window judged against its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub observed: f64,
    pub expected: f64,
    pub z: f64,
    pub anomalous: bool,
}

impl Series {
    pub fn expected(&self, t: EpochMillis, b: &Baseline) -> Expected {
        let full = (b.slot_full_days * self.per_hour.max(1) as f64).ceil().max(1.0) as u32;
        self.base.expected(t, full)
    }

    /// True once the series has `min_history_days` of history at `t`.
    pub fn has_history(&self, t: EpochMillis, b: &Baseline) -> bool {
        self.first.is_some_and(|f| (t - f) as f64 >= b.min_history_days * DAY as f64)
    }

    /// Anomalous when `x` clears all three bars of `rule`, each raised by `factor` (1 for a final
    /// window, the early factor for one still open).
    pub fn judge(&self, t: EpochMillis, x: f64, rule: &RateRule, b: &Baseline, factor: f64) -> Verdict {
        let e = self.expected(t, b);
        let z = zscore(x, &e);
        let anomalous = self.has_history(t, b)
            && x >= rule.min_count * factor
            && x >= rule.min_ratio * factor * e.mean.max(1e-9)
            && z >= rule.z * factor;
        Verdict { observed: x, expected: e.mean, z, anomalous }
    }

    /// Learns the value of the window of `width` ms starting at `t`.
    pub fn learn(&mut self, t: EpochMillis, x: f64, alpha: f64, width: i64) {
        self.first.get_or_insert(t);
        self.per_hour = (HOUR / width.max(1)).max(1) as u32;
        self.base.observe(t, x, alpha);
    }
}

/// Top values per dimension (principal, source IP, user agent, error code ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contribs {
    /// Dimension names are literals: a `String` each was an allocation per dimension per window.
    pub dims: Vec<(Cow<'static, str>, TopK)>,
}

/// Values kept per dimension.
pub const TOP_K: usize = TopK::CAP;

impl Contribs {
    pub fn add(&mut self, dim: &'static str, value: &str, by: u64) {
        if value.is_empty() {
            return;
        }
        // A dimension is named by the same literal at each call: its address says it, mostly,
        // without comparing the bytes (a mispredicted `memcmp` per dimension per event).
        let same = |d: &Cow<'static, str>| match d {
            Cow::Borrowed(s) if std::ptr::eq(*s, dim) => true,
            _ => d == dim,
        };
        match self.dims.iter_mut().find(|(d, _)| same(d)) {
            Some((_, t)) => t.add(value, TOP_K, by),
            None => {
                let mut t = TopK::default();
                t.add(value, TOP_K, by);
                self.dims.push((Cow::Borrowed(dim), t));
            }
        }
    }

    pub fn merge(&mut self, other: &Contribs) {
        for (d, t) in &other.dims {
            match self.dims.iter_mut().find(|(x, _)| x == d) {
                Some((_, mine)) => mine.merge(t, TOP_K),
                None => self.dims.push((d.clone(), t.clone())),
            }
        }
    }

    /// The top values of each dimension, for a finding.
    pub fn to_list(&self, per_dim: usize) -> Vec<Contributor> {
        let mut out = Vec::new();
        for (d, t) in &self.dims {
            for (v, c) in t.sorted().into_iter().take(per_dim) {
                out.push(Contributor { dimension: d.to_string(), value: v, count: c });
            }
        }
        out
    }
}

/// Evidence ids kept per window and per episode.
pub const EVIDENCE: usize = 5;

/// Evidence ids of one window: up to [`EVIDENCE`] distinct ids in one string. A window used to
/// keep a `Vec` of `String`s, up to six allocations for each of the hundreds of thousands of
/// windows a day's lake opens; this is one. Stored as the list of ids it always was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ids {
    text: String,
    /// Where each id ends in `text`.
    ends: [u32; EVIDENCE],
    n: u8,
}

impl Ids {
    /// Keeps `id` unless it is empty, already kept, or the window has its [`EVIDENCE`] ids.
    pub fn push(&mut self, id: &str) {
        if (self.n as usize) < EVIDENCE && !id.is_empty() && !self.iter().any(|e| e == id) {
            if self.text.capacity() == 0 {
                self.text.reserve(EVIDENCE * id.len());
            }
            self.text.push_str(id);
            self.ends[self.n as usize] = self.text.len() as u32;
            self.n += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.n as usize).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            &self.text[start..self.ends[i] as usize]
        })
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl Serialize for Ids {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut ids = Ids::default();
        for id in Vec::<String>::deserialize(d)? {
            ids.push(&id);
        }
        Ok(ids)
    }
}

pub fn push_evidence(ev: &mut Vec<String>, id: &str) {
    if ev.len() < EVIDENCE && !id.is_empty() && !ev.iter().any(|e| e == id) {
        // Room for all at once: most windows keep several, and growing 1, 2, 4, 8 cost two
        // allocations more per window.
        if ev.capacity() == 0 {
            ev.reserve_exact(EVIDENCE);
        }
        ev.push(id.to_string());
    }
}

/// An anomalous episode of one kind and subject, from its first anomalous window to its last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Episode {
    pub id: String,
    pub kind: FindingKind,
    pub subject: String,
    pub start: EpochMillis,
    /// The end of the last anomalous window.
    pub last: EpochMillis,
    /// Normal windows since the last anomalous one.
    pub quiet: u32,
    pub observed: f64,
    pub baseline: f64,
    pub score: f64,
    pub cost: Option<f64>,
    pub severity: Severity,
    /// Detector-specific words for the summary (a unit, an error code, the new values).
    pub detail: String,
    pub top: Contribs,
    pub evidence: Vec<String>,
    /// False while an episode is being gathered but has not yet reached its minimum size.
    pub reported: bool,
}

/// A detector's sentence for one of its episodes, without the times (the finding adds them):
/// the detector that knows what its numbers mean says them.
pub type Describe = fn(&Episode) -> String;

/// Who a finding is about: the shard and the subject, the kind, and how its detector says it.
pub struct Subject<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub kind: FindingKind,
    pub subject: &'a str,
    pub describe: Describe,
}

/// A number without noise, for sentences: integers as integers, else two decimals.
pub fn num(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A detector's sentence with the episode's times: since when, or from when to when.
fn sentence(ep: &Episode, status: Status, body: &str) -> String {
    let when = format_rfc3339_millis(ep.start);
    match status {
        Status::Open => format!("{body}, since {when}."),
        Status::Closed => format!("Ended: {body}; from {when} to {}.", format_rfc3339_millis(ep.last)),
    }
}

impl Episode {
    pub fn new(s: &Subject, start: EpochMillis, end: EpochMillis, v: &Verdict) -> Self {
        Episode {
            id: finding_id(&s.kind, s.account, s.region, s.subject, start),
            kind: s.kind.clone(),
            subject: s.subject.to_string(),
            start,
            last: end,
            quiet: 0,
            observed: v.observed,
            baseline: v.expected,
            score: v.z,
            cost: None,
            severity: Severity::Medium,
            detail: String::new(),
            top: Contribs::default(),
            evidence: Vec::new(),
            reported: true,
        }
    }

    /// Folds one more anomalous window in.
    pub fn extend(&mut self, end: EpochMillis, v: &Verdict) {
        self.last = self.last.max(end);
        self.quiet = 0;
        if v.observed > self.observed {
            self.observed = v.observed;
            self.baseline = v.expected;
        }
        self.score = self.score.max(v.z);
    }

    pub fn absorb(&mut self, top: &Contribs, evidence: &Ids) {
        self.top.merge(top);
        for e in evidence.iter() {
            push_evidence(&mut self.evidence, e);
        }
    }

    /// The finding for this episode in `status`, in its detector's words.
    pub fn finding(&self, account: &str, region: &str, status: Status, describe: Describe) -> Finding {
        Finding {
            id: self.id.clone(),
            kind: self.kind.clone(),
            severity: self.severity,
            account_id: account.to_string(),
            region: region.to_string(),
            subject: self.subject.clone(),
            start: self.start,
            end: (status == Status::Closed).then_some(self.last),
            observed: round(self.observed),
            baseline: round(self.baseline),
            score: round(self.score),
            estimated_cost_usd: self.cost.map(|c| (c * 100.0).round() / 100.0),
            summary: sentence(self, status, &describe(self)),
            top_contributors: self.top.to_list(3),
            evidence: self.evidence.clone(),
            status,
            suppressed: false,
            suppression_reason: None,
            rule: None,
        }
    }
}

fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// An episode slot of one key and kind, with the rules for opening and closing it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tracker {
    pub episode: Option<Episode>,
}

/// Episodes longer than this close, and their level becomes the new baseline.
pub const MAX_EPISODE: i64 = DAY;

impl Tracker {
    /// One final (or early) window's verdict. Returns the finding to emit, if any: `open` for a
    /// new episode, `closed` once `close_after` normal windows follow the last anomalous one.
    /// `new_episode` fills in detector-specific fields of a new episode.
    pub fn step(
        &mut self,
        s: &Subject,
        (start, end): (EpochMillis, EpochMillis),
        v: &Verdict,
        close_after: u32,
        new_episode: impl FnOnce(&mut Episode),
    ) -> Option<Finding> {
        match (&mut self.episode, v.anomalous) {
            (None, true) => {
                let mut ep = Episode::new(s, start, end, v);
                new_episode(&mut ep);
                let f = ep.finding(s.account, s.region, Status::Open, s.describe);
                self.episode = Some(ep);
                Some(f)
            }
            // Windows before an episode that opened early are final only now: they neither
            // extend nor close it.
            (Some(ep), _) if start < ep.start => None,
            (Some(ep), true) if end - ep.start <= MAX_EPISODE => {
                ep.extend(end, v);
                None
            }
            (Some(ep), _) => {
                ep.quiet += 1;
                if ep.quiet >= close_after || end - ep.start > MAX_EPISODE {
                    let ep = self.episode.take()?;
                    Some(ep.finding(s.account, s.region, Status::Closed, s.describe))
                } else {
                    None
                }
            }
            (None, false) => None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.episode.is_some()
    }

    pub fn episode_mut(&mut self) -> Option<&mut Episode> {
        self.episode.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_five_distinct_non_empty_ids_and_store_as_a_list() {
        let mut ids = Ids::default();
        for id in ["a", "", "bb", "a", "ccc", "dd", "e", "f", "g"] {
            ids.push(id);
        }
        assert_eq!(ids.to_vec(), ["a", "bb", "ccc", "dd", "e"]);
        assert_eq!(ids.len(), EVIDENCE);
        // The state stores the list it always stored; a list read back keeps the same rules.
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(json, r#"["a","bb","ccc","dd","e"]"#);
        assert_eq!(serde_json::from_str::<Ids>(&json).unwrap(), ids);
        let old: Ids = serde_json::from_str(r#"["x","x","","y"]"#).unwrap();
        assert_eq!(old.iter().collect::<Vec<_>>(), ["x", "y"]);
        // Multi-byte text is cut at the ids' own boundaries.
        let mut u = Ids::default();
        u.push("é1");
        u.push("日本");
        assert_eq!(u.to_vec(), ["é1", "日本"]);
    }

    #[test]
    fn windows_finalize_in_order_with_empty_gaps() {
        let mut w: Windows<u32> = Windows::default();
        *w.at(0, 10).unwrap() += 1;
        *w.at(35, 10).unwrap() += 2;
        *w.at(5, 10).unwrap() += 1;
        let mut seen = vec![];
        w.finalize(30, 10, |s, a| seen.push((s, a)));
        assert_eq!(seen, vec![(0, 2), (10, 0), (20, 0)]);
        // Late for a final window: refused. Still open: accepted.
        assert!(w.at(25, 10).is_none());
        assert!(w.at(31, 10).is_some());
        seen.clear();
        w.finalize(40, 10, |s, a| seen.push((s, a)));
        assert_eq!(seen, vec![(30, 2)]);
    }

    proptest::proptest! {
        /// Windows opened in any order, near the newest or far back: each time lands in its own
        /// window, and the open windows stay sorted, as a map of the same times says.
        #[test]
        fn open_windows_hold_what_a_map_of_the_same_times_holds(
            times in proptest::collection::vec(0i64..400, 1..200),
        ) {
            let mut w: Windows<u32> = Windows::default();
            let mut want = std::collections::BTreeMap::new();
            // The first time fixes the oldest window that can open: later ones before it are late.
            for &t in &times {
                if let Some(a) = w.at(t, 10) {
                    *a += 1;
                    *want.entry(window_start(t, 10)).or_insert(0u32) += 1;
                } else {
                    proptest::prop_assert!(window_start(t, 10) < window_start(times[0], 10));
                }
            }
            let got: Vec<(i64, u32)> = w.open.iter().copied().collect();
            proptest::prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn long_gaps_are_bounded() {
        let mut w: Windows<u32> = Windows::default();
        *w.at(0, 10).unwrap() += 1;
        let mut n = 0;
        w.finalize(10 * 100_000, 10, |_, _| n += 1);
        assert!(n <= MAX_GAP_WINDOWS as usize + 2, "{n}");
    }

    #[test]
    fn episodes_open_once_and_close_after_quiet_windows() {
        let s = Subject {
            account: "111122223333",
            region: "eu-west-1",
            kind: FindingKind::Throttling,
            subject: "x",
            describe: |ep| format!("{} things", num(ep.observed)),
        };
        let mut t = Tracker::default();
        let hot = Verdict { observed: 100.0, expected: 1.0, z: 20.0, anomalous: true };
        let calm = Verdict { observed: 1.0, expected: 1.0, z: 0.0, anomalous: false };
        let open = t.step(&s, (0, 10), &hot, 2, |_| {}).unwrap();
        assert_eq!(open.status, Status::Open);
        assert!(t.step(&s, (10, 20), &hot, 2, |_| {}).is_none());
        assert!(t.step(&s, (20, 30), &calm, 2, |_| {}).is_none());
        let closed = t.step(&s, (30, 40), &calm, 2, |_| {}).unwrap();
        assert_eq!((closed.status, closed.id.as_str(), closed.end), (Status::Closed, open.id.as_str(), Some(20)));
        assert!(t.step(&s, (40, 50), &calm, 2, |_| {}).is_none());
    }
}
