//! Events per second through every detector on one core, and the state size of one shard after
//! a million distinct principals. Run by hand: `cargo bench -p trailwatch-detect`; the figures
//! go in the README. Events are built up front: this measures the detectors, not Parquet.

use std::time::Instant;

use trailwatch_detect::engine::Engine;
use trailwatch_detect::event::{ApiCall, Event, Invocation, InvocationStatus};
use trailwatch_detect::state::encode_shard;
use trailwatch_detect::DetectConfig;

const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z

/// A realistic mix: 80% CloudTrail calls over 40 APIs, 60 principals and 200 IPs, some
/// errors and Lambda Invoke data events; 20% Lambda invocations of 8 functions. `per_sec`
/// events a second of event time, across 4 account-regions.
fn events(n: usize, per_sec: usize) -> Vec<Event<'static>> {
    let apis: Vec<(String, String)> = (0..40)
        .map(|i| (["ec2", "s3", "iam", "sts", "lambda"][i % 5].to_string() + ".amazonaws.com", format!("Api{i}")))
        .collect();
    let accounts = ["111122223333", "444455556666"];
    let regions = ["eu-west-1", "us-east-1"];
    (0..n)
        .map(|i| {
            let t = T0 + (i / per_sec) as i64 * 1000 + (i % per_sec) as i64 * 1000 / per_sec as i64;
            let account = accounts[i % 2].to_string();
            let region = regions[(i / 2) % 2].to_string();
            if i % 5 == 4 {
                let d = 50.0 + (i % 400) as f64;
                return Event::Invocation(Invocation {
                    start: t - d as i64,
                    end: t,
                    account: account.into(),
                    region: region.into(),
                    function: format!("fn-{}", i % 8).into(),
                    duration_ms: d,
                    billed_ms: d.ceil(),
                    memory_mb: 512.0,
                    status: if i % 997 == 0 { InvocationStatus::Timeout } else { InvocationStatus::Success },
                    timeout_s: Some(3.0),
                    log_event_id: format!("{i:056}").into(),
                    request_id: None,
                    error_type: None,
                });
            }
            let (source, name) = &apis[i % 40];
            let invoke = i % 40 == 9;
            Event::Api(ApiCall {
                time: t,
                account: account.into(),
                region: region.into(),
                source: if invoke { "lambda.amazonaws.com".into() } else { source.clone().into() },
                name: if invoke { "Invoke".into() } else { name.clone().into() },
                error_code: (i % 50 == 0).then(|| "AccessDenied".into()),
                error_message: None,
                principal: format!("arn:aws:iam::111122223333:role/app-{}", i % 60).into(),
                principal_account: Some("111122223333".into()),
                source_ip: format!("10.0.{}.{}", i % 200 / 100, i % 100).into(),
                user_agent: "aws-sdk-go-v2/1.21.0".into(),
                event_id: format!("e{i:x}").into(),
                function: invoke.then(|| format!("fn-{}", i % 8).into()),
                function_timeout_s: None,
                reserved_concurrency: None,
                rules: vec![],
                correlated: vec![],
            })
        })
        .collect()
}

fn throughput() {
    let cfg = DetectConfig::default();
    let n = 2_000_000;
    let ev = events(n, 200);
    let mut e = Engine::default();
    let start = Instant::now();
    for (i, x) in ev.iter().enumerate() {
        e.observe(&cfg, x);
        if i % 50_000 == 49_999 {
            e.advance(&cfg);
        }
    }
    e.advance(&cfg);
    let secs = start.elapsed().as_secs_f64();
    let findings = e.take_findings(&cfg).len();
    let days = (ev[n - 1].time() - ev[0].time()) as f64 / 86_400_000.0;
    println!(
        "detectors: {n} events ({days:.2} days of event time, 4 shards) in {secs:.2} s = {:.0} events/s on one core; {findings} findings",
        n as f64 / secs
    );
}

fn state_size() {
    let cfg = DetectConfig::default();
    let mut e = Engine::default();
    let n = 1_000_000u64;
    let start = Instant::now();
    for i in 0..n {
        e.observe(
            &cfg,
            &Event::Api(ApiCall {
                time: T0 + i as i64 * 10,
                account: "111122223333".into(),
                region: "eu-west-1".into(),
                source: "sts.amazonaws.com".into(),
                name: "GetCallerIdentity".into(),
                principal: format!("arn:aws:iam::111122223333:user/sprayed-{i}").into(),
                principal_account: Some("111122223333".into()),
                source_ip: format!("198.51.{}.{}", i / 256 % 256, i % 256).into(),
                user_agent: "curl/8".into(),
                event_id: format!("spray-{i}").into(),
                ..Default::default()
            }),
        );
    }
    e.advance(&cfg);
    let s = e.shards.values().next().expect("one shard");
    let bytes = encode_shard(s).expect("encodes").len();
    println!(
        "state: 1,000,000 distinct principals in {:.2} s -> {} tracked (cap), {} untracked; shard state {:.1} MB (zstd JSON), dedup ids held {}",
        start.elapsed().as_secs_f64(),
        s.principals.len(),
        s.principals.untracked,
        bytes as f64 / 1e6,
        s.dedup.len()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects speed.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        println!("run with `cargo bench -p trailwatch-detect` for figures");
        return;
    }
    throughput();
    state_size();
}
