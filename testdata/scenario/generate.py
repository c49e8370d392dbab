#!/usr/bin/env python3
"""Writes a labelled multi-account scenario of CloudTrail and Lambda logs, as AWS delivers them.

    generate.py --out DIR [--small] [--seed N] [--days 21] [--forge-future N]

Days 1-14 (from Monday 2026-01-05) are normal traffic with daily and weekly seasonality, for
detect to learn from. Days 15-21 are the scored week: normal traffic plus labelled incidents and
benign events that must not be flagged. See README.md beside this file.

Output:
  DIR/input/AWSLogs/o-abc123defg/<account>/CloudTrail/<region>/YYYY/MM/DD/<...>.json.gz
  DIR/input/cwlogs/<region>/YYYY/MM/DD/HH/trailwatch-logs-1-YYYY-MM-DD-HH-MM-SS-<8 hex>
  DIR/input/metric-stream/<region>/YYYY/MM/DD/HH/trailwatch-metrics-<case>-1-YYYY-MM-DD-HH-MM-SS-<8 hex>.gz
                       CloudWatch metric stream (JSON output) of the failure-mode cases' functions
  DIR/labels.json      incidents and benign events
  DIR/deliveries.tsv   <delivery time>\t<path relative to DIR>, in delivery order
  DIR/manifest.json    what was written (record, event id, REPORT line and file counts)

--forge-future N adds N CloudTrail files whose records claim a time ahead of their delivery
(2099, or 3 hours or a day ahead), listed in deliveries.tsv and under `forged` in labels.json.
They come from a random stream of their own: everything else is what the seed writes without it.

Python 3 stdlib only; the output is byte for byte the same for a seed.
"""
import argparse
import bisect
import calendar
import contextlib
import gzip
import hashlib
import heapq
import json
import math
import random
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

T0 = 1767571200  # 2026-01-05T00:00:00Z, a Monday
DAY = 86400
WIN = 300  # CloudTrail files and Firehose buffers: 5 minutes
ORG = "o-abc123defg"
FOREIGN_ACCOUNT = "987654321098"  # never seen before the unusual invocation
STRANGER_ACCOUNT = "246813579024"  # only in forged files (--forge-future): no other record names it
FORGED_YEAR = 2099
# What the forged files claim, in turn: mostly far in the future, a few only a little ahead.
FORGE_CLAIMS = ("2099", "2099", "+3h", "2099", "+1d")
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
DUMPS = json.JSONEncoder(separators=(",", ":")).encode
# Cases with a random stream of their own (`<case>:<seed>`), run in this order after the main
# stream: append new ones, never reorder.
CASES = ("sweeps", "new-sweeper", "cost-creep", "poison-stream", "async-retries", "dropped-events", "noisy-neighbour")
# Scheduled readers: (role, session, invokedBy or None, user agent or None, APIs they sweep).
SWEEPERS = [
    ("AWSServiceRoleForConfig", "AWSConfig-Describe", "config.amazonaws.com", None,
     ["DescribeSecurityGroups", "DescribeVpcs", "DescribeSubnets", "GetBucketEncryption", "GetBucketAcl", "DescribeKey"]),
    ("security-audit-scanner", "prowler", None, "Boto3/1.34.44 md/Botocore#1.34.44 ua/2.0 os/linux#5.10.205 lang/python#3.11.7 prowler/3.14.0",
     ["ListRoles", "ListUsers", "ListAttachedRolePolicies", "GetBucketPolicy", "GetBucketAcl", "ListKeys", "ListFunctions20150331"]),
    ("AWSBackupDefaultServiceRole", "AWSBackup-AWSBackupDefaultServiceRole", "backup.amazonaws.com", None,
     ["DescribeTable", "ListTables", "DescribeKey", "GetBucketEncryption"]),
    ("cloud-custodian", "custodian-policy-run", None, "CloudCustodian/0.9.34 Boto3/1.34.20 Python/3.11.6 Linux/5.10",
     ["DescribeSecurityGroups", "DescribeSubnets", "GetBucketEncryption", "ListRoles", "GetRole"]),
]
# What the new role of the `new-sweeper` case reads.
RECON_APIS = ["DescribeSecurityGroups", "DescribeVpcs", "DescribeSubnets", "GetBucketPolicy", "GetBucketAcl", "ListRoles",
              "ListAttachedRolePolicies", "ListKeys", "ListFunctions20150331", "ListTables"]

# The failure-mode cases (poison-stream, async-retries, dropped-events, noisy-neighbour).
LIMIT = 1000  # the account's Lambda concurrency per region (the default quota)
METRIC_STREAM = "trailwatch-lambda"  # the metric stream's name in its datapoints
METRIC_STREAM_DAYS = 9  # the metric stream was set up this many days before the scenario ends
POISON_ERRORS = [("InvalidOperation", "[<class 'decimal.ConversionSyntax'>]"), ("KeyError", "'amount'"),
                 ("JSONDecodeError", "Expecting value: line 1 column 1 (char 0)"),
                 ("ValidationError", "1 validation error for LedgerEntry\ncurrency\n  Field required [type=missing]")]
MAILER_ERRORS = [("KeyError", "'billing_address'"), ("UndefinedError", "'invoice' has no attribute 'tax_lines'"),
                 ("ImportError", "cannot import name 'render_pdf' from 'invoices.pdf' (/var/task/invoices/pdf.py)")]
TRANSIENT_ERRORS = [("ClientError", "An error occurred (Throttling) when calling the SendEmail operation (reached max retries: 0): Maximum sending rate exceeded."),
                    ("ConnectTimeoutError", 'Connect timeout on endpoint URL: "https://api.mailer.example.com/v3/send"')]

# Local office time offset from UTC, per region.
TZ = {"us-east-1": -5, "eu-west-1": 0}
OFFICE = [0.03, 0.02, 0.02, 0.02, 0.02, 0.03, 0.08, 0.25, 0.6, 0.95, 1.0, 1.0,
          0.85, 0.95, 1.0, 0.95, 0.8, 0.5, 0.3, 0.2, 0.12, 0.08, 0.05, 0.04]


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_ms(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def h(*parts, n=16, alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    """A stable pseudo-random id derived from its parts (no rng state consumed)."""
    d = hashlib.md5("|".join(map(str, parts)).encode()).digest()
    x = int.from_bytes(d, "big")
    out = []
    for _ in range(n):
        x, r = divmod(x, len(alphabet))
        out.append(alphabet[r])
        if x == 0:
            x = int.from_bytes(hashlib.md5(d + bytes(out[-1], "ascii")).digest(), "big")
    return "".join(out)


def profile(kind, ts, region):
    """Rate multiplier at time ts for a traffic profile: office (people), traffic (customers), flat."""
    if kind == "flat":
        return 1.0
    local = ts + TZ[region] * 3600
    hour = (local % DAY) / 3600.0
    i = int(hour)
    f = OFFICE[i] + (OFFICE[(i + 1) % 24] - OFFICE[i]) * (hour - i)
    weekend = ((local - T0) // DAY) % 7 >= 5
    if kind == "office":
        return f * (0.06 if weekend else 1.0)
    return (0.12 + 0.88 * f) * (0.45 if weekend else 1.0)  # traffic


def poisson(rng, lam):
    if lam <= 0:
        return 0
    if lam < 30:
        l, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= l:
                return k
            k += 1
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


# ---------------------------------------------------------------------------------------------
# Identities


class Principal:
    def __init__(self, kind, account, name, ua, ips, session=None, invoked_by=None, mfa=False, console=False):
        self.kind, self.account, self.name, self.ua, self.ips = kind, account, name, ua, ips
        self.session, self.invoked_by, self.mfa, self.console = session or name, invoked_by, mfa, console

    @property
    def arn(self):
        if self.kind == "AssumedRole":
            return f"arn:aws:sts::{self.account}:assumed-role/{self.name}/{self.session}"
        if self.kind == "IAMUser":
            return f"arn:aws:iam::{self.account}:user/{self.name}"
        if self.kind == "Root":
            return f"arn:aws:iam::{self.account}:root"
        return None

    @property
    def label_arn(self):
        """The ARN a finding would name: the role, the user or the root."""
        if self.kind == "AssumedRole":
            return f"arn:aws:iam::{self.account}:role/{self.name}"
        return self.arn

    def identity(self, ts):
        a = self.account
        if self.kind == "AWSService":
            return {"type": "AWSService", "invokedBy": self.invoked_by}
        hour = ts // 3600
        if self.kind == "IAMUser":
            return {"type": "IAMUser", "principalId": "AIDA" + h("user", a, self.name, n=17), "arn": self.arn,
                    "accountId": a, "accessKeyId": "AKIA" + h("key", a, self.name, n=16), "userName": self.name}
        created = iso(hour * 3600 + int(h("c", a, self.name, hour, n=3, alphabet="0123456789")) % 3000)
        if self.kind == "Root":
            return {"type": "Root", "principalId": a, "arn": self.arn, "accountId": a,
                    "accessKeyId": "ASIA" + h("root", a, hour, n=16),
                    "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {},
                                       "attributes": {"creationDate": created, "mfaAuthenticated": "true"}}}
        role_id = "AROA" + h("role", a, self.name, n=17)
        ident = {"type": "AssumedRole", "principalId": f"{role_id}:{self.session}", "arn": self.arn, "accountId": a,
                 "accessKeyId": "ASIA" + h("sess", a, self.name, self.session, hour, n=16),
                 "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": role_id,
                                                      "arn": f"arn:aws:iam::{a}:role/{self.name}", "accountId": a,
                                                      "userName": self.name},
                                    "webIdFederationData": {},
                                    "attributes": {"creationDate": created,
                                                   "mfaAuthenticated": "true" if self.mfa else "false"}}}
        if self.invoked_by:
            ident["invokedBy"] = self.invoked_by
        return ident


UA_BOTO = "Boto3/1.34.{} md/Botocore#1.34.{} ua/2.0 os/linux#5.10.205-195.807.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.1 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.{}"
UA_JAVA = "aws-sdk-java/2.25.{} Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/21.0.2+13-LTS Java/21.0.2 vendor/Amazon.com_Inc. exec-env/AWS_ECS_FARGATE io/sync http/Apache cfg/retry-mode/legacy"
UA_GO = "aws-sdk-go-v2/1.24.{} os/linux lang/go#1.21.6 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.142.{}"
UA_CLI = "aws-cli/2.15.{} Python/3.11.6 Linux/6.5.0-1014-azure exe/x86_64.ubuntu.22 prompt/off command/{}"
UA_CONSOLE = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
UA_CONSOLE2 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
UA_NODE = "aws-sdk-js/3.490.0 ua/2.0 os/linux#5.10.205 lang/js md/nodejs#20.10.0 api/lambda#3.490.0"


# ---------------------------------------------------------------------------------------------
# The API catalogue: (eventSource, eventName, readOnly, management, eventVersion)

def _svc(name):
    return f"{name}.amazonaws.com"


API = {
    "DescribeInstances": ("ec2", True), "DescribeSecurityGroups": ("ec2", True), "DescribeVpcs": ("ec2", True),
    "DescribeSubnets": ("ec2", True), "CreateTags": ("ec2", False),
    "ListBuckets": ("s3", True), "GetBucketPolicy": ("s3", True), "GetBucketAcl": ("s3", True),
    "GetBucketEncryption": ("s3", True), "GetObject": ("s3", True), "PutObject": ("s3", False),
    "GetRole": ("iam", True), "ListRoles": ("iam", True), "ListAttachedRolePolicies": ("iam", True),
    "GetAccountSummary": ("iam", True), "ListUsers": ("iam", True),
    "AssumeRole": ("sts", False), "GetCallerIdentity": ("sts", True),
    "ListFunctions20150331": ("lambda", True), "GetFunction20150331v2": ("lambda", True),
    "GetFunctionConfiguration20150331v2": ("lambda", True), "Invoke": ("lambda", False),
    "UpdateFunctionCode20150331v2": ("lambda", False), "UpdateFunctionConfiguration20150331v2": ("lambda", False),
    "PutFunctionConcurrency20171031": ("lambda", False),
    "PublishVersion20150331": ("lambda", False), "UpdateAlias20150331": ("lambda", False),
    "Decrypt": ("kms", True), "GenerateDataKey": ("kms", True), "DescribeKey": ("kms", True), "ListKeys": ("kms", True),
    "DescribeTable": ("dynamodb", True), "ListTables": ("dynamodb", True),
    "StopLogging": ("cloudtrail", False), "StartLogging": ("cloudtrail", False),
}
DATA_EVENTS = {"GetObject", "PutObject", "Invoke"}
VERSION = {"ec2": "1.09", "s3": "1.11", "iam": "1.09", "sts": "1.08", "lambda": "1.09", "kms": "1.08",
           "dynamodb": "1.09", "cloudtrail": "1.09", "secretsmanager": "1.09", "ssm": "1.09", "sns": "1.09",
           "sqs": "1.09", "logs": "1.09", "cloudformation": "1.09", "organizations": "1.09", "rds": "1.08",
           "ecr": "1.08", "guardduty": "1.08", "config": "1.08", "ecs": "1.08", "events": "1.08"}


class Region:
    """Per account-region context that request parameter builders need."""

    def __init__(self, account, region):
        self.account, self.region = account, region
        self.buckets = [f"acme-{k}-{account}-{region}" for k in ("artifacts", "media", "logs", "exports")]
        self.tables = ["orders", "sessions", "customers"]
        self.key_id = h("kms", account, region, n=32, alphabet="0123456789abcdef")
        k = self.key_id
        self.key_arn = f"arn:aws:kms:{region}:{account}:key/{k[:8]}-{k[8:12]}-{k[12:16]}-{k[16:20]}-{k[20:]}"


def fn_arn(r, name):
    return f"arn:aws:lambda:{r.region}:{r.account}:function:{name}"


