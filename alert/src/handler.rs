//! The alert Lambda's logic: the lake's findings objects (S3 notifications, usually through
//! SQS) in, alerts out. Findings from every message of a batch are alerted together, so a
//! wide attack across regions becomes one digest per account rather than one per object.

use serde::Serialize;
use serde_json::Value;
use trailwatch_core::batch::BatchResponse;
use trailwatch_core::finding::{read_findings_parquet, Finding, FINDINGS_TABLE};
use trailwatch_core::notification::decode_event;
use trailwatch_core::store::{ObjectRef, ObjectSource};

use crate::alerter::{alert, AlertConfig, AlertReport};
use crate::error::AlertError;
use crate::publish::{DeadLetter, Publisher};
use crate::sent::SentStore;

/// What one invocation did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects_read: u64,
    /// Objects that are not findings files (other tables, rejects): alert ignores them.
    pub objects_ignored: u64,
    /// Findings files that could not be read: their messages are reported as failed so SQS
    /// retries them and, past its receive count, moves them to the queue's dead-letter queue.
    pub objects_failed: u64,
    pub report: AlertReport,
}

/// The services a handler talks to.
pub struct Deps<'a> {
    pub src: &'a dyn ObjectSource,
    pub sent: &'a dyn SentStore,
    pub publisher: &'a dyn Publisher,
    pub dead: &'a dyn DeadLetter,
}

fn is_findings_object(obj: &ObjectRef, prefix: &str) -> bool {
    trailwatch_core::lake::relative_key(&obj.key, prefix)
        .is_some_and(|rel| rel.split('/').next() == Some(FINDINGS_TABLE) && rel.ends_with(".parquet"))
}

fn read_object(src: &dyn ObjectSource, obj: &ObjectRef) -> Result<Vec<Finding>, AlertError> {
    let body =
        src.open(obj).map_err(|e| AlertError::Findings { uri: e.uri, message: e.message, retryable: e.retryable })?;
    let mut bytes = Vec::new();
    let mut r = body.reader;
    std::io::Read::read_to_end(&mut r, &mut bytes).map_err(|e| AlertError::Findings {
        uri: obj.uri(),
        message: e.to_string(),
        retryable: trailwatch_core::store::is_transient_io(&e),
    })?;
    read_findings_parquet(&obj.key, bytes).map_err(|e| AlertError::Findings {
        uri: obj.uri(),
        message: e.message,
        retryable: false,
    })
}

/// Handles one event. Returns the Lambda's reply (an SQS partial batch response when the event
/// came through SQS) and the summary. An error means nothing should be acknowledged.
pub fn handle_event(
    event: &Value,
    prefix: &str,
    deps: &Deps,
    cfg: &AlertConfig,
) -> Result<(Value, Summary), AlertError> {
    let mut summary = Summary::default();
    let mut findings = Vec::new();
    let mut failed_messages = Vec::new();
    let units = decode_event(event);
    let from_sqs = units.iter().any(|u| u.message_id.is_some());
    for unit in units {
        let objects = match unit.objects {
            Ok(o) => o,
            Err(reason) => {
                tracing::error!(message_id = ?unit.message_id, %reason, "unreadable notification");
                failed_messages.extend(unit.message_id);
                continue;
            }
        };
        let mut unit_findings = Vec::new();
        let mut failed = None;
        for obj in objects {
            if !is_findings_object(&obj, prefix) {
                summary.objects_ignored += 1;
                continue;
            }
            match read_object(deps.src, &obj) {
                Ok(fs) => {
                    summary.objects_read += 1;
                    unit_findings.extend(fs);
                }
                Err(e) => {
                    tracing::error!(error = %e, retryable = e.is_retryable(), "findings object not read");
                    summary.objects_failed += 1;
                    failed = Some(e);
                }
            }
        }
        match (failed, unit.message_id) {
            (None, _) => findings.extend(unit_findings),
            (Some(_), Some(id)) => failed_messages.push(id),
            (Some(e), None) => return Err(e),
        }
    }
    summary.report = alert(&findings, cfg, deps.sent, deps.publisher, deps.dead)?;
    let reply = if from_sqs {
        BatchResponse::new(failed_messages).to_value()
    } else {
        serde_json::to_value(&summary).expect("summary serializes")
    };
    Ok((reply, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectRef {
        ObjectRef { bucket: "lake-bucket".into(), key: key.into(), ..ObjectRef::default() }
    }

    #[test]
    fn the_lake_prefix_means_the_same_with_or_without_a_slash() {
        // `LAKE_PREFIX=lake` used to match nothing here while ingest and detect accepted it.
        for prefix in ["lake", "lake/", "/lake/"] {
            assert!(is_findings_object(&obj("lake/findings/account_id=1/x.parquet"), prefix), "{prefix}");
            assert!(!is_findings_object(&obj("lake/cloudtrail/account_id=1/x.parquet"), prefix), "{prefix}");
            assert!(!is_findings_object(&obj("lakehouse/findings/x.parquet"), prefix), "{prefix}");
        }
        assert!(is_findings_object(&obj("findings/account_id=1/x.parquet"), ""));
        assert!(!is_findings_object(&obj("findings/account_id=1/x.json"), ""));
    }
}
