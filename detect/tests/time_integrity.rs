//! Event time is evidence, not authority: records ahead of the wall clock never move time,
//! one source cannot drag a shard's watermark, and backfills of old data still work.

use trailwatch_core::finding::{Finding, Status};
use trailwatch_core::time::parse_rfc3339_millis;
use trailwatch_detect::engine::Engine;
use trailwatch_detect::event::{ApiCall, Event};
use trailwatch_detect::DetectConfig;

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn t0() -> i64 {
    parse_rfc3339_millis("2026-01-05T00:00:00Z").unwrap()
}

fn call(t: i64, name: &str, principal: &str, id: u64) -> Event<'static> {
    Event::Api(ApiCall {
        time: t,
        account: ACCT.into(),
        region: REGION.into(),
        source: "ec2.amazonaws.com".into(),
        name: name.to_string().into(),
        principal: principal.to_string().into(),
        principal_account: Some(ACCT.into()),
        source_ip: "10.0.0.1".into(),
        user_agent: "aws-sdk-go/1.44".into(),
        event_id: format!("ev-{id}").into(),
        ..Default::default()
    })
}

/// Six days of steady DescribeInstances calls, then a burst of 600 in four minutes on day 5:
/// one `api_call_rate` episode. Each event carries the source (delivered file) it came in: a
/// new one every five minutes, as CloudTrail delivers.
fn stream() -> Vec<(u64, Event<'static>)> {
    let mut v = vec![];
    let mut id = 0;
    for w in 0..6 * 288 {
        let t = t0() + w * 5 * MIN;
        let hour = (w % 288) / 12;
        let n = if (8..18).contains(&hour) { 8 } else { 4 };
        for i in 0..n {
            id += 1;
            v.push((w as u64 + 1, call(t + (i * 7_000) % (5 * MIN), "DescribeInstances", "role/app", id)));
        }
    }
    let burst = t0() + 5 * DAY + 3 * HOUR;
    for i in 0..600 {
        let t = burst + i * 400;
        v.push((
            100_000 + (t - t0()) as u64 / (5 * MIN) as u64,
            call(t, "DescribeInstances", "x", 10_000_000 + i as u64),
        ));
    }
    v
}

