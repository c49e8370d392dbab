//! Sigma rules next to the detectors, in memory, on one core: records a second through the rule
//! set alone (the community CloudTrail rules, then with trailwatch's pack), and from lake batches
//! to events to every detector with and without them. Run by hand:
//! `cargo bench -p trailwatch-detect --bench rules`; the figures go in the README.
//!
//! The batches have the lake's CloudTrail columns that detect and the rules read, built here
//! (the stage crates do not depend on ingest), with a realistic mix of APIs and assumed roles.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray, StructArray, TimestampMillisecondArray};
use arrow_schema::Field;
use trailwatch_detect::config::Rules;
use trailwatch_detect::engine::Engine;
use trailwatch_detect::event::Table;
use trailwatch_detect::read::Decoded;
use trailwatch_detect::sigma::{RuleSet, RulesConfig};
use trailwatch_detect::DetectConfig;

const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z

/// The APIs of an ordinary organisation's trail (reads dominate), a few that rules look for.
const APIS: &[(&str, &str)] = &[
    ("s3", "GetObject"),
    ("s3", "PutObject"),
    ("s3", "ListBuckets"),
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeSecurityGroups"),
    ("ec2", "CreateTags"),
    ("sts", "AssumeRole"),
    ("sts", "GetCallerIdentity"),
    ("iam", "GetRole"),
    ("iam", "ListRoles"),
    ("kms", "Decrypt"),
    ("kms", "GenerateDataKey"),
    ("dynamodb", "DescribeTable"),
    ("lambda", "GetFunction20150331v2"),
    ("lambda", "Invoke"),
    ("logs", "CreateLogStream"),
    ("secretsmanager", "GetSecretValue"),
    ("ssm", "GetParameters"),
    ("cloudtrail", "LookupEvents"),
    ("ec2", "AuthorizeSecurityGroupIngress"),
];

fn text(rows: std::ops::Range<usize>, f: impl Fn(usize) -> Option<String>) -> ArrayRef {
    Arc::new(rows.map(f).collect::<StringArray>())
}

fn structs(members: Vec<(&str, ArrayRef)>) -> StructArray {
    StructArray::from(
        members.into_iter().map(|(n, a)| (Arc::new(Field::new(n, a.data_type().clone(), true)), a)).collect::<Vec<_>>(),
    )
}

/// Rows `rows` of the trail: 5 ms apart, 60 assumed roles, 2% denied.
fn batch(rows: std::ops::Range<usize>) -> RecordBatch {
    let r = || rows.clone();
    let role = |i: usize| format!("app-{}", i % 60);
    let issuer = structs(vec![
        ("type", text(r(), |_| Some("Role".into()))),
        ("arn", text(r(), |i| Some(format!("arn:aws:iam::111122223333:role/{}", role(i))))),
        ("user_name", text(r(), |i| Some(role(i)))),
    ]);
    let session = structs(vec![("session_issuer", Arc::new(issuer))]);
    let identity = structs(vec![
        ("type", text(r(), |_| Some("AssumedRole".into()))),
        ("principal_id", text(r(), |i| Some(format!("AROAEXAMPLE:{}", role(i))))),
        ("arn", text(r(), |i| Some(format!("arn:aws:sts::111122223333:assumed-role/{}/session", role(i))))),
        ("account_id", text(r(), |_| Some("111122223333".into()))),
        ("invoked_by", text(r(), |_| None)),
        ("session_context", Arc::new(session)),
    ]);
    let time = TimestampMillisecondArray::from(r().map(|i| T0 + i as i64 * 5).collect::<Vec<_>>()).with_timezone("UTC");
    RecordBatch::try_from_iter(vec![
        ("event_time", Arc::new(time) as ArrayRef),
        ("event_source", text(r(), |i| Some(format!("{}.amazonaws.com", APIS[i % APIS.len()].0)))),
        ("event_name", text(r(), |i| Some(APIS[i % APIS.len()].1.to_string()))),
        ("error_code", text(r(), |i| i.is_multiple_of(50).then(|| "AccessDenied".to_string()))),
        ("error_message", text(r(), |_| None)),
        ("user_identity", Arc::new(identity)),
        ("source_ip_address", text(r(), |i| Some(format!("10.0.{}.{}", i % 200 / 100, i % 100)))),
        ("user_agent", text(r(), |_| Some("aws-sdk-go-v2/1.21.0 os/linux lang/go#1.21".into()))),
        ("event_id", text(r(), |i| Some(format!("{i:08x}-0000-4000-8000-000000000000")))),
        (
            "request_parameters",
            text(r(), |i| {
                Some(format!(
                    r#"{{"bucketName":"data","key":"k/{i}","secretId":"app/{}","names":["/app/db"],"withDecryption":true}}"#,
                    i % 7
                ))
            }),
        ),
        ("unknown_fields", text(r(), |_| None)),
    ])
    .expect("columns of one length")
}

fn batches(n: usize) -> Vec<RecordBatch> {
    (0..n).step_by(8192).map(|from| batch(from..(from + 8192).min(n))).collect()
}

fn rules(dirs: &[&str]) -> Rules {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut set = RuleSet::default();
    for d in dirs {
        set.add_dir(&root.join(d), &RulesConfig::default()).expect("rules folder");
    }
    set.finish();
    Rules::new(set)
}

/// Best of three: records a second through `f`.
fn rate(n: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..3 {
        let start = Instant::now();
        out = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (n as f64 / best, out)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench -p trailwatch-detect --bench rules` for figures");
        return;
    }
    let n = 400_000;
    let b = batches(n);
    let community = rules(&["testdata/corpus/rules/sigma"]);
    let both = rules(&["testdata/corpus/rules/sigma", "rules/trailwatch"]);
    let pack = rules(&["rules/trailwatch"]);
    for (label, r) in [("community rules", &community), ("community + trailwatch pack", &both)] {
        let (per_s, hits) =
            rate(n, || b.iter().map(|x| r.matches_batch(x).iter().filter(|m| !m.is_empty()).count()).sum());
        println!(
            "rules alone, {label} ({} rules, {} correlations): {per_s:.0} records/s on one core; {hits} records matched",
            r.rules.len(),
            r.correlations.len()
        );
    }
    for (label, r) in [("no rules", &Rules::default()), ("trailwatch pack", &pack), ("community + pack", &both)] {
        let cfg = DetectConfig { ruleset: r.clone(), ..DetectConfig::default() };
        let (per_s, findings) = rate(n, || {
            let d = Decoded::from_batches(Table::CloudTrail, b.clone(), r);
            let mut events = Vec::with_capacity(n);
            d.events("111122223333", "eu-west-1", 0, &mut events).expect("events");
            let mut e = Engine::default();
            trailwatch_detect::run::feed_day(&mut e, &cfg, events);
            e.take_findings(&cfg).len()
        });
        println!("batches to events to every detector, {label}: {per_s:.0} records/s on one core; {findings} findings");
    }
}
