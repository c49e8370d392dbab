use std::path::PathBuf;

use serde_json::json;

use super::record::JsonRecord;
use super::*;
use trailwatch_core::finding::Status;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus")
}

fn one(yaml: &str) -> RuleSet {
    let mut set = RuleSet::default();
    set.add_yaml(yaml, "t.yml", &RulesConfig::default());
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    set
}

fn fired(set: &RuleSet, rec: &serde_json::Value) -> Vec<usize> {
    let mut out = Vec::new();
    set.matches(&JsonRecord(rec), rec["eventName"].as_str().unwrap_or(""), &mut out);
    out
}

#[test]
fn a_rule_indexed_by_event_name_fires_on_its_event_only() {
    let set = one(r#"
title: Trail stopped
id: 1
level: high
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventSource: cloudtrail.amazonaws.com
        eventName: [StopLogging, DeleteTrail]
    filter:
        userIdentity.type: AWSService
    condition: selection and not filter
falsepositives: [A planned change]
"#);
    assert_eq!(set.by_name.get("stoplogging"), Some(&vec![0]));
    assert!(set.always.is_empty());
    let mut r = json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging", "userIdentity": {"type": "IAMUser"}});
    assert_eq!(fired(&set, &r), vec![0]);
    r["userIdentity"]["type"] = json!("AWSService");
    assert!(fired(&set, &r).is_empty());
    // The index is case-insensitive, like the match.
    let r = json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "deletetrail"});
    assert_eq!(fired(&set, &r), vec![0]);
    let info = &set.rules[0].info;
    assert_eq!((info.level.as_str(), info.falsepositives.len()), ("high", 1));
    assert_eq!(set.rules[0].severity, Severity::High);
}

#[test]
fn broken_rules_are_reported_by_file_and_title_and_the_rest_load() {
    let mut set = RuleSet::default();
    let text = r#"
title: Good
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventName: X}, condition: sel}
---
title: Bad modifier
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventName|wide: X}, condition: sel}
---
title: Bad condition
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventName: X}, condition: sel and other}
---
title: Windows
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4624}, condition: sel}
"#;
    set.add_yaml(text, "pack/x.yml", &RulesConfig::default());
    assert_eq!(set.rules.len(), 1);
    assert_eq!(set.other_logsource, 1);
    let msgs: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with("pack/x.yml: rule \"Bad modifier\": sel: eventName|wide: modifier \"wide\""),
        "{msgs:?}"
    );
    assert!(msgs[1].contains("\"other\", which is not a search identifier"), "{msgs:?}");
    // A changed copy under the same id is refused, with the file that has it.
    set.add_yaml(text.split("---").next().unwrap(), "pack/copy.yml", &RulesConfig::default());
    assert_eq!(set.rules.len(), 1);
    assert!(
        set.errors.last().unwrap().to_string().contains("already the id of a rule in pack/x.yml"),
        "{:?}",
        set.errors
    );
    set.add_yaml("title: [unclosed", "y.yml", &RulesConfig::default());
    assert!(set.errors.last().unwrap().to_string().starts_with("y.yml: YAML:"));
}

#[test]
fn the_bundled_community_rules_load_except_the_ones_that_cannot() {
    let set = RuleSet::load_dir(&corpus().join("rules/sigma"), &RulesConfig::default()).unwrap();
    let errs: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    // The 57 active rules load; the 8 legacy ones (`count()`, `near`, `timeframe`) and the
    // placeholder rule (no values configured) are reported, each with its reason.
    assert_eq!(set.rules.len(), 57, "{errs:#?}");
    assert_eq!(errs.len(), 9, "{errs:#?}");
    assert_eq!(errs.iter().filter(|e| e.contains("correlation rule instead")).count(), 8, "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("%Legitimate_Countries%")), "{errs:#?}");
    // Nearly every rule pins an eventName: five (root usage, assumed roles, instance roles, a
    // user agent, an eventName prefix) are tried on every record.
    let always: Vec<&str> = set.always.iter().map(|&i| set.rules[i].info.file.as_str()).collect();
    assert_eq!(always.len(), 5, "{always:?}");
}

/// Stratus Red Team detonation logs: per technique, the community rules that fire.
pub(crate) fn stratus_matches(set: &RuleSet) -> BTreeMap<String, Vec<String>> {
    let dir = corpus().join("cloudtrail/as-found/stratus-red-team/docs/detonation-logs");
    let mut out = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let technique = f.file_stem().unwrap().to_string_lossy().to_string();
        let mut titles: Vec<String> = Vec::new();
        let mut hits = Vec::new();
        for r in &records {
            set.matches(&JsonRecord(r), r["eventName"].as_str().unwrap_or(""), &mut hits);
            titles.extend(hits.iter().map(|&i| set.rules[i].info.title.clone()));
        }
        titles.sort();
        titles.dedup();
        out.insert(technique, titles);
    }
    out
}

#[test]
fn community_rules_on_stratus_red_team_detonations() {
    let set = RuleSet::load_dir(&corpus().join("rules/sigma"), &RulesConfig::default()).unwrap();
    let m = stratus_matches(&set);
    assert_eq!(m.len(), 35);
    let detected: Vec<&String> = m.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k).collect();
    for (k, v) in &m {
        eprintln!("{k}: {v:?}");
    }
    assert!(detected.len() >= 18, "{} techniques: {detected:?}", detected.len());
}