/// Feeds in event-time order, advancing every five minutes of event time; every finding.
fn run(engine: &mut Engine, cfg: &DetectConfig, mut events: Vec<(u64, Event<'static>)>) -> Vec<Finding> {
    events.sort_by_key(|(_, e)| e.time());
    let mut out = vec![];
    let mut last = i64::MIN / 2;
    for (src, e) in &events {
        if e.time() - last >= 5 * MIN {
            engine.advance(cfg);
            last = e.time();
        }
        engine.observe_from(cfg, e, *src);
    }
    engine.advance(cfg);
    out.extend(engine.take_findings(cfg));
    out
}

fn keys(fs: &[Finding]) -> Vec<(String, String, u8)> {
    let mut k: Vec<_> = fs.iter().map(|f| (f.kind.to_string(), f.id.clone(), f.status as u8)).collect();
    k.sort();
    k
}

#[test]
fn a_record_from_2099_moves_nothing_and_is_reported() {
    let cfg = DetectConfig::default();
    let now = t0() + 2 * HOUR;
    let mut e = Engine::default().with_now(now);
    let events: Vec<(u64, Event<'static>)> =
        (0..60).map(|m| (1 + m as u64 / 5, call(t0() + m * MIN, "DescribeInstances", "role/app", m as u64))).collect();
    run(&mut e, &cfg, events);
    let shard = e.shards.values().next().unwrap();
    let (wm, clock, confirmed) = (shard.watermark[0], e.clock(), e.confirmed);
    assert_eq!(wm, Some(t0() + 59 * MIN));

    let forged = parse_rfc3339_millis("2099-01-01T00:00:00Z").unwrap();
    let out = run(&mut e, &cfg, vec![(999, call(forged, "DeleteTrail", "role/intruder", 7_000_000))]);
    let shard = e.shards.values().next().unwrap();
    assert_eq!(shard.watermark[0], wm, "a future record moved the watermark");
    assert_eq!((e.clock(), e.confirmed), (clock, confirmed), "a future record moved the clock");
    assert_eq!(shard.counters.future, 1);
    assert_eq!(shard.counters.events, 60, "a future record reached the detectors");
    let skew: Vec<&Finding> = out.iter().filter(|f| f.kind == "event_time_skew").collect();
    assert_eq!(skew.len(), 1, "{out:#?}");
    let f = skew[0];
    assert_eq!((f.subject.as_str(), f.status, f.observed), ("cloudtrail", Status::Open, 1.0));
    assert_eq!(f.evidence, vec!["ev-7000000".to_string()]);
    assert!(f.top_contributors.iter().any(|c| c.value == "role/intruder"));
    assert!(f.summary.contains("2099-01-01T00:00:00"), "{}", f.summary);
    assert!(f.score > 600_000.0, "hours ahead: {}", f.score);

    // Within the allowed skew (CloudTrail's own clock a little ahead) is trusted.
    let out = run(&mut e, &cfg, vec![(3, call(now + 4 * MIN, "DescribeInstances", "role/app", 99))]);
    assert!(out.iter().all(|f| f.status != Status::Open || f.kind != "event_time_skew"));
    assert_eq!(e.shards.values().next().unwrap().counters.future, 1);

    // Real data an hour past the episode closes it, with one finding, same id.
    let later: Vec<(u64, Event<'static>)> = (0..30)
        .map(|m| {
            (10 + m as u64 / 5, call(now + 5 * MIN + m * 3 * MIN, "DescribeInstances", "role/app", 500 + m as u64))
        })
        .collect();
    let mut e2 = e.clone();
    e2.now = Some(now + 3 * HOUR);
    let out = run(&mut e2, &cfg, later);
    let closed: Vec<&Finding> = out.iter().filter(|x| x.kind == "event_time_skew").collect();
    assert_eq!(closed.len(), 1, "{out:#?}");
    assert_eq!((closed[0].id.as_str(), closed[0].status), (f.id.as_str(), Status::Closed));
}

#[test]
fn one_source_cannot_drag_a_shard_watermark() {
    let cfg = DetectConfig::default();
    let lead = cfg.time.max_source_lead_minutes as i64 * MIN;
    // A backfill: the wall clock is months ahead of the data, so nothing here is "future".
    let mut e = Engine::default().with_now(t0() + 300 * DAY);
    let real: Vec<(u64, Event<'static>)> =
        (0..120).map(|m| (1 + m as u64 / 5, call(t0() + m * MIN, "DescribeInstances", "role/app", m as u64))).collect();
    run(&mut e, &cfg, real);
    let t = t0() + 119 * MIN;
    assert_eq!(e.shards.values().next().unwrap().watermark[0], Some(t));

    // One delivered file whose records claim a day later.
    let forged: Vec<(u64, Event<'static>)> =
        (0..500).map(|i| (777, call(t + DAY + i, "DescribeInstances", "role/app", 90_000 + i as u64))).collect();
    run(&mut e, &cfg, forged);
    let wm = e.shards.values().next().unwrap().watermark[0].unwrap();
    assert!(wm <= t + lead, "one source dragged the watermark {} min ahead", (wm - t) / MIN);
    assert!(e.clock().unwrap() <= t + lead);

    // Real data keeps flowing and keeps counting: nothing of it is judged too late.
    let late_before = e.shards.values().next().unwrap().counters.too_late;
    let more: Vec<(u64, Event<'static>)> = (120..180)
        .map(|m| (1 + m as u64 / 5, call(t0() + m * MIN, "DescribeInstances", "role/app", m as u64)))
        .collect();
    run(&mut e, &cfg, more);
    let s = e.shards.values().next().unwrap();
    assert_eq!(s.counters.too_late, late_before, "real records became late after a forged file");
    assert!(s.watermark[0].unwrap() <= t0() + 179 * MIN + lead);
}

#[test]
fn two_sources_agreeing_move_time_as_before() {
    // Without a wall clock and with one source, the watermark follows the newest event.
    let cfg = DetectConfig::default();
    let mut e = Engine::default();
    run(&mut e, &cfg, vec![(0, call(t0(), "A", "p", 1)), (0, call(t0() + DAY, "A", "p", 2))]);
    assert_eq!(e.shards.values().next().unwrap().watermark[0], Some(t0() + DAY));
    assert_eq!(e.confirmed, None);
    assert_eq!(e.clock(), Some(t0() + DAY));
    // A second source confirms: the clock is what both reached.
    run(&mut e, &cfg, vec![(5, call(t0() + DAY - HOUR, "A", "p", 3))]);
    assert_eq!(e.confirmed, Some(t0() + DAY - HOUR));
}

/// The stream in daily runs (one run per day of deliveries), plus `extra(day)` delivered with
/// each day.
fn daily(engine: &mut Engine, cfg: &DetectConfig, extra: impl Fn(i64) -> Vec<(u64, Event<'static>)>) -> Vec<Finding> {
    let all = stream();
    let mut out = vec![];
    for d in 0..6 {
        let mut batch: Vec<(u64, Event<'static>)> =
            all.iter().filter(|(_, e)| (e.time() - t0()) / DAY == d).cloned().collect();
        batch.extend(extra(d));
        out.extend(run(engine, cfg, batch));
    }
    out
}

#[test]
fn forged_records_mixed_into_a_backfill_change_no_finding() {
    let cfg = DetectConfig::default();
    let now = t0() + 30 * DAY;
    let mut plain = Engine::default().with_now(now);
    let expected = daily(&mut plain, &cfg, |_| vec![]);
    assert!(expected.iter().any(|f| f.kind == "api_call_rate"), "{expected:#?}");

    let far = parse_rfc3339_millis("2099-06-01T12:00:00Z").unwrap();
    let forged = |d: i64| {
        let mut v = vec![];
        // A file claiming 2099, and one claiming tomorrow 11:00, delivered every day.
        for i in 0..50 {
            v.push((
                600_000 + d as u64,
                call(far + i * 1000, "StopLogging", "role/intruder", 60_000_000 + (d * 100 + i) as u64),
            ));
        }
        for i in 0..3 {
            let at = t0() + (d + 1) * DAY + 11 * HOUR + i * 1000;
            v.push((500_000 + d as u64, call(at, "DescribeInstances", "role/app", 50_000_000 + (d * 100 + i) as u64)));
        }
        v
    };
    let mut e = Engine::default().with_now(now);
    let got = daily(&mut e, &cfg, forged);
    let without_skew: Vec<Finding> = got.iter().filter(|f| f.kind != "event_time_skew").cloned().collect();
    assert_eq!(keys(&without_skew), keys(&expected));
    assert!(got.iter().any(|f| f.kind == "event_time_skew" && f.status == Status::Open));
    let s = e.shards.values().next().unwrap();
    assert_eq!(s.counters.future, 300);
    assert_eq!(s.counters.too_late, plain.shards.values().next().unwrap().counters.too_late);

    // The same, without the guard: one source dragging time a day ahead makes real data late.
    let mut loose_cfg = cfg.clone();
    loose_cfg.time.max_source_lead_minutes = 100_000;
    let mut loose = Engine::default().with_now(now);
    daily(&mut loose, &loose_cfg, forged);
    assert!(
        loose.shards.values().next().unwrap().counters.too_late > s.counters.too_late + 1000,
        "the test data does not exercise the guard"
    );
}
