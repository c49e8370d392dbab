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

/// A Lambda subscription event from CloudWatch Logs (`{"awslogs":{"data":...}}`): there is no
/// S3 object, so its lake files are named from the payload's owner, log group, stream and first
/// and last event ids, and a redelivery replaces them.
fn handle_awslogs(event: &Value, lake: &dyn LakeStore, cfg: &Config) -> Result<(Reply, Summary), RetryableFailure> {
    let data = event.pointer("/awslogs/data").and_then(Value::as_str).unwrap_or_default();
    let mut summary = Summary::default();
    let json = match crate::object::decode_awslogs(data, cfg) {
        Ok(j) => j,
        Err(why) => {
            // Malformed by the sender: nothing a retry can fix.
            tracing::error!(reason = %why, "awslogs event rejected");
            summary.objects_rejected += 1;
            return Ok((Reply::Summary(summary.clone()), summary));
        }
    };
    let head: Value = serde_json::from_slice(&json).unwrap_or_default();
    let field = |k: &str| head.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (owner, group, stream) = (field("owner"), field("logGroup"), field("logStream"));
    let ids: Vec<&str> = head
        .get("logEvents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("id").and_then(Value::as_str))
        .collect();
    let version = format!("{}:{}", ids.first().unwrap_or(&""), ids.last().unwrap_or(&""));
    let key = format!("awslogs/{owner}/{}/{stream}", group.trim_start_matches('/'));
    match crate::ingest_reader(&json[..], "", &key, Some(version), lake, cfg) {
        Ok(r) => {
            summary.objects_ingested += 1;
            summary.records += r.records;
            summary.records_rejected += r.rejected;
            summary.lake_keys = r.lake_keys;
        }
        Err(e) if e.is_retryable() => return Err(RetryableFailure { failures: 1, first: e.to_string() }),
        Err(e) => {
            tracing::error!(error = %e, "awslogs payload rejected");
            summary.objects_rejected += 1;
        }
    }
    Ok((Reply::Summary(summary.clone()), summary))
}

/// Handles one Lambda event.
pub fn handle_event(
    event: &Value,
    src: &dyn ObjectSource,
    lake: &dyn LakeStore,
    cfg: &Config,
) -> Result<(Reply, Summary), RetryableFailure> {
    if event.get("awslogs").is_some() {
        return handle_awslogs(event, lake, cfg);
    }
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
