#!/usr/bin/env python3
"""Runs the functions `sam build` built, as the stack wires them, on 127.0.0.1.

The three `bootstrap` binaries of a SAM build directory run under cargo-lambda's Lambda runtime
emulator (`cargo lambda watch --only-lambda-apis`), with the environment the built template gives
them, against a moto server for S3, DynamoDB, SNS and SQS. A CloudTrail file lands in a trail
bucket; then each function gets the event the stack would deliver:

  ingest  an SQS batch holding the trail bucket's EventBridge "Object Created" event
  detect  an SQS batch holding the lake's S3 notification for the new Parquet object
  alert   an SQS batch holding the lake's S3 notification for the findings object

and the alert must arrive at an SNS subscriber. This is what a unit test cannot show: that the
binaries SAM builds are the Lambda binaries (the `lambda` feature came through), that they start
with the variables the template sets, and that the events the template wires reach them.

Usage: smoke.py BUILD_DIR ARCHITECTURE  (with CARGO_LAMBDA and MOTO_SERVER naming the two programs)
"""

import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIL_FILE = ROOT / "testdata/cloudtrail/stratus-aws.defense-evasion.cloudtrail-stop.json"
REGION = "us-east-1"
ELF_MACHINE = {"x86_64": 0x3E, "arm64": 0xB7}
FUNCTIONS = {"ingest": "IngestFunction", "detect": "DetectFunction", "alert": "AlertFunction",
             "compact": "CompactFunction"}
# The smoke's files are seconds old: compaction is told to take them (the stack waits an hour).
OVERRIDES = {"compact": {"COMPACT_MIN_AGE_MINUTES": "0"}}
# What the template's references stand for here.
LAKE, TRAIL, TABLE = "trailwatch-lake", "org-trail", "trailwatch-state"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, what, seconds=120):
    """Until something listens on the port (the emulator answers nothing useful on `/`)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"smoke: {what} did not start on port {port}")


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref X) as their long form ({"Ref": X})."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


CfnLoader.add_multi_constructor("!", _tag)


def function_env(template, logical, refs):
    """The function's variables from the built template (globals, then its own), references
    resolved from `refs` or the parameter's default."""
    params = template.get("Parameters", {})
    merged = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    merged.update(template["Resources"][logical]["Properties"].get("Environment", {}).get("Variables", {}))
    env = {}
    for name, value in merged.items():
        if isinstance(value, dict):
            (ref,) = value.values()
            if ref in refs:
                value = refs[ref]
            elif ref in params:
                value = str(params[ref].get("Default", ""))
            else:
                sys.exit(f"smoke: {logical}: {name} refers to {ref}, which this smoke test does not stand up")
        env[name] = str(value)
    return env


def sqs_batch(*bodies):
    return {"Records": [{"messageId": str(uuid.uuid4()), "receiptHandle": "r", "eventSource": "aws:sqs",
                         "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:q", "awsRegion": REGION,
                         "body": json.dumps(b), "attributes": {}, "messageAttributes": {}} for b in bodies]}


def s3_notice(bucket, key, size):
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
                         "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
                         "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                                "object": {"key": key, "size": size}}}]}


def object_created(bucket, key, size):
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": REGION,
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": size},
                       "reason": "PutObject"}}


