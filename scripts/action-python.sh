#!/usr/bin/env bash
# Gives the action a Python with its dependencies, without touching the job's own Python:
# a venv in the runner's temp folder, keyed by the action's own files, reused when a job
# calls the action more than once. Writes `python=<path>` to GITHUB_OUTPUT.
#
# Only the action's code runs here: every Python start is isolated (-I), so neither the
# workspace (the current folder, which Python would put first on sys.path: a `venv.py` or
# `pip/` in the checkout would run) nor PYTHONPATH/PYTHONSTARTUP/PYTHONHOME steer it, and
# the commands run from the action's folder, not the checkout.
set -euo pipefail
action_path="${ACTION_PATH:?ACTION_PATH is not set}"
action_path="$(cd "$action_path" && pwd -P)"
cd "$action_path"
# -I covers the Pythons started here, not their children: venv runs ensurepip in a
# subprocess, which would still read PYTHONPATH (a sitecustomize.py there runs at start).
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PYTHON' || true)
python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  echo "::error::python3 is not on this runner's PATH. Fix: use an Ubuntu runner or run actions/setup-python before this step."
  exit 1
fi
# Keyed by the package's files too: two refs of the action in one job must not share a venv.
key="$(cat "$action_path/pyproject.toml" "$action_path"/entrypoint/*.py | sha256sum | cut -c1-16)"
venv="${RUNNER_TEMP:-/tmp}/lambda-image-publish-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  start=$(date +%s)
  "$python" -I -m venv "$venv"
  "$venv/bin/python" -I -m pip install --quiet --disable-pip-version-check "$action_path"
  touch "$venv/.complete"
  echo "Installed the action's Python environment in $venv ($(( $(date +%s) - start )) s)"
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "python=$venv/bin/python" >> "$GITHUB_OUTPUT"
else
  echo "python=$venv/bin/python"
fi