fn event_of(set: &RuleSet, r: &serde_json::Value) -> crate::event::Event<'static> {
    let rec = JsonRecord(r);
    let name = r["eventName"].as_str().unwrap_or("");
    let (mut m, mut h) = (Vec::new(), Vec::new());
    set.matches(&rec, name, &mut m);
    set.correlation_hits(&rec, &m, &mut h);
    crate::event::Event::Api(crate::event::ApiCall {
        time: trailwatch_core::time::parse_rfc3339_millis(r["eventTime"].as_str().unwrap()).unwrap(),
        account: "111122223333".into(),
        region: "eu-west-1".into(),
        source: r["eventSource"].as_str().unwrap_or("").to_string().into(),
        name: name.to_string().into(),
        principal: r["userIdentity"]["arn"].as_str().unwrap_or("").to_string().into(),
        event_id: r["eventID"].as_str().unwrap().to_string().into(),
        rules: m.iter().filter(|&&i| set.rules[i].generate).map(|&i| i as u32).collect(),
        correlated: h,
        ..Default::default()
    })
}

#[test]
fn a_value_count_correlation_fires_once_per_group_in_event_time() {
    let mut set = RuleSet::default();
    set.add_yaml(
        r#"
title: Secret read
name: secret_read
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventSource: secretsmanager.amazonaws.com, eventName: GetSecretValue}, condition: sel}
---
title: Secrets read in bulk
id: bulk-secrets
level: high
correlation:
    type: value_count
    rules: [secret_read]
    group-by: [userIdentity.arn]
    timespan: 10m
    condition: {gte: 5, field: requestParameters.secretId}
"#,
        "pack.yml",
        &RulesConfig::default(),
    );
    set.finish();
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    assert!(!set.rules[0].generate, "a rule only a correlation uses reports nothing itself");
    let read = |i: usize, who: &str, secret: &str, minute: usize| {
        json!({"eventTime": format!("2024-05-01T10:{minute:02}:00Z"), "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "GetSecretValue", "eventID": format!("e{i}"), "userIdentity": {"arn": who},
            "requestParameters": {"secretId": secret}})
    };
    let mut records = Vec::new();
    // The attacker reads six secrets in six minutes; the app reads one secret ten times.
    for i in 0..6 {
        records.push(read(i, "arn:aws:iam::1:user/mallory", &format!("s{i}"), 2 + i));
    }
    for i in 0..10 {
        records.push(read(100 + i, "arn:aws:iam::1:role/app", "db", i));
    }
    // Delivered out of order: the fifth distinct secret arrives last.
    records.swap(4, 15);
    let cfg = crate::DetectConfig { ruleset: Rules::new(set.clone()), ..Default::default() };
    let mut engine = crate::engine::Engine::default();
    for r in &records {
        engine.observe_from(&cfg, &event_of(&set, r), 0);
    }
    let f = engine.take_findings(&cfg);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "Secrets read in bulk (bulk-secrets): userIdentity.arn=arn:aws:iam::1:user/mallory");
    assert_eq!(f[0].severity, Severity::High);
    assert!(f[0].observed >= 5.0);
    assert_eq!(f[0].start, trailwatch_core::time::parse_rfc3339_millis("2024-05-01T10:02:00Z").unwrap());
    // It fired when five distinct secrets fell in ten minutes: e4 came late, e5 made the five.
    let mut ev = f[0].evidence.clone();
    ev.sort();
    assert_eq!(ev, ["e0", "e1", "e2", "e3", "e5"]);
    assert_eq!(f[0].observed, 5.0);
    // The late read joined the open episode: the closing finding will count six.
    let shard = engine.shards.values().next().unwrap();
    let ep = &shard.rule_matches.open.values().next().unwrap()[0];
    assert_eq!((ep.count, ep.evidence.len()), (6, 6));
}

