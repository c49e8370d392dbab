//! The `detect` Lambda: reads its configuration once, builds the clients once, and hands each
//! event (lake object notifications, or the scheduled sweep) to the pure handler on a blocking
//! thread.
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `STATE_TABLE` (the
//! DynamoDB table, required), `STATE_BUCKET` (default `LAKE_BUCKET`), `STATE_PREFIX` (default
//! `detect-state/`), `DETECT_CONFIG` (the TOML config itself, optional), `STAGING_DIR`
//! (default `/tmp/trailwatch`), `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_DYNAMODB` (tests).

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::finding::Finding;
use trailwatch_core::s3::{client, S3Lake, S3Source};
use trailwatch_detect::aws::{dynamodb_client, DynamoS3Store};
use trailwatch_detect::handler::{handle_event, Deliver};
use trailwatch_detect::{DetectConfig, DetectError};

/// Findings go to the lake's findings table (alert subscribes to them in its own issue).
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
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let bucket = env("LAKE_BUCKET").context("LAKE_BUCKET must name the lake bucket")?;
    let prefix = env("LAKE_PREFIX").unwrap_or_default();
    let table = env("STATE_TABLE").context("STATE_TABLE must name the DynamoDB state table")?;
    let cfg = match env("DETECT_CONFIG") {
        Some(text) => DetectConfig::from_toml(&text, "DETECT_CONFIG")?,
        None => DetectConfig::default(),
    };
    let s3 = client(env("AWS_ENDPOINT_URL_S3").as_deref()).await;
    let ddb = dynamodb_client(env("AWS_ENDPOINT_URL_DYNAMODB").as_deref()).await;
    let handle = tokio::runtime::Handle::current();
    let staging = env("STAGING_DIR").unwrap_or_else(|| "/tmp/trailwatch".into());
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        store: DynamoS3Store {
            ddb,
            s3: s3.clone(),
            handle: handle.clone(),
            table,
            bucket: env("STATE_BUCKET").unwrap_or_else(|| bucket.clone()),
            prefix: env("STATE_PREFIX").unwrap_or_else(|| "detect-state/".into()),
        },
        out: ToLake(S3Lake::new(s3, handle, &bucket, &prefix, staging.into())),
        prefix,
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
