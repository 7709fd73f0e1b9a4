"""The designed grid of batch shapes, and timing the real executor on it.

Each :class:`GridPoint` is one step shape: decode sequences (their contexts), multi-token chunks
(length, start position, whether the chunk ends its prompt and samples) and the block size. The
grid varies each feature of :mod:`kvlab.executor.cost_calibrated` on its own (decode count x
context, uneven decode contexts so the padding term is separable, prompt chunks from position 0,
later chunks of a long prompt, mixed decode + prefill steps, two block sizes), so the NNLS fit
can tell the terms apart. Two decode shapes sample nothing: in a real run every decode samples,
so without them the per-decode cost and the lm head + sampler cost would be one inseparable term.

Measurement: one untimed warm-up pass over every point, then ``repeats`` passes, each over the
points in a fresh random order (so a burst of load from other processes spreads over many points
instead of biasing one), and the **median** of each point's repeats is what the fit sees. The
spread (IQR / median) is kept per point for the profile.

Bracketing (:func:`measure_around`): the fit also takes every step of two real calibration runs,
and a shared VM's speed drifts by several percent within minutes. Grid passes all taken before the
real runs put the grid and the real steps at different speeds, and because the real steps are
nearly all small decodes the fit then bends the model between small and large steps (on the
2026-12-06 VM: a second grid pass 2 minutes later read 4.4% faster, and the profile fitted that
way under-predicted 2-4-row dense decodes by 5-10%). So half of the repeats run before the real
runs and half after, and each point's median pools both halves: on average the grid is read at
the real steps' speed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.cost_calibrated import step_features
from kvlab.request import SamplingParams

T = TypeVar("T")


@dataclass(frozen=True)
class GridPoint:
    """One step shape. ``decodes``: each decode sequence's context before its new token;
    ``chunks``: (num_tokens, start_pos, samples?) per multi-token chunk."""

    name: str
    decodes: tuple[int, ...] = ()
    chunks: tuple[tuple[int, int, bool], ...] = ()
    block_size: int = 16
    decode_samples: bool = True  # False: decodes that sample nothing (separates the lm head + sampler term)

    def blocks_needed(self) -> int:
        b = self.block_size
        return sum(-(-(c + 1) // b) for c in self.decodes) + sum(-(-(n + s) // b) for n, s, _ in self.chunks)

    def step(self, sampling: SamplingParams) -> StepInput:
        """The StepInput of this shape. Block ids are a seeded permutation of the pool, so every
        sequence's blocks are scattered as in a running server (a fresh pool's consecutive runs
        would take reads that real tables do not: a lone decode's slice, hardware prefetch)."""
        seqs, nxt, b = [], 0, self.block_size
        ids = list(range(self.blocks_needed()))
        random.Random(len(ids) * 7919 + b).shuffle(ids)
        for i, ctx in enumerate(self.decodes):
            nb = -(-(ctx + 1) // b)
            seqs.append(ScheduledSeq(i, f"d{i}", [5 + i % 97], ctx, ids[nxt:nxt + nb],
                                     1 if self.decode_samples else 0, sampling, sample_index=ctx))
            nxt += nb
        for j, (n, start, sampled) in enumerate(self.chunks):
            nb = -(-(n + start) // b)
            seqs.append(ScheduledSeq(10_000 + j, f"c{j}", [7 + (k % 331) for k in range(n)], start,
                                     ids[nxt:nxt + nb], 1 if sampled else 0, sampling))
            nxt += nb
        return StepInput(seqs)

    def features(self, block_rows: int = 0) -> dict[str, float]:
        return step_features(self.step(SamplingParams(max_tokens=1)).seqs, block_rows)


def _spread(lo: int, hi: int, k: int) -> tuple[int, ...]:
    return tuple(int(x) for x in np.linspace(lo, hi, k))


def design(quick: bool = False) -> list[GridPoint]:
    """The grid: ~39 shapes in full, ~13 in ``quick`` (sized for 2 CPU cores and SmolLM2)."""
    pts: list[GridPoint] = []
    counts, ctxs = ((1, 8, 24), (32, 384)) if quick else ((1, 4, 12, 24), (32, 256, 640))
    for nd in counts:
        for ctx in ctxs:
            pts.append(GridPoint(f"decode{nd}x{ctx}", (ctx,) * nd))
    pts.append(GridPoint("decode-uneven12", _spread(16, 512, 12)))
    prefills = (48, 256) if quick else (24, 96, 320)
    for n in prefills:
        pts.append(GridPoint(f"prefill{n}", chunks=((n, 0, True),)))
    pts.append(GridPoint("prefill4x48", chunks=((48, 0, True),) * 4))
    pts.append(GridPoint("chunk128@512", chunks=((128, 512, True),)))
    pts.append(GridPoint("mixed8x200+prefill128", (200,) * 8, ((128, 0, True),)))
    pts.append(GridPoint("decode16x128-nosample", (128,) * 16, decode_samples=False))
    if quick:
        return pts
    pts += [
        GridPoint("decode-uneven16", _spread(32, 384, 16)),
        GridPoint("prefill2x160", chunks=((160, 0, True),) * 2),
        GridPoint("chunk64@256-mid", chunks=((64, 256, False),)),
        GridPoint("chunk256@768", chunks=((256, 768, True),)),
        GridPoint("mixed16x100+chunk64@192", (100,) * 16, ((64, 192, False),)),
        GridPoint("mixed4x400+prefill32x3", (400,) * 4, ((32, 0, True),) * 3),
        GridPoint("decode4x512-nosample", (512,) * 4, decode_samples=False),
        GridPoint("b32-decode12x256", (256,) * 12, block_size=32),
        GridPoint("b32-mixed4x128+prefill96", (128,) * 4, ((96, 0, True),), block_size=32),
        # the shapes an offline or bursty run starts with: many prompts in one step (up to the
        # default 2048-token step budget), and small uneven decode groups (light load)
        GridPoint("prefill8x200", chunks=((200, 0, True),) * 8),
        GridPoint("prefill4x480", chunks=((480, 0, True),) * 4),
        GridPoint("mixed12x300+prefill3x256", (300,) * 12, ((256, 0, True),) * 3),
        GridPoint("decode2x96", (96, 96)),
        # 2-3 rows: light load on a machine whose block path stops at 4 rows (the 1-row -> multi-row
        # jump of the block kernel, cost_calibrated's block_multirow, needs more than one such point)
        GridPoint("decode3x160", (160,) * 3),
        GridPoint("decode2x480", (480, 480)),
        # more rows than any block path takes (24 is the grid's largest otherwise): with block_rows=16
        # only 24-row steps had the dense lm head, and no dense decode skipped sampling, so the dense
        # head's fixed cost, its per-row cost and the per-decode cost were one inseparable sum
        GridPoint("decode32x64-nosample", (64,) * 32, decode_samples=False),
        GridPoint("decode48x64", (64,) * 48),
        GridPoint("decode-uneven6", _spread(40, 600, 6)),
        GridPoint("mixed3x150+prefill64", (100, 150, 220), ((64, 0, True),)),
    ]
    return pts


@dataclass
class Measured:
    point: GridPoint
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def rel_iqr(self) -> float:
        q1, q3 = np.percentile(self.times, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else float("nan")


def measure(executor: object, points: list[GridPoint], repeats: int, *, warmup: int = 1, seed: int = 0,
            progress: Callable[[int, int, str], None] | None = None) -> list[Measured]:
    """Time ``executor.execute`` on every point (warm-up, then ``repeats`` shuffled passes).

    ``executor`` must have ``init_cache`` and ``execute`` (the torch executor; a synthetic one in
    tests). Every pass visits the block sizes in a fresh order, re-initialising the cache for each.
    Returns one :class:`Measured` per point.
    """
    sampling = SamplingParams(max_tokens=1 << 20, temperature=1.0)
    out = {p.name: Measured(p) for p in points}
    by_bs: dict[int, list[GridPoint]] = {}
    for p in points:
        by_bs.setdefault(p.block_size, []).append(p)
    total, done = len(points) * (warmup + repeats), 0
    rng = random.Random(seed)
    steps = {p.name: p.step(sampling) for p in points}
    sizes = sorted(by_bs)
    for r in range(warmup + repeats):
        rng.shuffle(sizes)  # block sizes alternate across passes, so load drift does not follow the block size
        for bs in sizes:
            group = by_bs[bs]
            executor.init_cache(max(p.blocks_needed() for p in group) + 1, 0, bs)  # type: ignore[attr-defined]
            order = list(group)
            rng.shuffle(order)
            for p in order:
                t = executor.execute(steps[p.name]).duration_s  # type: ignore[attr-defined]
                if r >= warmup:
                    out[p.name].times.append(float(t))
                done += 1
                if progress is not None:
                    progress(done, total, p.name)
    return [out[p.name] for p in points]


def measure_around(executor: object, points: list[GridPoint], repeats: int, during: Callable[[], T], *,
                   warmup: int = 1, progress: Callable[[int, int, str], None] | None = None
                   ) -> tuple[list[Measured], T]:
    """:func:`measure` with ``during()`` run between two halves of the repeats (module docstring:
    bracketing); each point pools both halves' times. The first half takes the odd repeat, each
    half its own warm-up pass. Returns (the pooled measurements, ``during()``'s result)."""
    first, second = repeats - repeats // 2, repeats // 2
    total = len(points) * (2 * warmup + repeats) if second else len(points) * (warmup + repeats)
    offset = 0

    def prog(done: int, _n: int, name: str) -> None:
        if progress is not None:
            progress(offset + done, total, name)

    before = measure(executor, points, first, warmup=warmup, seed=0, progress=prog)
    offset = len(points) * (warmup + first)
    result = during()
    if not second:
        return before, result
    after = measure(executor, points, second, warmup=warmup, seed=1, progress=prog)
    return [Measured(a.point, a.times + b.times) for a, b in zip(before, after)], result
