#!/usr/bin/env bash
# Install edge-gru as a systemd service on a Raspberry Pi-class Linux device.
#
#   sudo deploy/install.sh                      install or upgrade from this source tree
#   sudo deploy/install.sh --wheel FILE.whl     install or upgrade from a built wheel
#   sudo deploy/install.sh --uninstall          remove it all except the state (checkpoints)
#   sudo deploy/install.sh --uninstall --purge  remove the state too
#
# Options:
#   --prefix ROOT     install under ROOT instead of / (staging and tests): every path in the
#                     unit and the config points into ROOT, and systemctl is not called
#   --from DIR        source tree to install (default: the tree holding this script)
#   --wheel FILE      install this wheel instead of building one from a source tree
#   --model DIR       model bundle to install as the default (default: DIR/models/default)
#   --python PY       Python 3.11-3.13 used to make the virtual environment (default: python3)
#   --pip-args ARGS   extra pip arguments, e.g. "--index-url URL" or "--no-index --find-links DIR"
#   --kernels KIND    which compiled kernels to build: host (default: fastest, for this CPU model),
#                     generic (any CPU of this architecture, for an image), all, or jit (numba's
#                     JIT cache only; ahead-of-time kernels need gcc, g++ and python3-dev)
#   --no-precompile   do not compile the kernels now (the first start compiles them)
#
# What goes where (ROOT is empty without --prefix):
#   ROOT/opt/edge-gru/venv -> venvs/<stamp>   the virtual environment: edge-gru[device], no TensorFlow
#   ROOT/opt/edge-gru/models/default          the default model bundle
#   ROOT/etc/edge-gru/edge-gru.toml           the config, made once from the example, never overwritten
#   ROOT/etc/systemd/system/edge-gru.service  the unit
#   ROOT/var/cache/edge-gru                   compiled kernels (NUMBA_CACHE_DIR)
#   ROOT/var/lib/edge-gru                     the daemon's state: kept by --uninstall
#
# Re-running it upgrades: a new environment is built next to the running one and switched
# to in one step (a failed upgrade leaves the old one serving), then the service restarts.
set -euo pipefail

ROOT="" SRC="" WHEEL="" MODEL="" PY="python3" PIP_ARGS="" UNINSTALL=0 PURGE=0 PRECOMPILE=1 KERNELS="host"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
say() { printf 'edge-gru install: %s\n' "$*"; }
die() { printf 'edge-gru install: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) ROOT="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) ROOT="${1#*=}"; shift ;;
    --from) SRC="${2:?--from needs a directory}"; shift 2 ;;
    --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
    --model) MODEL="${2:?--model needs a bundle directory}"; shift 2 ;;
    --python) PY="${2:?--python needs an interpreter}"; shift 2 ;;
    --pip-args) PIP_ARGS="${2?--pip-args needs a string}"; shift 2 ;;
    --pip-args=*) PIP_ARGS="${1#*=}"; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --no-precompile) PRECOMPILE=0; shift ;;
    --kernels) KERNELS="${2:?--kernels needs host, generic, all or jit}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) printf 'edge-gru install: unknown argument %s\n\n' "$1" >&2; usage 2 ;;
  esac
done

case "$KERNELS" in
  host|generic|all|jit) ;;
  *) die "--kernels $KERNELS: choose host, generic, all or jit" ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
  if [ "$ROOT" = "/" ]; then ROOT=""; fi
fi
OPT="$ROOT/opt/edge-gru"
VENVS="$OPT/venvs"
CONF_DIR="$ROOT/etc/edge-gru"
CONF="$CONF_DIR/edge-gru.toml"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/edge-gru.service"
CACHE="$ROOT/var/cache/edge-gru"
STATE="$ROOT/var/lib/edge-gru"

