"""Replay a workload trace through an engine: requests enter at their arrival times.

On the simulator's virtual clock an idle engine jumps to the next arrival; on a real executor it
sleeps until then. Progress is shown as a bar of finished requests (``show_progress``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tqdm import tqdm

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams


def trace_params(tr: Any, *, ignore_eos: bool = True, temperature: float = 1.0,
                 seed: int | None = None) -> SamplingParams:
    """Sampling parameters for one trace request. Output lengths are forced from the trace (the
    paper's experiments do this: EOS is ignored and max_tokens = the recorded output length)."""
    beam = int(getattr(tr, "beam_width", 1) or 1)
    return SamplingParams(n=int(getattr(tr, "n", 1) or 1), beam_width=beam, max_tokens=int(tr.output_len),
                          ignore_eos=ignore_eos, temperature=0.0 if beam > 1 else temperature, seed=seed)


def replay(engine: LLMEngine, trace: list[Any], *, show_progress: bool = True, ignore_eos: bool = True,
           temperature: float = 1.0, seed: int | None = None, desc: str = "requests") -> None:
    """Run every request of ``trace`` (``TraceRequest``-like objects) to completion."""
    pending = deque(sorted(trace, key=lambda t: t.arrival_time))
    engine.collect_outputs = False  # records are the result here; building outputs costs time
    t_offset = engine.now()
    done_before = len(engine.request_records)
    with tqdm(total=len(trace), desc=desc, disable=not show_progress, unit="req",
              mininterval=0.5, dynamic_ncols=True) as bar:
        while pending or engine.has_unfinished_requests():
            now = engine.now()
            while pending and pending[0].arrival_time + t_offset <= now:
                tr = pending.popleft()
                prompt = tr.prompt_token_ids if tr.prompt_token_ids is not None else tr.prompt
                engine.add_request(prompt, trace_params(tr, ignore_eos=ignore_eos, temperature=temperature,
                                                        seed=seed),
                                   request_id=str(tr.request_id), arrival_time=tr.arrival_time + t_offset,
                                   expected_output_len=int(tr.output_len) if ignore_eos else None)
            if not engine.has_unfinished_requests():
                engine.advance_to(pending[0].arrival_time + t_offset)
                continue
            engine.step()
            finished = len(engine.request_records) - done_before
            if finished != bar.n:
                bar.update(finished - bar.n)
                bar.set_postfix_str(f"t={engine.now():.1f}s", refresh=False)
