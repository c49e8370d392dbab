//! Test support: a real S3 endpoint (moto in server mode) started and stopped by the test, and
//! CloudTrail objects shaped the way AWS delivers them.

#![allow(dead_code)]

use std::io::Write;

#[allow(unused_imports)]
pub use trailwatch_core::testing::Moto;

/// A CloudTrail record with the fields detection relies on.
pub fn record(i: usize, time: &str) -> serde_json::Value {
    serde_json::json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLE:s", "arn": "arn:aws:sts::111122223333:assumed-role/r/s",
            "accountId": "111122223333", "sessionContext": {"attributes": {"creationDate": time, "mfaAuthenticated": "false"}}},
        "eventTime": time,
        "eventSource": "lambda.amazonaws.com",
        "eventName": "Invoke",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-sdk-go-v2/1.21.0",
        "requestParameters": {"functionName": format!("arn:aws:lambda:eu-west-1:111122223333:function:f{i}")},
        "responseElements": null,
        "requestID": format!("req-{i}"),
        "eventID": format!("00000000-0000-4000-8000-{i:012}"),
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": false,
        "recipientAccountId": "111122223333",
        "eventCategory": "Data"
    })
}

/// A delivery file: `{"Records":[...]}` gzipped, split over several gzip members the way
/// concatenated deliveries arrive (each member a complete envelope).
pub fn delivery(records: &[serde_json::Value], members: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in records.chunks(records.len().div_ceil(members.max(1)).max(1)) {
        let body = serde_json::to_vec(&serde_json::json!({ "Records": chunk })).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&body).unwrap();
        out.extend(enc.finish().unwrap());
    }
    out
}

/// Rows in a Parquet file's bytes, read with the parquet crate's own reader.
pub fn parquet_rows(bytes: bytes::Bytes) -> usize {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}
