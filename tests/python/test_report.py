"""`trailwatch report` in a real browser: the demo's page opens in headless Chromium without a
console error, and the denial-of-wallet chart plots what the lake holds (DuckDB counts the same
invocations per 5 minutes, the points sit where the scale puts them) with the episode marked where
the finding says. Chromium is Debian's `chromium` package; `.ci/run` installs it."""

import html.parser
import json
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The chart's geometry (cli/src/report.rs).
H, TOP, BOTTOM = 220.0, 12.0, 28.0


class Dom(html.parser.HTMLParser):
    """Elements of interest, with their attributes and the section they are in."""

    def __init__(self):
        super().__init__()
        self.sections, self.section = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = {"attrs": a, "svg": None, "points": [], "episode": None}
            self.sections.append(self.section)
        elif self.section is not None and tag == "svg":
            self.section["svg"] = a
        elif self.section is not None and tag == "circle" and a.get("class") == "point":
            self.section["points"].append(a)
        elif self.section is not None and tag == "rect" and a.get("class") == "episode":
            self.section["episode"] = a


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run([BIN, "demo", "--out", str(out), "--quiet"], check=True, capture_output=True, text=True)
    return out


def chromium(page, profile):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    # As root (CI) Chromium needs --no-sandbox; background networking off, or it tries Google's
    # hosts on a closed network.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom"]
    r = subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def test_the_report_opens_cleanly_and_its_chart_is_the_lake(demo, tmp_path):
    page = demo / "report.html"
    dom_text, log = chromium(page, tmp_path / "profile")
    console = [l for l in log.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    assert console == [], console
    assert "<svg" in dom_text and "</html>" in dom_text

    dom = Dom()
    dom.feed(dom_text)
    findings = [json.loads(l) for l in (demo / "findings.jsonl").read_text().splitlines()]
    spike = [f for f in findings if f["kind"] == "concurrency_spike" and f["subject"] == "orders-api"]
    opened = next(f for f in spike if f["status"] == "open")
    closed = next(f for f in spike if f["status"] == "closed")
    sec = next(s for s in dom.sections if s["attrs"].get("data-id") == opened["id"])

    # The episode marker is the finding's episode.
    ms = lambda iso: int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    assert int(sec["episode"]["data-start"]) == ms(opened["start"])
    assert int(sec["episode"]["data-end"]) == ms(closed["end"])

    # Every plotted point is the lake's count of orders-api invocations starting in its window.
    width = int(sec["svg"]["data-width-ms"])
    ts = [int(p["data-t"]) for p in sec["points"]]
    assert len(ts) > 50 and all(b - a == width for a, b in zip(ts, ts[1:]))
    lake = demo / "lake" / "lambda_invocations"
    rows = duckdb.sql(f"""
        SELECT (epoch_ms(start_time) // {width}) * {width} AS t, count(*) AS n
        FROM read_parquet('{lake}/*/*/*/*.parquet', hive_partitioning = true,
                          hive_types = {{'account_id': VARCHAR, 'region': VARCHAR, 'date': DATE}})
        WHERE account_id = '{opened["account_id"]}' AND region = '{opened["region"]}' AND function_name = 'orders-api'
          AND start_time >= make_timestamptz({ts[0]} * 1000) AND start_time < make_timestamptz({ts[-1] + width} * 1000)
        GROUP BY 1""").fetchall()
    expected = {int(t): float(n) for t, n in rows}
    plotted = {int(p["data-t"]): float(p["data-v"]) for p in sec["points"]}
    assert plotted == {t: expected.get(t, 0.0) for t in plotted}
    # The spike is in the picture: the episode's windows far above the hours before it.
    inside = [v for t, v in plotted.items() if ms(opened["start"]) <= t < ms(closed["end"])]
    before = [v for t, v in plotted.items() if t < ms(opened["start"])]
    assert min(inside) > 10 * max(before), (inside, before)

    # And each point is drawn where the scale puts its value.
    ymax = float(sec["svg"]["data-ymax"])
    for p in sec["points"]:
        y = TOP + (1 - float(p["data-v"]) / ymax) * (H - TOP - BOTTOM)
        assert abs(float(p["cy"]) - y) < 0.11, p
