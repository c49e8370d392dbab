//! Streaming statistics with bounded memory: exponentially weighted moments, a seasonal profile,
//! heavy hitters, bounded distinct sets, a log-bucketed quantile sketch and interval peaks.
//!
//! Each is checked against a batch recomputation in the property tests below.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// A fast, stable 64-bit hash of a string (FNV-1a): stable across runs and builds, so hashes
/// kept in serialized state keep meaning the same value.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    // A final avalanche, so short strings spread over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Hash of several parts, length-prefixed so `("ab","c")` and `("a","bc")` differ; stable like
/// [`hash_str`].
pub fn hash_parts(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in (p.len() as u32).to_le_bytes().iter().chain(p.as_bytes()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The per-deployment key of every hash kept in detector state. State keys are hashes of
/// attacker-controlled strings (principals, IPs, user agents, event ids); with a public hash an
/// attacker could craft a principal that collides with a known one and pass as it, so they are
/// keyed SipHash-1-3 with a secret kept with the state (stable across runs, apart between
/// deployments).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    pub fn new(k0: u64, k1: u64) -> Self {
        HashKey { k0, k1 }
    }

    /// A fresh key from the operating system's randomness (the seeds std draws for its hash
    /// maps), for a deployment's first run.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let word = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.finish()
        };
        HashKey { k0: word(1), k1: word(2) }
    }

    /// 32 hex digits, as the state stores it.
    pub fn to_hex(&self) -> String {
        format!("{:016x}{:016x}", self.k0, self.k1)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(HashKey { k0: u64::from_str_radix(&s[..16], 16).ok()?, k1: u64::from_str_radix(&s[16..], 16).ok()? })
    }

    /// The keyed hash of a string.
    pub fn str(&self, s: &str) -> u64 {
        self.parts(&[s])
    }

    /// The keyed hash of several parts, length-prefixed so `("ab","c")` and `("a","bc")` differ.
    ///
    /// SipHash-1-3 of each part's length (4 bytes, little-endian) and bytes, laid end to end:
    /// the hash the `siphasher` crate gives for the same writes, computed here word by word
    /// straight from the parts. Copying them into a buffer first, or writing them through the
    /// crate's partial-word path, cost a tenth of a run over a compacted lake.
    pub fn parts(&self, parts: &[&str]) -> u64 {
        let mut h = Sip13::new(self.k0, self.k1);
        for p in parts {
            h.word32(p.len() as u32);
            h.bytes(p.as_bytes());
        }
        h.finish()
    }
}

/// SipHash-1-3 over a stream of bytes, fed as whole little-endian words wherever it can.
struct Sip13 {
    v: [u64; 4],
    /// Bytes not yet compressed, little-endian, `ntail` of them.
    tail: u64,
    ntail: usize,
    len: usize,
}

impl Sip13 {
    #[inline]
    fn new(k0: u64, k1: u64) -> Self {
        Sip13 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }

    /// Fewer than 8 bytes as a little-endian word.
    #[inline(always)]
    fn load(b: &[u8]) -> u64 {
        let mut out = 0u64;
        let mut at = 0;
        if b.len() >= 4 {
            out = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
            at = 4;
        }
        if b.len() - at >= 2 {
            out |= (u16::from_le_bytes([b[at], b[at + 1]]) as u64) << (8 * at);
            at += 2;
        }
        if at < b.len() {
            out |= (b[at] as u64) << (8 * at);
        }
        out
    }

    /// Four bytes, as a part's length is written.
    #[inline(always)]
    fn word32(&mut self, x: u32) {
        self.len += 4;
        let x = x as u64;
        self.tail |= x << (8 * self.ntail);
        if self.ntail < 4 {
            self.ntail += 4;
        } else {
            // Fills the word; what did not fit (nothing when it fitted exactly) starts the next.
            self.compress(self.tail);
            self.tail = x >> (8 * (8 - self.ntail));
            self.ntail -= 4;
        }
    }

