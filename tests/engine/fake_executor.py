"""A tensor-free executor for engine/scheduler tests: each step takes 1 ms of virtual time, tokens
are a deterministic function of (seq, sample index), beam candidates get seeded random logprobs.

It also replays every block copy/swap on a dict "cache" that stores, per physical block, which
(seq token) positions it holds, so tests can check that KV data really follows the blocks.
"""

from __future__ import annotations

import random

from kvlab.executor.base import Sample, StepInput, StepOutput


class FakeExecutor:
    virtual_time = True
    vocab_size = 2048  # it samples ids 100..1499; the engine checks token ids against this

    def __init__(self, num_blocks: int = 64, block_bytes: int = 1024, max_model_len: int = 2048,
                 eos_token_id: int | None = None, seed: int = 0) -> None:
        self._num_blocks = num_blocks
        self._block_bytes = block_bytes
        self.max_model_len = max_model_len
        self.eos_token_id = eos_token_id
        self.rng = random.Random(seed)
        self.gpu: dict[int, dict[int, int]] = {}
        self.cpu: dict[int, dict[int, int]] = {}
        self.steps: list[StepInput] = []
        self.check_context = None  # optional callback(seq_id, cached tokens before the step)

    def kv_capacity_blocks(self, block_size: int) -> int:
        return self._num_blocks

    def kv_bytes_per_block(self, block_size: int) -> int:
        return self._block_bytes

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        self.block_size = block_size

    def execute(self, step: StepInput) -> StepOutput:
        self.steps.append(step)
        for g, c in step.blocks_to_swap_out:
            self.cpu[c] = dict(self.gpu.get(g, {}))
        for c, g in step.blocks_to_swap_in:
            self.gpu[g] = dict(self.cpu.get(c, {}))
        for s, d in step.blocks_to_copy:
            self.gpu[d] = dict(self.gpu.get(s, {}))
        bs = self.block_size
        samples: dict[int, list[Sample]] = {}
        for sq in step.seqs:
            if self.check_context is not None:  # what this step will attend to, before it writes
                self.check_context(sq.seq_id, self.kv_tokens(sq.block_table, sq.start_pos))

            for i, tok in enumerate(sq.token_ids):
                p = sq.start_pos + i
                self.gpu.setdefault(sq.block_table[p // bs], {})[p % bs] = tok
            if sq.num_samples:
                if sq.beam:
                    samples[sq.seq_id] = [Sample(100 + self.rng.randrange(900), -self.rng.random() * (k + 1))
                                          for k in range(sq.num_samples)]
                else:
                    samples[sq.seq_id] = [Sample(1000 + (sq.seq_id * 7 + sq.sample_index + k) % 500, -0.5)
                                          for k in range(sq.num_samples)]
        return StepOutput(samples, duration_s=0.001)

    def kv_tokens(self, block_table: list[int], num_tokens: int) -> list[int | None]:
        """Tokens the fake cache holds for a sequence, read through its block table."""
        bs = self.block_size
        return [self.gpu.get(block_table[p // bs], {}).get(p % bs) for p in range(num_tokens)]
