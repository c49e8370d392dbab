//! Shard state in DynamoDB and S3 for the detect Lambda: the shard's body (zstd JSON, often
//! larger than DynamoDB's 400 KB item limit) goes to a new S3 object, then a conditional
//! DynamoDB update points the shard at it if its version is still the one read. A refused
//! update deletes the new object and reports a conflict, and the handler recomputes.
//!
//! Failed calls are classified by core's one rule ([`sdk_error_retryable`]): throttling, 5xx,
//! timeouts and network trouble can pass on a retry; a request DynamoDB or S3 refuses
//! (validation, a missing table, access denied) or a shard that does not encode or decode
//! cannot.

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use tokio::runtime::Handle;
use trailwatch_core::aws::sdk_error_retryable;
use trailwatch_core::time::EpochMillis;

use crate::engine::Shard;
use crate::error::DetectError;
use crate::handler::ShardStore;
use crate::state::{decode_shard, encode_shard};
use crate::stats::HashKey;

/// DynamoDB (table with a string partition key `pk`) plus an S3 prefix for shard bodies.
pub struct DynamoS3Store {
    pub ddb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub handle: Handle,
    pub table: String,
    pub bucket: String,
    /// Key prefix of shard bodies (e.g. `detect-state/`).
    pub prefix: String,
}

fn shard_pk(account: &str, region: &str) -> String {
    format!("shard#{account}#{region}")
}

const CLOCK_PK: &str = "clock";
/// The item holding the deployment's hash key ([`HashKey`]).
const SECRET_PK: &str = "secret";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoS3Store {
    /// A failed DynamoDB or S3 call on `what`, classified.
    fn sdk_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        what: &str,
        e: &SdkError<E, HttpResponse>,
    ) -> DetectError {
        self.err(what, DisplayErrorContext(e), sdk_error_retryable(e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display, retryable: bool) -> DetectError {
        DetectError::State { location: format!("dynamodb:{}/{what}", self.table), message: e.to_string(), retryable }
    }

    fn body_key(&self, account: &str, region: &str, version: u64) -> String {
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}shards/{account}_{region}/{version:010}-{nonce:x}.json.zst", self.prefix)
    }
}

fn num(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|s| s.parse().ok())
}

