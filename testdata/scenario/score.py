#!/usr/bin/env python3
"""Replays a generated scenario through `trailwatch run` in delivery order and scores the findings.

    score.py --scenario DIR --trailwatch BIN [--batch-minutes 60] [--learn-batch-minutes N] [--work WORKDIR] [--json OUT.json]
    score.py --scenario DIR --work WORKDIR --rescore [--json OUT.json]

Deliveries (DIR/deliveries.tsv) are grouped into batches of --batch-minutes by delivery time. For
each batch it runs

    BIN run <files of the batch...> --lake WORK/lake --state WORK/state --findings WORK/findings.jsonl

(in DIR, with the files named relative to it) and takes every line appended to findings.jsonl as
reported at the batch's end. --learn-batch-minutes sets another batch length for the deliveries
before the scored week (60 there and 5 after it measures 5-minute runs in a fraction of the
time: nothing before the scored week is scored). A finding counts
when it is open, not suppressed, not of severity info, and starts in the scored period. It
detects an incident when it has the incident's kind, account and region, a matching subject, and
a start in [incident start - 15 min, incident end + 30 min]. Counted findings that detect no
incident are false findings, except an `event_time_skew` finding in the account-region of a
`forged` label that expects one (generate.py --forge-future): that finding is the point.

An incident may list `may_also_raise`: [{"kind", "subject"}] that it legitimately raises besides
its own kind (a noisy neighbour's victims' `throttling`, the culprit's `concurrency_spike`). A
counted finding that detects no incident but matches such an entry (its kind, a matching subject,
the incident's account and region, a start in the incident's window, as for a detection) is an
expected side finding: neither a detection nor a false finding, and not held against a benign
event. They are counted and listed apart (`expected_side_findings`).

--rescore skips the replay and scores WORK/findings.reported.jsonl from an earlier run (the
findings with the time each was reported), to tune the report without replaying.

Exit status: 0 when the replay ran (whatever the score), 2 when it failed.
"""
import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

SKEW_KIND = "event_time_skew"  # raised for records whose event time is ahead of the wall clock
BEFORE = timedelta(minutes=15)
AFTER = timedelta(minutes=30)
MAX_ARG_BYTES = 96 * 1024
MAX_ARGS = 2000


