//! The `detect` Lambda: reads its configuration once, builds the clients once, and hands each
//! event (lake object notifications, or the scheduled sweep) to the pure handler on a blocking
//! thread.
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `STATE_TABLE` (the
//! DynamoDB table, required), `STATE_BUCKET` (default `LAKE_BUCKET`), `STATE_PREFIX` (default
//! `<LAKE_PREFIX>detect-state/`, a folder ingest never reads), `DETECT_CONFIG` (the TOML config itself, optional),
//! `RULES` (Sigma rule sources read at start, comma-separated: `bundled` for trailwatch's pack,
//! `lake` for `.yml` rules under `<LAKE_PREFIX>rules/` in the lake bucket, `s3://bucket/prefix`,
//! or `none`; default `bundled,lake`), `STAGING_DIR`
//! (default `/tmp/trailwatch`), `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_DYNAMODB` (tests).
//! An empty variable counts as unset.
//!
//! After every event it logs `DetectLagSeconds` (wall clock minus the deployment's event-time
//! clock) as an Embedded Metric Format line, the metric the stack's lag alarm watches.
//!
//! Findings go to the lake's `findings` table; the alert Lambda is notified of each new
//! findings object and publishes the alerts.

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::env::Env;
use trailwatch_core::finding::Finding;
use trailwatch_core::lake::DETECT_STATE_DIR;
use trailwatch_core::metrics::{emf_line, Metric};
use trailwatch_core::s3::{S3Lake, S3Source};
use trailwatch_detect::aws::DynamoS3Store;
use trailwatch_detect::config::Rules;
use trailwatch_detect::handler::{handle_event, Deliver};
use trailwatch_detect::sigma::RuleSet;
use trailwatch_detect::{DetectConfig, DetectError};

/// Findings go to the lake's findings table, where the alert Lambda is notified of them.
struct ToLake(S3Lake);

impl Deliver for ToLake {
    fn deliver(&self, findings: &[Finding]) -> Result<(), DetectError> {
        trailwatch_detect::output::write_findings(&self.0, findings).map(|_| ())
    }

    fn reject(&self, what: &str, reason: &str) -> Result<(), DetectError> {
        trailwatch_detect::output::write_reject(&self.0, what, reason).map(|_| ())
    }
}

struct Deps {
    src: S3Source,
    store: DynamoS3Store,
    out: ToLake,
    prefix: String,
    cfg: DetectConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    trailwatch_core::lambda::init_tracing();
    // A bad setting fails the start (an init error), before any event is taken.
    let env = Env::from_os();
    let bucket = env.required("LAKE_BUCKET", "the lake bucket")?;
    let prefix = env.lake_prefix();
    let table = env.required("STATE_TABLE", "the DynamoDB state table")?;
    let mut cfg = match env.optional("DETECT_CONFIG") {
        Some(text) => DetectConfig::from_toml(text, "DETECT_CONFIG")?,
        None => DetectConfig::default(),
    };
    let shared = trailwatch_core::aws::load(None).await;
    let s3 = trailwatch_core::aws::s3(&shared, env.endpoint("S3"));
    let ddb = trailwatch_core::aws::dynamodb(&shared, env.endpoint("DYNAMODB"));
    let handle = tokio::runtime::Handle::current();
    // Rules load once; one that cannot be loaded is logged with its file, the others run.
    let lake_rules = format!("s3://{bucket}/{prefix}rules/");
    let spec: Vec<String> = env
        .or("RULES", "bundled,lake")
        .split(',')
        .map(|s| if s.trim() == "lake" { lake_rules.clone() } else { s.to_string() })
        .collect();
    let spec = spec.join(",");
    let rules_src = S3Source::new(s3.clone(), handle.clone());
    let rules_cfg = cfg.rules.clone();
    let set = tokio::task::spawn_blocking(move || RuleSet::from_spec(&spec, &rules_src, &rules_cfg))
        .await?
        .map_err(|e| anyhow::anyhow!("RULES: {e}"))?;
    for e in &set.errors {
        tracing::warn!(rule = %e, "rule not loaded");
    }
    tracing::info!(rules = set.rules.len(), correlations = set.correlations.len(), "rules loaded");
    cfg.ruleset = Rules::new(set);
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        store: DynamoS3Store {
            ddb,
            s3: s3.clone(),
            handle: handle.clone(),
            table: table.to_string(),
            bucket: env.or("STATE_BUCKET", bucket).to_string(),
            prefix: env
                .optional("STATE_PREFIX")
                .map_or_else(|| format!("{prefix}{DETECT_STATE_DIR}/"), trailwatch_core::lake::normalize_prefix),
        },
        out: ToLake(S3Lake::new(s3, handle, bucket, &prefix, env.staging_dir())),
        prefix,
        cfg,
    });
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let deps = deps.clone();
        async move {
            let now = trailwatch_core::time::wall_clock_millis();
            let out = tokio::task::spawn_blocking(move || {
                handle_event(&ev.payload, &deps.prefix, &deps.src, &deps.store, &deps.out, &deps.cfg, now)
            })
            .await
            .map_err(|e| Diagnostic {
                error_type: "Retryable".into(),
                error_message: format!("handler panicked: {e}"),
            })?;
            match out {
                Ok(summary) => {
                    tracing::info!(?summary, "event handled");
                    if let Some(lag) = summary.lag_seconds(now) {
                        // Alone on its line, as EMF wants: CloudWatch Logs makes the metric.
                        let lag = Metric { name: "DetectLagSeconds", value: lag, unit: "Seconds" };
                        println!("{}", emf_line(now, &[("Function", "detect")], &[lag]));
                    }
                    Ok(summary.reply())
                }
                Err(e) => Err(Diagnostic {
                    error_type: if e.is_retryable() { "Retryable" } else { "NonRetryable" }.into(),
                    error_message: e.to_string(),
                }),
            }
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
