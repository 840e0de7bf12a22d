#!/usr/bin/env bash
# Benchmark: the action against plain `docker login/build/tag/push` (naive, and careful:
# --cache-from the previous image with the inline cache), on the example SSE Lambda, in five
# cases (clean, no change, code changed, three successive code changes, dependencies changed),
# each measured run on a freshly emptied engine.
#
#   bash bench/run.sh [--runs N] [--cases clean,no-change,code,chain,deps]
#                     [--engine host|classic|containerd]
#
# Installs/starts the local stack (scripts/stack.sh), then `python -m bench` starts its own
# registries and moto on free 127.0.0.1 ports, makes the local base images, runs every case
# and writes bench/results.md and the README's benchmark block (full runs only).
# --engine classic|containerd: on Debian sid's Docker 28.5 + buildx 0.29 with that image
# store, started for the run (needs root); the pip step installs from wheels downloaded on
# the host (bench/offline.py); writes bench/results-<engine>.md, not the README.
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
