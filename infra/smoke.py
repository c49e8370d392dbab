#!/usr/bin/env python3
"""Runs the functions `sam build` built, as the stack wires them, on 127.0.0.1, end to end.

The three `bootstrap` binaries of a SAM build directory run under cargo-lambda's Lambda runtime
emulator (`cargo lambda watch --only-lambda-apis`), with the environment the built template gives
them, against a moto server for S3, SQS, EventBridge, DynamoDB and SNS, wired as the template
wires them:

  trail bucket  --EventBridge "Object Created", the template's rule-->  ingest queue --> ingest
  lake bucket   --S3 notifications, the template's filters-->          detect queue --> detect
                                                                        alert queue  --> alert
  alert --> SNS topic --> a subscriber's SQS queue

Real objects are put into the trail bucket: a CloudTrail file (Stratus Red Team's
cloudtrail-stop) and a Firehose object of CloudWatch Logs. What Lambda's event source mappings
do, a poller here does: it receives each queue's messages in batches, invokes the function with
them and deletes the ones the function did not report as failed. The run fails unless exactly one
StopLogging alert reaches the subscriber, also after the alert's notice is delivered a second time
(SQS delivers at least once); it prints the time from the put to the alert.

This is what a unit test cannot show: that the binaries SAM builds are the Lambda binaries (the
`lambda` feature came through), that they start with the variables the template sets, and that
the events the template wires reach them and carry the data through.

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
LOGS_FILE = next((ROOT / "testdata/cloudwatch/firehose").rglob("trailwatch-logs-*"))
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
        refs = {"LogsPrefix": "cwlogs/", "LakeBucket": LAKE, "StateTable": TABLE, "AlertTopic": topic, "AlertUndeliveredQueue": undelivered,
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

        # The stack's wiring: the trail bucket's EventBridge notifications and the template's
        # rule to the ingest queue; the lake bucket's notifications to the detect and alert queues.
        queue = lambda n: sqs.create_queue(QueueName=n)["QueueUrl"]  # noqa: E731
        arn = lambda u: sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]  # noqa: E731
        queues = {"ingest": queue("ingest"), "detect": queue("detect"), "alert": queue("alert")}
        s3.put_bucket_notification_configuration(Bucket=TRAIL, NotificationConfiguration={"EventBridgeConfiguration": {}})
        rule = template["Resources"]["TrailObjectCreatedRule"]["Properties"]["EventPattern"]
        pattern = {"source": rule["source"], "detail-type": rule["detail-type"],
                   "detail": {"bucket": {"name": [TRAIL]}, "object": {"key": [{"prefix": "AWSLogs/"}, {"prefix": "cwlogs/"}]}}}
        events = aws("events")
        events.put_rule(Name="trail-object-created", EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule="trail-object-created", Targets=[{"Id": "ingest-queue", "Arn": arn(queues["ingest"])}])
        wired = template["Resources"]["LakeBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
        target = {"DetectQueue": queues["detect"], "AlertQueue": queues["alert"]}
        # `!GetAtt DetectQueue.Arn`, or its long form [DetectQueue, Arn] in the built template.
        logical = lambda g: (g.split(".") if isinstance(g, str) else g)[0]  # noqa: E731
        s3.put_bucket_notification_configuration(Bucket=LAKE, NotificationConfiguration={"QueueConfigurations": [
            {"QueueArn": arn(target[logical(q["Queue"]["Fn::GetAtt"])]), "Events": q["Event"] if isinstance(q["Event"], list) else [q["Event"]],
             "Filter": {"Key": {"FilterRules": q["Filter"]["S3Key"]["Rules"]}}} for q in wired]})

        def poll(rounds=3):
            """As Lambda's event source mappings do: batches of each queue to its function, the
            messages it did not report failed deleted. Returns how many messages were handled."""
            handled = 0
            for _ in range(rounds):
                for name in ("ingest", "detect", "alert"):
                    got = sqs.receive_message(QueueUrl=queues[name], MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
                    if not got:
                        continue
                    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                          "eventSource": "aws:sqs", "eventSourceARN": arn(queues[name]), "awsRegion": REGION,
                                          "body": m["Body"], "attributes": {}, "messageAttributes": {}} for m in got]}
                    reply = invoke(name, event)
                    failed = {f["itemIdentifier"] for f in (reply or {}).get("batchItemFailures", [])}
                    assert not failed, f"{name} failed {failed}"
                    for m in got:
                        sqs.delete_message(QueueUrl=queues[name], ReceiptHandle=m["ReceiptHandle"])
                    handled += len(got)
            return handled

        def alerts(wait=1):
            got = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get("Messages", [])
            for m in got:
                sqs.delete_message(QueueUrl=inbox, ReceiptHandle=m["ReceiptHandle"])
            return [json.loads(m["Body"]).get("Subject", "") for m in got]

        key = "AWSLogs/143434273843/CloudTrail/us-east-1/2024/07/31/143434273843_CloudTrail_us-east-1_20240731T1310Z_smoke.json.gz"
        body = gzip.compress(TRAIL_FILE.read_bytes())
        logs_key = "cwlogs/" + str(LOGS_FILE.relative_to(ROOT / "testdata/cloudwatch/firehose"))
        put_at = time.monotonic()
        s3.put_object(Bucket=TRAIL, Key=key, Body=body)
        s3.put_object(Bucket=TRAIL, Key=logs_key, Body=LOGS_FILE.read_bytes())

        subjects, deadline = [], time.monotonic() + 120
        while not subjects and time.monotonic() < deadline:
            poll(rounds=1)
            subjects = alerts(wait=0)
        took = time.monotonic() - put_at
        lake = [o["Key"] for o in s3.list_objects_v2(Bucket=LAKE).get("Contents", [])]
        assert any(k.startswith("cloudtrail/") and k.endswith(".parquet") for k in lake), f"no CloudTrail Parquet: {lake}"
        assert any(k.startswith("lambda_invocations/") and k.endswith(".parquet") for k in lake), f"no invocations Parquet: {lake}"
        assert any(k.startswith("findings/") for k in lake), f"no findings object: {lake}"
        # The Parquet itself, read back: every record of the trail file, the StopLogging among them.
        import io

        import pyarrow.parquet as pq
        ct = [k for k in lake if k.startswith("cloudtrail/") and k.endswith(".parquet")]
        rows = pq.read_table(io.BytesIO(s3.get_object(Bucket=LAKE, Key=ct[0])["Body"].read())).to_pylist()
        assert len(rows) == len(json.loads(TRAIL_FILE.read_text())), len(rows)  # a bare array of records
        assert "StopLogging" in {r["event_name"] for r in rows}, rows
        assert s3.list_objects_v2(Bucket=LAKE, Prefix="detect-state/").get("KeyCount", 0), "detect saved no state"
        print(f"smoke: from the put to the alert at the subscriber: {took:.2f} s (through three queues and functions)")
        # The queues drain, and nothing more arrives: one alert, not two.
        poll(rounds=3)
        subjects += alerts(wait=2)
        print(f"smoke: SNS delivered {subjects}")
        stops = [s for s in subjects if " log_silence " in s]
        assert len(stops) == 1, f"the StopLogging alert must arrive once: {subjects}"

        # SQS delivers at least once: the findings notice again must not mail again.
        findings = [o for o in s3.list_objects_v2(Bucket=LAKE, Prefix="findings/").get("Contents", [])]
        reply = invoke("alert", sqs_batch(*(s3_notice(LAKE, o["Key"], o["Size"]) for o in findings)))
        assert reply == {"batchItemFailures": []}, reply
        again = alerts(wait=2)
        assert again == [], f"a redelivered notice sent the alert again: {again}"
        invoke("detect", {"sweep": True})
        for name, url in queues.items():
            left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            assert left["ApproximateNumberOfMessages"] == "0", f"{name} queue not drained: {left}"

        # The schedule's event: the 2024 partitions are closed, so their files are merged, and the
        # detect function ignores the merged files' notices (their rows were read).
        reply = invoke("compact", {"compact": True})  # the schedule's Input
        assert reply["partitions"] >= 1 and reply["rows"] > 0, reply
        keys = [o["Key"] for t in ("cloudtrail/", "lambda_invocations/")
                for o in s3.list_objects_v2(Bucket=LAKE, Prefix=t).get("Contents", [])]
        merged = [k for k in keys if k.rsplit("/", 1)[1].startswith("compacted-")]
        assert len(merged) == reply["partitions"] == len(keys), keys
        # The merged files' notices reach the detect queue like any other; nothing is alerted again.
        assert poll(rounds=2) >= len(merged), "the merged files' notices did not reach detect"
        assert alerts(wait=1) == [], "the merged rows were alerted again"
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
