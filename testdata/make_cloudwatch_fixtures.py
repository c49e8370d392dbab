#!/usr/bin/env python3
"""Writes the CloudWatch fixtures in testdata/cloudwatch, byte for byte reproducible (gzip mtime 0).

The shapes follow the AWS documentation pages named next to each; the corpus has no sample of
them. Run from anywhere: python3 testdata/make_cloudwatch_fixtures.py
"""
import gzip
import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "cloudwatch"


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


_ids = iter(range(10**6))


def payload(group, stream, events, owner="111122223333", kind="DATA_MESSAGE"):
    # CloudWatch Logs User Guide, "Using CloudWatch Logs subscription filters": payload shape.
    return {"messageType": kind, "owner": owner, "logGroup": group, "logStream": stream,
            "subscriptionFilters": ["trailwatch"], "logEvents": [
                {"id": f"3753{ts:020d}{next(_ids):032d}", "timestamp": ts, "message": msg} for ts, msg in events]}


T = 1_704_164_400_000  # 2024-01-02T03:00:00Z
text_events = [
    (T, "START RequestId: 11111111-1111-4111-8111-111111111111 Version: $LATEST\n"),
    (T + 5, "2024-01-02T03:00:00.005Z\t11111111-1111-4111-8111-111111111111\tINFO\tprocessing order 42\n"),
    (T + 120, "END RequestId: 11111111-1111-4111-8111-111111111111\n"),
    # Lambda Developer Guide, "Working with Lambda function logs": REPORT with Init Duration and X-Ray.
    (T + 120, "REPORT RequestId: 11111111-1111-4111-8111-111111111111\tDuration: 118.53 ms\tBilled Duration: 119 ms\tMemory Size: 512 MB\tMax Memory Used: 81 MB\tInit Duration: 402.17 ms\t\nXRAY TraceId: 1-65937c30-0a1b2c3d4e5f60718293a4b5\tSegmentId: 0a1b2c3d4e5f6071\tSampled: true\t\n"),
    (T + 1000, "START RequestId: 22222222-2222-4222-8222-222222222222 Version: $LATEST\n"),
    (T + 1050, "END RequestId: 22222222-2222-4222-8222-222222222222\n"),
    (T + 1050, "REPORT RequestId: 22222222-2222-4222-8222-222222222222\tDuration: 49.90 ms\tBilled Duration: 50 ms\tMemory Size: 512 MB\tMax Memory Used: 82 MB\t\n"),
    (T + 2000, "START RequestId: 33333333-3333-4333-8333-333333333333 Version: $LATEST\n"),
    (T + 5003, "2024-01-02T03:00:05.002Z 33333333-3333-4333-8333-333333333333 Task timed out after 3.00 seconds\n\n"),
    (T + 5003, "END RequestId: 33333333-3333-4333-8333-333333333333\n"),
    (T + 5003, "REPORT RequestId: 33333333-3333-4333-8333-333333333333\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 512 MB\tMax Memory Used: 90 MB\tStatus: timeout\n"),
]
oom_events = [
    (T + 9000, "START RequestId: 44444444-4444-4444-8444-444444444444 Version: 7\n"),
    (T + 9800, "REPORT RequestId: 44444444-4444-4444-8444-444444444444\tDuration: 800.12 ms\tBilled Duration: 801 ms\tMemory Size: 128 MB\tMax Memory Used: 128 MB\t\n"),
    (T + 9801, "RequestId: 44444444-4444-4444-8444-444444444444 Error: Runtime exited with error: signal: killed\nRuntime.ExitError\n"),
]
# Lambda Developer Guide, "Configuring JSON and plain text log formats": platform events.
json_events = [
    (T + 20000, json.dumps({"time": "2024-01-02T03:00:20.000Z", "type": "platform.start", "record": {"requestId": "55555555-5555-4555-8555-555555555555", "version": "$LATEST"}})),
    (T + 20001, json.dumps({"timestamp": "2024-01-02T03:00:20.001Z", "level": "INFO", "requestId": "55555555-5555-4555-8555-555555555555", "message": "hello"})),
    (T + 20210, json.dumps({"time": "2024-01-02T03:00:20.210Z", "type": "platform.runtimeDone", "record": {"requestId": "55555555-5555-4555-8555-555555555555", "status": "success", "metrics": {"durationMs": 209.1, "producedBytes": 50}}})),
    (T + 20211, json.dumps({"time": "2024-01-02T03:00:20.211Z", "type": "platform.report", "record": {"requestId": "55555555-5555-4555-8555-555555555555", "metrics": {"durationMs": 209.8, "billedDurationMs": 210, "memorySizeMB": 256, "maxMemoryUsedMB": 70, "initDurationMs": 250.3}, "tracing": {"spanId": "54565fb41ac79632", "type": "X-Amzn-Trace-Id", "value": "Root=1-65937c44-1a2b3c4d5e6f708192a3b4c5;Parent=54565fb41ac79632;Sampled=1"}, "status": "success"}})),
    (T + 23001, json.dumps({"time": "2024-01-02T03:00:23.001Z", "type": "platform.report", "record": {"requestId": "66666666-6666-4666-8666-666666666666", "metrics": {"durationMs": 3000.0, "billedDurationMs": 3000, "memorySizeMB": 256, "maxMemoryUsedMB": 71}, "status": "timeout"}})),
]

