#!/usr/bin/env python3
"""Keeps the generated parts of infra/template.yaml in step with their sources, so nothing is
typed twice:

- each Glue table's `Columns` (between `# BEGIN columns <table>` and `# END columns <table>`)
  from `trailwatch schema --glue-json`, which derives them from the Arrow schemas the pipeline
  writes;
- each named query's `QueryString` (between `# BEGIN query <name>` and `# END query <name>`) from
  infra/queries/<name>.sql.

`sync.py --write` rewrites the template; `sync.py --check` (the tests) fails when it would
change anything. TRAILWATCH_BIN names the CLI binary (default target/debug/trailwatch).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra/template.yaml"
QUERIES = ROOT / "infra/queries"


def glue_columns(binary):
    out = subprocess.run([binary, "schema", "--glue-json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def render_columns(cols, indent):
    pad = " " * indent
    return "".join(f"{pad}- Name: {c['Name']}\n{pad}  Type: \"{c['Type']}\"\n" for c in cols)


def render_query(sql, indent):
    pad = " " * indent
    return f"{pad}QueryString: |\n" + "".join(f"{pad}  {line}\n" if line else "\n" for line in sql.rstrip("\n").split("\n"))


def replace_block(text, kind, name, body_for_indent):
    pat = re.compile(rf"^( *)# BEGIN {kind} {re.escape(name)}\n.*?^ *# END {kind} {re.escape(name)}\n", re.M | re.S)
    m = pat.search(text)
    if not m:
        raise SystemExit(f"template.yaml has no '# BEGIN {kind} {name}' ... '# END {kind} {name}' block")
    indent = len(m.group(1))
    pad = " " * indent
    block = f"{pad}# BEGIN {kind} {name}\n{body_for_indent(indent)}{pad}# END {kind} {name}\n"
    return text[: m.start()] + block + text[m.end():]


def synced(text, binary):
    for table, cols in glue_columns(binary).items():
        text = replace_block(text, "columns", table, lambda i, cols=cols: render_columns(cols, i))
    for q in sorted(QUERIES.glob("*.sql")):
        sql = q.read_text()
        text = replace_block(text, "query", q.stem, lambda i, sql=sql: render_query(sql, i))
    return text


def main():
    binary = os.environ.get("TRAILWATCH_BIN", str(ROOT / "target/debug/trailwatch"))
    mode = sys.argv[1] if len(sys.argv) > 1 else "--check"
    text = TEMPLATE.read_text()
    new = synced(text, binary)
    if mode == "--write":
        TEMPLATE.write_text(new)
    elif new != text:
        raise SystemExit("infra/template.yaml is out of step with the schemas or infra/queries: run infra/sync.py --write")


if __name__ == "__main__":
    main()
