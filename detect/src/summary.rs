//! One sentence per finding, for people. Values from the data (subjects, principals) are kept
//! as they are here; alert escapes them for each medium.

use trailwatch_core::finding::Status;
use trailwatch_core::time::format_rfc3339_millis;

use crate::window::Episode;

fn num(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

pub fn summary(ep: &Episode, status: Status) -> String {
    let when = format_rfc3339_millis(ep.start);
    let body = match ep.kind.as_str() {
        "api_call_rate" | "api_error_rate" if ep.detail == "enumeration" => format!(
            "{} was denied on {} distinct APIs within minutes (usually {}): likely enumeration with limited permissions",
            ep.subject,
            num(ep.observed),
            num(ep.baseline)
        ),
        "api_call_rate" | "api_error_rate" => format!(
            "{} {} in 5 minutes for {} against a baseline of {}",
            num(ep.observed),
            ep.detail,
            ep.subject,
            num(ep.baseline)
        ),
        "throttling" => format!(
            "{} throttled calls in 5 minutes for {} against a baseline of {}",
            num(ep.observed),
            ep.subject,
            num(ep.baseline)
        ),
        "concurrency_spike" => {
            let cost = ep.cost.map(|c| format!(", about ${c:.2} extra so far")).unwrap_or_default();
            format!(
                "Lambda function {} peaked at {} {} against a baseline of {}{}",
                ep.subject,
                num(ep.observed),
                ep.detail,
                num(ep.baseline),
                cost
            )
        }
        "timeouts" if ep.detail.starts_with("p95") => format!(
            "Lambda function {}'s p95 duration reached {} ms, close to its timeout ({}), against a usual {} ms",
            ep.subject,
            num(ep.observed),
            ep.detail,
            num(ep.baseline)
        ),
        "timeouts" => format!(
            "Lambda function {} timed out on {:.0}% of invocations against a usual {:.1}% ({})",
            ep.subject,
            ep.observed * 100.0,
            ep.baseline * 100.0,
            ep.detail
        ),
        "unusual_invocation" => format!(
            "Lambda function {} was invoked {} time(s) by callers never seen for it ({})",
            ep.subject,
            num(ep.observed),
            ep.detail
        ),
        "log_silence" if ep.subject.starts_with("source:") => format!("{}: {}", ep.subject, ep.detail),
        "log_silence" if ep.detail.ends_with("called") => {
            format!("{} for this account and region: CloudTrail may stop recording", ep.detail)
        }
        "log_silence" => format!(
            "{} stopped arriving ({}) although about {} were expected since",
            if ep.subject == "cloudtrail" { "CloudTrail records".to_string() } else { format!("Logs of {}", ep.subject) },
            ep.detail,
            num(ep.baseline)
        ),
        crate::detectors::skew::KIND => crate::detectors::skew::summary(ep),
        other => format!("{other} on {}", ep.subject),
    };
    match status {
        Status::Open => format!("{body}, since {when}."),
        Status::Closed => format!("Ended: {body}; from {when} to {}.", format_rfc3339_millis(ep.last)),
    }
}
