//! `trailwatch`: the pipeline on a laptop. Local files or S3 in, a local (or S3) Parquet lake out,
//! no AWS account needed for local paths.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod demo;
mod handoff;
mod report;
mod rules;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use trailwatch_alert::{AlertConfig, FileDeadLetter, FileSent};
use trailwatch_core::finding::{Finding, Severity, Status};
use trailwatch_core::store::{LakeStore, LocalFiles, LocalLake, ObjectRef, ObjectSource};
use trailwatch_detect::state::DirState;
use trailwatch_detect::{DetectConfig, LakeLocation};
use trailwatch_ingest::{ingest_object_at, record_failure, Config, Outcome};

#[derive(Parser)]
#[command(name = "trailwatch", version, about = "Find attacks and failures in CloudTrail and CloudWatch logs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written: `text` for people, `json` (one object a line) for
    /// machines. A progress bar is drawn only for text on a terminal.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Make nine days of a small organisation's CloudTrail and Lambda logs (with one incident of
    /// each kind the baselines catch, and benign look-alikes) and run the whole pipeline on them.
    Demo {
        /// Where to write the demo's input, lake, state and findings (made anew each run).
        #[arg(long, default_value = "trailwatch-demo")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Read CloudTrail deliveries and write them to the Parquet lake.
    Ingest {
        /// Files, folders (read recursively) or s3://bucket/prefix.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// The lake: a folder or s3://bucket/prefix.
        #[arg(long)]
        lake: String,
        /// An S3-compatible endpoint to use instead of AWS (e.g. http://127.0.0.1:5000).
        #[arg(long)]
        endpoint_url: Option<String>,
        /// Region of CloudWatch Logs data whose key names none (subscription payloads carry no
        /// region).
        #[arg(long)]
        region: Option<String>,
        /// The log group of export-task files under a key prefix: PREFIX=[ACCOUNT:]GROUP
        /// (repeatable). Export files name neither.
        #[arg(long = "export-log-group", value_name = "PREFIX=[ACCOUNT:]GROUP", value_parser = parse_pair)]
        export_log_groups: Vec<(String, String)>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the detectors over the lake objects not read before and report findings.
    Detect {
        #[command(flatten)]
        detect: DetectArgs,
    },
    /// Ingest, then detect, then alert to the terminal and the findings file.
    Run {
        /// Files, folders (read recursively) or s3://bucket/prefix.
        #[arg(required = true)]
        inputs: Vec<String>,
        #[command(flatten)]
        detect: DetectArgs,
        /// Region of CloudWatch Logs data whose key names none.
        #[arg(long)]
        region: Option<String>,
        /// The log group of export-task files under a key prefix: PREFIX=[ACCOUNT:]GROUP.
        #[arg(long = "export-log-group", value_name = "PREFIX=[ACCOUNT:]GROUP", value_parser = parse_pair)]
        export_log_groups: Vec<(String, String)>,
    },
    /// Learn the detectors' baselines from the lake's history (polars), so detection is useful
    /// at once. Needs a build with `--features baseline`.
    Baseline {
        /// The lake: a local folder.
        #[arg(long)]
        lake: PathBuf,
        /// The state folder `trailwatch detect` uses.
        #[arg(long)]
        state: PathBuf,
        /// A TOML file of thresholds, prices and suppressions.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also append the findings the history holds here.
        #[arg(long)]
        findings: Option<PathBuf>,
    },
    /// Print the lake's Athena tables (CREATE EXTERNAL TABLE with partition projection), derived
    /// from the schemas the pipeline writes, or their Glue columns as JSON.
    Schema {
        /// Print the Athena DDL (the default).
        #[arg(long, conflicts_with = "glue_json")]
        athena: bool,
        /// Print each table's columns as Glue `{Name, Type}` JSON (the stack's tables are checked
        /// against it).
        #[arg(long)]
        glue_json: bool,
        /// The lake: s3://bucket/prefix.
        #[arg(long, default_value = "s3://LAKE-BUCKET")]
        lake: String,
        /// The Glue database.
        #[arg(long, default_value = "trailwatch")]
        database: String,
        /// A member account to project (repeatable; `unknown` is always added).
        #[arg(long = "account", value_name = "ACCOUNT_ID")]
        accounts: Vec<String>,
        /// A region to project (repeatable; `unknown` is always added).
        #[arg(long = "region", value_name = "REGION", default_values_t = default_regions())]
        regions: Vec<String>,
        /// The first date with data (yyyy-MM-dd).
        #[arg(long, default_value = "2024-01-01")]
        first_date: String,
    },
    /// Merge closed partition-days' small files (one per delivered object) into files of about
    /// 128 MB. Safe to run at any time and again; detect does not read merged rows twice.
    Compact {
        /// The lake: a folder or s3://bucket/prefix.
        #[arg(long)]
        lake: String,
        /// Partitions this many days or more before today (UTC) are closed and compacted.
        #[arg(long, default_value_t = trailwatch_ingest::compact::DEFAULT_CLOSED_AFTER_DAYS)]
        closed_after_days: i64,
        /// Files younger than this many minutes are left for a later run: detect may not have
        /// read them yet (0 for a lake no detect runs on, such as a finished replay).
        #[arg(long, default_value_t = trailwatch_ingest::compact::DEFAULT_MIN_AGE_MINUTES)]
        min_age_minutes: i64,
        /// A merged file is closed when its inputs reach this many MB.
        #[arg(long, default_value_t = 128)]
        target_mb: u64,
        /// An S3-compatible endpoint to use instead of AWS.
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Write one self-contained HTML page: each finding's metric over time against its baseline
    /// band with the episode marked, its top contributors and Athena query, and an overview of
    /// every function and trail in the lake.
    Report {
        /// The lake: a folder or s3://bucket/prefix.
        #[arg(long)]
        lake: String,
        /// The findings file `trailwatch detect` or `run` appended to.
        #[arg(long)]
        findings: PathBuf,
        /// The page to write.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
        /// A TOML file of prices (for the cost column) and thresholds.
        #[arg(long)]
        config: Option<PathBuf>,
        /// An S3-compatible endpoint to use instead of AWS.
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Sigma rules: check them and run their samples.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Print the effective detect configuration (defaults merged with --config) as TOML.
    Config {
        /// A TOML file of thresholds, prices and suppressions.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load every rule under the folders (reporting those that cannot be loaded, with the file
    /// and reason), then run each rule's samples through ingest and the rule set: records in
    /// `<rule>.match.json` must fire the rule, records in `<rule>.nomatch.json` must not.
    Test {
        /// Folders of Sigma rules (read recursively).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// A TOML file with `[rules]` settings (placeholders for `expand`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DetectArgs {
    /// The lake: a folder or s3://bucket/prefix.
    #[arg(long)]
    lake: String,
    /// A folder for detector state between runs.
    #[arg(long)]
    state: PathBuf,
    /// Findings are appended here, one JSON object a line (opens and closes).
    #[arg(long)]
    findings: PathBuf,
    /// A TOML file of thresholds, prices and suppressions (`trailwatch config` prints them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A folder of Sigma rules (`logsource: product: aws, service: cloudtrail`), read
    /// recursively; repeatable. Each match is a `rule_match` finding.
    #[arg(long = "rules", value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// An S3-compatible endpoint to use instead of AWS.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Do not print findings to the terminal (the findings file is still written), and draw no
    /// progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also publish alerts to this SNS topic (email and JSON; deduplicated through the state
    /// folder, undeliverable ones to <STATE>/dead-letter.jsonl).
    #[arg(long)]
    sns_topic_arn: Option<String>,
    /// Repeated episodes of one kind and subject starting within this many minutes fold into
    /// the alert already sent (0 or more; 0 folds nothing).
    #[arg(long, default_value_t = 360, allow_negative_numbers = true, value_parser = trailwatch_alert::parse_fold_window_minutes)]
    fold_window_minutes: i64,
    /// More alerts than this for one account in one run become one digest message.
    #[arg(long, default_value_t = 5)]
    digest_threshold: usize,
    /// Findings below this severity are not published (info, low, medium, high, critical).
    #[arg(long, default_value = "info", value_parser = parse_severity)]
    min_severity: Severity,
}

/// The regions projected when none are given: the commercial regions with the most use.
fn default_regions() -> Vec<String> {
    ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-central-1", "ap-southeast-1"]
        .map(String::from)
        .to_vec()
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "expected info, low, medium, high or critical".to_string())
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (a, b) = s.split_once('=').ok_or("expected PREFIX=GROUP")?;
    Ok((a.to_string(), b.to_string()))
}

/// An `s3://bucket/prefix` location.
fn parse_s3(s: &str) -> Option<(String, String)> {
    let rest = s.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_string(), prefix.to_string()))
}

/// The progress bar on the terminal, if one is drawn: log lines are written around it (the bar
/// is lifted, the line written, the bar drawn again), not across it.
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Stderr for log lines, around the progress bar.
struct LogOut;

impl std::io::Write for LogOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || tracing_subscriber::EnvFilter::try_from_env("TRAILWATCH_LOG").unwrap_or_else(|_| "info".into());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(|| LogOut)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .without_time()
            .with_env_filter(filter())
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_env_filter(filter())
            .init(),
    }
    let json = cli.log_format == LogFormat::Json;
    match run(cli) {
        Ok(code) => code,
        Err(e) if json => {
            tracing::error!(error = %format!("{e:#}"), "trailwatch failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // A bar on a terminal, for people; nothing in a pipe, a log file or JSON logs.
    let bar = |quiet: bool| !quiet && cli.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    match cli.command {
        Command::Demo { out, quiet } => demo_run(&out, bar(quiet)),
        Command::Ingest { inputs, lake, endpoint_url, region, export_log_groups, quiet } => {
            let cfg = Config { default_region: region, export_log_groups, ..Config::default() };
            Ok(ingest(&inputs, &lake, endpoint_url.as_deref(), &cfg, false, bar(quiet))?.0)
        }
        Command::Detect { detect: args } => {
            let _lock = lock_state(&args.state)?;
            detect(&args, HashMap::new(), bar(args.quiet))
        }
        Command::Run { inputs, detect: args, region, export_log_groups } => {
            // Held from before ingest to after the state is committed.
            let _lock = lock_state(&args.state)?;
            let cfg = Config { default_region: region, export_log_groups, ..Config::default() };
            // What ingest wrote goes to detect in memory; the lake is still the record.
            let (ingested, written) =
                ingest(&inputs, &args.lake, args.endpoint_url.as_deref(), &cfg, true, bar(args.quiet))?;
            let detected = detect(&args, written, bar(args.quiet))?;
            Ok(if ingested != ExitCode::SUCCESS { ingested } else { detected })
        }
        Command::Baseline { lake, state, config, findings } => {
            baseline(&lake, &state, config.as_deref(), findings.as_deref())
        }
        Command::Schema { athena: _, glue_json, lake, database, accounts, regions, first_date } => {
            schema(glue_json, &lake, &database, accounts, regions, first_date)
        }
        Command::Compact { lake, closed_after_days, min_age_minutes, target_mb, endpoint_url } => {
            let now = trailwatch_core::time::wall_clock_millis();
            let opts =
                trailwatch_ingest::compact::CompactOptions::at(now, closed_after_days, min_age_minutes, target_mb);
            compact(&lake, endpoint_url.as_deref(), &opts)
        }
        Command::Report { lake, findings, out, config, endpoint_url } => {
            report_run(&lake, &findings, &out, config.as_deref(), endpoint_url.as_deref())?;
            println!("report: {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { config } => {
            print!("{}", load_config(config.as_deref())?.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command: RulesCommand::Test { dirs, config } } => {
            let cfg = load_config(config.as_deref())?;
            rules::test(&dirs, &cfg.rules)
        }
    }
}

/// `trailwatch demo`: generates the data, runs ingest and detect on it as `trailwatch run`
/// would, and says which findings answer which planted incident.
/// What a demo folder holds; anything else in it is someone else's, and the demo will not run there.
const DEMO_ENTRIES: [&str; 7] =
    [".trailwatch-demo", STATE_LOCK, "input", "lake", "state", "findings.jsonl", "report.html"];

fn demo_run(out: &std::path::Path, progress: bool) -> Result<ExitCode> {
    let marker = out.join(".trailwatch-demo");
    if out.exists() {
        let names: Vec<String> = std::fs::read_dir(out)
            .with_context(|| format!("--out {}: not a folder", out.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if !names.is_empty() && !marker.exists() {
            bail!("{} exists and is not a demo folder: choose another with --out", out.display());
        }
        if let Some(other) = names.iter().find(|n| !DEMO_ENTRIES.contains(&n.as_str())) {
            bail!("{} holds {other}, which the demo did not make: move it, or choose another --out", out.display());
        }
    }
    // One demo at a time in a folder: locked before anything in it is removed.
    let _lock = lock_state(out)?;
    for sub in &DEMO_ENTRIES[2..] {
        let p = out.join(sub);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        } else if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    std::fs::write(&marker, "made by `trailwatch demo`, which makes this folder's contents anew each run\n")?;
    let started = std::time::Instant::now();
    let w = demo::generate(out)?;
    println!(
        "demo: {} days of 2 accounts in {}: {} CloudTrail records in {} files, {} Lambda invocations in {} Firehose objects ({:.1} s)",
        demo::DAYS,
        out.join("input").display(),
        w.trail_records,
        w.trail_files,
        w.invocations,
        w.log_objects,
        started.elapsed().as_secs_f64()
    );
    let path = |p: &str| out.join(p).to_string_lossy().into_owned();
    // The same settings `trailwatch run` has by default.
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        detect: DetectArgs,
    }
    let args = Defaults::try_parse_from([
        "trailwatch",
        "--lake",
        &path("lake"),
        "--state",
        &path("state"),
        "--findings",
        &path("findings.jsonl"),
        "--quiet",
    ])?
    .detect;
    let _state_lock = lock_state(&args.state)?;
    let (ingested, written) = ingest(&[path("input")], &args.lake, None, &Config::default(), true, progress)?;
    let detected = detect(&args, written, progress)?;
    let findings = read_findings(&args.findings)?;
    // One line an episode: its opening, and when it ended.
    let mut episodes: Vec<(&Finding, Option<&Finding>)> = Vec::new();
    for f in findings.iter().filter(|f| !f.suppressed) {
        match episodes.iter_mut().find(|(o, _)| o.id == f.id) {
            Some(e) => e.1 = Some(f),
            None => episodes.push((f, None)),
        }
    }
    episodes.sort_by_key(|(o, _)| o.start);
    println!("\nFindings ({}), one line an episode:", episodes.len());
    for (o, closed) in &episodes {
        // The closing finding says the whole episode ("...; from X to Y.").
        let summary = closed.map_or(o.summary.as_str(), |c| c.summary.strip_prefix("Ended: ").unwrap_or(&c.summary));
        println!(
            "  [{}] {} {}/{} {}: {}",
            o.severity.as_str().to_uppercase(),
            o.kind,
            o.account_id,
            o.region,
            clean(&o.subject, 80),
            clean(summary, 300),
        );
    }
    println!("\nWhat the demo planted, and what found it:");
    let mut found = 0;
    for p in demo::planted() {
        let hit = findings.iter().find(|f| p.matches(f));
        found += usize::from(hit.is_some());
        let when = trailwatch_core::time::format_rfc3339_millis(p.start * 1000);
        match hit {
            Some(f) => println!("  found   {} {} ({}): {}", p.kind, f.subject, &when[..16], p.what),
            None => println!("  MISSED  {} {} ({}): {}", p.kind, p.subject, &when[..16], p.what),
        }
    }
    let planted = demo::planted();
    let open = |f: &&Finding| f.status == Status::Open && !f.suppressed;
    let side = findings.iter().filter(open).filter(|f| planted.iter().any(|p| p.explains(f))).count();
    let other: Vec<&Finding> =
        findings.iter().filter(open).filter(|f| !planted.iter().any(|p| p.matches(f) || p.explains(f))).collect();
    println!(
        "{found} of {} incidents found; {side} side finding(s) of the same incidents; {} false alarm(s).",
        planted.len(),
        other.len()
    );
    for f in &other {
        println!("  false alarm? {} {} {}", f.kind, f.subject, trailwatch_core::time::format_rfc3339_millis(f.start));
    }
    println!("Benign look-alikes in the data: {}.", demo::BENIGN.join("; "));
    let page = out.join("report.html");
    report_run(&args.lake, &args.findings, &page, None, None)?;
    println!(
        "\nThe report is {} (open it in a browser). The lake is {}, the findings {}. Query the lake with DuckDB, for example:\n  duckdb -c \"SELECT function_name, count(*) FROM read_parquet('{}/lambda_invocations/*/*/*/*.parquet', hive_partitioning = true) GROUP BY ALL\"",
        page.display(),
        args.lake,
        args.findings.display(),
        args.lake
    );
    Ok(if ingested != ExitCode::SUCCESS { ingested } else { detected })
}

/// Writes the HTML report of `findings` over the lake.
fn report_run(
    lake: &str,
    findings: &std::path::Path,
    out: &std::path::Path,
    config: Option<&std::path::Path>,
    endpoint: Option<&str>,
) -> Result<()> {
    let cfg = load_config(config)?;
    let findings = read_findings(findings)?;
    let html = match parse_s3(lake) {
        Some((bucket, prefix)) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let client = rt.block_on(trailwatch_core::s3::client(endpoint));
            let src = trailwatch_core::s3::S3Source::new(client, rt.handle().clone());
            report::build(&src, &LakeLocation { bucket, prefix }, &findings, &cfg.prices)?
        }
        None => {
            if !std::path::Path::new(lake).is_dir() {
                bail!("--lake {lake}: no such folder (ingest writes it)");
            }
            report::build(
                &LocalFiles,
                &LakeLocation { bucket: String::new(), prefix: lake.to_string() },
                &findings,
                &cfg.prices,
            )?
        }
    };
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))
}

fn read_findings(path: &std::path::Path) -> Result<Vec<Finding>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("a finding in {}", path.display())))
        .collect()
}

