//! Finds the S3 objects a Lambda event is about, whatever carried it: S3 notifications (direct,
//! inside SQS, inside SNS, SNS inside SQS), EventBridge "Object Created" events, and CloudTrail's
//! own SNS delivery notices. Keys from S3 notifications are URL-decoded (`+` is a space);
//! EventBridge and CloudTrail notices carry keys verbatim.

use crate::s3key::decode_event_key;
use crate::store::ObjectRef;
use serde_json::Value;

/// The objects one retryable unit of an event names: one SQS message, or the whole event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The SQS message id, for a partial batch response.
    pub message_id: Option<String>,
    /// The objects to ingest, or why the unit could not be read (a permanent problem).
    pub objects: Result<Vec<ObjectRef>, String>,
}

/// Deepest envelope nesting followed (SQS → SNS → S3 is three).
const MAX_NESTING: u32 = 4;

/// Splits an event into units. Never fails: an unreadable unit carries its reason.
pub fn decode_event(event: &Value) -> Vec<Unit> {
    let records = event.get("Records").and_then(Value::as_array);
    let is_sqs = records.is_some_and(|r| {
        !r.is_empty() && r.iter().all(|x| x.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    });
    if is_sqs {
        return records
            .into_iter()
            .flatten()
            .map(|m| Unit {
                message_id: m.get("messageId").and_then(Value::as_str).map(str::to_string),
                objects: match m.get("body").and_then(Value::as_str) {
                    Some(body) => serde_json::from_str::<Value>(body)
                        .map_err(|e| format!("SQS message body is not JSON: {e}"))
                        .and_then(|v| objects_in(&v, 1)),
                    None => Err("SQS message has no body".into()),
                },
            })
            .collect();
    }
    vec![Unit { message_id: None, objects: objects_in(event, 0) }]
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The objects in one envelope, following nested envelopes.
pub fn objects_in(v: &Value, depth: u32) -> Result<Vec<ObjectRef>, String> {
    if depth > MAX_NESTING {
        return Err("envelopes nested too deep".into());
    }
    // S3's test event when a notification is configured: nothing to do.
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(vec![]);
    }
    // SNS notification delivered to SQS without raw message delivery.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        let msg = v.get("Message").and_then(Value::as_str).ok_or("SNS notification without a Message")?;
        let inner: Value = serde_json::from_str(msg).map_err(|e| format!("SNS Message is not JSON: {e}"))?;
        return objects_in(&inner, depth + 1);
    }
    // EventBridge.
    if let Some(dt) = v.get("detail-type").and_then(Value::as_str) {
        if dt != "Object Created" {
            return Ok(vec![]);
        }
        let bucket = str_at(v, &["detail", "bucket", "name"]).ok_or("EventBridge event without detail.bucket.name")?;
        let key = str_at(v, &["detail", "object", "key"]).ok_or("EventBridge event without detail.object.key")?;
        return Ok(vec![ObjectRef {
            etag: str_at(v, &["detail", "object", "etag"]).map(str::to_string),
            size: v.pointer("/detail/object/size").and_then(Value::as_u64),
            ..ObjectRef::s3(bucket, key)
        }]);
    }
    // CloudTrail's SNS notice of a delivery.
    if let (Some(bucket), Some(keys)) =
        (v.get("s3Bucket").and_then(Value::as_str), v.get("s3ObjectKey").and_then(Value::as_array))
    {
        return Ok(keys.iter().filter_map(Value::as_str).map(|k| ObjectRef::s3(bucket, k)).collect());
    }
    let Some(records) = v.get("Records").and_then(Value::as_array) else {
        return Err("not an S3, SQS, SNS, EventBridge or CloudTrail notification".into());
    };
    let mut out = Vec::new();
    for r in records {
        if let Some(sns) = r.get("Sns") {
            let msg = sns.get("Message").and_then(Value::as_str).ok_or("SNS record without a Message")?;
            let inner: Value = serde_json::from_str(msg).map_err(|e| format!("SNS Message is not JSON: {e}"))?;
            out.extend(objects_in(&inner, depth + 1)?);
            continue;
        }
        match r.get("eventSource").and_then(Value::as_str) {
            Some("aws:s3") => {
                let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
                if !name.starts_with("ObjectCreated") {
                    continue;
                }
                let bucket = str_at(r, &["s3", "bucket", "name"]).ok_or("S3 record without s3.bucket.name")?;
                let key = str_at(r, &["s3", "object", "key"]).ok_or("S3 record without s3.object.key")?;
                out.push(ObjectRef {
                    etag: str_at(r, &["s3", "object", "eTag"]).map(str::to_string),
                    size: r.pointer("/s3/object/size").and_then(Value::as_u64),
                    ..ObjectRef::s3(bucket, decode_event_key(key))
                });
            }
            other => return Err(format!("unsupported record source {other:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../testdata/events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn keys(units: &[Unit]) -> Vec<String> {
        units.iter().flat_map(|u| u.objects.clone().unwrap()).map(|o| o.uri()).collect()
    }

    #[test]
    fn s3_keys_are_form_decoded_and_eventbridge_keys_verbatim() {
        let mut ev = fixture("s3-object-created.json");
        ev["Records"][0]["s3"]["object"]["key"] = json!("a+b%2Bc%3D.json.gz");
        let units = decode_event(&ev);
        assert_eq!(units.len(), 1);
        assert!(keys(&units)[0].ends_with("/a b+c=.json.gz"));
        let units = decode_event(&fixture("eventbridge-object-created.json"));
        assert_eq!(keys(&units), vec!["s3://ct-siem-sync/my+file.json.gz"]);
    }

    #[test]
    fn envelopes_are_unwrapped() {
        for name in ["sqs-s3-object-created.json", "sns-s3-object-created.json", "sqs-sns-s3-object-created.json"] {
            let units = decode_event(&fixture(name));
            assert_eq!(
                keys(&units),
                vec!["s3://lambda-artifacts-deafc19498e3f2df/b21b84d653bb07b05b1e6b33684dc11b"],
                "{name}"
            );
        }
        let units = decode_event(&fixture("sns-cloudtrail-delivery-notice.json"));
        assert_eq!(keys(&units).len(), 1);
        assert!(keys(&units)[0].starts_with("s3://amzn-s3-demo-bucket/AWSLogs/111122223333/CloudTrail/"));
    }

    #[test]
    fn test_events_and_garbage() {
        assert_eq!(keys(&decode_event(&fixture("s3-test-event.json"))), Vec::<String>::new());
        let units = decode_event(&fixture("sqs-batch-partial-garbage.json"));
        assert!(units[0].objects.is_ok());
        assert!(units[1].objects.as_ref().unwrap_err().contains("not JSON"));
        assert_eq!(units[1].message_id.as_deref(), Some("bad00000-0000-0000-0000-000000000002"));
        assert!(decode_event(&json!({"hello": 1}))[0].objects.is_err());
    }
}
