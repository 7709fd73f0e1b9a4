"""Kernel benchmark: Triton paged decode attention's achieved memory bandwidth on a CUDA GPU.

Achieved bandwidth = K/V bytes the kernel must read / kernel time, as a fraction of the device's
peak (nvidia-ml-py: max memory clock x bus width x 2 for DDR; else the matching
``conf/hardware/*.yaml``). Swept over context length x batch x block size with shuffled block
tables, beside two baselines at the same shapes: torch SDPA on pre-gathered contiguous K/V (a lower
bound on what a contiguous-cache kernel costs) and the torch reference backend
(``kvlab.kernels.paged_attention``: gather + masked SDPA; ``decode_attention_ref`` at the target
point). Timing: ``triton.testing.do_bench`` (median, L2 flushed between runs). Also writes the
vLLM paper's Fig. 18a setup (40 heads x 128, fp16, MHA, batch 8/32, context 64/128/256, block 8)
and a latency-vs-block-size series at that setup.

Usage: ``python experiments/bench_kernels.py [--quick] [--out DIR]`` on a GPU;
``--smoke`` runs a tiny sweep in the Triton interpreter on a CPU (pipeline check, timings meaningless).
Writes ``decode_bandwidth.json``, ``fig18a.json``, ``decode_bandwidth.png``, ``fig18a.png`` to
``results/kernels/<device>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if not torch.cuda.is_available() and "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit module is imported

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path (tests)
from bench_kernels_env import device_slug, environment, peak_bandwidth, timer  # noqa: E402


class Pool:
    """One big paged cache per block size; each case takes random (shuffled) blocks from it."""

    def __init__(self, tokens: int, block_size: int, kvh: int, d: int, dtype: torch.dtype, device: str):
        self.bs = block_size
        self.num_blocks = -(-tokens // block_size) + 1
        self.k = torch.randn(self.num_blocks, block_size, kvh, d, device=device).to(dtype)
        self.v = torch.randn(self.num_blocks, block_size, kvh, d, device=device).to(dtype)

    def tables(self, batch: int, ctx: int, seed: int) -> torch.Tensor:
        nb = -(-ctx // self.bs)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randperm(self.num_blocks, generator=gen)[: batch * nb]
        return ids.view(batch, nb).to(device=self.k.device, dtype=torch.int32)


def bench_case(pool: Pool, batch: int, ctx: int, heads: int, scale: float, measure, with_torch_backend: bool,
               with_ref: bool) -> dict:
    """Time the Triton kernel and baselines at one (batch, context, block size)."""
    import torch.nn.functional as F

    from kvlab.kernels.decode_attention import decode_attention, decode_attention_ref

    kvh, d = pool.k.shape[2], pool.k.shape[3]
    g = heads // kvh
    bt = pool.tables(batch, ctx, seed=batch * 7919 + ctx)
    lens = torch.full((batch,), ctx, dtype=torch.int32, device=pool.k.device)
    q = torch.randn(batch, heads, d, device=pool.k.device).to(pool.k.dtype)
    out = torch.empty_like(q)
    row = {"batch": batch, "context": ctx, "block_size": pool.bs,
           "kv_bytes": 2 * batch * ctx * kvh * d * pool.k.element_size()}
    row["triton_s"] = measure(lambda: decode_attention(q, pool.k, pool.v, bt, lens, scale, out=out, max_seq_len=ctx))
    # contiguous baseline: K/V gathered once (not timed), then one SDPA with GQA rows folded into queries
    k = pool.k[bt.long()].reshape(batch, -1, kvh, d)[:, :ctx].transpose(1, 2).contiguous()
    v = pool.v[bt.long()].reshape(batch, -1, kvh, d)[:, :ctx].transpose(1, 2).contiguous()
    qs = q.view(batch, kvh, g, d)
    ref = F.scaled_dot_product_attention(qs, k, v, scale=scale).reshape(batch, heads, d)
    err = (out.float() - ref.float()).abs().max().item()
    row["max_abs_err_vs_sdpa"] = err
    row["sdpa_contiguous_s"] = measure(lambda: F.scaled_dot_product_attention(qs, k, v, scale=scale))
    k = v = None  # free the gathered copies before the next baseline
    if with_torch_backend:
        row["torch_backend_s"] = _time_torch_backend(pool, bt, ctx, q, scale, measure)
    if with_ref:
        row["decode_ref_s"] = measure(lambda: decode_attention_ref(q, pool.k, pool.v, bt, lens, scale))
    return row


def _time_torch_backend(pool: Pool, bt: torch.Tensor, ctx: int, q: torch.Tensor, scale: float, measure):
    """kvlab's torch reference backend on the same decode batch (None if its API has moved)."""
    try:
        from kvlab.kernels.metadata import build_metadata
        from kvlab.kernels.paged_attention import paged_attention

        seqs = [(ctx - 1, 1, row.tolist()) for row in bt.cpu()]
        meta = build_metadata(seqs, len(seqs), pool.bs, q.device)
        return measure(lambda: paged_attention(q, pool.k, pool.v, meta, scale))
    except Exception as e:  # noqa: BLE001 - the other backend is optional here
        print(f"torch backend not timed: {e!r}", file=sys.stderr)
        return None


