#!/usr/bin/env python3
"""trailwatch detect against a DuckDB SQL detection over the same lake, side by side, one core.

The lake is one that `trailwatch ingest` wrote as the data was delivered (many small files): the
labelled scenario (testdata/scenario) generated and replayed through `trailwatch run`, one run a
day, or a lake you name. Each engine runs as its own process pinned to CPU 0 under
`/usr/bin/time -v`; DuckDB with `threads=1`. The engines alternate, `--runs` times each (this
machine's timings vary by 10%), and the median is shown. DuckDB's process includes Python's start
and `import duckdb`, so its query's own time is shown too. Prints a Markdown table.

    python bench/detect_vs_duckdb.py --trailwatch target/release/trailwatch [--seed 1] [--full]
    python bench/detect_vs_duckdb.py --trailwatch target/release/trailwatch --lake LAKE [--compact]

With --compact, a copy of the lake is compacted (`trailwatch compact`, every partition-day) and
both engines run again over it.

Two SQL detections run, both naive, neither trailwatch's (no seasonality, no episodes):

- NARROW_SQL: per key and hour, call and error counts against the key's mean and standard
  deviation over every hour (API calls); per function and minute, invocations, timeouts and the
  billed time behind concurrency (invocations); throttles and lost events from the metric stream.
  It reads 5 of the 15 CloudTrail columns detect reads (counting `user_identity`'s six leaves)
  and 5 of its 11 invocation columns, and counts a re-delivered record twice.
- SAME_COLUMNS_SQL: reads every column detect reads and flags on what it finds in them. Records
  are deduplicated by CloudTrail event id and by log event id (re-deliveries are normal); the
  principal is named as detect names it; per API and hour, calls, errors, denials, throttling
  messages, distinct source IPs and user agents and cross-account callers; new invokers of a
  function (named from the request parameters); per function and minute, run time from start to
  end (concurrency), GB-seconds, timeouts, timeouts near the limit, errors and retried requests.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIVE = "hive_partitioning = true, hive_types = {'account_id': VARCHAR, 'region': VARCHAR, 'date': DATE}"

# Both flag an API's hours against its mean and deviation alike (the second adds conditions).
API_FLAGS_SQL = """
CREATE TEMP TABLE api_flags AS
  WITH k AS (
    SELECT account_id, region, event_source, event_name, avg(calls) AS m, stddev_pop(calls) AS s,
           avg(errors) AS me, stddev_pop(errors) AS se
    FROM api GROUP BY ALL)
  SELECT a.* FROM api a JOIN k USING (account_id, region, event_source, event_name)
  WHERE a.calls > k.m + 4 * k.s + 10 OR a.errors > k.me + 4 * k.se + 5"""

# Both detections read the metric stream alike.
METRIC_FLAGS_SQL = """
CREATE TEMP TABLE met_flags AS
  SELECT account_id, region, metric_name, dimensions['FunctionName'] AS fn, date_trunc('minute', "timestamp") AS minute,
         sum(value_sum) AS s, max(value_max) AS mx
  FROM read_parquet('{lake}/lambda_metrics/*/*/*/*.parquet', {hive})
  WHERE metric_name IN ('Throttles', 'ConcurrentExecutions', 'Errors', 'IteratorAge', 'AsyncEventAge',
                        'AsyncEventsDropped', 'DeadLetterErrors', 'DestinationDeliveryFailures', 'ClaimedAccountConcurrency')
  GROUP BY ALL
  HAVING (metric_name IN ('Throttles', 'AsyncEventsDropped', 'DeadLetterErrors', 'DestinationDeliveryFailures') AND sum(value_sum) > 0);
"""

NARROW_SQL = """
SET threads = 1;
CREATE TEMP TABLE api AS
  SELECT account_id, region, event_source, event_name, user_identity.arn AS principal,
         date_trunc('hour', event_time) AS hour, count(*) AS calls, count(error_code) AS errors
  FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet', {hive})
  GROUP BY ALL;
""" + API_FLAGS_SQL + """;
CREATE TEMP TABLE inv AS
  SELECT account_id, region, function_name, date_trunc('minute', end_time) AS minute, count(*) AS n,
         count(*) FILTER (WHERE status = 'timeout') AS timeouts,
         sum(billed_duration_ms) / 60000.0 AS concurrency,
         count(DISTINCT request_id) AS requests
  FROM read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {hive})
  GROUP BY ALL;
CREATE TEMP TABLE inv_flags AS
  WITH k AS (SELECT account_id, region, function_name, avg(concurrency) AS m, stddev_pop(concurrency) AS s
             FROM inv GROUP BY ALL)
  SELECT i.* FROM inv i JOIN k USING (account_id, region, function_name)
  WHERE i.concurrency > k.m + 4 * k.s + 1 OR i.timeouts > 0 OR i.requests < i.n;
