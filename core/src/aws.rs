//! The AWS SDK, set up once (feature `aws`): the shared configuration every client is built
//! from, the S3 (and, with feature `dynamodb`, DynamoDB) clients, and the one rule for whether a
//! failed call can succeed on a retry.
//!
//! A binary calls [`load`] once at start and builds each client from the result, naming the
//! client's own endpoint override if it has one (`AWS_ENDPOINT_URL_S3` and the like, for tests
//! against a local server). Other crates build their clients (SNS, SQS) from the same
//! [`SdkConfig`] the same way.

pub use aws_config::SdkConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Loads the SDK configuration from the environment (region, credentials, retries), once per
/// binary. `endpoint` points every client built from it at another server (a local
/// AWS-compatible one); S3 then uses path-style addressing.
pub async fn load(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An S3 client from the shared configuration. `endpoint` overrides the configuration's for S3
/// alone; with either, path-style addressing is forced (local S3-compatible servers want it).
pub fn s3(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut conf = aws_sdk_s3::config::Builder::from(shared);
    if let Some(url) = endpoint {
        conf = conf.endpoint_url(url);
    }
    let conf = conf.force_path_style(endpoint.is_some() || shared.endpoint_url().is_some()).build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A DynamoDB client from the shared configuration; `endpoint` overrides its endpoint.
#[cfg(feature = "dynamodb")]
pub fn dynamodb(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_dynamodb::Client {
    let mut conf = aws_sdk_dynamodb::config::Builder::from(shared);
    if let Some(url) = endpoint {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::from_conf(conf.build())
}

/// Whether a failed AWS call can succeed later: throttling, 5xx, timeouts and network trouble
/// pass; a request the service refuses (validation, a missing topic, table or key, access
/// denied) or one that could not even be built or sent as asked will not. Its arguments: the
/// service's error code and HTTP status, whether the service answered at all, and whether the
/// request could not be built or sent as asked.
pub fn retryable(code: &str, status: u16, is_service_error: bool, construction: bool) -> bool {
    if construction {
        return false;
    }
    if !is_service_error {
        return true;
    }
    status >= 500
        || status == 429
        || matches!(
            code,
            "Throttling"
                | "ThrottlingException"
                | "Throttled"
                | "ThrottledException"
                | "KMSThrottling"
                | "RequestThrottled"
                | "RequestThrottledException"
                | "TooManyRequestsException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "TransactionConflictException"
                | "SlowDown"
                | "RequestTimeout"
                | "RequestTimeoutException"
                | "InternalError"
                | "InternalFailure"
                | "InternalServerError"
                | "ServiceUnavailable"
        )
}

/// [`retryable`] for an SDK error of any operation of any service (S3, SNS, SQS, DynamoDB: they
/// share the error and response types).
pub fn sdk_error_retryable<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(se) => retryable(se.err().code().unwrap_or(""), se.raw().status().as_u16(), true, false),
        SdkError::ConstructionFailure(_) => retryable("", 0, false, true),
        // A bad endpoint or request the HTTP client refuses fails the same way every time.
        SdkError::DispatchFailure(d) => retryable("", 0, false, d.is_user()),
        // Timeouts, and responses cut off or garbled in transit.
        _ => retryable("", 0, false, false),
    }
}

/// The codes by which S3 says an object or bucket is not there (or not readable as stored).
const GONE: [&str; 4] = ["NoSuchKey", "NoSuchBucket", "NotFound", "InvalidObjectState"];

/// [`sdk_error_retryable`] widened for the lake's object store (the [`crate::store`] traits over
/// S3): there a refusal is retried too, unless the object or bucket is gone, because a refusal
/// (access denied, a request refused on the way) is cured by a fix to a policy or the
/// configuration, and a message retried past its receive count lands in the dead-letter queue
/// instead of being recorded as a bad object.
pub fn store_error_retryable<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    sdk_error_retryable(e)
        || match e {
            SdkError::ServiceError(se) => !GONE.contains(&se.err().code().unwrap_or("")),
            SdkError::DispatchFailure(_) => true,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;

    fn coded(code: &str, status: u16) -> SdkError<GetObjectError, HttpResponse> {
        let err = GetObjectError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(err, HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()))
    }

    #[test]
    fn throttling_and_5xx_retry_bad_requests_do_not() {
        assert!(retryable("Throttling", 400, true, false));
        assert!(retryable("", 503, true, false));
        assert!(retryable("", 429, true, false));
        assert!(retryable("KMSThrottling", 400, true, false));
        assert!(retryable("", 0, false, false), "timeouts and dropped connections");
        assert!(!retryable("NotFound", 404, true, false));
        assert!(!retryable("InvalidParameter", 400, true, false));
        assert!(!retryable("", 0, false, true));
    }

    #[test]
    fn sdk_errors_retry_only_what_can_pass() {
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "InternalServerError",
            "SlowDown",
        ] {
            assert!(sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(sdk_error_retryable(&coded("", 503)), "any 5xx");
        assert!(sdk_error_retryable(&SdkError::<GetObjectError, HttpResponse>::timeout_error("slow")));
        let io = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(ConnectorError::io("reset".into()));
        assert!(sdk_error_retryable(&io));
        for code in ["ValidationException", "ResourceNotFoundException", "AccessDeniedException", "NoSuchBucket"] {
            assert!(!sdk_error_retryable(&coded(code, 400)), "{code}");
        }
        assert!(!sdk_error_retryable(&coded("NoSuchKey", 404)));
        let construction = SdkError::<GetObjectError, HttpResponse>::construction_failure("no table name");
        assert!(!sdk_error_retryable(&construction));
        let user = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(ConnectorError::user("bad".into()));
        assert!(!sdk_error_retryable(&user));
    }

    #[test]
    fn the_store_retries_refusals_but_not_a_missing_object() {
        for code in ["NoSuchKey", "NoSuchBucket", "NotFound", "InvalidObjectState"] {
            assert!(!store_error_retryable(&coded(code, 404)), "{code}");
        }
        for code in ["AccessDenied", "InvalidRequest", "SlowDown"] {
            assert!(store_error_retryable(&coded(code, 403)), "{code}");
        }
        assert!(store_error_retryable(&coded("", 500)));
        let user = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(ConnectorError::user("bad".into()));
        assert!(store_error_retryable(&user));
        let construction = SdkError::<GetObjectError, HttpResponse>::construction_failure("no bucket");
        assert!(!store_error_retryable(&construction));
    }
}
