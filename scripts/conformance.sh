#!/usr/bin/env bash
# The main job: set up, then run the conformance suite over every installed
# implementation and write the HTML report.  Extra arguments go to
# `convlstm-conformance run` (e.g. --profile nightly, --adapters a,b).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/convlstm-conformance run "$@"