# systemctl only for the real root of a running systemd (not in a prefix, chroot or container build)
use_systemctl() { [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 $*), or use --prefix DIR to install into a directory"
fi

# ---------------------------------------------------------------------------- uninstall
if [ "$UNINSTALL" -eq 1 ]; then
  if use_systemctl; then
    systemctl disable --now edge-gru.service 2>/dev/null || true
  fi
  if [ -f "$CONF" ] && [ -f "$CONF.example" ] && ! cmp -s "$CONF" "$CONF.example" && [ "$PURGE" -eq 0 ]; then
    # The user's edits outlive the package, next to the state that is kept anyway.
    mkdir -p "$STATE"
    cp -p "$CONF" "$STATE/edge-gru.toml.saved"
    say "your edited config is saved as $STATE/edge-gru.toml.saved"
  fi
  rm -rf "$UNIT" "$UNIT.d" "$UNIT_DIR/multi-user.target.wants/edge-gru.service"
  rm -rf "$OPT" "$CONF_DIR" "$CACHE" "$ROOT/var/cache/private/edge-gru"
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$STATE" "$ROOT/var/lib/private/edge-gru"
    say "removed edge-gru and its state"
  else
    say "removed edge-gru; the state in $STATE is kept (--uninstall --purge removes it)"
  fi
  if use_systemctl; then
    systemctl daemon-reload
    systemctl reset-failed edge-gru.service 2>/dev/null || true
  fi
  exit 0
fi

# ---------------------------------------------------------------------------- checks
case "$(uname -m)" in
  x86_64|aarch64|arm64) ;;
  armv6l|armv7l|armhf)
    die "this is a 32-bit ARM system ($(uname -m)): numba and LiteRT publish no wheels for it.
  Install a 64-bit OS (Raspberry Pi OS 64-bit runs on a Pi 3, 4, 5 and Zero 2), or run the model
  as plain C: 'edge-gru export-c MODEL --out DIR' on a desktop, then build DIR on the device." ;;
  *) say "warning: untested architecture $(uname -m); pip may have to build numba from source" ;;
esac
command -v "$PY" >/dev/null 2>&1 || die "$PY not found (apt-get install python3 python3-venv, or --python PATH)"
pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$pyver" in
  3.11|3.12|3.13) ;;
  2.*|3.[0-9]|3.10) die "$PY is Python $pyver; edge-gru needs 3.11 or newer (--python PATH)" ;;
  *) say "warning: Python $pyver is newer than the tested 3.11-3.13; numba may have no wheel for it yet" ;;
esac
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY cannot make virtual environments (apt-get install python3-venv)"

if [ -n "$WHEEL" ]; then
  [ -f "$WHEEL" ] || die "--wheel $WHEEL: no such file"
  WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
  [ -n "$SRC" ] || SRC="$(dirname "$HERE")"
else
  [ -n "$SRC" ] || SRC="$(dirname "$HERE")"
  [ -f "$SRC/pyproject.toml" ] || die "--from $SRC: no pyproject.toml there (give the edge-gru source tree, or --wheel FILE)"
fi
SRC="$(cd "$SRC" && pwd)"
[ -n "$MODEL" ] || MODEL="$SRC/models/default"
[ -f "$MODEL/manifest.json" ] || die "model bundle $MODEL: no manifest.json there (give one with --model DIR)"
DEPLOY="$SRC/deploy"
[ -f "$DEPLOY/edge-gru.service" ] || DEPLOY="$HERE"
[ -f "$DEPLOY/edge-gru.service" ] || die "no edge-gru.service next to $0 or in $SRC/deploy"
[ -f "$DEPLOY/edge-gru.toml" ] || die "no example config edge-gru.toml in $DEPLOY"

mkdir -p "$OPT" "$VENVS"
exec 9>"$OPT/.install.lock"
if command -v flock >/dev/null 2>&1; then
  flock -n 9 || die "another install.sh is running on $OPT"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------------------- environment
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$$"
NEW="$VENVS/$stamp"
say "making the virtual environment $NEW (Python $pyver)"
"$PY" -m venv "$NEW"
cleanup_new() { rm -rf "$NEW"; }
trap 'rm -rf "$work"; cleanup_new' EXIT

if [ -n "$WHEEL" ]; then
  target="${WHEEL}[device]"
else
  # Build from a copy, so the source tree gets no build/ or *.egg-info from us.
  stage="$work/src"
  mkdir -p "$stage"
  items=()
  for item in pyproject.toml setup.cfg setup.py README.md LICENSE MANIFEST.in edge_gru sim firmware_export; do
    if [ -e "$SRC/$item" ]; then items+=("$item"); fi
  done
  tar -C "$SRC" --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.nbi' --exclude='*.nbc' \
    -cf - "${items[@]}" | tar -C "$stage" -xf -
  target="${stage}[device]"
