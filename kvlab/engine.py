"""``LLMEngine``: one step = schedule -> execute -> update_from_output -> outputs, with records.

The engine wires a config into an executor (sim or real model), sizes the block pool from the
executor's memory budget (unless ``allocator.num_blocks`` overrides it), builds the allocator and
the scheduler, and runs steps. It keeps a clock: virtual for the simulator (advanced by each
step's modelled duration), wall time for real executors.
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kvlab import debug
from kvlab.allocator import ALLOCATORS
from kvlab.allocator.base import MemoryReport
from kvlab.allocator.block_map import BlockMap, block_map
from kvlab.commit import Committer
from kvlab.config import KVConfig, to_plain
from kvlab.config_check import EXECUTOR_MODULES, check_config
from kvlab.engine_output import OutputBuilder, finished_record
from kvlab.engine_stats import Bookkeeping, EngineStats, KVUsage
from kvlab.executor import EXECUTORS, Executor, ScheduledSeq, StepInput
from kvlab.records import RequestRecord, StepRecord
from kvlab.request import Request, SamplingParams
from kvlab.request_output import RequestOutput
from kvlab.scheduler import SCHEDULERS, SchedulerOutput

GiB = 1 << 30


class LLMEngine:
    """Runs steps over one executor, allocator and scheduler; owns every request until it finishes.

    State it owns (mutated by ``add_request``, ``abort_request`` and ``step``): ``requests`` (live
    requests only — a finished request is released at once), ``step_records`` and
    ``request_records`` (all of them when ``max_records`` is None, the experiments' mode; else
    ring buffers of the last ``max_records``, a long-running server's mode), and :attr:`stats`, an
    immutable :class:`~kvlab.engine_stats.EngineStats` replaced after every step, which is all a
    reader on another thread may look at.
    """

    def __init__(self, cfg: Mapping[str, Any], executor: Executor | None = None, *,
                 max_records: int | None = None, latency_window: int = 1000) -> None:
        cfg = to_plain(cfg)
        check_config(cfg)
        self.cfg = cfg
        kv = KVConfig.from_config(cfg)
        self.executor = executor if executor is not None else _build_executor(cfg)
        alloc = dict(cfg["allocator"])
        name, num_blocks = alloc.pop("name"), alloc.pop("num_blocks", None)
        block_size = int(alloc.get("block_size", 16))
        self.block_size = block_size
        self.max_model_len = int(kv.max_model_len or self.executor.max_model_len)
        self.block_bytes = self.executor.kv_bytes_per_block(block_size)
        if num_blocks is None:
            num_blocks = self.executor.kv_capacity_blocks(block_size)
        if num_blocks < 1:
            raise ValueError(f"the KV budget holds no block of {block_size} tokens: raise the memory "
                             "budget or set allocator.num_blocks")
        num_cpu_blocks = int(kv.swap_space_gib * GiB // self.block_bytes)
        self.allocator = ALLOCATORS.build(name, int(num_blocks), max_model_len=self.max_model_len,
                                          num_cpu_blocks=num_cpu_blocks, **alloc)
        self.tokenizer = getattr(self.executor, "tokenizer", None)
        decode = None
        if self.tokenizer is not None:
            decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        self._outputs = OutputBuilder(decode)
        committer = Committer(self.executor.eos_token_id, self.max_model_len, decode)
        sched = dict(cfg["scheduler"])
        self.scheduler = SCHEDULERS.build(sched.pop("name"), self.allocator, self.max_model_len,
                                          committer=committer, **sched)
        self.executor.init_cache(int(num_blocks), num_cpu_blocks, block_size)
        self.kv_capacity_tokens = int(num_blocks) * block_size
        self.vocab_size = _vocab_size(self.executor, cfg)
        self.virtual_time = bool(getattr(self.executor, "virtual_time", False))
        self._t0 = time.perf_counter()
        self._now = 0.0
        self._ids = itertools.count()
        self.requests: dict[str, Request] = {}
        if max_records is not None and max_records < 1:
            raise ValueError(f"max_records must be a positive integer or None (keep all), got {max_records}")
        self.max_records = max_records
        self.step_records: list[StepRecord] | deque[StepRecord] = [] if max_records is None else deque(
            maxlen=max_records)
        self.request_records: list[RequestRecord] | deque[RequestRecord] = [] if max_records is None else \
            deque(maxlen=max_records)
        # finished requests kept for callers that read them afterwards (experiment samples); none
        # in the bounded (server) mode
        self.finished_requests: deque[Request] = deque(maxlen=None if max_records is None else 0)
        self.num_steps = 0
        self._book = Bookkeeping(latency_window)
        self.stats = EngineStats()
        # Called on this thread after every publication: ``listener(engine, stats)``. The block-map
        # publishers (dashboard, recorder) hook in here and decide themselves when to snapshot.
        self.stats_listeners: list[Callable[[LLMEngine, EngineStats], None]] = []
        self.publish_stats()
        self.collect_outputs = True  # step() returns RequestOutputs; trace replays turn this off

    # -- clock --
    def now(self) -> float:
        return self._now if self.virtual_time else time.perf_counter() - self._t0

    def advance_to(self, t: float) -> None:
        """Idle until ``t`` (virtual clock jumps; wall clock sleeps)."""
        if self.virtual_time:
            self._now = max(self._now, t)
        else:
            delay = t - self.now()
            if delay > 0:
                time.sleep(delay)

    # -- requests --
    def add_request(self, prompt: str | list[int] | None, params: SamplingParams, *,
                    request_id: str | None = None, arrival_time: float | None = None,
                    expected_output_len: int | None = None) -> Request:
        """Validate and enqueue a request. Raises ``ValueError`` (nothing is allocated then)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this executor has no tokenizer: pass prompt token ids")
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, list(prompt or [])
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's maximum length is "
                             f"{self.max_model_len} (prompt + at least one generated token)")
        if self.vocab_size is not None:
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise ValueError(f"prompt token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        params.validate(self.vocab_size)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self.requests:
            raise ValueError(f"request id {rid!r} is already in use")
        req = Request(rid, ids, params, self.now() if arrival_time is None else arrival_time,
                      expected_output_len=expected_output_len, prompt=text)
        self.scheduler.add_request(req)  # raises ValueError if it could never fit the KV pool
        self.requests[rid] = req
        return req

    def abort_request(self, request_id: str) -> None:
        """Stop a request wherever it is and free its blocks (idempotent)."""
        req = self.scheduler.abort_request(request_id)
        if req is not None:
            self._finish(req)
            self._outputs.forget(req)  # no final output is built for an abort

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- the step --
    def step(self) -> list[RequestOutput]:
        """Run one iteration; returns outputs of requests that got tokens or finished.

        Reads top to bottom: the scheduler plans, the executor runs, the scheduler applies the
        results (tokens, stops, forks, frees) and hands back what finished, the engine records
        and reports. Nothing is drained from a queue on the side.
        """
        out = self.scheduler.schedule()
        result = self.executor.execute(self._step_input(out))
        if self.virtual_time:
            self._now += result.duration_s
        now = self.now()
        finished = self.scheduler.update_from_output(out, result, now)
        for req in finished:
            self._finish(req)
        outputs = [self.make_output(req) for req in out.rejected]
        if self.collect_outputs:
            seen = set()
            for chunk in out.chunks:
                req = chunk.seq.request
                if req.request_id in seen:
                    continue
                seen.add(req.request_id)
                if req.finish_time is not None or req.first_token_time is not None:
                    outputs.append(self.make_output(req))
        self._record_step(out, result.duration_s, result.swap_time_s, now)
        if result.device_stats:  # sampled GPU readings (torch executor on CUDA)
            self.step_records[-1].gpu_memory_used_bytes = result.device_stats.get("gpu_memory_used_bytes")
            self.step_records[-1].gpu_utilization_pct = result.device_stats.get("gpu_utilization_pct")
        if debug.CHECK_INVARIANTS and self.num_steps % debug.CHECK_INVARIANTS == 0:
            self.allocator.check_invariants()
        return outputs

    def _step_input(self, out: SchedulerOutput) -> StepInput:
        seqs = []
        for chunk in out.chunks:
            seq, n = chunk.seq, chunk.num_new_tokens
            start = seq.num_computed_tokens
            sp = seq.request.sampling_params
            samples = 0
            if start + n == seq.num_tokens:
                if sp.use_beam_search:
                    samples = 2 * sp.beam_width
                elif sp.n > 1 and len(seq.request.seqs) == 1 and seq.num_output_tokens == 0:
                    samples = sp.n
                else:
                    samples = 1
            seqs.append(ScheduledSeq(seq.seq_id, seq.request.request_id, seq.token_ids[start:start + n],
                                     start, chunk.block_table, samples, sp, seq.num_output_tokens,
                                     beam=sp.use_beam_search))
        return StepInput(seqs, out.blocks_to_copy, out.blocks_to_swap_out, out.blocks_to_swap_in)

    def _finish(self, req: Request) -> None:
        """Record a request the scheduler has finished (its blocks are already free)."""
        if req.finish_time is not None:
            self.requests.pop(req.request_id, None)
            return
        req.finish_time = self.now()
        self.request_records.append(finished_record(req))
        self._release(req, self.request_records[-1])

    # -- bookkeeping (owned state; readers see only ``stats``) --
    def _release(self, req: Request, rec: RequestRecord) -> None:
        """Forget a finished request (its blocks are already free) and fold it into the aggregates."""
        self.requests.pop(req.request_id, None)
        self.finished_requests.append(req)
        self._book.finished(rec)

    def publish_stats(self, out: SchedulerOutput | None = None, duration: float = 0.0,
                      report: MemoryReport | None = None, running_seqs: int | None = None) -> EngineStats:
        """Build and publish a new :class:`EngineStats` (after a step: ``out``/``duration``/``report``
        of that step; between steps, e.g. after requests were added or aborted: no arguments)."""
        m = report if report is not None else self.allocator.memory_report()
        s, a, b = self.scheduler, self.allocator, self._book
        prev = self.stats
        wall = time.time()
        counters = a.stats()
        self.stats = EngineStats(
            step=self.num_steps, clock_s=self.now(), published_at=wall,
            last_step_at=wall if out is not None else prev.last_step_at,
            busy_since=(prev.busy_since or wall) if self.requests else None,
            last_step_duration_s=duration if out is not None else prev.last_step_duration_s,
            running=len(s.running), waiting=len(s.waiting), swapped=len(s.swapped),
            running_seqs=s.num_running_seqs() if running_seqs is None else running_seqs,
            batch_tokens=out.num_batched_tokens if out is not None else prev.batch_tokens,
            unfinished=len(self.requests),
            kv=KVUsage(m.token_states, m.reservation, m.internal_frag, m.external_frag, m.free_slots,
                       m.total_slots, int(a.num_free_blocks()), int(a.num_blocks), self.block_size),
            prefix_query_tokens=int(counters.get("prefix_query_tokens", 0)),
            prefix_hit_tokens=int(counters.get("prefix_hit_tokens", 0)),
            num_preemptions=int(s.num_preemptions),
            swapped_out_blocks=b.swapped_out_blocks, swapped_in_blocks=b.swapped_in_blocks,
            num_finished=b.num_finished, num_aborted=b.num_aborted, recent_latencies=b.latencies())
        for listener in self.stats_listeners:
            listener(self, self.stats)
        return self.stats

    def block_map(self) -> BlockMap:
        """The pool block by block, now (:mod:`kvlab.allocator.block_map`); engine thread only,
        O(num_blocks): for the dashboard and recordings, not for every step."""
        return block_map(self.allocator)

    def _record_step(self, out: SchedulerOutput, duration: float, swap_time: float, now: float) -> None:
        self.num_steps += 1
        m = self.allocator.memory_report()
        self._book.swapped_out_blocks += len(out.blocks_to_swap_out)
        self._book.swapped_in_blocks += len(out.blocks_to_swap_in)
        s = self.scheduler
        self.step_records.append(StepRecord(
            step=self.num_steps, time=now, duration_s=duration, num_running=len(s.running),
            num_waiting=len(s.waiting), num_swapped=len(s.swapped), num_running_seqs=s.num_running_seqs(),
            num_batched_tokens=out.num_batched_tokens, num_prefill_tokens=out.num_prefill_tokens,
            num_decode_tokens=out.num_decode_tokens, num_preempted=len(out.preempted),
            swapped_out_blocks=len(out.blocks_to_swap_out), swapped_in_blocks=len(out.blocks_to_swap_in),
            swap_time_s=swap_time, total_slots=m.total_slots, token_states=m.token_states,
            reservation=m.reservation, internal_frag=m.internal_frag, external_frag=m.external_frag,
            free_slots=m.free_slots, logical_blocks=m.logical_blocks, physical_blocks=m.physical_blocks,
            shared_saved_slots=m.shared_saved_slots))
        self.publish_stats(out, duration, m, self.step_records[-1].num_running_seqs)

    # -- outputs --
    def make_output(self, req: Request) -> RequestOutput:
        """The request's outputs so far (text decoded incrementally, :mod:`kvlab.engine_output`)."""
        rec = self.request_records[-1] if req.finish_time is not None and self.request_records and \
            self.request_records[-1].request_id == req.request_id else None
        return self._outputs.build(req, rec)

def _vocab_size(executor: Executor, cfg: Mapping[str, Any]) -> int | None:
    """The vocabulary token ids are checked against: the executor's, else the model config's."""
    size = getattr(executor, "vocab_size", None) or cfg.get("model", {}).get("vocab_size")
    return int(size) if size else None


def _build_executor(cfg: dict[str, Any]) -> Executor:
    name = cfg["executor"]["name"]
    if name == "auto":
        from kvlab.executor.auto import resolve_auto

        name = resolve_auto(cfg)
    importlib.import_module(EXECUTOR_MODULES[name])  # registers the factory
    return EXECUTORS.build(name, cfg)

