//! `trailwatch demo`, the README's first command: it must find every incident it planted, raise
//! nothing it cannot explain, and make the same data and findings each time it runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn demo(out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_trailwatch")).args(["demo", "--out"]).arg(out).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

/// Every input file's path and a hash of its bytes.
fn listing(dir: &Path) -> BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                // Fixed keys: the same bytes hash the same in both runs.
                #[allow(deprecated)]
                let mut h = std::hash::SipHasher::new();
                std::fs::read(e.path()).unwrap().hash(&mut h);
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string(), h.finish());
            }
        }
    }
    out
}

fn finding_ids(out: &Path) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(out.join("findings.jsonl")).unwrap();
    let mut ids: Vec<_> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("status"), s("kind"), s("subject"))
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_demo_finds_what_it_planted_and_nothing_else_and_runs_the_same_twice() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("demo");
    let first = demo(&out);
    assert!(first.contains("7 of 7 incidents found"), "{first}");
    assert!(first.contains("0 false alarm(s)"), "{first}");
    assert!(!first.contains("MISSED"), "{first}");
    // The pipeline itself reports: ingest read every file, detect read the lake.
    assert!(first.contains(", 0 failed; records: ") && first.contains(" 0 rejected; lake: "), "{first}");
    let kinds: std::collections::BTreeSet<String> = finding_ids(&out).into_iter().map(|f| f.2).collect();
    for k in [
        "throttling",
        "concurrency_spike",
        "api_error_rate",
        "unusual_invocation",
        "api_call_rate",
        "timeouts",
        "log_silence",
    ] {
        assert!(kinds.contains(k), "no {k} finding: {kinds:?}");
    }
    let files = listing(&out.join("input"));
    assert!(files.len() > 5_000, "{} input files", files.len());
    let findings = finding_ids(&out);

    // Again in the same folder: made anew, the same bytes and findings, not appended twice.
    let second = demo(&out);
    assert_eq!(listing(&out.join("input")), files);
    assert_eq!(finding_ids(&out), findings);
    assert!(second.contains("7 of 7 incidents found"), "{second}");

    // Something of the user's in a demo folder stops the demo, untouched.
    std::fs::write(out.join("mine.txt"), "keep me").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trailwatch")).args(["demo", "--out"]).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds mine.txt"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("lake").is_dir());

    // A folder that is not the demo's is left alone.
    let other = work.path().join("mine");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep me").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trailwatch")).args(["demo", "--out"]).arg(&other).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a demo folder"));
    assert_eq!(std::fs::read_to_string(other.join("notes.txt")).unwrap(), "keep me");
}
