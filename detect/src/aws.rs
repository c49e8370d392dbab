//! Shard state in DynamoDB and S3 for the detect Lambda: the shard's body (zstd JSON, often
//! larger than DynamoDB's 400 KB item limit) goes to a new S3 object, then a conditional
//! DynamoDB update points the shard at it if its version is still the one read. A refused
//! update deletes the new object and reports a conflict, and the handler recomputes.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use tokio::runtime::Handle;
use trailwatch_core::time::EpochMillis;

use crate::engine::Shard;
use crate::error::DetectError;
use crate::handler::ShardStore;
use crate::state::{decode_shard, encode_shard};

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

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoS3Store {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> DetectError {
        DetectError::State {
            location: format!("dynamodb:{}/{what}", self.table),
            message: e.to_string(),
            retryable: true,
        }
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
                .map_err(|e| self.err(&pk, DisplayErrorContext(&e)))?;
            let Some(item) = out.item else { return Ok(None) };
            let version = num(&item, "version").ok_or_else(|| self.err(&pk, "item without a version"))? as u64;
            let key =
                item.get("body").and_then(|v| v.as_s().ok()).ok_or_else(|| self.err(&pk, "item without a body key"))?;
            let obj = match self.handle.block_on(self.s3.get_object().bucket(&self.bucket).key(key).send()) {
                Ok(o) => o,
                // A writer moved the shard on and removed the body we were pointed at: read the
                // pointer again.
                Err(e) if attempt < 8 && e.as_service_error().is_some_and(|se| se.is_no_such_key()) => continue,
                Err(e) => return Err(self.err(key, aws_sdk_s3::error::DisplayErrorContext(&e))),
            };
            let bytes = self.handle.block_on(obj.body.collect()).map_err(|e| self.err(key, e))?.into_bytes();
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
        let body = encode_shard(shard).map_err(|e| self.err(&pk, e))?;
        self.handle
            .block_on(self.s3.put_object().bucket(&self.bucket).key(&key).body(ByteStream::from(body)).send())
            .map_err(|e| self.err(&key, aws_sdk_s3::error::DisplayErrorContext(&e)))?;
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
            Err(e) => Err(self.err(&pk, DisplayErrorContext(&e))),
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
                Err(e) => return Err(self.err(CLOCK_PK, DisplayErrorContext(&e))),
            }
        }
        let out = self
            .handle
            .block_on(self.ddb.get_item().table_name(&self.table).key("pk", s(CLOCK_PK)).consistent_read(true).send())
            .map_err(|e| self.err(CLOCK_PK, DisplayErrorContext(&e)))?;
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
                .map_err(|e| self.err("scan", DisplayErrorContext(&e)))?;
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
}

/// Builds a DynamoDB client like [`trailwatch_core::s3::client`] builds S3's.
pub async fn dynamodb_client(endpoint_url: Option<&str>) -> aws_sdk_dynamodb::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::new(&loader.load().await)
}
