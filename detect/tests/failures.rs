//! The failure-mode detectors (`retry_storm`, `event_loss`, `noisy_neighbour`) against streams
//! they must fire on, and the look-alikes they must not: a single retried request, a load burst
//! on a stream, a function throttled by its own reserved concurrency.

use trailwatch_core::finding::{Finding, Severity, Status};
use trailwatch_core::time::parse_rfc3339_millis;
use trailwatch_detect::engine::{Engine, Shard};
use trailwatch_detect::event::{ApiCall, Event, Invocation, InvocationStatus, MetricPoint};
use trailwatch_detect::state::{decode_shard, encode_shard};
use trailwatch_detect::DetectConfig;

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn t0() -> i64 {
    parse_rfc3339_millis("2026-01-05T00:00:00Z").unwrap()
}

fn inv(end: i64, function: &str, status: InvocationStatus, request: &str, n: u64) -> Event<'static> {
    Event::Invocation(Invocation {
        start: end - 800,
        end,
        account: ACCT.into(),
        region: REGION.into(),
        function: function.to_string().into(),
        duration_ms: 800.0,
        billed_ms: 800.0,
        memory_mb: 512.0,
        status,
        timeout_s: None,
        log_event_id: format!("le-{function}-{n}").into(),
        request_id: Some(request.to_string().into()),
        error_type: (status != InvocationStatus::Success).then(|| "Runtime.ExitError".into()),
    })
}

fn metric(t: i64, name: &str, function: &str, sum: f64, max: f64) -> Event<'static> {
    Event::Metric(MetricPoint {
        time: t,
        account: ACCT.into(),
        region: REGION.into(),
        metric: name.to_string().into(),
        function: function.to_string().into(),
        sum,
        max,
    })
}

fn invoke(t: i64, function: &str, error: Option<(&str, &str)>, n: u64) -> Event<'static> {
    Event::Api(ApiCall {
        time: t,
        account: ACCT.into(),
        region: REGION.into(),
        source: "lambda.amazonaws.com".into(),
        name: "Invoke".into(),
        error_code: error.map(|e| e.0.to_string().into()),
        error_message: error.map(|e| e.1.to_string().into()),
        principal: format!("arn:aws:iam::{ACCT}:role/api").into(),
        principal_account: Some(ACCT.into()),
        source_ip: "10.0.0.1".into(),
        user_agent: "aws-sdk-go-v2".into(),
        event_id: format!("ev-{function}-{n}").into(),
        function: Some(function.to_string().into()),
        ..Default::default()
    })
}

/// Feeds events in time order, advancing every five minutes of event time, as runs over 5-minute
/// deliveries do; optionally saving and restoring the state at each advance.
struct Sim {
    cfg: DetectConfig,
    engine: Engine,
    out: Vec<Finding>,
    restore: bool,
}

impl Sim {
    fn new() -> Self {
        Sim { cfg: DetectConfig::default(), engine: Engine::default(), out: vec![], restore: false }
    }

    fn feed(&mut self, mut events: Vec<Event<'static>>) {
        events.sort_by_key(Event::time);
        let mut last = i64::MIN / 2;
        for e in &events {
            if e.time() - last >= 5 * MIN {
                self.engine.advance(&self.cfg);
                if self.restore {
                    self.out.extend(self.engine.take_findings(&self.cfg));
                    let shards: Vec<Shard> =
                        self.engine.shards.values().map(|s| decode_shard(&encode_shard(s).unwrap()).unwrap()).collect();
                    let confirmed = self.engine.confirmed;
                    self.engine = Engine::new(shards, confirmed);
                }
                last = e.time();
            }
            self.engine.observe(&self.cfg, e);
        }
        self.engine.advance(&self.cfg);
        self.out.extend(self.engine.take_findings(&self.cfg));
    }

    fn of(&self, kind: &str) -> Vec<&Finding> {
        self.out.iter().filter(|f| f.kind == kind).collect()
    }
}

/// `days` of an asynchronously invoked function: one successful invocation a minute.
fn async_traffic(function: &str, from: i64, days: i64) -> Vec<Event<'static>> {
    (0..days * 1440)
        .map(|m| {
            let n = (from / MIN + m) as u64;
            inv(from + m * MIN + 20_000, function, InvocationStatus::Success, &format!("ok-{n}"), n)
        })
        .collect()
}

