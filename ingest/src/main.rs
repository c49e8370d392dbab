//! The `ingest` Lambda: reads its configuration once, builds the S3 client once, and hands each
//! event to the pure handler on a blocking thread (the handler streams objects synchronously).
//!
//! Environment: `LAKE_BUCKET` (required), `LAKE_PREFIX` (default empty), `AWS_ENDPOINT_URL_S3`
//! (optional, for a local S3), `STAGING_DIR` (default `/tmp/trailwatch`), `LOGS_DEFAULT_REGION`
//! (the region of CloudWatch Logs data whose key names none; default `AWS_REGION`),
//! `EXPORT_LOG_GROUPS` (`prefix=group,prefix=group` for export-task files; an entry without `=`
//! fails the start), and
//! `MAX_FUTURE_SKEW_MINUTES` (how far ahead of the clock an event time may be before the record
//! counts as future-dated; default 5). An empty variable counts as unset. The clock is read once
//! per event, here.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_core::env::{Env, EnvError};
use trailwatch_core::s3::{S3Lake, S3Source};
use trailwatch_ingest::handler::handle_event;
use trailwatch_ingest::{Config, DEFAULT_MAX_FUTURE_SKEW};

struct Deps {
    src: S3Source,
    lake: S3Lake,
    cfg: Config,
}

/// The handler's settings from the environment.
fn config(env: &Env) -> Result<Config, EnvError> {
    let minutes = env.parse::<u64>("MAX_FUTURE_SKEW_MINUTES", DEFAULT_MAX_FUTURE_SKEW.as_secs() / 60)?;
    Ok(Config {
        default_region: env.optional("LOGS_DEFAULT_REGION").or(env.optional("AWS_REGION")).map(str::to_string),
        export_log_groups: env.pairs("EXPORT_LOG_GROUPS")?,
        max_future_skew: Duration::from_secs(60 * minutes),
        ..Config::default()
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    trailwatch_core::lambda::init_tracing();
    // A bad setting fails the start (an init error), before any event is taken.
    let env = Env::from_os();
    let bucket = env.required("LAKE_BUCKET", "the lake bucket")?;
    let prefix = env.lake_prefix();
    let cfg = config(&env)?;
    let s3 = trailwatch_core::aws::s3(&trailwatch_core::aws::load(None).await, env.endpoint("S3"));
    let handle = tokio::runtime::Handle::current();
    let deps = Arc::new(Deps {
        src: S3Source::new(s3.clone(), handle.clone()),
        lake: S3Lake::new(s3, handle, bucket, &prefix, env.staging_dir()),
        cfg,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_defaults() {
        let cfg = config(&Env::from_pairs([("AWS_REGION", "eu-west-1")])).unwrap();
        assert_eq!(cfg.default_region.as_deref(), Some("eu-west-1"));
        assert!(cfg.export_log_groups.is_empty());
        assert_eq!(cfg.max_future_skew, DEFAULT_MAX_FUTURE_SKEW);
        let cfg = config(&Env::from_pairs([
            ("AWS_REGION", "eu-west-1"),
            ("LOGS_DEFAULT_REGION", "us-east-2"),
            ("EXPORT_LOG_GROUPS", "exports/a=/aws/lambda/a, exports/b = /aws/lambda/b"),
            ("MAX_FUTURE_SKEW_MINUTES", "10"),
        ]))
        .unwrap();
        assert_eq!(cfg.default_region.as_deref(), Some("us-east-2"));
        assert_eq!(
            cfg.export_log_groups,
            [("exports/a".to_string(), "/aws/lambda/a".to_string()), ("exports/b".into(), "/aws/lambda/b".into())]
        );
        assert_eq!(cfg.max_future_skew, Duration::from_secs(600));
    }

    #[test]
    fn a_malformed_export_log_group_fails_the_start() {
        // It used to be dropped silently; the CLI's --export-log-group always refused it.
        let e = config(&Env::from_pairs([("EXPORT_LOG_GROUPS", "exports/a=/aws/lambda/a,exports/b")])).unwrap_err();
        assert_eq!(e.to_string(), "EXPORT_LOG_GROUPS: `exports/b` is not KEY=VALUE");
        let e = config(&Env::from_pairs([("MAX_FUTURE_SKEW_MINUTES", "soon")])).unwrap_err();
        assert_eq!(e.name, "MAX_FUTURE_SKEW_MINUTES");
    }
}
