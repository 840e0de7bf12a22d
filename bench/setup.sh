#!/usr/bin/env bash
# Benchmark of the action's start-up: the locked set-up against v1.0.0's, warm reuse, and the
# whole action under nektos/act on a fresh runner (unchanged republish of the example).
#
#   bash bench/setup.sh [--runs N] [--engine host|classic|containerd]
#
# Installs/starts the local stack, then writes bench/setup-results.md and the README block
# (--engine classic|containerd: the whole action on Debian sid's Docker 28.5 with that image
# store, into bench/setup-results-<engine>.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python -m bench.setup "$@"
