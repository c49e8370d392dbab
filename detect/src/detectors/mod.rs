//! The detectors. Each keeps its keys inside the account-region shard they belong to, so state
//! shards by account and region and concurrent invocations on different shards never contend.

pub mod api;
pub mod failure;
pub mod lambda;
pub mod rules;
pub mod silence;
pub mod skew;

use trailwatch_core::finding::Finding;

use crate::config::DetectConfig;
use crate::stats::HashKey;

/// What a detector needs besides its own state: the config, the shard it runs in and where
/// findings go.
pub struct Ctx<'a> {
    pub cfg: &'a DetectConfig,
    pub account: &'a str,
    pub region: &'a str,
    pub out: &'a mut Vec<Finding>,
    /// The deployment's hash key, for every hash a detector keeps.
    pub key: &'a HashKey,
}

/// Error codes AWS services answer throttled calls with.
pub fn is_throttle(code: Option<&str>, message: Option<&str>) -> bool {
    // EC2 writes `Client.RequestLimitExceeded`.
    let code = code.map(|c| c.strip_prefix("Client.").or_else(|| c.strip_prefix("Server.")).unwrap_or(c));
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "Throttling"
                | "ThrottledException"
                | "RequestLimitExceeded"
                | "SlowDown"
                | "TooManyRequestsException"
                | "RequestThrottled"
                | "RequestThrottledException"
                | "ProvisionedThroughputExceededException"
        )
    ) || message.is_some_and(|m| m.to_ascii_lowercase().contains("rate exceeded"))
}

/// Error codes of a denied call.
pub fn is_denial(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.contains("AccessDenied")
            || c.contains("UnauthorizedOperation")
            || c.contains("NotAuthorized")
            || matches!(c, "AuthorizationError" | "Forbidden" | "UnauthorizedAccess" | "AuthFailure")
    })
}

/// The baseline weight of a window of `width` ms: `alpha` is per 5-minute window, so a series
/// of minutes and a series of hours forget at the same pace in event time.
pub fn alpha_for(alpha: f64, width: i64) -> f64 {
    1.0 - (1.0 - alpha).powf(width as f64 / 300_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_and_denials() {
        assert!(is_throttle(Some("ThrottlingException"), None));
        assert!(is_throttle(Some("Client.RequestLimitExceeded"), None) && is_throttle(None, Some("Rate exceeded")));
        assert!(is_throttle(Some("X"), Some("Rate Exceeded.")));
        assert!(!is_throttle(Some("AccessDenied"), None));
        assert!(is_denial(Some("AccessDenied")) && is_denial(Some("AccessDeniedException")));
        assert!(is_denial(Some("Client.UnauthorizedOperation")));
        assert!(!is_denial(Some("NoSuchEntity")) && !is_denial(None));
        assert!((alpha_for(0.02, 300_000) - 0.02).abs() < 1e-12);
        assert!(alpha_for(0.02, 60_000) < 0.02);
    }
}
