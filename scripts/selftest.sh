#!/usr/bin/env bash
# The project's own tests: set up, then run tests/ and reference/tests/ (the
# testpaths of pyproject.toml).  No test collected is a failure here
# (pytest's exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest tests reference/tests -n 2 -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "selftest: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$rc"
