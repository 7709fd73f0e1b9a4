"""Longest-prefix-match first (SGLang's ``lpm`` policy), for the prefix-sharing allocator.

Before admission the waiting queue is ordered by how many prompt tokens the prefix cache already
holds, longest first (ties keep arrival order), so requests that share a cached prefix run while
it is still cached. Like SGLang, it falls back to FCFS when the queue is long (matching every
waiting prompt each step would cost more than it saves).
"""

from __future__ import annotations

from collections import deque

from kvlab.allocator.base import KVAllocator
from kvlab.scheduler.fcfs import SCHEDULERS, FCFSScheduler


class LPMScheduler(FCFSScheduler):
    def __init__(self, allocator: KVAllocator, max_model_len: int, *, lpm_max_queue: int = 128,
                 **kw: object) -> None:
        super().__init__(allocator, max_model_len, **kw)  # type: ignore[arg-type]
        self.lpm_max_queue = lpm_max_queue

    def _order_waiting(self) -> None:
        if len(self.waiting) < 2 or len(self.waiting) > self.lpm_max_queue:
            return
        def cached(i_req: tuple) -> tuple[int, int]:
            i, req = i_req
            seq = req.seqs[0]
            hit = self.allocator.get_computed_blocks(seq)[1] if seq.num_computed_tokens == 0 else 0
            return (-hit, i)
        self.waiting = deque(req for _, req in sorted(enumerate(self.waiting), key=cached))


@SCHEDULERS.register("lpm")
def _build_lpm(allocator: KVAllocator, max_model_len: int, **options: object) -> LPMScheduler:
    return LPMScheduler(allocator, max_model_len, **options)
