"""The labelled scenario (testdata/scenario): the small variant is replayed through `trailwatch run`
in delivery order and scored; its lake must hold every record, and recall and false findings must
stay within bounds."""

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
SCENARIO = ROOT / "testdata" / "scenario"
HIVE = "hive_partitioning = true, hive_types = {'account_id': VARCHAR, 'region': VARCHAR, 'date': DATE}"


def has_run_command():
    try:
        return subprocess.run([BIN, "run", "--help"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    r = subprocess.run([sys.executable, str(SCENARIO / "generate.py"), "--small", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "manifest.json").read_text())


# One replay run per day of deliveries keeps this file under two minutes with a debug build (an hour
# per run, 505 runs, takes ~8 minutes): recall and false findings are still scored, time to
# detect is not meaningful. The README's table uses 60-minute batches and a release build.
BATCH_MINUTES = os.environ.get("TRAILWATCH_SCENARIO_BATCH_MINUTES", "1440")
# Bounds that fail on a regression: at most one of the 8 incidents missed, at most one false
# finding per scored day (the small variant scores 8/8 and 0.29 a day at 60- and 1440-minute batches).
MIN_RECALL = float(os.environ.get("TRAILWATCH_SCENARIO_MIN_RECALL", "0.85"))
MAX_FALSE_PER_DAY = float(os.environ.get("TRAILWATCH_SCENARIO_MAX_FALSE_PER_DAY", "1.0"))


@pytest.fixture(scope="module")
def replayed(small, tmp_path_factory):
    """The small variant replayed through `trailwatch run` in delivery order and scored, once:
    the ingest checks read the replay's lake, so the scenario is ingested only once."""
    out, _ = small
    work = tmp_path_factory.mktemp("scenario-work")
    res_path = work / "score.json"
    r = subprocess.run([sys.executable, str(SCENARIO / "score.py"), "--scenario", str(out), "--trailwatch", BIN,
                        "--batch-minutes", BATCH_MINUTES, "--work", str(work / "replay"), "--json", str(res_path)],
                       capture_output=True, text=True)
    print(r.stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "replay" / "lake", json.loads(res_path.read_text()), r.stdout


@pytest.mark.skipif(not has_run_command(), reason="`trailwatch run` does not exist yet")
def test_small_scenario_ingests_whole(small, replayed):
    out, m = small
    lake, res, _ = replayed
    assert 30_000 <= m["cloudtrail_distinct_event_ids"] <= 60_000 and 30_000 <= m["lambda_report_lines"] <= 60_000
    labels = json.loads((out / "labels.json").read_text())
    assert {i["kind"] for i in labels["incidents"]} >= {"concurrency_spike", "throttling", "timeouts", "unusual_invocation",
                                                        "api_call_rate", "api_error_rate", "log_silence"}
    lines = (out / "deliveries.tsv").read_text().splitlines()
    assert len(lines) == m["files"] and lines == sorted(lines)
    # Every delivery went through `run` once, and no input failed (exit 1).
    assert res["replay"]["files"] == m["files"] and set(res["replay"]["exit_codes"]) == {"0"}, res["replay"]
    con = duckdb.connect()
    ct = f"read_parquet('{lake}/cloudtrail/*/*/*/*.parquet', {HIVE})"
    rows, ids = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {ct}").fetchone()
    # Ingest keeps both copies of a record that CloudTrail delivered twice; detect must dedupe by eventID.
    assert ids == m["cloudtrail_distinct_event_ids"]
    assert rows == m["cloudtrail_records"] == ids + m["cloudtrail_duplicates"]
    assert set(con.execute(f"SELECT DISTINCT account_id, region FROM {ct}").fetchall()) == \
        {(a, g) for a in labels["accounts"] for g in labels["regions"]}
    inv = f"read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {HIVE})"
    assert con.execute(f"SELECT count(*) FROM {inv}").fetchone()[0] == m["lambda_report_lines"]
    assert con.execute(f"SELECT count(*) FROM {inv} WHERE status = 'timeout'").fetchone()[0] == m["lambda_timeouts"]
    assert not (lake / "_rejected").exists() or not any((lake / "_rejected").rglob("*.jsonl"))


@pytest.mark.skipif(not has_run_command(), reason="`trailwatch run` does not exist yet")
def test_small_scenario_lambda_region_comes_from_the_key(small, replayed):
    # The replay names inputs relative to the scenario folder, as S3 keys would be.
    out, _ = small
    lake, _, _ = replayed
    labels = json.loads((out / "labels.json").read_text())
    inv = f"read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {HIVE})"
    assert set(duckdb.connect().execute(f"SELECT DISTINCT account_id, region FROM {inv}").fetchall()) == \
        {(a, g) for a in labels["accounts"] for g in labels["regions"]}


def load_scorer():
    spec = importlib.util.spec_from_file_location("scenario_score", SCENARIO / "score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scorer_matches_by_kind_subject_and_window():
    score = load_scorer()
    labels = {"start": "2026-01-05T00:00:00Z", "scored_start": "2026-01-19T00:00:00Z", "end": "2026-01-26T00:00:00Z",
              "incidents": [{"id": "a", "kind": "timeouts", "account_id": "012345678901", "region": "us-east-1", "subject": "orders-api",
                             "start": "2026-01-20T10:00:00Z", "end": "2026-01-20T12:00:00Z"},
                            {"id": "b", "kind": "api_error_rate", "account_id": "012345678901", "region": "us-east-1",
                             "subject": "arn:aws:iam::012345678901:role/app", "start": "2026-01-21T10:00:00Z", "end": "2026-01-21T10:15:00Z"}],
              "benign": [{"description": "batch", "account_id": "012345678901", "region": "us-east-1", "subject": "nightly-batch",
                          "start": "2026-01-22T02:00:00Z", "end": "2026-01-22T02:35:00Z"}]}

    def f(i, kind, subject, start, at, **kw):
        d = {"id": i, "kind": kind, "severity": "high", "account_id": "012345678901", "region": "us-east-1", "subject": subject,
             "start": start, "end": None, "summary": "", "status": "open", "suppressed": False, **kw}
        return (datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(timezone.utc), d)

    reported = [
        f("1", "timeouts", "arn:aws:lambda:us-east-1:012345678901:function:orders-api", "2026-01-20T09:50:00Z", "2026-01-20T11:00:00Z"),
        f("1", "timeouts", "orders-api", "2026-01-20T09:50:00Z", "2026-01-20T13:00:00Z", status="closed"),
        f("2", "api_error_rate", "arn:aws:sts::012345678901:assumed-role/app/i-0abc", "2026-01-21T10:05:00Z", "2026-01-21T12:00:00Z",
          severity="info"),
        f("3", "api_error_rate", "arn:aws:sts::012345678901:assumed-role/app/i-0abc", "2026-01-21T10:05:00Z", "2026-01-21T11:00:00Z",
          suppressed=True),
        f("4", "concurrency_spike", "nightly-batch", "2026-01-22T02:05:00Z", "2026-01-22T03:00:00Z"),
        f("5", "timeouts", "orders-api", "2026-01-10T10:00:00Z", "2026-01-10T11:00:00Z"),  # in the learning period
        f("6", "timeouts", "orders-api", "2026-01-20T12:31:00Z", "2026-01-20T13:00:00Z"),  # too late to be incident a
    ]
    res = score.score(labels, reported, {})
    got = {i["id"]: i for i in res["incidents"]}
    assert got["a"]["detected"] and got["a"]["time_to_detect_min"] == 60.0 and got["a"]["finding_id"] == "1"
    assert not got["b"]["detected"]  # info and suppressed findings do not count
    assert res["overall"] == {"incidents": 2, "detected": 1, "recall": 0.5}
    assert sorted(x["id"] for x in res["false_findings"]["list"]) == ["4", "6"]
    assert res["false_findings"]["per_day"]["2026-01-22"] == 1 and res["benign"]["with_findings"] == 1
    reported.append(f("7", "api_error_rate", "arn:aws:sts::012345678901:assumed-role/app/i-0abc", "2026-01-21T10:05:00Z", "2026-01-21T11:00:00Z"))
    assert score.score(labels, reported, {})["overall"]["detected"] == 2


@pytest.mark.skipif(not has_run_command(), reason="`trailwatch run` does not exist yet")
def test_small_scenario_replay_and_score(replayed):
    _, res, stdout = replayed
    assert res["replay"]["runs"] >= res["replay"]["batches"] > 0
    assert res["overall"]["recall"] >= MIN_RECALL, stdout
    assert res["false_findings"]["mean_per_day"] <= MAX_FALSE_PER_DAY, stdout
