"""The Athena side of the stack is checked without AWS: the DDL `trailwatch schema --athena`
prints parses as Athena SQL with the columns `schema --glue-json` gives the stack's Glue tables
and a location template that is the lake's layout; the stack's Glue tables project the same
partitions as the DDL; and the stack's named queries (infra/queries/*.sql), read by sqlglot as
Athena SQL and run by DuckDB, find what they promise in a lake the real pipeline (`trailwatch
ingest`, then `trailwatch detect`) wrote from CloudTrail and CloudWatch deliveries dated
relative to now, as the queries look at the last 24 hours."""

import base64
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import sqlglot
import yaml
from sqlglot import exp

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
TEMPLATE = ROOT / "infra/template.yaml"
QUERIES = ROOT / "infra/queries"
TABLES = ["cloudtrail", "lambda_invocations", "lambda_metrics", "findings"]
GLUE_TABLES = {"CloudtrailTable": "cloudtrail", "LambdaInvocationsTable": "lambda_invocations",
               "LambdaMetricsTable": "lambda_metrics", "FindingsTable": "findings"}
PARTITIONS = ["account_id", "region", "date"]
ACCOUNT, REGION = "111122223333", "eu-west-1"
S3_LAKE = "s3://bucket/prefix"


def trailwatch(*args):
    out = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, f"trailwatch {' '.join(map(str, args))}: {out.stderr}"
    return out.stdout


# ------------------------------------------------------------------------------------ the DDL


def ddl():
    """{table: the parsed CREATE EXTERNAL TABLE} of `schema --athena`."""
    text = trailwatch("schema", "--athena", "--lake", S3_LAKE, "--account", ACCOUNT, "--region", REGION)
    # The athena dialect parses DDL with its Hive parser (Athena's DDL is Hive's), so no fallback
    # to "hive" is needed. sqlglot does not raise on what it cannot read: it falls back to an opaque
    # exp.Command, so the statement types are checked below.
    stmts = sqlglot.parse(text, read="athena")
    assert len(stmts) == 1 + len(TABLES), text
    assert isinstance(stmts[0], exp.Create) and stmts[0].kind == "DATABASE", stmts[0]
    out = {}
    for s in stmts[1:]:
        assert isinstance(s, exp.Create) and s.kind == "TABLE", f"not read as CREATE TABLE: {s.sql()[:200]}"
        table = s.this.this
        assert table.db == "trailwatch", table.sql()
        out[table.name] = s
    assert sorted(out) == sorted(TABLES)
    return out


def tblproperties(create):
    props = create.args["properties"].expressions
    return {p.name: p.text("value") for p in props if type(p) is exp.Property}


def partition_columns(create):
    (pb,) = [p for p in create.args["properties"].expressions if isinstance(p, exp.PartitionedByProperty)]
    return [(c.name, c.args["kind"]) for c in pb.this.expressions]


def location(create):
    (loc,) = [p for p in create.args["properties"].expressions if isinstance(p, exp.LocationProperty)]
    return loc.this.name


def test_ddl_parses_as_athena_with_the_glue_columns_and_the_lake_layout(lake):
    glue = json.loads(trailwatch("schema", "--glue-json"))
    assert sorted(glue) == sorted(TABLES)
    string = exp.DataType.build("string", dialect="hive")
    for table, create in ddl().items():
        assert create.args.get("exists"), f"{table}: not IF NOT EXISTS"
        assert any(isinstance(p, exp.ExternalProperty) for p in create.args["properties"].expressions), table
        fmt = [p for p in create.args["properties"].expressions if isinstance(p, exp.FileFormatProperty)]
        assert [f.this.name.upper() for f in fmt] == ["PARQUET"], table
        cols = [(c.name, c.args["kind"]) for c in create.this.expressions]
        want = [(c["Name"], exp.DataType.build(c["Type"], dialect="hive")) for c in glue[table]]
        assert [n for n, _ in cols] == [n for n, _ in want], table
        for (name, got), (_, typ) in zip(cols, want):
            assert got == typ, f"{table}.{name}: DDL {got.sql('hive')} != Glue {typ.sql('hive')}"
        assert partition_columns(create) == [(p, string) for p in PARTITIONS], table

        props = tblproperties(create)
        assert location(create) == f"{S3_LAKE}/{table}/"
        template = props["storage.location.template"]
        assert template == f"{S3_LAKE}/{table}/account_id=${{account_id}}/region=${{region}}/date=${{date}}"
        assert props["projection.enabled"] == "true"
        assert props["projection.account_id.values"].split(",") == [ACCOUNT, "unknown"]
        assert props["projection.region.values"].split(",") == [REGION, "unknown"]
        assert props["projection.date.format"] == "yyyy-MM-dd"
        # Every file the pipeline wrote sits where the projection looks: the template, with the
        # S3 lake swapped for the local one, matches its folder, and the values are projected.
        files = list((lake / table).rglob("*.parquet"))
        assert files, f"the pipeline wrote no {table}"
        pattern = re.escape(template.replace(S3_LAKE, str(lake)))
        for p in PARTITIONS:
            pattern = pattern.replace(re.escape(f"${{{p}}}"), f"(?P<{p}>[^/=]+)")
        for f in files:
            m = re.fullmatch(pattern, str(f.parent))
            assert m, f"{f} is not under {template}"
            assert m["account_id"] in props["projection.account_id.values"].split(","), f
            assert m["region"] in props["projection.region.values"].split(","), f
            datetime.strptime(m["date"], "%Y-%m-%d")