# Firehose writes each subscription payload gzipped, back to back with no separator
# (Kinesis Data Firehose Developer Guide, "CloudWatch Logs as a source").
firehose = b"".join(gz(json.dumps(p).encode()) for p in [
    payload("/aws/lambda/orders", "2024/01/02/[$LATEST]0a1b2c3d4e5f60718293a4b5c6d7e8f9", text_events),
    payload("/aws/lambda/orders", "2024/01/02/[7]1b2c3d4e5f60718293a4b5c6d7e8f90a", oom_events),
    payload("/aws/lambda/billing", "2024/01/02/[$LATEST]2c3d4e5f60718293a4b5c6d7e8f90a1b", json_events),
    {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "", "subscriptionFilters": [],
     "logEvents": [{"id": "", "timestamp": T, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]},
])
out = HERE / "firehose" / "eu-west-1" / "2024" / "01" / "02" / "03"
out.mkdir(parents=True, exist_ok=True)
(out / "trailwatch-logs-1-2024-01-02-03-00-00-8a7b6c5d").write_bytes(firehose)

# The same kind of payload as a Lambda subscription event (base64 of gzip).
import base64
event = {"awslogs": {"data": base64.b64encode(gz(json.dumps(payload("/aws/lambda/orders", "2024/01/02/[$LATEST]0a1b2c3d4e5f60718293a4b5c6d7e8f9", text_events[:4])).encode())).decode()}}
(HERE / "lambda-subscription-event.json").write_text(json.dumps(event, indent=2) + "\n")

# CloudWatch Logs User Guide, "Exporting log data to Amazon S3": `<prefix>/<task id>/<stream>/000000.gz`,
# lines `<ISO timestamp> <message>`.
lines = []
for ts, msg in text_events + oom_events:
    iso = f"2024-01-02T03:{(ts - T) // 60000:02d}:{(ts - T) // 1000 % 60:02d}.{(ts - T) % 1000:03d}Z"
    lines.append(f"{iso} {msg.rstrip(chr(10))}")
exp = HERE / "export" / "exportedlogs" / "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0" / "2024" / "01" / "02" / "[$LATEST]0a1b2c3d"
exp.mkdir(parents=True, exist_ok=True)
(exp / "000000.gz").write_bytes(gz(("\n".join(lines) + "\n").encode()))
(HERE / "export" / "exportedlogs" / "aws-logs-write-test").write_text("Permission Check Successful")

# CloudWatch User Guide, "CloudWatch metric streams: JSON output format".
def dp(metric, dims, value, unit, ns="AWS/Lambda", ts=1704164400000):
    return {"metric_stream_name": "trailwatch", "account_id": "111122223333", "region": "eu-west-1", "namespace": ns,
            "metric_name": metric, "dimensions": dims, "timestamp": ts, "value": value, "unit": unit}
points = [
    dp("ConcurrentExecutions", {}, {"max": 42.0, "min": 3.0, "sum": 610.0, "count": 60.0}, "Count"),
    dp("ClaimedAccountConcurrency", {}, {"max": 45.0, "min": 5.0, "sum": 700.0, "count": 60.0}, "Count"),
    dp("UnreservedConcurrentExecutions", {}, {"max": 40.0, "min": 3.0, "sum": 600.0, "count": 60.0}, "Count"),
    dp("Throttles", {"FunctionName": "orders"}, {"max": 7.0, "min": 0.0, "sum": 19.0, "count": 60.0}, "Count"),
    dp("Duration", {"FunctionName": "orders", "Resource": "orders"}, {"max": 3000.0, "min": 49.9, "sum": 3168.4, "count": 3.0}, "Milliseconds"),
    dp("DiskWriteOps", {"InstanceId": "i-0123456789abcdef0"}, {"max": 0.0, "min": 0.0, "sum": 0.0, "count": 2.0}, "Count", ns="AWS/EC2"),
]
ms = HERE / "metric-stream" / "2024" / "01" / "02" / "03"
ms.mkdir(parents=True, exist_ok=True)
(ms / "trailwatch-metrics-1-2024-01-02-03-00-00-1a2b3c4d.gz").write_bytes(gz("".join(json.dumps(p) + "\n" for p in points).encode()))
