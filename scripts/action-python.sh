#!/usr/bin/env bash
# Gives the action a Python with exactly its locked dependencies, without touching the job's
# own Python: a venv in the runner's temp folder, keyed by the lock and the action's code,
# reused when a job calls the action again, if it is still the one this script made (see
# "Reuse" below). Writes `python=<path>` to GITHUB_OUTPUT.
#
# What is installed is lock/runtime.txt (and lock/ssh.txt when the Docker engine is reached
# over ssh), nothing else: binary wheels only, every one checked against its sha256, no
# dependency resolution. scripts/install.py fetches them all at once from the index's JSON
# API and installs them with pypa/installer (lock/setup.txt, hash-checked the same way): a
# cold set-up takes about a second and a half, where `python -m venv` + `pip install` took
# eight to ten, and uv two and a half (it first fetched its own 18 MB binary). The job's pip
# and uv settings cannot change what is installed (-I, behaviour variables unset, no pip
# configuration file read by the fallback's pip); an index or mirror they name is still
# used to download, which the hashes make safe.
#
# Only the action's code runs here: every Python start is isolated (-I), so neither the
# workspace (the current folder, which Python would put first on sys.path) nor PYTHONPATH /
# PYTHONSTARTUP / PYTHONHOME steer it, and the commands run from the action's folder.
set -euo pipefail
started=$(date +%s%N)
action_path="${ACTION_PATH:?ACTION_PATH is not set}"
action_path="$(cd "$action_path" && pwd -P)"
cd "$action_path"
# -I covers the Pythons started here, not their children; PYTHON* must not reach those.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PYTHON' || true)

fail() {
  echo "::error::$1"
  exit 1
}

python="$(command -v python3 || true)"
[ -n "$python" ] || fail "python3 is not on this runner's PATH. Fix: use an Ubuntu runner or run actions/setup-python before this step."
runtime_lock="$action_path/lock/runtime.txt"
setup_lock="$action_path/lock/setup.txt"
ssh_lock="$action_path/lock/ssh.txt"
[ -f "$runtime_lock" ] && [ -f "$setup_lock" ] && [ -f "$ssh_lock" ] || fail "the action's lock files are missing from $action_path/lock. Fix: pin a released version of the action (a tag or its commit SHA)."

# docker-py reaches an ssh:// engine through paramiko, which only those jobs need: the
# context the builder input names (a context's builder is that context's engine), else the
# job's DOCKER_HOST, else the host of its Docker context (DOCKER_CONTEXT, or the config's
# current one) says whether this job is one.
engine_host() {
  local builder="${BUILDER_INPUT:-}" host=""
  if [ -n "$builder" ] && [ "$builder" != default ] && command -v docker >/dev/null 2>&1; then
    host="$(docker context inspect --format '{{.Endpoints.docker.Host}}' "$builder" 2>/dev/null || true)"
    if [ -n "$host" ]; then
      echo "$host"
      return
    fi
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "$DOCKER_HOST"
    return
  fi
  local context="${DOCKER_CONTEXT:-}" config="${DOCKER_CONFIG:-${HOME:-/nonexistent}/.docker}/config.json"
  # Most runners have no current context: a grep spares them the Python start.
  if [ -z "$context" ] && [ -f "$config" ] && grep -q currentContext "$config"; then
    context="$("$python" -I -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("currentContext") or "")
except (OSError, ValueError, AttributeError):
    pass' "$config")"
  fi
  if [ -n "$context" ] && [ "$context" != default ] && command -v docker >/dev/null 2>&1; then
    docker context inspect --format '{{.Endpoints.docker.Host}}' "$context" 2>/dev/null || true
  fi
}
locks=("$runtime_lock")
case "$(engine_host)" in
  ssh://*) locks+=("$ssh_lock") ;;
esac
# Keyed by everything that decides the environment: two refs of the action in one job do
# not share one, and a changed lock (or the ssh extra) is a new one.
key="$( {
  cat "${locks[@]}" "$setup_lock" "$action_path/scripts/install.py"
  find "$action_path/entrypoint" -name '*.py' -print0 | LC_ALL=C sort -z | xargs -0 cat
} | sha256sum | cut -c1-16)"

