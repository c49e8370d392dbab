//! The lake's table schemas, declared once as a tree of columns.
//!
//! The tree is the single source of truth: the Arrow schema, the ingest converter and (later) the
//! Glue table definitions are all derived from it, so a column added here appears everywhere.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// How a JSON value is stored in a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON string (null or missing becomes null).
    Str,
    /// Any JSON value kept as its JSON text (free-form objects such as `requestParameters`).
    Json,
    /// `true`/`false`, or the strings some services write instead (`"true"`, `"True"`).
    Bool,
    /// An ISO-8601 time, stored as `Timestamp(Millisecond, "UTC")`.
    Time,
    /// A JSON object with known members; unknown members go to the `unknown_fields` column.
    Struct(&'static [Col]),
    /// A JSON array of objects with known members.
    ListOfStruct(&'static [Col]),
}

/// One column: its lake name (snake_case), the JSON key it is read from, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Col {
    pub name: &'static str,
    pub json: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, json: &'static str, kind: Kind) -> Col {
    Col { name, json, kind }
}

use Kind::*;

const SESSION_ISSUER: &[Col] = &[
    col("type", "type", Str),
    col("principal_id", "principalId", Str),
    col("arn", "arn", Str),
    col("account_id", "accountId", Str),
    col("user_name", "userName", Str),
];

const WEB_ID_FEDERATION: &[Col] =
    &[col("federated_provider", "federatedProvider", Str), col("attributes", "attributes", Json)];

const SESSION_ATTRIBUTES: &[Col] =
    &[col("creation_date", "creationDate", Time), col("mfa_authenticated", "mfaAuthenticated", Bool)];

const SESSION_CONTEXT: &[Col] = &[
    col("attributes", "attributes", Struct(SESSION_ATTRIBUTES)),
    col("session_issuer", "sessionIssuer", Struct(SESSION_ISSUER)),
    col("web_id_federation_data", "webIdFederationData", Struct(WEB_ID_FEDERATION)),
    col("source_identity", "sourceIdentity", Str),
    col("ec2_role_delivery", "ec2RoleDelivery", Str),
    col("assumed_root", "assumedRoot", Bool),
];

const ON_BEHALF_OF: &[Col] = &[col("user_id", "userId", Str), col("identity_store_arn", "identityStoreArn", Str)];

const USER_IDENTITY: &[Col] = &[
    col("type", "type", Str),
    col("principal_id", "principalId", Str),
    col("arn", "arn", Str),
    col("account_id", "accountId", Str),
    col("access_key_id", "accessKeyId", Str),
    col("user_name", "userName", Str),
    col("invoked_by", "invokedBy", Str),
    col("identity_provider", "identityProvider", Str),
    col("credential_id", "credentialId", Str),
    col("session_context", "sessionContext", Struct(SESSION_CONTEXT)),
    col("on_behalf_of", "onBehalfOf", Struct(ON_BEHALF_OF)),
    col("in_scope_of", "inScopeOf", Json),
];

const RESOURCE: &[Col] = &[col("arn", "ARN", Str), col("account_id", "accountId", Str), col("type", "type", Str)];

const TLS_DETAILS: &[Col] = &[
    col("tls_version", "tlsVersion", Str),
    col("cipher_suite", "cipherSuite", Str),
    col("client_provided_host_header", "clientProvidedHostHeader", Str),
    col("key_exchange", "keyExchange", Str),
];

/// Name of the column that keeps, as one JSON object keyed by path, every member the schema does
/// not know, so nothing is lost when AWS adds a field.
pub const UNKNOWN_FIELDS: &str = "unknown_fields";

/// The CloudTrail record, in the order AWS documents its fields. `event_time` is the only
/// required member: a record without a parseable one is rejected.
pub const CLOUDTRAIL: &[Col] = &[
    col("event_version", "eventVersion", Str),
    col("user_identity", "userIdentity", Struct(USER_IDENTITY)),
    col("event_time", "eventTime", Time),
    col("event_source", "eventSource", Str),
    col("event_name", "eventName", Str),
    col("aws_region", "awsRegion", Str),
    col("source_ip_address", "sourceIPAddress", Str),
    col("user_agent", "userAgent", Str),
    col("error_code", "errorCode", Str),
    col("error_message", "errorMessage", Str),
    col("request_parameters", "requestParameters", Json),
    col("response_elements", "responseElements", Json),
    col("additional_event_data", "additionalEventData", Json),
    col("request_id", "requestID", Str),
    col("event_id", "eventID", Str),
    col("read_only", "readOnly", Bool),
    col("resources", "resources", ListOfStruct(RESOURCE)),
    col("event_type", "eventType", Str),
    col("api_version", "apiVersion", Str),
    col("management_event", "managementEvent", Bool),
    col("recipient_account_id", "recipientAccountId", Str),
    col("service_event_details", "serviceEventDetails", Json),
    col("shared_event_id", "sharedEventID", Str),
    col("vpc_endpoint_id", "vpcEndpointId", Str),
    col("vpc_endpoint_account_id", "vpcEndpointAccountId", Str),
    col("event_category", "eventCategory", Str),
    col("addendum", "addendum", Json),
    col("session_credential_from_console", "sessionCredentialFromConsole", Bool),
    col("edge_device_details", "edgeDeviceDetails", Json),
    col("tls_details", "tlsDetails", Struct(TLS_DETAILS)),
];