def parse_time(s):
    if not isinstance(s, str) or not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def fmt(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


# --- replay ---------------------------------------------------------------------------------


def chunks(paths):
    out, size = [], 0
    for p in paths:
        if out and (len(out) >= MAX_ARGS or size + len(p) + 1 > MAX_ARG_BYTES):
            yield out
            out, size = [], 0
        out.append(p)
        size += len(p) + 1
    if out:
        yield out


def read_deliveries(scenario):
    deliveries = []
    with open(scenario / "deliveries.tsv") as f:
        for line in f:
            if line.strip():
                t, rel = line.rstrip("\n").split("\t", 1)
                deliveries.append((parse_time(t), rel))
    deliveries.sort(key=lambda x: x[0])
    return deliveries


def batch_end(t, batch_minutes, start, learn=None):
    """The end of the batch that holds a delivery at `t`: when its run reports."""
    if learn and t < learn[1]:
        ls = timedelta(minutes=learn[0])
        return min(learn[1], start + ls * (int((t - start) / ls) + 1))
    base = learn[1] if learn else start
    step = timedelta(minutes=batch_minutes)
    return base + step * (int((t - base) / step) + 1)


def replay(scenario, binary, work, batch_minutes, start, learn=None):
    """`learn` = (minutes, until): batches of that length before `until` (the scored week's start),
    so a 5-minute replay does not spend its time on the learning weeks."""
    lake, state, findings = work / "lake", work / "state", work / "findings.jsonl"
    for p in (lake, state):
        if p.exists():
            shutil.rmtree(p)
    for p in (findings, work / "findings.reported.jsonl"):
        if p.exists():
            p.unlink()
    work.mkdir(parents=True, exist_ok=True)
    deliveries = read_deliveries(scenario)
    batches = defaultdict(list)  # the batch's end -> files
    for t, rel in deliveries:
        batches[batch_end(t, batch_minutes, start, learn)].append(rel)
    reported = []  # (reported at, finding)
    offset = 0
    stats = {"batches": len(batches), "runs": 0, "files": len(deliveries), "exit_codes": defaultdict(int), "bad_lines": 0}
    t0 = time.monotonic()
    out = open(work / "findings.reported.jsonl", "w")
    for n, k in enumerate(sorted(batches)):
        at = k
        for files in chunks(batches[k]):
            cmd = [binary, "run", *files, "--lake", str(lake), "--state", str(state), "--findings", str(findings)]
            # Inputs are named relative to the scenario folder, as S3 keys would be: folders above it
            # are not part of the delivery and must not leak into what ingest reads from the key.
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=scenario)
            stats["runs"] += 1
            stats["exit_codes"][str(r.returncode)] += 1
            if r.returncode not in (0, 1):
                tail = "\n".join((r.stderr or "").splitlines()[-20:])
                print(f"replay failed: `{binary} run` ({len(files)} files, batch ending {fmt(at)}) exited {r.returncode}:\n{tail}", file=sys.stderr)
                stats["seconds"] = round(time.monotonic() - t0, 1)
                stats["failed"] = True
                return reported, stats
            if findings.exists():
                with open(findings, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1  # a line still being written waits for the next run
                offset += end
                for line in data[:end].decode("utf-8", "replace").splitlines():
                    if not line.strip():
                        continue
                    try:
                        fd = json.loads(line)
                    except json.JSONDecodeError:
                        stats["bad_lines"] += 1
                        continue
                    if not isinstance(fd, dict):
                        stats["bad_lines"] += 1
                        continue
                    reported.append((at, fd))
                    out.write(json.dumps({"reported_at": fmt(at), "finding": fd}) + "\n")
        if (n + 1) % 48 == 0:
            print(f"  {n + 1}/{len(batches)} batches, up to {fmt(at)}, {len(reported)} finding lines, "
                  f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
    out.close()
    stats["seconds"] = round(time.monotonic() - t0, 1)
    return reported, stats


def load_reported(work):
    reported = []
    with open(work / "findings.reported.jsonl") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                reported.append((parse_time(d["reported_at"]), d["finding"]))
    return reported


# --- the delivery floor ---------------------------------------------------------------------


def evidence_tokens(subject):
    """Strings a record about `subject` holds: a function's name, an API's `"eventName"`, a
    principal's ARN, CloudTrail's own source."""
    if subject == "cloudtrail":
        return ['"cloudtrail.amazonaws.com"']
    if ":" in subject and not subject.startswith("arn:"):
        return [f'"eventName":"{subject.rsplit(":", 1)[1]}"']
    return [subject]


def records_of(path):
    """(event time, text) of each record in a delivered file: CloudTrail `Records`, the log events
    of the Firehose payloads (concatenated JSON documents) with their log group, or metric-stream
    datapoints (newline-delimited JSON, the function in `dimensions`)."""
    data = gzip.decompress(path.read_bytes())
    dec = json.JSONDecoder()
    text, i = data.decode("utf-8", "replace"), 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        doc, i = dec.raw_decode(text, i)
        for r in doc.get("Records") or []:
            yield parse_time(r.get("eventTime")), json.dumps(r, separators=(",", ":"))
        for e in doc.get("logEvents") or []:
            yield datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc), doc.get("logGroup", "") + " " + e.get("message", "")
        if "metric_name" in doc and isinstance(doc.get("timestamp"), (int, float)):
            yield datetime.fromtimestamp(doc["timestamp"] / 1000, timezone.utc), json.dumps(doc, separators=(",", ":"))


def delivery_floors(scenario, labels, horizon=timedelta(hours=2)):
    """Per incident, when the first file holding a record about its subject (or a related one)
    timed within the incident was delivered: no run can report it sooner. A lower bound, since
    the first such record need not be decisive."""
    incs = labels["incidents"]
    first = {}
    for t, rel in read_deliveries(scenario):
        open_ = [inc for inc in incs if inc["id"] not in first and parse_time(inc["start"]) <= t <= parse_time(inc["start"]) + horizon]
        if not open_ or not rel.endswith(".gz") and "cwlogs" not in rel:
            continue
        try:
            recs = list(records_of(scenario / rel))
        except (OSError, ValueError, EOFError):
            continue
        for inc in open_:
            lo, hi = parse_time(inc["start"]), parse_time(inc["end"])
            toks = [tok for sub in [inc["subject"], *(inc.get("related_subjects") or [])] for tok in evidence_tokens(sub)]
            if any(ts is not None and lo <= ts <= hi and any(tok in txt for tok in toks) for ts, txt in recs):
                first[inc["id"]] = t
    return first


# --- matching -------------------------------------------------------------------------------


def subject_forms(s):
    """The subject and the forms it may be named by: an assumed role's role ARN, a function's name."""
    if not isinstance(s, str) or not s.strip():
        return set()
    s = s.strip()
    forms = {s.lower()}
    low = s.lower()
    if low.startswith("arn:aws:sts::") and ":assumed-role/" in low:
        acct = low.split("::", 1)[1].split(":", 1)[0]
        role = s.split(":assumed-role/", 1)[1].split("/", 1)[0]
        forms.add(f"arn:aws:iam::{acct}:role/{role}".lower())
    if ":function:" in s:
        forms.add(s.split(":function:", 1)[1].split(":", 1)[0].lower())
    return forms


def last_segment(s):
    if ":function:" in s:
        s = s.split(":function:", 1)[1].split(":", 1)[0]
    return s.replace("/", ":").rstrip(":").rsplit(":", 1)[-1]


def subject_match(a, b):
    fa, fb = subject_forms(a), subject_forms(b)
    for x in fa:
        for y in fb:
            if x == y or x in y or y in x or last_segment(x) == last_segment(y):
                return True
    return False


def in_window(t, start, end):
    return t is not None and start - BEFORE <= t <= end + AFTER


def counted(reported, scored_start, end):
    """Counted findings by id: the first line of each id that is open, unsuppressed, not info, and
    starts in the scored period, with the time it was reported."""
    out = {}
    for i, (at, fd) in enumerate(reported):
        fid = fd.get("id") if isinstance(fd.get("id"), str) and fd.get("id") else f"line-{i}"
        if fid in out:
            continue
        if fd.get("status") != "open" or fd.get("suppressed") is True or fd.get("severity") == "info":
            continue
        st = parse_time(fd.get("start"))
        if st is None or not (scored_start <= st < end):
            continue
        out[fid] = {"id": fid, "reported_at": at, "start_t": st, "kind": fd.get("kind"), "account_id": fd.get("account_id"),
                    "region": fd.get("region"), "subject": fd.get("subject"), "start": fd.get("start"),
                    "severity": fd.get("severity"), "summary": fd.get("summary")}
    return list(out.values())


def matches(f, inc, any_kind=False):
    if not any_kind and f["kind"] != inc["kind"]:
        return False
    if f["account_id"] != inc["account_id"] or f["region"] != inc["region"]:
        return False
    subjects = [inc.get("subject")] + list(inc.get("related_subjects") or [])
    if not any(subject_match(f["subject"], s) for s in subjects):
        return False
    return in_window(f["start_t"], parse_time(inc["start"]), parse_time(inc["end"]))


def side_match(f, inc):
    """Whether a finding is one the incident may legitimately also raise (`may_also_raise`): its
    kind and subject, in the incident's account, region and window."""
    return any(matches(f, {**inc, "kind": s.get("kind"), "subject": s.get("subject"), "related_subjects": []})
               for s in inc.get("may_also_raise") or [])


def forged_match(f, labels):
    """An event-time skew finding in the account-region of a forged file that expects one."""
    return f.get("kind") == SKEW_KIND and any(
        fl.get("expect_finding") and f.get("account_id") == fl["account_id"] and f.get("region") == fl["region"]
        for fl in labels.get("forged") or [])


def score_forged(labels, reported):
    """Each forged file (generate.py --forge-future) and whether an event-time skew finding was
    reported in its account-region: any line, whatever its status, severity or start, since the
    finding's times are not the scenario's."""
    skew = [fd for _, fd in reported if fd.get("kind") == SKEW_KIND]
    rows = []
    for fl in labels.get("forged") or []:
        hits = [fd for fd in skew if fd.get("account_id") == fl["account_id"] and fd.get("region") == fl["region"]]
        rows.append({k: fl.get(k) for k in ("id", "claims", "account_id", "region", "path", "delivered", "expect_finding")} |
                    {"skew_findings": len({fd.get("id") for fd in hits})})
    expect = [r for r in rows if r["expect_finding"]]
    return {"files": len(rows), "expect_finding": len(expect), "with_finding": sum(1 for r in expect if r["skew_findings"]),
            "skew_finding_ids": sorted({str(fd.get("id")) for fd in skew}), "list": rows}


def score(labels, reported, stats, floors=None):
    """`floors`: incident id -> minutes from its start to the end of the batch holding its first
    evidence (delivery_floors)."""
    floors = floors or {}
    scored_start, end = parse_time(labels["scored_start"]), parse_time(labels["end"])
    findings = counted(reported, scored_start, end)
    incidents = []
    for inc in labels["incidents"]:
        hits = [f for f in findings if matches(f, inc)]
        row = {"id": inc["id"], "kind": inc["kind"], "account_id": inc["account_id"], "region": inc["region"],
               "subject": inc["subject"], "start": inc["start"], "end": inc["end"], "detected": bool(hits),
               "time_to_detect_min": None, "finding_id": None, "findings": len(hits),
               "floor_min": floors.get(inc["id"])}
        if hits:
            first = min(hits, key=lambda f: (f["reported_at"], f["start_t"]))
            row["time_to_detect_min"] = round((first["reported_at"] - parse_time(inc["start"])).total_seconds() / 60, 1)
            row["finding_id"] = first["id"]
        incidents.append(row)
    by_kind = {}
    for kind in sorted({i["kind"] for i in incidents}):
        rows = [i for i in incidents if i["kind"] == kind]
        ttd = [i["time_to_detect_min"] for i in rows if i["detected"]]
        fl = [i["floor_min"] for i in rows if i["floor_min"] is not None]
        by_kind[kind] = {"incidents": len(rows), "detected": len(ttd), "recall": round(len(ttd) / len(rows), 3),
                         "median_ttd_min": round(statistics.median(ttd), 1) if ttd else None,
                         "max_ttd_min": max(ttd) if ttd else None,
                         "median_floor_min": round(statistics.median(fl), 1) if fl else None}
    detected = sum(1 for i in incidents if i["detected"])
    days = [(scored_start + timedelta(days=d)).strftime("%Y-%m-%d") for d in range((end - scored_start).days)]
    per_day = {d: 0 for d in days}
    false, side = [], []
    for f in findings:
        if any(matches(f, inc) for inc in labels["incidents"]) or forged_match(f, labels):
            continue
        of = [inc["id"] for inc in labels["incidents"] if side_match(f, inc)]
        if of:
            side.append({"id": f["id"], "kind": f["kind"], "account_id": f["account_id"], "region": f["region"],
                         "subject": f["subject"], "start": f["start"], "severity": f["severity"], "summary": f["summary"],
                         "reported_at": fmt(f["reported_at"]), "incidents": of})
            continue
        day = f["start_t"].strftime("%Y-%m-%d")
        per_day[day] = per_day.get(day, 0) + 1
        near = [inc["id"] for inc in labels["incidents"] if matches(f, inc, any_kind=True)]
        benign = [i for i, b in enumerate(labels.get("benign", [])) if matches(f, b, any_kind=True)]
        false.append({"id": f["id"], "kind": f["kind"], "account_id": f["account_id"], "region": f["region"],
                      "subject": f["subject"], "start": f["start"], "severity": f["severity"], "summary": f["summary"],
                      "reported_at": fmt(f["reported_at"]), "near_incidents": near,
                      "benign": [labels["benign"][i]["description"] for i in benign]})
    false.sort(key=lambda x: (x["start"] or "", x["kind"] or ""))
    side.sort(key=lambda x: (x["start"] or "", x["kind"] or ""))
    side_ids = {x["id"] for x in side}
    for row in incidents:
        row["side_findings"] = sum(1 for x in side if row["id"] in x["incidents"])
    benign_rows = []
    for b in labels.get("benign", []):
        # A finding that detects an incident (or is one it may also raise) is not the benign
        # event's, even where they share a subject (a sweeper's API that an attacker sweeps too).
        hits = [f for f in findings if matches(f, b, any_kind=True) and f["id"] not in side_ids
                and not any(matches(f, inc) for inc in labels["incidents"])]
        benign_rows.append({**{k: b.get(k) for k in ("description", "account_id", "region", "subject", "start", "end")},
                            "findings": [{"id": f["id"], "kind": f["kind"], "subject": f["subject"], "start": f["start"]} for f in hits]})
    n_days = max(1, len(days))
    extra = {"forged": score_forged(labels, reported)} if labels.get("forged") else {}
    return {
        "replay": {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in stats.items()},
        "finding_lines": len(reported), "counted_findings": len(findings),
        "by_kind": by_kind,
        "overall": {"incidents": len(incidents), "detected": detected, "recall": round(detected / len(incidents), 3) if incidents else None,
                    "median_ttd_min": median([i["time_to_detect_min"] for i in incidents if i["detected"]]),
                    "median_floor_min": median([i["floor_min"] for i in incidents if i["floor_min"] is not None]),
                    "median_beyond_floor_min": median([i["time_to_detect_min"] - i["floor_min"] for i in incidents
                                                       if i["detected"] and i["floor_min"] is not None])},
        "false_findings": {"total": len(false), "per_day": per_day, "mean_per_day": round(len(false) / n_days, 2), "list": false},
        "expected_side_findings": {"total": len(side), "list": side},
        "benign": {"total": len(benign_rows), "with_findings": sum(1 for b in benign_rows if b["findings"]), "list": benign_rows},
        "incidents": incidents,
        **extra,
    }


def median(xs):
    return round(statistics.median(xs), 1) if xs else None


def trunc(s, n):
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def print_report(res):
    rp = res["replay"]
    if rp:
        print(f"replay: {rp.get('batches')} batches, {rp.get('runs')} runs of `run`, {rp.get('files')} files, "
              f"{rp.get('seconds')} s; exit codes {rp.get('exit_codes')}; bad finding lines {rp.get('bad_lines', 0)}")
    print(f"finding lines: {res['finding_lines']}; counted findings (open, not suppressed, not info, in the scored week): {res['counted_findings']}")
    print()
    def m(x):
        return "-" if x is None else f"{x:.1f}"
    print(f"{'kind':<20} {'incidents':>9} {'detected':>8} {'recall':>6} {'median TTD min':>14} {'max TTD min':>11} {'median floor min':>16}")
    for kind, k in res["by_kind"].items():
        print(f"{kind:<20} {k['incidents']:>9} {k['detected']:>8} {k['recall']:>6.2f} {m(k['median_ttd_min']):>14} "
              f"{m(k['max_ttd_min']):>11} {m(k.get('median_floor_min')):>16}")
    o = res["overall"]
    print(f"{'overall':<20} {o['incidents']:>9} {o['detected']:>8} {(o['recall'] or 0):>6.2f} {m(o.get('median_ttd_min')):>14} "
          f"{'':>11} {m(o.get('median_floor_min')):>16}")
    print(f"median minutes beyond the delivery floor: {m(o.get('median_beyond_floor_min'))} (the floor: the end of the batch "
          "that delivered the first record of the incident's subject in its window)")
    print()
    for i in res["incidents"]:
        what = f"detected after {i['time_to_detect_min']} min by {i['finding_id']}" if i["detected"] else "MISSED"
        if i.get("floor_min") is not None:
            what += f" (floor {i['floor_min']} min)"
        if i.get("side_findings"):
            what += f"; {i['side_findings']} expected side finding(s)"
        print(f"  {i['id']:<28} {i['account_id']} {i['region']:<9} {trunc(i['subject'], 48):<48} {i['start']}  {what}")
    ff = res["false_findings"]
    print()
    print(f"false findings: {ff['total']} ({ff['mean_per_day']} per scored day)")
    print("  " + "  ".join(f"{d[5:]}: {n}" for d, n in ff["per_day"].items()))
    for f in ff["list"]:
        note = ""
        if f["near_incidents"]:
            note = f"  [near {', '.join(f['near_incidents'])}]"
        if f["benign"]:
            note += "  [benign]"
        print(f"  {trunc(f['kind'], 18):<18} {f['account_id']} {f['region']:<9} {trunc(f['subject'], 40):<40} {f['start']}  {trunc(f['summary'], 70)}{note}")
    sf = res.get("expected_side_findings") or {"total": 0, "list": []}
    print()
    print(f"expected side findings (listed by an incident's may_also_raise; neither detections nor false): {sf['total']}")
    for f in sf["list"]:
        print(f"  {trunc(f['kind'], 18):<18} {f['account_id']} {f['region']:<9} {trunc(f['subject'], 40):<40} {f['start']}  "
              f"[{', '.join(f['incidents'])}]  {trunc(f['summary'], 60)}")
    b = res["benign"]
    print()
    print(f"benign events that drew a finding: {b['with_findings']} of {b['total']}")
    for row in b["list"]:
        if row["findings"]:
            kinds = ", ".join(sorted({f["kind"] or "?" for f in row["findings"]}))
            print(f"  {row['start']} {row['account_id']} {row['region']:<9} {trunc(row['description'], 60):<60} {len(row['findings'])} ({kinds})")
    fg = res.get("forged")
    if fg:
        print()
        print(f"forged files: {fg['files']}; expecting an {SKEW_KIND} finding: {fg['expect_finding']}, "
              f"in an account-region that has one: {fg['with_finding']}; {SKEW_KIND} findings: {len(fg['skew_finding_ids'])}")
        for row in fg["list"]:
            print(f"  {row['id']:<16} {row['account_id']} {row['region']:<9} delivered {row['delivered']}  claims {row['claims']:<5} "
                  f"{'expects' if row['expect_finding'] else 'no need of'} a finding; skew findings there: {row['skew_findings']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", required=True, type=Path)
    ap.add_argument("--trailwatch", help="the trailwatch binary")
    ap.add_argument("--batch-minutes", type=int, default=60)
    ap.add_argument("--learn-batch-minutes", type=int,
                    help="batch length before the scored week (default: --batch-minutes); findings before it are not scored")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", type=Path, help="also write the result as JSON here")
    ap.add_argument("--rescore", action="store_true", help="score WORK/findings.reported.jsonl of an earlier replay")
    a = ap.parse_args()
    labels = json.loads((a.scenario / "labels.json").read_text())
    tmp = None
    if a.rescore:
        if not a.work:
            ap.error("--rescore needs --work")
        reported, stats = load_reported(a.work), {}
    else:
        if not a.trailwatch:
            ap.error("--trailwatch is required")
        if a.batch_minutes <= 0:
            ap.error("--batch-minutes must be positive")
        work = a.work
        if work is None:
            tmp = tempfile.mkdtemp(prefix="trailwatch-score-")
            work = Path(tmp)
        try:
            binary = a.trailwatch if os.sep not in a.trailwatch else str(Path(a.trailwatch).resolve())
            learn = (a.learn_batch_minutes, parse_time(labels["scored_start"])) if a.learn_batch_minutes else None
            reported, stats = replay(a.scenario.resolve(), binary, work.resolve(), a.batch_minutes, parse_time(labels["start"]), learn)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        if stats.get("failed"):
            if a.json:
                a.json.write_text(json.dumps({"replay": {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in stats.items()}}, indent=2) + "\n")
            sys.exit(2)
    learn = (a.learn_batch_minutes, parse_time(labels["scored_start"])) if a.learn_batch_minutes else None
    first = delivery_floors(a.scenario, labels)
    floors = {inc["id"]: round((batch_end(first[inc["id"]], a.batch_minutes, parse_time(labels["start"]), learn)
                                - parse_time(inc["start"])).total_seconds() / 60, 1)
              for inc in labels["incidents"] if inc["id"] in first}
    res = score(labels, reported, stats, floors)
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