def req_params(rng, r, name, p):
    """requestParameters as AWS writes them; None for calls that log null; MISSING to omit the key."""
    if name == "DescribeInstances":
        if rng.random() < 0.5:
            return {"instancesSet": {}, "filterSet": {}}
        return {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:eks:cluster-name", "valueSet": {"items": [{"value": "prod"}]}}]}}
    if name in ("DescribeSecurityGroups", "DescribeVpcs", "DescribeSubnets"):
        return {"filterSet": {}} if name != "DescribeSecurityGroups" else {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}}
    if name == "CreateTags":
        return {"resourcesSet": {"items": [{"resourceId": "i-0" + h("i", r.account, rng.randrange(50), n=16, alphabet="0123456789abcdef")}]},
                "tagSet": {"items": [{"key": "patch-group", "value": "weekly"}]}}
    if name == "ListBuckets":
        return {"Host": "s3.amazonaws.com"}
    if name in ("GetBucketPolicy", "GetBucketAcl", "GetBucketEncryption"):
        b = rng.choice(r.buckets)
        q = {"GetBucketPolicy": "policy", "GetBucketAcl": "acl", "GetBucketEncryption": "encryption"}[name]
        return {"bucketName": b, "Host": f"{b}.s3.{r.region}.amazonaws.com", q: ""}
    if name in ("GetObject", "PutObject"):
        b = r.buckets[1] if rng.random() < 0.6 else r.buckets[0]
        return {"bucketName": b, "Host": f"{b}.s3.{r.region}.amazonaws.com",
                "key": f"uploads/{rng.randrange(10**6):06d}/{h('o', rng.random(), n=12, alphabet='0123456789abcdef')}.jpg"}
    if name in ("GetRole", "ListAttachedRolePolicies"):
        return {"roleName": rng.choice(["app-backend", "media-pipeline", "orders-api-role", "thumbnailer-role"])}
    if name in ("ListRoles", "ListUsers"):
        return {"maxItems": 100} if rng.random() < 0.5 else None
    if name in ("GetAccountSummary", "GetCallerIdentity", "ListKeys", "ListTables"):
        return None
    if name == "AssumeRole":
        role = rng.choice(["app-backend", "media-pipeline", "orders-api-role", "thumbnailer-role"])
        return {"roleArn": f"arn:aws:iam::{r.account}:role/{role}", "roleSessionName": h("s", rng.random(), n=12, alphabet="0123456789abcdef"),
                "durationSeconds": 3600}
    if name == "ListFunctions20150331":
        return MISSING if rng.random() < 0.3 else {"maxItems": 50}
    if name in ("GetFunction20150331v2", "GetFunctionConfiguration20150331v2"):
        f = rng.choice(["orders-api", "thumbnailer", "auth-authorizer", "nightly-batch"])
        return {"functionName": f if rng.random() < 0.6 else fn_arn(r, f)}
    if name == "Decrypt":
        return {"encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "encryptionContext": {"aws:lambda:FunctionArn": fn_arn(r, rng.choice(["orders-api", "thumbnailer"]))}}
    if name == "GenerateDataKey":
        return {"keyId": r.key_arn, "keySpec": "AES_256",
                "encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{r.buckets[1]}"}}
    if name == "DescribeKey":
        return {"keyId": r.key_arn}
    if name == "DescribeTable":
        return {"tableName": rng.choice(r.tables)}
    return None


MISSING = object()


