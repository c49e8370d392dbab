//! What each finding kind means on the alert side, in one place: its words in the headline, what
//! its subject names, what to do first, and which evidence query shows it.
//!
//! Every `match` here names every kind, so a kind added to [`FindingKind`] does not compile until
//! this file says how to alert on it. A kind this build does not know (`Other`, read from a lake a
//! newer build wrote) still renders, with generic text and a query chosen by its subject.

use std::borrow::Cow;

use trailwatch_core::finding::{Finding, FindingKind};

use super::sql::{self, Query, Shape};
use super::SHORT_MAX;
use crate::text::field;

/// The alert side of a finding kind.
pub(super) trait KindAlert {
    /// The kind in words, for the headline: `concurrency spike`.
    fn title(&self) -> Cow<'static, str>;
    /// What `subject` names when this kind reads it its own way; `None` when its form decides
    /// ([`sql::shape`]).
    fn subject_means<'a>(&self, subject: &'a str) -> Option<Shape<'a>>;
    /// What to do first: the first thing to check, then how to contain it.
    fn first_steps(&self, sh: Shape) -> [&'static str; 2];
    /// The query that shows the evidence of `f`, whose subject has the shape `sh`.
    fn evidence(&self, f: &Finding, sh: Shape) -> Query;
}

impl KindAlert for FindingKind {
    fn title(&self) -> Cow<'static, str> {
        match self {
            FindingKind::ConcurrencySpike => "concurrency spike".into(),
            FindingKind::Throttling => "throttling".into(),
            FindingKind::Timeouts => "timeouts".into(),
            FindingKind::UnusualInvocation => "unusual invocation".into(),
            FindingKind::ApiCallRate => "unusual API call rate".into(),
            FindingKind::ApiErrorRate => "unusual API error rate".into(),
            FindingKind::LogSilence => "log silence".into(),
            FindingKind::EventTimeSkew => "event time ahead of the clock".into(),
            FindingKind::RetryStorm => "retry storm".into(),
            FindingKind::EventLoss => "lost events".into(),
            FindingKind::NoisyNeighbour => "noisy neighbour".into(),
            FindingKind::RuleMatch => "rule match".into(),
            FindingKind::Other(other) => field(&other.replace('_', " "), SHORT_MAX).into(),
        }
    }

    fn subject_means<'a>(&self, subject: &'a str) -> Option<Shape<'a>> {
        match self {
            // `cloudtrail`: the trail itself went quiet.
            FindingKind::LogSilence => (subject == "cloudtrail").then_some(Shape::Trail),
            // `title (id)` of a rule: not an API, ARN or function, whatever its words.
            FindingKind::RuleMatch => Some(Shape::Name),
            FindingKind::ConcurrencySpike
            | FindingKind::Throttling
            | FindingKind::Timeouts
            | FindingKind::UnusualInvocation
            | FindingKind::ApiCallRate
            | FindingKind::ApiErrorRate
            | FindingKind::EventTimeSkew
            | FindingKind::RetryStorm
            | FindingKind::EventLoss
            | FindingKind::NoisyNeighbour
            | FindingKind::Other(_) => None,
        }
    }

    fn first_steps(&self, sh: Shape) -> [&'static str; 2] {
        match (self, sh) {
            (FindingKind::ConcurrencySpike, _) => [
                "Check who invokes the function (the query above, CloudTrail Invoke events, event source mappings, API Gateway).",
                "If the load is not legitimate, cap it: set reserved concurrency on the function (0 stops it) or throttle the caller.",
            ],
            (FindingKind::Throttling, _) => [
                "Check the concurrency and API quotas (Service Quotas, reserved concurrency) and who is using them up.",
                "Make callers retry with backoff and jitter; ask for a quota increase only if the load is legitimate.",
            ],
            (FindingKind::Timeouts, _) => [
                "Check the downstream dependency the function waits on (database, HTTP API, queue) for latency or errors.",
                "Compare the function's timeout setting with its duration; fail fast with client timeouts before raising it.",
            ],
            (FindingKind::UnusualInvocation, _) => [
                "Verify the invoking principal, source IP and user agent above with the function's owner.",
                "If unknown: revoke its access (function resource policy, role trust, access keys) and rotate its credentials.",
            ],
            (FindingKind::ApiCallRate | FindingKind::ApiErrorRate, _) => [
                "Review the principal's activity in the query above: which APIs, from which IPs and user agents.",
                "Enumeration (many denied APIs) means stolen credentials: deny the principal (SCP or deny policy) and rotate them.",
            ],
            (FindingKind::LogSilence, Shape::Trail) => [
                "Check the trail: StopLogging or DeleteTrail calls (query above), trail status, the bucket and its policy.",
                "Restore logging (StartLogging) and review what the caller did while it was off.",
            ],
            (FindingKind::LogSilence, Shape::Source(_)) => [
                "A source trailwatch needs is missing: the summary says which and how to enable it.",
                "Until it is enabled, the detectors that need it are blind.",
            ],
            (FindingKind::LogSilence, _) => [
                "Check whether the function still runs (its triggers, its log group subscription to the ingest bucket).",
                "If logs were cut on purpose (subscription or log group deleted), restore them and review who did it.",
            ],
            (FindingKind::EventTimeSkew, _) => [
                "Find who wrote the records (query above, contributors): check who can write to the log bucket or log group, and a clock that runs fast.",
                "Forged times can hide activity: review the account's real activity around the time the records arrived.",
            ],
            (FindingKind::RetryStorm, _) => [
                "Find why the attempts fail (error types above; the function's logs for those request ids). A stream function: look at its event source mapping (Kinesis or DynamoDB stream) and the record at the iterator's position.",
                "Stop the repetition: roll back a bad deploy; for streams enable BisectBatchOnFunctionError, cap MaximumRetryAttempts and set an on-failure destination; for async events lower MaximumRetryAttempts and make the handler idempotent.",
            ],
            (FindingKind::EventLoss, _) => [
                "Find where the events went: dropped events are gone unless an on-failure destination or dead-letter queue is set; DeadLetterErrors and DestinationDeliveryFailures mean that target refused them (its policy, KMS key, existence).",
                "Fix the target and the function's asynchronous invocation config (MaximumEventAgeInSeconds, on-failure destination), then replay what can be recovered from the source.",
            ],
            (FindingKind::NoisyNeighbour, _) => [
                "Confirm what drove the culprit's concurrency (the query above: concurrency and throttles per function; its callers or event sources).",
                "Contain it: set reserved concurrency on the culprit to cap it, or reserve concurrency for the throttled functions so the pool cannot starve them; ask for a higher account limit only for legitimate load.",
            ],
            (FindingKind::RuleMatch, _) => [
                "Read the matching records (query above) and the rule's false positives below: who made the calls, from where, and whether the change was planned.",
                "If it was not: undo the change (the records' request parameters say what it was) and contain the principal (deny policy or SCP, revoke its sessions, rotate its keys).",
            ],
            (FindingKind::Other(_), _) => [
                "Run the evidence query above and review the activity around the episode.",
                "If it is unexpected, contact the owner of the subject and contain it (revoke access, throttle).",
            ],
        }
    }

    fn evidence(&self, f: &Finding, sh: Shape) -> Query {
        match (self, sh) {
            (FindingKind::ConcurrencySpike, Shape::Name) => sql::invocations_per_minute(f),
            (FindingKind::Timeouts, Shape::Name) => sql::slowest_invocations(f),
            // Throttled invocations never run, so they leave no REPORT line: the metric stream has them.
            (FindingKind::Throttling, Shape::Name) => sql::throttle_metrics(f),
            (FindingKind::Throttling, Shape::Api(..)) => sql::throttled_calls(f, sh),
            (FindingKind::UnusualInvocation, Shape::Name) => sql::invoke_calls(f),
            (FindingKind::LogSilence, Shape::Trail) => sql::trail_changes(f),
            (FindingKind::LogSilence, Shape::Name) => sql::last_invocations(f),
            (FindingKind::LogSilence, Shape::Source(src)) => sql::records_per_day(f, src),
            (FindingKind::EventTimeSkew, _) => sql::records_ahead_of_the_clock(f),
            (FindingKind::RetryStorm, Shape::Name) => sql::attempts_per_minute(f),
            (FindingKind::EventLoss, Shape::Name) => sql::async_event_metrics(f),
            (FindingKind::NoisyNeighbour, _) => sql::pool_per_function(f),
            (FindingKind::ApiErrorRate, _) => sql::api_errors(f, sh),
            (FindingKind::RuleMatch, _) => sql::rule_events(f),
            // A kind this build does not know: a bare name is a function unless the kind is an API one.
            (FindingKind::Other(k), Shape::Name) if !k.starts_with("api_") => sql::invocations(f),
            (
                FindingKind::ConcurrencySpike
                | FindingKind::Throttling
                | FindingKind::Timeouts
                | FindingKind::UnusualInvocation
                | FindingKind::ApiCallRate
                | FindingKind::LogSilence
                | FindingKind::RetryStorm
                | FindingKind::EventLoss
                | FindingKind::Other(_),
                _,
            ) => sql::api_calls(f, sh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;
    use crate::render::*;

    #[test]
    fn unknown_kinds_still_render_with_the_generic_text() {
        let k = FindingKind::parse("brand_new_kind");
        assert_eq!(k, FindingKind::Other("brand_new_kind".into()));
        assert_eq!(k.title(), "brand new kind");
        assert!(k.first_steps(Shape::Name)[0].starts_with("Run the evidence query above"));
        let m = opened(&finding("brand_new_kind", "orders"), 0, &RenderConfig::default());
        assert!(m.email.starts_with("HIGH brand new kind: \"orders\""), "{}", m.email);
        assert_eq!(m.attributes["kind"], AttrValue::String("brand_new_kind".into()));
        // Every known kind has its own words and its own first steps.
        for k in FindingKind::ALL {
            assert_ne!(k.first_steps(Shape::Name), FindingKind::Other(String::new()).first_steps(Shape::Name), "{k}");
            let m = opened(&finding(k.as_str(), "orders"), 0, &RenderConfig::default());
            assert!(m.email.starts_with(&format!("HIGH {}: ", k.title())), "{}", m.email);
        }
    }
}
