"""Reads the lake that `trailwatch ingest` writes back with an independent engine (DuckDB), and
runs Athena SQL on it through sqlglot. The expected records are computed here, in Python, from
the inputs, not by the crate that wrote the lake."""

import gzip
import json
import os
import re
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import sqlglot

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
# The public corpus's samples, bundled with the repository (testdata/corpus/PROVENANCE.tsv).
CORPUS = ROOT / "testdata" / "corpus"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}(:?\d{2})?)$")


def corpus_dir():
    # Part of the checkout, so never skipped: a missing corpus is a broken clone.
    assert (CORPUS / "cloudtrail").is_dir(), f"the bundled corpus is missing at {CORPUS}"
    return CORPUS / "cloudtrail"


def ingest(inputs, lake):
    out = subprocess.run([BIN, "ingest", *map(str, inputs), "--lake", str(lake)], capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def records_in(path: Path):
    """Every JSON value that is a CloudTrail record, as AWS and the corpus projects ship them."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)  # every member
    text = raw.decode("utf-8")
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
            yield from doc["Records"]
        elif isinstance(doc, list):
            yield from doc
        elif isinstance(doc, dict) and isinstance(doc.get("CloudTrailEvent"), str):
            yield json.loads(doc["CloudTrailEvent"])
        elif isinstance(doc, dict) and "digestStartTime" not in doc:
            yield doc


def epoch_ms(t: str) -> int:
    t = t.replace(" ", "T").replace("z", "Z").replace("Z", "+00:00")
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", t)
    frac = (m.group(2) or ".0")[1:4].ljust(3, "0")
    off = m.group(3)
    if re.fullmatch(r"[+-]\d{4}", off):
        off = off[:3] + ":" + off[3:]
    elif re.fullmatch(r"[+-]\d{2}", off):
        off += ":00"
    dt = datetime.fromisoformat(m.group(1) + off)
    return int(dt.timestamp()) * 1000 + int(frac)


def expected(paths):
    want = Counter()
    for p in paths:
        try:
            recs = list(records_in(p))
        except (ValueError, UnicodeDecodeError):
            continue  # not JSON at all: ingest must fail the file, checked elsewhere
        for r in recs:
            if not isinstance(r, dict) or r.get("eventType") == "AwsCloudTrailInsight":
                continue
            t = r.get("eventTime")
            if isinstance(t, str) and ISO.match(t):
                want[(r.get("eventID") if isinstance(r.get("eventID"), str) else None, epoch_ms(t))] += 1
    return want


def lake_rows(lake: Path):
    con = duckdb.connect()
    rows = con.execute(
        f"""SELECT event_id, epoch_ms(event_time) FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet',
            hive_partitioning = true, hive_types = {{'account_id': VARCHAR, 'region': VARCHAR, 'date': DATE}})"""
    ).fetchall()
    return Counter((e, int(t)) for e, t in rows)


@pytest.fixture(scope="module")
def corpus_lake(tmp_path_factory):
    src = corpus_dir()
    lake = tmp_path_factory.mktemp("lake")
    code, out, err = ingest([src], lake)
    return src, lake, code, out, err


def test_every_iso_record_of_the_corpus_lands_exactly_once(corpus_lake):
    src, lake, code, out, err = corpus_lake
    # One corpus file is a gzip that is not CloudTrail: the run reports it and exits 1.
    assert code == 1, err
    assert "1 failed" in out and "example.json.gz: not CloudTrail" in err
    files = [p for p in src.rglob("*") if p.is_file()]
    want = expected(files)
    got = lake_rows(lake)
    assert sum(want.values()) > 600
    assert got == want, (got - want, want - got)


def test_schema_types_and_partitions(corpus_lake):
    _, lake, *_ = corpus_lake
    con = duckdb.connect()
    desc = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet', hive_partitioning=false, union_by_name=true)").fetchall()}
    assert desc["event_time"] == "TIMESTAMP WITH TIME ZONE"
    assert desc["user_identity"].startswith("STRUCT(")
    assert "session_context STRUCT(attributes STRUCT(creation_date TIMESTAMP WITH TIME ZONE, mfa_authenticated BOOLEAN)" in desc["user_identity"]
    assert desc["resources"].endswith("[]")
    assert desc["read_only"] == "BOOLEAN"
    assert "account_id" not in desc and "date" not in desc, "partition values live in the path only"
    # Account ids keep their leading zeros.
    parts = {p.name for p in (lake / "cloudtrail").iterdir()}
    assert "account_id=012345678901" in parts
    # String booleans became booleans; unknown members are kept as JSON text.
    n = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet') WHERE user_identity.session_context.attributes.mfa_authenticated IS NOT NULL").fetchone()[0]
    assert n > 0
    for (u,) in con.execute(f"SELECT unknown_fields FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet') WHERE unknown_fields IS NOT NULL").fetchall():
        assert isinstance(json.loads(u), dict)


def test_athena_sql_runs_on_the_lake(corpus_lake):
    _, lake, *_ = corpus_lake
    athena = """
        SELECT event_source, event_name, count(*) AS calls,
               count_if(error_code IS NOT NULL) AS errors,
               approx_distinct(user_identity.arn) AS principals
        FROM cloudtrail
        WHERE "date" BETWEEN '2024-07-01' AND '2024-08-31' AND account_id <> 'unknown'
        GROUP BY 1, 2 ORDER BY calls DESC, event_name LIMIT 5"""
    duck = sqlglot.transpile(athena, read="athena", write="duckdb")[0]
    con = duckdb.connect()
    con.execute(
        f"""CREATE VIEW cloudtrail AS SELECT * FROM read_parquet('{lake}/cloudtrail/*/*/*/*.parquet',
            hive_partitioning = true, hive_types = {{'account_id': VARCHAR, 'region': VARCHAR, 'date': VARCHAR}})"""
    )
    rows = con.execute(duck).fetchall()
    assert len(rows) == 5
    assert all(r[2] >= r[3] for r in rows)


def test_rejects_name_object_place_and_reason(corpus_lake):
    _, lake, *_ = corpus_lake
    lines = [json.loads(l) for f in (lake / "_rejected").glob("*/*.jsonl") for l in f.read_text().splitlines()]
    assert lines
    for r in lines:
        assert r["key"] and r["reason"]
    assert any("eventTime" in r["reason"] and "index" in r and "line" in r for r in lines)
    assert any("not CloudTrail" in r["reason"] and r["key"].endswith("example.json.gz") for r in lines)


def test_bundled_sample_and_rerun_is_idempotent(tmp_path):
    sample = ROOT / "testdata" / "cloudtrail"
    lake = tmp_path / "lake"
    code, out, err = ingest([sample], lake)
    assert code == 0, err
    first = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
    rows = sum(lake_rows(lake).values())
    code, out2, _ = ingest([sample], lake)
    assert code == 0 and out2 == out
    assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == first
    assert sum(lake_rows(lake).values()) == rows == sum(expected([p for p in sample.rglob("*") if p.is_file()]).values())
    assert "skipped" in err and "digest" in err
