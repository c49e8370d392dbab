//! `--rules` and `trailwatch rules test`: Sigma rule folders, loaded once, every problem named
//! with its file; samples run through ingest's converter and detect's engine, as lake records.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use trailwatch_core::finding::{FindingKind, Status};
use trailwatch_detect::config::{Rules, RulesConfig};
use trailwatch_detect::sigma::RuleSet;
use trailwatch_detect::DetectConfig;
use trailwatch_ingest::convert::{parse_record_text, CloudTrailBatch};

fn load_set(dirs: &[PathBuf], cfg: &RulesConfig) -> Result<RuleSet> {
    let mut set = RuleSet::default();
    for d in dirs {
        set.add_dir(d, cfg).with_context(|| format!("reading the rules folder {}", d.display()))?;
    }
    set.finish();
    Ok(set)
}

/// The rules of `dirs` for detect; rules that cannot be loaded are warned about, by file and
/// reason, and the others run.
pub fn load(dirs: &[PathBuf], cfg: &RulesConfig) -> Result<Rules> {
    let set = load_set(dirs, cfg)?;
    for e in &set.errors {
        tracing::warn!("rule not loaded: {e}");
    }
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    eprintln!(
        "rules: {} rules and {} correlations loaded from {}{}",
        set.rules.len(),
        set.correlations.len(),
        names.join(", "),
        match set.errors.len() {
            0 => String::new(),
            n => format!("; {n} could not be loaded (warnings above)"),
        }
    );
    Ok(Rules::new(set))
}

/// CloudTrail records from a sample file: an array, `{"Records": [...]}`, or one record.
fn sample_records(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let list = match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) if o.contains_key("Records") => match o.remove("Records") {
            Some(serde_json::Value::Array(a)) => a,
            _ => anyhow::bail!("{}: Records is not an array", path.display()),
        },
        v => vec![v],
    };
    Ok(list.iter().map(|r| r.to_string()).collect())
}

/// Rule ids that open a `rule_match` finding over the records of `path`, as the lake would hold them.
pub fn fired(cfg: &DetectConfig, path: &Path) -> Result<Vec<String>> {
    let mut b = CloudTrailBatch::new();
    for (i, text) in sample_records(path)?.iter().enumerate() {
        let row = parse_record_text(text).map_err(|e| anyhow::anyhow!("{}: record {i}: {e}", path.display()))?;
        b.push(&row, text.len());
    }
    let findings = trailwatch_detect::run::detect_batches(cfg, vec![b.finish()])
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut ids: Vec<String> = findings
        .into_iter()
        .filter(|f| f.kind == FindingKind::RuleMatch && f.status == Status::Open)
        .filter_map(|f| f.rule.map(|r| r.id))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// `trailwatch rules test`: loads the rules, then runs every `<rule>.match.json` (must fire a
/// rule of `<rule>.yml`) and `<rule>.nomatch.json` (must fire none of them).
pub fn test(dirs: &[PathBuf], rules_cfg: &RulesConfig) -> Result<ExitCode> {
    let set = load_set(dirs, rules_cfg)?;
    let mut failed = set.errors.len();
    for e in &set.errors {
        println!("ERROR {e}");
    }
    let cfg = DetectConfig { rules: rules_cfg.clone(), ruleset: Rules::new(set), ..DetectConfig::default() };
    let (mut samples, mut passed) = (0, 0);
    for dir in dirs {
        let mut files = Vec::new();
        json_files(dir, &mut files)?;
        files.sort();
        for sample in files {
            let name = sample.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let (stem, want) = match (name.strip_suffix(".nomatch.json"), name.strip_suffix(".match.json")) {
                (Some(stem), _) => (stem.to_string(), false),
                (None, Some(stem)) => (stem.to_string(), true),
                _ => continue,
            };
            let yml = sample.with_file_name(format!("{stem}.yml"));
            let base = dir.parent().unwrap_or(dir);
            let rel = yml.strip_prefix(base).unwrap_or(&yml).to_string_lossy().replace('\\', "/");
            let infos =
                cfg.ruleset.rules.iter().map(|r| &r.info).chain(cfg.ruleset.correlations.iter().map(|c| &c.info));
            let ids: Vec<&str> = infos.filter(|i| i.file == rel).map(|i| i.id.as_str()).collect();
            samples += 1;
            let shown = sample.display();
            if ids.is_empty() {
                println!("FAIL  {shown}: no loaded rule in {rel}");
                failed += 1;
                continue;
            }
            let got = fired(&cfg, &sample)?;
            let hit = got.iter().any(|g| ids.contains(&g.as_str()));
            match (want, hit) {
                (true, true) => println!("ok    {shown}: fires"),
                (false, false) => println!("ok    {shown}: does not fire"),
                (true, false) => println!("FAIL  {shown}: should fire {rel} and does not"),
                (false, true) => println!("FAIL  {shown}: fires {rel} and should not"),
            }
            if want == hit {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!(
        "rules test: {} rules and {} correlations loaded, {} could not be; {samples} samples, {passed} passed",
        cfg.ruleset.rules.len(),
        cfg.ruleset.correlations.len(),
        cfg.ruleset.errors.len()
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            json_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}
