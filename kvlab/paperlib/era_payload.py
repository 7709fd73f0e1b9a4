"""What one Ray worker call carried per sequence in vLLM v0.2.6 and in the paper's 2023 engine, measured.

Until v0.2.7 the driver called every tensor-parallel worker each step with the step's sequence
metadata, serialized once per call (:mod:`kvlab.paperlib.era_tp`). What that metadata held differs
between the two engines, and the difference is the point of this module:

* **vLLM v0.2.6** (the engine vLLM PR #2221 measured): per sequence group a ``SequenceGroupMetadata``
  (request id, is_prompt, ``seq_data``, sampling params, block tables), where ``seq_data`` maps each
  sequence to a ``SequenceData`` holding its FULL prompt and output token lists, every step; the
  sampling params object has some 20 fields (n, best_of, three penalties, temperature, top_p, top_k,
  min_p, beam flags, stop strings and ids, ignore_eos, max_tokens, logprobs, detokenization flags,
  logits processors; the stand-in has 22, recalled rather than read field by field, and the
  derivation is insensitive to it: ``era_tp`` reports w_step with this object cost moved +-20%).
* **the paper's engine** (CacheFlow, 2023; ``cacheflow/master/scheduler.py``, read through the code
  search): per group a ``SequenceGroupInputs`` (group id, is_prompt, ``input_tokens``, context length,
  cumulative logprobs, sampling params, block tables), where ``input_tokens`` holds a prompt's tokens
  on its first step and only the LAST token afterwards; its sampling params have 8 fields.

So v0.2.6's per-sequence cost grows with the context, and the paper engine's hardly does. This
module builds stand-ins with those fields (kvlab's own classes: field names and types only), times
``pickle`` protocol 5 round trips (what Ray's serializer does for plain objects) over a grid of
batch sizes and token-list lengths, and fits, per layout, ``seconds = n x seq + int x ints``:
``seq`` the cost of one sequence's objects, ``int`` the cost of one int in its lists (token ids and
block-table entries). Only the two layouts' shapes are used downstream (the PR's measurements fix
the scale, :func:`kvlab.paperlib.era_tp.derive`); the machine is recorded because the shape is a
CPU measurement. ``python -m kvlab.paperlib.era_payload`` writes
``results/paper/era2023/payload_fit.json`` (about 20 s).
"""

from __future__ import annotations

import gc
import json
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOCK = 16  # tokens per block-table entry (both engines' default block size for these runs)
GRID_N = (16, 64, 256)
GRID_INTS = (1, 64, 256, 1024, 2048)  # token ids per sequence in the payload's lists


