"""Request-level (static) batching: the FasterTransformer baseline of the vLLM paper.

A batch is formed from the earliest waiting requests — as many as the allocator can hold (and at
most ``max_batch_size``) — and runs to completion; nothing joins until every request of the batch
has finished. Prompts of a new batch are prefilled together regardless of the token budget, as a
padded static batch would. Allocation, and so the batch size "limited by memory", comes from the
chosen allocator (the paper's FasterTransformer reserves the model's max length: ``contiguous``
with ``reservation=max``).
"""

from __future__ import annotations

from kvlab.allocator.base import KVAllocator
from kvlab.scheduler.base import SchedulerOutput
from kvlab.scheduler.fcfs import SCHEDULERS, FCFSScheduler


class StaticScheduler(FCFSScheduler):
    def __init__(self, allocator: KVAllocator, max_model_len: int, *, max_batch_size: int = 256,
                 **kw: object) -> None:
        kw.setdefault("chunked_prefill", False)  # type: ignore[union-attr]
        kw["max_num_seqs"] = max_batch_size
        # Prompts of a batch go in one step, so the budget must hold a whole batch of them.
        kw["max_num_batched_tokens"] = max(int(kw.get("max_num_batched_tokens", 0)),  # type: ignore[call-overload]
                                           max_batch_size * max_model_len)
        super().__init__(allocator, max_model_len, **kw)  # type: ignore[arg-type]
        self._batch_open = True

    def _admission_open(self) -> bool:
        return self._batch_open and not self.swapped

    def schedule(self) -> SchedulerOutput:
        if not self.running and not self.swapped:
            self._batch_open = True  # previous batch finished: form a new one this step
        out = super().schedule()
        if self.running:
            self._batch_open = False  # the batch is formed; it now runs to completion
        return out


@SCHEDULERS.register("static")
def _build_static(allocator: KVAllocator, max_model_len: int, **options: object) -> StaticScheduler:
    return StaticScheduler(allocator, max_model_len, **options)
