//! Findings to the lake's `findings` table, so Athena keeps the alert history next to the
//! evidence.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::ArrowWriter;
use trailwatch_core::finding::{findings_schema, Finding, FINDINGS_TABLE};
use trailwatch_core::lake::{object_stem, writer_properties, Partition};
use trailwatch_core::store::LakeStore;
use trailwatch_core::time::utc_date;

use crate::error::DetectError;

/// The findings as one Arrow batch of the `findings` schema.
pub fn findings_batch(findings: &[Finding]) -> RecordBatch {
    let schema = findings_schema();
    let n = findings.len();
    let mut id = StringBuilder::with_capacity(n, n * 32);
    let mut kind = StringBuilder::new();
    let mut severity = StringBuilder::new();
    let mut subject = StringBuilder::new();
    let mut start = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut observed, mut baseline, mut score, mut cost) =
        (Float64Builder::new(), Float64Builder::new(), Float64Builder::new(), Float64Builder::new());
    let mut summary = StringBuilder::new();
    let contributor_fields = Fields::from(vec![
        Field::new("dimension", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
    ]);
    let item = |dt: DataType| Arc::new(Field::new("item", dt, true));
    let mut top = ListBuilder::new(StructBuilder::from_fields(contributor_fields.clone(), 0))
        .with_field(item(DataType::Struct(contributor_fields)));
    let mut evidence = ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8));
    let mut status = StringBuilder::new();
    let mut suppressed = BooleanBuilder::new();
    let mut reason = StringBuilder::new();
    let mut rule = StringBuilder::new();
    for f in findings {
        id.append_value(&f.id);
        kind.append_value(f.kind.as_str());
        severity.append_value(f.severity.as_str());
        subject.append_value(&f.subject);
        start.append_value(f.start);
        end.append_option(f.end);
        observed.append_value(f.observed);
        baseline.append_value(f.baseline);
        score.append_value(f.score);
        cost.append_option(f.estimated_cost_usd);
        summary.append_value(&f.summary);
        let s = top.values();
        for c in &f.top_contributors {
            s.field_builder::<StringBuilder>(0).expect("dimension").append_value(&c.dimension);
            s.field_builder::<StringBuilder>(1).expect("value").append_value(&c.value);
            s.field_builder::<Int64Builder>(2).expect("count").append_value(c.count as i64);
            s.append(true);
        }
        top.append(true);
        for e in &f.evidence {
            evidence.values().append_value(e);
        }
        evidence.append(true);
        status.append_value(f.status.as_str());
        suppressed.append_value(f.suppressed);
        reason.append_option(f.suppression_reason.as_deref());
        rule.append_option(f.rule.as_ref().map(|r| serde_json::to_string(r).expect("RuleInfo serializes")));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(kind.finish()),
        Arc::new(severity.finish()),
        Arc::new(subject.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(observed.finish()),
        Arc::new(baseline.finish()),
        Arc::new(score.finish()),
        Arc::new(cost.finish()),
        Arc::new(summary.finish()),
        Arc::new(top.finish()),
        Arc::new(evidence.finish()),
        Arc::new(status.finish()),
        Arc::new(suppressed.finish()),
        Arc::new(reason.finish()),
        Arc::new(rule.finish()),
    ];
    RecordBatch::try_new(schema, columns).expect("builders match the findings schema")
}

/// Writes findings under `findings/account_id=/region=/date=/` (the day of each finding's
/// start). File names hash their content, so a re-run that emits the same findings replaces
/// the same files. Returns the keys written.
pub fn write_findings(lake: &dyn LakeStore, findings: &[Finding]) -> Result<Vec<String>, DetectError> {
    let mut groups: BTreeMap<Partition, Vec<Finding>> = BTreeMap::new();
    for f in findings {
        let p = Partition::new(Some(&f.account_id), Some(&f.region), utc_date(f.start));
        groups.entry(p).or_default().push(f.clone());
    }
    let staging = lake.staging_dir();
    let err = |e: &dyn std::fmt::Display, retryable: bool| DetectError::Findings {
        location: lake.root_uri(),
        message: e.to_string(),
        retryable,
    };
    std::fs::create_dir_all(&staging).map_err(|e| err(&e, false))?;
    let mut keys = Vec::new();
    for (p, fs) in groups {
        let ids: Vec<String> = fs.iter().map(|f| format!("{}:{}", f.id, f.status.as_str())).collect();
        let stem = object_stem("findings", &p.dir(FINDINGS_TABLE), &ids.join(","));
        let key = format!("{}/{stem}.parquet", p.dir(FINDINGS_TABLE));
        let tmp = tempfile::Builder::new()
            .prefix("findings-")
            .suffix(".parquet")
            .tempfile_in(&staging)
            .map_err(|e| err(&e, false))?;
        let file = tmp.reopen().map_err(|e| err(&e, false))?;
        let batch = findings_batch(&fs);
        let mut w =
            ArrowWriter::try_new(file, batch.schema(), Some(writer_properties())).map_err(|e| err(&e, false))?;
        w.write(&batch).map_err(|e| err(&e, false))?;
        w.close().map_err(|e| err(&e, false))?;
        let path = tmp.into_temp_path();
        lake.put_file(&key, &path).map_err(|e| err(&e, e.retryable))?;
        keys.push(key);
    }
    Ok(keys)
}

/// Records something detect could not read (a lake file, an SQS message) under
/// `_rejected/detect/<stem>.jsonl` as one JSON line with the reason. The name hashes what and
/// why, so a retried invocation replaces its own record instead of adding one.
pub fn write_reject(lake: &dyn LakeStore, what: &str, reason: &str) -> Result<String, DetectError> {
    let err = |e: &dyn std::fmt::Display, retryable: bool| DetectError::Findings {
        location: format!("{}/{}/detect", lake.root_uri(), trailwatch_core::lake::REJECTED_DIR),
        message: format!("recording the rejection of {what}: {e}"),
        retryable,
    };
    let line = serde_json::json!({ "stage": "detect", "object": what, "reason": reason });
    let stem = object_stem("detect-reject", what, reason);
    let key = format!("{}/detect/{stem}.jsonl", trailwatch_core::lake::REJECTED_DIR);
    let staging = lake.staging_dir();
    std::fs::create_dir_all(&staging).map_err(|e| err(&e, true))?;
    let tmp =
        tempfile::Builder::new().prefix("reject-").suffix(".jsonl").tempfile_in(&staging).map_err(|e| err(&e, true))?;
    std::fs::write(tmp.path(), format!("{line}\n")).map_err(|e| err(&e, true))?;
    let path = tmp.into_temp_path();
    lake.put_file(&key, &path).map_err(|e| err(&e, e.retryable))?;
    Ok(key)
}