# Reuse. The venv's name is no secret (anyone can compute the key), so a folder of that name
# is taken only when no other user can have made or changed it, and only if it is still what
# this script left:
# - its temp folder is RUNNER_TEMP, else /tmp, whichever no other user can change: it and
#   each folder above it belong to this user or root and are writable by no one else, or
#   carry the sticky bit as /tmp does (others then neither remove nor rename what is ours).
#   (A job container run as root sees RUNNER_TEMP owned by the runner's user: its /tmp.)
#   Neither: nothing is shared, a private venv (mktemp -d) is made for this step alone;
# - the venv folder is a real folder (not a link), owned by this user, mode 0700, so no
#   other user can write in it. One of another user's is left alone (in /tmp it cannot be
#   removed): the name is theirs, a private venv is made;
# - .complete holds a sha256 over every path, mode, size, modification time and link target
#   in the venv, written when it was made and recomputed by the runner's Python (never the
#   venv's) before each reuse: a venv that a later step installed into (a new .pth), whose
#   files were replaced or that was half-removed, is rebuilt. Only the same user (an earlier
#   step of the job) can write in the venv, and that user could as well rewrite .complete or
#   the action's own files, so hashing every file's content (19 MB: 0.25 s on a fresh
#   runner's cold page cache, past the 0.2 s a second use may take) would guard nothing more.
# A reuse takes about 0.05 s with the check (1100 files, stat only).
uid="$(id -u)"
shared_folder() { # $1 and every folder above it: what no other user can change
  local dir="$1" dirs=() owner mode found=0
  while [ -n "$dir" ]; do
    dirs+=("$dir")
    dir="${dir%/*}"
  done
  dirs+=(/)
  while read -r owner mode; do
    [ "$owner" = "$uid" ] || [ "$owner" = 0 ] || return 1
    if (((8#$mode & 8#022) && !(8#$mode & 8#1000))); then return 1; fi
    found=$((found + 1))
  done < <(stat -c '%u %a' -- "${dirs[@]}" 2>/dev/null)
  [ "$found" = "${#dirs[@]}" ]
}
ours() { # $1 is a folder of this user alone
  [ ! -L "$1" ] && [ -d "$1" ] && [ "$(stat -c '%u %a' -- "$1")" = "$uid 700" ]
}
venv_digest() {
  "$python" -I -S - "$1" <<'PYTHON'
import hashlib, os, stat, sys

total = hashlib.sha256()
def visit(folder, prefix):
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = prefix + entry.name
        if path == ".complete":
            continue
        info = entry.stat(follow_symlinks=False)
        detail = ""
        if stat.S_ISLNK(info.st_mode):
            detail = os.readlink(entry.path)
        elif stat.S_ISREG(info.st_mode):
            detail = f"{info.st_size}:{info.st_mtime_ns}"
        total.update(f"{path}\0{info.st_mode:o}\0{detail}\0".encode("utf-8", "surrogateescape"))
        if stat.S_ISDIR(info.st_mode):
            visit(entry.path, path + "/")
visit(sys.argv[1], "")
print(total.hexdigest())
PYTHON
}

write_output() {
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "python=$venv/bin/python" >>"$GITHUB_OUTPUT"
  else
    echo "python=$venv/bin/python"
  fi
}

temp=""
for candidate in "${RUNNER_TEMP:-}" /tmp; do
  if [ -n "$candidate" ] && candidate="$(cd "$candidate" 2>/dev/null && pwd -P)" && shared_folder "$candidate"; then
    temp="$candidate"
    break
  fi
done
venv="$temp/lambda-image-publish-$key"
private=""
if [ -z "$temp" ]; then
  temp="$(cd "${RUNNER_TEMP:-/tmp}" && pwd -P)"
  private="other users can change $temp or a folder above it"
elif [ -L "$venv" ] || { [ -e "$venv" ] && [ "$(stat -c %u -- "$venv")" != "$uid" ]; }; then
  private="$venv is not this user's"
elif ours "$venv" && [ -f "$venv/.complete" ] && [ "$(venv_digest "$venv")" = "$(cat "$venv/.complete")" ]; then
  write_output
  exit 0
elif ! rm -rf -- "$venv" 2>/dev/null || ! mkdir -m 700 -- "$venv" 2>/dev/null; then
  private="$venv could not be made anew"
fi
if [ -n "$private" ]; then
  echo "Not sharing the action's environment ($private): this step makes a private one."
  venv="$(mktemp -d "$temp/lambda-image-publish-private-XXXXXXXX")"
fi

# The job's installer settings stay out: they could redirect the target, add packages or
# allow source builds. Index, mirror, proxy and certificate settings stay in.
while IFS= read -r name; do
  case "$name" in
    PIP_INDEX_URL | PIP_EXTRA_INDEX_URL | PIP_TRUSTED_HOST | PIP_CERT | PIP_CLIENT_CERT | PIP_PROXY) ;;
    PIP_DEFAULT_TIMEOUT | PIP_TIMEOUT) ;;
    UV_INDEX_URL | UV_DEFAULT_INDEX) ;;
    *) unset "$name" ;;
  esac
done < <(compgen -e | grep -E '^(PIP|UV)_' || true)
# pip, the fallback, reads no UV_* variable.
uv_index="${UV_DEFAULT_INDEX:-${UV_INDEX_URL:-}}"
if [ -n "$uv_index" ] && [ -z "${PIP_INDEX_URL:-}" ]; then
  export PIP_INDEX_URL="$uv_index"
