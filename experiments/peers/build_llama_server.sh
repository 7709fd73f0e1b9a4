#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-quantize` from the llama-cpp-python source
# distribution on the package registry, then convert SmolLM2-135M-Instruct (kvlab's cached HF
# weights) to GGUF (f32) and quantize it to Q4_1. Everything lives OUTSIDE the repo in a cache
# folder ($KVLAB_PEERS_DIR, default ~/.cache/kvlab/peers); nothing is fetched from anywhere but
# the package index pip is configured with.
#
#   bash experiments/peers/build_llama_server.sh          # ~12-40 min on 2 cores (nice 19)
#
# Outputs (printed at the end): $DIR/llama-build/bin/llama-server, $DIR/models/smollm2-135m-{f32,q4_1}.gguf
set -euo pipefail

DIR=${KVLAB_PEERS_DIR:-$HOME/.cache/kvlab/peers}
JOBS=${JOBS:-2}
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HF_DIR=${KVLAB_HF_DIR:-$HOME/.cache/kvlab/smollm2-135m}   # written by kvlab.models.loader on first use
mkdir -p "$DIR/src" "$DIR/models"
cd "$DIR"

# 0. build tools (cmake/ninja from the system, else from the package index into the tools venv)
if [ ! -x "$DIR/venv/bin/python" ]; then "$PY" -m venv "$DIR/venv"; fi
VPY="$DIR/venv/bin/python"
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
  "$VPY" -m pip install -q cmake ninja
  export PATH="$DIR/venv/bin:$PATH"
fi

# 1. the source distribution (vendors llama.cpp under vendor/llama.cpp)
# --no-build-isolation with scikit-build-core preinstalled: otherwise --no-binary :all: also applies
# to the build backend's own dependencies and pip recursively builds them all from source.
if ! ls "$DIR"/src/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
  "$VPY" -m pip install -q scikit-build-core
  "$VPY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$DIR/src" llama-cpp-python
fi
SDIST=$(ls "$DIR"/src/llama_cpp_python-*.tar.gz | sort -V | tail -1)
SRC="$DIR/src/$(basename "$SDIST" .tar.gz)"
[ -d "$SRC" ] || tar -xzf "$SDIST" -C "$DIR/src"
LCPP="$SRC/vendor/llama.cpp"
echo "llama.cpp source: $LCPP ($(basename "$SDIST"))"

# 2. AMX fix. GCC 12 may move the AMX tile-config load (ldtilecfg) past the first tile load in
# ggml's AMX matmul, so on a CPU with AMX the binary dies with "Illegal instruction" (upstream
# llama.cpp PR 26954). A compiler barrier right after the config load keeps the order. Only
# applied when this CPU has AMX: without AMX that code never runs, and the source stays pristine.
if grep -qw amx_tile /proc/cpuinfo; then
  for f in $(grep -rl "_tile_loadconfig" "$LCPP/ggml/src/ggml-cpu/amx" 2>/dev/null); do
    if ! grep -q 'kvlab: compiler barrier' "$f"; then
      sed -i -E 's|^([[:space:]]*)(_tile_loadconfig\(([^;]*)\);)|\1\2 __asm__ __volatile__("" ::: "memory"); /* kvlab: compiler barrier */|' "$f"
      echo "AMX barrier applied to $f"
    fi
  done
else
  echo "CPU has no AMX: AMX tile-config fix not needed, not applied"
fi

# 3. configure + build (Release, native ISA, no curl, no prebuilt web UI, no tests/examples)
BUILD="$DIR/llama-build"
OPTS=(-G Ninja -S "$LCPP" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
      -DBUILD_SHARED_LIBS=OFF)
if grep -rq "LLAMA_USE_PREBUILT_UI" "$LCPP/CMakeLists.txt" "$LCPP/tools/server/CMakeLists.txt" 2>/dev/null; then
  OPTS+=(-DLLAMA_USE_PREBUILT_UI=OFF)
fi
[ -f "$BUILD/build.ninja" ] || cmake "${OPTS[@]}"
nice -n 19 cmake --build "$BUILD" --target llama-server llama-quantize -j "$JOBS"
ls -l "$BUILD/bin/llama-server" "$BUILD/bin/llama-quantize"

# 4. converter deps in the cache venv (not the project's), from the package index
"$VPY" -m pip install -q numpy safetensors sentencepiece pyyaml tqdm requests "$LCPP/gguf-py"
# the converter imports torch: pin the project's version (pip takes the local CPU wheel for it;
# a looser pin may pull a multi-GB CUDA build)
"$VPY" -m pip install -q "torch==$(cd "$REPO" && .venv/bin/python -c 'import torch;print(torch.__version__.split("+")[0])')" transformers

# 5. HF weights -> GGUF f32 -> Q4_1
[ -f "$HF_DIR/model.safetensors" ] || (cd "$REPO" && .venv/bin/python -c \
  "from kvlab.models.loader import load_model; from kvlab.models.config import resolve_model; load_model(resolve_model('smollm2-135m'))")
F32="$DIR/models/smollm2-135m-f32.gguf"
Q41="$DIR/models/smollm2-135m-q4_1.gguf"
[ -f "$F32" ] || nice -n 19 "$VPY" "$LCPP/convert_hf_to_gguf.py" "$HF_DIR" --outtype f32 --outfile "$F32"
[ -f "$Q41" ] || nice -n 19 "$BUILD/bin/llama-quantize" "$F32" "$Q41" Q4_1
ls -l "$F32" "$Q41"
echo "llama-server: $BUILD/bin/llama-server"
