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
# actionlint checks workflows only (not composite action.yml files), project by project:
# this repository's and each example's, since a reusable workflow (`uses: ./.github/...`)
# is resolved from the project that holds it.
# actionlint takes the folder holding .git as the project, so each example is linted in a
# copy of its own that looks like a repository.
found=0
while IFS= read -r -d '' dir; do
  found=1
  project="$(dirname "$(dirname "$dir")")"
  if [ "$project" = . ]; then
    actionlint .github/workflows/*.y*ml
  else
    copy="$(mktemp -d)"
    cp -R "$project/.github" "$copy/" && mkdir "$copy/.git"
    (cd "$copy" && actionlint .github/workflows/*.y*ml) || { rm -rf "$copy"; exit 1; }
    rm -rf "$copy"
  fi
done < <(find . \( -path ./.venv -o -path ./.stack -o -path ./.git \) -prune -o \
  -type d -path '*/.github/workflows' -print0 | sort -z)
[ "$found" -eq 1 ] || echo "no workflow files"

echo "== pytest"
rc=0
pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
