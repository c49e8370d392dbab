#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the Python test tools (moto, DuckDB, sqlglot,
# pytest) into .venv, runs the Rust tests (the Lambda tests start and stop their own moto
# server on 127.0.0.1), then reads the lake back with DuckDB.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRAILWATCH_VENV:-$PWD/.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
export PATH="$venv/bin:$PATH"
export MOTO_SERVER="$venv/bin/moto_server"

cargo test --workspace --exclude trailwatch-baseline --features trailwatch-ingest/lambda,trailwatch-detect/aws,trailwatch-alert/lambda
# The warm start links polars (a long build): its own test build, once.
cargo test -p trailwatch-cli --features baseline --test baseline
cargo build -p trailwatch-cli
cargo build -p trailwatch-alert --example email
target_dir=$(cargo metadata --format-version 1 --no-deps | python -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# The scenario replays write lakes of tens of thousands of small files, ~3 GB a run: pytest works
# in a folder of its own, removed after a passing run (a failing run's stays for a look, and goes
# after half a day). Replays that runs from before this left under pytest's default folder (which
# keeps three runs whatever their outcome) go too: a CI machine once ran out of disk with them.
tmp=${TMPDIR:-/tmp}
rm -rf "$tmp"/pytest-of-"$(id -un)"/pytest-*/scenario-*
find "$tmp" -maxdepth 1 -name 'trailwatch-pytest.*' -mmin +720 -exec rm -rf {} + 2>/dev/null || true
basetemp=$(mktemp -d "$tmp/trailwatch-pytest.XXXXXX")
if ! TRAILWATCH_BIN="$target_dir/debug/trailwatch" python -m pytest -q --basetemp "$basetemp" tests/python; then
  echo "pytest failed; its temporary files are in $basetemp" >&2
  exit 1
fi
rm -rf "$basetemp"