impl ShardStore for DynamoS3Store {
    fn load(&self, account: &str, region: &str) -> Result<Option<(u64, Shard)>, DetectError> {
        let pk = shard_pk(account, region);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self
                .handle
                .block_on(self.ddb.get_item().table_name(&self.table).key("pk", s(&pk)).consistent_read(true).send())
                .map_err(|e| self.sdk_err(&pk, &e))?;
            let Some(item) = out.item else { return Ok(None) };
            // A malformed item reads the same on every retry.
            let version = num(&item, "version").ok_or_else(|| self.err(&pk, "item without a version", false))? as u64;
            let key = item
                .get("body")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| self.err(&pk, "item without a body key", false))?;
            let obj = match self.handle.block_on(self.s3.get_object().bucket(&self.bucket).key(key).send()) {
                Ok(o) => o,
                // A writer moved the shard on and removed the body we were pointed at: read the
                // pointer again.
                Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                    if attempt < 8 {
                        continue;
                    }
                    // Writers kept moving the shard on under us: a later retry can succeed.
                    return Err(self.err(key, "the shard's body kept being replaced while it was read", true));
                }
                Err(e) => return Err(self.sdk_err(key, &e)),
            };
            // Reading the body fails only in transit.
            let bytes = self.handle.block_on(obj.body.collect()).map_err(|e| self.err(key, e, true))?.into_bytes();
            let shard = decode_shard(&bytes).map_err(|e| DetectError::State {
                location: format!("s3://{}/{key}", self.bucket),
                message: e,
                retryable: false,
            })?;
            return Ok(Some((version, shard)));
        }
    }

    fn save(&self, shard: &Shard, expected: Option<u64>) -> Result<bool, DetectError> {
        let pk = shard_pk(&shard.account, &shard.region);
        let next = expected.map_or(1, |v| v + 1);
        let key = self.body_key(&shard.account, &shard.region, next);
        // A shard that does not serialize will not on a retry either.
        let body = encode_shard(shard).map_err(|e| self.err(&pk, e, false))?;
        self.handle
            .block_on(self.s3.put_object().bucket(&self.bucket).key(&key).body(ByteStream::from(body)).send())
            .map_err(|e| self.sdk_err(&key, &e))?;
        let mut req = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("version", n(next))
            .item("body", s(&key))
            .item("account_id", s(&shard.account))
            .item("region", s(&shard.region));
        req = match expected {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(v) => req.condition_expression("version = :v").expression_attribute_values(":v", n(v)),
        };
        let old = match expected {
            Some(_) => self
                .handle
                .block_on(self.ddb.get_item().table_name(&self.table).key("pk", s(&pk)).consistent_read(true).send())
                .ok()
                .and_then(|o| o.item)
                .and_then(|i| i.get("body").and_then(|b| b.as_s().ok()).cloned()),
            None => None,
        };
        match self.handle.block_on(req.send()) {
            Ok(_) => {
                // The body the shard pointed at before: no longer needed (best effort).
                if let Some(old) = old.filter(|o| o != &key) {
                    let _ = self.handle.block_on(self.s3.delete_object().bucket(&self.bucket).key(old).send());
                }
                Ok(true)
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                let _ = self.handle.block_on(self.s3.delete_object().bucket(&self.bucket).key(&key).send());
                Ok(false)
            }
            // The update may have been applied all the same (a timeout, say): the new body stays.
            Err(e) => Err(self.sdk_err(&pk, &e)),
        }
    }

    fn raise_clock(&self, t: Option<EpochMillis>) -> Result<Option<EpochMillis>, DetectError> {
        if let Some(t) = t {
            let r = self.handle.block_on(
                self.ddb
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(CLOCK_PK))
                    .update_expression("SET t = :t")
                    .condition_expression("attribute_not_exists(t) OR t < :t")
                    .expression_attribute_values(":t", n(t))
                    .send(),
            );
            match r {
                Ok(_) => return Ok(Some(t)),
                Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(self.sdk_err(CLOCK_PK, &e)),
            }
        }
        let out = self
            .handle
            .block_on(self.ddb.get_item().table_name(&self.table).key("pk", s(CLOCK_PK)).consistent_read(true).send())
            .map_err(|e| self.sdk_err(CLOCK_PK, &e))?;
        Ok(out.item.and_then(|i| num(&i, "t")))
    }

    fn shards(&self) -> Result<Vec<(String, String)>, DetectError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .handle
                .block_on(
                    self.ddb
                        .scan()
                        .table_name(&self.table)
                        .filter_expression("begins_with(pk, :p)")
                        .expression_attribute_values(":p", s("shard#"))
                        .set_exclusive_start_key(start)
                        .send(),
                )
                .map_err(|e| self.sdk_err("scan", &e))?;
            for item in page.items() {
                let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                if let (Some(a), Some(r)) = (get("account_id"), get("region")) {
                    out.push((a, r));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    fn hash_key(&self) -> Result<HashKey, DetectError> {
        let read = || -> Result<Option<String>, DetectError> {
            let out = self
                .handle
                .block_on(
                    self.ddb.get_item().table_name(&self.table).key("pk", s(SECRET_PK)).consistent_read(true).send(),
                )
                .map_err(|e| self.sdk_err(SECRET_PK, &e))?;
            Ok(out.item.and_then(|i| i.get("secret").and_then(|v| v.as_s().ok()).cloned()))
        };
        let hex = match read()? {
            Some(h) => h,
            None => {
                // The first invocation ever makes it; a racing one keeps the winner's.
                let fresh = HashKey::random().to_hex();
                let r = self.handle.block_on(
                    self.ddb
                        .put_item()
                        .table_name(&self.table)
                        .item("pk", s(SECRET_PK))
                        .item("secret", s(&fresh))
                        .condition_expression("attribute_not_exists(pk)")
                        .send(),
                );
                match r {
                    Ok(_) => fresh,
                    Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                        read()?.ok_or_else(|| self.err(SECRET_PK, "secret vanished", true))?
                    }
                    Err(e) => return Err(self.sdk_err(SECRET_PK, &e)),
                }
            }
        };
        HashKey::from_hex(&hex).ok_or_else(|| self.err(SECRET_PK, "secret is not 32 hex digits", false))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::types::error::{ProvisionedThroughputExceededException, ResourceNotFoundException};
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;

    fn service(err: PutItemError, status: u16) -> SdkError<PutItemError, HttpResponse> {
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    fn coded(code: &str, status: u16) -> SdkError<PutItemError, HttpResponse> {
        service(PutItemError::generic(ErrorMetadata::builder().code(code).message("m").build()), status)
    }

    #[test]
    fn throttling_5xx_and_the_network_retry() {
        let throughput = PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(ErrorMetadata::builder().code("ProvisionedThroughputExceededException").build())
                .build(),
        );
        assert!(sdk_error_retryable(&service(throughput, 400)));
        for code in ["ThrottlingException", "RequestLimitExceeded", "InternalServerError", "SlowDown"] {
            assert!(sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(sdk_error_retryable(&coded("", 503)), "any 5xx");
        assert!(sdk_error_retryable(&coded("", 429)));
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("slow");
        assert!(sdk_error_retryable(&timeout));
        let io: SdkError<PutItemError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io("connection reset".into()));
        assert!(sdk_error_retryable(&io));
    }

    #[test]
    fn refused_requests_do_not_retry() {
        let missing = PutItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no table")
                .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
                .build(),
        );
        assert!(!sdk_error_retryable(&service(missing, 400)));
        for code in ["ValidationException", "AccessDeniedException", "UnrecognizedClientException", "NoSuchBucket"] {
            assert!(!sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(!sdk_error_retryable(&coded("NoSuchKey", 404)));
        let construction: SdkError<PutItemError, HttpResponse> = SdkError::construction_failure("no table name");
        assert!(!sdk_error_retryable(&construction));
        let user: SdkError<PutItemError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into()));
        assert!(!sdk_error_retryable(&user));
    }
}