def sweep_config(args) -> dict:
    if args.smoke:
        return {"contexts": [40], "batches": [1, 3], "block_sizes": [1, 16], "heads": 4, "kv_heads": 2,
                "head_dim": 16, "max_tokens": 256, "fig18_contexts": [16], "fig18_batches": [2],
                "fig18_block_sizes": [8, 16], "fig18_heads": 2, "fig18_head_dim": 16}
    cfg = {"contexts": [512, 1024, 2048, 4096, 8192, 16384, 32768], "batches": [1, 4, 16, 64, 256],
           "block_sizes": [1, 16, 32, 64], "heads": args.heads, "kv_heads": args.kv_heads,
           "head_dim": args.head_dim, "max_tokens": args.max_tokens, "fig18_contexts": [64, 128, 256],
           "fig18_batches": [8, 32], "fig18_block_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256],
           "fig18_heads": 40, "fig18_head_dim": 128}
    if args.quick:
        cfg.update(contexts=[512, 2048, 4096, 16384, 32768], batches=[1, 16, 64, 256])
    return cfg


def run_sweep(cfg: dict, dtype: torch.dtype, device: str, measure, smoke: bool) -> list[dict]:
    from kvlab.kernels.decode_attention import choose_num_splits
    from kvlab.kernels.triton_utils import num_sms

    rows = []
    scale = cfg["head_dim"] ** -0.5
    sms = num_sms(torch.device(device))
    for bs in cfg["block_sizes"]:
        pool = Pool(cfg["max_tokens"], bs, cfg["kv_heads"], cfg["head_dim"], dtype, device)
        for ctx in cfg["contexts"]:
            for batch in cfg["batches"]:
                if batch * ctx > cfg["max_tokens"]:
                    continue
                backend = bs == 16 and batch in (1, 16, 64) and batch * ctx <= 1 << 20
                ref = bs == 16 and ((ctx == 4096 and batch == 64) or smoke)
                row = bench_case(pool, batch, ctx, cfg["heads"], scale, measure, backend, ref)
                row["num_splits"] = choose_num_splits(ctx, batch, cfg["kv_heads"], sms)
                rows.append(row)
                print(json.dumps(row), flush=True)
        del pool
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def run_fig18a(cfg: dict, device: str, measure) -> list[dict]:
    """The paper's Fig. 18a setup: MHA, fp16; latency vs context (batch 8/32) at each block size."""
    rows = []
    h, d = cfg["fig18_heads"], cfg["fig18_head_dim"]
    need = max(cfg["fig18_batches"]) * max(cfg["fig18_contexts"])
    for bs in cfg["fig18_block_sizes"]:
        pool = Pool(need, bs, h, d, torch.float16, device)
        for ctx in cfg["fig18_contexts"]:
            for batch in cfg["fig18_batches"]:
                row = bench_case(pool, batch, ctx, h, d ** -0.5, measure, False, False)
                rows.append(row)
                print(json.dumps({"fig18a": True, **row}), flush=True)
    return rows


def run_tuning(cfg: dict, dtype: torch.dtype, device: str, measure, smoke: bool) -> list[dict]:
    """Split factor and tile/warp/stage variants at a few shapes (block size 16): data to tune from."""
    from kvlab.kernels.decode_attention import decode_attention

    points = [(3, 40)] if smoke else [(64, 4096), (16, 8192), (1, 32768)]
    splits = [1, 2] if smoke else [1, 2, 4, 8, 16, 32]
    tiles = [(16, 4, 2)] if smoke else [(32, 4, 2), (64, 4, 2), (64, 4, 3), (128, 4, 2), (64, 8, 2), (128, 8, 3)]
    pool = Pool(max(b * c for b, c in points), 16, cfg["kv_heads"], cfg["head_dim"], dtype, device)
    rows = []
    for batch, ctx in points:
        bt = pool.tables(batch, ctx, seed=ctx)
        lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)
        q = torch.randn(batch, cfg["heads"], cfg["head_dim"], device=device).to(dtype)
        kv_bytes = 2 * batch * ctx * cfg["kv_heads"] * cfg["head_dim"] * pool.k.element_size()
        variants = [{"num_splits": n} for n in splits]
        variants += [{"num_splits": None, "block_n": bn, "num_warps": w, "num_stages": st} for bn, w, st in tiles]
        for kw in variants:
            t = measure(functools.partial(decode_attention, q, pool.k, pool.v, bt, lens, cfg["head_dim"] ** -0.5,
                                          max_seq_len=ctx, **kw))
            rows.append({"batch": batch, "context": ctx, **kw, "triton_s": t, "gb_s": kv_bytes / t / 1e9})
            print(json.dumps({"tuning": True, **rows[-1]}), flush=True)
    return rows


