"""The labelled scenario (testdata/scenario): the small variant is replayed through `trailwatch run`
in delivery order and scored; its lake must hold every record, and recall and false findings must
stay within bounds.

Three replays, started together (they share the generation step and run side by side):
- seed 1, the seed the detectors' thresholds were tuned on: loose bounds (at most one incident missed);
- seed 2, which no tuning has seen: bounds that are what the detectors scored on it when the test was
  written, as literal numbers that may only be tightened;
- seed 1 with forged CloudTrail files mixed in (generate.py --forge-future): records that claim an
  event time in 2099, or 3 hours or a day after their delivery. They must change nothing that is
  scored, and the 2099 ones must be reported as `event_time_skew`.
Seed 5 is kept out of tuning and out of CI: it is for the README's held-out figures only.
"""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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


# One replay run per day of deliveries keeps each replay near two minutes with a debug build (an
# hour per run, 505 runs, takes ~8 minutes): recall and false findings are still scored, time to
# detect is not meaningful. The README's table uses 60-minute batches and a release build.
BATCH_MINUTES = os.environ.get("TRAILWATCH_SCENARIO_BATCH_MINUTES", "1440")
# Seed 1 (tuned on). Bounds that fail on a regression: at most two of the 14 incidents missed, at
# most one false finding per scored day (it scores 14/14 and none at 60-minute batches).
MIN_RECALL = float(os.environ.get("TRAILWATCH_SCENARIO_MIN_RECALL", "0.85"))
MAX_FALSE_PER_DAY = float(os.environ.get("TRAILWATCH_SCENARIO_MAX_FALSE_PER_DAY", "1.0"))

# Seed 2 (held out: no threshold was tuned on it). What the detectors scored on it when this test was
# written, small variant, one run per day of deliveries (SEED2_* below). These numbers are not
# settings: they may only be tightened, when the detectors do better on seed 2 without being tuned
# on it. No environment variable loosens them.
SEED2 = 2
SEED2_BATCH_MINUTES = "1440"
# The scenario gained two incidents (cases `new-sweeper`, `cost-creep`) and the scheduled sweeps
# on 2026-12-04 (the bounds were 8 of 8 and 2 before), then the four failure-mode incidents the same
# day (10 of 10 and 2 before; the 2 are now labelled side findings of their incidents).
SEED2_INCIDENTS = 14
SEED2_MIN_DETECTED = 14  # all 14 detected (measured 2026-12-04)
SEED2_MAX_FALSE = 0  # false findings in the 7 scored days: none (measured likewise)
SEED2_MIN_RECALL = SEED2_MIN_DETECTED / SEED2_INCIDENTS
SEED2_MAX_FALSE_PER_DAY = SEED2_MAX_FALSE / 7

# Forged CloudTrail files mixed into seed 1 (generate.py --forge-future): 10 files over the 21 days,
# alternating between the scenario's account-region and an account that appears nowhere else, six of
# them claiming 2099 and four claiming 3 hours or a day after their delivery.
FORGED_FILES = 10
SKEW = "event_time_skew"

# Scenarios (seed, forged files) and the replays of them; a replay is started only when a selected
# test asks for it, and all that are asked for start together.
SCENARIOS = {"seed1": (1, 0), "seed2": (SEED2, 0), "seed1_forged": (1, FORGED_FILES)}
REPLAYS = {"replayed": ("seed1", BATCH_MINUTES), "replayed_seed2": ("seed2", SEED2_BATCH_MINUTES),
           "replayed_forged": ("seed1_forged", BATCH_MINUTES)}
NEEDS = {"small": {"seed1"}, "generated_forged": {"seed1", "seed1_forged"}}
REPLAY_TIMEOUT_S = float(os.environ.get("TRAILWATCH_SCENARIO_TIMEOUT", "3600"))


@dataclass
class Replay:
    scenario: Path
    work: Path
    lake: Path
    res: dict
    stdout: str

    def reported(self):
        """Every finding line of the replay, with the time it was reported."""
        with open(self.work / "findings.reported.jsonl") as f:
            return [json.loads(line)["finding"] for line in f if line.strip()]


