//! Sigma rules through the whole pipeline: public attack logs ingested into a lake, detect with the
//! bundled community rules, findings per technique; and the same rules evaluated on the raw JSON
//! records agree with what the lake's columns give.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use trailwatch_core::finding::FindingKind;
use trailwatch_core::store::{LocalFiles, LocalLake, ObjectSource};
use trailwatch_detect::config::Rules;
use trailwatch_detect::sigma::record::JsonRecord;
use trailwatch_detect::sigma::{RuleSet, RulesConfig};
use trailwatch_detect::state::DirState;
use trailwatch_detect::{detect_lake, DetectConfig, LakeLocation};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn stratus() -> PathBuf {
    testdata().join("corpus/cloudtrail/as-found/stratus-red-team/docs/detonation-logs")
}

/// Technique (file stem) -> its records.
fn techniques() -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(stratus()).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        out.insert(stem, serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
    }
    out
}

/// Technique -> titles of the rules that fire, evaluating `set` on the JSON records.
fn on_json(set: &RuleSet) -> BTreeMap<String, BTreeSet<String>> {
    let mut hits = Vec::new();
    techniques()
        .into_iter()
        .map(|(t, records)| {
            let mut titles = BTreeSet::new();
            for r in &records {
                set.matches(&JsonRecord(r), r["eventName"].as_str().unwrap_or(""), &mut hits);
                titles.extend(hits.iter().map(|&i| set.rules[i].info.title.clone()));
            }
            (t, titles)
        })
        .collect()
}

/// Technique -> titles of the `rule_match` findings detect opens over a lake ingest wrote from
/// the detonation logs (a finding's evidence ids say which technique's records it matched).
fn through_the_lake(rules: &Rules) -> BTreeMap<String, BTreeSet<String>> {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = LocalLake::new(&lake_dir);
    for obj in LocalFiles.list("", stratus().to_str().unwrap()).unwrap() {
        trailwatch_ingest::ingest_object(&LocalFiles, &obj, &lake, &Default::default()).unwrap();
    }
    let cfg = DetectConfig { ruleset: rules.clone(), ..DetectConfig::default() };
    let loc = LakeLocation { bucket: String::new(), prefix: lake_dir.to_string_lossy().to_string() };
    let store = DirState::new(dir.path().join("state"));
    let run = detect_lake(&LocalFiles, &loc, &store, &cfg, trailwatch_core::time::wall_clock_millis()).unwrap();
    assert!(run.files_failed.is_empty(), "{:?}", run.files_failed);
    let mut of_id = BTreeMap::new();
    for (t, records) in techniques() {
        for r in records {
            of_id.insert(r["eventID"].as_str().unwrap().to_string(), t.clone());
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = techniques().into_keys().map(|t| (t, BTreeSet::new())).collect();
    for f in run.findings.iter().filter(|f| f.kind == FindingKind::RuleMatch) {
        let rule = f.rule.as_ref().expect("a rule_match names its rule");
        assert!(f.subject.starts_with(&format!("{} ({})", rule.title, rule.id)), "{}", f.subject);
        for id in &f.evidence {
            out.get_mut(&of_id[id]).unwrap().insert(rule.title.clone());
        }
    }
    out
}

#[test]
fn community_rules_detect_stratus_techniques_through_the_lake_as_on_the_raw_records() {
    let set = RuleSet::load_dir(&testdata().join("corpus/rules/sigma"), &RulesConfig::default()).unwrap();
    let json = on_json(&set);
    let lake = through_the_lake(&Rules::new(set));
    // The lake's columns (structs, JSON text, unknown_fields) give what the records say.
    assert_eq!(lake, json);
    let detected: Vec<&String> = lake.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k).collect();
    for (t, titles) in &lake {
        eprintln!("{t}: {titles:?}");
    }
    // pySigma 1.5.1 with pySigma-backend-duckdb 0.1.4, same rules and logs (run on 2026-12-04):
    // these 17 techniques, and console-login-without-mfa with case-insensitive matching.
    // trailwatch must detect a superset.
    let pysigma = [
        "aws.credential-access.ec2-get-password-data",
        "aws.credential-access.ec2-steal-instance-credentials",
        "aws.defense-evasion.cloudtrail-delete",
        "aws.defense-evasion.cloudtrail-stop",
        "aws.defense-evasion.organizations-leave",
        "aws.defense-evasion.vpc-remove-flow-logs",
        "aws.discovery.ec2-download-user-data",
        "aws.execution.ec2-launch-unusual-instances",
        "aws.execution.ssm-send-command",
        "aws.exfiltration.ec2-security-group-open-port-22-ingress",
        "aws.exfiltration.ec2-share-ebs-snapshot",
        "aws.impact.bedrock-invoke-model",
        "aws.lateral-movement.ec2-serial-console-send-ssh-public-key",
        "aws.persistence.iam-backdoor-user",
        "aws.persistence.iam-create-admin-user",
        "aws.persistence.lambda-layer-extension",
        "aws.privilege-escalation.iam-update-user-login-profile",
        "aws.initial-access.console-login-without-mfa",
    ];
    let missed: Vec<&str> = pysigma.into_iter().filter(|t| !detected.iter().any(|d| d == t)).collect();
    assert!(missed.is_empty(), "pySigma detects these and trailwatch does not: {missed:?}");
    assert!(detected.len() >= 18, "{} of 35: {detected:?}", detected.len());
    for t in [
        "aws.defense-evasion.cloudtrail-stop",
        "aws.persistence.iam-backdoor-user",
        "aws.initial-access.console-login-without-mfa",
    ] {
        assert!(detected.iter().any(|d| *d == t), "{t} not detected");
    }
}

#[test]
fn with_trailwatchs_own_pack_every_stratus_technique_is_detected() {
    let mut set = RuleSet::default();
    for dir in [testdata().join("corpus/rules/sigma"), testdata().join("../rules/trailwatch")] {
        set.add_dir(&dir, &RulesConfig::default()).unwrap();
    }
    set.finish();
    let lake = through_the_lake(&Rules::new(set));
    let missed: Vec<&String> = lake.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| k).collect();
    assert!(missed.is_empty(), "not detected: {missed:?}");
    assert_eq!(lake.len(), 35);
}