fi
say "installing edge-gru[device] (numba, paho-mqtt, LiteRT; no TensorFlow)"
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
# setuptools: numba builds the ahead-of-time kernels with it (Python 3.12+ venvs lack it)
"$NEW/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$target" setuptools \
  || die "pip could not install $target (see above); the running installation is untouched"
# -I: isolated, so that no edge_gru in the current directory shadows the installed one
if "$NEW/bin/python" -I -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)'; then
  die "TensorFlow ended up in the device environment: a dependency of [device] is wrong"
fi
"$NEW/bin/edge-gru" --version >/dev/null || die "the new environment cannot run edge-gru"

# ---------------------------------------------------------------------------- model
say "installing the model $MODEL as $OPT/models/default"
mkdir -p "$OPT/models"
rm -rf "$OPT/models/.default.new"
cp -R "$MODEL" "$OPT/models/.default.new"
find "$OPT/models/.default.new" -name __pycache__ -prune -exec rm -rf {} +
"$NEW/bin/edge-gru" info "$OPT/models/.default.new" >/dev/null \
  || die "the model $MODEL does not load (see above)"
rm -rf "$OPT/models/.default.old"
if [ -e "$OPT/models/default" ]; then mv "$OPT/models/default" "$OPT/models/.default.old"; fi
mv "$OPT/models/.default.new" "$OPT/models/default"
rm -rf "$OPT/models/.default.old"
chmod -R a+rX "$OPT/models"

# ---------------------------------------------------------------------------- config
# Point the example's [model] path and [state] dir at this installation; comments survive.
render_config() {
  awk -v model="$OPT/models/default" -v state="$STATE" '
    /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]\[\]]/, "", section) }
    section == "model" && /^[[:space:]]*path[[:space:]]*=/ { print "path = \"" model "\""; next }
    section == "state" && /^[[:space:]]*dir[[:space:]]*=/ { print "dir = \"" state "\""; next }
    { print }
  ' "$DEPLOY/edge-gru.toml"
}
mkdir -p "$CONF_DIR"
render_config > "$CONF_DIR/.edge-gru.toml.example.new"
chmod 0644 "$CONF_DIR/.edge-gru.toml.example.new"
if [ -e "$CONF" ]; then
  say "keeping your config $CONF (the current example is $CONF.example)"
else
  cp "$CONF_DIR/.edge-gru.toml.example.new" "$CONF"
  say "wrote the config $CONF: set [mqtt] host, port and credentials there"
fi
mv "$CONF_DIR/.edge-gru.toml.example.new" "$CONF.example"

# ---------------------------------------------------------------------------- kernels, check
# The daemon's own start-up checks (config, bundle, backend, state dir). Loading the model
# runs it once, which compiles exactly the kernels the daemon will use into the cache, so
# the first start is fast. With --no-precompile the check uses the numpy backend instead.
mkdir -p "$CACHE"
check_env=("NUMBA_CACHE_DIR=$CACHE")
if [ "$PRECOMPILE" -eq 1 ] && [ "$KERNELS" != "jit" ]; then
  if "$NEW/bin/edge-gru" --help 2>/dev/null | grep -q '^ *build-kernels'; then
    variants="$KERNELS"
    say "compiling the $variants kernels ahead of time into $CACHE (a minute or two)"
    if NUMBA_CACHE_DIR="$CACHE" "$NEW/bin/edge-gru" build-kernels --out "$CACHE" --variant "$variants"; then
      say "the daemon will run the compiled kernels without importing numba (less memory, faster start)"
    else
      say "warning: ahead-of-time kernels could not be built (numba.pycc needs a C and a C++ compiler"
      say "  and the Python headers: apt-get install gcc g++ python3-dev); the daemon uses numba's JIT,"
      say "  compiled into the cache now"
    fi
  fi
fi
if [ "$PRECOMPILE" -eq 1 ]; then
  say "checking $CONF (and compiling what the daemon runs into $CACHE)"
else
  check_env+=("EDGE_GRU_MODEL_BACKEND=numpy")
  say "checking $CONF (kernels not compiled: the first start compiles them)"
