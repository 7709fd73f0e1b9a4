"""kvlab's native CPU ops: small C kernels built on first use and called through ``ctypes``.

Ops: ``paged_decode`` (decode attention read in place from the block cache) and ``qgemm`` (a
matmul over weights kept in the checkpoint's GGUF block formats, dequantized in registers).

Why C and not a torch extension: a ``torch.utils.cpp_extension`` build includes torch's headers
and took 48 s for an empty function on the 2-core dev VM; these files include only libc headers
and build in about a second. Why a kernel at all: on a CPU, torch has no attention over a paged
cache, so the batched decode path gathered every sequence's K/V blocks into a padded copy and ran
SDPA on it, in every layer (46 of 147 ms of a 16-sequence decode step, docs/performance.md). The
kernel reads the blocks where they are.

Build: the system C compiler (``$CC``, else ``cc``/``gcc``), ``-O3 -march=native -ffast-math
-fopenmp`` (``$KVLAB_CPU_OPS_MARCH`` replaces ``native``), into ``$KVLAB_CACHE/cpu_ops/<key>.so``
(:func:`kvlab.machine.cache_root`); the key hashes the source, the flags, the compiler's version
and this CPU's model and ISA flags, so a cache shared between machines never loads a binary built
for another CPU. The build goes to a temporary
name and is renamed into place (two processes may build at once). No compiler, a failed build or
``KVLAB_CPU_OPS=0`` in the environment: :func:`load` returns None, :func:`status` says why, and
callers take their torch path (both branches are tested).

The OpenMP runtime: the library links ``libgomp.so.1`` by soname; torch's wheel has already loaded
its own copy under that soname, so the dynamic linker binds the kernel to it: one thread pool,
sized by ``torch.set_num_threads``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCES = ("paged_decode.c", "qgemm.c")
CFLAGS = ("-O3", "-ffast-math", "-fopenmp", "-fPIC", "-std=c11")  # compile flags; linked without -ffast-math


def _march() -> str:
    """``-march`` of the build: ``native`` (this CPU's ISA: the AVX2/FMA paths where it has them),
    or ``$KVLAB_CPU_OPS_MARCH`` (the tests build ``x86-64`` to run the portable scalar paths that
    a CPU without AVX2 would take)."""
    return os.environ.get("KVLAB_CPU_OPS_MARCH") or "native"
_HERE = Path(__file__).resolve().parent
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cc: str) -> Path:
    from kvlab.machine import cache_root, cpu_fingerprint

    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    cpu = cpu_fingerprint()
    h = hashlib.sha256()
    parts = [(_HERE / s).read_text() for s in SOURCES]
    flags = [f"-march={_march()}", *CFLAGS]
    parts += [" ".join(flags), version, str(cpu.get("model")), ",".join(cpu.get("isa_flags", []))]
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    out = cache_root() / "cpu_ops" / f"kvlab_cpu_ops-{h.hexdigest()[:20]}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        # Compile and link in two steps: a shared object LINKED with -ffast-math gets GCC's
        # crtfastmath.o, whose constructor sets flush-to-zero/denormals-are-zero for the whole
        # process when the library loads (it broke every subnormal float in the test suite).
        # -ffast-math at compile time only keeps the vectorized code and changes nothing global.
        objs = []
        for src in SOURCES:
            obj = f"{tmp}.{Path(src).stem}.o"
            objs.append(obj)
            _run([cc, *flags, "-c", str(_HERE / src), "-o", obj])
        _run([cc, "-shared", "-fopenmp", *objs, "-o", tmp, "-lm"])
        os.replace(tmp, out)
    finally:
        for f in [tmp, *(f"{tmp}.{Path(src).stem}.o" for src in SOURCES)]:
            if os.path.exists(f):
                os.unlink(f)
    return out


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()[-2000:]}")


def _bind(lib: ctypes.CDLL) -> None:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn = lib.kvlab_paged_decode_f32
    fn.argtypes = [p, p, p, p, i64, p, i64, i64, i64, i64, i64, f32, p]
    fn.restype = ctypes.c_int
    q = lib.kvlab_qgemm
    q.argtypes = [ctypes.c_int, p, i64, i64, p, i64, p]
    q.restype = ctypes.c_int


def load() -> ctypes.CDLL | None:
    """The built library (built on the first call of the process), or None; see :func:`status`."""
    with _LOCK:
        if "lib" in _STATE:
            return _STATE["lib"]  # type: ignore[return-value]
        lib, why = None, "built"
        if os.environ.get("KVLAB_CPU_OPS", "1") == "0":
            why = "disabled by KVLAB_CPU_OPS=0"
        elif (cc := _compiler()) is None:
            why = "no C compiler (set $CC or install gcc)"
        else:
            try:
                path = _build(cc)
                lib = ctypes.CDLL(str(path))
                _bind(lib)
                why = f"built with {Path(cc).name} -> {path}"
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                lib, why = None, f"build failed: {e}"
        _STATE.update(lib=lib, why=why)
        return lib


def status() -> str:
    """Why :func:`load` returned what it did (for logs and the banner)."""
    load()
    return str(_STATE["why"])


def reset() -> None:
    """Forget the loaded library (tests switch ``KVLAB_CPU_OPS`` / ``CC``)."""
    with _LOCK:
        _STATE.clear()


BLOCK_FORMATS = {"Q4_1": (0, 20), "Q8_0": (1, 34)}  # GGUF block format -> (kernel id, bytes per 32 weights)


def qgemm(x: torch.Tensor, fmt: str, blocks: torch.Tensor, rows: int, cols: int) -> torch.Tensor | None:
    """``x @ W.T`` with W stored as GGUF blocks (see ``qgemm.c``): x [M, cols] fp32, ``blocks``
    [rows, cols/32 * bytes] uint8 contiguous. Returns [M, rows] fp32, or None where the op cannot
    run (no library, another dtype, an unknown format, cols not a multiple of 32). Pure."""
    lib = load()
    spec = BLOCK_FORMATS.get(fmt)
    if lib is None or spec is None or x.dtype != torch.float32 or x.device.type != "cpu" or cols % 32:
        return None
    if x.dim() != 2 or x.shape[1] != cols or blocks.dtype != torch.uint8 or not blocks.is_contiguous():
        return None
    if blocks.shape != (rows, cols // 32 * spec[1]):
        return None
    x = x.contiguous()
    y = torch.empty(x.shape[0], rows, dtype=torch.float32)
    if x.shape[0] == 0:
        return y
    rc = lib.kvlab_qgemm(spec[0], x.data_ptr(), x.shape[0], cols, blocks.data_ptr(), rows, y.data_ptr())
    return y if rc == 0 else None


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                 lens: torch.Tensor, scale: float) -> torch.Tensor | None:
    """Decode attention read in place from the block cache (see ``paged_decode.c``).

    q [nd, H, hd] fp32; k_cache/v_cache [num_blocks, block_size, kvh, hd] fp32 contiguous; tables
    [nd, W] int64 (row s lists sequence s's blocks; entries past its length are not read); lens
    [nd] int64 context lengths including the new token. Returns [nd, H, hd] fp32, or None where the
    op cannot run (no library, another dtype or device, sizes past the kernel's buffers): the
    caller then takes its torch path. Pure: nothing is written but the returned tensor.
    """
    lib = load()
    if lib is None or q.dtype != torch.float32 or k_cache.dtype != torch.float32 or q.device.type != "cpu":
        return None
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        return None
    nd, H, hd = q.shape
    _, bs, kvh, _ = k_cache.shape
    q = q.contiguous()
    tables = tables.to(torch.int64).contiguous()
    lens = lens.to(torch.int64).contiguous()
    out = torch.empty_like(q)
    rc = lib.kvlab_paged_decode_f32(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(),
                                    tables.shape[1], lens.data_ptr(), nd, H, kvh, hd, bs, scale, out.data_ptr())
    return out if rc == 0 else None