class _Fields:
    """A plain object with the given attributes (pickled as a class reference + ``__dict__``)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _sampling_v026() -> _Fields:
    return _Fields(n=1, best_of=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
                   temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, use_beam_search=False, length_penalty=1.0,
                   early_stopping=False, stop=[], stop_token_ids=[], include_stop_str_in_output=False,
                   ignore_eos=True, max_tokens=256, logprobs=None, prompt_logprobs=None, skip_special_tokens=True,
                   spaces_between_special_tokens=True, logits_processors=[])


def _sampling_cacheflow() -> _Fields:
    return _Fields(n=1, temperature=1.0, top_p=1.0, top_k=-1, use_beam_search=False, stop_token_ids=set(),
                   max_num_steps=256, num_logprobs=0)


def group_v026(i: int, tokens: list[int]) -> _Fields:
    """One v0.2.6 group of one sequence whose context is ``tokens`` (split prompt / output)."""
    half = len(tokens) // 2
    data = _Fields(prompt_token_ids=tokens[:half], output_token_ids=tokens[half:], cumulative_logprob=-1.0)
    return _Fields(request_id=str(i), is_prompt=False, seq_data={i: data}, sampling_params=_sampling_v026(),
                   block_tables={i: list(range(len(tokens) // BLOCK + 1))})


def group_cacheflow(i: int, tokens: list[int]) -> _Fields:
    """One paper-engine group of one sequence sending ``tokens`` as its input tokens (the same
    block table as v0.2.6's for that many tokens, so the two layouts are timed on equal ints)."""
    return _Fields(group_id=i, is_prompt=False, input_tokens={i: tokens}, context_len=len(tokens),
                   seq_logprobs={i: -1.0}, sampling_params=_sampling_cacheflow(),
                   block_tables={i: list(range(len(tokens) // BLOCK + 1))})


LAYOUTS: dict[str, Callable[[int, list[int]], _Fields]] = {"v0.2.6": group_v026, "cacheflow_2023": group_cacheflow}


def ints_per_seq(tokens: int) -> int:
    """Ints in one sequence's lists for ``tokens`` token ids: the ids plus its block table."""
    return tokens + tokens // BLOCK + 1


def time_round_trip(obj: Any, repeats: int) -> float:
    """Fastest of ``repeats`` runs of ``pickle.loads(pickle.dumps(obj, 5))`` (GC off): the
    machine's cost without the noise of a shared VM, which only ever adds time."""
    times = []
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            pickle.loads(pickle.dumps(obj, protocol=5))
            times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return min(times)


def measure(layout: str, repeats: int = 21, seed: int = 0) -> list[dict[str, float]]:
    """Time ``layout``'s payload over :data:`GRID_N` x :data:`GRID_INTS` (token ids < 32000, LLaMA's vocabulary)."""
    rng = random.Random(seed)
    build = LAYOUTS[layout]
    rows = []
    for n in GRID_N:
        for k in GRID_INTS:
            payload = [build(i, [rng.randrange(32000) for _ in range(k)]) for i in range(n)]
            seconds = time_round_trip(payload, repeats)
            rows.append({"n": n, "tokens": k, "ints": n * ints_per_seq(k), "seconds": seconds})
    return rows


def fit(rows: list[dict[str, float]]) -> dict[str, float]:
    """Least squares through the origin of ``seconds = seq x n + int x ints``, weighted by 1/seconds
    (relative errors): µs per sequence and per int, and the largest relative residual. Pure."""
    import numpy as np

    y = np.array([r["seconds"] for r in rows])
    x = np.array([[r["n"], r["ints"]] for r in rows]) / y[:, None]
    coef = np.linalg.lstsq(x, np.ones(len(rows)), rcond=None)[0]
    res = np.abs(x @ coef - 1.0)
    return {"seq_us": 1e6 * float(coef[0]), "int_us": 1e6 * float(coef[1]), "max_residual_pct": 100 * float(res.max())}


def run(root: Path, repeats: int = 41) -> dict[str, Any]:
    """Measure and fit both layouts on this machine; writes ``root/payload_fit.json``."""
    import platform

    from kvlab.manifest import cpu_info

    out: dict[str, Any] = {"machine": {**cpu_info(), "python": platform.python_version()},
                           "method": f"pickle protocol 5 dumps+loads, fastest of {repeats}, GC off", "layouts": {}}
    for layout in LAYOUTS:
        rows = measure(layout, repeats)
        out["layouts"][layout] = {"fit": fit(rows), "rows": rows}
    root.mkdir(parents=True, exist_ok=True)
    (root / "payload_fit.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m kvlab.paperlib.era_payload``: measure the two engines' per-sequence payloads."""
    import argparse

    from kvlab.paperlib.era import ROOT

    ap = argparse.ArgumentParser(prog="python -m kvlab.paperlib.era_payload", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=41)
    args = ap.parse_args(argv)
    out = run(ROOT, args.repeats)
    for layout, v in out["layouts"].items():
        f = v["fit"]
        print(f"{layout:15s} {f['seq_us']:5.2f} µs per sequence + {1e3 * f['int_us']:5.1f} ns per int "
              f"(largest residual {f['max_residual_pct']:.0f}%)")
    print(f"results: {ROOT / 'payload_fit.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
