//! Every CloudWatch sample of the public corpus either yields the invocations (and CloudTrail
//! records) it holds, or is rejected with a clear reason. The counts were read off the samples.

use std::path::PathBuf;

use trailwatch_core::store::{LocalFiles, LocalLake, ObjectRef};
use trailwatch_ingest::{ingest_object, Config};

/// The public corpus's CloudWatch samples, bundled with the repository
/// (`testdata/corpus/PROVENANCE.tsv`). Part of the checkout, so never skipped.
fn corpus() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/cloudwatch");
    assert!(dir.is_dir(), "the bundled corpus is missing at {}", dir.display());
    dir
}

/// (file, rows written, records rejected, the error when the file fails).
const EXPECTED: &[(&str, u64, u64, Option<&str>)] = &[
    ("aws-lambda-extensions/s3-logs-extension-demo-zip-archive/logs-extension-demo-function-2020-11-12-14 55 35.756513.log", 0, 0, Some("no value is valid JSON")),
    ("datadog-serverless-functions/aws/logs_monitoring/tests/events/cloudwatch_logs.json", 1, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tests/events/cloudwatch_logs_2.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tests/events/cloudwatch_logs_ddtags.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tests/events/sqs_s3.json", 0, 1, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tests/events/sqs_sns_s3.json", 0, 1, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_customized_log_group_lambda_invocation.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_cloudtrail.json", 4, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_coldstart.json", 1, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_custom_tags.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_lambda_invocation.json", 1, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_service_tag.json", 0, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/cloudwatch_log_timeout.json", 1, 0, None),
    ("datadog-serverless-functions/aws/logs_monitoring/tools/integration_tests/snapshots/step_functions_log.json", 0, 0, None),
    ("dynatrace-aws-log-forwarder/examples/SNS/kinesis_request_SNS.json", 0, 0, None),
    ("dynatrace-aws-log-forwarder/examples/SNS/kinesis_request_SNS_failure.json", 0, 0, None),
    ("dynatrace-aws-log-forwarder/examples/kinesis_request.json", 0, 0, None),
    ("newrelic-aws-log-ingestion/test/events/entry_lambda_oom.json", 1, 0, None),
    ("newrelic-aws-log-ingestion/test/events/entry_lambda_sam.json", 0, 0, None),
    ("newrelic-aws-log-ingestion/test/events/entry_lambda_timeout.json", 1, 0, None),
    ("newrelic-aws-log-ingestion/test/events/invoke_lambda.json", 0, 1, None),
    ("otel-collector-contrib/extension/encoding/awslogsencodingextension/internal/unmarshaler/cloudtraillog/testdata/cloudtrail_log_cw.json", 1, 0, None),
    ("otel-collector-contrib/extension/encoding/awslogsencodingextension/internal/unmarshaler/subscription-filter/testdata/extracted_fields_both.json", 0, 0, None),
    ("otel-collector-contrib/extension/encoding/awslogsencodingextension/internal/unmarshaler/subscription-filter/testdata/multiple_json_objects.json", 0, 0, None),
    ("otel-collector-contrib/extension/encoding/awslogsencodingextension/internal/unmarshaler/subscription-filter/testdata/valid_cloudwatch_log_control.json", 0, 0, None),
    ("streamalert/rules/classifier/cloudwatch/cloudwatch_cloudtrail.json", 0, 0, Some("not CloudTrail")),
    ("streamalert/rules/classifier/cloudwatch/cloudwatch_control_message.json", 0, 0, Some("not CloudTrail")),
];

#[test]
fn every_cloudwatch_sample_yields_its_invocations_or_a_reason() {
    let dir = corpus();
    let mut listed: Vec<String> =
        walk(&dir).into_iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
    listed.sort();
    let mut expected: Vec<String> = EXPECTED.iter().map(|e| e.0.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "a corpus file without an expectation, or an expectation without a file");
    for (file, rows, rejected, error) in EXPECTED {
        let lake_dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(lake_dir.path());
        let got = ingest_object(&LocalFiles, &ObjectRef::local(&dir.join(file)), &lake, &Config::default());
        match (got, error) {
            (Ok(r), None) => assert_eq!((r.records, r.rejected), (*rows, *rejected), "{file}"),
            (Err(e), Some(want)) => {
                assert!(!e.is_retryable(), "{file}");
                assert!(
                    e.to_string().contains(want) && e.to_string().contains(file.rsplit('/').next().unwrap()),
                    "{file}: {e}"
                );
            }
            (other, _) => panic!("{file}: {other:?}"),
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
