#!/usr/bin/env python3
"""trailwatch ingest against DuckDB on the same gzipped CloudTrail files, side by side, one core.

Each engine runs as its own process pinned to CPU 0 (`taskset -c 0`) under `/usr/bin/time -v`,
so wall time and peak RSS are that process's alone. DuckDB runs with `threads=1`, once with its
automatic JSON schema and once with the typed CloudTrail shape. Prints a Markdown table.

    python bench/ingest_vs_duckdb.py --trailwatch target/release/trailwatch [--files 200 --records 1000]
    python bench/ingest_vs_duckdb.py --trailwatch target/release/trailwatch --memory   # one 500k-record file
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

TYPED = """STRUCT(
  eventVersion VARCHAR,
  userIdentity STRUCT("type" VARCHAR, principalId VARCHAR, arn VARCHAR, accountId VARCHAR, accessKeyId VARCHAR, userName VARCHAR,
    invokedBy VARCHAR, sessionContext STRUCT(sessionIssuer STRUCT("type" VARCHAR, principalId VARCHAR, arn VARCHAR, accountId VARCHAR, userName VARCHAR),
    webIdFederationData JSON, attributes STRUCT(creationDate TIMESTAMP, mfaAuthenticated BOOLEAN), sourceIdentity VARCHAR, ec2RoleDelivery VARCHAR)),
  eventTime TIMESTAMP, eventSource VARCHAR, eventName VARCHAR, awsRegion VARCHAR, sourceIPAddress VARCHAR, userAgent VARCHAR,
  errorCode VARCHAR, errorMessage VARCHAR, requestParameters JSON, responseElements JSON, additionalEventData JSON,
  requestID VARCHAR, eventID VARCHAR, readOnly BOOLEAN, resources STRUCT(ARN VARCHAR, accountId VARCHAR, "type" VARCHAR)[],
  eventType VARCHAR, apiVersion VARCHAR, managementEvent BOOLEAN, recipientAccountId VARCHAR, serviceEventDetails JSON,
  sharedEventID VARCHAR, vpcEndpointId VARCHAR, vpcEndpointAccountId VARCHAR, eventCategory VARCHAR, addendum JSON,
  sessionCredentialFromConsole BOOLEAN, edgeDeviceDetails JSON,
  tlsDetails STRUCT(tlsVersion VARCHAR, cipherSuite VARCHAR, clientProvidedHostHeader VARCHAR))[]"""


def timed(cmd):
    out = subprocess.run(["/usr/bin/time", "-v", "taskset", "-c", "0", *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stdout}\n{out.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    return secs, rss


def duckdb_cmd(src, out, typed):
    if typed:
        read = f"read_json('{src}/**/*.json.gz', format='unstructured', columns={{'Records': '{TYPED.replace(chr(10), ' ')}'}}, maximum_object_size=1073741824)"
    else:
        read = f"read_json('{src}/**/*.json.gz', format='unstructured', maximum_object_size=1073741824)"
    sql = f"SET threads=1; COPY (SELECT r.* FROM (SELECT unnest(Records) AS r FROM {read})) TO '{out}' (FORMAT parquet, COMPRESSION zstd);"
    return [sys.executable, "-c", f"import duckdb; duckdb.connect().execute({sql!r})"]


def rows(glob):
    import duckdb
    return duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trailwatch", required=True)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--memory", action="store_true", help="one file of 500,000 records, trailwatch only")
    ap.add_argument("--spread", type=int, default=0, help="each file's records spread over this many account-region-days")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    try:
        src = tmp / "in"
        gen = [sys.executable, str(HERE / "gen_cloudtrail.py"), str(src)]
        gen += ["--files", "500", "--records", "1000", "--single"] if a.memory else ["--files", str(a.files), "--records", str(a.records), "--spread", str(a.spread)]
        info = json.loads(subprocess.run(gen, check=True, capture_output=True, text=True).stdout)
        n, mb = info["records"], info["json_bytes"] / 1e6
        results = []
        secs, rss = timed([a.trailwatch, "ingest", str(src), "--lake", str(tmp / "lake")])
        assert rows(f"{tmp}/lake/cloudtrail/*/*/*/*.parquet") == n
        results.append(("trailwatch ingest", secs, rss))
        written = len(list((tmp / "lake" / "cloudtrail").glob("*/*/*/*.parquet")))
        if not a.memory:
            for typed in (False, True):
                out = tmp / f"duck-{typed}.parquet"
                secs, rss = timed(duckdb_cmd(src, out, typed))
                assert rows(out) == n
                results.append((f"DuckDB, 1 thread, {'typed shape' if typed else 'auto schema'}", secs, rss))
        print(f"{n:,} records, {mb:,.0f} MB of JSON in {info['files']} gzipped files; one core each; "
              f"trailwatch wrote {written:,} Parquet files\n")
        print("| engine | seconds | records/s | MB/s of JSON | peak RSS MB | trailwatch speed-up |")
        print("|---|---:|---:|---:|---:|---:|")
        tw = results[0][1]
        for name, secs, rss in results:
            print(f"| {name} | {secs:.2f} | {n / secs:,.0f} | {mb / secs:,.1f} | {rss:,.0f} | {secs / tw:.1f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
