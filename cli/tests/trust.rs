//! Nothing is done twice or with a setting nobody chose: a state folder is used by one run at a
//! time, and a negative fold window is refused.

use std::path::Path;
use std::process::{Command, Output};

fn trailwatch(work: &Path, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    Command::new(env!("CARGO_BIN_EXE_trailwatch"))
        .current_dir(root)
        .args(args)
        .arg("--lake")
        .arg(work.join("lake"))
        .arg("--state")
        .arg(work.join("state"))
        .arg("--findings")
        .arg(work.join("findings.jsonl"))
        .arg("--quiet")
        .output()
        .unwrap()
}

#[test]
fn a_state_folder_is_used_by_one_run_at_a_time() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // Another run holds the folder.
    let holder =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(state.join(".lock")).unwrap();
    holder.try_lock().unwrap();

    for args in [&["run", "testdata/cloudtrail"][..], &["detect"][..]] {
        let out = trailwatch(work.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("state folder {} is in use", state.display()))
                && stderr.contains("another trailwatch run holds its lock"),
            "{args:?}: {stderr}"
        );
    }
    // It failed fast: nothing was ingested, detected or written.
    assert!(!work.path().join("lake").exists());
    assert!(!work.path().join("findings.jsonl").exists());
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1, "only the lock file");

    // Released (the other run ended): the same command goes through, and leaves the lock free.
    drop(holder);
    let out = trailwatch(work.path(), &["run", "testdata/cloudtrail"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("detect: "), "{}", String::from_utf8_lossy(&out.stdout));
    let again = std::fs::OpenOptions::new().write(true).open(state.join(".lock")).unwrap();
    again.try_lock().expect("the finished run released the lock");
}

#[test]
fn a_negative_fold_window_is_refused() {
    let work = tempfile::tempdir().unwrap();
    for flag in [&["--fold-window-minutes", "-5"][..], &["--fold-window-minutes=-5"][..]] {
        let out = trailwatch(work.path(), &[&["detect"][..], flag].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
        assert!(stderr.contains("--fold-window-minutes") && stderr.contains("negative"), "{stderr}");
    }
    assert!(!work.path().join("state").exists(), "refused before anything ran");
    let out = trailwatch(work.path(), &["detect", "--fold-window-minutes", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A bad object's error names it and says what to do; with `--log-format json` the same line is
/// one JSON object on stderr, and no progress bar is drawn outside a terminal.
#[test]
fn errors_name_the_object_and_say_what_to_do_as_text_or_json() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("broken.json.gz"), "not gzip, not JSON {").unwrap();
    let lake = work.path().join("lake");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trailwatch"))
            .args(extra)
            .arg("ingest")
            .arg(&input)
            .arg("--lake")
            .arg(&lake)
            .output()
            .unwrap()
    };
    let text = run(&[]);
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert_eq!(text.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.json.gz") && stderr.contains("recorded with the reason in"), "{stderr}");
    assert!(!stderr.contains("objects,") && !stderr.contains("ETA"), "no progress bar in a pipe: {stderr}");

    let json = run(&["--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&json.stderr);
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR"
                && l["fields"]["message"].as_str().is_some_and(|m| m.contains("broken.json.gz"))),
        "{stderr}"
    );
}