fi
# The installers' output, in a folder of this step's own (a fixed name in a shared /tmp
# could be a link planted to make this script write elsewhere).
work="$(mktemp -d "$temp/lambda-image-publish-setup-XXXXXXXX")"
trap 'rm -rf -- "$work"' EXIT
log="$work/install.log"

explain() {
  # $1: what failed; the installer's own words are in $log.
  local why="the index could not be reached or refused the download"
  if grep -qiE 'hash|do not match' "$log"; then
    why="a downloaded wheel does not match its sha256 in the lock (the index served other bytes, or the lock was edited)"
  elif grep -qiE 'not name==version|not its wheel|URLs are fetched' "$log"; then
    why="the index named a file that is not the locked wheel, or a URL that is not https"
  elif grep -qiE 'no matching distribution|not find a version|not available for|no wheels' "$log"; then
    why="the lock has no wheel for this runner's Python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
  fi
  echo "Installer output:"
  tail -n 20 "$log" | sed 's/^/  | /'
  rm -rf "$venv"
  fail "$1 failed: $why. Fix: check the runner's access to the package index (or its mirror in pip or uv settings), use Python 3.10 or later, and do not edit lock/*.txt by hand (scripts/lock.py writes them)."
}

# Fast path (scripts/install.py): every locked wheel from the index's JSON API at once,
# installed with pypa/installer. It exits 3 where it cannot (no JSON API, an index that
# needs pip's credentials or does not answer) and the runner's pip installs the same locks,
# with the same hashes, instead.
status=0
"$python" -I "$action_path/scripts/install.py" "$venv" "$action_path/entrypoint" "${locks[@]}" >"$log" 2>&1 || status=$?
if [ "$status" = 3 ]; then
  # Emptied, not removed: the folder keeps its mode 0700 and its name.
  find "$venv" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
  mv "$log" "$work/fast.log"
  # Seconds slower than the fast path: say why, so a slow set-up is explained in the log. URLs
  # are left out: a private index can carry a token in its path.
  why="$(tail -n 1 "$work/fast.log" | sed -E 's#[A-Za-z][A-Za-z0-9+.-]*://[^ ]*#<URL>#g')"
  echo "The fast installer cannot be used here ($why): pip installs the same locks, with the same hashes."
  if ! "$python" -I -m venv --without-pip "$venv" >"$log" 2>&1; then
    explain "making the action's venv"
  fi
  site="$("$venv/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  requirements=()
  for lock in "${locks[@]}"; do requirements+=(-r "$lock"); done
  # pip's configuration files can name more than an index: requirements ([install]
  # requirement=), constraints, find-links, a target. pip reads none with PIP_CONFIG_FILE=
  # /dev/null (--isolated would still read /etc/pip.conf, $XDG_CONFIG_DIRS/pip/pip.conf and
  # the Python's own, and ignore the variables below), and gets from install.py only their
  # network settings (index, mirrors, certificates, proxy, timeout) as its sole PIP_*
  # variables, which keep a token in an index URL off the command line.
  "$python" -I "$action_path/scripts/install.py" --pip-environment >"$work/pip-environment" 2>"$log" ||
    explain "reading pip's network settings"
  mapfile -t network <"$work/pip-environment"
  if ! (
    while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^PIP_' || true)
    export PIP_CONFIG_FILE=/dev/null "${network[@]}"
    exec "$python" -I -m pip install --disable-pip-version-check --no-input --quiet --no-deps \
      --require-hashes --only-binary :all: --no-compile --no-cache-dir --target "$site" "${requirements[@]}"
  ) >"$log" 2>&1; then
    grep -q "No module named pip" "$log" && fail "python3 at $python has no pip, and $(tail -n 1 "$work/fast.log"). Fix: let the runner reach the package index's JSON API, or install python3-pip."
    explain "installing the locked dependencies (lock/${locks[*]##*/lock/})"
  fi
  # The action's own package: copied, not built, so no build backend runs. actions-toolkit's
  # wheel ships its tests as a top-level package: removed.
  "$venv/bin/python" -I - "$action_path/entrypoint" "$site" <<'PYTHON'
import compileall, shutil, sys
from pathlib import Path
site = Path(sys.argv[2])
shutil.copytree(sys.argv[1], site / "entrypoint", ignore=shutil.ignore_patterns("__pycache__"))
shutil.rmtree(site / "tests", ignore_errors=True)
compileall.compile_dir(site, quiet=2, workers=0)
PYTHON
elif [ "$status" != 0 ]; then
  explain "installing the locked dependencies (lock/${locks[*]##*/lock/})"
fi
digest="$(venv_digest "$venv")"
echo "$digest" >"$venv/.complete"
echo "Set up the action's locked Python environment in $venv ($(( ($(date +%s%N) - started) / 1000000 )) ms)"
write_output
