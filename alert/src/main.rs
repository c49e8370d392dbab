//! The `alert` Lambda: reads its configuration once, builds the clients once, and hands each
//! event (the lake's new findings objects, through SQS) to the pure handler on a blocking thread.
//!
//! Environment: `SNS_TOPIC_ARN` (required), `SENT_TABLE` (the DynamoDB table of sent records,
//! keyed by `pk`; the detect state table serves, required), `DEAD_LETTER_QUEUE_URL` (required),
//! `LAKE_PREFIX` (default empty), `FOLD_WINDOW_MINUTES` (default 360), `DIGEST_THRESHOLD`
//! (default 5), `MIN_SEVERITY` (default `info`), `ATHENA_DATABASE` and `ATHENA_WORKGROUP`
//! (default `trailwatch`), and `AWS_ENDPOINT_URL_S3`, `_DYNAMODB`, `_SNS` and `_SQS` for tests.
//! An empty variable counts as unset. The SDK configuration is loaded once; SNS's client has the
//! SDK's retries off (the alert retry policy is the budget).

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use trailwatch_alert::aws::{sns, sqs, DynamoSent, SnsPublisher, SqsDeadLetter};
use trailwatch_alert::handler::{handle_event, Deps};
use trailwatch_alert::AlertConfig;
use trailwatch_core::env::Env;
use trailwatch_core::s3::S3Source;

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
    trailwatch_core::lambda::init_tracing();
    // A bad setting fails the start (an init error), before any event is taken.
    let env = Env::from_os();
    let cfg = AlertConfig::from_env(env.lookup()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let shared = trailwatch_core::aws::load(None).await;
    let handle = tokio::runtime::Handle::current();
    let deps = Arc::new(Clients {
        src: S3Source::new(trailwatch_core::aws::s3(&shared, env.endpoint("S3")), handle.clone()),
        sent: DynamoSent {
            client: trailwatch_core::aws::dynamodb(&shared, env.endpoint("DYNAMODB")),
            handle: handle.clone(),
            table: env.required("SENT_TABLE", "the DynamoDB table of sent alerts")?.to_string(),
        },
        publisher: SnsPublisher {
            client: sns(&shared, env.endpoint("SNS")),
            handle: handle.clone(),
            topic_arn: env.required("SNS_TOPIC_ARN", "the alert topic")?.to_string(),
        },
        dead: SqsDeadLetter {
            client: sqs(&shared, env.endpoint("SQS")),
            handle,
            queue_url: env.required("DEAD_LETTER_QUEUE_URL", "the alert dead-letter queue")?.to_string(),
        },
        prefix: env.lake_prefix(),
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