def resp_elements(rng, r, name, p, params, ts):
    if name == "AssumeRole" and params:
        role = params["roleArn"].rsplit("/", 1)[1]
        return {"credentials": {"accessKeyId": "ASIA" + h("ak", rng.random(), n=16), "sessionToken": "IQoJb3JpZ2luX2VjEH...",
                                "expiration": time.strftime("%b %-d, %Y, %-I:%M:%S %p", time.gmtime(ts + 3600))},
                "assumedRoleUser": {"assumedRoleId": f"AROA{h('role', r.account, role, n=17)}:{params['roleSessionName']}",
                                    "arn": f"arn:aws:sts::{r.account}:assumed-role/{role}/{params['roleSessionName']}"}}
    if name == "CreateTags":
        return {"requestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "_return": True}
    if name == "PutObject":
        return {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": r.key_arn}
    return None


def record(rng, r, p, name, ts, params=MISSING, error=None, resp=MISSING, extra=None, ip=None, ua=None):
    svc, ro = API[name]
    src = _svc(svc)
    region = "us-east-1" if svc == "iam" else r.region
    if params is MISSING:
        params = req_params(rng, r, name, p)
    rec = {"eventVersion": VERSION[svc] if rng.random() < 0.9 else rng.choice(("1.08", "1.09", "1.11")),
           "userIdentity": p.identity(ts), "eventTime": iso(ts), "eventSource": src, "eventName": name,
           "awsRegion": region}
    if p.kind == "AWSService":
        rec["sourceIPAddress"] = p.invoked_by
        rec["userAgent"] = p.invoked_by
    else:
        rec["sourceIPAddress"] = ip or p.ips[rng.randrange(len(p.ips))]
        rec["userAgent"] = ua or p.ua
    if error:
        rec["errorCode"], rec["errorMessage"] = error
    if params is not MISSING:
        rec["requestParameters"] = params
    if resp is MISSING:
        resp = None if error else resp_elements(rng, r, name, p, params if params is not MISSING else None, ts)
    rec["responseElements"] = resp
    if extra and "additionalEventData" in extra:
        rec["additionalEventData"] = extra.pop("additionalEventData")
    elif svc == "s3":
        rec["additionalEventData"] = {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
                                      "bytesTransferredIn": 0, "AuthenticationMethod": "AuthHeader",
                                      "x-amz-id-2": h("x", rng.random(), n=40, alphabet=ALNUM), "bytesTransferredOut": rng.randrange(200, 90000)}
    rec["requestID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if svc != "s3" else h("rq", rng.random(), n=16)
    rec["eventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    rec["readOnly"] = ro
    if extra and "resources" in extra:
        rec["resources"] = extra.pop("resources")
    elif name == "Decrypt" or name == "GenerateDataKey" or name == "DescribeKey":
        rec["resources"] = [{"accountId": r.account, "type": "AWS::KMS::Key", "ARN": r.key_arn}]
    elif svc == "s3" and name != "ListBuckets" and isinstance(params, dict):
        rec["resources"] = [{"accountId": r.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{params['bucketName']}"}]
        if "key" in params:
            rec["resources"].insert(0, {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{params['bucketName']}/{params['key']}"})
    rec["eventType"] = "AwsApiCall"
    if svc in ("ec2",):
        rec["apiVersion"] = "2016-11-15"
    rec["managementEvent"] = name not in DATA_EVENTS
    rec["recipientAccountId"] = r.account
    if p.kind != "AWSService" and p.account != r.account:
        rec["sharedEventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    rec["eventCategory"] = "Data" if name in DATA_EVENTS else "Management"
    if p.kind != "AWSService":
        host = "s3.amazonaws.com" if name == "ListBuckets" else (
            f"{svc}.amazonaws.com" if svc == "iam" else f"{svc}.{r.region}.amazonaws.com")
        tls13 = rng.random() < 0.8
        rec["tlsDetails"] = {"tlsVersion": "TLSv1.3" if tls13 else "TLSv1.2",
                             "cipherSuite": "TLS_AES_128_GCM_SHA256" if tls13 else "ECDHE-RSA-AES128-GCM-SHA256",
                             "clientProvidedHostHeader": host}
        if p.console:
            rec["sessionCredentialFromConsole"] = "true"
    if extra:
        rec.update(extra)
    return rec


def denied(p, name):
    """The error code and message a denied call of a catalogued API gets."""
    return Scenario.denial(API[name][0], name, p)


# ---------------------------------------------------------------------------------------------
# Lambda functions


class Function:
    def __init__(self, name, memory, timeout_s, median_ms, sigma, mem_used, rate_h, prof, invokers, app_log):
        self.name, self.memory, self.timeout_s, self.median_ms, self.sigma = name, memory, timeout_s, median_ms, sigma
        self.mem_used, self.rate_h, self.prof, self.invokers, self.app_log = mem_used, rate_h, prof, invokers, app_log
        self.containers = []  # [free_at_ms, last_end_ms, idle_ttl_ms, stream]
        self.timeout_windows = []  # (start, end, probability)
        self.slow_windows = []  # (start, end, factor)


class Invocation:
    __slots__ = ("start_ms", "principal", "ip", "ua", "factor", "ct")

    def __init__(self, start_ms, principal, ip=None, ua=None, duration_factor=1.0, log_ct=None):
        self.start_ms, self.principal, self.ip, self.ua = start_ms, principal, ip, ua
        self.factor = duration_factor  # the attack's requests take longer
        self.ct = log_ct  # None: sampled like all others; True: always logged (a caller from another account)


class CaseFn:
    """A function of the failure-mode cases: it logs in Lambda's JSON log format (platform.start /
    platform.report with a status), and keeps what its metric-stream datapoints are made of."""

    def __init__(self, name, memory, timeout_s, mem_used, reserved=None):
        self.name, self.memory, self.timeout_s, self.mem_used, self.reserved = name, memory, timeout_s, mem_used, reserved
        self.containers = []  # [free_at_ms, last_end_ms, idle_ttl_ms, stream]
        self.resets = []  # times (ms) a deploy replaces every execution environment
        self.intervals = []  # (start_ms, end_ms) of every execution, for ConcurrentExecutions
        self.counts = defaultdict(lambda: defaultdict(int))  # metric -> minute -> events
        self.points = defaultdict(dict)  # metric -> minute -> [max, min, sum, count]

    def count(self, metric, ts_ms, k=1):
        self.counts[metric][ts_ms // 60000] += k

    def point(self, metric, ts_ms, v):
        m = ts_ms // 60000
        p = self.points[metric].get(m)
        if p is None:
            self.points[metric][m] = [v, v, v, 1]
        else:
            p[0], p[1], p[2], p[3] = max(p[0], v), min(p[1], v), p[2] + v, p[3] + 1


def conc_series(intervals):
    """Concurrency per minute from execution intervals (ms): minute -> [max, min, busy ms]. Only
    minutes with an execution in them are listed; a minute partly idle has min 0."""
    ev = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda x: (x[0], x[1]))
    out = {}
    level, prev = 0, None
    for t, d in ev:
        if prev is not None and level > 0:
            x = prev
            while x < t:
                m = x // 60000
                seg = min(t, (m + 1) * 60000)
                o = out.get(m)
                if o is None:
                    out[m] = o = [level, level, 0, 0]
                o[0], o[1] = max(o[0], level), min(o[1], level)
                o[2] += level * (seg - x)
                o[3] += seg - x
                x = seg
        level += d
        prev = t
    return {m: [o[0], o[1] if o[3] >= 60000 else 0, o[2]] for m, o in out.items()}


# ---------------------------------------------------------------------------------------------


class Scenario:
    def __init__(self, out, small, seed, days, forge=0):
        self.out, self.small, self.seed, self.days, self.forge = Path(out), small, seed, days, forge
        self.rng = random.Random(seed)
        self.end = T0 + days * DAY
        self.scored_start = T0 + 14 * DAY
        self.sample = 5 if small else 8  # Invoke data events: 1 in N invocations, by request id
        if small:
            self.ars = [("012345678901", "us-east-1", 1.0)]
        else:
            accts = ["012345678901", "111122223333", "444455556666"]
            scale = [1.5, 1.2, 2.0, 1.0, 1.7, 1.3]
            self.ars = [(a, rg, scale[i * 2 + j]) for i, a in enumerate(accts) for j, rg in enumerate(("us-east-1", "eu-west-1"))]
        self.ct = defaultdict(lambda: defaultdict(list))  # (acct, region) -> window -> [(sortkey, json)]
        self.cw = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # region -> window -> (owner, group, stream) -> [events]
        self.deliveries = []
        self.counts = defaultdict(int)
        self.event_ids = 0
        self.log_id = 0
        self.incidents, self.benign = [], []
        self.silences = defaultdict(list)  # (acct, region) -> [(stop, start)]
        self.extra_ct = defaultdict(list)  # (acct, region, day) -> [record]
        self.extra_inv = defaultdict(list)  # (acct, region, fn, day) -> [Invocation]
        self.throttles = defaultdict(list)  # (acct, region, day) -> [(ts, principal, fn)]
        # Metric-stream datapoints of the cases (region -> window -> [(arrival, line)]), and the
        # functions each case ran per account-region (for the account-level datapoints).
        self.ms = defaultdict(lambda: defaultdict(list))
        self.case_fns = defaultdict(list)  # world index -> [CaseFn]
        self.setup()

    # --- the world ----------------------------------------------------------------------------
    def setup(self):
        rng = self.rng
        self.world = []
        for idx, (acct, region, scale) in enumerate(self.ars):
            r = Region(acct, region)
            nat = [f"{rng.choice((3, 18, 34, 52, 54))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(3)]
            office = [f"198.51.100.{rng.randrange(2, 250)}", f"203.0.113.{rng.randrange(2, 250)}"]
            gh = [f"4.{rng.randrange(150, 160)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(20)]
            P = {
                "app": Principal("AssumedRole", acct, "app-backend", UA_JAVA.format(rng.randrange(10, 40)), nat, session=f"ecs-task-{h('t', acct, region, n=32, alphabet='0123456789abcdef')}"),
                "media": Principal("AssumedRole", acct, "media-pipeline", UA_BOTO.format(*(rng.randrange(10, 40),) * 3), nat, session="media-worker"),
                "autoscaler": Principal("AssumedRole", acct, "k8s-node-autoscaler", UA_GO.format(rng.randrange(20, 30), rng.randrange(1, 9)), nat, session="1736000000000000000"),
                "monitor": Principal("AssumedRole", acct, "monitoring-readonly", UA_BOTO.format(*(rng.randrange(10, 40),) * 3), nat[:1], session="monitoring"),
                "alice": Principal("AssumedRole", acct, "AWSReservedSSO_AdministratorAccess_5f2a9c1e7b3d4a60", UA_CONSOLE, office, session="alice@example.com", mfa=False, console=True),
                "bob": Principal("AssumedRole", acct, "AWSReservedSSO_ReadOnlyAccess_0c6d2e8f1a9b3c57", UA_CONSOLE2, office, session="bob@example.com", console=True),
                "deploy": Principal("AssumedRole", acct, "ci-deploy", UA_CLI.format(rng.randrange(1, 20), "lambda.update-function-code"), gh, session="GitHubActions"),
                "backup": Principal("IAMUser", acct, "svc-legacy-backup", "aws-cli/1.32.10 Python/3.8.10 Linux/4.15.0-213-generic botocore/1.34.10", [f"192.0.2.{rng.randrange(2, 250)}"]),
                "partner": Principal("IAMUser", acct, "partner-sync", UA_NODE, [f"{rng.randrange(80, 90)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"]),
                "root": Principal("Root", acct, "root", UA_CONSOLE, office, console=True),
                "svc_lambda": Principal("AWSService", acct, None, None, None, invoked_by="lambda.amazonaws.com"),
                "svc_ecs": Principal("AWSService", acct, None, None, None, invoked_by="ecs-tasks.amazonaws.com"),
                "svc_s3": Principal("AWSService", acct, None, None, None, invoked_by="s3.amazonaws.com"),
                "svc_apigw": Principal("AWSService", acct, None, None, None, invoked_by="apigateway.amazonaws.com"),
                "svc_events": Principal("AWSService", acct, None, None, None, invoked_by="events.amazonaws.com"),
                "reporting": Principal("AssumedRole", acct, "reporting-readonly", UA_BOTO.format(*(rng.randrange(10, 40),) * 3), nat[1:2], session="quicksight-refresh"),
            }
            s = scale
            # (principal, profile, calls per hour at peak, [(api, weight)], error rate)
            actors = [
                (P["app"], "traffic", 40 * s, [("Decrypt", 5), ("GenerateDataKey", 2), ("DescribeTable", 1), ("GetObject", 3), ("PutObject", 2), ("GetCallerIdentity", 0.2)], 0.002),
                (P["media"], "traffic", 10 * s, [("GetObject", 4), ("PutObject", 4), ("GenerateDataKey", 2), ("Decrypt", 1)], 0.002),
                (P["autoscaler"], "flat", 20 * s, [("DescribeInstances", 6), ("DescribeSubnets", 1), ("DescribeSecurityGroups", 1), ("CreateTags", 0.1)], 0.0),
                (P["monitor"], "flat", 14, [("ListBuckets", 1), ("ListFunctions20150331", 2), ("DescribeTable", 2), ("GetBucketEncryption", 1), ("DescribeKey", 1), ("DescribeInstances", 1)], 0.0),
                (P["alice"], "office", 14, [("DescribeInstances", 4), ("DescribeSecurityGroups", 2), ("DescribeVpcs", 1), ("ListBuckets", 3), ("GetBucketPolicy", 2),
                                          ("GetBucketAcl", 1), ("ListRoles", 1), ("GetRole", 2), ("ListAttachedRolePolicies", 1),
                                          ("ListFunctions20150331", 2), ("GetFunction20150331v2", 2), ("DescribeTable", 1), ("ListTables", 1)], 0.003),
                (P["bob"], "office", 8, [("DescribeInstances", 3), ("ListBuckets", 3), ("GetBucketPolicy", 1), ("ListFunctions20150331", 2),
                                        ("GetFunctionConfiguration20150331v2", 2), ("ListRoles", 1), ("ListUsers", 1), ("DescribeKey", 1), ("ListKeys", 1)], 0.06),
                (P["svc_lambda"], "flat", 6 * s, [("AssumeRole", 1)], 0.0),
                (P["svc_ecs"], "flat", 3, [("AssumeRole", 1)], 0.0),
                (P["svc_s3"], "traffic", 4 * s, [("GenerateDataKey", 1), ("Decrypt", 1)], 0.0),
            ]
            # Invokers are (principal, weight); rates are invocations per hour at peak.
            k = 1.0
            fns = {
                "orders-api": Function("orders-api", 512, 6, 110, 0.45, (70, 110), 95 * s * k, "traffic",
                                       [(P["svc_apigw"], 0.9), (P["app"], 0.08), (P["partner"], 0.02)], 0.5),
                "auth-authorizer": Function("auth-authorizer", 256, 3, 30, 0.5, (48, 64), 55 * s * k, "traffic",
                                            [(P["svc_apigw"], 1.0)], 0.1),
                "thumbnailer": Function("thumbnailer", 1024, 30, 1400, 0.55, (180, 420), 22 * s * k, "traffic",
                                        [(P["media"], 0.7), (P["svc_s3"], 0.3)], 0.6),
            }
            if self.small or region == "us-east-1":
                fns["nightly-batch"] = Function("nightly-batch", 2048, 900, 95000, 0.45, (600, 1500), 0, "nightly",
                                                [(P["svc_events"], 1.0)], 0.8)
                fns["nightly-batch"].nightly = int(200 * s * k)
            self.world.append({"idx": idx, "r": r, "P": P, "actors": actors, "fns": fns, "scale": s})
        self.where = {(w["r"].account, w["r"].region): w["idx"] for w in self.world}

    def ar(self, i):
        return self.world[i % len(self.world)]

    def day_of(self, ts):
        return (ts - T0) // DAY

    # --- labels -------------------------------------------------------------------------------
    def label(self, kind, w, subject, start, end, description, related=None):
        self.incidents.append({"id": f"inc-{len(self.incidents) + 1:02d}-{kind}", "kind": kind, "account_id": w["r"].account,
                               "region": w["r"].region, "subject": subject, "start": iso(start), "end": iso(end),
                               "description": description})
        if related:
            # Findings on any of these count for the incident too (score.py).
            self.incidents[-1]["related_subjects"] = related

    def plan(self):
        """Deploys, benign events and incidents. Times are relative to the scored week (day 15 = Monday)."""
        S = self.scored_start
        H = 3600
        small = self.small
        n = len(self.world)
        # Weekly deploys on each account-region, including one in the scored week at a normal hour.
        for w in self.world:
            off = TZ[w["r"].region]
            wd = 1 + w["idx"] % 3  # Tue, Wed or Thu
            local_h = 14 if w["idx"] % 2 == 0 else 11
            for week in range((self.days + 6) // 7):
                t = T0 + week * 7 * DAY + wd * DAY + (local_h - off) * H + 1200 + w["idx"] * 420
                if t + 600 < self.end:
                    self.deploy(w, t)
                    if t >= S:
                        self.benign.append({"description": "weekly deploy by the CI role: ~30 lambda/iam management calls in 10 minutes, then cold starts",
                                            "account_id": w["r"].account, "region": w["r"].region,
                                            "subject": w["P"]["deploy"].label_arn, "related_subjects": list(w["fns"]),
                                            "start": iso(t), "end": iso(t + 600)})
            if "nightly-batch" in w["fns"]:
                for d in range(14, self.days):
                    t = T0 + d * DAY + 2 * H
                    self.benign.append({"description": "nightly batch: high concurrency and long durations 02:00-02:30 UTC every night",
                                        "account_id": w["r"].account, "region": w["r"].region, "subject": "nightly-batch",
                                        "start": iso(t), "end": iso(t + 1800 + 300)})
        # The new legitimate principal (reads at normal volume from day 16, never invokes).
        w = self.ar(0 if small else 2)
        self.new_principal = (w["idx"], S + DAY)
        self.benign.append({"description": "a new legitimate role (reporting-readonly) that starts calling the usual read APIs on day 16 and never invokes functions",
                            "account_id": w["r"].account, "region": w["r"].region, "subject": w["P"]["reporting"].label_arn,
                            "start": iso(S + DAY), "end": iso(self.end)})

        def at(day, hh, mm=0):
            return S + day * DAY + hh * H + mm * 60

        # Incidents: (account-region index in full variant)
        self.inc_throttle_fn(self.ar(0 if small else 3), "thumbnailer", at(0, 15, 40) if small else at(0, 10, 40))
        self.inc_unusual(self.ar(0 if small else 4), "orders-api", at(1, 3, 0) + 240)
        self.inc_silence(self.ar(0 if small else 1), at(2, 14, 30) if small else at(2, 9, 30))
        self.inc_spike(self.ar(0), "orders-api", at(3, 16, 10), 45, 30)
        self.inc_timeouts(self.ar(0 if small else 2), "auth-authorizer", at(4, 13, 30))
        self.inc_throttle_ec2(self.ar(0 if small else 5), at(4, 20, 0) if small else at(4, 8, 0))
        self.inc_api_rate(self.ar(0 if small else 2), "ListBuckets", at(5, 9, 10))
        self.inc_enumeration(self.ar(0 if small else 4), at(6, 21, 40))
        if not small:
            self.inc_spike(self.ar(5), "auth-authorizer", at(6, 12, 0), 40, 25)
            self.inc_timeouts(self.ar(3), "orders-api", at(2, 10, 0))
            self.inc_api_rate(self.ar(1), "DescribeSecurityGroups", at(3, 23, 20))

    def add_ct(self, w, rec_ts, rec):
        self.extra_ct[(w["idx"], self.day_of(rec_ts))].append((rec_ts, rec))

    def deploy(self, w, t):
        rng, r, p = self.rng, w["r"], w["P"]["deploy"]
        names = sorted(w["fns"])
        rng.shuffle(names)
        targets = names[:3]
        calls = [("GetCallerIdentity", None), ("GetRole", {"roleName": "ci-deploy"}), ("ListAttachedRolePolicies", {"roleName": "ci-deploy"})]
        for f in targets:
            calls += [("GetFunction20150331v2", {"functionName": f}), ("PutObject", MISSING),
                      ("UpdateFunctionCode20150331v2", {"functionName": f, "publish": False, "dryRun": False}),
                      ("GetFunctionConfiguration20150331v2", {"functionName": f}), ("GetFunctionConfiguration20150331v2", {"functionName": f}),
                      ("GetFunctionConfiguration20150331v2", {"functionName": f}), ("UpdateFunctionConfiguration20150331v2", None),
                      ("PublishVersion20150331", {"functionName": f}), ("UpdateAlias20150331", {"functionName": f, "name": "live", "functionVersion": str(rng.randrange(20, 90))})]
        calls.append(("GetRole", {"roleName": f"{targets[0]}-role"}))
        span = 600
        for i, (name, params) in enumerate(calls):
            ts = t + int(span * i / len(calls)) + rng.randrange(0, 8)
            if name == "UpdateFunctionConfiguration20150331v2":
                f = targets[(i - 3) // 9] if len(targets) else targets[0]
                self.add_ct(w, ts, self.config_event(w, w["fns"][f], ts))
                continue
            self.add_ct(w, ts, record(rng, r, p, name, ts, params=params))
        for f in targets:
            w["fns"][f].reset_at = getattr(w["fns"][f], "reset_at", []) + [(t + span // 2) * 1000]

    def config_event(self, w, fn, ts):
        r = w["r"]
        params = {"functionName": fn.name, "timeout": fn.timeout_s, "memorySize": fn.memory}
        resp = {"functionName": fn.name, "functionArn": fn_arn(r, fn.name), "runtime": "python3.12",
                "role": f"arn:aws:iam::{r.account}:role/{fn.name}-role", "handler": "app.handler", "codeSize": 48213 + len(fn.name),
                "description": "", "timeout": fn.timeout_s, "memorySize": fn.memory, "lastModified": iso(ts).replace("Z", ".000+0000"),
                "codeSha256": h("sha", r.account, fn.name, n=43, alphabet=ALNUM) + "=", "version": "$LATEST",
                "tracingConfig": {"mode": "PassThrough"}, "revisionId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "state": "Active", "lastUpdateStatus": "InProgress", "packageType": "Zip", "architectures": ["arm64"],
                "ephemeralStorage": {"size": 512}, "snapStart": {"applyOn": "None", "optimizationStatus": "Off"},
                "loggingConfig": {"logFormat": "Text", "logGroup": f"/aws/lambda/{fn.name}"}}
        return record(self.rng, r, w["P"]["deploy"], "UpdateFunctionConfiguration20150331v2", ts, params=params, resp=resp,
                      extra={"resources": [{"accountId": r.account, "type": "AWS::Lambda::Function", "ARN": fn_arn(r, fn.name)}]})

    # --- incidents ----------------------------------------------------------------------------
    def inc_throttle_fn(self, w, fname, t):
        """~20 min of TooManyRequestsException on Invoke (a retry storm against reserved concurrency)."""
        rng, fn = self.rng, w["fns"][fname]
        dur = 1200
        n = 320 * self.sample  # attempts; 1 in `sample` is logged, so ~320 events
        caller = fn.invokers[0][0]
        for _ in range(n):
            ts = t + int(dur * rng.random() ** 1.1)
            self.throttles[(w["idx"], self.day_of(ts))].append((ts, caller, fname))
        self.label("throttling", w, fname, t, t + dur,
                   f"{fname} throttled: a retry storm from {caller.label_arn or caller.invoked_by} hits its reserved concurrency, ~{n // self.sample} TooManyRequestsException Invoke events in 20 min")

    def inc_unusual(self, w, fname, t):
        rng, acct = self.rng, w["r"].account
        p = Principal("AssumedRole", FOREIGN_ACCOUNT, "DataSyncRole", "python-requests/2.31", ["185.220.101.47"], session="sync")
        for i in range(20):
            ts_ms = (t + i * 30 + rng.randrange(0, 20)) * 1000 + rng.randrange(1000)
            inv = Invocation(ts_ms, p, ip="185.220.101.47", ua="python-requests/2.31", log_ct=True)
            self.extra_inv[(w["idx"], fname, self.day_of(ts_ms // 1000))].append(inv)
        self.label("unusual_invocation", w, fname, t, t + 600,
                   f"{fname} invoked 20 times by arn:aws:iam::{FOREIGN_ACCOUNT}:role/DataSyncRole, an account never seen before, from 185.220.101.47 with python-requests/2.31")

    def inc_silence(self, w, t):
        rng, r = self.rng, w["r"]
        attacker = Principal("AssumedRole", r.account, "AWSReservedSSO_AdministratorAccess_5f2a9c1e7b3d4a60", UA_CLI.format(8, "cloudtrail.stop-logging"),
                             ["45.137.21.9"], session="alice@example.com")
        trail = f"arn:aws:cloudtrail:{r.region}:{r.account}:trail/org-trail"
        self.add_ct(w, t, record(rng, r, attacker, "StopLogging", t, params={"name": trail}))
        back = t + 3 * 3600
        self.add_ct(w, back + 20, record(rng, r, w["P"]["alice"], "StartLogging", back + 20, params={"name": trail}))
        self.silences[w["idx"]].append((t, back))
        self.label("log_silence", w, "cloudtrail", t, back,
                   "StopLogging by alice's SSO session from a new IP, then no CloudTrail files for 3 busy hours until StartLogging")

    def inc_spike(self, w, fname, t, minutes, factor):
        rng, fn, P = self.rng, w["fns"][fname], w["P"]
        base = fn.rate_h * profile(fn.prof, t, w["r"].region)
        n = int(base * minutes / 60 * factor)
        ip = f"91.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        ua = "aws-sdk-js/3.490.0 ua/2.0 os/linux#6.1.0 lang/js md/nodejs#18.19.0 api/lambda#3.490.0"
        left = n
        while left > 0:  # a worker pool: bursts of parallel requests that overlap
            k = min(left, rng.randrange(4, 10))
            left -= k
            burst = int((t + minutes * 60 * rng.random()) * 1000)
            for _ in range(k):
                ts_ms = burst + rng.randrange(0, 150)
                inv = Invocation(ts_ms, P["partner"], ip=ip, ua=ua, duration_factor=5.0)
                self.extra_inv[(w["idx"], fname, self.day_of(ts_ms // 1000))].append(inv)
        self.label("concurrency_spike", w, fname, t, t + minutes * 60,
                   f"denial of wallet: {fname} invoked {n} times in {minutes} min (~{factor}x normal) in overlapping bursts of slow requests by the leaked partner-sync key from {ip}")
        # The leaked key is used from a new IP with a new user agent: a new invoker, truly.
        self.incidents[-1]["may_also_raise"] = [{"kind": "unusual_invocation", "subject": fname}]

    def inc_timeouts(self, w, fname, t):
        fn = w["fns"][fname]
        fn.timeout_windows.append((t * 1000, (t + 7200) * 1000, 0.4))
        self.label("timeouts", w, fname, t, t + 7200,
                   f"{fname}: a downstream dependency hangs, ~40% of invocations time out after {fn.timeout_s} s for 2 hours")

    def inc_throttle_ec2(self, w, t):
        rng, r, p = self.rng, w["r"], w["P"]["autoscaler"]
        dur = 1200
        for _ in range(420):
            ts = t + rng.randrange(dur)
            err = ("Client.RequestLimitExceeded", "Request limit exceeded.") if rng.random() < 0.5 else ("RequestLimitExceeded", "Rate exceeded")
            if rng.random() < 0.2:
                err = ("ThrottlingException", "Rate exceeded")
            self.add_ct(w, ts, record(rng, r, p, "DescribeInstances", ts, error=err))
        for _ in range(60):
            ts = t + rng.randrange(dur)
            self.add_ct(w, ts, record(rng, r, p, "DescribeInstances", ts))
        self.label("throttling", w, "ec2.amazonaws.com:DescribeInstances", t, t + dur,
                   "a misconfigured node autoscaler polls DescribeInstances in a tight loop: ~420 RequestLimitExceeded/ThrottlingException errors in 20 min")
        # The tight loop's successful calls are an unusual call rate of the API too.
        self.incidents[-1]["may_also_raise"] = [{"kind": "api_call_rate", "subject": "ec2.amazonaws.com:DescribeInstances"}]

    def inc_api_rate(self, w, name, t):
        rng, r, p = self.rng, w["r"], w["P"]["app"]
        dur = 1200
        ip = f"45.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        ua = "aws-cli/2.15.30 Python/3.11.8 Linux/6.6.15-amd64 exe/x86_64.kali.2024 prompt/off command/s3.ls"
        # ~40x the API's busiest-hour rate (and far more than its rate at that hour).
        peak = 0.0
        for ap, prof, rate, mix, _ in w["actors"]:
            tot = sum(x for _, x in mix)
            peak += rate * sum(x for a, x in mix if a == name) / tot
        n = max(60, int(40 * peak / 3))
        for _ in range(n):
            ts = t + rng.randrange(dur)
            self.add_ct(w, ts, record(rng, r, p, name, ts, ip=ip, ua=ua))
        self.label("api_call_rate", w, f"s3.amazonaws.com:{name}" if name == "ListBuckets" else f"{_svc(API[name][0])}:{name}", t, t + dur,
                   f"compromised app-backend credentials used from {ip}: {n} {name} calls in 20 min")

    def inc_enumeration(self, w, t):
        rng, r = self.rng, w["r"]
        p = w["P"]["backup"]
        ip = "194.26.29.113"
        ua = "Boto3/1.34.50 md/Botocore#1.34.50 ua/2.0 os/linux#6.6.9-amd64 md/arch#x86_64 lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.50 pacu"
        apis = [("iam", n) for n in ("ListUsers", "ListRoles", "ListGroups", "ListPolicies", "GetAccountAuthorizationDetails", "ListAccessKeys",
                                     "GetAccountPasswordPolicy", "ListMFADevices", "ListInstanceProfiles", "GetAccountSummary")] + \
               [("ec2", n) for n in ("DescribeInstances", "DescribeVpcs", "DescribeSubnets", "DescribeSecurityGroups", "DescribeSnapshots",
                                     "DescribeVolumes", "DescribeImages", "DescribeKeyPairs", "DescribeRegions", "DescribeInstanceAttribute")] + \
               [("s3", n) for n in ("ListBuckets", "GetBucketPolicy", "GetBucketAcl")] + \
               [("lambda", n) for n in ("ListFunctions20150331", "GetFunction20150331v2", "ListLayers20181031", "GetPolicy20150331v2")] + \
               [("kms", n) for n in ("ListKeys", "ListAliases", "DescribeKey")] + \
               [("dynamodb", n) for n in ("ListTables", "DescribeTable", "ListBackups")] + \
               [("secretsmanager", n) for n in ("ListSecrets", "GetSecretValue")] + \
               [("ssm", n) for n in ("DescribeParameters", "GetParameters")] + \
               [("sns", "ListTopics"), ("sqs", "ListQueues"), ("logs", "DescribeLogGroups"), ("cloudformation", "ListStacks"),
                ("organizations", "DescribeOrganization"), ("rds", "DescribeDBInstances"), ("ecr", "DescribeRepositories"),
                ("guardduty", "ListDetectors"), ("config", "DescribeConfigurationRecorders"), ("ecs", "ListClusters"), ("events", "ListRules"),
                ("sts", "GetCallerIdentity")]
        dur = 780
        allowed = {"GetCallerIdentity", "ListBuckets", "GetBucketAcl"}  # the backup user may do these
        rounds = [apis, rng.sample(apis, 20)]
        i = 0
        total = sum(len(x) for x in rounds)
        for rnd in rounds:
            for svc, name in rnd:
                ts = t + int(dur * i / total) + rng.randrange(0, 5)
                i += 1
                err = None if name in allowed else self.denial(svc, name, p)
                self.add_ct(w, ts, self.raw_record(w, p, svc, name, ts, err, ip, ua))
        self.label("api_error_rate", w, p.label_arn, t, t + dur,
                   f"enumeration with the leaked svc-legacy-backup key from {ip}: {len(apis)} distinct APIs across {len({s for s, _ in apis})} services in 13 min, most denied")

    @staticmethod
    def denial(svc, name, p):
        action = f"{svc}:{name.replace('20150331v2', '').replace('20150331', '').replace('20181031', '')}"
        if svc == "ec2":
            return ("Client.UnauthorizedOperation", f"You are not authorized to perform this operation. User: {p.arn} is not authorized to perform: {action} because no identity-based policy allows the {action} action")
        if svc == "s3":
            return ("AccessDenied", "Access Denied")
        if svc in ("iam", "sts", "organizations", "cloudformation", "rds", "sns", "ecs"):
            return ("AccessDenied", f"User: {p.arn} is not authorized to perform: {action} on resource: * because no identity-based policy allows the {action} action")
        return ("AccessDeniedException", f"User: {p.arn} is not authorized to perform: {action} on resource: * because no identity-based policy allows the {action} action")

    def raw_record(self, w, p, svc, name, ts, err, ip, ua):
        """A record for an API outside the catalogue (enumeration)."""
        rng, r = self.rng, w["r"]
        if name in API:
            return record(rng, r, p, name, ts, error=err, ip=ip, ua=ua)
        region = "us-east-1" if svc in ("iam", "organizations") else r.region
        rec = {"eventVersion": VERSION.get(svc, "1.08"), "userIdentity": p.identity(ts), "eventTime": iso(ts),
               "eventSource": _svc(svc), "eventName": name, "awsRegion": region, "sourceIPAddress": ip, "userAgent": ua}
        if err:
            rec["errorCode"], rec["errorMessage"] = err
        rec["requestParameters"] = None
        rec["responseElements"] = None
        rec["requestID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rec["eventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rec["readOnly"] = True
        rec["eventType"] = "AwsApiCall"
        rec["managementEvent"] = True
        rec["recipientAccountId"] = r.account
        rec["eventCategory"] = "Management"
        rec["tlsDetails"] = {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                             "clientProvidedHostHeader": f"{svc}.amazonaws.com" if region == "us-east-1" and svc in ("iam", "organizations") else f"{svc}.{r.region}.amazonaws.com"}
        return rec

    # --- daily generation ---------------------------------------------------------------------
    def gen_day(self, w, d):
        rng, r, P = self.rng, w["r"], w["P"]
        day0 = T0 + d * DAY
        recs = list(self.extra_ct.pop((w["idx"], d), []))
        # Management and data events of the usual actors.
        actors = list(w["actors"])
        if self.new_principal[0] == w["idx"] and day0 >= self.new_principal[1]:
            actors.append((P["reporting"], "office", 16, [("DescribeInstances", 2), ("ListBuckets", 1), ("DescribeTable", 3), ("ListTables", 1),
                                                          ("GetFunctionConfiguration20150331v2", 1), ("GetBucketPolicy", 1), ("DescribeKey", 1)], 0.0))
        for p, prof, rate, mix, err in actors:
            names = [a for a, _ in mix]
            cum = []
            acc = 0.0
            for _, wt in mix:
                acc += wt
                cum.append(acc)
            for win in range(288):
                ws = day0 + win * WIN
                n = poisson(rng, rate / 12 * profile(prof, ws + 150, r.region))
                for _ in range(n):
                    ts = ws + rng.randrange(WIN)
                    name = names[bisect.bisect_left(cum, rng.random() * acc)]
                    e = None
                    if err and rng.random() < err:
                        e = denied(p, name)
                    elif name == "GetObject" and rng.random() < 0.01:
                        e = ("NoSuchKey", "The specified key does not exist.")
                    elif name == "GetBucketPolicy" and rng.random() < 0.3:
                        e = ("NoSuchBucketPolicy", "The bucket policy does not exist")
                    recs.append((ts, record(rng, r, p, name, ts, error=e)))
        # The backup user: a nightly upload at 01:00 UTC; root: a weekly console look at Mondays.
        for i in range(rng.randrange(6, 12)):
            ts = day0 + 3600 + i * 40 + rng.randrange(30)
            recs.append((ts, record(rng, r, P["backup"], "PutObject" if i else "ListBuckets", ts)))
        if d % 7 == 0:
            ts = day0 + (16 - TZ[r.region]) * 3600 + rng.randrange(1800)
            for name in ("GetAccountSummary", "ListBuckets", "ListUsers"):
                recs.append((ts, record(rng, r, P["root"], name, ts)))
                ts += rng.randrange(20, 90)
        if d == 0:
            for i, fn in enumerate(w["fns"].values()):
                ts = day0 + 300 + i * 45
                recs.append((ts, self.config_event(w, fn, ts)))
        # Lambda.
        for fn in w["fns"].values():
            recs += self.gen_lambda(w, fn, d)
        for ts, p, fname in self.throttles.pop((w["idx"], d), []):
            rid = uuid.UUID(int=rng.getrandbits(128), version=4)
            if rid.int % self.sample == 0:
                recs.append((ts, self.invoke_event(w, p, fname, ts, str(rid), None, None, ("TooManyRequestsException", "Rate Exceeded."))))
        self.deliver_routed(w, recs)

    def deliver_routed(self, w, recs):
        """Delivers `w`'s records. Global services (IAM) log in us-east-1: such records go to the
        account's us-east-1 files."""
        r = w["r"]
        home = [x for x in recs if x[1]["awsRegion"] == r.region]
        self.deliver_ct(w, home)
        if len(home) < len(recs):
            by_idx = defaultdict(list)
            for x in recs:
                if x[1]["awsRegion"] != r.region:
                    by_idx[self.where.get((r.account, x[1]["awsRegion"]), w["idx"])].append(x)
            for i, xs in sorted(by_idx.items()):
                self.deliver_ct(self.world[i], xs)

    def invoke_event(self, w, p, fname, ts, rid, ip, ua, error=None):
        rng, r = self.rng, w["r"]
        arn = fn_arn(r, fname)
        params = {"functionName": arn if rng.random() < 0.8 else fname}
        if p.kind == "AWSService" and p.invoked_by == "apigateway.amazonaws.com":
            params["sourceArn"] = f"arn:aws:execute-api:{r.region}:{r.account}:{h('api', r.account, r.region, n=10, alphabet='abcdefghijklmnopqrstuvwxyz0123456789')}/*/POST/orders"
        extra = {"resources": [{"accountId": r.account, "type": "AWS::Lambda::Function", "ARN": arn}]}
        if not error:
            extra["additionalEventData"] = {"functionVersion": f"{arn}:$LATEST"}
        rec = record(rng, r, p, "Invoke", ts, params=params, error=error, extra=extra, ip=ip, ua=ua)
        rec["requestID"] = rid
        return rec

    def gen_lambda(self, w, fn, d):
        """Invocations of one function on day d: log events to Firehose, sampled Invoke data events."""
        rng, r = self.rng, w["r"]
        day0 = T0 + d * DAY
        invs = self.extra_inv.pop((w["idx"], fn.name, d), [])
        if fn.prof == "nightly":
            n = int(fn.nightly * (0.9 + 0.2 * rng.random()))
            for i in range(n):
                off = rng.random() * 300 if rng.random() < 0.7 else 300 + rng.random() * 1500
                invs.append(Invocation(int((day0 + 7200 + off) * 1000), fn.invokers[0][0]))
        else:
            cum, acc = [], 0.0
            for _, wt in fn.invokers:
                acc += wt
                cum.append(acc)
            for win in range(288):
                ws = day0 + win * WIN
                for _ in range(poisson(rng, fn.rate_h / 12 * profile(fn.prof, ws + 150, r.region))):
                    p = fn.invokers[bisect.bisect_left(cum, rng.random() * acc)][0]
                    invs.append(Invocation((ws * 1000) + rng.randrange(WIN * 1000), p))
        invs.sort(key=lambda i: i.start_ms)
        recs = []
        group = f"/aws/lambda/{fn.name}"
        region = r.region
        resets = getattr(fn, "reset_at", [])
        for inv in invs:
            s = inv.start_ms
            while resets and resets[0] <= s:  # a deploy replaces every execution environment
                resets.pop(0)
                fn.containers = []
            rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            # Pick a warm container (most recently used first) or start a cold one.
            cont = None
            live = []
            for c in fn.containers:
                if s - c[1] < c[2]:
                    live.append(c)
            fn.containers = live
            for c in sorted(live, key=lambda c: -c[1]):
                if c[0] <= s:
                    cont = c
                    break
            init = None
            if cont is None:
                init = round(rng.uniform(180, 720) * (1.6 if fn.memory >= 1024 else 1.0), 2)
                day = time.strftime("%Y/%m/%d", time.gmtime(s // 1000))
                stream = f"{day}/[$LATEST]{rng.getrandbits(128):032x}"
                cont = [0, 0, rng.randrange(8 * 60000, 45 * 60000), stream]
                fn.containers.append(cont)
            dur = rng.lognormvariate(math.log(fn.median_ms), fn.sigma) * inv.factor
            for a, b, f in fn.slow_windows:
                if a <= s < b:
                    dur *= f
            timeout = dur >= fn.timeout_s * 1000
            for a, b, prob in fn.timeout_windows:
                if a <= s < b and rng.random() < prob:
                    timeout = True
            if not timeout and rng.random() < 0.0003:
                timeout = True
            if timeout:
                dur = fn.timeout_s * 1000.0
            else:
                dur = round(max(1.2, dur), 2)
            start = s + (int(init) if init else 0)
            end = start + int(math.ceil(dur))
            cont[0], cont[1] = end + 5, end
            ev = []
            if init:
                ev.append((s, "INIT_START Runtime Version: python:3.12.v38\tRuntime Version ARN: arn:aws:lambda:%s::runtime:%s\n"
                           % (region, h("rt", region, n=64, alphabet="0123456789abcdef"))))
            ev.append((start, f"START RequestId: {rid} Version: $LATEST\n"))
            if rng.random() < fn.app_log:
                t2 = start + rng.randrange(1, 10)
                ev.append((t2, f"{iso_ms(t2)}\t{rid}\tINFO\t{self.app_line(rng, fn)}\n"))
            used = rng.randrange(*fn.mem_used)
            if timeout:
                ev.append((end, f"{iso_ms(end)} {rid} Task timed out after {fn.timeout_s:.2f} seconds\n\n"))
            ev.append((end, f"END RequestId: {rid}\n"))
            rep = (f"REPORT RequestId: {rid}\tDuration: {dur:.2f} ms\tBilled Duration: {int(math.ceil(dur))} ms\t"
                   f"Memory Size: {fn.memory} MB\tMax Memory Used: {used} MB")
            if init:
                rep += f"\tInit Duration: {init:.2f} ms"
            rep += "\tStatus: timeout\n" if timeout else "\t\n"
            ev.append((end, rep))
            if timeout:
                fn.containers.remove(cont)  # the runtime is restarted after a timeout
            self.counts["lambda_report_lines"] += 1
            self.counts[f"report_lines:{r.account}:{region}:{fn.name}"] += 1
            if timeout:
                self.counts["lambda_timeouts"] += 1
            self.add_logs(r.account, region, group, cont[3], ev)
            # The Invoke data event (sampled; callers from another account always logged).
            p = inv.principal
            if inv.ct or int(rid.replace("-", ""), 16) % self.sample == 0:
                recs.append((s // 1000, self.invoke_event(w, p, fn.name, s // 1000, rid, inv.ip, inv.ua)))
        return recs

    @staticmethod
    def app_line(rng, fn):
        if fn.name == "orders-api":
            return f"order {rng.randrange(10**6, 10**7)} accepted, {rng.randrange(1, 9)} items"
        if fn.name == "thumbnailer":
            return f"resized uploads/{rng.randrange(10**6):06d}.jpg to 3 sizes"
        if fn.name == "auth-authorizer":
            return "token valid, policy cached"
        return f"processed shard {rng.randrange(512)}: {rng.randrange(1000, 90000)} rows"

    def add_logs(self, owner, region, group, stream, events):
        rng = self.rng
        for ts, msg in events:
            arrive = ts + rng.randrange(200, 20000)  # CloudWatch Logs to Firehose latency
            win = (arrive // 1000) // WIN
            self.log_id += 1
            self.cw[region][win][(owner, group, stream)].append((ts, f"3{ts:019d}{self.log_id:036d}", msg))
            self.counts["lambda_log_events"] += 1

    # --- delivery -----------------------------------------------------------------------------
    def ct_delay(self):
        rng = self.rng
        u = rng.random()
        if u < 0.003:
            return rng.randrange(3600, 3 * 3600)
        if u < 0.033:
            return rng.randrange(600, 900)
        return int(120 + 480 * rng.betavariate(1.6, 2.6))

    def deliver_ct(self, w, recs):
        rng = self.rng
        key = w["idx"]
        silences = self.silences.get(w["idx"], [])
        buckets = self.ct[key]
        for ts, rec in recs:
            silent = False
            for a, b in silences:
                if a < ts < b:
                    silent = True  # not recorded: logging is off
            if silent:
                continue
            text = DUMPS(rec)
            self.event_ids += 1
            copies = [ts + self.ct_delay()]
            if rng.random() < 0.002:
                copies.append(copies[0] + rng.randrange(300, 2400))
                self.counts["cloudtrail_duplicates"] += 1
            for dt in copies:
                for a, b in silences:
                    if a + 300 <= dt < b:
                        dt = a + rng.randrange(30, 250) if ts <= a else b + rng.randrange(60, 600)
                buckets[dt // WIN].append((ts + rng.random() * 90, text))
                self.counts["cloudtrail_records"] += 1

    def flush(self, before_win, firehose="trailwatch-logs"):
        rng = self.rng
        for key in sorted(self.ct):
            w = self.world[key]
            acct, region = w["r"].account, w["r"].region
            buckets = self.ct[key]
            for win in sorted(k for k in buckets if k < before_win):
                items = buckets.pop(win)
                items.sort(key=lambda x: x[0])
                fts = (win + 1) * WIN
                stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(fts))
                rel = (f"input/AWSLogs/{ORG}/{acct}/CloudTrail/{region}/{time.strftime('%Y/%m/%d', time.gmtime(fts))}/"
                       f"{acct}_CloudTrail_{region}_{stamp}_{''.join(rng.choice(ALNUM) for _ in range(16))}.json.gz")
                body = '{"Records":[' + ",".join(t for _, t in items) + "]}"
                self.write(rel, gzip.compress(body.encode(), compresslevel=6, mtime=0), fts + rng.randrange(60, 180))
                self.counts["cloudtrail_files"] += 1
        for region in sorted(self.cw):
            wins = self.cw[region]
            for win in sorted(k for k in wins if k < before_win):
                streams = wins.pop(win)
                payloads = []
                for (owner, group, stream), evs in streams.items():
                    evs.sort()
                    for i in range(0, len(evs), 400):
                        chunk = evs[i:i + 400]
                        payloads.append((chunk[0][0], owner, group, stream, chunk))
                payloads.sort(key=lambda x: (x[0], x[2], x[3]))
                members = []
                for _, owner, group, stream, chunk in payloads:
                    doc = {"messageType": "DATA_MESSAGE", "owner": owner, "logGroup": group, "logStream": stream,
                           "subscriptionFilters": ["trailwatch"],
                           "logEvents": [{"id": i, "timestamp": ts, "message": m} for ts, i, m in chunk]}
                    members.append(gzip.compress(DUMPS(doc).encode(), compresslevel=6, mtime=0))
                    self.counts["firehose_payloads"] += 1
                ots = win * WIN + rng.randrange(0, 25)
                rel = (f"input/cwlogs/{region}/{time.strftime('%Y/%m/%d/%H', time.gmtime(ots))}/"
                       f"{firehose}-1-{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(ots))}-{rng.getrandbits(32):08x}")
                self.write(rel, b"".join(members), (win + 1) * WIN + rng.randrange(60, 360))
                self.counts["firehose_objects"] += 1

    # --- cases with random streams of their own -----------------------------------------------
    @contextlib.contextmanager
    def own_stream(self, case):
        """Runs one case on a random stream of its own (`<case>:<seed>`) with delivery buffers of
        its own, flushed into files of its own: adding a case never changes a byte of what the
        seed wrote without it. Logging silences still apply to its CloudTrail records."""
        saved = (self.rng, self.ct, self.cw, self.ms)
        self.rng = random.Random(f"{case}:{self.seed}")
        self.ct = defaultdict(lambda: defaultdict(list))
        self.cw = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        self.ms = defaultdict(lambda: defaultdict(list))
        try:
            yield self.rng
            self.flush(1 << 62, firehose=f"trailwatch-logs-{case}")
            self.flush_metrics(f"trailwatch-metrics-{case}")  # draws nothing for a case without metrics
        finally:
            self.rng, self.ct, self.cw, self.ms = saved

    def case_sweeps(self, rng):
        """Benign look-alike: 2-3 service roles and scanners per account-region that read
        Describe/Get/List APIs in bursts (15-40 calls of each of 2-3 APIs within 1-4 minutes) every
        3 to 12 whole hours, a minute of jitter, from day 1 to the end. A period that divides a day
        recurs at the same minutes every day; the others (5, 7, 9, 10, 11 h) wander round the clock
        and land in a different hour each day."""
        for w in self.world:
            r = w["r"]
            chosen = rng.sample(SWEEPERS, rng.randint(2, 3))
            for role, session, invoked_by, ua, pool in chosen:
                ip = invoked_by or f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                p = Principal("AssumedRole", r.account, role, ua or invoked_by, [ip], session=session, invoked_by=invoked_by)
                period = rng.randint(3, 12) * 3600
                offset = rng.randrange(period)
                apis = [(name, rng.randint(15, 40)) for name in rng.sample(pool, rng.randint(2, 3))]
                span = rng.randint(60, 240)
                recs = []
                t = T0 + offset
                while t < self.end:
                    start = max(T0, t + rng.randrange(-60, 61))
                    for name, n in apis:
                        for _ in range(max(1, n + rng.randint(-2, 2))):
                            ts = start + rng.randrange(span)
                            recs.append((ts, record(rng, r, p, name, ts, ip=ip)))
                    t += period
                self.deliver_routed(w, recs)
                hhmm = time.strftime("%H:%M", time.gmtime(T0 + offset % (period)))
                self.benign.append({"description": f"scheduled sweep by {role} every {period // 3600} h from {hhmm} UTC: "
                                                   + ", ".join(f"~{n} {name}" for name, n in apis) + f" within {span // 60 + 1} min",
                                    "account_id": r.account, "region": r.region, "subject": p.label_arn,
                                    "related_subjects": [f"{_svc(API[name][0])}:{name}" for name, _ in apis],
                                    "start": iso(self.scored_start), "end": iso(self.end)})

    def case_new_sweeper(self, rng):
        """Incident: a role never seen before sweeps 2-3 read APIs once (20-40 calls of each within
        2-5 minutes) at a random time of the scored week: reconnaissance with borrowed access."""
        w = self.ar(0 if self.small else rng.randrange(len(self.world)))
        r = w["r"]
        ip = f"5.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        p = Principal("AssumedRole", r.account, "OrganizationAccountAccessRole", UA_BOTO.format(*(rng.randrange(40, 60),) * 3), [ip],
                      session=f"recon-{rng.getrandbits(32):08x}")
        apis = [(name, rng.randint(20, 40)) for name in rng.sample(RECON_APIS, rng.randint(2, 3))]
        span = rng.randint(120, 300)
        while True:  # not while logging is off: that sweep would leave no trace to find
            t = self.scored_start + rng.randrange(7 * DAY - 3600)
            if not any(a - 3600 < t < b + 3600 for a, b in self.silences.get(w["idx"], [])):
                break
        recs = []
        for name, n in apis:
            for _ in range(n):
                ts = t + rng.randrange(span)
                recs.append((ts, record(rng, r, p, name, ts, ip=ip)))
        self.deliver_routed(w, recs)
        self.label("api_call_rate", w, p.label_arn, t, t + span,
                   f"a role never seen before ({p.label_arn}) from {ip} sweeps once: "
                   + ", ".join(f"{n} {name}" for name, n in apis) + f" in {span // 60 + 1} min",
                   related=[f"{_svc(API[name][0])}:{name}" for name, _ in apis])

    def case_cost_creep(self, rng):
        """Incident: a small function's durations grow 8-15x (a slow dependency) for 40-90 minutes
        in office hours while its call rate stays what it always is (1-2 a minute at peak). The
        function is new in this case and runs all 21 days, so its baseline is learned."""
        w = self.ar(0 if self.small else rng.randrange(len(self.world)))
        r = w["r"]
        fn = Function("report-renderer", rng.choice((512, 1024, 1536)), 60, rng.uniform(150, 400), 0.4, (90, 160),
                      rng.uniform(60, 120) * w["scale"], "traffic", [(w["P"]["app"], 1.0)], 0.3)
        factor = rng.uniform(8, 15)
        minutes = rng.randint(40, 90)
        # A weekday of the scored week, in local office hours.
        t = self.scored_start + rng.randrange(5) * DAY + (rng.randint(9, 16) - TZ[r.region]) * 3600 + rng.randrange(3600)
        # Durations climb for the first 10 minutes, then stay up.
        for k in range(1, 4):
            a = t + (k - 1) * 200
            fn.slow_windows.append((a * 1000, (t + minutes * 60 if k == 3 else a + 200) * 1000, 1 + (factor - 1) * k / 3))
        for d in range(self.days):
            self.deliver_routed(w, self.gen_lambda(w, fn, d))
        self.label("concurrency_spike", w, fn.name, t, t + minutes * 60,
                   f"{fn.name} ({fn.memory} MB): durations ~{factor:.0f}x normal for {minutes} min at its usual call rate "
                   f"(a slow dependency): the bill and the concurrency grow, invocations a minute do not")

    # --- failure-mode cases: shared parts -----------------------------------------------------
    def case_place(self, rng):
        """The account-region of a case: the only one in the small variant, any in the full one."""
        return self.ar(0 if self.small else rng.randrange(len(self.world)))

    def case_time(self, rng, w, days, hours, length):
        """A time on one of `days` of the scored week (0 = Monday) at a local hour in `hours`
        (inclusive), whose `length` seconds keep an hour clear of any logging silence and end
        before the timeline does."""
        while True:
            t = (self.scored_start + rng.choice(days) * DAY + (rng.randint(*hours) - TZ[w["r"].region]) * 3600
                 + rng.randrange(3600))
            if t + length < self.end and not any(a - 3600 < t + length and t < b + 3600 for a, b in self.silences.get(w["idx"], [])):
                return t

    def case_setup(self, w, fns):
        """Day 1: each function's configuration (JSON log format) by the CI role, and its reserved
        concurrency where it has one (PutFunctionConcurrency)."""
        rng, r, p = self.rng, w["r"], w["P"]["deploy"]
        recs = []
        ts = T0 + rng.randrange(600, 3000)
        for fn in fns:
            log = {"logFormat": "JSON", "applicationLogLevel": "INFO", "systemLogLevel": "INFO"}
            params = {"functionName": fn.name, "timeout": fn.timeout_s, "memorySize": fn.memory, "loggingConfig": log}
            resp = {"functionName": fn.name, "functionArn": fn_arn(r, fn.name), "runtime": "python3.12",
                    "role": f"arn:aws:iam::{r.account}:role/{fn.name}-role", "handler": "app.handler", "codeSize": 48213 + len(fn.name),
                    "description": "", "timeout": fn.timeout_s, "memorySize": fn.memory, "lastModified": iso(ts).replace("Z", ".000+0000"),
                    "codeSha256": h("sha", r.account, fn.name, n=43, alphabet=ALNUM) + "=", "version": "$LATEST",
                    "tracingConfig": {"mode": "PassThrough"}, "revisionId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "state": "Active", "lastUpdateStatus": "InProgress", "packageType": "Zip", "architectures": ["arm64"],
                    "ephemeralStorage": {"size": 512}, "snapStart": {"applyOn": "None", "optimizationStatus": "Off"},
                    "loggingConfig": dict(log, logGroup=f"/aws/lambda/{fn.name}")}
            res = [{"accountId": r.account, "type": "AWS::Lambda::Function", "ARN": fn_arn(r, fn.name)}]
            recs.append((ts, record(rng, r, p, "UpdateFunctionConfiguration20150331v2", ts, params=params, resp=resp,
                                    extra={"resources": list(res)})))
            if fn.reserved is not None:
                ts += rng.randrange(5, 30)
                recs.append((ts, record(rng, r, p, "PutFunctionConcurrency20171031", ts,
                                        params={"functionName": fn.name, "reservedConcurrentExecutions": fn.reserved},
                                        resp={"reservedConcurrentExecutions": fn.reserved}, extra={"resources": list(res)})))
            ts += rng.randrange(30, 90)
        self.deliver_routed(w, recs)

    def case_deploy(self, w, fn, t):
        """A deploy of one function by the CI role: its UpdateFunctionCode20150331v2 call at `t`,
        with the reads around it. Returns the records; the new code serves 20-60 s later."""
        rng, r, p = self.rng, w["r"], w["P"]["deploy"]
        calls = [("GetFunction20150331v2", {"functionName": fn.name}, -rng.randint(5, 20)),
                 ("UpdateFunctionCode20150331v2", {"functionName": fn.name, "publish": True, "dryRun": False}, 0),
                 ("GetFunctionConfiguration20150331v2", {"functionName": fn.name}, rng.randint(5, 12)),
                 ("GetFunctionConfiguration20150331v2", {"functionName": fn.name}, rng.randint(15, 30))]
        return [(t + dt, record(rng, r, p, name, t + dt, params=params)) for name, params, dt in calls]

    def case_invoke(self, w, fn, s, dur, rid=None, status="success", error=None, app=None):
        """One invocation of a case function arriving at `s` (ms), in Lambda's JSON log format:
        platform.initStart/initReport on a new execution environment, platform.start, the app's
        own lines, and platform.report with the status (`success`, `error`, `timeout`) and, for a
        failure, its errorType. Counts Invocations, Errors and Duration. Returns (request id, end ms)."""
        rng, r = self.rng, w["r"]
        region = r.region
        if rid is None:
            rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        while fn.resets and fn.resets[0] <= s:  # a deploy replaces every execution environment
            fn.resets.pop(0)
            fn.containers = []
        cont = None
        live = []
        for c in fn.containers:
            if s - c[1] < c[2]:
                live.append(c)
                if c[0] <= s and (cont is None or c[1] > cont[1]):
                    cont = c
        fn.containers = live
        init = None
        ev = []
        if cont is None:
            init = round(rng.uniform(150, 600) * (1.5 if fn.memory >= 1024 else 1.0), 2)
            stream = f"{time.strftime('%Y/%m/%d', time.gmtime(s // 1000))}/[$LATEST]{rng.getrandbits(128):032x}"
            cont = [0, 0, rng.randrange(8 * 60000, 45 * 60000), stream]
            fn.containers.append(cont)
            ev.append((s, DUMPS({"time": iso_ms(s), "type": "platform.initStart",
                                 "record": {"initializationType": "on-demand", "phase": "init", "runtimeVersion": "python:3.12.v38",
                                            "runtimeVersionArn": f"arn:aws:lambda:{region}::runtime:{h('rt', region, n=64, alphabet='0123456789abcdef')}",
                                            "functionName": fn.name, "functionVersion": "$LATEST"}})))
            t_i = s + int(init)
            ev.append((t_i, DUMPS({"time": iso_ms(t_i), "type": "platform.initReport",
                                   "record": {"initializationType": "on-demand", "phase": "init", "status": "success",
                                              "metrics": {"durationMs": init}}})))
        if status == "timeout":
            dur = fn.timeout_s * 1000.0
        dur = round(max(1.0, dur), 2)
        start = s + (int(init) if init else 0)
        end = start + int(math.ceil(dur))
        cont[0], cont[1] = end + 5, end
        ev.append((start, DUMPS({"time": iso_ms(start), "type": "platform.start", "record": {"requestId": rid, "version": "$LATEST"}})))
        if app:  # a message, or (level, message)
            level, msg = app if isinstance(app, tuple) else ("INFO", app)
            t2 = min(end, start + rng.randrange(1, 10))
            ev.append((t2, DUMPS({"timestamp": iso_ms(t2), "level": level, "message": msg, "logger": "root", "requestId": rid})))
        etype = None
        if status == "error":
            etype, emsg = error
            t2 = max(start, end - 1)
            ev.append((t2, DUMPS({"timestamp": iso_ms(t2), "log_level": "ERROR", "errorMessage": emsg, "errorType": etype,
                                  "requestId": rid, "stackTrace": [f'  File "/var/task/app.py", line {40 + len(etype)}, in handler\n'
                                                                   f'    return process(event)\n']})))
        elif status == "timeout":
            etype = "Sandbox.Timedout"
        used = rng.randrange(*fn.mem_used)
        metrics = {"durationMs": dur, "billedDurationMs": int(math.ceil(dur)), "memorySizeMB": fn.memory, "maxMemoryUsedMB": used}
        if init:
            metrics["initDurationMs"] = init
        rep = {"requestId": rid, "metrics": metrics, "status": status}
        if etype:
            rep["errorType"] = etype
        ev.append((end, DUMPS({"time": iso_ms(end), "type": "platform.report", "record": rep})))
        if status == "timeout":
            fn.containers.remove(cont)
        self.counts["lambda_report_lines"] += 1
        self.counts[f"report_lines:{r.account}:{region}:{fn.name}"] += 1
        if status == "timeout":
            self.counts["lambda_timeouts"] += 1
        elif status == "error":
            self.counts["lambda_errors"] += 1
        self.add_logs(r.account, region, f"/aws/lambda/{fn.name}", cont[3], ev)
        fn.count("Invocations", s)
        if status != "success":
            fn.count("Errors", s)
        fn.point("Duration", s, dur)
        fn.intervals.append((s, end))
        return rid, end

    def case_invoke_event(self, w, p, fn, ts, rid, error=None, event=False):
        """The Invoke data event of an attempt, or None when it is not sampled (by request id, as
        for every function); an asynchronous one names invocationType Event."""
        if int(rid.replace("-", ""), 16) % self.sample:
            return None
        rec = self.invoke_event(w, p, fn.name, ts, rid, None, None, error)
        if event:
            rec["requestParameters"]["invocationType"] = "Event"
        return (ts, rec)

    def case_throttled(self, w, p, fn, ts_ms, reason, recs):
        """A throttled synchronous Invoke: Throttles in the metric stream, and (sampled like the rest)
        a TooManyRequestsException Invoke event whose message names Lambda's reason."""
        fn.count("Throttles", ts_ms)
        rid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        x = self.case_invoke_event(w, p, fn, ts_ms // 1000, rid, error=("TooManyRequestsException", f"Rate Exceeded. (Reason: {reason})"))
        if x:
            recs.append(x)

    def datapoint(self, r, metric, dims, minute, value, unit):
        """One metric-stream datapoint (JSON output format) of `minute`, into the Firehose buffer of
        its arrival: the stream sends it 30-150 s after its minute ends."""
        if minute * 60 < self.end - METRIC_STREAM_DAYS * DAY:
            return  # before the metric stream was set up: keeps the scenario small
        ts = (minute + 1) * 60 + self.rng.randrange(30, 150)
        line = DUMPS({"metric_stream_name": METRIC_STREAM, "account_id": r.account, "region": r.region, "namespace": "AWS/Lambda",
                      "metric_name": metric, "dimensions": dims, "timestamp": minute * 60000, "value": value, "unit": unit})
        self.ms[r.region][ts // WIN].append((ts, line + "\n"))
        self.counts["metric_stream_datapoints"] += 1

    def emit_metrics(self, w, fn):
        """A function's datapoints, one per metric per minute: the counts (Invocations, Errors,
        Throttles, AsyncEventsReceived, AsyncEventsDropped, DestinationDeliveryFailures) only in
        minutes where they are not 0, the distributions (Duration, IteratorAge, AsyncEventAge) in
        minutes with a value, ConcurrentExecutions in minutes with an execution running."""
        r, dims = w["r"], {"FunctionName": fn.name}
        inv = fn.counts.get("Invocations", {})
        for metric in sorted(fn.counts):
            per = fn.counts[metric]
            for m in sorted(per):
                k = per[m]
                if not k:
                    continue
                if metric == "Errors":  # a sample of 0 or 1 per invocation
                    n = max(k, inv.get(m, 0))
                    v = {"max": 1.0, "min": 1.0 if k >= n else 0.0, "sum": float(k), "count": float(n)}
                else:
                    v = {"max": 1.0, "min": 1.0, "sum": float(k), "count": float(k)}
                self.datapoint(r, metric, dims, m, v, "Count")
        for metric in sorted(fn.points):
            per = fn.points[metric]
            for m in sorted(per):
                mx, mn, sm, c = per[m]
                self.datapoint(r, metric, dims, m, {"max": round(mx, 2), "min": round(mn, 2), "sum": round(sm, 2), "count": float(c)},
                               "Milliseconds")
        cs = conc_series(fn.intervals)
        for m in sorted(cs):
            mx, mn, busy = cs[m]
            self.datapoint(r, "ConcurrentExecutions", dims, m,
                           {"max": float(mx), "min": float(mn), "sum": round(busy / 1000, 2), "count": 60.0}, "Count")
        self.case_fns[w["idx"]].append(fn)

    def flush_metrics(self, firehose):
        """The metric-stream datapoints buffered so far, as Firehose objects (5-minute buffers,
        GZIP: newline-delimited JSON), delivered 1-6 minutes after the buffer ends."""
        rng = self.rng
        for region in sorted(self.ms):
            wins = self.ms[region]
            for win in sorted(wins):
                items = wins[win]
                items.sort()
                ots = win * WIN + rng.randrange(0, 25)
                rel = (f"input/metric-stream/{region}/{time.strftime('%Y/%m/%d/%H', time.gmtime(ots))}/"
                       f"{firehose}-1-{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(ots))}-{rng.getrandbits(32):08x}.gz")
                body = "".join(line for _, line in items).encode()
                self.write(rel, gzip.compress(body, compresslevel=6, mtime=0), (win + 1) * WIN + rng.randrange(60, 360))
                self.counts["metric_stream_objects"] += 1
        self.ms = defaultdict(lambda: defaultdict(list))

    def arrivals(self, rng, per_min, prof, region, t_from=None, t_to=None):
        """Arrival times (ms, sorted) at `per_min` a minute at peak on a traffic profile."""
        out = []
        for win in range((t_from or T0) // WIN, (t_to or self.end) // WIN):
            ws = win * WIN
            for _ in range(poisson(rng, per_min * 5 * profile(prof, ws + 150, region))):
                out.append(ws * 1000 + rng.randrange(WIN * 1000))
        out.sort()
        return out

    # --- failure-mode cases -------------------------------------------------------------------
    def case_poison_stream(self, rng):
        """Incident (retry_storm): a Kinesis-triggered function (one shard) is invoked with a batch
        every 30-60 s in busy office hours (ledger entries follow the office profile; at most 5
        minutes apart when quiet), IteratorAge 0.3-2 s (median). A poison record makes every attempt fail for 30-90 minutes: the event source
        mapping retries the batch every 2-6 s, a new request id each attempt, and IteratorAge rises
        one for one with the time. After the fix the backlog drains 4-10x faster than real time.
        Benign: every weekday at about the same local time (10:00-15:59, +-10 min) a settlement
        burst makes IteratorAge climb for 10-20 minutes while every batch succeeds."""
        w = self.case_place(rng)
        r = w["r"]
        fn = CaseFn("ledger-stream-consumer", rng.choice((256, 512, 1024)), 60, (70, 140))
        self.case_setup(w, [fn])
        peak_gap = rng.uniform(30, 60)  # s between batches at peak
        median = rng.uniform(200, 800)  # ms a batch takes
        age_med = rng.uniform(300, 2000)  # ms of IteratorAge, normally
        minutes = rng.randint(30, 90)
        retry_gap = rng.uniform(2, 6)  # s between attempts at the poisoned batch
        fail_ms = rng.uniform(20, 150)
        drain_speed = rng.uniform(4, 10)
        etype, emsg = rng.choice(POISON_ERRORS)
        t = self.case_time(rng, w, range(7), (7, 21), minutes * 60 + 3 * 3600)
        fix = t + minutes * 60
        drain = minutes * 60 / drain_speed
        seq = f"4965{rng.getrandbits(160):048d}"[:56]  # the poisoned record's sequence number
        # Load bursts (benign): the settlement file lands every weekday at about the same local
        # time, and the ledger takes 10-20 minutes to catch up; none within 4 hours of the incident.
        settle = (rng.randint(10, 15) - TZ[r.region]) * 3600 + rng.randrange(3600)
        bursts = []
        for d in range(self.days):
            b0 = T0 + d * DAY + settle + rng.randrange(-600, 601)
            if d % 7 >= 5 or abs(b0 - t) < 4 * 3600:
                continue
            rise = rng.randint(10, 20) * 60
            peak = rise * rng.uniform(0.4, 0.8)  # s of IteratorAge at the top
            fall = rng.randint(3, 8) * 60
            bursts.append((b0, b0 + rise, b0 + rise + fall, peak))
            if b0 >= self.scored_start:
                self.benign.append({"description": f"{fn.name}: the weekday settlement burst; IteratorAge climbs to ~{peak / 60:.0f} min over "
                                                   f"{rise // 60} min and drains in {fall // 60} min while every batch succeeds",
                                    "account_id": r.account, "region": r.region, "subject": fn.name,
                                    "start": iso(b0), "end": iso(b0 + rise + fall)})
        s = T0 * 1000 + rng.randrange(int(peak_gap * 1000))
        attempts = 0
        while s < self.end * 1000:
            ts = s / 1000
            base = rng.lognormvariate(math.log(age_med), 0.5)
            burst = next((b for b in bursts if b[0] <= ts < b[2]), None)
            if t <= ts < fix:
                age = base + (s - t * 1000)
                _, end = self.case_invoke(w, fn, s, rng.lognormvariate(math.log(fail_ms), 0.3), status="error", error=(etype, emsg),
                                          app=("ERROR", f"batch of {rng.randint(20, 400)} records from shardId-000000000000: record {seq} failed"))
                attempts += 1
                gap = retry_gap * rng.uniform(0.7, 1.3)
            elif fix <= ts < fix + drain:
                age = base + (minutes * 60 * 1000) * (1 - (ts - fix) / drain)
                _, end = self.case_invoke(w, fn, s, rng.lognormvariate(math.log(median * 4), 0.3),
                                          app=f"processed {rng.randint(2000, 10000)} records from shardId-000000000000")
                gap = rng.uniform(1, 3)
            elif burst:
                b0, b1, b2, peak = burst
                age = base + 1000 * (peak * (ts - b0) / (b1 - b0) if ts < b1 else peak * (1 - (ts - b1) / (b2 - b1)))
                _, end = self.case_invoke(w, fn, s, rng.lognormvariate(math.log(median * rng.uniform(2, 4)), 0.3),
                                          app=f"processed {rng.randint(1000, 10000)} records from shardId-000000000000")
                gap = rng.uniform(2, 5)
            else:
                age = base
                _, end = self.case_invoke(w, fn, s, rng.lognormvariate(math.log(median), 0.45),
                                          app=f"processed {rng.randint(1, 500)} records from shardId-000000000000" if rng.random() < 0.3 else None)
                gap = min(300.0, peak_gap / profile("office", ts, r.region)) * rng.uniform(0.6, 1.4)
            fn.point("IteratorAge", s, round(age, 1))
            s = end + int(gap * 1000)
        self.emit_metrics(w, fn)
        self.label("retry_storm", w, fn.name, t, fix,
                   f"{fn.name} (Kinesis, one shard): a poison record (sequence {seq[:12]}...) fails every attempt with {etype} for {minutes} min; "
                   f"the event source mapping retries the batch every ~{retry_gap:.0f} s ({attempts} attempts, each a new request id) and "
                   f"IteratorAge climbs one for one to ~{minutes} min, then drains in ~{drain / 60:.0f} min after the fix")
        # Retries every few seconds are many more invocations than the function has at that hour.
        self.incidents[-1]["may_also_raise"] = [{"kind": "concurrency_spike", "subject": fn.name}]

    def case_async_retries(self, rng):
        """Incident (retry_storm): an asynchronously invoked function (S3 and EventBridge, 1-5
        events a minute at peak, office hours) fails every invocation for 20-45 minutes after a
        deploy by the CI role (UpdateFunctionCode20150331v2) on a weekday in office hours, until a
        rollback deploy. Lambda retries each failed event twice under the same request id, ~1
        minute and then ~2 minutes after the attempt before; an event whose three attempts fail is
        dropped (AsyncEventsDropped). Benign: 3-7 times over the 21 days (once in the scored week)
        one request fails once and its retry succeeds."""
        w = self.case_place(rng)
        r, P = w["r"], w["P"]
        fn = CaseFn("invoice-mailer", rng.choice((256, 512)), 30, (60, 120))
        self.case_setup(w, [fn])
        per_min = rng.uniform(1, 5)
        median = rng.uniform(300, 900)
        age_med = rng.uniform(30, 300)  # ms from queueing to the first attempt
        s3_share = rng.uniform(0.3, 0.8)
        minutes = rng.randint(20, 45)
        etype, emsg = rng.choice(MAILER_ERRORS)
        t_dep = self.case_time(rng, w, range(5), (9, 16), minutes * 60 + 3600)
        live = t_dep + rng.randint(20, 60)
        t_rb = live + minutes * 60
        fixed = t_rb + rng.randint(20, 60)
        recs = self.case_deploy(w, fn, t_dep) + self.case_deploy(w, fn, t_rb)
        fn.resets = [live * 1000, fixed * 1000]
        for d in sorted(rng.sample(range(1, 14), 2)):  # ordinary deploys while learning
            td = T0 + d * DAY + (rng.randint(10, 16) - TZ[r.region]) * 3600 + rng.randrange(3600)
            recs += self.case_deploy(w, fn, td)
            fn.resets.append((td + 40) * 1000)
        fn.resets.sort()
        # Transient failures that the first retry fixes (benign), one in the scored week.
        once = sorted([self.scored_start + rng.randrange(7 * DAY)] +
                      [T0 + rng.randrange(self.days * DAY) for _ in range(rng.randint(2, 6))])
        once = [x for x in once if not (t_dep - 3600 < x < fixed + 3600)]
        arr = self.arrivals(rng, per_min, "office", r.region)
        flags, j = set(), 0  # the first event after each transient-failure time
        for x in once:
            while j < len(arr) and arr[j] < x * 1000:
                j += 1
            if j < len(arr):
                flags.add(j)
                j += 1
        # Attempts in time order: (start, event, request id, arrival, attempt, fails once).
        heap = sorted((a + int(rng.lognormvariate(math.log(age_med), 0.8)), i, None, a, 1, i in flags) for i, a in enumerate(arr))
        failing, drops, storm_end = 0, 0, fixed
        once_seen = []
        while heap:
            st, i, rid, a, n, flag = heapq.heappop(heap)
            if st >= self.end * 1000:
                continue
            if n == 1:
                fn.count("AsyncEventsReceived", a)
            fn.point("AsyncEventAge", st, float(st - a))
            bad = live * 1000 <= st < fixed * 1000
            transient = flag and n == 1 and not bad
            if bad:
                rid, end = self.case_invoke(w, fn, st, rng.lognormvariate(math.log(median * 0.3), 0.4), rid, status="error",
                                            error=(etype, emsg))
                failing += 1
                storm_end = max(storm_end, end // 1000)
            elif transient:
                rid, end = self.case_invoke(w, fn, st, rng.lognormvariate(math.log(median * 3), 0.3), rid, status="error",
                                            error=rng.choice(TRANSIENT_ERRORS))
                once_seen.append((a, rid))
            else:
                rid, end = self.case_invoke(w, fn, st, rng.lognormvariate(math.log(median), 0.4), rid,
                                            app=f"invoice INV-{rng.randrange(10**6, 10**7)} mailed to {rng.randint(1, 4)} recipient(s)"
                                            if rng.random() < 0.5 else None)
            if n == 1:
                p = P["svc_s3"] if rng.random() < s3_share else P["svc_events"]
                x = self.case_invoke_event(w, p, fn, a // 1000, rid, event=True)
                if x:
                    recs.append(x)
            if bad or transient:
                if n < 3:
                    delay = rng.uniform(50, 70) if n == 1 else rng.uniform(100, 140)
                    heapq.heappush(heap, (end + int(delay * 1000), i, rid, a, n + 1, flag))
                else:
                    fn.count("AsyncEventsDropped", end)
                    drops += 1
        self.deliver_routed(w, recs)
        self.emit_metrics(w, fn)
        for a, rid in once_seen:
            if a >= self.scored_start * 1000:
                self.benign.append({"description": f"{fn.name}: request {rid} fails once (a transient error) and its retry a minute later succeeds",
                                    "account_id": r.account, "region": r.region, "subject": fn.name,
                                    "start": iso(a // 1000), "end": iso(a // 1000 + 180)})
        self.label("retry_storm", w, fn.name, t_dep, storm_end,
                   f"{fn.name} (asynchronous: S3 and EventBridge): a deploy by the CI role makes every invocation fail with {etype} for "
                   f"{minutes} min until a rollback deploy; Lambda retries each failed event twice under the same request id (~1 min, then "
                   f"~2 min later): {failing} failed attempts, {drops} events dropped after their third")
        if drops:
            self.incidents[-1]["may_also_raise"] = [{"kind": "event_loss", "subject": fn.name}]

    def case_dropped_events(self, rng):
        """Incident (event_loss): an asynchronously invoked function (EventBridge, 1.5-3 events a
        minute at peak) with reserved concurrency 1 or 2 (to spare its partner endpoint) whose
        downstream slows down early on a weekday (04:00-07:59 local): its throughput falls to
        30-45% of the peak rate, events queue, AsyncEventAge climbs towards Lambda's 6-hour
        maximum, and events older than that are dropped (AsyncEventsDropped; also
        DestinationDeliveryFailures when its on-failure destination is misconfigured, half the
        seeds) until the downstream recovers 10-30 minutes after the first drop. While events wait,
        Lambda's retries of them are throttled (Throttles 1-4 a minute). Benign: AsyncEventAge of
        a few seconds every day, no drops."""
        w = self.case_place(rng)
        r, P = w["r"], w["P"]
        R = rng.choice((1, 2))
        fn = CaseFn("webhook-fanout", 256, 300, (60, 110), reserved=R)
        self.case_setup(w, [fn])
        per_min = rng.uniform(1.5, 3.0)
        median = rng.uniform(300, 1200)
        age_med = rng.uniform(800, 3000)
        mu_frac = rng.uniform(0.3, 0.45)
        recover = rng.randint(10, 30) * 60000
        dest_bad = rng.random() < 0.5
        t0 = self.case_time(rng, w, range(5), (4, 7), 20 * 3600)
        arr = self.arrivals(rng, per_min, "traffic", r.region)
        lat = [int(rng.lognormvariate(math.log(age_med), 0.6)) for _ in arr]
        fast = [rng.lognormvariate(math.log(median), 0.5) for _ in arr]
        unit = [rng.lognormvariate(0, 0.2) for _ in arr]
        jit = [rng.randrange(60000) for _ in arr]
        MAX_AGE = 6 * 3600 * 1000
        slow_mean = 60000 * R / (per_min * mu_frac)
        while True:  # the queue, first-in first-out over R slots; slower until it drops events
            slots, prev, t_rec, plan = [0] * R, 0, None, []
            for i, a in enumerate(arr):
                k = min(range(R), key=slots.__getitem__)
                st = max(a + lat[i], slots[k], prev)
                if st - a > MAX_AGE:
                    drop = a + MAX_AGE + jit[i]
                    if t_rec is None:
                        t_rec = drop + recover
                    plan.append((i, None, drop))
                    continue
                slow = st >= t0 * 1000 and (t_rec is None or st < t_rec)
                dur = min(fn.timeout_s * 1000 - 5000, slow_mean * unit[i]) if slow else fast[i]
                slots[k] = st + int(dur) + 1000
                prev = st
                plan.append((i, st, dur))
            if t_rec is not None:
                break
            slow_mean *= 1.25
        recs, drops, first_drop, last_drop, max_age = [], 0, None, None, 0
        waiting = set()
        for i, st, dur in plan:
            a = arr[i]
            fn.count("AsyncEventsReceived", a)
            rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            x = self.case_invoke_event(w, P["svc_events"], fn, a // 1000, rid, event=True)
            if x:
                recs.append(x)
            if st is None:
                fn.count("AsyncEventsDropped", dur)
                if dest_bad:
                    fn.count("DestinationDeliveryFailures", dur + rng.randrange(1000, 20000))
                drops += 1
                first_drop = dur if first_drop is None else min(first_drop, dur)
                last_drop = dur if last_drop is None else max(last_drop, dur)
                ready, st_w = a + lat[i], dur
            else:
                self.case_invoke(w, fn, st, dur, rid, app=f"delivered event {rid[:8]} to {rng.randint(2, 6)} webhook subscribers"
                                 if rng.random() < 0.4 else None)
                fn.point("AsyncEventAge", st, float(st - a))
                max_age = max(max_age, st - a)
                ready, st_w = a + lat[i], st
            if st_w - ready > 10000:  # it waited for a slot: Lambda's attempts meanwhile were throttled
                waiting.update(range(ready // 60000, st_w // 60000 + 1))
        for m in sorted(waiting):
            fn.count("Throttles", m * 60000, rng.randint(1, 4))
        self.deliver_routed(w, recs)
        self.emit_metrics(w, fn)
        self.benign.append({"description": f"{fn.name}: AsyncEventAge of a few seconds every day, no events dropped",
                            "account_id": r.account, "region": r.region, "subject": fn.name,
                            "start": iso(self.scored_start), "end": iso(self.end)})
        self.label("event_loss", w, fn.name, t0, last_drop // 1000 + 60,
                   f"{fn.name} (asynchronous, reserved concurrency {R}): its downstream slows from {iso(t0)}; events queue, AsyncEventAge "
                   f"climbs to {max_age / 3600000:.1f} h and {drops} events older than 6 h are dropped from {iso(first_drop // 1000)} to "
                   f"{iso(last_drop // 1000)}" + (" (its on-failure destination is misconfigured: DestinationDeliveryFailures)" if dest_bad else ""))
        self.incidents[-1]["drops_start"] = iso(first_drop // 1000)
        self.incidents[-1]["may_also_raise"] = [{"kind": "throttling", "subject": fn.name}, {"kind": "concurrency_spike", "subject": fn.name}]

    def case_noisy_neighbour(self, rng):
        """Incident (noisy_neighbour): a function without reserved concurrency (`bulk-import`, 2-6
        invocations an hour) floods on a weekday in office hours: a distributed map of 1020-1150
        workers invokes it for 10-25 minutes, 2-3 minutes an invocation, so it holds nearly all of
        the account's 1000 and the 2-3 steady API functions (0.8-2 calls a minute at peak each, by
        the `storefront-api` role) are throttled: TooManyRequestsException with Reason
        ConcurrentInvocationLimitExceeded. Benign: `nightly-compactor`, reserved concurrency 5,
        throttles itself a little every night by design (Reason
        ReservedFunctionConcurrentInvocationLimitExceeded). Also writes the account-level
        ConcurrentExecutions and ClaimedAccountConcurrency of the account-region: the case
        functions there plus a background of 15-50 (at peak) for the functions that stream no
        metrics."""
        w = self.case_place(rng)
        r, P = w["r"], w["P"]
        ua = UA_BOTO.format(*(rng.randrange(30, 50),) * 3)
        orch = Principal("AssumedRole", r.account, "import-orchestrator", ua, P["app"].ips, session="sfn-distributed-map")
        front = Principal("AssumedRole", r.account, "storefront-api", UA_NODE, P["app"].ips,
                          session=f"ecs-task-{h('sf', r.account, r.region, n=32, alphabet='0123456789abcdef')}")
        sched = Principal("AssumedRole", r.account, "data-platform-scheduler", ua, P["app"].ips[:1], session="airflow-worker")
        culprit = CaseFn("bulk-import", rng.choice((1024, 2048)), 900, (300, 900))
        victims = [CaseFn(name, rng.choice((512, 1024)), 10, (90, 160)) for name in ("checkout-api", "search-api", "pricing-api")[:rng.randint(2, 3)]]
        comp = CaseFn("nightly-compactor", 2048, 900, (700, 1500), reserved=5)
        self.case_setup(w, [culprit] + victims + [comp])
        c_rate = rng.uniform(2, 6)  # an hour
        c_median = rng.uniform(20, 90) * 1000
        v_rate = [rng.uniform(0.8, 2) for _ in victims]
        v_median = [rng.uniform(60, 250) for _ in victims]
        workers = rng.randint(1020, 1150)
        minutes = rng.randint(10, 25)
        t = self.case_time(rng, w, range(5), (9, 16), minutes * 60 + 3600)
        flood_end = (t + minutes * 60) * 1000
        base = rng.uniform(15, 50)  # background concurrency at peak
        c_hour = rng.choice((0, 1, 3, 4))
        jobs = rng.randint(15, 30)
        threads = rng.randint(6, 7)
        comp_median = rng.uniform(40, 120) * 1000
        # Background concurrency per minute: (mean, max, min).
        m0, m1 = T0 // 60, self.end // 60
        bg = []
        for m in range(m0, m1):
            mean = base * profile("traffic", m * 60 + 30, r.region) * rng.uniform(0.85, 1.15)
            bg.append((mean, math.ceil(mean * rng.uniform(1.1, 1.35)), int(mean * rng.uniform(0.6, 0.9))))
        others = self.case_fns[w["idx"]]
        reserved = comp.reserved + sum(f.reserved or 0 for f in others)
        held = conc_series([iv for f in others if f.reserved is None for iv in f.intervals])

        def cap(ms):
            m = ms // 60000
            b = bg[m - m0][1] if m0 <= m < m1 else 0
            return LIMIT - reserved - b - held.get(m, (0,))[0]

        recs = []
        # Steady traffic and the culprit's few calls an hour, then the flood: one pass in time order.
        att = []
        for k, fn in enumerate(victims):
            att += [(x, 1 + k) for x in self.arrivals(rng, v_rate[k], "traffic", r.region)]
        att += [(x, 0) for x in self.arrivals(rng, c_rate / 60, "flat", r.region) if not (t * 1000 - 600000 <= x < flood_end + 600000)]
        att.sort()
        flood = [(t * 1000 + rng.randrange(60000), -1 - k, 0) for k in range(workers)]
        heapq.heapify(flood)
        running = []  # ends of the executions holding unreserved concurrency (this case's)
        i, starts, c_throttles, v_throttles, last_end = 0, 0, 0, [0] * len(victims), 0
        while i < len(att) or flood:
            if flood and (i >= len(att) or flood[0][0] < att[i][0]):
                x, worker, k = heapq.heappop(flood)
                who = 0
            else:
                x, who = att[i]
                i += 1
                worker = None
            while running and running[0] <= x:
                heapq.heappop(running)
            fn = culprit if who == 0 else victims[who - 1]
            caller = front if who else orch
            if len(running) >= cap(x):
                self.case_throttled(w, caller, fn, x, "ConcurrentInvocationLimitExceeded", recs)
                if who:
                    v_throttles[who - 1] += 1
                else:
                    c_throttles += 1
                if worker is not None:
                    nxt = x + int(min(60.0, 2.0 * 2 ** k) * rng.uniform(0.5, 1.5) * 1000)
                    if nxt < flood_end:
                        heapq.heappush(flood, (nxt, worker, k + 1))
                continue
            if worker is not None:
                dur = rng.uniform(120, 180) * 1000
                app = f"imported part {rng.randrange(10**5):05d} of partner feed: {rng.randint(5000, 40000)} rows"
            elif who:
                dur = rng.lognormvariate(math.log(v_median[who - 1]), 0.5)
                app = None
            else:
                dur = rng.lognormvariate(math.log(c_median), 0.5)
                app = f"imported {rng.randint(100, 5000)} rows"
            rid, end = self.case_invoke(w, fn, x, dur, app=app)
            heapq.heappush(running, end)
            ev = self.case_invoke_event(w, caller, fn, x // 1000, rid)
            if ev:
                recs.append(ev)
            if worker is not None:
                starts += 1
                last_end = max(last_end, end)
                nxt = end + rng.randrange(20, 300)  # the map's next item, at once
                if nxt < flood_end:
                    heapq.heappush(flood, (nxt, worker, 0))
        # The compactor: `threads` client threads share the night's jobs against its reserved 5.
        for d in range(self.days):
            n_jobs = max(1, jobs + rng.randint(-3, 3))
            q = [(((T0 + d * DAY + c_hour * 3600) * 1000 + rng.randrange(120000)), k) for k in range(threads)]
            heapq.heapify(q)
            busy, throttled, first = [], 0, None
            while q and n_jobs > 0:
                x, k = heapq.heappop(q)
                while busy and busy[0] <= x:
                    heapq.heappop(busy)
                if len(busy) >= comp.reserved:
                    self.case_throttled(w, sched, comp, x, "ReservedFunctionConcurrentInvocationLimitExceeded", recs)
                    throttled += 1
                    heapq.heappush(q, (x + int(rng.uniform(30, 90) * 1000), k))
                    continue
                n_jobs -= 1
                rid, end = self.case_invoke(w, comp, x, rng.lognormvariate(math.log(comp_median), 0.4),
                                            app=f"compacted partition dt={iso(x // 1000)[:10]}/part={rng.randrange(64):02d}")
                first = x if first is None else first
                heapq.heappush(busy, end)
                ev = self.case_invoke_event(w, sched, comp, x // 1000, rid)
                if ev:
                    recs.append(ev)
                heapq.heappush(q, (end + rng.randrange(100, 1500), k))
            if d >= 14 and first is not None:
                t_n = T0 + d * DAY + c_hour * 3600
                self.benign.append({"description": f"nightly-compactor (reserved concurrency 5) runs {threads} client threads: "
                                                   f"{throttled} throttles by design (ReservedFunctionConcurrentInvocationLimitExceeded)",
                                    "account_id": r.account, "region": r.region, "subject": comp.name,
                                    "start": iso(t_n), "end": iso(t_n + 3600)})
        self.deliver_routed(w, recs)
        for fn in [culprit] + victims + [comp]:
            self.emit_metrics(w, fn)
        # Account-level datapoints: every case function of the account-region plus the background.
        fns = self.case_fns[w["idx"]]
        every = conc_series([iv for f in fns for iv in f.intervals])
        unres = conc_series([iv for f in fns if f.reserved is None for iv in f.intervals])
        res_all = sum(f.reserved or 0 for f in fns)
        peak_acct = 0
        for m in range(m0, m1):
            mean, bmax, bmin = bg[m - m0]
            a, u = every.get(m, (0, 0, 0)), unres.get(m, (0, 0, 0))
            # Maxima of the parts need not coincide: the account's own never exceeds its limit.
            c_max, c_min = min(LIMIT, a[0] + bmax), min(LIMIT, a[1] + bmin)
            k_max, k_min = min(LIMIT, u[0] + bmax + res_all), min(LIMIT, u[1] + bmin + res_all)
            self.datapoint(r, "ConcurrentExecutions", {}, m, {"max": float(c_max), "min": float(c_min),
                                                              "sum": round(min(LIMIT * 60, a[2] / 1000 + mean * 60), 2), "count": 60.0}, "Count")
            self.datapoint(r, "ClaimedAccountConcurrency", {}, m, {"max": float(k_max), "min": float(k_min),
                                                                   "sum": round(min(LIMIT * 60, u[2] / 1000 + (mean + res_all) * 60), 2),
                                                                   "count": 60.0}, "Count")
            if t // 60 <= m < flood_end // 60000:
                peak_acct = max(peak_acct, k_max)
        hit = [v.name for v, n in zip(victims, v_throttles) if n]
        peak_c = max((cs[0] for m, cs in conc_series(culprit.intervals).items() if t // 60 <= m < flood_end // 60000), default=0)
        self.label("noisy_neighbour", w, culprit.name, t, last_end // 1000,
                   f"{culprit.name} (no reserved concurrency) floods: {workers} workers for {minutes} min, {starts} invocations of 2-3 min, "
                   f"~{peak_c} concurrent, ClaimedAccountConcurrency up to {peak_acct} of {LIMIT}; throttled: "
                   + ", ".join(f"{v.name} {n}" for v, n in zip(victims, v_throttles)) + f", and {culprit.name} itself {c_throttles} "
                   "(TooManyRequestsException, Reason ConcurrentInvocationLimitExceeded)")
        inc = self.incidents[-1]
        inc["victims"] = hit
        # Besides the culprit's spike and the throttles: the orchestrator's burst of Invoke calls.
        inc["may_also_raise"] = ([{"kind": "concurrency_spike", "subject": culprit.name}]
                                 + ([{"kind": "throttling", "subject": culprit.name}] if c_throttles else [])
                                 + [{"kind": "throttling", "subject": v} for v in hit]
                                 + [{"kind": "api_call_rate", "subject": orch.label_arn},
                                    {"kind": "api_call_rate", "subject": "lambda.amazonaws.com:Invoke"}])

    # --- forged event time (--forge-future) ---------------------------------------------------
    def forge_future(self, n):
        """N CloudTrail files, delivered at ordinary times in the ordinary layout, whose records claim
        an event time ahead of their delivery: in 2099 (same day and time of year), or 3 hours or a day
        after delivery. They go to the scenario's account-regions and to STRANGER_ACCOUNT (in the first
        region), which appears nowhere else. A random stream of their own keeps the rest of the output
        what the seed writes without them. Returns the labels and counts."""
        rng = random.Random(f"forge-future:{self.seed}")
        stranger = Region(STRANGER_ACCOUNT, self.world[0]["r"].region)
        sp = Principal("AssumedRole", STRANGER_ACCOUNT, "app-backend", UA_JAVA.format(21), ["198.18.7.21"], session="ecs-task-forged")
        targets = [(stranger, [sp])] + [(w["r"], [w["P"]["monitor"], w["P"]["autoscaler"], w["P"]["app"]]) for w in self.world]
        apis = {"monitoring-readonly": ["ListBuckets", "DescribeTable", "DescribeInstances", "DescribeKey"],
                "k8s-node-autoscaler": ["DescribeInstances", "DescribeSubnets"], "app-backend": ["Decrypt", "DescribeTable", "GetObject"]}
        labels, counts = [], {"files": 0, "records": 0, "bytes": 0}
        for i in range(n):
            r, principals = targets[i % len(targets)]
            claim = FORGE_CLAIMS[i % len(FORGE_CLAIMS)]
            day = min(self.days - 1, int((i + 0.5) * self.days / n))  # spread over the days
            win = (T0 + day * DAY) // WIN + rng.randrange(DAY // WIN)
            fts = (win + 1) * WIN
            delivered = fts + rng.randrange(60, 180)
            if claim == "2099":
                g = time.gmtime(fts)
                base = calendar.timegm((FORGED_YEAR, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec))
            else:
                base = delivered + (3 * 3600 if claim == "+3h" else DAY)
            recs = []
            for _ in range(rng.randrange(3, 7)):
                p = principals[rng.randrange(len(principals))]
                ts = base + rng.randrange(0, 240)
                recs.append((ts, record(rng, r, p, rng.choice(apis[p.name]), ts)))
            recs.sort(key=lambda x: x[0])
            stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(fts))
            while True:
                rel = (f"input/AWSLogs/{ORG}/{r.account}/CloudTrail/{r.region}/{time.strftime('%Y/%m/%d', time.gmtime(fts))}/"
                       f"{r.account}_CloudTrail_{r.region}_{stamp}_{''.join(rng.choice(ALNUM) for _ in range(16))}.json.gz")
                if not (self.out / rel).exists():
                    break
            body = '{"Records":[' + ",".join(DUMPS(x) for _, x in recs) + "]}"
            data = gzip.compress(body.encode(), compresslevel=6, mtime=0)
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.deliveries.append((delivered, rel))
            counts["files"] += 1
            counts["records"] += len(recs)
            counts["bytes"] += len(data)
            labels.append({"id": f"forged-{i + 1:02d}-{claim.lstrip('+')}", "claims": claim, "account_id": r.account, "region": r.region,
                           "path": rel, "delivered": iso(delivered), "records": len(recs),
                           "event_time_first": iso(recs[0][0]), "event_time_last": iso(recs[-1][0]),
                           # Only 2099 is ahead of any real processing clock; the others are in the past by now.
                           "expect_finding": claim == "2099",
                           "description": f"forged CloudTrail file: {len(recs)} records claiming {claim} "
                                          f"({'the same day and time in ' + str(FORGED_YEAR) if claim == '2099' else 'after delivery'})"})
        labels.sort(key=lambda x: (x["delivered"], x["id"]))
        return {"labels": labels, "counts": counts}

    def write(self, rel, data, delivered):
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.deliveries.append((delivered, rel))
        self.counts["bytes"] += len(data)

    def run(self):
        self.plan()
        for d in range(self.days):
            for w in self.world:
                self.gen_day(w, d)
            self.flush((T0 + (d + 1) * DAY) // WIN - 2)
        self.flush(1 << 62)
        for case in CASES:
            with self.own_stream(case) as rng:
                getattr(self, "case_" + case.replace("-", "_"))(rng)
        forged = self.forge_future(self.forge) if self.forge else None
        self.deliveries.sort()
        with open(self.out / "deliveries.tsv", "w") as f:
            for t, rel in self.deliveries:
                f.write(f"{iso(t)}\t{rel}\n")
        labels = {"start": iso(T0), "learn_days": 14, "scored_start": iso(self.scored_start), "end": iso(self.end),
                  "variant": "small" if self.small else "full", "seed": self.seed,
                  "accounts": sorted({w["r"].account for w in self.world}), "regions": sorted({w["r"].region for w in self.world}),
                  "invoke_sample_one_in": self.sample,
                  "incidents": sorted(self.incidents, key=lambda x: x["start"]),
                  "benign": sorted(self.benign, key=lambda x: (x["start"], x["account_id"], x["region"]))}
        if forged:
            labels["forged"] = forged["labels"]
        (self.out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
        c = self.counts
        manifest = {"cloudtrail_records": c["cloudtrail_records"], "cloudtrail_distinct_event_ids": self.event_ids,
                    "cloudtrail_duplicates": c["cloudtrail_duplicates"], "cloudtrail_files": c["cloudtrail_files"],
                    "lambda_report_lines": c["lambda_report_lines"], "lambda_timeouts": c["lambda_timeouts"],
                    "lambda_errors": c["lambda_errors"],
                    "lambda_log_events": c["lambda_log_events"], "firehose_objects": c["firehose_objects"],
                    "firehose_payloads": c["firehose_payloads"],
                    "metric_stream_objects": c["metric_stream_objects"], "metric_stream_datapoints": c["metric_stream_datapoints"],
                    "files": c["cloudtrail_files"] + c["firehose_objects"] + c["metric_stream_objects"],
                    "bytes": c["bytes"],
                    "report_lines_by_function": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("report_lines:")}}
        if forged:
            # The counts above are the scenario's own; the forged files are counted apart.
            manifest["forged"] = forged["counts"]
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--small", action="store_true", help="1 account x 1 region, sized for CI")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=21, help="at least 21: 14 to learn, 7 scored")
    ap.add_argument("--forge-future", type=int, default=0, metavar="N",
                    help="also write N CloudTrail files whose records claim a future event time (labels.json: forged)")
    a = ap.parse_args()
    if a.days < 21:
        ap.error("--days must be at least 21 (14 days to learn, then the scored week)")
    if a.forge_future < 0:
        ap.error("--forge-future must not be negative")
    out = Path(a.out)
    if (out / "input").exists() and any((out / "input").iterdir()):
        ap.error(f"{out}/input is not empty")
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    m = Scenario(out, a.small, a.seed, a.days, forge=a.forge_future).run()
    print(json.dumps({k: v for k, v in m.items() if k != "report_lines_by_function"}), file=sys.stdout)
    print(f"generated in {time.time() - t:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