# ------------------------------------------------------------------------------ the template


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) as {"Ref": v} / {"Fn::X": v}."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _tagged)


def template():
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def test_sync_check_passes():
    out = subprocess.run([sys.executable, str(ROOT / "infra/sync.py"), "--check"], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, TRAILWATCH_BIN=BIN))
    assert out.returncode == 0, out.stderr + out.stdout


def test_glue_tables_project_the_partitions_of_the_ddl():
    resources = template()["Resources"]
    glue = {k: v for k, v in resources.items() if v["Type"] == "AWS::Glue::Table"}
    assert sorted(glue) == sorted(GLUE_TABLES)
    creates = ddl()
    for logical, table in GLUE_TABLES.items():
        ti = glue[logical]["Properties"]["TableInput"]
        assert ti["Name"] == table
        assert ti["TableType"] == "EXTERNAL_TABLE"
        assert ti["PartitionKeys"] == [{"Name": p, "Type": "string"} for p in PARTITIONS], table
        params = ti["Parameters"]
        props = tblproperties(creates[table])
        projected = lambda d: {k for k in d if k.startswith("projection.") or k == "storage.location.template"}
        assert projected(params) == projected(props), f"{logical}: {projected(params) ^ projected(props)}"
        for k in projected(props):
            if isinstance(params[k], str):  # not computed by a CloudFormation function
                assert params[k] == props[k], f"{logical}.{k}: {params[k]!r} != DDL {props[k]!r}"
        loc = ti["StorageDescriptor"]["Location"]
        tmpl = params["storage.location.template"]
        assert set(loc) == {"Fn::Sub"} and set(tmpl) == {"Fn::Sub"}, (loc, tmpl)
        # ${!x} is !Sub's escape for a literal ${x}, which Athena fills in from the projection.
        assert re.fullmatch(rf"s3://[^/]+(/[^/]+)*/{table}/", loc["Fn::Sub"]), loc
        assert tmpl["Fn::Sub"] == loc["Fn::Sub"] + "account_id=${!account_id}/region=${!region}/date=${!date}", tmpl


def test_named_queries_are_the_query_files():
    resources = template()["Resources"]
    named = [v["Properties"] for v in resources.values() if v["Type"] == "AWS::Athena::NamedQuery"]
    files = {q.stem: q.read_text() for q in QUERIES.glob("*.sql")}
    assert len(named) == len(files) == 6, (len(named), sorted(files))
    assert sorted(q["QueryString"] for q in named) == sorted(files.values())


# ------------------------------------------------------------------------ the named queries

NOW = int(time.time())
HOUR, DAY = 3600, 86400
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
OLD_ROLE = f"arn:aws:iam::{ACCOUNT}:role/orders-api"
NEW_ROLE = f"arn:aws:iam::{ACCOUNT}:role/intruder"
PROBER = f"arn:aws:iam::{ACCOUNT}:user/prober"
# (eventSource, eventName, errorCode) of the prober's denied calls: 6 calls, 4 APIs.
DENIED = [("s3.amazonaws.com", "ListBuckets", "AccessDenied"),
          ("s3.amazonaws.com", "ListBuckets", "AccessDenied"),
          ("iam.amazonaws.com", "ListUsers", "AccessDenied"),
          ("ec2.amazonaws.com", "DescribeInstances", "Client.UnauthorizedOperation"),
          ("secretsmanager.amazonaws.com", "GetSecretValue", "AccessDeniedException"),
          ("secretsmanager.amazonaws.com", "GetSecretValue", "AccessDeniedException")]
