//! Sigma correlation rules (`event_count`, `value_count`, `temporal`, `temporal_ordered`) over
//! event-time windows: the rules they refer to mark records as they are read; the shard keeps
//! each group's recent marks (bounded) and checks every `timespan` window that holds a new one,
//! so a late record counts in the window it belongs to, not in the one it arrived in.

use serde_norway::Value as Yaml;
use trailwatch_core::finding::{RuleInfo, Severity};

/// Records a correlation group keeps (the newest), so no group grows without limit.
pub const MAX_COUNT: u64 = 1000;

/// What a correlation counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrKind {
    /// Matching records.
    EventCount,
    /// Distinct values of a field (its slot) among them.
    ValueCount(usize),
    /// Every referenced rule matched, in any order.
    Temporal,
    /// Every referenced rule matched, in the order listed.
    TemporalOrdered,
}

/// A loaded correlation rule.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub info: RuleInfo,
    pub severity: Severity,
    pub kind: CorrKind,
    /// The rules it refers to, by `name` or `id`, as written.
    pub refs: Vec<String>,
    /// Those rules' indices in the rule set, in the order written (once resolved). Marks name a
    /// rule by its place in this list.
    pub rules: Vec<usize>,
    /// Fields whose values split matches into groups (slots).
    pub group_by: Vec<usize>,
    /// The window, in ms.
    pub span: i64,
    /// The count (of records or values) a window needs: `gte: n` is n, `gt: n` is n + 1.
    pub min: u64,
    /// Whether the referenced rules still report their own matches.
    pub generate: bool,
}

/// One marked record of a group, as the shard keeps it.
pub trait Mark {
    fn time(&self) -> i64;
    fn rule(&self) -> u32;
    fn value(&self) -> u64;
}

impl Correlation {
    /// The first window of `span` that holds the mark at `at` (`marks` sorted by time) and meets
    /// the condition: the range of marks in it.
    pub fn fires<M: Mark>(&self, marks: &[M], at: usize) -> Option<std::ops::Range<usize>> {
        let t = marks[at].time();
        let lo = marks.partition_point(|m| m.time() < t - self.span);
        for s in lo..=at {
            let end = marks.partition_point(|m| m.time() <= marks[s].time() + self.span);
            if end <= at {
                continue;
            }
            if self.holds(&marks[s..end]) {
                return Some(s..end);
            }
        }
        None
    }

    fn holds<M: Mark>(&self, w: &[M]) -> bool {
        match self.kind {
            CorrKind::EventCount => w.len() as u64 >= self.min,
            CorrKind::ValueCount(_) => {
                let mut v: Vec<u64> = w.iter().map(Mark::value).collect();
                v.sort_unstable();
                v.dedup();
                v.len() as u64 >= self.min
            }
            CorrKind::Temporal => (0..self.rules.len()).all(|r| w.iter().any(|m| m.rule() == r as u32)),
            CorrKind::TemporalOrdered => {
                let mut next = 0;
                for m in w {
                    if next < self.rules.len() && m.rule() == next as u32 {
                        next += 1;
                    }
                }
                next == self.rules.len()
            }
        }
    }
}

/// The longest window a correlation may ask for: its marks are kept that long.
pub const MAX_SPAN: i64 = 7 * 86_400_000;

/// `30s`, `10m`, `1h`, `2d` in ms, at most [`MAX_SPAN`].
pub fn parse_span(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("timespan {s:?} is not a number followed by s, m, h or d, of at most 7 days");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(ms) {
        Some(v) if n > 0 && v <= MAX_SPAN => Ok(v),
        _ => Err(bad()),
    }
}

