//! CloudWatch metrics from a Lambda without an API call or a permission: a log line in the
//! Embedded Metric Format (EMF), which CloudWatch Logs turns into metrics as it ingests it. The
//! stack's alarms (detect lag, say) watch these.

use serde_json::{json, Map, Value};

use crate::time::EpochMillis;

/// The namespace of every trailwatch metric.
pub const NAMESPACE: &str = "Trailwatch";

/// One value of a metric, with its CloudWatch unit (`Seconds`, `Count`, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub value: f64,
    pub unit: &'a str,
}

/// The EMF log line (one JSON object, printed alone on a line) for `metrics` at `timestamp`,
/// under [`NAMESPACE`] with one dimension set: `dimensions` (e.g. `[("Function", "detect")]`).
pub fn emf_line(timestamp: EpochMillis, dimensions: &[(&str, &str)], metrics: &[Metric<'_>]) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), Value::from(*v));
    }
    for m in metrics {
        root.insert(m.name.into(), Value::from(m.value));
    }
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_declares_every_metric_and_dimension_it_carries() {
        let line = emf_line(
            1_700_000_000_000,
            &[("Function", "detect")],
            &[Metric { name: "DetectLagSeconds", value: 312.5, unit: "Seconds" }],
        );
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(cw["Namespace"], NAMESPACE);
        assert_eq!(cw["Dimensions"], json!([["Function"]]));
        assert_eq!(cw["Metrics"], json!([{"Name": "DetectLagSeconds", "Unit": "Seconds"}]));
        // The values are members of the root object, named as declared.
        assert_eq!(v["DetectLagSeconds"], 312.5);
        assert_eq!(v["Function"], "detect");
    }
}
