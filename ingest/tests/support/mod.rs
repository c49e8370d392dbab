//! Test support: a real S3 endpoint (moto in server mode) started and stopped by the test, and
//! CloudTrail objects shaped the way AWS delivers them.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on 127.0.0.1, killed when dropped. The binary is `$MOTO_SERVER`, else
/// `moto_server` on the PATH (`scripts/test.sh` installs it in `.venv`).
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run scripts/test.sh, which installs moto, or set MOTO_SERVER")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Credentials and region for the SDK's default chain; moto accepts any.
        for (k, v) in
            [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")]
        {
            std::env::set_var(k, v);
        }
        std::env::remove_var("AWS_PROFILE");
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