WIN = 300
SPIKE_WINDOW = (NOW // WIN - 7) * WIN  # a whole 5-minute window, 35 minutes or less ago
METRICS = {"Throttles": 19.0, "Invocations": 240.0, "Errors": 3.0}
PEAK = 50.0  # the function's peak concurrency


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def role_identity(role_arn, session):
    name = role_arn.rsplit("/", 1)[1]
    return {"type": "AssumedRole", "principalId": f"AROAEXAMPLE{name.upper()}:{session}",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{session}", "accountId": ACCOUNT,
            "accessKeyId": "ASIAEXAMPLE" + name.upper(),
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": f"AROAEXAMPLE{name.upper()}",
                                                 "arn": role_arn, "accountId": ACCOUNT, "userName": name},
                               "webIdFederationData": {},
                               "attributes": {"creationDate": iso(NOW - 2 * HOUR), "mfaAuthenticated": "false"}}}


def user_identity(user_arn):
    name = user_arn.rsplit("/", 1)[1]
    return {"type": "IAMUser", "principalId": "AIDAEXAMPLE" + name.upper(), "arn": user_arn, "accountId": ACCOUNT,
            "accessKeyId": "AKIAEXAMPLE" + name.upper(), "userName": name}


def ct_record(ts, identity, source, name, params=None, error=None, management=True):
    rec = {"eventVersion": "1.09", "userIdentity": identity, "eventTime": iso(ts), "eventSource": source,
           "eventName": name, "awsRegion": REGION, "sourceIPAddress": "203.0.113.7",
           "userAgent": "Boto3/1.34.0 md/Botocore#1.34.0", "requestParameters": params, "responseElements": None,
           "requestID": str(uuid.uuid4()), "eventID": str(uuid.uuid4()), "readOnly": name.startswith(("List", "Describe", "Get")),
           "eventType": "AwsApiCall", "managementEvent": management, "recipientAccountId": ACCOUNT,
           "eventCategory": "Management" if management else "Data"}
    if error:
        rec["errorCode"], rec["errorMessage"] = error, f"User is not authorized to perform: {name}"
    return rec


def invoke(ts, identity, function=FUNCTION_ARN):
    return ct_record(ts, identity, "lambda.amazonaws.com", "Invoke", {"functionName": function}, management=False)


def write_trail(root, ts, records):
    t = time.gmtime(ts)
    key = (f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{time.strftime('%Y/%m/%d', t)}/"
           f"{ACCOUNT}_CloudTrail_{REGION}_{time.strftime('%Y%m%dT%H%MZ', t)}_{uuid.uuid4().hex[:16]}.json.gz")
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))


def report_lines():
    """(timestamp ms, REPORT line) of `orders` over the last 3 hours: 3 invocations a 5-minute window,
    200 ms billed at 1024 MB, and 10 times that in SPIKE_WINDOW."""
    lines = []
    for w in range(NOW // WIN - 36, NOW // WIN):
        for i in range(3):
            billed = 2000 if w * WIN == SPIKE_WINDOW else 200
            end_ms = (w * WIN + 30 + 60 * i) * 1000 + billed
            rid = str(uuid.UUID(int=w * 10 + i))
            lines.append((end_ms, f"REPORT RequestId: {rid}\tDuration: {billed - 0.5:.2f} ms\tBilled Duration: {billed} ms\t"
                                  f"Memory Size: 1024 MB\tMax Memory Used: 90 MB\t\n"))
    return lines


def retried_lines():
    """(timestamp ms, REPORT line) of `mailer`: 4 requests run once; 2 retried by Lambda under the
    same request id, failing twice and then succeeding, and one of those attempts delivered twice."""
    lines, slot = [], 0
    for r in range(6):
        rid = str(uuid.UUID(int=1000 + r))
        tries = 3 if r < 2 else 1
        for k in range(tries):
            # One attempt a 5-minute window: the same cost in each, no spike for cost_of_a_spike.
            end_ms = (NOW - HOUR + WIN * slot + 30) * 1000
            slot += 1
            status = "\tStatus: error\tError Type: Runtime.ExitError" if k < tries - 1 else ""
            lines.append((end_ms, f"REPORT RequestId: {rid}\tDuration: 199.50 ms\tBilled Duration: 200 ms\t"
                                  f"Memory Size: 512 MB\tMax Memory Used: 60 MB{status}\t\n"))
    return lines + [lines[1]]


def write_subscription_event(path, group="/aws/lambda/orders", lines=None):
    """A Lambda subscription event from CloudWatch Logs: it names no region (ingest --region does)."""
    lines = report_lines() if lines is None else lines
    # A line delivered twice keeps its event id, as a redelivered log event does.
    events = [{"id": f"{ms:020d}{int(hashlib.sha1(msg.encode()).hexdigest(), 16) % 10**36:036d}", "timestamp": ms,
               "message": msg} for ms, msg in lines]
    payload = {"messageType": "DATA_MESSAGE", "owner": ACCOUNT, "logGroup": group,
               "logStream": f"{time.strftime('%Y/%m/%d', time.gmtime(NOW))}/[$LATEST]0a1b2c3d4e5f60718293a4b5c6d7e8f9",
               "subscriptionFilters": ["trailwatch"], "logEvents": events}
    data = base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"awslogs": {"data": data}}))


