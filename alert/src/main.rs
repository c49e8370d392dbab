//! The `alert` Lambda: reads its configuration once, builds the clients once, and hands each
//! event (the lake's new findings objects, through SQS) to the pure handler on a blocking thread.
//!
//! Environment: `SNS_TOPIC_ARN` (required), `SENT_TABLE` (the DynamoDB table of sent records,
//! keyed by `pk`; the detect state table serves, required), `DEAD_LETTER_QUEUE_URL` (required),
//! `LAKE_PREFIX` (default empty), `FOLD_WINDOW_MINUTES` (default 360), `DIGEST_THRESHOLD`
//! (default 5), `MIN_SEVERITY` (default `info`), `ATHENA_DATABASE` and `ATHENA_WORKGROUP`
//! (default `trailwatch`), and `AWS_ENDPOINT_URL_*` for tests.

use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_alert::aws::{dynamodb_client, sns_client, sqs_client, DynamoSent, SnsPublisher, SqsDeadLetter};
use trailwatch_alert::handler::{handle_event, Deps};
use trailwatch_alert::AlertConfig;
use trailwatch_core::s3::{client, S3Source};

struct Clients {
    src: S3Source,
    sent: DynamoSent,
    publisher: SnsPublisher,
    dead: SqsDeadLetter,
    prefix: String,
    cfg: AlertConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // A bad setting fails the start (an init error), before any event is taken.
    let cfg = AlertConfig::from_env(env).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let handle = tokio::runtime::Handle::current();
    let deps = Arc::new(Clients {
        src: S3Source::new(client(env("AWS_ENDPOINT_URL_S3").as_deref()).await, handle.clone()),
        sent: DynamoSent {
            client: dynamodb_client(env("AWS_ENDPOINT_URL_DYNAMODB").as_deref()).await,
            handle: handle.clone(),
            table: env("SENT_TABLE").context("SENT_TABLE must name the DynamoDB table of sent alerts")?,
        },
        publisher: SnsPublisher {
            client: sns_client(env("AWS_ENDPOINT_URL_SNS").as_deref()).await,
            handle: handle.clone(),
            topic_arn: env("SNS_TOPIC_ARN").context("SNS_TOPIC_ARN must name the alert topic")?,
        },
        dead: SqsDeadLetter {
            client: sqs_client(env("AWS_ENDPOINT_URL_SQS").as_deref()).await,
            handle,
            queue_url: env("DEAD_LETTER_QUEUE_URL")
                .context("DEAD_LETTER_QUEUE_URL must name the alert dead-letter queue")?,
        },
        prefix: env("LAKE_PREFIX").unwrap_or_default(),
        cfg,
    });
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| {
        let c = deps.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let deps = Deps { src: &c.src, sent: &c.sent, publisher: &c.publisher, dead: &c.dead };
                handle_event(&ev.payload, &c.prefix, &deps, &c.cfg)
            })
            .await
            .map_err(|e| Diagnostic {
                error_type: "Retryable".into(),
                error_message: format!("handler panicked: {e}"),
            })?;
            match out {
                Ok((reply, summary)) => {
                    tracing::info!(?summary, "event handled");
                    Ok::<Value, Diagnostic>(reply)
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
