//! Throughput of the CloudTrail read path on one core, in memory: gunzip → split → parse →
//! Arrow → zstd Parquet. `bench/ingest_vs_duckdb.py` compares the whole command with DuckDB.

use std::io::Write;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use serde_json::{json, value::RawValue, Value};
use trailwatch_ingest::convert::{parse_record, CloudTrailBatch};
use trailwatch_ingest::decompress::{self, DecompressLimits};
use trailwatch_ingest::split::{Limits, Splitter};

fn record(i: usize) -> Value {
    let source = ["s3.amazonaws.com", "lambda.amazonaws.com", "sts.amazonaws.com", "ec2.amazonaws.com"][i % 4];
    let name = ["GetObject", "Invoke", "AssumeRole", "DescribeInstances"][i % 4];
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "principalId": format!("AROAEXAMPLE{i}:session"), "arn": format!("arn:aws:sts::111122223333:assumed-role/app-{}/session", i % 17),
            "accountId": "111122223333", "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": "arn:aws:iam::111122223333:role/app", "accountId": "111122223333", "userName": "app"},
                "webIdFederationData": {}, "attributes": {"creationDate": "2024-01-02T00:00:00Z", "mfaAuthenticated": "false"}}},
        "eventTime": format!("2024-01-02T00:{:02}:{:02}Z", i / 60 % 60, i % 60),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": format!("203.0.113.{}", i % 250),
        "userAgent": "aws-sdk-go-v2/1.21.0 os/linux lang/go#1.20 md/GOOS#linux md/GOARCH#amd64",
        "requestParameters": {"bucketName": "data", "key": format!("objects/{i}.json"), "Host": "data.s3.eu-west-1.amazonaws.com"},
        "responseElements": null,
        "additionalEventData": {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0, "AuthenticationMethod": "AuthHeader", "x-amz-id-2": "EXAMPLE", "bytesTransferredOut": 1024},
        "requestID": format!("REQ{i:012}"),
        "eventID": format!("00000000-0000-4000-8000-{i:012}"),
        "readOnly": true,
        "resources": [{"type": "AWS::S3::Object", "ARN": format!("arn:aws:s3:::data/objects/{i}.json")}, {"accountId": "111122223333", "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::data"}],
        "eventType": "AwsApiCall",
        "managementEvent": false,
        "recipientAccountId": "111122223333",
        "eventCategory": "Data",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "data.s3.eu-west-1.amazonaws.com"}
    })
}

fn read_all(gz: &[u8]) -> usize {
    let opened = decompress::open(gz, DecompressLimits::default(), false).unwrap();
    let mut reader = opened.reader;
    let mut split = Splitter::new(&mut reader, Limits::default());
    let mut batch = CloudTrailBatch::new();
    let mut out = ArrowWriter::try_new(
        Vec::new(),
        trailwatch_core::schema::cloudtrail_schema(),
        Some(trailwatch_core::lake::writer_properties()),
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut n = 0;
    while split.next_record(&mut buf).unwrap().is_some() {
        let raw: &RawValue = serde_json::from_slice(&buf).unwrap();
        let row = parse_record(raw).unwrap();
        batch.push(&row, buf.len());
        n += 1;
        if batch.len() == 4096 {
            out.write(&batch.finish()).unwrap();
        }
    }
    out.write(&batch.finish()).unwrap();
    out.close().unwrap();
    n
}

fn bench(c: &mut Criterion) {
    let records: Vec<Value> = (0..20_000).map(record).collect();
    let json = serde_json::to_vec(&json!({ "Records": records })).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).unwrap();
    let gz = enc.finish().unwrap();
    let mut g = c.benchmark_group("cloudtrail");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("gzip_to_parquet_20k_records", |b| {
        b.iter_batched(|| (), |_| assert_eq!(read_all(&gz), 20_000), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