/// Prints the Athena DDL or the Glue columns of every lake table.
fn schema(
    glue_json: bool,
    lake: &str,
    database: &str,
    accounts: Vec<String>,
    regions: Vec<String>,
    first_date: String,
) -> Result<ExitCode> {
    use trailwatch_core::athena::{columns, ddl, Projection, TABLES};
    if !lake.starts_with("s3://") {
        bail!("--lake must be s3://bucket/prefix: Athena reads the lake from S3");
    }
    if let Some(bad) = accounts.iter().find(|a| !trailwatch_core::lake::is_account_id(a)) {
        bail!("--account {bad}: an account id is 12 digits");
    }
    if let Some(bad) = regions.iter().find(|r| !trailwatch_core::lake::is_region(r) && r.as_str() != "unknown") {
        bail!("--region {bad}: not a region name");
    }
    if glue_json {
        let tables: serde_json::Map<String, serde_json::Value> = TABLES
            .iter()
            .map(|t| {
                let cols = columns(t).into_iter().map(|(n, ty)| serde_json::json!({"Name": n, "Type": ty})).collect();
                (t.name.to_string(), serde_json::Value::Array(cols))
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&tables)?);
    } else {
        print!("{}", ddl(database, lake, &Projection { accounts, regions, first_date }));
    }
    Ok(ExitCode::SUCCESS)
}

