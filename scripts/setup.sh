#!/usr/bin/env bash
# Create .venv (if missing) and install the suite with every implementation.
# EXTRAS picks fewer (e.g. EXTRAS=reference, or EXTRAS= for the core alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
# A full install takes about 4 GiB in .venv plus pip's unpacked wheels in
# TMPDIR; say so up front rather than leave pip's "No space left on device".
NEED_KIB=$((5 * 1024 * 1024))
for dir in . "${TMPDIR:-/tmp}"; do
    free_kib=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$free_kib" ] && [ "$free_kib" -lt "$NEED_KIB" ]; then
        echo "setup: only $((free_kib / 1024)) MiB free for $dir; a fresh install needs about 5 GiB" >&2
    fi
done
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
EXTRAS="${EXTRAS-all}"
if [ -n "$EXTRAS" ]; then
    # torch first, by its exact version, so nothing can pull another build.
    .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
