use std::path::PathBuf;

use serde_json::json;

use super::record::JsonRecord;
use super::*;

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