/// The Arrow type every time column in the lake uses.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Arrow data type of one column of the tree.
pub fn data_type(kind: Kind) -> DataType {
    match kind {
        Str | Json => DataType::Utf8,
        Bool => DataType::Boolean,
        Time => timestamp_type(),
        Struct(cols) => DataType::Struct(fields(cols)),
        ListOfStruct(cols) => DataType::List(Arc::new(Field::new("item", DataType::Struct(fields(cols)), true))),
    }
}

/// The Arrow fields of a level of the tree. `event_time` is the only non-nullable column.
pub fn fields(cols: &[Col]) -> Fields {
    cols.iter().map(|c| Field::new(c.name, data_type(c.kind), c.name != "event_time")).collect()
}

/// The `cloudtrail` table's Arrow schema: [`CLOUDTRAIL`] plus `unknown_fields`. Partition columns
/// (`account_id`, `region`, `date`) are not in the files; they live in the path.
pub fn cloudtrail_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut f: Vec<Field> = fields(CLOUDTRAIL).iter().map(|f| f.as_ref().clone()).collect();
            f.push(Field::new(UNKNOWN_FIELDS, DataType::Utf8, true));
            Arc::new(Schema::new(f))
        })
        .clone()
}

/// The `lambda_invocations` table: one row per invocation, from Lambda's REPORT lines (text or
/// JSON log format). `log_event_id` (the REPORT line's id) is the duplicate key: retries of one
/// asynchronous event share a request id.
pub fn lambda_invocations_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str| Field::new(n, DataType::Utf8, true);
            let f = |n: &str| Field::new(n, DataType::Float64, true);
            let i = |n: &str| Field::new(n, DataType::Int64, true);
            Arc::new(Schema::new(vec![
                s("function_name"),
                s("function_version"),
                s("request_id"),
                Field::new("start_time", timestamp_type(), false),
                Field::new("end_time", timestamp_type(), false),
                f("duration_ms"),
                i("billed_duration_ms"),
                i("memory_size_mb"),
                i("max_memory_used_mb"),
                f("init_duration_ms"),
                f("restore_duration_ms"),
                Field::new("status", DataType::Utf8, false),
                s("error_type"),
                f("timeout_seconds"),
                s("log_group"),
                s("log_stream"),
                Field::new("log_event_id", DataType::Utf8, false),
                s("xray_trace_id"),
            ]))
        })
        .clone()
}

/// The `lambda_metrics` table: one row per CloudWatch metric-stream datapoint of `AWS/Lambda`,
/// account-level ones (empty dimensions) included.
pub fn lambda_metrics_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let entries = Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Utf8, true),
                ])),
                false,
            );
            let f = |n: &str| Field::new(n, DataType::Float64, true);
            Arc::new(Schema::new(vec![
                Field::new("metric_stream_name", DataType::Utf8, true),
                Field::new("namespace", DataType::Utf8, false),
                Field::new("metric_name", DataType::Utf8, false),
                Field::new("dimensions", DataType::Map(Arc::new(entries), false), false),
                Field::new("timestamp", timestamp_type(), false),
                f("value_max"),
                f("value_min"),
                f("value_sum"),
                f("value_count"),
                Field::new("unit", DataType::Utf8, true),
            ]))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_per_level() {
        fn check(cols: &[Col]) {
            let mut seen = std::collections::HashSet::new();
            for c in cols {
                assert!(seen.insert(c.name), "duplicate column {}", c.name);
                assert!(
                    c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                    "{}",
                    c.name
                );
                if let Struct(sub) | ListOfStruct(sub) = c.kind {
                    check(sub);
                }
            }
        }
        check(CLOUDTRAIL);
    }

    #[test]
    fn every_time_column_is_millisecond_utc() {
        let schema = cloudtrail_schema();
        let et = schema.field_with_name("event_time").unwrap();
        assert_eq!(et.data_type(), &timestamp_type());
        assert!(!et.is_nullable());
        assert_eq!(schema.fields().last().unwrap().name(), UNKNOWN_FIELDS);
    }
}
