#!/usr/bin/env bash
# Checks the deployable stack offline: cfn-lint, checkov, `sam validate --lint`, the generated
# parts of the template against their sources, and (with --build) a real `sam build` of the three
# functions for x86_64, whose binaries infra/smoke.py then runs under cargo-lambda's Lambda
# emulator against moto, fed the events the stack wires. The build is a debug build unless
# SAM_BUILD_MODE says otherwise: a release build (thin LTO, through zig) takes 2.5 times as long
# and proves nothing more about the wiring. arm64 is not built here: rustup cannot
# fetch its standard library offline.
# Installs its tools into venvs under $INFRA_VENVS (default .venv-infra) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venvs=${INFRA_VENVS:-$PWD/.venv-infra}
build=false
[ "${1:-}" = "--build" ] && build=true

venv() { # name requirements
  if [ ! -x "$venvs/$1/bin/python" ]; then
    python3 -m venv "$venvs/$1"
  fi
  "$venvs/$1/bin/pip" install --quiet --disable-pip-version-check -r "$2"
}
venv sam infra/requirements.txt
venv checkov infra/requirements-checkov.txt
if $build; then
  "$venvs/sam/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements-build.txt
fi

# SAM and cfn-lint need a region and credentials to exist, not to be valid: nothing is called.
export AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline
export SAM_CLI_TELEMETRY=0

echo "cfn-lint"
"$venvs/sam/bin/cfn-lint" infra/template.yaml
echo "checkov"
"$venvs/checkov/bin/checkov" --framework cloudformation --skip-download --compact --quiet -f infra/template.yaml
echo "sam validate --lint"
"$venvs/sam/bin/sam" validate --lint -t infra/template.yaml
echo "generated parts"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --quiet -p trailwatch-cli
TRAILWATCH_BIN="$target_dir/debug/trailwatch" python3 infra/sync.py --check

if $build; then
  mode=${SAM_BUILD_MODE:-debug}
  echo "sam build (x86_64, $mode)"
  out=${SAM_BUILD_DIR:-$target_dir/sam-build}
  # cargo-lambda runs as a cargo subcommand: its venv goes first on PATH.
  PATH="$venvs/sam/bin:$PATH" SAM_BUILD_MODE=$mode "$venvs/sam/bin/sam" build \
    -t infra/template.yaml --parameter-overrides Architecture=x86_64 --build-dir "$out"
  echo "smoke: the built functions, wired as the stack wires them"
  tests_venv=${TRAILWATCH_VENV:-$PWD/.venv}
  if [ ! -x "$tests_venv/bin/python" ]; then
    python3 -m venv "$tests_venv"
  fi
  "$tests_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  CARGO_LAMBDA="$venvs/sam/bin/cargo-lambda" MOTO_SERVER="$tests_venv/bin/moto_server" \
    "$tests_venv/bin/python" infra/smoke.py "$out" x86_64
fi
echo "infra checks passed"
