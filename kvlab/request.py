"""Requests, sequences and sampling parameters: the state shared by scheduler, allocator and engine.

kvlab follows the token-budget model: every sequence carries ``num_computed_tokens``, the number
of its tokens whose KV is already in the cache. Prefill, chunked prefill, prefix-cache hits and
recompute after preemption are all "compute tokens ``num_computed_tokens .. num_tokens``".

A :class:`Request` owns one or more :class:`Sequence` objects: one for plain sampling, ``n`` for
parallel sampling, ``beam_width`` for beam search. They are scheduled together (gang scheduling)
and share KV blocks through the allocator's ``fork``.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED_STOPPED = "finished_stopped"  # EOS or a stop string / stop token
    FINISHED_LENGTH = "finished_length"  # max_tokens (or the model's max length)
    FINISHED_ABORTED = "finished_aborted"  # client went away / request rejected mid-flight
    FINISHED_PRUNED = "finished_pruned"  # a beam that lost the beam search
    FINISHED_CAPACITY = "finished_capacity"  # outgrew what the KV pool can ever hold
    FINISHED_ERROR = "finished_error"  # processing this request raised; the batch went on

    finished: bool  # set on each member below: a plain attribute read, hot in the engine loop

    @property
    def finish_reason(self) -> str | None:
        return {
            SequenceStatus.FINISHED_STOPPED: "stop",
            SequenceStatus.FINISHED_LENGTH: "length",
            SequenceStatus.FINISHED_ABORTED: "abort",
            SequenceStatus.FINISHED_PRUNED: "pruned",
            SequenceStatus.FINISHED_CAPACITY: "length",
            SequenceStatus.FINISHED_ERROR: "error",
        }.get(self)


for _s in SequenceStatus:
    _s.finished = _s.value.startswith("finished")


@dataclass
class SamplingParams:
    """How to generate. Mirrors vLLM's ``SamplingParams`` names so its users know them.

    ``top_k <= 0`` and ``top_p == 1`` disable those filters; ``temperature == 0`` is greedy.
    ``logprobs`` asks for the chosen token's logprob plus that many top alternatives (0 = chosen only).
    ``beam_width > 1`` turns on beam search (temperature is then ignored: beams are scored by logprob).
    """

    n: int = 1
    beam_width: int = 1
    max_tokens: int = 16
    min_tokens: int = 0
    ignore_eos: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.seed, int) and not isinstance(self.seed, bool) and not 0 <= self.seed < 2**63:
            self.seed %= 2**63  # any integer seeds; the generators take 63 bits (OpenAI's seed is unbounded)
        self.validate()

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise ``ValueError`` naming the field and what is allowed.

        With ``vocab_size`` (the engine passes the model's), token ids must lie in the vocabulary
        and ``top_k`` above it is clamped to it (mutates ``top_k``: same distribution).
        """
        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        checks = [
            (isinstance(self.n, int) and self.n >= 1, "n must be an integer >= 1"),
            (isinstance(self.beam_width, int) and self.beam_width >= 1, "beam_width must be >= 1"),
            (isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.min_tokens >= 0, "min_tokens must be >= 0"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (isinstance(self.top_k, int), "top_k must be an integer (<= 0 disables it)"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in 0..20"),
            (not (self.n > 1 and self.beam_width > 1), "use either n > 1 or beam_width > 1, not both"),
            (self.seed is None or (is_int(self.seed) and 0 <= self.seed < 2**63),
             "seed must be an integer"),
            (all(is_int(t) for t in self.stop_token_ids), "stop_token_ids must be integers"),
            (self.length_penalty == self.length_penalty, "length_penalty must be a number"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid SamplingParams: {msg}")
        if vocab_size is not None:
            bad = next((t for t in self.stop_token_ids if not 0 <= t < vocab_size), None)
            if bad is not None:
                raise ValueError(f"invalid SamplingParams: stop_token_ids contains {bad}, outside the "
                                 f"vocabulary (0..{vocab_size - 1})")
            if self.top_k > vocab_size:
                self.top_k = vocab_size

    @property
    def use_beam_search(self) -> bool:
        return self.beam_width > 1

    @property
    def num_seqs(self) -> int:
        """Sequences the request holds while running (its KV footprint multiplier)."""
        return self.beam_width if self.use_beam_search else self.n


_seq_counter = itertools.count()


class Sequence:
    """One token stream with its own block table in the allocator.

    The allocator reads ``seq_id``, ``token_ids``, ``num_prompt_tokens``, ``num_computed_tokens``,
    ``group_size`` and ``request.expected_output_len``; it never mutates a sequence except
    ``block_hashes``, the hash prefix index's cache of this sequence's full-block keys
    (``(tag, keys)`` or ``None``), computed once per sequence instead of once per lookup.
    """

    __slots__ = (
        "seq_id", "request", "token_ids", "num_prompt_tokens", "num_computed_tokens", "status",
        "cumulative_logprob", "logprobs", "top_logprobs", "stop_reason", "num_cached_tokens",
        "token_times", "block_hashes",
    )

    def __init__(self, request: Request, token_ids: list[int], seq_id: int | None = None) -> None:
        self.seq_id = next(_seq_counter) if seq_id is None else seq_id
        self.request = request
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(request.prompt_token_ids)
        self.num_computed_tokens = 0
        self.status = SequenceStatus.WAITING
        self.cumulative_logprob = 0.0
        self.logprobs: list[float] = []
        self.top_logprobs: list[dict[int, float]] = []
        self.stop_reason: int | str | None = None
        self.num_cached_tokens = 0  # prompt tokens served by the prefix cache (last admission)
        self.token_times: list[float] = []
        self.block_hashes: tuple | None = None  # owned by the hash prefix index (see above)

    # -- derived sizes (never stored twice) --
    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def group_size(self) -> int:
        return self.request.sampling_params.num_seqs

    @property
    def is_finished(self) -> bool:
        return self.status.finished

    def fork(self, new_seq_id: int | None = None) -> Sequence:
        """A copy of this sequence's tokens and scores under a new id (KV is forked separately)."""
        child = Sequence(self.request, self.token_ids, new_seq_id)
        child.num_computed_tokens = self.num_computed_tokens
        child.status = self.status
        child.cumulative_logprob = self.cumulative_logprob
        child.logprobs = list(self.logprobs)
        child.top_logprobs = list(self.top_logprobs)
        child.token_times = list(self.token_times)
        if self.block_hashes is not None:  # same tokens so far; the child extends its own copy
            child.block_hashes = (self.block_hashes[0], list(self.block_hashes[1]))
        return child

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, req={self.request.request_id}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")


class Request:
    """A client request: prompt, sampling parameters and the sequences generating for it.

    ``expected_output_len`` is what the allocator may assume about the final output length: the
    trace's forced length in simulator experiments (the paper's "oracle"), else ``max_tokens``.
    Times are seconds on the engine's clock (virtual for the simulator, wall for real models).
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        arrival_time: float = 0.0,
        expected_output_len: int | None = None,
        prompt: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = sampling_params
        self.arrival_time = arrival_time
        self.expected_output_len = (
            expected_output_len if expected_output_len is not None else sampling_params.max_tokens
        )
        self.seqs: list[Sequence] = [Sequence(self, self.prompt_token_ids)]
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.num_preemptions = 0
        self.num_cached_tokens = 0  # prompt tokens served by prefix hits (first admission)
        self.finished_seqs: list[Sequence] = []  # beams that finished (beam search keeps candidates)
        self.finish_detail: str | None = None  # why the engine ended it early (rejected, outgrew, error)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    def live_seqs(self) -> list[Sequence]:
        return [s for s in self.seqs if not s.status.finished]

    @property
    def is_finished(self) -> bool:
        return all(s.status.finished for s in self.seqs)

    def __repr__(self) -> str:
        return f"Request({self.request_id!r}, prompt={self.num_prompt_tokens}, seqs={len(self.seqs)})"


def is_decode(num_new_tokens: int) -> bool:
    """The one rule for "this chunk is a decode": it computes exactly one token (a single query
    against the cached context). Prompt chunks, recomputes and prefix-hit remainders of one token
    count as decodes too — the computation is the same."""
    return num_new_tokens == 1
