#!/usr/bin/env bash
# Benchmark of promotion: the promote action against pull/tag/push through the Docker engine,
# same registry and across registries.
#
#   bash bench/promote.sh [--runs N]
#
# Installs/starts the local stack, then writes bench/promote-results.md and the README block.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python -m bench.promote "$@"
