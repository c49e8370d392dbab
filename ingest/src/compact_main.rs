//! The `compact` Lambda: run hourly by the stack's schedule, it merges the lake's closed
//! partition-days into large files ([`trailwatch_ingest::compact`]). Reads its configuration
//! once and builds the S3 client once.
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `AWS_ENDPOINT_URL_S3`
//! (optional), `STAGING_DIR` (default `/tmp/trailwatch`), `COMPACT_CLOSED_AFTER_DAYS` (4),
//! `COMPACT_MIN_AGE_MINUTES` (1500), `COMPACT_TARGET_MB` (128). The event is not read: every
//! invocation compacts whatever is due. The clock is read once per invocation, here.

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::env::{Env, EnvError};
use trailwatch_core::s3::{S3Lake, S3Source};
use trailwatch_ingest::compact::{compact_lake, CompactOptions, DEFAULT_CLOSED_AFTER_DAYS, DEFAULT_MIN_AGE_MINUTES};

struct Deps {
    src: S3Source,
    lake: S3Lake,
    bucket: String,
    prefix: String,
    settings: Settings,
}

#[derive(Debug, PartialEq, Eq)]
struct Settings {
    closed_after_days: i64,
    min_age_minutes: i64,
    target_mb: u64,
}

fn settings(env: &Env) -> Result<Settings, EnvError> {
    Ok(Settings {
        closed_after_days: env.parse("COMPACT_CLOSED_AFTER_DAYS", DEFAULT_CLOSED_AFTER_DAYS)?,
        min_age_minutes: env.parse("COMPACT_MIN_AGE_MINUTES", DEFAULT_MIN_AGE_MINUTES)?,
        target_mb: env.parse("COMPACT_TARGET_MB", 128)?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    trailwatch_core::lambda::init_tracing();
    let env = Env::from_os();
    let bucket = env.required("LAKE_BUCKET", "the lake bucket")?.to_string();
    let prefix = env.lake_prefix();
    let settings = settings(&env)?;
    let s3 = trailwatch_core::aws::s3(&trailwatch_core::aws::load(None).await, env.endpoint("S3"));
    let handle = tokio::runtime::Handle::current();
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        lake: S3Lake::new(s3, handle, &bucket, &prefix, env.staging_dir()),
        bucket,
        prefix,
        settings,
    });
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| {
        let deps = deps.clone();
        let now = trailwatch_core::time::wall_clock_millis();
        async move {
            let s = &deps.settings;
            let opts = CompactOptions::at(now, s.closed_after_days, s.min_age_minutes, s.target_mb);
            let out = tokio::task::spawn_blocking(move || {
                compact_lake(&deps.src, &deps.bucket, &deps.prefix, &deps.lake, &opts)
            })
            .await
            .map_err(|e| Diagnostic {
                error_type: "Retryable".into(),
                error_message: format!("compaction panicked: {e}"),
            })?;
            match out {
                Ok(r) => {
                    tracing::info!(?r, "compaction done");
                    serde_json::to_value(&r)
                        .map_err(|e| Diagnostic { error_type: "NonRetryable".into(), error_message: e.to_string() })
                }
                // The next scheduled run starts over: merged files are stored before their
                // inputs are deleted, so nothing was lost.
                Err(e) => Err(Diagnostic { error_type: "Retryable".into(), error_message: e.to_string() }),
            }
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_defaults() {
        let s = settings(&Env::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(s, Settings { closed_after_days: 4, min_age_minutes: 1500, target_mb: 128 });
        let s = settings(&Env::from_pairs([("COMPACT_MIN_AGE_MINUTES", "0"), ("COMPACT_TARGET_MB", "256")])).unwrap();
        assert_eq!((s.min_age_minutes, s.target_mb), (0, 256));
        assert_eq!(
            settings(&Env::from_pairs([("COMPACT_CLOSED_AFTER_DAYS", "soon")])).unwrap_err().name,
            "COMPACT_CLOSED_AFTER_DAYS"
        );
    }
}