""" + METRIC_FLAGS_SQL + """
SELECT (SELECT count(*) FROM api_flags), (SELECT count(*) FROM inv_flags), (SELECT count(*) FROM met_flags);
"""


SAME_COLUMNS_SQL = """
SET threads = 1;
CREATE TEMP TABLE ct AS
  SELECT DISTINCT ON (event_id)
         account_id, region, event_source, event_name, error_code, error_message, source_ip_address, user_agent,
         CASE WHEN user_identity.type = 'AssumedRole' AND user_identity.session_context.session_issuer.arn IS NOT NULL
              THEN user_identity.session_context.session_issuer.arn
              ELSE coalesce(user_identity.arn, user_identity.invoked_by,
                            coalesce(user_identity.type, 'unknown') || ':' || coalesce(user_identity.principal_id, 'unknown'))
         END AS principal,
         user_identity.type AS principal_type, user_identity.account_id AS principal_account, event_time,
         CASE WHEN event_source = 'lambda.amazonaws.com'
              THEN coalesce(nullif(regexp_extract(json_extract_string(request_parameters, '$.functionName'),
                                                  'function:([^:]+)', 1), ''),
                            split_part(json_extract_string(request_parameters, '$.functionName'), ':', 1))
         END AS fn
  FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet', {hive});
CREATE TEMP TABLE api AS
  SELECT account_id, region, event_source, event_name, principal, date_trunc('hour', event_time) AS hour,
         count(*) AS calls, count(error_code) AS errors,
         count(*) FILTER (WHERE error_code LIKE '%AccessDenied%' OR error_code LIKE '%Unauthorized%') AS denials,
         count(*) FILTER (WHERE error_message ILIKE '%rate exceeded%') AS throttled,
         count(*) FILTER (WHERE principal_account <> account_id) AS cross_account,
         count(DISTINCT source_ip_address) AS ips, count(DISTINCT user_agent) AS agents,
         any_value(principal_type) AS principal_type
  FROM ct GROUP BY ALL;
""" + API_FLAGS_SQL + """ OR a.denials >= 10 OR a.throttled > 0
     OR (a.cross_account > 0 AND a.principal_type <> 'AWSService') OR a.ips > 5 OR a.agents > 5;
CREATE TEMP TABLE invoker_flags AS
  SELECT account_id, region, fn, principal, min(event_time) AS first
  FROM ct WHERE fn IS NOT NULL GROUP BY ALL
  HAVING min(event_time) > (SELECT min(event_time) FROM ct) + INTERVAL 1 DAY;
CREATE TEMP TABLE inv AS
  SELECT DISTINCT ON (log_event_id)
         account_id, region, function_name, start_time, end_time, duration_ms, billed_duration_ms, memory_size_mb,
         status, timeout_seconds, request_id, error_type
  FROM read_parquet('{lake}/lambda_invocations/*/*/*/*.parquet', {hive});
CREATE TEMP TABLE per_minute AS
  SELECT account_id, region, function_name, date_trunc('minute', end_time) AS minute, count(*) AS n,
         count(*) FILTER (WHERE status = 'timeout') AS timeouts,
         count(*) FILTER (WHERE duration_ms > 900 * timeout_seconds) AS near_timeout,
         count(error_type) AS errors,
         sum(epoch_ms(end_time) - epoch_ms(start_time)) / 60000.0 AS concurrency,
         sum(billed_duration_ms * memory_size_mb) / 1024000.0 AS gb_seconds,
         count(DISTINCT request_id) AS requests
  FROM inv GROUP BY ALL;
CREATE TEMP TABLE inv_flags AS
  WITH k AS (SELECT account_id, region, function_name, avg(concurrency) AS m, stddev_pop(concurrency) AS s,
                    avg(gb_seconds) AS mg, stddev_pop(gb_seconds) AS sg
             FROM per_minute GROUP BY ALL)
  SELECT i.* FROM per_minute i JOIN k USING (account_id, region, function_name)
  WHERE i.concurrency > k.m + 4 * k.s + 1 OR i.gb_seconds > k.mg + 4 * k.sg + 1 OR i.timeouts > 0
     OR i.near_timeout > 0 OR i.errors > 5 OR i.requests < i.n;