/// Compacts a local or S3 lake and says what changed.
fn compact(
    lake: &str,
    endpoint_url: Option<&str>,
    opts: &trailwatch_ingest::compact::CompactOptions,
) -> Result<ExitCode> {
    use trailwatch_ingest::compact::compact_lake;
    let r = match parse_s3(lake) {
        Some((bucket, prefix)) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let client = rt.block_on(trailwatch_core::s3::client(endpoint_url));
            let src = trailwatch_core::s3::S3Source::new(client.clone(), rt.handle().clone());
            let staging = std::env::temp_dir().join("trailwatch-staging");
            let dest = trailwatch_core::s3::S3Lake::new(client, rt.handle().clone(), &bucket, &prefix, staging);
            compact_lake(&src, &bucket, &prefix, &dest, opts)?
        }
        None => compact_lake(&LocalFiles, "", lake, &LocalLake::new(PathBuf::from(lake)), opts)?,
    };
    println!(
        "compact: {} partition-days before {}: {} files -> {} ({:.1} MB -> {:.1} MB); {} rows merged, {} older copies left out; {} skipped",
        r.partitions,
        opts.before_date,
        r.files_before,
        r.files_after,
        r.bytes_before as f64 / 1e6,
        r.bytes_after as f64 / 1e6,
        r.rows,
        r.rows_superseded,
        r.skipped.len()
    );
    for (what, why) in &r.skipped {
        eprintln!("skipped {what}: {why}");
    }
    Ok(if r.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The lock file of a state folder.
const STATE_LOCK: &str = ".lock";

/// Takes the state folder's exclusive lock (`<STATE>/.lock`) for a command that writes state,
/// held until the returned file is dropped (or the process ends, however it ends). Two runs on one
/// folder would read the same state and send the same alerts twice, so the second one stops at
/// once and says why.
fn lock_state(state: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(state).with_context(|| format!("creating the state folder {}", state.display()))?;
    let path = state.join(STATE_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the state lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "state folder {} is in use: another trailwatch run holds its lock ({}). Wait for that run to \
             finish, or give this one another --state",
            state.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking the state folder {}", state.display()))
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<DetectConfig> {
    match path {
        None => Ok(DetectConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Ok(DetectConfig::from_toml(&text, &p.display().to_string())?)
        }
    }
}

/// Runs detect over the lake; `handed` are files `trailwatch run` just wrote, by key relative to
/// the lake root, read from memory instead of the lake.
/// A progress bar for detect's reading of the lake (files, events, rate, ETA), when wanted.
struct DetectBar {
    bar: Option<indicatif::ProgressBar>,
    events: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl DetectBar {
    fn new(show: bool) -> Self {
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("detect {bar:20} {pos}/{len} lake files, {msg}, ETA {eta}")
                    .expect("a valid template"),
            );
            *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        DetectBar { bar, events: 0.into(), started: std::time::Instant::now() }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl trailwatch_detect::run::Progress for DetectBar {
    fn listed(&self, files: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(files);
        }
    }

    fn read(&self, files: u64, events: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.events.fetch_add(events, Relaxed) + events;
        if let Some(bar) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{total} events ({:.0}/s)", total as f64 / secs));
            bar.inc(files);
        }
    }
}

fn detect(args: &DetectArgs, handed: HashMap<String, handoff::HandedFile>, progress: bool) -> Result<ExitCode> {
    let mut cfg = load_config(args.config.as_deref())?;
    if !args.rules.is_empty() {
        cfg.ruleset = rules::load(&args.rules, &cfg.rules)?;
    }
    let store = DirState::new(&args.state);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let bar = DetectBar::new(progress);
    // The files ingest handed over are read from memory, the rest from the lake.
    let over = |inner: &dyn ObjectSource, loc: LakeLocation| {
        let src = handoff::Handed { inner, lake: loc.clone(), files: handed };
        let now = trailwatch_core::time::wall_clock_millis();
        trailwatch_detect::run::detect_lake_reporting(&src, &loc, &store, &cfg, now, &bar)
    };
    let (run, lake): (_, Box<dyn LakeStore>) = match parse_s3(&args.lake) {
        Some((bucket, prefix)) => {
            let client = rt.block_on(trailwatch_core::s3::client(args.endpoint_url.as_deref()));
            let src = trailwatch_core::s3::S3Source::new(client.clone(), rt.handle().clone());
            let run = over(&src, LakeLocation { bucket: bucket.clone(), prefix: prefix.clone() })?;
            let staging = std::env::temp_dir().join("trailwatch-staging");
            (run, Box::new(trailwatch_core::s3::S3Lake::new(client, rt.handle().clone(), &bucket, &prefix, staging)))
        }
        None => {
            let run = over(&LocalFiles, LakeLocation { bucket: String::new(), prefix: args.lake.clone() })?;
            (run, Box::new(LocalLake::new(PathBuf::from(&args.lake))))
        }
    };
    bar.finish();
    // Deliver first, commit state last: a crash in between re-emits the same ids, never loses.
    trailwatch_detect::output::write_findings(lake.as_ref(), &run.findings)?;
    append_findings(&args.findings, &run.findings)?;
    if !args.quiet {
        for f in &run.findings {
            print_finding(f);
        }
    }
    let failed = run.files_failed.len();
    let shown = run.findings.iter().filter(|f| !f.suppressed).count();
    println!(
        "detect: {} lake files read, {} unchanged, {} failed{}{}; {} events, {} duplicates, {} late{}; {} findings ({} suppressed); state: {}",
        run.files_read,
        run.files_unchanged,
        failed,
        match run.files_late {
            0 => String::new(),
            n => format!(", {n} arrived past the {}-day retention", trailwatch_detect::run::RETENTION_DAYS),
        },
        if run.full_listing { "" } else { " (recent partitions listed)" },
        run.counters.events,
        run.counters.duplicates,
        run.counters.too_late,
        match run.counters.future {
            0 => String::new(),
            n => format!(", {n} ahead of the wall clock (not trusted)"),
        },
        shown,
        run.findings.len() - shown,
        args.state.display()
    );
    if let Some(topic) = &args.sns_topic_arn {
        publish_alerts(args, topic, &run.findings, &rt)?;
    }
    run.commit(&store)?;
    if parse_s3(&args.lake).is_none() {
        let _ = std::fs::remove_dir(PathBuf::from(&args.lake).join(trailwatch_core::lake::STAGING_DIR));
    }
    drop(rt);
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Publishes the run's alerts to SNS. Errors (nothing published nor dead-lettered, or the sent
/// records unwritable) stop before the state is committed, so the next run tries again and the
/// sent records keep it from mailing twice.
fn publish_alerts(args: &DetectArgs, topic: &str, findings: &[Finding], rt: &tokio::runtime::Runtime) -> Result<()> {
    use trailwatch_alert::aws::{sns_client, SnsPublisher};
    let cfg = AlertConfig {
        fold_window_ms: args.fold_window_minutes * 60_000,
        digest_threshold: args.digest_threshold,
        min_severity: args.min_severity,
        ..AlertConfig::default()
    };
    let publisher = SnsPublisher {
        client: rt.block_on(sns_client(args.endpoint_url.as_deref())),
        handle: rt.handle().clone(),
        topic_arn: topic.to_string(),
    };
    let sent = FileSent::open(&args.state)?;
    let dead = FileDeadLetter::new(&args.state);
    let r = trailwatch_alert::alert(findings, &cfg, &sent, &publisher, &dead)?;
    println!(
        "alert: {} messages ({} digests) to {topic}; {} already sent, {} folded, {} retries, {} dead-lettered{}",
        r.messages,
        r.digests,
        r.already_sent,
        r.folded,
        r.retries,
        r.dead_lettered,
        if r.dead_lettered > 0 { format!(" to {}", dead.path().display()) } else { String::new() }
    );
    Ok(())
}

#[cfg(feature = "baseline")]
fn baseline(
    lake: &std::path::Path,
    state: &std::path::Path,
    config: Option<&std::path::Path>,
    findings: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let _lock = lock_state(state)?;
    let cfg = load_config(config)?;
    let r = trailwatch_baseline::learn(lake, &DirState::new(state), &cfg, trailwatch_core::time::wall_clock_millis())?;
    if let Some(path) = findings {
        append_findings(path, &r.findings)?;
    }
    println!(
        "baseline: {} days, {} lake files, {} rows learned into {} shards; {} findings in the history; state: {}",
        r.days,
        r.files,
        r.rows,
        r.shards,
        r.findings.len(),
        state.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "baseline"))]
fn baseline(
    _: &std::path::Path,
    _: &std::path::Path,
    _: Option<&std::path::Path>,
    _: Option<&std::path::Path>,
) -> Result<ExitCode> {
    eprintln!(
        "this trailwatch was built without the warm start: cargo build --release -p trailwatch-cli --features baseline"
    );
    Ok(ExitCode::from(2))
}

fn append_findings(path: &std::path::Path, findings: &[Finding]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    for x in findings {
        serde_json::to_writer(&mut buf, x)?;
        buf.push(b'\n');
    }
    f.write_all(&buf).with_context(|| format!("appending to {}", path.display()))?;
    Ok(())
}

/// Text from the data is attacker-controlled: no control characters reach the terminal.
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn print_finding(f: &Finding) {
    if f.suppressed {
        return;
    }
    let tag = match f.status {
        Status::Open => f.severity.as_str().to_uppercase(),
        Status::Closed => "ended".to_string(),
    };
    println!("[{tag}] {} {}/{} {}: {}", f.kind, f.account_id, f.region, clean(&f.subject, 120), clean(&f.summary, 400));
}

/// Counts for the closing line.
#[derive(Default)]
struct Totals {
    read: u64,
    skipped: u64,
    failed: u64,
    records: u64,
    rejected: u64,
    /// Records ahead of the wall clock, and the objects that held them.
    future: u64,
    future_objects: Vec<String>,
}

/// Ingests `inputs` into the lake; with `keep`, also returns the lake files written (up to
/// [`handoff::KEEP_BYTES`]) by key relative to the lake root, for detect.
fn ingest(
    inputs: &[String],
    lake_arg: &str,
    endpoint: Option<&str>,
    cfg: &Config,
    keep: bool,
    progress: bool,
) -> Result<(ExitCode, HashMap<String, handoff::HandedFile>)> {
    let needs_s3 = parse_s3(lake_arg).is_some() || inputs.iter().any(|i| parse_s3(i).is_some());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let s3 = needs_s3.then(|| rt.block_on(trailwatch_core::s3::client(endpoint)));
    let handle = rt.handle().clone();

    let lake: Box<dyn LakeStore> = match parse_s3(lake_arg) {
        Some((bucket, prefix)) => {
            let staging = std::env::temp_dir().join("trailwatch-staging");
            Box::new(trailwatch_core::s3::S3Lake::new(
                s3.clone().expect("client built"),
                handle.clone(),
                &bucket,
                &prefix,
                staging,
            ))
        }
        None => Box::new(LocalLake::new(PathBuf::from(lake_arg))),
    };
    let tee = keep.then(|| handoff::Tee::new(lake.as_ref()));
    let lake: &dyn LakeStore = match &tee {
        Some(t) => t,
        None => lake.as_ref(),
    };
    let s3_src = s3.map(|c| trailwatch_core::s3::S3Source::new(c, handle));
    let mut totals = Totals::default();

    // Everything is listed first, so the bar knows how many objects there are.
    let mut listed: Vec<(&dyn ObjectSource, Vec<ObjectRef>)> = Vec::new();
    for input in inputs {
        listed.push(match parse_s3(input) {
            Some((bucket, prefix)) => {
                let src = s3_src.as_ref().expect("client built");
                (src, src.list(&bucket, &prefix).with_context(|| format!("listing {input}"))?)
            }
            None => {
                if !std::path::Path::new(input).exists() {
                    bail!("{input}: no such file or folder");
                }
                (&LocalFiles, LocalFiles.list("", input).with_context(|| format!("listing {input}"))?)
            }
        });
    }
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(listed.iter().map(|(_, o)| o.len() as u64).sum());
        bar.set_style(
            indicatif::ProgressStyle::with_template("ingest {bar:20} {pos}/{len} objects, {msg}, ETA {eta}")
                .expect("a valid template"),
        );
        *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        bar
    });
    let started = std::time::Instant::now();
    for (src, objects) in listed {
        for obj in objects {
            match ingest_object_at(src, &obj, lake, cfg, trailwatch_core::time::wall_clock_millis()) {
                Ok(r) => {
                    match r.outcome {
                        Outcome::Ingested => totals.read += 1,
                        Outcome::Skipped(why) => {
                            tracing::info!("skipped {}: {why}", r.uri);
                            totals.skipped += 1;
                        }
                    }
                    if r.rejected > 0 {
                        tracing::warn!(
                            "{}: {} record(s) rejected, see {}",
                            r.uri,
                            r.rejected,
                            r.lake_keys.last().map(String::as_str).unwrap_or("")
                        );
                    }
                    if r.future_records > 0 {
                        totals.future += r.future_records;
                        totals.future_objects.push(r.uri.clone());
                    }
                    totals.records += r.records;
                    totals.rejected += r.rejected;
                }
                Err(e) => {
                    totals.failed += 1;
                    // Say what to do: a passing fault needs another run, a bad object a look.
                    if e.is_retryable() {
                        tracing::error!("failed {e}; this may pass: run the same command again");
                    } else {
                        match record_failure(lake, &obj, &e) {
                            Ok(key) => tracing::error!(
                                "failed {e}; the object cannot be read as it is, and is recorded with the reason in {}/{key} (the other objects are written)",
                                lake.root_uri().trim_end_matches('/')
                            ),
                            Err(e2) => tracing::error!("failed {e}; and could not record the failure: {e2}"),
                        }
                    }
                }
            }
            if let Some(bar) = &bar {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{} records ({:.0}/s)", totals.records, totals.records as f64 / secs));
                bar.inc(1);
            }
        }
    }
    if let Some(bar) = bar {
        *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        bar.finish_and_clear();
    }
    println!(
        "files: {} read, {} skipped, {} failed; records: {} written, {} rejected; lake: {}",
        totals.read,
        totals.skipped,
        totals.failed,
        totals.records,
        totals.rejected,
        lake.root_uri()
    );
    if totals.future > 0 {
        // Kept in the lake as evidence; detect reports them as event_time_skew.
        println!(
            "warning: {} record(s) claim event times ahead of this machine's clock, in: {}",
            totals.future,
            totals.future_objects.join(", ")
        );
    }
    if parse_s3(lake_arg).is_none() {
        // Staging folders are removed as objects finish; drop the empty parent too.
        let _ = std::fs::remove_dir(PathBuf::from(lake_arg).join(trailwatch_core::lake::STAGING_DIR));
    }
    drop(rt);
    let written = tee.map(handoff::Tee::into_files).unwrap_or_default();
    Ok((if totals.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }, written))
}
