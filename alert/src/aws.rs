//! The SDK adapters (feature `aws`): SNS as the [`Publisher`], an SQS queue as the
//! [`DeadLetter`] place, DynamoDB as the [`SentStore`]. Each call blocks on the runtime handle so
//! the library stays synchronous. Clients are built from core's shared SDK configuration
//! ([`trailwatch_core::aws::load`]; DynamoDB's is [`trailwatch_core::aws::dynamodb`]), and failed
//! calls are classified by core's one rule ([`sdk_error_retryable`]).

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::runtime::Handle;
use trailwatch_core::aws::{sdk_error_retryable, SdkConfig};
use trailwatch_core::time::EpochMillis;

use crate::error::AlertError;
use crate::publish::{DeadLetter, DeadLetterEntry, PublishError, Publisher};
use crate::render::Message;
use crate::sent::{Sent, SentStore};

/// An SNS client from the shared configuration with the SDK's own retries off:
/// [`crate::RetryPolicy`] is the whole budget. `endpoint` overrides its endpoint.
pub fn sns(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_sns::Client {
    let mut conf =
        aws_sdk_sns::config::Builder::from(shared).retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled());
    if let Some(url) = endpoint {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_sns::Client::from_conf(conf.build())
}

/// An SQS client from the shared configuration; `endpoint` overrides its endpoint.
pub fn sqs(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_sqs::Client {
    let mut conf = aws_sdk_sqs::config::Builder::from(shared);
    if let Some(url) = endpoint {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_sqs::Client::from_conf(conf.build())
}

/// Loads the SDK configuration and builds [`sns`] from it, for callers that need SNS alone (the
/// CLI). `endpoint_url` points it at another server.
pub async fn sns_client(endpoint_url: Option<&str>) -> aws_sdk_sns::Client {
    sns(&trailwatch_core::aws::load(endpoint_url).await, None)
}

/// Publishes to one SNS topic with message structure JSON.
pub struct SnsPublisher {
    pub client: aws_sdk_sns::Client,
    pub handle: Handle,
    pub topic_arn: String,
}

impl Publisher for SnsPublisher {
    fn topic(&self) -> &str {
        &self.topic_arn
    }

    fn publish(&self, m: &Message) -> Result<String, PublishError> {
        let mut req = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message_structure("json")
            .message(m.message_json())
            .subject(&m.subject);
        for (name, v) in &m.attributes {
            let attr = MessageAttributeValue::builder()
                .data_type(v.data_type())
                .string_value(v.string_value())
                .build()
                .map_err(|e| PublishError { message: e.to_string(), retryable: false })?;
            req = req.message_attributes(name, attr);
        }
        match self.handle.block_on(req.send()) {
            Ok(out) => Ok(out.message_id().unwrap_or_default().to_string()),
            Err(e) => {
                use aws_sdk_sns::error::ProvideErrorMetadata;
                let code = e.code().unwrap_or("");
                let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
                // Throttling and 5xx pass; a bad request or a missing topic will not.
                let retryable = sdk_error_retryable(&e);
                Err(PublishError { message: format!("{code} ({status}): {}", DisplayErrorContext(&e)), retryable })
            }
        }
    }
}

/// SQS's body limit, with room for the envelope.
const MAX_SQS_BODY: usize = 250_000;

/// The Lambda's dead-letter place: an SQS queue, one entry a message.
pub struct SqsDeadLetter {
    pub client: aws_sdk_sqs::Client,
    pub handle: Handle,
    pub queue_url: String,
}

impl DeadLetter for SqsDeadLetter {
    fn send(&self, entry: &DeadLetterEntry) -> Result<(), AlertError> {
        let mut body = serde_json::to_string(entry).expect("dead letters serialize");
        if body.len() > MAX_SQS_BODY {
            // Too big for SQS: keep the reason, subject and finding ids; the findings themselves
            // are in the lake to render again.
            let mut slim = entry.clone();
            slim.message =
                format!("(omitted: {} bytes; the findings are in the lake's findings table)", entry.message.len());
            body = serde_json::to_string(&slim).expect("dead letters serialize");
        }
        self.handle
            .block_on(self.client.send_message().queue_url(&self.queue_url).message_body(body).send())
            .map(|_| ())
            .map_err(|e| AlertError::DeadLetter {
                location: self.queue_url.clone(),
                message: DisplayErrorContext(&e).to_string(),
            })
    }
}

/// Sent records in a DynamoDB table keyed by `pk` (the detect state table serves), expiring
/// through the table's TTL attribute `expires_at` after 30 days.
pub struct DynamoSent {
    pub client: aws_sdk_dynamodb::Client,
    pub handle: Handle,
    pub table: String,
}

const TTL_SECS: i64 = 30 * 24 * 3600;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoSent {
    fn err<E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        e: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> AlertError {
        AlertError::State {
            location: format!("dynamodb:{}", self.table),
            message: DisplayErrorContext(&e).to_string(),
            retryable: sdk_error_retryable(&e),
        }
    }

    fn expires_at() -> AttributeValue {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        n(now + TTL_SECS)
    }
}

fn how_str(how: Sent) -> &'static str {
    match how {
        Sent::Alone => "alone",
        Sent::Digest => "digest",
        Sent::Folded => "folded",
        Sent::DeadLetter => "dead_letter",
    }
}

impl SentStore for DynamoSent {
    fn get(&self, key: &str) -> Result<Option<Sent>, AlertError> {
        let out = self
            .handle
            .block_on(
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(&format!("alert#{key}")))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| self.err(e))?;
        Ok(out.item().and_then(|i| i.get("how")).and_then(|v| v.as_s().ok()).map(|h| match h.as_str() {
            "digest" => Sent::Digest,
            "folded" => Sent::Folded,
            "dead_letter" => Sent::DeadLetter,
            _ => Sent::Alone,
        }))
    }

    fn put_if_absent(&self, key: &str, how: Sent, event_time: EpochMillis) -> Result<bool, AlertError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("alert#{key}")))
            .item("how", s(how_str(how)))
            .item("event_time", n(event_time))
            .item("expires_at", Self::expires_at())
            .condition_expression("attribute_not_exists(pk)");
        match self.handle.block_on(req.send()) {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    fn claim_group(
        &self,
        group: &str,
        episode: &str,
        start: EpochMillis,
        window_ms: i64,
        severity: u8,
    ) -> Result<bool, AlertError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("alert#{group}")))
            .item("episode", s(episode))
            .item("start", n(start))
            .item("sev", n(i64::from(severity)))
            .item("expires_at", Self::expires_at())
            .condition_expression("attribute_not_exists(pk) OR episode = :e OR #s <= :lo OR #s >= :hi OR sev < :sev")
            .expression_attribute_names("#s", "start")
            .expression_attribute_values(":e", s(episode))
            .expression_attribute_values(":lo", n(start - window_ms))
            .expression_attribute_values(":hi", n(start + window_ms))
            .expression_attribute_values(":sev", n(i64::from(severity)));
        match self.handle.block_on(req.send()) {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    fn release_group(&self, group: &str, episode: &str) -> Result<(), AlertError> {
        let req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&format!("alert#{group}")))
            .condition_expression("episode = :e")
            .expression_attribute_values(":e", s(episode));
        match self.handle.block_on(req.send()) {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata, SdkError};
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_types::body::SdkBody;

    use super::sdk_error_retryable;

    fn coded(code: &str, status: u16) -> SdkError<PutItemError, HttpResponse> {
        let err = PutItemError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(err, HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()))
    }

    #[test]
    fn sent_records_retry_only_what_can_pass() {
        for code in ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"] {
            assert!(sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(sdk_error_retryable(&coded("InternalServerError", 500)));
        assert!(sdk_error_retryable(&SdkError::<PutItemError, HttpResponse>::timeout_error("slow")));
        assert!(sdk_error_retryable(&SdkError::<PutItemError, HttpResponse>::dispatch_failure(ConnectorError::io(
            "reset".into()
        ))));
        for code in ["ValidationException", "ResourceNotFoundException", "AccessDeniedException"] {
            assert!(!sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(!sdk_error_retryable(&SdkError::<PutItemError, HttpResponse>::construction_failure("no table")));
    }
}