def _wanted(session):
    names = {n for item in session.items for n in getattr(item, "fixturenames", ())}
    replays = {n for n in REPLAYS if n in names}
    scenarios = {REPLAYS[n][0] for n in replays}
    for n, needs in NEEDS.items():
        if n in names:
            scenarios |= needs
    return scenarios, replays


@pytest.fixture(scope="module")
def generated(request, tmp_path_factory):
    """The scenarios the selected tests need, generated side by side."""
    scenarios, _ = _wanted(request.session)
    procs = {}
    for name in sorted(scenarios):
        seed, forge = SCENARIOS[name]
        out = tmp_path_factory.mktemp(f"scenario-{name}")
        cmd = [sys.executable, str(SCENARIO / "generate.py"), "--small", "--seed", str(seed), "--out", str(out)]
        if forge:
            cmd += ["--forge-future", str(forge)]
        procs[name] = (out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = {}
    for name, (out, pr) in procs.items():
        _, err = pr.communicate()
        assert pr.returncode == 0, f"generate {name}: {err}"
        outs[name] = out
    return outs


@pytest.fixture(scope="module")
def small(generated):
    out = generated["seed1"]
    return out, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def generated_forged(generated):
    return generated["seed1"], generated["seed1_forged"]


@pytest.fixture(scope="module")
def replays(request, generated, tmp_path_factory):
    """Starts every replay the selected tests need, at once, and waits for none of them: each replay
    fixture waits for its own. Each scenario is replayed through `trailwatch run` in delivery order
    and scored once; the ingest checks read the seed-1 replay's lake."""
    _, wanted = _wanted(request.session)
    started = {}
    for name in sorted(wanted):
        scenario, batch = REPLAYS[name]
        out = generated[scenario]
        work = tmp_path_factory.mktemp(f"scenario-work-{name}")
        cmd = [sys.executable, str(SCENARIO / "score.py"), "--scenario", str(out), "--trailwatch", BIN,
               "--batch-minutes", batch, "--work", str(work / "replay"), "--json", str(work / "score.json")]
        log_out, log_err = open(work / "score.out", "w"), open(work / "score.err", "w")
        started[name] = (out, work, subprocess.Popen(cmd, stdout=log_out, stderr=log_err), time.monotonic())
        log_out.close()
        log_err.close()
    yield started
    for _, _, pr, _ in started.values():
        if pr.poll() is None:
            pr.kill()
            pr.wait()


def _finish(replays, name):
    out, work, pr, t0 = replays[name]
    try:
        pr.wait(timeout=REPLAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pr.kill()
        pr.wait()
        pytest.fail(f"replay {name} took more than {REPLAY_TIMEOUT_S:.0f} s")
    stdout = (work / "score.out").read_text()
    print(f"{name}: replay and score took {time.monotonic() - t0:.0f} s (from its start, side by side with the others)")
    print(stdout)
    assert pr.returncode == 0, (work / "score.err").read_text()[-3000:]
    return Replay(out, work / "replay", work / "replay" / "lake", json.loads((work / "score.json").read_text()), stdout)


@pytest.fixture(scope="module")
def replayed(replays):
    return _finish(replays, "replayed")


@pytest.fixture(scope="module")
def replayed_seed2(replays):
    return _finish(replays, "replayed_seed2")


@pytest.fixture(scope="module")
def replayed_forged(replays):
    return _finish(replays, "replayed_forged")


NO_RUN = "`trailwatch run` does not exist yet (under CI this skip is a failure: tests/python/conftest.py)"


@pytest.mark.skipif(not has_run_command(), reason=NO_RUN)
def test_small_scenario_ingests_whole(small, replayed):
    out, m = small
    lake, res = replayed.lake, replayed.res
    # The failure-mode cases (poison-stream, async-retries, dropped-events, noisy-neighbour) took the
    # small variant from ~59k records and ~65k REPORT lines to ~77k and ~171k (seed 1), and added
    # ~121k metric-stream datapoints (the stream's last 9 days).
    assert 50_000 <= m["cloudtrail_distinct_event_ids"] <= 110_000 and 100_000 <= m["lambda_report_lines"] <= 250_000
    assert 60_000 <= m["metric_stream_datapoints"] <= 250_000
    labels = json.loads((out / "labels.json").read_text())
    assert {i["kind"] for i in labels["incidents"]} >= {"concurrency_spike", "throttling", "timeouts", "unusual_invocation",
                                                        "api_call_rate", "api_error_rate", "log_silence",
                                                        "retry_storm", "event_loss", "noisy_neighbour"}
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
    # The failure-mode cases log in the JSON format: platform.report carries their status.
    assert con.execute(f"SELECT count(*) FROM {inv} WHERE status = 'error'").fetchone()[0] == m["lambda_errors"] > 0
    met = f"read_parquet('{lake}/lambda_metrics/*/*/*/*.parquet', {HIVE})"
    assert con.execute(f"SELECT count(*) FROM {met}").fetchone()[0] == m["metric_stream_datapoints"]
    assert {r[0] for r in con.execute(f"SELECT DISTINCT metric_name FROM {met}").fetchall()} >= {
        "Invocations", "Errors", "Throttles", "ConcurrentExecutions", "Duration", "IteratorAge", "AsyncEventsReceived",
        "AsyncEventAge", "AsyncEventsDropped", "ClaimedAccountConcurrency"}
    assert not (lake / "_rejected").exists() or not any((lake / "_rejected").rglob("*.jsonl"))


@pytest.mark.skipif(not has_run_command(), reason=NO_RUN)
def test_small_scenario_lambda_region_comes_from_the_key(small, replayed):
    # The replay names inputs relative to the scenario folder, as S3 keys would be.
    out, _ = small
    lake = replayed.lake
    labels = json.loads((out / "labels.json").read_text())
    inv = f"read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {HIVE})"
    assert set(duckdb.connect().execute(f"SELECT DISTINCT account_id, region FROM {inv}").fetchall()) == \
        {(a, g) for a in labels["accounts"] for g in labels["regions"]}


FAILURE_KINDS = {"retry_storm": {"ledger-stream-consumer", "invoice-mailer"}, "event_loss": {"webhook-fanout"},
                  "noisy_neighbour": {"bulk-import"}}


def _deliveries(out, part):
    for line in (out / "deliveries.tsv").read_text().splitlines():
        rel = line.split("\t", 1)[1]
        if part in rel:
            yield rel


def _minute(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()) // 60


def test_failure_cases_are_labelled_and_streamed(small):
    """The failure-mode cases (no replay): their labels, their metric stream, the async retries'
    repeated request ids and the throttle reasons."""
    out, m = small
    labels = json.loads((out / "labels.json").read_text())
    incs = {(i["kind"], i["subject"]): i for i in labels["incidents"] if i["kind"] in FAILURE_KINDS}
    assert set(incs) == {(k, s) for k, subs in FAILURE_KINDS.items() for s in subs}
    for inc in incs.values():
        assert labels["scored_start"] <= inc["start"] < inc["end"] <= labels["end"], inc
        assert (inc["account_id"], inc["region"]) == ("012345678901", "us-east-1")
    nn = incs[("noisy_neighbour", "bulk-import")]
    assert 2 <= len(nn["victims"]) <= 3 and set(nn["victims"]) <= {"checkout-api", "search-api", "pricing-api"}
    side = {(x["kind"], x["subject"]) for x in nn["may_also_raise"]}
    assert ("concurrency_spike", "bulk-import") in side and {("throttling", v) for v in nn["victims"]} <= side
    assert all(set(x) == {"kind", "subject"} for i in incs.values() for x in i.get("may_also_raise", []))
    benign = {b["subject"] for b in labels["benign"]}
    assert {"ledger-stream-consumer", "invoice-mailer", "webhook-fanout", "nightly-compactor"} <= benign

    # The metric stream: newline-delimited JSON datapoints in GZIP Firehose objects of each case.
    objs = list(_deliveries(out, "input/metric-stream/"))
    assert len(objs) == m["metric_stream_objects"] > 0
    assert {o.rsplit("/", 1)[1].split("-1-")[0] for o in objs} == {
        f"trailwatch-metrics-{c}" for c in ("poison-stream", "async-retries", "dropped-events", "noisy-neighbour")}
    pts, n = {}, 0
    for rel in objs:
        assert rel.endswith(".gz")
        for line in gzip.decompress((out / rel).read_bytes()).decode().splitlines():
            d = json.loads(line)
            n += 1
            assert d["namespace"] == "AWS/Lambda" and d["account_id"] == "012345678901" and d["region"] == "us-east-1"
            assert set(d["value"]) == {"max", "min", "sum", "count"} and d["timestamp"] % 60000 == 0
            assert set(d["dimensions"]) <= {"FunctionName"}
            pts.setdefault((d["dimensions"].get("FunctionName", ""), d["metric_name"]), {})[d["timestamp"] // 60000] = d["value"]
    assert n == m["metric_stream_datapoints"]

    def in_window(fn, metric, inc):
        lo, hi = _minute(inc["start"]), _minute(inc["end"])
        return [v for t, v in pts.get((fn, metric), {}).items() if lo <= t <= hi]

    poison = incs[("retry_storm", "ledger-stream-consumer")]
    ages = in_window("ledger-stream-consumer", "IteratorAge", poison)
    span_ms = (_minute(poison["end"]) - _minute(poison["start"])) * 60000
    assert max(v["max"] for v in ages) >= 0.8 * span_ms  # rises one for one with the time
    assert sum(v["sum"] for v in in_window("ledger-stream-consumer", "Errors", poison)) > 100
    drop = incs[("event_loss", "webhook-fanout")]
    assert sum(v["sum"] for v in in_window("webhook-fanout", "AsyncEventsDropped", drop)) > 0
    assert max(v["max"] for v in in_window("webhook-fanout", "AsyncEventAge", drop)) > 5 * 3600 * 1000
    assert not [t for t in pts[("webhook-fanout", "AsyncEventsDropped")] if not _minute(drop["start"]) <= t <= _minute(drop["end"])]
    assert max(v["max"] for v in in_window("", "ClaimedAccountConcurrency", nn)) >= 950
    assert max(v["max"] for v in in_window("bulk-import", "ConcurrentExecutions", nn)) >= 900
    for v in nn["victims"]:
        assert sum(x["sum"] for x in in_window(v, "Throttles", nn)) > 0, v
    assert pts[("nightly-compactor", "Throttles")] and max(x["max"] for x in pts[("", "ConcurrentExecutions")].values()) <= 1000

    # Async retries: attempts of one event share its request id (platform.report per attempt).
    retry = incs[("retry_storm", "invoice-mailer")]
    lo, hi = _minute(retry["start"]) * 60000, (_minute(retry["end"]) + 1) * 60000
    reports = {}
    dec = json.JSONDecoder()
    for rel in _deliveries(out, "/trailwatch-logs-async-retries-1-"):
        text, i = gzip.decompress((out / rel).read_bytes()).decode(), 0
        while i < len(text):
            doc, i = dec.raw_decode(text, i)
            assert doc["logGroup"] == "/aws/lambda/invoice-mailer"
            for e in doc["logEvents"]:
                if '"platform.report"' in e["message"]:
                    rec = json.loads(e["message"])["record"]
                    reports.setdefault(rec["requestId"], []).append((e["timestamp"], rec["status"]))
    storm = {r: sorted(a) for r, a in reports.items() if len(a) > 1 and lo <= min(a)[0] <= hi}
    assert storm and all(a[0][1] == "error" for a in storm.values())
    assert sum(1 for a in storm.values() if len(a) == 3) >= 5
    for a in storm.values():  # ~1 minute, then ~2 minutes after the attempt before
        gaps = [(b[0] - x[0]) / 1000 for x, b in zip(a, a[1:])]
        assert 45 <= gaps[0] <= 80 and all(100 <= g <= 150 for g in gaps[1:]), gaps
    assert [a for r, a in reports.items() if [s for _, s in sorted(a)] == ["error", "success"] and r not in storm]

    # Throttled Invoke events name Lambda's reason: the account's pool, or the function's own reservation.
    reasons = {}
    for rel in _deliveries(out, "/CloudTrail/"):
        data = gzip.decompress((out / rel).read_bytes())
        if b"TooManyRequestsException" not in data:
            continue
        for r in json.loads(data)["Records"]:
            if r.get("errorCode") == "TooManyRequestsException":
                fn = r["requestParameters"]["functionName"].rsplit(":", 1)[-1]
                reasons.setdefault(fn, set()).add(r["errorMessage"])
    assert reasons["nightly-compactor"] == {"Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded)"}
    assert reasons["bulk-import"] == {"Rate Exceeded. (Reason: ConcurrentInvocationLimitExceeded)"}
    assert reasons["thumbnailer"] == {"Rate Exceeded."}


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
    assert {k: res["overall"][k] for k in ("incidents", "detected", "recall")} == {"incidents": 2, "detected": 1, "recall": 0.5}
    assert sorted(x["id"] for x in res["false_findings"]["list"]) == ["4", "6"]
    assert res["false_findings"]["per_day"]["2026-01-22"] == 1 and res["benign"]["with_findings"] == 1
    reported.append(f("7", "api_error_rate", "arn:aws:sts::012345678901:assumed-role/app/i-0abc", "2026-01-21T10:05:00Z", "2026-01-21T11:00:00Z"))
    assert score.score(labels, reported, {})["overall"]["detected"] == 2


def test_scorer_counts_expected_side_findings_apart():
    """A finding an incident lists under `may_also_raise` (kind, subject, in its account, region and
    window) is neither a detection nor a false finding, and is not held against a benign event."""
    score = load_scorer()
    acct, region = "012345678901", "us-east-1"
    labels = {"start": "2026-01-05T00:00:00Z", "scored_start": "2026-01-19T00:00:00Z", "end": "2026-01-26T00:00:00Z",
              "incidents": [{"id": "nn", "kind": "noisy_neighbour", "account_id": acct, "region": region, "subject": "bulk-import",
                             "start": "2026-01-22T18:30:00Z", "end": "2026-01-22T18:47:00Z", "victims": ["checkout-api"],
                             "may_also_raise": [{"kind": "throttling", "subject": "checkout-api"},
                                                {"kind": "concurrency_spike", "subject": "bulk-import"}]}],
              "benign": [{"description": "steady traffic", "account_id": acct, "region": region, "subject": "checkout-api",
                          "start": "2026-01-19T00:00:00Z", "end": "2026-01-26T00:00:00Z"}]}

    def f(i, kind, subject, start):
        return (datetime(2026, 1, 22, 20, tzinfo=timezone.utc),
                {"id": i, "kind": kind, "severity": "high", "account_id": acct, "region": region, "subject": subject,
                 "start": start, "end": None, "summary": "", "status": "open", "suppressed": False})

    reported = [f("1", "noisy_neighbour", "arn:aws:lambda:us-east-1:012345678901:function:bulk-import", "2026-01-22T18:33:00Z"),
                f("2", "throttling", "checkout-api", "2026-01-22T18:34:00Z"),  # a victim: expected
                f("3", "concurrency_spike", "bulk-import", "2026-01-22T18:31:00Z"),  # the culprit: expected
                f("4", "throttling", "checkout-api", "2026-01-23T10:00:00Z"),  # outside the window: false (and benign)
                f("5", "throttling", "search-api", "2026-01-22T18:34:00Z")]  # not listed: false
    res = score.score(labels, reported, {})
    assert res["overall"]["detected"] == 1 and res["incidents"][0]["side_findings"] == 2
    assert sorted(x["id"] for x in res["expected_side_findings"]["list"]) == ["2", "3"]
    assert res["expected_side_findings"]["list"][0]["incidents"] == ["nn"]
    assert sorted(x["id"] for x in res["false_findings"]["list"]) == ["4", "5"]
    assert [x["id"] for x in res["benign"]["list"][0]["findings"]] == ["4"]


def test_scorer_does_not_count_skew_findings_on_forged_files():
    score = load_scorer()
    acct, stranger = "012345678901", "246813579024"
    labels = {"start": "2026-01-05T00:00:00Z", "scored_start": "2026-01-19T00:00:00Z", "end": "2026-01-26T00:00:00Z",
              "incidents": [], "benign": [],
              "forged": [{"id": "forged-01-2099", "claims": "2099", "account_id": acct, "region": "us-east-1", "path": "a",
                          "delivered": "2026-01-20T10:00:00Z", "expect_finding": True},
                         {"id": "forged-02-3h", "claims": "+3h", "account_id": stranger, "region": "us-east-1", "path": "b",
                          "delivered": "2026-01-21T10:00:00Z", "expect_finding": False}]}

    def f(i, kind, account, start, **kw):
        d = {"id": i, "kind": kind, "severity": "high", "account_id": account, "region": "us-east-1", "subject": "cloudtrail",
             "start": start, "end": None, "summary": "", "status": "open", "suppressed": False, **kw}
        return (datetime(2026, 1, 21, tzinfo=timezone.utc), d)

    reported = [f("1", SKEW, acct, "2026-01-20T10:00:00Z"),  # the forged 2099 file's: expected, not false
                f("2", SKEW, stranger, "2026-01-21T10:00:00Z"),  # a +3h file expects none: false
                f("3", SKEW, acct, "2026-01-20T10:00:00Z", region="eu-west-1"),  # another region: false
                f("4", SKEW, acct, "2026-12-03T09:00:00Z", severity="info")]  # outside the week, info: not counted
    res = score.score(labels, reported, {})
    assert sorted(x["id"] for x in res["false_findings"]["list"]) == ["2", "3"]
    assert res["forged"]["expect_finding"] == res["forged"]["with_finding"] == 1
    assert [r["skew_findings"] for r in res["forged"]["list"]] == [2, 1]  # any line in the account-region counts
    assert "forged" not in score.score({**labels, "forged": []}, reported, {})


@pytest.mark.skipif(not has_run_command(), reason=NO_RUN)
def test_small_scenario_replay_and_score(replayed):
    res, stdout = replayed.res, replayed.stdout
    assert res["replay"]["runs"] >= res["replay"]["batches"] > 0
    assert res["overall"]["recall"] >= MIN_RECALL, stdout
    assert res["false_findings"]["mean_per_day"] <= MAX_FALSE_PER_DAY, stdout


@pytest.mark.skipif(not has_run_command(), reason=NO_RUN)
def test_held_out_seed_scores_at_least_what_it_scored(replayed_seed2):
    """Seed 2 was never tuned on: its score says how well the detectors generalise from seed 1."""
    res, stdout = replayed_seed2.res, replayed_seed2.stdout
    labels = json.loads((replayed_seed2.scenario / "labels.json").read_text())
    assert labels["seed"] == SEED2 and labels["variant"] == "small"
    assert res["replay"]["files"] == len((replayed_seed2.scenario / "deliveries.tsv").read_text().splitlines())
    assert set(res["replay"]["exit_codes"]) == {"0"}, res["replay"]
    assert res["overall"]["incidents"] == SEED2_INCIDENTS
    assert res["overall"]["detected"] >= SEED2_MIN_DETECTED, stdout
    assert res["overall"]["recall"] >= SEED2_MIN_RECALL - 1e-9, stdout
    assert res["false_findings"]["total"] <= SEED2_MAX_FALSE, stdout
    assert res["false_findings"]["total"] / 7 <= SEED2_MAX_FALSE_PER_DAY + 1e-9, stdout
    assert res["benign"]["with_findings"] == 0, stdout


def test_forged_files_are_only_added(generated_forged):
    """--forge-future adds files and lines; everything the seed writes without it stays the same."""
    plain, forged = generated_forged
    lp, lf = (json.loads((d / "labels.json").read_text()) for d in (plain, forged))
    assert {k: v for k, v in lf.items() if k != "forged"} == lp
    mp, mf = (json.loads((d / "manifest.json").read_text()) for d in (plain, forged))
    assert {k: v for k, v in mf.items() if k != "forged"} == mp
    dp = (plain / "deliveries.tsv").read_text().splitlines()
    df = (forged / "deliveries.tsv").read_text().splitlines()
    assert df == sorted(df) and len(df) == len(dp) + FORGED_FILES == len(dp) + mf["forged"]["files"]
    added = sorted(set(df) - set(dp))
    assert set(dp) <= set(df) and len(added) == FORGED_FILES
    assert sorted(line.split("\t", 1)[1] for line in added) == sorted(f["path"] for f in lf["forged"])
    for line in dp:
        rel = line.split("\t", 1)[1]
        assert (plain / rel).read_bytes() == (forged / rel).read_bytes(), rel
    files = {str(p.relative_to(forged)) for p in (forged / "input").rglob("*") if p.is_file()}
    assert files == {line.split("\t", 1)[1] for line in df}
    # What the forged files hold: their own account-region, ordinary names, and times ahead.
    assert {f["claims"] for f in lf["forged"]} == {"2099", "+3h", "+1d"}
    stranger = {f["account_id"] for f in lf["forged"]} - set(lp["accounts"])
    assert len(stranger) == 1 and all(next(iter(stranger)) not in line for line in dp)
    for f in lf["forged"]:
        assert f["expect_finding"] == (f["claims"] == "2099")
        with gzip.open(forged / f["path"]) as fh:
            recs = json.load(fh)["Records"]
        assert len(recs) == f["records"] and {r["recipientAccountId"] for r in recs} == {f["account_id"]}
        assert min(r["eventTime"] for r in recs) == f["event_time_first"] > f["delivered"]
        assert f"/{f['account_id']}/CloudTrail/{f['region']}/" in f["path"]


@pytest.mark.skipif(not has_run_command(), reason=NO_RUN)
def test_forged_future_times_change_no_score_and_are_reported(replayed, replayed_forged):
    """Records that claim an event time ahead of their delivery (2099, +3 h, +1 day), in files
    delivered at ordinary times, are harmless: the replay scores as it does without them. The ones
    ahead of the processing wall clock (2099; the others are in the past by now) are reported as
    `event_time_skew` on the table `cloudtrail` of their shard. Until detect knows about event-time
    skew, this test fails; it is not marked xfail on purpose."""
    plain, forged = replayed.res, replayed_forged.res
    labels = json.loads((replayed_forged.scenario / "labels.json").read_text())
    assert len(labels["forged"]) == FORGED_FILES
    assert forged["replay"]["files"] == plain["replay"]["files"] + FORGED_FILES
    detected = lambda res: sorted(i["id"] for i in res["incidents"] if i["detected"])  # noqa: E731
    assert detected(forged) == detected(plain), replayed_forged.stdout
    assert forged["false_findings"]["total"] == plain["false_findings"]["total"], replayed_forged.stdout
    assert forged["benign"]["with_findings"] == plain["benign"]["with_findings"], replayed_forged.stdout
    # The normal data raises no skew finding; the forged 2099 records do, in each account-region
    # they were delivered to (the stranger account's shard holds nothing else).
    assert not [f for f in replayed.reported() if f.get("kind") == SKEW]
    skew = [f for f in replayed_forged.reported() if f.get("kind") == SKEW]
    assert skew, replayed_forged.stdout
    assert {f.get("subject") for f in skew} == {"cloudtrail"}, skew
    expect = {(f["account_id"], f["region"]) for f in labels["forged"] if f["expect_finding"]}
    assert {(f["account_id"], f["region"]) for f in skew} == expect, skew
    assert forged["forged"]["with_finding"] == forged["forged"]["expect_finding"] == 6