def summarize(rows: list[dict], peak: float | None) -> dict:
    """Add bandwidth fractions to ``rows`` and evaluate the issue's two targets."""
    for r in rows:
        r["triton_gb_s"] = r["kv_bytes"] / r["triton_s"] / 1e9
        r["sdpa_gb_s"] = r["kv_bytes"] / r["sdpa_contiguous_s"] / 1e9
        r["triton_frac_peak"] = r["triton_gb_s"] * 1e9 / peak if peak else None
        r["sdpa_frac_peak"] = r["sdpa_gb_s"] * 1e9 / peak if peak else None
        if r.get("torch_backend_s"):
            r["speedup_vs_torch_backend"] = r["torch_backend_s"] / r["triton_s"]
    long_big = [r for r in rows if r["context"] >= 4096 and r["batch"] >= 16 and r["block_size"] == 16]
    fracs = [r["triton_frac_peak"] for r in long_big if r["triton_frac_peak"] is not None]
    at = [r for r in rows if r["context"] == 4096 and r["batch"] == 64 and r["block_size"] == 16]
    speed = at[0].get("speedup_vs_torch_backend") if at else None
    return {
        "bw_target": ">= 0.80 of peak at context >= 4k, batch >= 16 (block size 16)",
        "bw_min_frac": min(fracs) if fracs else None,
        "bw_met": (min(fracs) >= 0.8) if fracs else None,
        "speedup_target": ">= 3x vs the torch reference backend at context 4k, batch 64 (block size 16)",
        "speedup": speed,
        "speedup_met": (speed >= 3.0) if speed else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="output dir (default results/kernels/<device>)")
    ap.add_argument("--smoke", action="store_true", help="tiny interpreter run on a CPU (pipeline check only)")
    ap.add_argument("--quick", action="store_true", help="fewer contexts/batches (for a short GPU lease)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=1 << 21, help="cap on batch x context (memory)")
    ap.add_argument("--no-fig18", action="store_true", help="skip the Fig. 18a series")
    ap.add_argument("--no-tuning", action="store_true", help="skip the split/tile variants")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench_kernels: needs a CUDA GPU (Triton kernels only run compiled there). On a CPU use --smoke "
              "for a tiny Triton-interpreter run that checks the pipeline (its timings mean nothing).",
              file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    env = environment(device)
    out = args.out or ROOT / "results" / "kernels" / device_slug(env["device"])
    out.mkdir(parents=True, exist_ok=True)
    peak, peak_src = peak_bandwidth(env["device"])
    cfg = sweep_config(args)
    measure = timer(smoke=not cuda)
    from bench_kernels_plot import plot_bandwidth, plot_fig18a

    # each stage writes its files at once, so a time limit that cuts a later stage keeps the earlier
    rows = run_sweep(cfg, DTYPES[args.dtype], device, measure, smoke=not cuda)
    targets = summarize(rows, peak)
    result = {"what": "paged decode attention, achieved bandwidth", "environment": env, "dtype": args.dtype,
              "peak_bandwidth_gb_s": peak / 1e9 if peak else None, "peak_source": peak_src, "config": cfg,
              "timing": "interpreter wall clock (meaningless)" if not cuda else "triton do_bench median, L2 flushed",
              "targets": targets, "rows": rows, "tuning": []}
    (out / "decode_bandwidth.json").write_text(json.dumps(result, indent=1))
    plot_bandwidth(result, out / "decode_bandwidth.png")
    print(f"targets: {json.dumps(targets)}", flush=True)
    if not args.no_fig18:
        fig = run_fig18a(cfg, device, measure)
        summarize(fig, peak)
        (out / "fig18a.json").write_text(json.dumps(
            {"what": "vLLM paper Fig. 18a setup: MHA, fp16, batch 8/32, context 64/128/256; kernel latency by block "
                     "size; sdpa_contiguous_s stands in for the contiguous-cache (FasterTransformer) kernel",
             "environment": env, "heads": cfg["fig18_heads"], "head_dim": cfg["fig18_head_dim"], "rows": fig},
            indent=1))
        plot_fig18a(fig, env["device"], out / "fig18a.png")
    if not args.no_tuning:
        result["tuning"] = run_tuning(cfg, DTYPES[args.dtype], device, measure, smoke=not cuda)
        (out / "decode_bandwidth.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
