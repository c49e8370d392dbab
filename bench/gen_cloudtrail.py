#!/usr/bin/env python3
"""Writes realistic CloudTrail delivery files for benchmarks: AWS's key layout
(AWSLogs/o-org/<account>/CloudTrail/<region>/YYYY/MM/DD/...json.gz), minified {"Records":[...]}
bodies, ~1.5 KB records with the mix of fields, services and identities real trails carry.

    gen_cloudtrail.py OUT_DIR --files 200 --records 1000 [--single]
"""
import argparse
import gzip
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

APIS = [("s3.amazonaws.com", "GetObject", True), ("s3.amazonaws.com", "PutObject", False), ("sts.amazonaws.com", "AssumeRole", False),
        ("lambda.amazonaws.com", "Invoke", False), ("ec2.amazonaws.com", "DescribeInstances", True), ("iam.amazonaws.com", "GetRole", True),
        ("kms.amazonaws.com", "Decrypt", True), ("dynamodb.amazonaws.com", "GetItem", True), ("logs.amazonaws.com", "PutLogEvents", False),
        ("secretsmanager.amazonaws.com", "GetSecretValue", True), ("ssm.amazonaws.com", "GetParameter", True), ("sqs.amazonaws.com", "SendMessage", False)]
AGENTS = ["aws-sdk-go-v2/1.21.0 os/linux lang/go#1.20 md/GOOS#linux md/GOARCH#amd64 api/s3#1.38.5",
          "Boto3/1.28.0 md/Botocore#1.31.0 ua/2.0 os/linux#5.10.184 md/arch#x86_64 lang/python#3.11.4 md/pyimpl#CPython cfg/retry-mode#legacy",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
          "aws-cli/2.13.25 Python/3.11.5 Linux/5.15.0 exe/x86_64.ubuntu.22 prompt/off command/s3.cp", "lambda.amazonaws.com"]
ERRORS = [("AccessDenied", "User is not authorized to perform this operation"), ("ThrottlingException", "Rate exceeded"),
          ("NoSuchKey", "The specified key does not exist.")]


def record(rng, t, account, region):
    src, name, ro = rng.choice(APIS)
    role = f"app-{rng.randrange(40)}"
    r = {"eventVersion": rng.choice(["1.08", "1.09", "1.10"]),
         "userIdentity": {"type": "AssumedRole", "principalId": f"AROA{rng.randrange(10**12):012d}:{role}-session",
                          "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{role}-session", "accountId": account,
                          "accessKeyId": f"ASIA{rng.randrange(10**12):012d}",
                          "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": f"arn:aws:iam::{account}:role/{role}",
                                                               "accountId": account, "userName": role},
                                             "webIdFederationData": {}, "attributes": {"creationDate": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "mfaAuthenticated": "false"}}},
         "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": src, "eventName": name, "awsRegion": region,
         "sourceIPAddress": f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
         "userAgent": rng.choice(AGENTS),
         "requestParameters": {"bucketName": f"data-{account}", "key": f"objects/{rng.randrange(10**9)}/part-{rng.randrange(1000):04d}.parquet",
                               "Host": f"data-{account}.s3.{region}.amazonaws.com"} if rng.random() < 0.9 else None,
         "responseElements": None if ro else {"requestId": f"{rng.randrange(16**16):016x}"},
         "additionalEventData": {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0,
                                 "AuthenticationMethod": "AuthHeader", "x-amz-id-2": f"{rng.randrange(16**40):040x}", "bytesTransferredOut": rng.randrange(10**6)},
         "requestID": f"{rng.randrange(16**16):016X}", "eventID": f"{rng.randrange(16**32):032x}", "readOnly": ro,
         "resources": [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::data-{account}/objects/{rng.randrange(10**9)}"},
                       {"accountId": account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::data-{account}"}],
         "eventType": "AwsApiCall", "managementEvent": src not in ("s3.amazonaws.com", "lambda.amazonaws.com"), "recipientAccountId": account,
         "eventCategory": "Data" if src in ("s3.amazonaws.com", "lambda.amazonaws.com") else "Management",
         "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": f"{src.split('.')[0]}.{region}.amazonaws.com"}}
    if rng.random() < 0.05:
        r["errorCode"], r["errorMessage"] = rng.choice(ERRORS)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--single", action="store_true", help="all records in one file")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--spread", type=int, default=0,
                    help="records of each file spread over this many account-region-days at random (an organisation "
                         "trail exported through CloudWatch Logs, a LookupEvents dump), not the file's own")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    accounts = ["012345678901", "111122223333", "444455556666"]
    json_bytes = 0
    files = 1 if a.single else a.files
    per = a.records * (a.files if a.single else 1)
    for f in range(files):
        account, region = accounts[f % 3], ["us-east-1", "eu-west-1"][f // 3 % 2]
        t0 = start + timedelta(minutes=5 * f)
        key = Path(a.out) / f"AWSLogs/o-abc123/{account}/CloudTrail/{region}/{t0:%Y/%m/%d}/{account}_CloudTrail_{region}_{t0:%Y%m%dT%H%MZ}_{rng.randrange(16**16):016x}.json.gz"
        if a.spread:  # an export names no account or region: each record's own decide its partition
            key = Path(a.out) / f"exports/cloudtrail-{f:05d}.json.gz"
        key.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(key, "wt", compresslevel=6) as out:
            out.write('{"Records":[')
            json_bytes += 13
            for i in range(per):
                t = t0 + timedelta(seconds=i * 300 / per)
                acc, reg = account, region
                if a.spread:
                    k = rng.randrange(a.spread)
                    acc, reg = accounts[k % 3], ["us-east-1", "eu-west-1"][k // 3 % 2]
                    t += timedelta(days=k // 6)
                s = json.dumps(record(rng, t, acc, reg), separators=(",", ":"))
                out.write(("," if i else "") + s)
                json_bytes += len(s) + (1 if i else 0)
            out.write("]}")
    print(json.dumps({"files": files, "records": files * per, "json_bytes": json_bytes}))


if __name__ == "__main__":
    main()