#[test]
fn a_burst_of_matches_is_one_episode_that_closes_after_the_gap() {
    let set = one(r#"
title: Key created
id: key-created
level: medium
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventName: CreateAccessKey}, condition: sel}
"#);
    let rec = |i: usize, time: &str, name: &str| {
        json!({"eventTime": time, "eventSource": "iam.amazonaws.com", "eventName": name, "eventID": format!("k{i}"),
            "userIdentity": {"arn": "arn:aws:iam::1:user/ci"}})
    };
    let cfg = crate::DetectConfig { ruleset: Rules::new(set.clone()), ..Default::default() };
    let mut engine = crate::engine::Engine::default();
    let mut feed = |r: serde_json::Value| {
        engine.observe_from(&cfg, &event_of(&set, &r), 0);
        engine.advance(&cfg);
    };
    for (i, m) in [0, 3, 9].into_iter().enumerate() {
        feed(rec(i, &format!("2024-05-01T10:{m:02}:00Z"), "CreateAccessKey"));
    }
    // Other calls move the watermark; three hours later a new match is a new episode.
    feed(rec(10, "2024-05-01T12:00:00Z", "ListUsers"));
    feed(rec(11, "2024-05-01T13:00:00Z", "CreateAccessKey"));
    // A late delivery: one file with three matches of 11:00-11:02 arrives after 13:00's. One
    // episode of their own (it closes at once: the watermark is past it).
    for (i, m) in [0, 1, 2].into_iter().enumerate() {
        let r = rec(20 + i, &format!("2024-05-01T11:{m:02}:00Z"), "CreateAccessKey");
        engine.observe_from(&cfg, &event_of(&set, &r), 0);
    }
    let late = &engine.shards.values().next().unwrap().rule_matches.open["key-created"];
    assert_eq!(late.iter().map(|e| e.count).collect::<Vec<_>>(), vec![1, 3], "the late three are one episode");
    engine.advance(&cfg);
    let f = engine.take_findings(&cfg);
    let seen: Vec<(Status, f64, usize)> = f.iter().map(|f| (f.status, f.observed, f.evidence.len())).collect();
    assert_eq!(
        seen,
        vec![
            (Status::Open, 1.0, 1),
            (Status::Closed, 3.0, 3),
            (Status::Open, 1.0, 1),
            (Status::Open, 1.0, 1),
            (Status::Closed, 3.0, 3)
        ]
    );
    assert_eq!(f[0].id, f[1].id);
    assert_ne!(f[0].id, f[2].id);
    assert_eq!(f[1].end, Some(trailwatch_core::time::parse_rfc3339_millis("2024-05-01T10:09:00Z").unwrap() + 1));
    assert!(f.iter().all(|f| f.kind == trailwatch_core::finding::FindingKind::RuleMatch && f.rule.is_some()));
}

#[test]
fn the_bundled_pack_is_the_rules_folder_and_loads_clean() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/trailwatch");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yml"))
        .map(|n| format!("trailwatch/{n}"))
        .collect();
    on_disk.sort();
    let bundled: Vec<String> = bundled::PACK.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(bundled, on_disk, "detect/src/sigma/bundled.rs lists every rule of rules/trailwatch");
    let mut set = RuleSet::default();
    set.add_bundled(&RulesConfig::default());
    set.finish();
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let from_disk = RuleSet::load_dir(&dir, &RulesConfig::default()).unwrap();
    assert_eq!(set.rules.len(), from_disk.rules.len());
    assert_eq!(set.correlations.len(), 2);
}

#[test]
fn rule_sources_for_the_lambda() {
    use trailwatch_core::store::LocalFiles;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.yml"),
        "title: Mine\nlogsource: {product: aws, service: cloudtrail}\ndetection: {sel: {eventName: X}, condition: sel}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
    // A local folder stands in for the bucket: LocalFiles lists `s3:///<path>` as the path
    // relative to the working directory, so climb to the root first.
    let up = "../".repeat(std::env::current_dir().unwrap().components().count() - 1);
    let loc = format!("bundled, s3:///{up}{}", dir.path().display().to_string().trim_start_matches('/'));
    let set = RuleSet::from_spec(&loc, &LocalFiles, &RulesConfig::default()).unwrap();
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    assert_eq!(set.rules.iter().filter(|r| r.info.title == "Mine").count(), 1);
    assert!(set.rules.len() > 20);
    assert!(RuleSet::from_spec("none", &LocalFiles, &RulesConfig::default()).unwrap().is_empty());
    let e = RuleSet::from_spec("/etc/rules", &LocalFiles, &RulesConfig::default()).unwrap_err();
    assert!(e.contains("expected bundled, none or s3://"), "{e}");
    assert!(RuleSet::from_spec("s3:///no/such/folder", &LocalFiles, &RulesConfig::default()).is_err());
}