    #[inline(always)]
    fn bytes(&mut self, whole: &[u8]) {
        let n = whole.len();
        if n < 8 {
            return self.short_bytes(whole);
        }
        // Eight bytes or more: the partial words at either end are read as whole words and
        // masked or shifted, not assembled byte by byte, whose branches on the length were
        // mispredicted a million times a run.
        self.len += n;
        let mut b = whole;
        if self.ntail > 0 {
            let take = 8 - self.ntail;
            let head =
                u64::from_le_bytes(whole[..8].try_into().expect("8 bytes")) & (((1u128 << (8 * take)) - 1) as u64);
            self.compress(self.tail | head << (8 * self.ntail));
            b = &whole[take..];
        }
        let mut words = b.chunks_exact(8);
        for w in &mut words {
            self.compress(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let r = words.remainder().len();
        let last = u64::from_le_bytes(whole[n - 8..].try_into().expect("8 bytes"));
        self.tail = ((last as u128) >> (8 * (8 - r))) as u64;
        self.ntail = r;
    }

    /// Fewer than eight bytes.
    #[inline(always)]
    fn short_bytes(&mut self, mut b: &[u8]) {
        self.len += b.len();
        if self.ntail > 0 {
            let need = 8 - self.ntail;
            let take = need.min(b.len());
            self.tail |= Self::load(&b[..take]) << (8 * self.ntail);
            if take < need {
                self.ntail += take;
                return;
            }
            self.compress(self.tail);
            b = &b[take..];
        }
        self.tail = Self::load(b);
        self.ntail = b.len();
    }

    #[inline]
    fn finish(mut self) -> u64 {
        let b = ((self.len as u64 & 0xff) << 56) | self.tail;
        self.compress(b);
        self.v[2] ^= 0xff;
        for _ in 0..3 {
            Self::round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// Maps and sets keyed by [`HashKey`] hashes use the key as its own hash: it is already a keyed
/// SipHash of attacker-controlled text, so hashing it again (std's default, SipHash with another
/// key) bought nothing and cost a twentieth of a run over a compacted lake.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyedHash(u64);

impl std::hash::Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with it; anything else still spreads.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type BuildKeyed = std::hash::BuildHasherDefault<KeyedHash>;
/// A map keyed by [`HashKey`] hashes.
pub type KeyedMap<V> = std::collections::HashMap<u64, V, BuildKeyed>;
/// A set of [`HashKey`] hashes.
pub type KeyedSet = HashSet<u64, BuildKeyed>;

/// Mean and variance of a series: exact (Welford) for the first `1/alpha` observations, then
/// exponentially weighted with `alpha`, so a baseline follows slow drift but one spike barely
/// moves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u32,
    pub mean: f64,
    pub var: f64,
}

impl Moments {
    pub fn observe(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        let w = (1.0 / self.n as f64).max(alpha);
        let d = x - self.mean;
        self.mean += w * d;
        // West's weighted update: for w = 1/n this is Welford's population variance.
        self.var = (1.0 - w) * (self.var + w * d * d);
    }
}

/// Slots of a week: 24 hours of a weekday and 24 of a weekend day. Weekly shape without 168 slots,
/// so two weeks of history give every slot many observations.
pub const SLOTS: usize = 48;

/// The seasonal slot of an event time: hour of day, weekday or weekend (UTC).
pub fn slot(t_ms: i64) -> usize {
    let day = t_ms.div_euclid(86_400_000);
    let hour = (t_ms.rem_euclid(86_400_000) / 3_600_000) as usize;
    // 1970-01-01 was a Thursday: day 0 -> Thursday, so (day + 3) % 7 is 0 for Monday.
    let weekend = (day + 3).rem_euclid(7) >= 5;
    hour + if weekend { 24 } else { 0 }
}

/// A seasonal baseline: moments per [`slot`], plus overall moments to fall back on while a
/// slot has little history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seasonal {
    pub all: Moments,
    pub slots: Vec<Moments>,
}

impl Default for Seasonal {
    fn default() -> Self {
        Seasonal { all: Moments::default(), slots: vec![Moments::default(); SLOTS] }
    }
}

/// What a baseline expects at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub mean: f64,
    pub var: f64,
    /// Observations behind the estimate.
    pub n: u32,
}

impl Seasonal {
    pub fn observe(&mut self, t_ms: i64, x: f64, alpha: f64) {
        self.all.observe(x, alpha);
        if let Some(s) = self.slots.get_mut(slot(t_ms)) {
            s.observe(x, alpha);
        }
    }

    /// The slot's estimate, blended with a fallback until the slot has `full` observations. The
    /// fallback is the same hour of the other kind of day (weekday for a weekend slot), itself
    /// blended with the overall moments until it has `full` observations: weekend slots fill two
    /// days a week, and a job that runs every night at 02:00 is better judged by the weekdays'
    /// 02:00 than by the average hour.
    pub fn expected(&self, t_ms: i64, full: u32) -> Expected {
        let k = slot(t_ms);
        let s = self.slots.get(k).copied().unwrap_or_default();
        let o = self.slots.get((k + 24) % SLOTS).copied().unwrap_or_default();
        let weight = |m: &Moments| (m.n as f64 / full.max(1) as f64).min(1.0);
        let (ws, wo) = (weight(&s), weight(&o));
        let fb_mean = wo * o.mean + (1.0 - wo) * self.all.mean;
        let fb_var = wo * o.var + (1.0 - wo) * self.all.var;
        let mean = ws * s.mean + (1.0 - ws) * fb_mean;
        let var = ws * s.var + (1.0 - ws) * fb_var;
        Expected { mean, var, n: self.all.n }
    }
}

/// How far `x` is above what was expected, in standard deviations. Counts are at least Poisson
/// noisy, so the variance is never taken below the mean (nor below 1).
pub fn zscore(x: f64, e: &Expected) -> f64 {
    (x - e.mean) / e.var.max(e.mean).max(1.0).sqrt()
}

/// Heavy hitters (Space-Saving): at most `k` values (`k` up to [`TopK::CAP`]) with counts that
/// overestimate by at most N/k, and every value with more than N/k occurrences is present.
///
/// The values share one string, as [`crate::window::Ids`] does: a `Vec` of `String`s was up to
/// six allocations per dimension for each of the hundreds of thousands of windows a day opens,
/// and freeing a closed window's values alone was 4% of a run over a compacted lake. Serialized
/// as the list of `[value, count]` pairs it always was.
#[derive(Clone, Default)]
pub struct TopK {
    text: String,
    /// Where each value ends in `text`.
    ends: [u32; TopK::CAP],
    counts: [u64; TopK::CAP],
    n: u8,
}

impl TopK {
    /// The most values a `TopK` keeps, whatever `k` it is given.
    pub const CAP: usize = 5;

    /// Counts `by` for `value`. At `k` values (at most [`TopK::CAP`]) an unseen value takes the
    /// place of the first least counted one and its count plus `by`.
    pub fn add(&mut self, value: &str, k: usize, by: u64) {
        debug_assert!(k <= Self::CAP, "a TopK keeps at most {} values, not {k}", Self::CAP);
        let k = k.min(Self::CAP);
        if let Some(i) = (0..self.n as usize).position(|i| self.value(i) == value) {
            self.counts[i] += by;
            return;
        }
        let n = self.n as usize;
        if n < k {
            // Most windows keep two or three values of a dimension, of similar lengths.
            if self.text.capacity() == 0 {
                self.text.reserve(2 * value.len());
            }
            self.text.push_str(value);
            debug_assert!(self.text.len() <= u32::MAX as usize, "ends are u32");
            self.ends[n] = self.text.len() as u32;
            self.counts[n] = by;
            self.n += 1;
            return;
        }
        let Some(min) = (0..n).min_by_key(|&i| self.counts[i]) else { return };
        let (start, end) = self.span(min);
        self.text.replace_range(start..end, value);
        let moved = value.len() as i64 - (end - start) as i64;
        for e in &mut self.ends[min..n] {
            *e = (*e as i64 + moved) as u32;
        }
        self.counts[min] += by;
    }

    fn value(&self, i: usize) -> &str {
        let (start, end) = self.span(i);
        &self.text[start..end]
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (start, self.ends[i] as usize)
    }

    /// The values and their counts, in the order they were first kept.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        (0..self.n as usize).map(|i| (self.value(i), self.counts[i]))
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn merge(&mut self, other: &TopK, k: usize) {
        for (v, c) in other.iter() {
            self.add(v, k, c);
        }
    }

    /// Values by descending count.
    pub fn sorted(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.iter().map(|(s, c)| (s.to_string(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for TopK {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// The serialized form of [`TopK`], unchanged from when it was a list of pairs.
#[derive(Serialize, Deserialize)]
#[serde(rename = "TopK")]
struct TopKItems<T> {
    items: T,
}

impl Serialize for TopK {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Pairs<'a>(&'a TopK);
        impl Serialize for Pairs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        TopKItems { items: Pairs(self) }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TopK {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kept = TopKItems::<Vec<(String, u64)>>::deserialize(d)?;
        let mut t = TopK::default();
        // Each kept value once, in order. State never holds more than `CAP` values or one twice;
        // if it did, they would be merged as `add` merges them.
        for (v, c) in kept.items {
            t.add(&v, Self::CAP, c);
        }
        Ok(t)
    }
}

/// A set of value hashes that stops growing at `cap`: an attacker spraying values cannot grow
/// it, and `is_full` says when "never seen" stopped meaning anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedSet {
    pub items: KeyedSet,
}

impl BoundedSet {
    pub fn contains(&self, h: u64) -> bool {
        self.items.contains(&h)
    }

    /// Adds `h`; returns true when it was not there before (and there was room).
    pub fn insert(&mut self, h: u64, cap: usize) -> bool {
        if self.items.len() >= cap {
            return false;
        }
        self.items.insert(h)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn is_full(&self, cap: usize) -> bool {
        self.items.len() >= cap
    }
}

/// Bucket boundaries grow by 2^(1/8) (about 9%): quantiles come out within that relative error.
const BUCKETS_PER_OCTAVE: f64 = 8.0;
/// Covers 0.01 ms .. about 12 days, far more than Lambda's 15 minutes.
const HIST_BUCKETS: usize = 8 * 37;
const HIST_MIN: f64 = 0.01;

/// A log-bucketed histogram of positive values (durations in ms): fixed memory, mergeable,
/// quantiles within ~9% relative error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogHistogram {
    /// Sparse (bucket, count), sorted by bucket.
    pub buckets: Vec<(u16, u32)>,
    pub count: u64,
}

fn bucket_of(x: f64) -> u16 {
    if x <= HIST_MIN {
        return 0;
    }
    (((x / HIST_MIN).log2() * BUCKETS_PER_OCTAVE).floor() as usize).min(HIST_BUCKETS - 1) as u16
}

/// The geometric middle of a bucket.
fn bucket_value(b: u16) -> f64 {
    HIST_MIN * 2f64.powf((b as f64 + 0.5) / BUCKETS_PER_OCTAVE)
}

impl LogHistogram {
    pub fn add(&mut self, x: f64) {
        let b = bucket_of(x);
        match self.buckets.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.buckets[i].1 += 1,
            Err(i) => self.buckets.insert(i, (b, 1)),
        }
        self.count += 1;
    }

    /// The value at quantile `q` (0..=1), or None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, c) in &self.buckets {
            seen += *c as u64;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        self.buckets.last().map(|(b, _)| bucket_value(*b))
    }
}

/// The most intervals overlapping at any instant of `[from, to)`. Intervals are half-open
/// `[start, end)` in ms; an invocation ending exactly when another starts does not overlap it.
pub fn peak_overlap(intervals: &[(i64, i64)], from: i64, to: i64) -> u32 {
    thread_local! {
        // Every minute of every function is judged: a buffer per call was a twentieth of a run.
        static EDGES: std::cell::RefCell<Vec<(i64, i32)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if intervals.is_empty() {
        return 0;
    }
    EDGES.with_borrow_mut(|edges| {
        edges.clear();
        for &(s, e) in intervals {
            let (s, e) = (s.max(from), e.min(to));
            if s < e {
                edges.push((s, 1));
                edges.push((e, -1));
            }
        }
        // Ends sort before starts at the same instant.
        edges.sort_unstable();
        let (mut cur, mut peak) = (0i32, 0i32);
        for &(_, d) in edges.iter() {
            cur += d;
            peak = peak.max(cur);
        }
        peak as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// State written before the values shared one string reads back the same, and is written
    /// the same way.
    #[test]
    fn topk_keeps_its_serialized_form() {
        let old = r#"{"items":[["arn:aws:iam::1:user/a",3],["",1],["Mozilla/5.0 (x)",2]]}"#;
        let t: TopK = serde_json::from_str(old).unwrap();
        assert_eq!(t.iter().collect::<Vec<_>>(), [("arn:aws:iam::1:user/a", 3), ("", 1), ("Mozilla/5.0 (x)", 2)]);
        assert_eq!(serde_json::to_string(&t).unwrap(), old);
        assert_eq!(serde_json::to_string(&TopK::default()).unwrap(), r#"{"items":[]}"#);
        // Shards are decoded through a `serde_json::Value` first.
        let v: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::from_value::<TopK>(v).unwrap(), t);
    }

    #[test]
    fn keyed_hashes_are_stable_and_differ_between_deployments() {
        let (a, b) = (HashKey::new(1, 2), HashKey::new(3, 4));
        assert_eq!(a.str("arn:aws:iam::1:role/x"), a.str("arn:aws:iam::1:role/x"));
        assert_ne!(a.str("arn:aws:iam::1:role/x"), b.str("arn:aws:iam::1:role/x"));
        assert_ne!(a.parts(&["ab", "c"]), a.parts(&["a", "bc"]));
        let r = HashKey::random();
        assert_ne!(r, HashKey::random());
        assert_eq!(HashKey::from_hex(&r.to_hex()), Some(r));
        assert_eq!(HashKey::from_hex("xyz"), None);
        assert!(!format!("{r:?}").contains(&r.to_hex()[..8]), "the key must not be logged");
    }

    /// State saved before the one-pass hash holds keys hashed part by part: both paths (parts
    /// that fit the buffer and parts that do not) must give what part-by-part writes give.
    #[test]
    fn keyed_hashes_are_those_of_part_by_part_writes() {
        use std::hash::Hasher;
        let key = HashKey::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let streamed = |parts: &[&str]| {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(key.k0, key.k1);
            for p in parts {
                h.write(&(p.len() as u32).to_le_bytes());
                h.write(p.as_bytes());
            }
            h.finish()
        };
        let long = "x".repeat(300);
        let fits = "y".repeat(248);
        for parts in [
            &["ct", "3a1b2c3d-0000-4000-8000-0123456789ab"][..],
            &[][..],
            &[""][..],
            &["fn", "orders", "arn:aws:iam::111122223333:role/ci"][..],
            &[fits.as_str()][..],
            &[fits.as_str(), "z"][..],
            &[long.as_str()][..],
            &["a", long.as_str(), "b"][..],
        ] {
            assert_eq!(key.parts(parts), streamed(parts), "{parts:?}");
        }
    }

    proptest! {
        /// Every split of the stream into words: parts of any length, in any number.
        #[test]
        fn keyed_hashes_of_any_parts_are_those_of_part_by_part_writes(
            k0: u64,
            k1: u64,
            parts in proptest::collection::vec("\\PC{0,40}", 0..7),
        ) {
            use std::hash::Hasher;
            let key = HashKey::new(k0, k1);
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
            for p in &parts {
                h.write(&(p.len() as u32).to_le_bytes());
                h.write(p.as_bytes());
            }
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            prop_assert_eq!(key.parts(&parts), h.finish());
        }
    }
    use proptest::prelude::*;

    #[test]
    fn slots_know_the_week() {
        // 2026-01-05 is a Monday; 2026-01-10 a Saturday.
        let monday = crate::tests_support::t("2026-01-05T03:30:00Z");
        assert_eq!(slot(monday), 3);
        assert_eq!(slot(crate::tests_support::t("2026-01-10T23:59:00Z")), 47);
        assert_eq!(slot(crate::tests_support::t("2026-01-09T23:59:00Z")), 23);
    }

    #[test]
    fn young_weekend_slot_falls_back_on_the_weekdays_same_hour() {
        let t = crate::tests_support::t;
        let mut s = Seasonal::default();
        // Five weekdays: 100 at 02:00, 0 in every other hour.
        for d in 0..5 {
            for h in 0..24 {
                let x = if h == 2 { 100.0 } else { 0.0 };
                s.observe(t("2026-01-05T00:00:00Z") + d * 86_400_000 + h * 3_600_000, x, 0.0);
            }
        }
        // A Saturday's 02:00 has no history of its own: the weekdays' 02:00 stands in, not the
        // average hour (about 4).
        let sat = t("2026-01-10T02:10:00Z");
        assert!((s.expected(sat, 3).mean - 100.0).abs() < 1e-9);
        assert!(s.expected(t("2026-01-10T05:00:00Z"), 3).mean.abs() < 1e-9);
        // With too little weekday history too, the overall moments fill in.
        let mut young = Seasonal::default();
        young.observe(t("2026-01-05T02:00:00Z"), 100.0, 0.0);
        young.observe(t("2026-01-05T03:00:00Z"), 0.0, 0.0);
        let e = young.expected(sat, 3).mean;
        assert!(e > 50.0 && e < 100.0, "{e}");
    }

    #[test]
    fn peak_counts_overlap_not_touching() {
        assert_eq!(peak_overlap(&[(0, 10), (10, 20)], 0, 60), 1);
        assert_eq!(peak_overlap(&[(0, 10), (5, 20), (6, 7)], 0, 60), 3);
        assert_eq!(peak_overlap(&[(0, 10), (5, 20)], 12, 60), 1);
        assert_eq!(peak_overlap(&[], 0, 60), 0);
    }

    proptest! {
        /// While n <= 1/alpha the moments are the exact batch mean and population variance.
        #[test]
        fn moments_match_batch_while_exact(xs in prop::collection::vec(0.0f64..1e4, 1..50)) {
            let mut m = Moments::default();
            for &x in &xs { m.observe(x, 0.01); }
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            prop_assert!((m.mean - mean).abs() <= 1e-6 * mean.abs().max(1.0));
            prop_assert!((m.var - var).abs() <= 1e-6 * var.max(1.0));
        }

        /// After warm-up the mean is the exponentially weighted mean, recomputed in one batch.
        #[test]
        fn moments_match_batch_ewma(xs in prop::collection::vec(0.0f64..1e3, 11..200)) {
            let alpha = 0.1;
            let mut m = Moments::default();
            for &x in &xs { m.observe(x, alpha); }
            // Batch: exact mean of the first 10, then weights (1-alpha)^k.
            let head = &xs[..10];
            let mut mean = head.iter().sum::<f64>() / 10.0;
            for &x in &xs[10..] { mean = (1.0 - alpha) * mean + alpha * x; }
            prop_assert!((m.mean - mean).abs() <= 1e-6 * mean.abs().max(1.0));
        }

        /// Each seasonal slot holds the batch mean of the values observed in that slot.
        #[test]
        fn seasonal_slots_match_batch(obs in prop::collection::vec((0i64..14 * 86_400_000, 0.0f64..100.0), 1..300)) {
            let mut s = Seasonal::default();
            for &(t, x) in &obs { s.observe(t, x, 0.0); }
            for k in 0..SLOTS {
                let xs: Vec<f64> = obs.iter().filter(|(t, _)| slot(*t) == k).map(|o| o.1).collect();
                prop_assert_eq!(s.slots[k].n as usize, xs.len());
                if !xs.is_empty() {
                    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                    prop_assert!((s.slots[k].mean - mean).abs() < 1e-6);
                }
            }
        }

        /// Space-Saving's guarantees against exact counts.
        #[test]
        fn topk_keeps_heavy_hitters(vals in prop::collection::vec(0u8..30, 1..400)) {
            let k = TopK::CAP;
            let mut t = TopK::default();
            for v in &vals { t.add(&v.to_string(), k, 1); }
            let n = vals.len() as u64;
            let mut exact = std::collections::HashMap::new();
            for v in &vals { *exact.entry(v.to_string()).or_insert(0u64) += 1; }
            for (v, c) in &exact {
                let got = t.iter().find(|(x, _)| x == v).map(|x| x.1);
                if *c > n / k as u64 { prop_assert!(got.is_some(), "{} with {} missing", v, c); }
                if let Some(g) = got { prop_assert!(g >= *c && g <= c + n / k as u64 + 1); }
            }
            prop_assert_eq!(t.iter().map(|x| x.1).sum::<u64>(), n);
        }

        /// The values in one string keep exactly what a list of owned values kept (the model is
        /// the list it replaced), whatever the lengths of the values replacing each other.
        #[test]
        fn topk_matches_a_list_of_owned_values(
            adds in prop::collection::vec(("[a-c]{0,3}|\\PC{0,40}", 1u64..4), 0..200),
            k in 1usize..=TopK::CAP,
        ) {
            let mut t = TopK::default();
            let mut model: Vec<(String, u64)> = Vec::new();
            for (v, by) in &adds {
                t.add(v, k, *by);
                if let Some(item) = model.iter_mut().find(|(x, _)| x == v) {
                    item.1 += by;
                } else if model.len() < k {
                    model.push((v.clone(), *by));
                } else if let Some(min) = model.iter_mut().min_by_key(|(_, c)| *c) {
                    *min = (v.clone(), min.1 + by);
                }
                let got: Vec<(String, u64)> = t.iter().map(|(v, c)| (v.to_string(), c)).collect();
                prop_assert_eq!(&got, &model);
            }
            let back: TopK = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(back, t);
        }

        /// Quantiles within the bucket's relative error of the exact order statistic.
        #[test]
        fn histogram_quantiles_close_to_exact(xs in prop::collection::vec(0.05f64..900_000.0, 1..500), q in 0.0f64..1.0) {
            let mut h = LogHistogram::default();
            for &x in &xs { h.add(x); }
            let mut s = xs.clone();
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let rank = ((q * s.len() as f64).ceil() as usize).max(1);
            let exact = s[rank - 1];
            let got = h.quantile(q).unwrap();
            prop_assert!((got / exact - 1.0).abs() <= 0.1, "q {} exact {} got {}", q, exact, got);
        }

        /// The sweep agrees with counting overlaps at every millisecond.
        #[test]
        fn peak_matches_brute_force(iv in prop::collection::vec((0i64..200, 1i64..80), 0..30)) {
            let intervals: Vec<(i64, i64)> = iv.iter().map(|&(s, d)| (s, s + d)).collect();
            let brute = (0..300).map(|t| intervals.iter().filter(|&&(s, e)| s <= t && t < e).count() as u32).max().unwrap_or(0);
            prop_assert_eq!(peak_overlap(&intervals, 0, 300), brute);
        }

        #[test]
        fn bounded_set_is_exact_below_cap(hs in prop::collection::vec(0u64..100, 0..200)) {
            let mut b = BoundedSet::default();
            for h in &hs { b.insert(*h, 40); }
            let exact: KeyedSet = hs.iter().copied().collect();
            prop_assert_eq!(b.len(), exact.len().min(40));
            prop_assert!(b.items.is_subset(&exact));
        }
    }
}