""" + METRIC_FLAGS_SQL + """
SELECT (SELECT count(*) FROM api_flags), (SELECT count(*) FROM invoker_flags), (SELECT count(*) FROM inv_flags), (SELECT count(*) FROM met_flags);
"""


def timed(cmd, cwd=None):
    out = subprocess.run(["/usr/bin/time", "-v", "taskset", "-c", "0", *cmd], capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    return secs, rss, out.stdout + out.stderr


def lake_stats(lake):
    import duckdb
    con = duckdb.connect()
    rows, files = 0, 0
    for table in ("cloudtrail", "lambda_invocations", "lambda_metrics"):
        paths = list((lake / table).glob("*/*/*/*.parquet"))
        if not paths:
            continue
        files += len(paths)
        rows += con.execute(f"SELECT count(*) FROM read_parquet('{lake}/{table}/*/*/*/*.parquet')").fetchone()[0]
    return rows, files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trailwatch", required=True)
    ap.add_argument("--lake", type=Path, help="an existing lake (default: generate and replay the scenario)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="the full scenario, not the small variant")
    ap.add_argument("--keep", type=Path, help="keep the generated scenario and lake here")
    ap.add_argument("--compact", action="store_true", help="also compact a copy of the lake and run both over it")
    ap.add_argument("--runs", type=int, default=3, help="runs of each engine, alternating; the median is shown")
    a = ap.parse_args()
    tmp = a.keep or Path(tempfile.mkdtemp(prefix="tw-detect-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        lake = a.lake
        if lake is None:
            scen, work = tmp / "scenario", tmp / "replay"
            if not (work / "lake").exists():
                gen = [sys.executable, str(ROOT / "testdata/scenario/generate.py"), "--seed", str(a.seed), "--out", str(scen)]
                subprocess.run(gen + ([] if a.full else ["--small"]), check=True, capture_output=True)
                subprocess.run([sys.executable, str(ROOT / "testdata/scenario/score.py"), "--scenario", str(scen), "--trailwatch",
                                a.trailwatch, "--batch-minutes", "1440", "--work", str(work)], check=True, capture_output=True)
            lake = work / "lake"
        lake = lake.resolve()
        lakes = [("as ingest wrote it" if a.lake is None else "given", lake)]
        if a.compact:
            merged = tmp / "compacted-lake"
            shutil.rmtree(merged, ignore_errors=True)
            shutil.copytree(lake, merged)
            secs, rss, out = timed([a.trailwatch, "compact", "--lake", str(merged), "--closed-after-days", "0",
                                    "--min-age-minutes", "0"])
            said = next((l for l in out.splitlines() if l.startswith("compact:")), "")
            print(f"trailwatch compact: {secs:.2f} s, {rss:,.0f} MB peak RSS; {said}\n")
            lakes.append(("compacted", merged))
        print("| lake | files | engine | seconds | rows/s | peak RSS MB | findings | trailwatch speed-up |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for what, path in lakes:
            rows, files = lake_stats(path)
            state, findings = tmp / "bench-state", tmp / "bench-findings.jsonl"
            shutil.rmtree(state, ignore_errors=True)
            findings.unlink(missing_ok=True)
            # The DuckDB process also pays for Python and `import duckdb` (about 0.13 s here), so
            # the query's own time, from connecting to the last row fetched, is shown as well.
            queries = [(name, f"import time, duckdb; t = time.perf_counter(); "
                              f"r = duckdb.connect().execute({sql.format(lake=path, hive=HIVE)!r}).fetchall(); "
                              f"print(r); print('query_s', time.perf_counter() - t)")
                       for name, sql in (("naive SQL detection, fewer columns, no dedup", NARROW_SQL),
                                         ("naive SQL detection, detect's columns, dedup", SAME_COLUMNS_SQL))]
            tws, ducks = [], {name: [] for name, _ in queries}
            for _ in range(a.runs):
                shutil.rmtree(state, ignore_errors=True)
                findings.unlink(missing_ok=True)
                tws.append(timed([a.trailwatch, "detect", "--lake", str(path), "--state", str(state), "--findings",
                                  str(findings), "--quiet"]))
                for name, query in queries:
                    secs, rss, out = timed([sys.executable, "-c", query])
                    ducks[name].append((secs, rss, float(re.search(r"query_s (\S+)", out).group(1))))
            n_findings = len(findings.read_text().splitlines()) if findings.exists() else 0
            median = lambda xs: sorted(xs)[len(xs) // 2]
            tw = (median([t[0] for t in tws]), max(t[1] for t in tws))
            rows_out = [("trailwatch detect, from empty state", tw, n_findings)]
            for name, runs in ducks.items():
                duck = (median([d[0] for d in runs]), max(d[1] for d in runs))
                rows_out.append((f"DuckDB 1 thread, {name}", duck, ""))
                rows_out.append(("the same DuckDB query alone (no Python start, no import)",
                                 (median([d[2] for d in runs]), duck[1]), ""))
            for name, (secs, rss), n in rows_out:
                print(f"| {what} | {files:,} | {name} | {secs:.2f} | {rows / secs:,.0f} | {rss:,.0f} | {n} | {secs / tw[0]:.2f}x |")
        print(f"\n{rows:,} rows; one core each; the median of {a.runs} runs of each, alternating")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
