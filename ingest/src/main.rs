//! The `ingest` Lambda: reads its configuration once, builds the S3 client once, and hands each
//! event to the pure handler on a blocking thread (the handler streams objects synchronously).
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `AWS_ENDPOINT_URL_S3`
//! (optional, for a local S3), `STAGING_DIR` (default `/tmp/trailwatch`), `LOGS_DEFAULT_REGION`
//! (the region of CloudWatch Logs data whose key names none; default `AWS_REGION`),
//! `EXPORT_LOG_GROUPS` (`prefix=group,prefix=group` for export-task files), and
//! `MAX_FUTURE_SKEW_MINUTES` (how far ahead of the clock an event time may be before the record
//! counts as future-dated; default 5). The clock is read once per event, here.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::s3::{client, S3Lake, S3Source};
use trailwatch_ingest::handler::handle_event;
use trailwatch_ingest::{Config, DEFAULT_MAX_FUTURE_SKEW};

struct Deps {
    src: S3Source,
    lake: S3Lake,
    cfg: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let bucket = std::env::var("LAKE_BUCKET").context("LAKE_BUCKET must name the lake bucket")?;
    let prefix = std::env::var("LAKE_PREFIX").unwrap_or_default();
    let staging = std::env::var("STAGING_DIR").unwrap_or_else(|_| "/tmp/trailwatch".into());
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").ok();
    let max_future_skew = match std::env::var("MAX_FUTURE_SKEW_MINUTES") {
        Ok(v) => Duration::from_secs(
            60 * v.trim().parse::<u64>().context("MAX_FUTURE_SKEW_MINUTES must be a whole number of minutes")?,
        ),
        Err(_) => DEFAULT_MAX_FUTURE_SKEW,
    };
    let s3 = client(endpoint.as_deref()).await;
    let handle = tokio::runtime::Handle::current();
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        lake: S3Lake::new(s3, handle, &bucket, &prefix, staging.into()),
        cfg: Config {
            default_region: std::env::var("LOGS_DEFAULT_REGION").or_else(|_| std::env::var("AWS_REGION")).ok(),
            export_log_groups: std::env::var("EXPORT_LOG_GROUPS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| p.split_once('=').map(|(a, b)| (a.trim().to_string(), b.trim().to_string())))
                .collect(),
            max_future_skew,
            ..Config::default()
        },
    });
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let deps = deps.clone();
        let now = trailwatch_core::time::wall_clock_millis();
        async move {
            let out =
                tokio::task::spawn_blocking(move || handle_event(&ev.payload, &deps.src, &deps.lake, &deps.cfg, now))
                    .await
                    .map_err(|e| Diagnostic {
                        error_type: "Retryable".into(),
                        error_message: format!("handler panicked: {e}"),
                    })?;
            match out {
                Ok((reply, summary)) => {
                    tracing::info!(?summary, "event handled");
                    serde_json::to_value(&reply)
                        .map_err(|e| Diagnostic { error_type: "NonRetryable".into(), error_message: e.to_string() })
                }
                Err(e) => Err(Diagnostic { error_type: "Retryable".into(), error_message: e.to_string() }),
            }
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
