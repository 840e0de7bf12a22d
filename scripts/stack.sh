#!/usr/bin/env bash
# Local test stack: Debian packages, the project venv, a running dockerd and a
# BuildKit-capable docker CLI shim.
#
#   scripts/stack.sh [up]    install/start whatever is missing (idempotent, fast when done)
#   scripts/stack.sh down    stop the dockerd that `up` started (nothing else)
#   scripts/stack.sh status  print what is there
#
# After `up`:  source .stack/env.sh   (puts .stack/bin and .venv/bin first on PATH,
# sets DOCKER_BUILDKIT=1).
#
# Base images (busybox, Debian python, Lambda Web Adapter stand-in) are made lazily
# by tests/support/stack.py, because no image can be pulled on this machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK="$ROOT/.stack"
VENV="$ROOT/.venv"
DOCKERD_PIDFILE="$STACK/dockerd.pid"
DOCKERD_LOG="$STACK/dockerd.log"

# Debian packages the stack needs; each maps to a command checked first.
# iproute2, openssl and util-linux (nsenter): the remote-engine tests make a second host in a
# network namespace, with certificates of their own. patchelf: sid's runc (engine matrix,
# below) is pointed at sid's own loader and libc. chromium: tests/support/render.py renders the
# job summary in it, through Playwright (whose own browser downloads are never used); the
# emoji font draws the few marks the summary uses, as GitHub's pages do.
APT_PACKAGES=(docker.io docker-registry debootstrap busybox-static apache2-utils git ca-certificates iproute2 openssl util-linux patchelf chromium fonts-noto-color-emoji)

# Mermaid, pinned so that a rendered summary (and its screenshot) only changes when this does.
MERMAID_VERSION=11.17.2

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages or start dockerd"
  SUDO=(sudo)
fi

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
}

apt_install() {
  log "apt-get install $*"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    # GitHub's runners have Docker CE, whose packages conflict with Debian's docker.io.
    if [ "$p" = docker.io ] && command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
      continue
    fi
    # Ubuntu's chromium package is a snap stub; GitHub's runners have a real Chromium or Chrome.
    if [ "$p" = chromium ] && command -v chromium chromium-browser google-chrome >/dev/null 2>&1; then
      continue
    fi
    pkg_installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    apt_install "${missing[@]}"
  fi
  # node runs the action's github-script step in a test; most machines have it already.
  if ! command -v node >/dev/null 2>&1; then
    apt_update_once
    apt_install nodejs
  fi
  # Debian packages npm apart from nodejs (NodeSource's nodejs and the runners include it).
  if ! command -v npm >/dev/null 2>&1; then
    apt_update_once
    apt_install npm
  fi
  # Debian 13+ ships buildx as its own package; bookworm (12) has none, and there the
  # Debian 20.10 CLI's built-in `DOCKER_BUILDKIT=1 docker build` is used instead.
  if ! pkg_installed docker-buildx \
    && [ -n "$(apt-cache show docker-buildx 2>/dev/null | head -n1)" ]; then
    apt_install docker-buildx || { apt_update_once && apt_install docker-buildx; }
  fi
}

# The named-builder tests need the buildx plugin. Debian 12 packages none, so there the
# stack takes Debian 13's docker-buildx (a static Go binary whose only dependency is
# libc6 >= 2.34) with apt itself, from the mirror this machine's apt already uses and
# checked against its archive keyring, and unpacks it into .stack/buildx/cli-plugins: a
# folder only those tests put on the CLI's plugin path, so the rest of the suite still
# tests Debian 12's own `DOCKER_BUILDKIT=1 docker build`. Without it those tests skip.
declare -A NEXT_SUITE=([bookworm]=trixie)

# The mirror this machine's apt uses for its own release (empty when there is none).
own_mirror() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' \
    | awk -v want="$codename" '$2 == want { print $1; exit }'
}