def main():
    build = Path(sys.argv[1]).resolve()
    template = yaml.load((build / "template.yaml").read_text(), Loader=CfnLoader)
    arch = sys.argv[2]  # the Architecture the build was given: the template holds only a Ref
    for logical in FUNCTIONS.values():
        binary = build / logical / "bootstrap"
        if not binary.is_file():
            sys.exit(f"smoke: no {binary}: run sam build first")
        # ELF e_machine: what the function's architecture must run.
        with open(binary, "rb") as f:
            head = f.read(20)
        machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
        if machine != ELF_MACHINE.get(arch):
            sys.exit(f"smoke: {binary} is not an ELF executable for {arch} (e_machine {machine})")

    procs = []
    logs = Path(tempfile.mkdtemp(prefix="trailwatch-smoke-"))

    def start(name, argv, env=None):
        out = open(logs / f"{name}.log", "wb")
        procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT))

    try:
        moto_port, rt_port = free_port(), free_port()
        start("moto", [os.environ["MOTO_SERVER"], "-H", "127.0.0.1", "-p", str(moto_port)])
        start("emulator", [os.environ["CARGO_LAMBDA"], "lambda", "watch", "--only-lambda-apis",
                           "-A", "127.0.0.1", "-P", str(rt_port)])
        endpoint = f"http://127.0.0.1:{moto_port}"
        wait_for(moto_port, "moto")
        wait_for(rt_port, "the Lambda emulator")

        creds = {"AWS_ACCESS_KEY_ID": "smoke", "AWS_SECRET_ACCESS_KEY": "smoke", "AWS_REGION": REGION,
                 "AWS_DEFAULT_REGION": REGION}
        os.environ.update(creds)
        aws = lambda svc: boto3.client(svc, endpoint_url=endpoint, region_name=REGION)  # noqa: E731
        s3, sqs, sns, ddb = aws("s3"), aws("sqs"), aws("sns"), aws("dynamodb")
        for b in (LAKE, TRAIL):
            s3.create_bucket(Bucket=b)
        ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        topic = sns.create_topic(Name="trailwatch-alerts")["TopicArn"]
        inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn,
                      Attributes={"RawMessageDelivery": "false"})
        undelivered = sqs.create_queue(QueueName="alert-undelivered")["QueueUrl"]
        refs = {"LakeBucket": LAKE, "StateTable": TABLE, "AlertTopic": topic, "AlertUndeliveredQueue": undelivered,
                "Workgroup": "trailwatch"}

        lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{rt_port}", region_name=REGION)
        for name, logical in FUNCTIONS.items():
            env = {"PATH": os.environ["PATH"], **creds, **function_env(template, logical, refs), **OVERRIDES.get(name, {}),
                   "AWS_ENDPOINT_URL": endpoint, "AWS_LAMBDA_FUNCTION_NAME": name,
                   "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
                   "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{rt_port}/.rt/{name}",
                   "STAGING_DIR": str(logs / f"{name}-staging")}
            start(name, [str(build / logical / "bootstrap")], env)

        def invoke(name, event):
            out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
            reply = json.loads(out["Payload"].read() or b"null")
            print(f"smoke: {name} -> {json.dumps(reply)[:300]}")
            assert not out.get("FunctionError"), f"{name} failed: {reply}"
            return reply

        key = "AWSLogs/143434273843/CloudTrail/us-east-1/2024/07/31/143434273843_CloudTrail_us-east-1_20240731T1310Z_smoke.json.gz"
        body = gzip.compress(TRAIL_FILE.read_bytes())
        s3.put_object(Bucket=TRAIL, Key=key, Body=body)

        reply = invoke("ingest", sqs_batch(object_created(TRAIL, key, len(body))))
        assert reply == {"batchItemFailures": []}, reply
        lake = [o for o in s3.list_objects_v2(Bucket=LAKE).get("Contents", [])]
        tables = [o for o in lake if o["Key"].startswith("cloudtrail/") and o["Key"].endswith(".parquet")]
        assert tables, f"ingest wrote no CloudTrail Parquet: {[o['Key'] for o in lake]}"

        reply = invoke("detect", sqs_batch(*(s3_notice(LAKE, o["Key"], o["Size"]) for o in tables)))
        assert reply == {"batchItemFailures": []}, reply
        findings = [o for o in s3.list_objects_v2(Bucket=LAKE, Prefix="findings/").get("Contents", [])]
        assert findings, "detect wrote no findings object"
        state = s3.list_objects_v2(Bucket=LAKE, Prefix="detect-state/").get("KeyCount", 0)
        assert state, "detect saved no state under detect-state/"
        invoke("detect", {"sweep": True})

        reply = invoke("alert", sqs_batch(*(s3_notice(LAKE, o["Key"], o["Size"]) for o in findings)))
        assert reply == {"batchItemFailures": []}, reply
        messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
        subjects = [json.loads(m["Body"]).get("Subject", "") for m in messages]
        print(f"smoke: SNS delivered {subjects}")
        # The trail file is Stratus Red Team's cloudtrail-stop: StopLogging is a log_silence finding.
        assert any(" log_silence " in s for s in subjects), subjects

        # The schedule's event: the 2024 partition is closed, so its file is merged, and the
        # detect function ignores the merged file's notice (its rows were read).
        reply = invoke("compact", {"compact": True})  # the schedule's Input
        assert reply["partitions"] >= 1 and reply["rows"] > 0, reply
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LAKE, Prefix="cloudtrail/").get("Contents", [])]
        merged = [k for k in keys if k.rsplit("/", 1)[1].startswith("compacted-")]
        assert len(merged) == reply["partitions"] == len(keys), keys
        reply = invoke("detect", sqs_batch(*(s3_notice(LAKE, k, 1) for k in merged)))
        assert reply == {"batchItemFailures": []}, reply
        print("smoke: the built functions ran as the stack wires them")
    except Exception as e:  # noqa: BLE001 -- any failure: show what the processes said
        for f in sorted(logs.glob("*.log")):
            print(f"---- {f.name}\n{f.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        sys.exit(f"smoke: {e!r}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
