//! The ingest Lambda's logic, generic over the store traits so tests can run it against any S3
//! endpoint. With SQS it answers with a partial batch response: only messages whose objects hit
//! a transient failure are retried; permanently bad objects are recorded under `_rejected/` and
//! acknowledged.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use serde::Serialize;
use serde_json::Value;
use trailwatch_core::store::{LakeStore, ObjectSource};

use crate::event::decode_event;
use crate::{ingest_object, record_failure, Config, Outcome};

/// What one invocation did, for the log and the caller.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects_ingested: u64,
    pub objects_skipped: u64,
    pub objects_rejected: u64,
    pub objects_retry: u64,
    pub records: u64,
    pub records_rejected: u64,
    pub lake_keys: Vec<String>,
}

/// An invocation that should fail so Lambda retries it (only for events not from SQS).
#[derive(Debug, thiserror::Error)]
#[error("retryable: {failures} object(s) failed transiently; first: {first}")]
pub struct RetryableFailure {
    pub failures: u64,
    pub first: String,
}

/// The reply: a batch response for SQS events, a summary for the rest.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Sqs(SqsBatchResponse),
    Summary(Summary),
}

/// Handles one Lambda event.
pub fn handle_event(
    event: &Value,
    src: &dyn ObjectSource,
    lake: &dyn LakeStore,
    cfg: &Config,
) -> Result<(Reply, Summary), RetryableFailure> {
    let units = decode_event(event);
    let from_sqs = units.iter().any(|u| u.message_id.is_some());
    let mut summary = Summary::default();
    let mut failed_messages = Vec::new();
    let mut first_transient = None;
    for unit in units {
        let objects = match unit.objects {
            Ok(o) => o,
            Err(reason) => {
                // Nothing to retry: an unreadable notification never becomes readable.
                tracing::warn!(message_id = ?unit.message_id, %reason, "event unit skipped");
                summary.objects_rejected += 1;
                continue;
            }
        };
        let mut unit_failed = false;
        for obj in objects {
            match ingest_object(src, &obj, lake, cfg) {
                Ok(r) => {
                    match &r.outcome {
                        Outcome::Ingested => summary.objects_ingested += 1,
                        Outcome::Skipped(why) => {
                            tracing::info!(object = %r.uri, reason = %why, "object skipped");
                            summary.objects_skipped += 1;
                        }
                    }
                    summary.records += r.records;
                    summary.records_rejected += r.rejected;
                    summary.lake_keys.extend(r.lake_keys);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(object = %obj.uri(), error = %e, "object failed, will be retried");
                    summary.objects_retry += 1;
                    unit_failed = true;
                    first_transient.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    tracing::error!(object = %obj.uri(), error = %e, "object rejected");
                    summary.objects_rejected += 1;
                    if let Err(e2) = record_failure(lake, &obj, &e) {
                        // Could not even record it: retry rather than lose the reason.
                        tracing::warn!(object = %obj.uri(), error = %e2, "recording the rejection failed");
                        unit_failed = true;
                        first_transient.get_or_insert_with(|| e2.to_string());
                    }
                }
            }
        }
        if unit_failed {
            failed_messages.extend(unit.message_id);
        }
    }
    if from_sqs {
        let mut resp = SqsBatchResponse::default();
        for id in failed_messages {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            resp.batch_item_failures.push(f);
        }
        return Ok((Reply::Sqs(resp), summary));
    }
    if let Some(first) = first_transient {
        return Err(RetryableFailure { failures: summary.objects_retry, first });
    }
    Ok((Reply::Summary(summary.clone()), summary))
}
