"""The CloudWatch tables read back with DuckDB: the bundled fixtures through the CLI."""

import os
import subprocess
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
CW = ROOT / "testdata" / "cloudwatch"


def test_cloudwatch_tables(tmp_path):
    lake = tmp_path / "lake"
    out = subprocess.run(
        [BIN, "ingest", str(CW), "--lake", str(lake), "--region", "eu-west-1",
         "--export-log-group", f"{CW}/export/exportedlogs=111122223333:/aws/lambda/orders"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    # firehose 6 + export 4 + lambda event 1 invocations, 5 datapoints
    assert "records: 16 written" in out.stdout, out.stdout
    con = duckdb.connect()
    hive = "hive_partitioning = true, hive_types = {'account_id': VARCHAR, 'region': VARCHAR, 'date': DATE}"
    inv = f"read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {hive})"
    desc = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {inv}").fetchall()}
    assert desc["start_time"] == desc["end_time"] == "TIMESTAMP WITH TIME ZONE"
    assert desc["duration_ms"] == "DOUBLE" and desc["billed_duration_ms"] == "BIGINT"
    rows = con.execute(f"SELECT status, count(*) FROM {inv} GROUP BY 1 ORDER BY 1").fetchall()
    assert dict(rows) == {"out_of_memory": 2, "success": 1, "timeout": 3, "unknown": 5}
    assert con.execute(f"SELECT count(DISTINCT log_event_id) = count(*) FROM {inv}").fetchone()[0]
    assert con.execute(f"SELECT DISTINCT account_id, region, date::VARCHAR FROM {inv}").fetchall() == [("111122223333", "eu-west-1", "2024-01-02")]
    met = f"read_parquet('{lake}/lambda_metrics/*/*/*/*.parquet', {hive})"
    got = dict(con.execute(f"SELECT metric_name, cardinality(dimensions) FROM {met}").fetchall())
    assert got["ConcurrentExecutions"] == 0 and got["Throttles"] == 1
    assert con.execute(f"SELECT dimensions['FunctionName'] FROM {met} WHERE metric_name = 'Throttles'").fetchone()[0] in ("orders", ["orders"])
