#!/usr/bin/env bash
# Benchmark of issue 3: the action against a plain `docker login/build/tag/push`, on the
# example SSE Lambda, in four cases (clean, no change, code changed, dependencies changed),
# each measured run on a freshly emptied engine.
#
#   bash bench/run.sh [--runs N] [--cases clean,no-change,code,deps]
#
# Installs/starts the local stack (scripts/stack.sh), then `python -m bench` starts its own
# registries and moto on free 127.0.0.1 ports, makes the local base images, runs every case
# and writes bench/results.md and the README's benchmark block (full runs only).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
started=$(date +%s)
bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh
status=0
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python -m bench "$@" || status=$?
echo "bench/run.sh: total wall time $(( $(date +%s) - started )) s (exit $status)"
exit "$status"
