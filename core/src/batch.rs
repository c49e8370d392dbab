//! The reply to an SQS batch: a partial batch response naming the messages to deliver again.
//! The event source mapping must enable `ReportBatchItemFailures`, or failed messages are
//! not reprocessed. [`crate::notification::decode_event`] gives each unit its message id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"batchItemFailures":[{"itemIdentifier":"<message id>"}, ...]}`, as Lambda expects it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One message to deliver again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The SQS message id.
    pub item_identifier: String,
}

impl BatchResponse {
    /// The response failing the messages `failed` (their SQS message ids), in order.
    pub fn new<S: Into<String>>(failed: impl IntoIterator<Item = S>) -> BatchResponse {
        BatchResponse {
            batch_item_failures: failed.into_iter().map(|id| BatchItemFailure { item_identifier: id.into() }).collect(),
        }
    }

    /// As the JSON value a handler returns.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a batch response serializes")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn serializes_as_lambda_expects() {
        assert_eq!(
            BatchResponse::new(["m1", "m2"]).to_value(),
            json!({"batchItemFailures": [
                {"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}
            ]})
        );
        assert_eq!(BatchResponse::new(Vec::<String>::new()).to_value(), json!({"batchItemFailures": []}));
    }

    #[test]
    fn reads_back_the_aws_sample() {
        // lambda-events' fixture `example-sqs-batch-response.json`.
        let sample = json!({"batchItemFailures": [{"itemIdentifier": "id2"}, {"itemIdentifier": "id4"}]});
        let r: BatchResponse = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(r, BatchResponse::new(["id2", "id4"]));
        assert_eq!(r.to_value(), sample);
    }
}
