//! The ingest Lambda's logic, generic over the store traits so tests can run it against any S3
//! endpoint. With SQS it answers with a partial batch response: only messages whose objects hit
//! a transient failure are retried; permanently bad objects are recorded under `_rejected/` and
//! acknowledged.

use serde::Serialize;
use serde_json::Value;
use trailwatch_core::batch::BatchResponse;
use trailwatch_core::notification::decode_event;
use trailwatch_core::store::{LakeStore, ObjectSource};
use trailwatch_core::time::EpochMillis;

use crate::{ingest_awslogs, ingest_object_at, record_failure, record_message, Config, ObjectReport, Outcome};

/// What one invocation did, for the log and the caller.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects_ingested: u64,
    pub objects_skipped: u64,
    /// Objects, messages and subscription events that cannot be used: each is recorded under
    /// `_rejected/` and acknowledged.
    pub objects_rejected: u64,
    pub objects_retry: u64,
    pub records: u64,
    pub records_rejected: u64,
    /// Records dated more than the allowed skew after the processing time (kept in the lake).
    pub future_records: u64,
    /// The objects that hold them.
    pub future_dated: Vec<FutureDated>,
    pub lake_keys: Vec<String>,
    /// Where rejected messages and objects were recorded.
    pub rejected_keys: Vec<String>,
}

/// An object with future-dated records.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FutureDated {
    pub object: String,
    pub records: u64,
    pub max_event_time: String,
}

impl Summary {
    fn add(&mut self, r: ObjectReport) {
        match &r.outcome {
            Outcome::Ingested => self.objects_ingested += 1,
            Outcome::Skipped(why) => {
                tracing::info!(object = %r.uri, reason = %why, "object skipped");
                self.objects_skipped += 1;
            }
        }
        self.records += r.records;
        self.records_rejected += r.rejected;
        if r.future_records > 0 {
            self.future_records += r.future_records;
            self.future_dated.push(FutureDated {
                object: r.uri.clone(),
                records: r.future_records,
                max_event_time: r.max_future_event_time.clone().unwrap_or_default(),
            });
        }
        self.lake_keys.extend(r.lake_keys);
    }
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
    Sqs(BatchResponse),
    Summary(Summary),
}

/// A Lambda subscription event from CloudWatch Logs (`{"awslogs":{"data":...}}`): streamed
/// like an object ([`ingest_awslogs`]). A payload that cannot be used is recorded under
/// `_rejected/messages/` and acknowledged; only a transient failure fails the invocation.
fn handle_awslogs(
    event: &Value,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<(Reply, Summary), RetryableFailure> {
    let mut summary = Summary::default();
    let data = event.pointer("/awslogs/data").and_then(Value::as_str);
    let result = match data {
        Some(data) => ingest_awslogs(data, lake, cfg, now),
        None => Err(crate::IngestError::BadObject {
            uri: "awslogs".into(),
            kind: crate::BadKind::Encoding,
            detail: "awslogs event without a data string".into(),
        }),
    };
    match result {
        Ok(r) => summary.add(r),
        Err(e) if e.is_retryable() => return Err(RetryableFailure { failures: 1, first: e.to_string() }),
        Err(e) => {
            // Malformed by the sender: nothing a retry can fix.
            summary.objects_rejected += 1;
            let text = data.map_or_else(|| event.to_string(), str::to_string);
            let key = record_message(lake, None, &text, &e.to_string()).map_err(|e2| RetryableFailure {
                failures: 1,
                first: format!("recording the rejection failed: {e2}"),
            })?;
            tracing::error!(error = %e, rejected = %key, "awslogs payload rejected");
            summary.rejected_keys.push(key);
        }
    }
    Ok((Reply::Summary(summary.clone()), summary))
}

/// True when the event is an SQS batch (the rule `decode_event` splits by).
fn is_sqs_batch(event: &Value) -> bool {
    event.get("Records").and_then(Value::as_array).is_some_and(|r| {
        !r.is_empty() && r.iter().all(|x| x.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    })
}

/// The text of unit `i` of an event, as recorded when it is unreadable: an SQS message's body
/// (or the whole message when it has none), else the whole event.
fn unit_text(event: &Value, sqs: bool, i: usize) -> String {
    if sqs {
        let m = &event["Records"][i];
        return m.get("body").and_then(Value::as_str).map_or_else(|| m.to_string(), str::to_string);
    }
    event.to_string()
}

/// Handles one Lambda event. `now` is the processing time in ms since the epoch (the wall
/// clock, read once per event by the binary: the library never reads it).
pub fn handle_event(
    event: &Value,
    src: &dyn ObjectSource,
    lake: &dyn LakeStore,
    cfg: &Config,
    now: EpochMillis,
) -> Result<(Reply, Summary), RetryableFailure> {
    if event.get("awslogs").is_some() {
        return handle_awslogs(event, lake, cfg, now);
    }
    let units = decode_event(event);
    let sqs = is_sqs_batch(event);
    let from_sqs = units.iter().any(|u| u.message_id.is_some());
    let mut summary = Summary::default();
    let mut failed_messages = Vec::new();
    let mut first_transient = None;
    for (i, unit) in units.into_iter().enumerate() {
        let objects = match unit.objects {
            Ok(o) => o,
            Err(reason) => {
                // Nothing to retry: an unreadable notification never becomes readable. It is
                // recorded and acknowledged, unless recording it fails, which a retry can cure.
                summary.objects_rejected += 1;
                let text = unit_text(event, sqs, i);
                match record_message(lake, unit.message_id.as_deref(), &text, &reason) {
                    Ok(key) => {
                        tracing::error!(message_id = ?unit.message_id, %reason, rejected = %key, "unreadable message rejected");
                        summary.rejected_keys.push(key);
                    }
                    Err(e) => {
                        tracing::warn!(message_id = ?unit.message_id, %reason, error = %e, "recording an unreadable message failed");
                        failed_messages.extend(unit.message_id);
                        first_transient.get_or_insert_with(|| e.to_string());
                    }
                }
                continue;
            }
        };
        let mut unit_failed = false;
        for obj in objects {
            match ingest_object_at(src, &obj, lake, cfg, now) {
                Ok(r) => summary.add(r),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(object = %obj.uri(), error = %e, "object failed, will be retried");
                    summary.objects_retry += 1;
                    unit_failed = true;
                    first_transient.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    tracing::error!(object = %obj.uri(), error = %e, "object rejected");
                    summary.objects_rejected += 1;
                    match record_failure(lake, &obj, &e) {
                        Ok(key) => summary.rejected_keys.push(key),
                        Err(e2) => {
                            // Could not even record it: retry rather than lose the reason.
                            tracing::warn!(object = %obj.uri(), error = %e2, "recording the rejection failed");
                            unit_failed = true;
                            first_transient.get_or_insert_with(|| e2.to_string());
                        }
                    }
                }
            }
        }
        if unit_failed {
            failed_messages.extend(unit.message_id);
        }
    }
    if from_sqs {
        return Ok((Reply::Sqs(BatchResponse::new(failed_messages)), summary));
    }
    if let Some(first) = first_transient {
        return Err(RetryableFailure { failures: summary.objects_retry.max(1), first });
    }
    Ok((Reply::Summary(summary.clone()), summary))
}
