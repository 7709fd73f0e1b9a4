"""Records the engine emits: one per step and one per finished request.

Metrics (``kvlab.metrics``) are pure functions over these, so the simulator, the real executor and
the server share one metrics implementation. Times are seconds on the engine clock (virtual for
the simulator, ``time.perf_counter``-based wall time for real executors).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepRecord:
    """State at the end of one engine step; memory fields are token slots (``MemoryReport``)."""

    step: int
    time: float  # clock at the end of the step
    duration_s: float
    num_running: int  # requests (sequence groups) running during the step
    num_waiting: int
    num_swapped: int
    num_running_seqs: int
    num_batched_tokens: int
    num_prefill_tokens: int
    num_decode_tokens: int
    num_preempted: int  # requests preempted in this step
    swapped_out_blocks: int
    swapped_in_blocks: int
    swap_time_s: float
    total_slots: int
    token_states: int
    reservation: int
    internal_frag: int
    external_frag: int
    free_slots: int
    logical_blocks: int
    physical_blocks: int
    shared_saved_slots: int
    gpu_memory_used_bytes: float | None = None  # sampled NVML reading (CUDA only; None = n/a)
    gpu_utilization_pct: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: a shallow copy (dataclasses.asdict deep-copies, 10x slower)


@dataclass
class RequestRecord:
    """Lifecycle of one request. ``token_times`` holds the clock time of every output token of the
    request's reported sequence (the best beam / the first sample), so ITL and TPOT use them."""

    request_id: str
    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    finish_time: float | None
    prompt_len: int
    output_len: int  # tokens of the reported sequence
    total_output_tokens: int  # over all sequences (parallel samples, beams)
    num_seqs: int
    num_preemptions: int
    num_cached_tokens: int  # prompt tokens served by the prefix cache
    finish_reason: str | None
    token_times: list[float] = field(default_factory=list)

    def as_dict(self, with_token_times: bool = False) -> dict:
        d = dict(self.__dict__)
        if with_token_times:
            d["token_times"] = list(self.token_times)
        else:
            d.pop("token_times")
        return d
