//! Sigma rules next to the detectors, in memory, on one core: records a second through the rule
//! set alone (the community CloudTrail rules, then with trailwatch's pack), and through the
//! read path and every detector with and without them. Run by hand:
//! `cargo bench -p trailwatch-cli --bench rules`; the figures go in the README.
//!
//! Records are CloudTrail JSON turned into lake batches by ingest's own converter, so the rules
//! read the columns detect reads from the lake.

use std::path::Path;
use std::time::Instant;

use arrow_array::RecordBatch;
use trailwatch_detect::config::Rules;
use trailwatch_detect::engine::Engine;
use trailwatch_detect::event::Table;
use trailwatch_detect::read::Decoded;
use trailwatch_detect::sigma::{RuleSet, RulesConfig};
use trailwatch_detect::DetectConfig;
use trailwatch_ingest::convert::{parse_record_text, CloudTrailBatch};

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

fn record(i: usize) -> String {
    let (svc, name) = APIS[i % APIS.len()];
    let t = T0 + i as i64 * 5;
    let ms = t % 1000;
    let secs = t / 1000;
    let time = format!(
        "2026-01-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        5 + secs / 86_400 % 20,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    let role = format!("app-{}", i % 60);
    serde_json::json!({
        "eventVersion": "1.09", "eventTime": time, "eventSource": format!("{svc}.amazonaws.com"), "eventName": name,
        "awsRegion": "eu-west-1", "sourceIPAddress": format!("10.0.{}.{}", i % 200 / 100, i % 100),
        "userAgent": "aws-sdk-go-v2/1.21.0 os/linux lang/go#1.21", "eventID": format!("{i:08x}-0000-4000-8000-000000000000"),
        "eventType": "AwsApiCall", "readOnly": true, "recipientAccountId": "111122223333", "managementEvent": true,
        "errorCode": if i.is_multiple_of(50) { serde_json::Value::from("AccessDenied") } else { serde_json::Value::Null },
        "userIdentity": {"type": "AssumedRole", "principalId": format!("AROAEXAMPLE:{role}"),
            "arn": format!("arn:aws:sts::111122223333:assumed-role/{role}/session"), "accountId": "111122223333",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE",
                "arn": format!("arn:aws:iam::111122223333:role/{role}"), "accountId": "111122223333", "userName": role},
                "attributes": {"creationDate": "2026-01-05T00:00:00Z", "mfaAuthenticated": "false"}}},
        "requestParameters": {"bucketName": "data", "key": format!("k/{i}"), "secretId": format!("app/{}", i % 7),
            "names": ["/app/db"], "withDecryption": true, "groupId": "sg-1",
            "ipPermissions": {"items": [{"fromPort": 443, "toPort": 443, "ipProtocol": "tcp"}]}},
        "responseElements": null,
    })
    .to_string()
}

fn batches(n: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut b = CloudTrailBatch::new();
    for i in 0..n {
        let text = record(i);
        b.push(&parse_record_text(&text).expect("a record"), text.len());
        if b.len() == 8192 {
            out.push(b.finish());
        }
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
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
        println!("run with `cargo bench -p trailwatch-cli --bench rules` for figures");
        return;
    }
    let n = 400_000;
    let b = batches(n);
    let community = rules(&["testdata/corpus/rules/sigma"]);
    let both = rules(&["testdata/corpus/rules/sigma", "rules/trailwatch"]);
    for (label, r) in [("community rules", &community), ("community + trailwatch pack", &both)] {
        let (per_s, hits) =
            rate(n, || b.iter().map(|x| r.matches_batch(x).iter().filter(|m| !m.is_empty()).count()).sum());
        println!(
            "rules alone, {label} ({} rules, {} correlations): {per_s:.0} records/s on one core; {hits} records matched",
            r.rules.len(),
            r.correlations.len()
        );
    }
    for (label, r) in [("no rules", &Rules::default()), ("community + pack", &both)] {
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