fi
run_check() {
  # with the per-device overrides the unit's EnvironmentFile= gives the daemon
  if [ -f "$CONF_DIR/edge-gru.env" ]; then
    set -a
    # shellcheck disable=SC1091
    . "$CONF_DIR/edge-gru.env"
    set +a
  fi
  exec env "${check_env[@]}" "$NEW/bin/edge-gru" serve --config "$CONF" --check
}
if ! (run_check) >"$work/check.log" 2>&1; then
  sed 's/^/  /' "$work/check.log" >&2
  say "warning: $CONF does not pass 'edge-gru serve --check' (above); fix it before starting the service"
  if [ "$PRECOMPILE" -eq 1 ]; then
    say "compiling the kernels for the default model instead"
    NUMBA_CACHE_DIR="$CACHE" "$NEW/bin/python" -I -c '
import sys
import numpy as np
import edge_gru
model = edge_gru.load(sys.argv[1], backend="numba")
m = model.manifest
model.predict(np.zeros((1, max(m.window, 1), m.input_features)))
model.pool(2).update(["a"], np.zeros((1, m.input_features)) if m.input_features > 1 else [0.0])
' "$OPT/models/default" || die "compiling the kernels failed (see above); --no-precompile skips it"
  fi
fi

# ---------------------------------------------------------------------------- unit, docs
render_unit() {
  if [ -z "$ROOT" ]; then
    cat "$DEPLOY/edge-gru.service"
  else
    sed -e "s#/opt/edge-gru/#$ROOT/opt/edge-gru/#g" \
        -e "s#/etc/edge-gru/#$ROOT/etc/edge-gru/#g" \
        -e "s#=/var/cache/edge-gru#=$ROOT/var/cache/edge-gru#g" \
        "$DEPLOY/edge-gru.service"
  fi
}
mkdir -p "$UNIT_DIR" "$OPT/doc"
render_unit > "$UNIT.new"
chmod 0644 "$UNIT.new"
mv "$UNIT.new" "$UNIT"
for doc in "$SRC/docs/deployment.md" "$DEPLOY/mosquitto"; do
  if [ -e "$doc" ]; then cp -R "$doc" "$OPT/doc/"; fi
done

# ---------------------------------------------------------------------------- switch
# One rename moves ExecStart to the new environment; the old one is removed after the restart.
ln -sfn "venvs/$stamp" "$OPT/.venv.new"
mv -T "$OPT/.venv.new" "$OPT/venv"
trap 'rm -rf "$work"' EXIT

restarted=0
if use_systemctl; then
  systemctl daemon-reload
  if systemctl is-active --quiet edge-gru.service; then
    say "restarting the running edge-gru on the new version"
    if systemctl restart edge-gru.service; then restarted=1; fi
  fi
fi
for old in "$VENVS"/*; do
  [ "$old" = "$NEW" ] || rm -rf "$old"
done
# numba keys its cache by the source directory (edge_gru_<sha1 of its path>): drop the old ones.
keep="$("$NEW/bin/python" -I -c 'import hashlib, os, edge_gru
d = os.path.dirname(os.path.abspath(edge_gru.__file__))
print("edge_gru_" + hashlib.sha1(d.encode()).hexdigest())')"
for old in "$CACHE"/edge_gru_*; do
  if [ -e "$old" ] && [ "$(basename "$old")" != "$keep" ]; then rm -rf "$old"; fi
done

"$OPT/venv/bin/edge-gru" --version | sed 's/^/installed: /'
if [ "$restarted" -eq 0 ]; then
  cat <<EOF

Next:
  1. edit $CONF: [mqtt] host, port, credentials, TLS; [streams] topics
  2. $OPT/venv/bin/edge-gru serve --config $CONF --check
EOF
  if [ -z "$ROOT" ]; then
    cat <<EOF
  3. systemctl daemon-reload && systemctl enable --now edge-gru
  4. journalctl -u edge-gru -f        (after editing the config: systemctl reload edge-gru
                                       reloads the model, systemctl restart edge-gru the rest)
EOF
  else
    echo "  (installed into the prefix $ROOT: systemctl was not called)"
  fi
fi
