#!/usr/bin/env bash
# Everything CI runs: the local stack, then lint, types, workflow lint and tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k registry).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh

echo "== ruff"
ruff check .

echo "== mypy"
mypy
mypy tests/support

echo "== actionlint"
# actionlint checks workflows only (not composite action.yml files): every
# .github/workflows/ directory, the examples' included.
workflows=()
while IFS= read -r -d '' f; do
  workflows+=("$f")
done < <(find . \( -path ./.venv -o -path ./.stack -o -path ./.git \) -prune -o \
  -path '*/.github/workflows/*' \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)
if [ "${#workflows[@]}" -gt 0 ]; then
  actionlint "${workflows[@]}"
else
  echo "no workflow files"
fi

echo "== pytest"
rc=0
pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
