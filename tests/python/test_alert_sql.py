"""The Athena query in every alert email runs: sqlglot reads it as Athena SQL, DuckDB runs it on
the lake `trailwatch run` writes from the bundled sample (with the community Sigma rules), with
the Glue tables as views. The StopLogging alert's query finds the StopLogging call, a rule match's
query finds the records it matched; the other kinds' queries, with hostile subjects and evidence
ids, run without error (the text cannot break out of its string literal)."""

import json
import os
import subprocess
from pathlib import Path

import duckdb
import sqlglot

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
EMAIL = os.environ.get("TRAILWATCH_EMAIL_BIN", str(Path(BIN).parent / "examples/email"))
TABLES = ["cloudtrail", "lambda_invocations", "lambda_metrics", "findings"]


def queries(findings):
    out = subprocess.run([EMAIL], input="".join(json.dumps(f) + "\n" for f in findings), capture_output=True, text=True, check=True)
    sqls, cur = [], None
    for line in out.stdout.splitlines():
        if line.startswith("Evidence query"):
            cur = []
        elif cur is not None:
            cur.append(line)
            if line.rstrip().endswith(";"):
                sqls.append("\n".join(cur))
                cur = None
    return sqls


def lake_db(lake):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA trailwatch")
    for t in TABLES:
        if list((lake / t).glob("*/*/*/*.parquet")):
            con.execute(
                f"""CREATE VIEW trailwatch.{t} AS SELECT * FROM read_parquet('{lake}/{t}/*/*/*/*.parquet',
                    hive_partitioning = true, hive_types = {{'account_id': VARCHAR, 'region': VARCHAR, 'date': VARCHAR}})"""
            )
    return con


def run_athena(con, sql):
    duck = sqlglot.transpile(sql.strip().rstrip(";"), read="athena", write="duckdb")[0]
    return con.execute(duck).fetchall()


def test_alert_queries_run_on_the_lake(tmp_path):
    lake = tmp_path / "lake"
    subprocess.run(
        [BIN, "run", "testdata/cloudtrail", "testdata/cloudwatch", "--lake", str(lake), "--state", str(tmp_path / "state"),
         "--findings", str(tmp_path / "f.jsonl"), "--region", "eu-west-1", "--quiet",
         "--rules", "testdata/corpus/rules/sigma",
         "--export-log-group", "testdata/cloudwatch/export/exportedlogs=111122223333:/aws/lambda/orders"],
        cwd=ROOT, check=True, capture_output=True,
    )
    found = [json.loads(l) for l in (tmp_path / "f.jsonl").read_text().splitlines()]
    stop = next(f for f in found if f["kind"] == "log_silence" and "StopLogging" in f["summary"])
    con = lake_db(lake)
    (sql,) = queries([stop])
    rows = run_athena(con, sql)
    assert any(r[2] == "StopLogging" for r in rows), rows

    rule = next(f for f in found if f["kind"] == "rule_match" and f["rule"]["title"] == "AWS CloudTrail Important Change")
    (sql,) = queries([rule])
    rows = run_athena(con, sql)
    assert rows and sorted(r[-1] for r in rows) == sorted(rule["evidence"]), (rows, rule["evidence"])
    assert all(r[2] in ("StopLogging", "DeleteTrail", "UpdateTrail") for r in rows), rows

    hostile = "it's\n'; DROP TABLE x; --"
    base = dict(stop, end=None, top_contributors=[], evidence=[], region="eu-west-1", account_id="111122223333")
    kinds = [
        ("concurrency_spike", "orders"), ("timeouts", "orders"), ("throttling", "orders"),
        ("throttling", "ec2.amazonaws.com:DescribeInstances"), ("unusual_invocation", "orders"),
        ("api_call_rate", "s3.amazonaws.com:ListBuckets"), ("api_error_rate", "arn:aws:iam::111122223333:user/x"),
        ("log_silence", "orders"), ("concurrency_spike", hostile), ("api_call_rate", "s3.amazonaws.com:" + hostile),
        ("api_error_rate", "arn:aws:iam::1:role/" + hostile),
        ("retry_storm", "orders"), ("event_loss", "orders"), ("noisy_neighbour", "orders"),
        ("retry_storm", hostile), ("event_loss", hostile), ("noisy_neighbour", hostile),
        ("rule_match", "Rule (" + hostile + ")"),
    ]
    sqls = queries([dict(base, kind=k, subject=s, evidence=[hostile] if k == "rule_match" else []) for k, s in kinds])
    assert len(sqls) == len(kinds)
    for (k, s), sql in zip(kinds, sqls):
        run_athena(con, sql)  # raises on a syntax error or a literal the subject broke out of