#[test]
fn a_bad_deploy_retried_by_lambda_is_a_retry_storm_and_a_single_retry_is_not() {
    let f = "invoice-mailer";
    let mut ev = async_traffic(f, t0(), 6);
    // Once a day a request fails and succeeds on its retry a minute later: normal.
    for d in 1..6 {
        let t = t0() + d * DAY + 9 * 3_600_000 + 30_000;
        ev.push(inv(t, f, InvocationStatus::Error, &format!("once-{d}"), 900_000 + d as u64));
        ev.push(inv(t + MIN, f, InvocationStatus::Success, &format!("once-{d}"), 910_000 + d as u64));
    }
    // Day 5, 14:00: every invocation fails for 30 minutes; Lambda retries each twice, after about
    // one and then two more minutes, under the same request id.
    let bad = t0() + 5 * DAY + 14 * 3_600_000;
    for i in 0..90 {
        let t = bad + i * 20_000;
        let rid = format!("bad-{i}");
        for (k, dt) in [(0, 0), (1, 61_000), (2, 183_000)] {
            ev.push(inv(t + dt, f, InvocationStatus::Error, &rid, 1_000_000 + i as u64 * 3 + k));
        }
    }
    let mut sim = Sim::new();
    sim.restore = true;
    sim.feed(ev);
    let storms = sim.of("retry_storm");
    let open: Vec<_> = storms.iter().filter(|x| x.status == Status::Open).collect();
    assert_eq!(open.len(), 1, "{storms:#?}");
    let s = open[0];
    assert_eq!(s.subject, f);
    assert!(s.start >= bad && s.start < bad + 10 * MIN, "{}", s.start);
    assert!(s.summary.contains("retried"), "{}", s.summary);
    assert!(s.evidence.iter().all(|e| e.starts_with("bad-")), "{:?}", s.evidence);
    assert!(s.top_contributors.iter().any(|c| c.value == "Runtime.ExitError"), "{:?}", s.top_contributors);
}

#[test]
fn retries_pair_up_across_saved_state_and_days() {
    // The first attempt fails just before midnight; its retries come after the state was saved
    // and restored, on the next day, in later files.
    let f = "invoice-mailer";
    let mut ev = async_traffic(f, t0(), 4);
    let late = t0() + 4 * DAY - 2 * MIN;
    for i in 0..20 {
        ev.push(inv(late + i * 1000, f, InvocationStatus::Error, &format!("r-{i}"), 2_000_000 + i as u64));
    }
    let mut sim = Sim::new();
    sim.restore = true;
    sim.feed(ev);
    let mut retries = vec![];
    for i in 0..20 {
        for k in 1..=2 {
            retries.push(inv(
                late + i * 1000 + k * 3 * MIN,
                f,
                InvocationStatus::Timeout,
                &format!("r-{i}"),
                3_000_000 + i as u64 * 2 + k as u64,
            ));
        }
    }
    retries.extend(async_traffic(f, t0() + 4 * DAY, 1));
    sim.feed(retries);
    let open: Vec<_> = sim.of("retry_storm").into_iter().filter(|x| x.status == Status::Open).collect();
    assert_eq!(open.len(), 1, "{:#?}", sim.out);
    assert!(open[0].summary.contains("40 time(s)"), "{}", open[0].summary);
}

/// A Kinesis consumer: an invocation every 10 s, and its IteratorAge each minute.
fn stream_traffic(
    function: &str,
    days: i64,
    age: impl Fn(i64) -> f64,
    fails: impl Fn(i64) -> bool,
) -> Vec<Event<'static>> {
    let mut ev = vec![];
    for m in 0..days * 1440 {
        let t = t0() + m * MIN;
        let bad = fails(t);
        for k in 0..6 {
            let n = (m * 6 + k) as u64;
            let status = if bad { InvocationStatus::Error } else { InvocationStatus::Success };
            ev.push(inv(t + k * 10_000 + 5_000, function, status, &format!("s-{n}"), n));
        }
        ev.push(metric(t, "IteratorAge", function, 0.0, age(t)));
        if bad {
            ev.push(metric(t, "Errors", function, 6.0, 1.0));
        }
    }
    ev
}

#[test]
fn a_poison_record_blocks_a_stream_and_a_load_burst_does_not() {
    let f = "ledger-stream-consumer";
    let poison = t0() + 4 * DAY + 10 * 3_600_000;
    let burst = t0() + 3 * DAY + 8 * 3_600_000;
    let age = move |t: i64| {
        if (poison..poison + 40 * MIN).contains(&t) {
            (t - poison) as f64 + 500.0
        } else if (burst..burst + 20 * MIN).contains(&t) {
            // Behind for 20 minutes under load, catching up without a failure.
            (t - burst) as f64 * 0.8 + 500.0
        } else {
            500.0
        }
    };
    let ev = stream_traffic(f, 5, age, move |t| (poison..poison + 40 * MIN).contains(&t));
    let mut sim = Sim::new();
    sim.feed(ev);
    let storms = sim.of("retry_storm");
    let open: Vec<_> = storms.iter().filter(|x| x.status == Status::Open).collect();
    assert_eq!(open.len(), 1, "{storms:#?}");
    let s = open[0];
    assert_eq!((s.subject.as_str(), s.severity), (f, Severity::High));
    assert!(s.start >= poison && s.start <= poison + MIN, "starts when the failures began: {}", s.start);
    assert!(s.summary.contains("IteratorAge") && s.summary.contains("blocks its shard"), "{}", s.summary);
    assert!(storms.iter().any(|x| x.status == Status::Closed), "the episode ends when the stream drains");
}

