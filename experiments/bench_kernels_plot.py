"""Plots for experiments/bench_kernels.py: bandwidth fraction of peak, and the Fig. 18a series."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(rows: list[dict], key: str, **match) -> tuple[list, list]:
    sel = [r for r in rows if all(r.get(k) == v for k, v in match.items()) and r.get(key) is not None]
    return [r["context"] for r in sel], [r[key] for r in sel]


def plot_bandwidth(result: dict, path: Path) -> None:
    """Left: fraction of peak vs context per batch (block size 16, SDPA dashed). Right: vs block size."""
    rows = result["rows"]
    use_frac = result.get("peak_bandwidth_gb_s") is not None
    key, sdpa_key = ("triton_frac_peak", "sdpa_frac_peak") if use_frac else ("triton_gb_s", "sdpa_gb_s")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    bs_ref = 16 if any(r["block_size"] == 16 for r in rows) else rows[0]["block_size"]
    for i, batch in enumerate(sorted({r["batch"] for r in rows})):
        color = f"C{i}"
        x, y = _series(rows, key, batch=batch, block_size=bs_ref)
        a.plot(x, y, "o-", color=color, label=f"Triton paged, batch {batch}")
        x, y = _series(rows, sdpa_key, batch=batch, block_size=bs_ref)
        a.plot(x, y, "x--", color=color, alpha=0.6, label=f"SDPA contiguous, batch {batch}")
    a.set_xscale("log", base=2)
    a.set_xlabel("context length (tokens)")
    a.set_ylabel("fraction of peak bandwidth" if use_frac else "GB/s")
    a.set_title(f"decode attention, block size {bs_ref}")
    if use_frac:
        a.axhline(0.8, color="gray", lw=0.8, ls=":")
    a.legend(fontsize=6, ncol=2)
    batch_b = max((r["batch"] for r in rows if r["batch"] <= 64), default=rows[0]["batch"])
    for i, ctx in enumerate(sorted({r["context"] for r in rows})):
        sel = sorted((r for r in rows if r["batch"] == batch_b and r["context"] == ctx), key=lambda r: r["block_size"])
        if sel:
            b.plot([r["block_size"] for r in sel], [r[key] for r in sel], "o-", color=f"C{i}", label=f"context {ctx}")
    b.set_xscale("log", base=2)
    b.set_xlabel("block size (tokens)")
    b.set_ylabel(a.get_ylabel())
    b.set_title(f"batch {batch_b}")
    b.legend(fontsize=7)
    env = result["environment"]
    fig.suptitle(f"{env['device']} · {result['dtype']} · torch {env['torch']} · triton {env['triton']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig18a(rows: list[dict], device: str, path: Path) -> None:
    """Kernel latency (µs) vs context, batch 8/32 (the paper's axes) for each block size + SDPA."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    batches = sorted({r["batch"] for r in rows})
    for ax, batch in zip(axes, batches[:2]):
        for i, bs in enumerate(sorted({r["block_size"] for r in rows})):
            sel = sorted((r for r in rows if r["batch"] == batch and r["block_size"] == bs), key=lambda r: r["context"])
            ax.plot([r["context"] for r in sel], [r["triton_s"] * 1e6 for r in sel], "o-", color=f"C{i % 10}",
                    label=f"Triton paged, block {bs}")
        sel = sorted((r for r in rows if r["batch"] == batch and r["block_size"] == rows[0]["block_size"]),
                     key=lambda r: r["context"])
        ax.plot([r["context"] for r in sel], [r["sdpa_contiguous_s"] * 1e6 for r in sel], "k^--",
                label="SDPA on contiguous K/V")
        ax.set_xlabel("context length")
        ax.set_ylabel("kernel latency (µs)")
        ax.set_title(f"batch {batch}")
        ax.legend(fontsize=6)
    fig.suptitle(f"Fig. 18a setup (MHA 40x128, fp16) on {device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