def write_metric_stream(root):
    """A metric stream's Firehose object: JSON datapoints a line, gzipped."""
    ts = (NOW // 60 - 10) * 60
    t = time.gmtime(ts)
    path = root / time.strftime("%Y/%m/%d/%H", t) / f"trailwatch-metrics-1-{time.strftime('%Y-%m-%d-%H-%M-%S', t)}-1a2b3c4d.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    def point(metric, dims, t, s, peak=None):
        return {"metric_stream_name": "trailwatch", "account_id": ACCOUNT, "region": REGION, "namespace": "AWS/Lambda",
                "metric_name": metric, "dimensions": dims, "timestamp": t * 1000,
                "value": {"max": s if peak is None else peak, "min": 0.0, "sum": s, "count": 60.0}, "unit": "Count"}

    points = []
    # orders is invoked through its alias `live`, so Lambda publishes each of its datapoints again
    # per alias (Resource) and per version (ExecutedVersion): the same calls, not more of them.
    # payments is never throttled.
    for fn, dims_sets, scale in (
        ("orders", [{}, {"Resource": "orders:live"}, {"Resource": "orders:live", "ExecutedVersion": "7"}], 1.0),
        ("payments", [{}], 0.0),
    ):
        for extra in dims_sets:
            dims = {"FunctionName": fn, **extra}
            for minute in range(3):
                t = ts + 60 * minute
                for metric, total in METRICS.items():
                    points.append(point(metric, dims, t, total / 3 * (scale if metric == "Throttles" else 1.0)))
                points.append(point("ConcurrentExecutions", dims, t, 30.0 * 60, PEAK - minute))
    # Account-level datapoints carry no dimensions at all.
    for metric in ("ConcurrentExecutions", "UnreservedConcurrentExecutions", "ClaimedAccountConcurrency"):
        points.append(point(metric, {}, ts, 610.0, 2 * PEAK))
    path.write_bytes(gzip.compress("".join(json.dumps(p) + "\n" for p in points).encode()))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("athena")
    inputs = tmp / "input"
    old, new, prober = role_identity(OLD_ROLE, "worker-1"), role_identity(NEW_ROLE, "x"), user_identity(PROBER)
    # The old principal invoked `orders` 5 days ago and again an hour ago; the new one only now.
    # The caller names the function as it likes: a name, name:alias or a qualified ARN is one function.
    write_trail(inputs / "trail", NOW - 5 * DAY, [invoke(NOW - 5 * DAY + i, old, "orders") for i in range(3)])
    recent = ([invoke(NOW - HOUR + i, old, "orders:live") for i in range(4)]
              + [invoke(NOW - HOUR + 10 + i, new, FUNCTION_ARN + ":live") for i in range(2)])
    recent += [ct_record(NOW - HOUR + 20 + i, prober, src, name, error=err) for i, (src, name, err) in enumerate(DENIED)]
    # Throttled, not denied: not a denial.
    recent.append(ct_record(NOW - HOUR + 40, old, "ec2.amazonaws.com", "DescribeVpcs", error="Client.RequestLimitExceeded"))
    recent.append(ct_record(NOW - HOUR + 50, prober, "cloudtrail.amazonaws.com", "StopLogging",
                            {"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"}))
    write_trail(inputs / "trail", NOW - HOUR, recent)
    write_subscription_event(inputs / "cwlogs" / "orders-subscription-event.json")
    write_subscription_event(inputs / "cwlogs" / "mailer-subscription-event.json", "/aws/lambda/mailer", retried_lines())
    write_metric_stream(inputs / "metric-stream")

    lake = tmp / "lake"
    out = trailwatch("ingest", inputs, "--lake", lake, "--region", REGION)
    findings = tmp / "findings.jsonl"
    trailwatch("detect", "--lake", lake, "--state", tmp / "state", "--findings", findings, "--quiet")
    kinds = [json.loads(l)["kind"] for l in findings.read_text().splitlines()]
    assert "log_silence" in kinds, (out, kinds)
    return lake


@pytest.fixture(scope="module")
def con(lake):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # Athena's current_date is UTC's
    for t in TABLES:
        con.execute(
            f"""CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/*/*/*/*.parquet',
                hive_partitioning = true, hive_types = {{'account_id': VARCHAR, 'region': VARCHAR, 'date': VARCHAR}})"""
        )
    return con


def athena(name):
    return sqlglot.parse_one((QUERIES / f"{name}.sql").read_text().strip().rstrip(";"), read="athena")


def run_query(con, name):
    tree = athena(name)
    # In Athena `current_date - INTERVAL '1' DAY` is a date, so CAST(... AS varchar) is the
    # 'yyyy-MM-dd' of a partition; in DuckDB it is a timestamp, cast to 'yyyy-MM-dd 00:00:00',
    # which sorts after that day's partition and would drop it. Keep Athena's meaning.
    for sub in list(tree.find_all(exp.Sub)):
        if isinstance(sub.this, exp.CurrentDate) and isinstance(sub.expression, exp.Interval):
            sub.replace(exp.cast(sub.copy(), "date"))
    duck = tree.sql(dialect="duckdb", unsupported_level=sqlglot.ErrorLevel.RAISE)
    cur = con.execute(duck)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_top_throttled_functions(con):
    rows = run_query(con, "top_throttled_functions")
    assert [(r["account_id"], r["region"], r["function_name"]) for r in rows] == [(ACCOUNT, REGION, "orders")], rows
    (r,) = rows
    assert r["throttles"] == pytest.approx(METRICS["Throttles"])
    assert r["invocations"] == pytest.approx(METRICS["Invocations"])
    assert r["errors"] == pytest.approx(METRICS["Errors"])
    assert r["peak_concurrency"] == pytest.approx(PEAK)


@pytest.mark.parametrize("name", sorted(q.stem for q in QUERIES.glob("*.sql")))
def test_queries_read_maps_with_element_at(name):
    # DuckDB's map['key'] is NULL for a missing key, Athena's (Trino's) fails the query ("Key not
    # present in map"), so running them in DuckDB cannot show it: element_at(map, key) is NULL in
    # both (sqlglot reads it as a "safe" subscript). The metric stream's account-level datapoints
    # have no dimensions at all.
    maps = {c["Name"] for cols in json.loads(trailwatch("schema", "--glue-json")).values() for c in cols
            if c["Type"].startswith("map<")}
    subscripts = [b.sql("athena") for b in athena(name).find_all(exp.Bracket)
                  if isinstance(b.this, exp.Column) and b.this.name in maps and not b.args.get("safe")]
    assert not subscripts, f"{name}: map subscripts fail in Athena when the key is missing: {subscripts}"


def test_invocations_by_new_principals(con):
    rows = run_query(con, "invocations_by_new_principals")
    # The new role, with its 2 calls; not the old one, which invoked `orders` 5 days ago too.
    assert [(r["function_name"], r["principal"], r["calls"]) for r in rows] == [("orders", NEW_ROLE, 2)], rows


def test_denied_calls_by_principal(con):
    rows = run_query(con, "denied_calls_by_principal")
    assert [r["principal"] for r in rows] == [PROBER], rows
    (r,) = rows
    assert r["denied"] == len(DENIED)
    assert r["distinct_apis"] == len({(s, n) for s, n, _ in DENIED})
    assert sorted(r["some_apis"]) == sorted({f"{s}:{n}" for s, n, _ in DENIED})


def test_cost_of_a_spike(con):
    rows = run_query(con, "cost_of_a_spike")
    # Only the spiking window: the 35 others are its function's median.
    assert [(r["function_name"], r["window_start"].timestamp()) for r in rows] == [("orders", SPIKE_WINDOW)], rows
    (r,) = rows
    assert r["invocations"] == 3
    assert r["gb_seconds"] == pytest.approx(3 * 2000 * 1024 / 1024 / 1000)
    assert r["times_median"] == pytest.approx(10.0)


def test_retried_requests(con):
    rows = run_query(con, "retried_requests")
    # The two retried requests, 3 attempts each (the attempt delivered twice counts once), 2 failed.
    assert [(r["function_name"], r["requests_retried"], r["attempts"], r["max_attempts"], r["failed_attempts"])
            for r in rows] == [("mailer", 2, 6, 3, 4)], rows


def test_findings_last_day(con):
    rows = run_query(con, "findings_last_day")
    assert rows and any(r["kind"] == "log_silence" for r in rows), rows
