"""`trailwatch ingest` with S3 on both sides: s3:// inputs and an s3:// lake on a moto server
started here on 127.0.0.1, read back through S3 with DuckDB."""

import gzip
import io
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import boto3
import duckdb
import pytest
from moto.server import ThreadedMotoServer

BIN = os.environ.get("TRAILWATCH_BIN", str(Path(__file__).resolve().parents[2] / "target/debug/trailwatch"))


@pytest.fixture()
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in the process, across servers: start each test from nothing.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    env.pop("AWS_PROFILE", None)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    yield client, endpoint, env
    server.stop()


def record(i, day):
    return {"eventVersion": "1.08", "eventTime": f"2024-02-{day:02d}T10:00:{i:02d}Z", "eventSource": "sts.amazonaws.com",
            "eventName": "AssumeRole", "awsRegion": "us-west-2", "eventID": f"e-{day}-{i}", "recipientAccountId": "012345678901",
            "userIdentity": {"type": "AWSService", "invokedBy": "lambda.amazonaws.com"}, "readOnly": "false"}


def test_s3_inputs_to_s3_lake(s3, tmp_path):
    client, endpoint, env = s3
    client.create_bucket(Bucket="trail")
    client.create_bucket(Bucket="lake")
    prefix = "AWSLogs/o-abc123/012345678901/CloudTrail/us-west-2/2024/02"
    for day in (1, 2):
        body = gzip.compress(json.dumps({"Records": [record(i, day) for i in range(10)]}).encode())
        client.put_object(Bucket="trail", Key=f"{prefix}/{day:02d}/012345678901_CloudTrail_us-west-2_202402{day:02d}T1000Z_a b.json.gz", Body=body)
    client.put_object(Bucket="trail", Key=f"{prefix}/02/empty.json.gz", Body=b"")
    client.put_object(Bucket="trail", Key="AWSLogs/o-abc123/012345678901/CloudTrail-Digest/us-west-2/2024/02/01/d.json.gz", Body=gzip.compress(b"{}"))

    def run():
        out = subprocess.run([BIN, "ingest", "s3://trail/AWSLogs/", "--lake", "s3://lake/tw", "--endpoint-url", endpoint],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert run().startswith("files: 2 read, 2 skipped, 0 failed; records: 20 written, 0 rejected")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="lake")["Contents"])
    assert len(keys) == 2 and all(k.startswith("tw/cloudtrail/account_id=012345678901/region=us-west-2/date=2024-02-0") for k in keys), keys
    run()  # a second run replaces, never adds
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket="lake")["Contents"]) == keys
    con = duckdb.connect()
    total = 0
    for k in keys:
        data = client.get_object(Bucket="lake", Key=k)["Body"].read()
        path = tmp_path / k.replace("/", "_")
        path.write_bytes(data)
        n, ro = con.execute(f"SELECT count(*), bool_or(read_only) FROM read_parquet('{path}')").fetchone()
        total += n
        assert ro is False
    assert total == 20


def test_detect_over_an_s3_lake_lists_recent_partitions_between_full_listings(s3, tmp_path):
    """A run within a day of a full listing lists, per account and region, only the partitions
    inside the retention (ListObjectsV2 with a delimiter, then StartAfter `date=<oldest>`)."""
    client, endpoint, env = s3
    client.create_bucket(Bucket="trail")
    client.create_bucket(Bucket="lake")
    prefix = "AWSLogs/012345678901/CloudTrail/us-west-2/2024/02"

    def deliver(day):
        body = gzip.compress(json.dumps({"Records": [record(i, day) for i in range(10)]}).encode())
        key = f"{prefix}/{day:02d}/012345678901_CloudTrail_us-west-2_202402{day:02d}T1000Z_x.json.gz"
        client.put_object(Bucket="trail", Key=key, Body=body)
        out = subprocess.run([BIN, "ingest", f"s3://trail/{key}", "--lake", "s3://lake/tw", "--endpoint-url", endpoint],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr

    def detect():
        out = subprocess.run([BIN, "detect", "--lake", "s3://lake/tw", "--endpoint-url", endpoint, "--state", str(tmp_path / "state"),
                              "--findings", str(tmp_path / "findings.jsonl"), "--quiet"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # Two sources confirm the clock at day 8: partitions before day 5 are past the retention.
    for day in (1, 8, 9):
        deliver(day)
    first = detect()
    assert first.startswith("detect: 3 lake files read, 0 unchanged, 0 failed;"), first
    # Day 10 is recent; day 1 (past the retention) is a late delivery, left for the next full listing.
    deliver(10)
    client.put_object(Bucket="lake", Key="tw/cloudtrail/account_id=012345678901/region=us-west-2/date=2024-02-01/late.parquet",
                      Body=client.get_object(Bucket="lake", Key=next(o["Key"] for o in client.list_objects_v2(Bucket="lake")["Contents"]
                                                                   if "date=2024-02-01/" in o["Key"]))["Body"].read())
    second = detect()
    assert second.startswith("detect: 1 lake files read, 2 unchanged, 0 failed (recent partitions listed);"), second
    assert " 0 late;" in second, second