#[test]
fn lost_events_are_one_episode_per_function_not_one_alert_per_datapoint() {
    let f = "webhook-fanout";
    let mut ev = async_traffic(f, t0(), 3);
    let t = t0() + 2 * DAY + 6 * 3_600_000;
    for m in 0..1440 * 3 {
        // Events wait seconds on a normal day.
        ev.push(metric(t0() + m * MIN, "AsyncEventAge", f, 0.0, 2_000.0));
    }
    for m in 0..15 {
        ev.push(metric(t + m * MIN, "AsyncEventsDropped", f, 3.0, 3.0));
        ev.push(metric(t + m * MIN, "DeadLetterErrors", f, 1.0, 1.0));
    }
    let mut sim = Sim::new();
    sim.feed(ev);
    let loss = sim.of("event_loss");
    let open: Vec<_> = loss.iter().filter(|x| x.status == Status::Open).collect();
    assert_eq!(open.len(), 1, "{loss:#?}");
    assert_eq!(open[0].severity, Severity::High);
    let closed: Vec<_> = loss.iter().filter(|x| x.status == Status::Closed).collect();
    assert_eq!(closed.len(), 1, "{loss:#?}");
    assert_eq!(closed[0].observed, 60.0, "45 dropped and 15 refused by the DLQ");
    assert!(closed[0].summary.contains("45 asynchronous event(s) were dropped"), "{}", closed[0].summary);
    assert!(closed[0].summary.contains("dead-letter queue"), "{}", closed[0].summary);

    // Nothing dropped yet, but the oldest event has waited 4 of its 6 hours.
    let mut sim = Sim::new();
    let mut ev = async_traffic(f, t0(), 1);
    ev.push(metric(t0() + 12 * 3_600_000, "AsyncEventAge", f, 0.0, 4.0 * 3_600_000.0));
    sim.feed(ev);
    let loss = sim.of("event_loss");
    assert_eq!(loss.len(), 1, "{loss:#?}");
    assert_eq!(loss[0].severity, Severity::Medium);
    assert!(loss[0].summary.contains("4.0 h of the 6.0 h"), "{}", loss[0].summary);
}

#[test]
fn a_flood_that_starves_its_neighbours_names_the_culprit_and_the_victims() {
    let (culprit, victims, reserved) = ("bulk-import", ["checkout-api", "search-api"], "nightly-compactor");
    let mut ev = vec![];
    let mut n = 0u64;
    let mut id = || {
        n += 1;
        n
    };
    // nightly-compactor has 5 reserved concurrency and is throttled a little every night.
    let mut put = invoke(t0() + MIN, reserved, None, 0);
    if let Event::Api(a) = &mut put {
        a.name = "PutFunctionConcurrency20171031".into();
        a.reserved_concurrency = Some(5.0);
    }
    ev.push(put);
    let flood = t0() + 4 * DAY + 15 * 3_600_000;
    for m in 0..5 * 1440 {
        let t = t0() + m * MIN;
        let flooding = (flood..flood + 20 * MIN).contains(&t);
        let nightly = (2 * 60..2 * 60 + 5).contains(&(m % 1440));
        ev.push(metric(t, "ConcurrentExecutions", "", 0.0, if flooding { 998.0 } else { 40.0 }));
        ev.push(metric(t, "ConcurrentExecutions", culprit, 0.0, if flooding { 990.0 } else { 1.0 }));
        for v in victims {
            let i = id();
            if flooding {
                ev.push(invoke(t + 1000, v, Some(("TooManyRequestsException", "Rate Exceeded.")), i));
                ev.push(metric(t, "Throttles", v, 4.0, 1.0));
            } else {
                ev.push(invoke(t + 1000, v, None, i));
                ev.push(inv(t + 2000, v, InvocationStatus::Success, &format!("{v}-{i}"), i));
            }
        }
        if nightly {
            let i = id();
            let msg = "Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded)";
            ev.push(invoke(t + 3000, reserved, Some(("TooManyRequestsException", msg)), i));
            ev.push(metric(t, "Throttles", reserved, 3.0, 1.0));
        }
        if flooding {
            ev.push(invoke(t + 4000, reserved, Some(("TooManyRequestsException", "Rate Exceeded.")), id()));
        }
    }
    let mut sim = Sim::new();
    sim.feed(ev);
    let nn = sim.of("noisy_neighbour");
    let open: Vec<_> = nn.iter().filter(|x| x.status == Status::Open).collect();
    assert_eq!(open.len(), 1, "one episode, and none on the nights its reserved limit throttles: {nn:#?}");
    let f = open[0];
    assert_eq!(f.subject, culprit);
    assert!(f.start >= flood && f.start < flood + 20 * MIN);
    for v in victims {
        assert!(f.summary.contains(v), "{}", f.summary);
        assert!(f.top_contributors.iter().any(|c| c.dimension == "throttled_by_pool" && c.value == v));
    }
    assert!(f.summary.contains("reserve concurrency for checkout-api, search-api"), "{}", f.summary);
    assert!(f.summary.contains("not the pool: nightly-compactor"), "{}", f.summary);
    assert!(f.summary.contains("ran 990 concurrent (usually 1)"), "{}", f.summary);
    // Its throttled Invoke calls are the evidence.
    assert!(f.evidence.iter().all(|e| e.starts_with("ev-")) && !f.evidence.is_empty());
}
