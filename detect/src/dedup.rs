//! Duplicate event ids, remembered in buckets of event time so memory stays bounded, and their
//! compact serialised form.

use crate::stats::KeyedSet;

use serde::{Deserialize, Serialize};
use trailwatch_core::time::EpochMillis;

use crate::window::{window_start, MINUTE};

/// Event ids seen recently, in 10-minute buckets of event time: duplicates (CloudTrail delivers
/// some records twice; org and account trails overlap) are dropped, and memory stays bounded
/// by pruning buckets older than the lateness allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dedup {
    #[serde(with = "u64_buckets")]
    pub buckets: Vec<(EpochMillis, KeyedSet)>,
}

const DEDUP_BUCKET: i64 = 10 * MINUTE;

impl Dedup {
    /// Records `h` at `t`; true when it was seen before.
    pub fn seen(&mut self, t: EpochMillis, h: u64) -> bool {
        let b = window_start(t, DEDUP_BUCKET);
        // Events come in time order, so nearly all fall in the newest bucket.
        if let Some((s, set)) = self.buckets.last_mut() {
            if *s == b {
                return !set.insert(h);
            }
        }
        let i = match self.buckets.binary_search_by_key(&b, |(s, _)| *s) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(i, (b, KeyedSet::default()));
                i
            }
        };
        !self.buckets[i].1.insert(h)
    }

    pub fn prune(&mut self, before: EpochMillis) {
        self.buckets.retain(|(s, _)| s + DEDUP_BUCKET > before);
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serde for dedup buckets: each set of u64 ids as base64 of its sorted little-endian bytes,
/// about a third the size of a JSON array of numbers.
pub mod u64_buckets {
    use super::*;
    use base64::Engine as _;
    use serde::{Deserialize, Serialize};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

    pub fn serialize<S: serde::Serializer>(v: &[(EpochMillis, KeyedSet)], s: S) -> Result<S::Ok, S::Error> {
        let out: Vec<(EpochMillis, String)> = v
            .iter()
            .map(|(t, set)| {
                let mut ids: Vec<u64> = set.iter().copied().collect();
                ids.sort_unstable();
                let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
                (*t, B64.encode(bytes))
            })
            .collect();
        out.serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(EpochMillis, KeyedSet)>, D::Error> {
        let raw: Vec<(EpochMillis, String)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(t, s)| {
                let bytes = B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)?;
                if bytes.len() % 8 != 0 {
                    return Err(serde::de::Error::custom("dedup bucket is not a whole number of ids"));
                }
                let set = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
                Ok((t, set))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// An id is a duplicate when its bucket already holds it, whatever order times come in
        /// (the newest bucket is tried first).
        #[test]
        fn duplicates_are_ids_seen_in_the_same_bucket(seq in proptest::collection::vec((0i64..60, 0u64..8), 0..300)) {
            let mut d = Dedup::default();
            let mut model = std::collections::HashSet::new();
            for &(m, h) in &seq {
                let t = m * MINUTE;
                proptest::prop_assert_eq!(d.seen(t, h), !model.insert((window_start(t, DEDUP_BUCKET), h)));
            }
            proptest::prop_assert!(d.buckets.windows(2).all(|w| w[0].0 < w[1].0), "buckets stay sorted");
        }
    }
}
