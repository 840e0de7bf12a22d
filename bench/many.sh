#!/usr/bin/env bash
# Benchmark of many functions: six images from one config file against six single publishes,
# and the unchanged rerun of six on an emptied engine.
#
#   bash bench/many.sh [--runs N]
#
# Installs/starts the local stack, then writes bench/many-results.md and the README block.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python -m bench.many "$@"