# apt_fetch MIRROR SUITE WORK PKG...: download PKGs of SUITE into WORK/debs with apt state of
# its own (checked against the archive keyring; an empty dpkg status, so the versions are
# SUITE's own, whatever this host has installed); apt's output goes to WORK/log.
apt_fetch() {
  local mirror="$1" suite="$2" work="$3" arch pkg
  shift 3
  arch=$(dpkg --print-architecture)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
  : >"$work/status"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$mirror" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg >"$work/apt.sources"
  local -a opts=(-o "Dir::Etc::SourceList=$work/apt.sources" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/status" -o "Dir::Cache=$work/cache"
    -o APT::Architecture="$arch" -o APT::Sandbox::User=root)
  local -a wanted=()
  for pkg in "$@"; do wanted+=("$pkg:$arch"); done
  (cd "$work/debs" && apt-get "${opts[@]}" -qq update && apt-get "${opts[@]}" -qq download "${wanted[@]}") \
    >"$work/log" 2>&1
}

ensure_test_buildx() {
  local plugin="$STACK/buildx/cli-plugins/docker-buildx" codename next mirror work
  [ -x "$plugin" ] && return 0
  /usr/bin/docker buildx version >/dev/null 2>&1 && return 0
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  next="${NEXT_SUITE[$codename]:-}"
  [ -n "$next" ] || return 0
  mirror=$(own_mirror)
  if [ -z "$mirror" ]; then
    log "no $codename mirror in apt's sources: the named-builder tests will skip"
    return 0
  fi
  work=$(mktemp -d)
  log "docker-buildx for the named-builder tests: from $next ($mirror)"
  if apt_fetch "$mirror" "$next" "$work" docker-buildx \
    && dpkg-deb -x "$work"/debs/docker-buildx_*.deb "$work/root" \
    && [ -x "$work/root/usr/libexec/docker/cli-plugins/docker-buildx" ]; then
    mkdir -p "$(dirname "$plugin")"
    mv "$work/root/usr/libexec/docker/cli-plugins/docker-buildx" "$plugin"
  else
    tail -n 5 "$work/log" >&2 || true
    log "could not fetch docker-buildx from $next: the named-builder tests will skip"
  fi
  rm -rf "$work"
}

# The engine-matrix tests (tests/test_engines.py, tests/support/engines.py) run the action
# against Docker 28.5 / containerd 2.1 / buildx 0.29 as well as Debian 12's 20.10. Those are
# Debian sid's packages: fetched with apt from the mirror this machine's apt already uses,
# checked against the archive keyring, and only unpacked into .stack/engines/sid/root (no
# maintainer scripts, nothing installed system-wide). Their binaries are static Go or need
# glibc <= 2.36 and libraries Debian 12 has, except runc (glibc 2.38): its copy there gets
# sid's loader and libc through PT_INTERP and DT_RPATH (LD_LIBRARY_PATH cannot pick a loader,
# and a wrapper script would break runc's re-exec of /proc/self/exe). Without a sid mirror
# the engine-matrix tests skip.
ENGINE_PACKAGES=(docker.io docker-cli containerd runc docker-buildx tini-static libc6 libseccomp2)
ensure_sid_engine() {
  local dest="$STACK/engines/sid" mirror work
  # runc names its loader by absolute path: a checkout that moved fetches again.
  if [ -f "$dest/stamp" ] && "$dest/root/usr/sbin/runc" --version >/dev/null 2>&1; then
    return 0
  fi
  mirror=$(own_mirror)
  if [ -z "$mirror" ]; then
    log "no mirror in apt's sources: the engine-matrix tests will skip"
    return 0
  fi
  mkdir -p "$STACK/engines"
  # Made beside its destination and renamed into place: a half-done fetch never looks done.
  work=$(mktemp -d "$STACK/engines/.sid.XXXXXX")
  log "Docker 28 / containerd 2 / buildx engine for the engine-matrix tests: from sid ($mirror)"
  if ! apt_fetch "$mirror" sid "$work" "${ENGINE_PACKAGES[@]}"; then
    tail -n 5 "$work/log" >&2 || true
    log "could not fetch sid's engine packages: the engine-matrix tests will skip"
    rm -rf "$work"
    return 0
  fi
  local deb
  for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
    printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$work/versions"
  done
  if ! patch_sid_runc "$work/root" "$dest/root" >>"$work/log" 2>&1 || ! check_sid_engine "$work/root"; then
    tail -n 5 "$work/log" >&2 || true
    log "sid's engine does not run here: the engine-matrix tests will skip"
    rm -rf "$work"
    return 0
  fi
  rm -rf "$work/lists" "$work/cache" "$work/debs" "$work/status" "$work/apt.sources" "$dest"
  mv "$work" "$dest"
  if ! "$dest/root/usr/sbin/runc" --version >/dev/null 2>"$dest/log"; then
    tail -n 5 "$dest/log" >&2 || true
    log "sid's runc does not start with sid's libc: the engine-matrix tests will skip"
    rm -rf "$dest"
    return 0
  fi
  date -u +%FT%TZ >"$dest/stamp"
  log "sid engine in $dest: $(awk '$1 ~ /^(docker.io|containerd|docker-buildx)$/ { printf "%s%s %s", sep, $1, $2; sep=", " }' "$dest/versions")"
}

