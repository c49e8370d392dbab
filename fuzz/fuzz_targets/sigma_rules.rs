//! Sigma rule files from anyone's repository: any text loads or is reported, never panics, and
//! what loads evaluates on a record (and its correlations resolve) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailwatch_detect::sigma::record::JsonRecord;
use trailwatch_detect::sigma::{RuleSet, RulesConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut set = RuleSet::default();
    set.add_yaml(text, "fuzz.yml", &RulesConfig::default());
    set.finish();
    let rec = serde_json::json!({"eventName": "PutBucketPolicy", "eventSource": "s3.amazonaws.com",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/a"}, "sourceIPAddress": "10.0.0.1",
        "requestParameters": {"bucketName": "b", "policy": {"Statement": [{"Effect": "Allow"}]}, "ids": [1, "x", null]}});
    let mut out = Vec::new();
    set.matches(&JsonRecord(&rec), "PutBucketPolicy", &mut out);
    let mut hits = Vec::new();
    set.correlation_hits(&JsonRecord(&rec), &out, &mut hits);
    for e in &set.errors {
        assert!(e.to_string().starts_with("fuzz.yml"));
    }
});
