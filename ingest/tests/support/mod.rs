//! Test support: a real S3 endpoint (moto in server mode) started and stopped by the test, and
//! CloudTrail objects shaped the way AWS delivers them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A moto server of this test's own, killed when dropped.
///
/// Tests run in parallel threads, so nothing here touches process-wide state: moto binds a port
/// the kernel picks (`-p 0`) and reports it, so no other process can take it between a probe and
/// the bind (choosing a free port first and passing it on could hand two servers the same port,
/// or lose it to any socket opened meanwhile); and the S3 client gets its endpoint, region and
/// credentials from its own config ([`Moto::s3`]), never from environment variables set while
/// other tests read them. The binary is `$MOTO_SERVER`, else `moto_server` on the PATH.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

/// How long a moto server may take to start on a loaded machine.
const MOTO_START: Duration = Duration::from_secs(120);

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run scripts/test.sh, which installs moto, or set MOTO_SERVER")
            });
        // werkzeug logs " * Running on http://127.0.0.1:<port>" once its socket listens, on
        // stderr (stdout in some versions): read both, and keep draining them so moto never
        // blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        for out in [
            Box::new(child.stderr.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().expect("piped")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut log = Vec::new();
        let port = loop {
            match rx.recv_timeout(MOTO_START) {
                Ok(line) => {
                    if let Some(port) = line.split("Running on http://127.0.0.1:").nth(1) {
                        let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
                        break digits.parse::<u16>().expect("moto reported its port");
                    }
                    log.push(line);
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("moto did not start ({e:?}, {status:?}); its output:\n{}", log.join("\n"));
                }
            }
        };
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// An S3 client for this server, configured explicitly (no environment, no profile).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
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