# `unpacked` is where runc is now, `final` where the root will be once moved into place: the
# loader path written into runc must be the final one.
patch_sid_runc() {
  local unpacked="$1" final="$2" runc interp libc libdir
  runc="$unpacked/usr/sbin/runc"
  interp=$(patchelf --print-interpreter "$runc")
  # usr-merged: sid's libc6 ships the loader under usr/ only.
  [ -e "$unpacked/usr$interp" ] && interp="/usr$interp"
  [ -e "$unpacked$interp" ] || { echo "no $interp in sid's libc6"; return 1; }
  libc=$(find "$unpacked/usr/lib" -name libc.so.6 -print -quit)
  [ -n "$libc" ] || { echo "no libc.so.6 in sid's libc6"; return 1; }
  libdir=$(dirname "${libc#"$unpacked"}")
  # DT_RPATH, not RUNPATH: it wins over an LD_LIBRARY_PATH the engine might inherit.
  patchelf --set-interpreter "$final$interp" --set-rpath "$final$libdir" --force-rpath "$runc"
}

# Every dynamic binary must load here (runc through the final path, so only its version).
check_sid_engine() {
  local root="$1" bin missing
  for bin in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2 \
    usr/bin/docker usr/libexec/docker/cli-plugins/docker-buildx; do
    [ -x "$root/$bin" ] || { log "sid's engine has no $bin"; return 1; }
    missing=$(ldd "$root/$bin" 2>&1 | grep -E 'not found|version .* not found' || true)
    [ -z "$missing" ] || { log "$bin: $missing"; return 1; }
  done
  [ -x "$root/usr/bin/docker-init" ] || { log "sid's docker.io has no docker-init (tini-static)"; return 1; }
  return 0
}

ensure_venv() {
  local stamp="$STACK/venv.stamp" want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py=$(command -v python3 || true)
    [ -n "$py" ] || die "python3 not found"
    log "creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  log "pip install -e '.[dev]'"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[dev]')
  printf '%s\n' "$want" >"$stamp"
}

# mermaid's browser bundle for tests/support/render.py, from npm into .stack/npm (scripts off:
# only dist/mermaid.min.js is read). A present install of the pinned version is kept, so a
# machine that has it needs no network.
ensure_mermaid() {
  local dest="$STACK/npm" have work
  have=$(node -e 'process.stdout.write(require(process.argv[1]).version)' \
    "$dest/node_modules/mermaid/package.json" 2>/dev/null || true)
  if [ "$have" = "$MERMAID_VERSION" ] && [ -s "$dest/node_modules/mermaid/dist/mermaid.min.js" ]; then
    return 0
  fi
  # Made beside its destination and renamed into place: a half-done install never looks done.
  work=$(mktemp -d "$STACK/.npm.XXXXXX")
  log "npm install mermaid@$MERMAID_VERSION into $dest"
  if ! npm install --prefix "$work" --save-exact --ignore-scripts --no-audit --no-fund --loglevel=error \
    "mermaid@$MERMAID_VERSION" >"$work.log" 2>&1; then
    tail -n 20 "$work.log" >&2 || true
    rm -rf "$work" "$work.log"
    die "npm could not install mermaid@$MERMAID_VERSION (the summary rendering tests need it)"
  fi
  rm -rf "$dest" "$work.log"
  mv "$work" "$dest"
}

