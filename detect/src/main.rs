//! The `detect` Lambda: reads its configuration once, builds the clients once, and hands each
//! event (lake object notifications, or the scheduled sweep) to the pure handler on a blocking
//! thread.
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `STATE_TABLE` (the
//! DynamoDB table, required), `STATE_BUCKET` (default `LAKE_BUCKET`), `STATE_PREFIX` (default
//! `detect-state/`), `DETECT_CONFIG` (the TOML config itself, optional), `STAGING_DIR`
//! (default `/tmp/trailwatch`), `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_DYNAMODB` (tests).
//! An empty variable counts as unset.
//!
//! Findings go to the lake's `findings` table; the alert Lambda is notified of each new
//! findings object and publishes the alerts.

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::env::Env;
use trailwatch_core::finding::Finding;
use trailwatch_core::s3::{S3Lake, S3Source};
use trailwatch_detect::aws::DynamoS3Store;
use trailwatch_detect::handler::{handle_event, Deliver};
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
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    // A bad setting fails the start (an init error), before any event is taken.
    let env = Env::from_os();
    let bucket = env.required("LAKE_BUCKET", "the lake bucket")?;
    let prefix = env.or("LAKE_PREFIX", "");
    let table = env.required("STATE_TABLE", "the DynamoDB state table")?;
    let cfg = match env.optional("DETECT_CONFIG") {
        Some(text) => DetectConfig::from_toml(text, "DETECT_CONFIG")?,
        None => DetectConfig::default(),
    };
    let shared = trailwatch_core::aws::load(None).await;
    let s3 = trailwatch_core::aws::s3(&shared, env.optional("AWS_ENDPOINT_URL_S3"));
    let ddb = trailwatch_core::aws::dynamodb(&shared, env.optional("AWS_ENDPOINT_URL_DYNAMODB"));
    let handle = tokio::runtime::Handle::current();
    let staging = env.or("STAGING_DIR", "/tmp/trailwatch");
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        store: DynamoS3Store {
            ddb,
            s3: s3.clone(),
            handle: handle.clone(),
            table: table.to_string(),
            bucket: env.or("STATE_BUCKET", bucket).to_string(),
            prefix: env.or("STATE_PREFIX", "detect-state/").to_string(),
        },
        out: ToLake(S3Lake::new(s3, handle, bucket, prefix, staging.into())),
        prefix: prefix.to_string(),
        cfg,
    });
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let deps = deps.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let now = trailwatch_core::time::wall_clock_millis();
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