/// The parts of a `correlation:` block, before its rules are resolved. `slot` interns fields.
pub fn compile(
    c: &Yaml,
    info: RuleInfo,
    severity: Severity,
    slot: &mut dyn FnMut(&str) -> usize,
) -> Result<Correlation, String> {
    let text = |v: Option<&Yaml>| v.and_then(Yaml::as_str).map(str::to_string);
    let ty = text(c.get("type")).ok_or("correlation: no type")?;
    let refs: Vec<String> = match c.get("rules") {
        Some(Yaml::Sequence(v)) => v.iter().filter_map(|r| text(Some(r))).collect(),
        Some(v) => text(Some(v)).into_iter().collect(),
        None => vec![],
    };
    if refs.is_empty() {
        return Err("correlation: no rules".into());
    }
    let group_by: Vec<usize> = match c.get("group-by") {
        Some(Yaml::Sequence(v)) => v.iter().filter_map(|f| f.as_str()).map(&mut *slot).collect(),
        Some(v) => v.as_str().map(&mut *slot).into_iter().collect(),
        None => vec![],
    };
    if c.get("aliases").is_some() {
        return Err("correlation: aliases are not supported (CloudTrail rules share field names)".into());
    }
    let span = parse_span(&text(c.get("timespan")).ok_or("correlation: no timespan")?)?;
    let generate = c.get("generate").and_then(Yaml::as_bool).unwrap_or(false);
    let cond = c.get("condition");
    let num = |k: &str| cond.and_then(|c| c.get(k)).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let min = match (num("gte"), num("gt")) {
        (Some(n), _) => n,
        (None, Some(n)) => n.checked_add(1).ok_or("correlation: condition gt is too large")?,
        _ if matches!(ty.as_str(), "temporal" | "temporal_ordered") => 0,
        _ => {
            return Err("correlation: condition needs gte or gt (a stream can only say when a count is reached)".into())
        }
    };
    let kind = match ty.as_str() {
        "event_count" => CorrKind::EventCount,
        "value_count" => {
            let field = cond
                .and_then(|c| c.get("field"))
                .and_then(Yaml::as_str)
                .ok_or("correlation: value_count needs condition.field")?;
            CorrKind::ValueCount(slot(field))
        }
        "temporal" => CorrKind::Temporal,
        "temporal_ordered" => CorrKind::TemporalOrdered,
        other => return Err(format!("correlation: type {other:?} is not supported")),
    };
    if min > MAX_COUNT {
        return Err(format!(
            "correlation: a condition above {MAX_COUNT} cannot be met (a group keeps its last {MAX_COUNT} records)"
        ));
    }
    Ok(Correlation { info, severity, kind, refs, rules: vec![], group_by, span, min, generate })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct M(i64, u32, u64);
    impl Mark for M {
        fn time(&self) -> i64 {
            self.0
        }
        fn rule(&self) -> u32 {
            self.1
        }
        fn value(&self) -> u64 {
            self.2
        }
    }

    fn corr(kind: CorrKind, min: u64, rules: Vec<usize>) -> Correlation {
        Correlation {
            info: RuleInfo::default(),
            severity: Severity::High,
            kind,
            refs: vec![],
            rules,
            group_by: vec![],
            span: 10,
            min,
            generate: false,
        }
    }

    #[test]
    fn windows_hold_the_new_mark_and_meet_the_condition() {
        let c = corr(CorrKind::EventCount, 3, vec![0]);
        let m = [M(0, 0, 1), M(5, 0, 2), M(20, 0, 3), M(25, 0, 4), M(29, 0, 5)];
        assert_eq!(c.fires(&m, 1), None, "two within 10");
        assert_eq!(c.fires(&m, 4), Some(2..5));
        // A late mark between others completes the window it belongs to.
        let m = [M(0, 0, 1), M(4, 0, 2), M(9, 0, 3)];
        assert_eq!(c.fires(&m, 1), Some(0..3));
        let v = corr(CorrKind::ValueCount(0), 2, vec![0]);
        assert_eq!(v.fires(&[M(0, 0, 7), M(1, 0, 7)], 1), None, "one distinct value");
        assert_eq!(v.fires(&[M(0, 0, 7), M(1, 0, 8)], 1), Some(0..2));
        // Marks name rules by their place in the correlation's list.
        let t = corr(CorrKind::Temporal, 0, vec![7, 9]);
        assert_eq!(t.fires(&[M(0, 1, 0), M(3, 0, 0)], 1), Some(0..2));
        assert_eq!(t.fires(&[M(0, 1, 0), M(3, 1, 0)], 1), None, "one rule twice");
        let o = corr(CorrKind::TemporalOrdered, 0, vec![7, 9]);
        assert_eq!(o.fires(&[M(0, 1, 0), M(3, 0, 0)], 1), None, "wrong order");
        assert_eq!(o.fires(&[M(0, 0, 0), M(3, 1, 0)], 1), Some(0..2));
        assert_eq!(t.fires(&[M(0, 1, 0), M(30, 0, 0)], 1), None, "too far apart");
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("10m"), Ok(600_000));
        assert_eq!(parse_span("2d"), Ok(172_800_000));
        assert!(parse_span("5").is_err() && parse_span("m").is_err() && parse_span("0h").is_err());
        assert!(parse_span("10é").is_err() && parse_span("é").is_err() && parse_span("").is_err());
        assert!(parse_span("9223372036854775s").is_err() && parse_span("8d").is_err());
    }
}
