//! `trailwatch`: the pipeline on a laptop. Local files or S3 in, a local (or S3) Parquet lake out,
//! no AWS account needed for local paths.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use trailwatch_core::store::{LakeStore, LocalFiles, LocalLake, ObjectRef, ObjectSource};
use trailwatch_ingest::{ingest_object, record_failure, Config, Outcome};

#[derive(Parser)]
#[command(name = "trailwatch", version, about = "Find attacks and failures in CloudTrail and CloudWatch logs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    },
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAILWATCH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest { inputs, lake, endpoint_url, region, export_log_groups } => {
            let cfg = Config { default_region: region, export_log_groups, ..Config::default() };
            ingest(&inputs, &lake, endpoint_url.as_deref(), &cfg)
        }
    }
}

/// Counts for the closing line.
#[derive(Default)]
struct Totals {
    read: u64,
    skipped: u64,
    failed: u64,
    records: u64,
    rejected: u64,
}

fn ingest(inputs: &[String], lake_arg: &str, endpoint: Option<&str>, cfg: &Config) -> Result<ExitCode> {
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
    let s3_src = s3.map(|c| trailwatch_core::s3::S3Source::new(c, handle));
    let mut totals = Totals::default();

    for input in inputs {
        let (src, objects): (&dyn ObjectSource, Vec<ObjectRef>) = match parse_s3(input) {
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
        };
        for obj in objects {
            match ingest_object(src, &obj, lake.as_ref(), cfg) {
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
                    totals.records += r.records;
                    totals.rejected += r.rejected;
                }
                Err(e) => {
                    tracing::error!("failed {e}");
                    totals.failed += 1;
                    if !e.is_retryable() {
                        if let Err(e2) = record_failure(lake.as_ref(), &obj, &e) {
                            tracing::error!("could not record the failure: {e2}");
                        }
                    }
                }
            }
        }
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
    if parse_s3(lake_arg).is_none() {
        // Staging folders are removed as objects finish; drop the empty parent too.
        let _ = std::fs::remove_dir(PathBuf::from(lake_arg).join(trailwatch_core::lake::STAGING_DIR));
    }
    drop(rt);
    Ok(if totals.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
