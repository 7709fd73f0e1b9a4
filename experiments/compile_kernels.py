"""Compile every Triton kernel variant for a CUDA target WITHOUT a GPU, and report its resources.

Triton compiles ahead of time to PTX/cubin with its bundled ptxas given an explicit target, so a
CPU machine can prove that the kernels build for sm_80/sm_90 (which the interpreter does not) and
see each variant's registers, stack (spills), shared memory and pipelined (cp.async) loads. Used
before spending GPU time.

Usage: ``python experiments/compile_kernels.py [--quick] [--arch 90 80] [--json out.json]``; exits 1
if a variant fails to compile or uses stack (register spills).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: must precede importing the kernels

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kvlab.kernels import copy_blocks_triton, decode_attention, prefill_attention, write_kv_triton  # noqa: E402

PTR = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}
# the quantized-cache arguments (kvlab.kernels.quant.fused): unquantized variants pass QUANT=0
QPTR = {n: "*fp32" for n in ("ks_ptr", "vs_ptr", "kz_ptr", "vz_ptr")}
QUANT_MODES = {"int8": 3, "int4": 4, "fp8_e4m3": 1}


def variants(quick: bool = False) -> list[tuple[str, object, dict, dict]]:
    """(label, kernel, pointer types, constexprs); the other arguments are i32 (fp32 if named *scale)."""
    out = []
    for dt in ("bf16",) if quick else ("bf16", "fp32"):
        for bs in (16,) if quick else (1, 16):
            for g in (4,) if quick else (1, 8):
                for split in (False,) if quick else (False, True):
                    ptrs = {n: PTR[dt] for n in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
                    ptrs |= {"bt_ptr": "*i32", "lens_ptr": "*i32", "part_ptr": "*fp32", "lse_ptr": "*fp32"} | QPTR
                    const = dict(G=g, HEAD_DIM=128, BLOCK_SIZE=bs, BLOCK_G=max(16, g), BLOCK_D=128,
                                 BLOCK_N=32 if dt == "fp32" else 64,
                                 SPLIT=split, DOT_F32=dt == "fp32", DOT_PREC="tf32x3", QUANT=0, GROUP=1)
                    out.append((f"decode {dt} bs{bs} G{g} split={split}", decode_attention._decode_kernel, ptrs, const))
        ptrs = {n: PTR[dt] for n in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
        ptrs |= {"bt_ptr": "*i32", "qsl_ptr": "*i32", "lens_ptr": "*i32"} | QPTR
        tile = 32 if dt == "fp32" else 64  # the launcher's defaults
        const = dict(G=4, HEAD_DIM=128, BLOCK_SIZE=16, BLOCK_M=tile, BLOCK_D=128, BLOCK_N=tile, DOT_F32=dt == "fp32",
                     DOT_PREC="tf32x3", QUANT=0, GROUP=1)
        out.append((f"prefill {dt} G4", prefill_attention._prefill_kernel, ptrs, const | {"num_warps": 8}))
        if quick:
            return out
        ptrs = {"k_ptr": "*fp32", "v_ptr": "*fp32", "kc_ptr": PTR[dt], "vc_ptr": PTR[dt], "slot_ptr": "*i64"}
        const = dict(KV_HEADS=8, HEAD_DIM=128, BLOCK_SIZE=16, BLOCK_H=8, BLOCK_D=128)
        out.append((f"write_kv fp32->{dt}", write_kv_triton._write_kv_kernel, ptrs, const))
    for name, mode in QUANT_MODES.items():  # fused dequant (tiles cast to bf16 for the dots) and quantizing write
        group = 32 if mode == 4 else 1
        ptrs = {n: "*bf16" for n in ("q_ptr", "out_ptr")} | {"k_ptr": "*u8", "v_ptr": "*u8"} | QPTR
        ptrs |= {"bt_ptr": "*i32", "lens_ptr": "*i32", "part_ptr": "*fp32", "lse_ptr": "*fp32"}
        const = dict(G=4, HEAD_DIM=128, BLOCK_SIZE=16, BLOCK_G=16, BLOCK_D=128, BLOCK_N=32, SPLIT=False,
                     DOT_F32=False, DOT_PREC="ieee", QUANT=mode, GROUP=group)
        out.append((f"decode {name} bs16 G4 split=False", decode_attention._decode_kernel, ptrs, const))
        ptrs = {n: "*bf16" for n in ("q_ptr", "out_ptr")} | {"k_ptr": "*u8", "v_ptr": "*u8"} | QPTR
        ptrs |= {"bt_ptr": "*i32", "qsl_ptr": "*i32", "lens_ptr": "*i32"}
        const = dict(G=4, HEAD_DIM=128, BLOCK_SIZE=16, BLOCK_M=64, BLOCK_D=128, BLOCK_N=64, DOT_F32=False,
                     DOT_PREC="ieee", QUANT=mode, GROUP=group)
        out.append((f"prefill {name} G4", prefill_attention._prefill_kernel, ptrs, const | {"num_warps": 8}))
        ptrs = {"k_ptr": "*bf16", "v_ptr": "*bf16", "kc_ptr": "*u8", "vc_ptr": "*u8", "slot_ptr": "*i64"} | QPTR
        const = dict(KV_HEADS=8, HEAD_DIM=128, BLOCK_SIZE=16, BLOCK_H=8, BLOCK_D=128, QUANT=mode, GROUP=group,
                     FMAX=448.0 if mode == 1 else 0.0)
        out.append((f"write_kv bf16->{name}", write_kv_triton._write_kv_quant_kernel, ptrs, const))
    out.append(("decode reduce", decode_attention._reduce_kernel,
                {"part_ptr": "*fp32", "lse_ptr": "*fp32", "out_ptr": "*bf16"},
                dict(HEAD_DIM=128, BLOCK_D=128, BLOCK_S=32)))
    out.append(("copy_blocks", copy_blocks_triton._copy_blocks_kernel,
                {"cache_ptr": "*bf16", "src_ptr": "*i64", "dst_ptr": "*i64"}, dict(BLOCK=1024)))
    return out


def compile_one(fn, ptrs: dict, const: dict, arch: int, num_warps: int = 4, num_stages: int = 2):
    """Compile as a JIT launch with dense tensors would: innermost strides (names ending in d, or
    ``s_btb``/``s_ls``) specialised to 1, the other strides and the pointers 16-divisible."""
    names = fn.arg_names
    const = dict(const)
    for n in names:
        if n.startswith("s_") and (n.endswith("d") or n in ("s_btb", "s_ls")) and n not in const:
            const[n] = 1
    sig = {n: ptrs.get(n, "constexpr" if n in const else ("fp32" if "scale" in n else "i32")) for n in names}
    hinted = [n for n in names if (n.startswith("s_") and sig[n] == "i32") or n in ptrs]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in hinted}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps,
                                                                             "num_stages": num_stages})


def resource_usage(cubin: bytes) -> dict:
    """Registers and stack (spill) bytes per thread from the bundled cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(cubin)
    res = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    regs = re.search(r"REG:(\d+)", res.stdout)
    stack = re.search(r"STACK:(\d+)", res.stdout)
    return {"registers": int(regs.group(1)) if regs else None, "stack_bytes": int(stack.group(1)) if stack else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="one decode and one prefill variant (a CI check)")
    args = ap.parse_args(argv)
    rows, bad = [], 0
    for arch in args.arch:
        for label, fn, ptrs, const in variants(args.quick):
            try:
                const = dict(const)
                k = compile_one(fn, ptrs, const, arch, num_warps=const.pop("num_warps", 4))
                row = {"arch": arch, "kernel": label, "shared_bytes": k.metadata.shared,
                       "pipelined_loads": k.asm["ttgir"].count("async_copy_global_to_local"),
                       **resource_usage(k.asm["cubin"])}
                bad += bool(row["stack_bytes"])
            except Exception as e:  # noqa: BLE001 - report every failing variant, then fail
                row = {"arch": arch, "kernel": label, "error": repr(e)[:500]}
                bad += 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"triton": triton.__version__, "rows": rows}, indent=1))
    print(f"{len(rows)} variants, {bad} failed or spilled")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