# Pick a docker CLI that can build with BuildKit: one where `docker buildx version`
# works (Debian 13 docker-buildx, or any CLI with the plugin), else Debian's own
# /usr/bin/docker (20.10, BuildKit built in via DOCKER_BUILDKIT=1). Static CLIs without
# the buildx plugin (e.g. a Docker 28 CLI in /usr/local/bin) refuse DOCKER_BUILDKIT=1.
pick_docker_cli() {
  local c
  local -a candidates=()
  while IFS= read -r c; do
    candidates+=("$c")
  done < <(type -ap docker 2>/dev/null | grep -v "^$STACK/bin/" || true)
  candidates+=(/usr/bin/docker)
  for c in "${candidates[@]}"; do
    [ -x "$c" ] || continue
    if "$c" buildx version >/dev/null 2>&1; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  [ -x /usr/bin/docker ] || die "no docker CLI at /usr/bin/docker (package docker.io)"
  printf '%s\n' /usr/bin/docker
}

ensure_shim() {
  local cli
  cli=$(pick_docker_cli)
  mkdir -p "$STACK/bin"
  if [ "$(readlink "$STACK/bin/docker" 2>/dev/null || true)" != "$cli" ]; then
    ln -sfn "$cli" "$STACK/bin/docker"
    log "docker CLI shim: $STACK/bin/docker -> $cli"
  fi
}

docker_ok() {
  timeout 20 "$STACK/bin/docker" info >/dev/null 2>&1
}

ensure_dockerd() {
  if docker_ok; then
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found (package docker.io)"
  log "starting dockerd (log: $DOCKERD_LOG)"
  : >"$DOCKERD_LOG"
  # setsid: keep dockerd out of the caller's process group so it outlives this script.
  "${SUDO[@]}" setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$DOCKERD_PIDFILE"
  local i
  for i in $(seq 1 60); do
    if docker_ok; then
      log "dockerd is up after ${i}s"
      return 0
    fi
    if ! kill -0 "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd exited during start-up; see $DOCKERD_LOG"
    fi
    sleep 1
  done
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not answer \`docker info\` within 60 s; see $DOCKERD_LOG"
}

write_env() {
  local env="$STACK/env.sh" tmp
  tmp=$(mktemp "$STACK/env.sh.XXXXXX")
  cat >"$tmp" <<EOF
# Generated by scripts/stack.sh; source it: . .stack/env.sh
export PATH="$STACK/bin:$VENV/bin:\$PATH"
export DOCKER_BUILDKIT=1
export STACK_ROOT="$ROOT"
EOF
  if cmp -s "$tmp" "$env"; then rm -f "$tmp"; else mv "$tmp" "$env"; fi
}

cmd_up() {
  mkdir -p "$STACK" "$STACK/cache"
  ensure_packages
  ensure_test_buildx
  ensure_sid_engine
  ensure_venv
  ensure_mermaid
  ensure_shim
  ensure_dockerd
  write_env
  log "ready: source $STACK/env.sh"
}

cmd_down() {
  if [ ! -f "$DOCKERD_PIDFILE" ]; then
    log "no dockerd started by this script"
    return 0
  fi
  local pid
  pid=$(cat "$DOCKERD_PIDFILE")
  if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    log "stopping dockerd (pid $pid)"
    "${SUDO[@]}" kill -TERM "$pid"
    local i
    for i in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && die "dockerd (pid $pid) still running after 30 s"
  else
    log "dockerd pid $pid is not running"
  fi
  rm -f "$DOCKERD_PIDFILE"
}

cmd_status() {
  local p
  for p in "${APT_PACKAGES[@]}" docker-buildx; do
    if pkg_installed "$p"; then echo "package $p: installed"; else echo "package $p: missing"; fi
  done
  echo "venv: $([ -x "$VENV/bin/python" ] && echo present || echo missing)"
  echo "mermaid: $(node -e 'process.stdout.write(require(process.argv[1]).version)' \
    "$STACK/npm/node_modules/mermaid/package.json" 2>/dev/null || echo missing)"
  if [ -f "$STACK/engines/sid/stamp" ]; then
    echo "sid engine: $(paste -sd, "$STACK/engines/sid/versions")"
  else
    echo "sid engine: missing"
  fi
  echo "docker shim: $(readlink "$STACK/bin/docker" 2>/dev/null || echo missing)"
  if docker_ok; then echo "dockerd: answering"; else echo "dockerd: not answering"; fi
  [ -f "$DOCKERD_PIDFILE" ] && echo "dockerd started by stack.sh: pid $(cat "$DOCKERD_PIDFILE")"
  return 0
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 [up|down|status]" ;;
esac