/// `trailwatch rules test`: the pack's samples pass; a broken rule and a sample that should fire
/// and does not are each named, and the command fails.
#[test]
fn rules_test_runs_samples_and_names_what_is_wrong() {
    let bin = env!("CARGO_BIN_EXE_trailwatch");
    let pack_dir = testdata().join("../rules/trailwatch");
    let out = std::process::Command::new(bin).args(["rules", "test"]).arg(&pack_dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("40 samples, 40 passed"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    std::fs::create_dir(&pack).unwrap();
    let head = "logsource: {product: aws, service: cloudtrail}\n";
    std::fs::write(
        pack.join("stop.yml"),
        format!("title: Stop\n{head}detection: {{sel: {{eventName: StopLogging}}, condition: sel}}\n"),
    )
    .unwrap();
    std::fs::write(
        pack.join("stop.match.json"),
        r#"[{"eventTime": "2024-01-01T00:00:00Z", "eventName": "StartLogging", "eventID": "a"}]"#,
    )
    .unwrap();
    std::fs::write(
        pack.join("bad.yml"),
        format!("title: Bad\n{head}detection: {{sel: {{eventName|wide: X}}, condition: sel}}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(bin).args(["rules", "test"]).arg(&pack).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ERROR pack/bad.yml: rule \"Bad\": sel: eventName|wide: modifier \"wide\""), "{text}");
    assert!(text.contains("stop.match.json: should fire pack/stop.yml and does not"), "{text}");
}

/// Whole structs, lists, times and values of the wrong type read the same from the lake's
/// columns as from the record: each rule fires on the same records both ways.
#[test]
fn lake_rows_and_raw_records_agree_on_structs_lists_times_and_odd_values() {
    use trailwatch_ingest::convert::{parse_record_text, CloudTrailBatch};
    let head = "logsource: {product: aws, service: cloudtrail}\n";
    let rules = [
        ("attrs-exist", "{sel: {userIdentity.sessionContext.attributes|exists: true}, condition: sel}"),
        ("attrs-null", "{sel: {userIdentity.sessionContext.attributes: null}, condition: sel}"),
        ("root-text", "{sel: {userIdentity|contains: '\"type\":\"Root\"'}, condition: sel}"),
        ("identity-exact", "{sel: {userIdentity: Root}, condition: sel}"),
        ("bucket-resource", "{sel: {resources|contains: 'AWS::S3::Bucket'}, condition: sel}"),
        ("resource-arn", "{sel: {resources.ARN|endswith: ':::data'}, condition: sel}"),
        ("time", "{sel: {eventTime: '2024-05-01T10:00:00Z'}, condition: sel}"),
        ("odd-readonly", "{sel: {readOnly: maybe}, condition: sel}"),
        ("new-member", "{sel: {newField.x: 1}, condition: sel}"),
        ("mfa", "{sel: {userIdentity.sessionContext.attributes.mfaAuthenticated: 'false'}, condition: sel}"),
    ];
    let mut set = RuleSet::default();
    for (id, det) in rules {
        set.add_yaml(&format!("title: {id}\nid: {id}\n{head}detection: {det}\n"), "t.yml", &RulesConfig::default());
    }
    set.finish();
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let records = [
        r#"{"eventTime":"2024-05-01T10:00:00Z","eventName":"A","userIdentity":{"type":"Root","arn":"arn:aws:iam::1:root",
            "sessionContext":{"attributes":{"creationDate":"2024-05-01T09:00:00Z","mfaAuthenticated":"false"}}},
            "resources":[{"ARN":"arn:aws:s3:::data","type":"AWS::S3::Bucket"}]}"#,
        r#"{"eventTime":"2024-05-01T10:00:00.250Z","eventName":"B","userIdentity":{"type":"IAMUser"},"readOnly":"maybe",
            "newField":{"x":1}}"#,
        r#"{"eventTime":"2024-05-01T10:00:01Z","eventName":"C"}"#,
    ];
    let mut b = CloudTrailBatch::new();
    let mut raw = Vec::new();
    for r in records {
        b.push(&parse_record_text(r).unwrap(), r.len());
        raw.push(serde_json::from_str::<serde_json::Value>(r).unwrap());
    }
    let lake = set.matches_batch(&b.finish());
    let mut hits = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        set.matches(&JsonRecord(r), r["eventName"].as_str().unwrap(), &mut hits);
        let names = |v: &[usize]| v.iter().map(|&k| set.rules[k].info.id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&lake[i]), names(&hits), "record {i}");
    }
    let fired = |i: usize| lake[i].iter().map(|&k| set.rules[k].info.id.as_str()).collect::<Vec<_>>();
    assert_eq!(fired(0), ["attrs-exist", "root-text", "bucket-resource", "resource-arn", "time", "mfa"]);
    assert_eq!(fired(1), ["attrs-null", "odd-readonly", "new-member"]);
    assert_eq!(fired(2), ["attrs-null"]);
}
