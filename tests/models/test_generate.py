"""Greedy generation through TorchExecutor equals transformers' generate, token for token.

Three prompts run concurrently (one prefill step for all three, then batched decode steps with
different context lengths) over a hand-built block assignment: sequence i owns a shuffled
slice of the block ids. The engine-level version of this test lives with the engine.
"""

from __future__ import annotations

import torch

from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.request import SamplingParams
from tests.models.helpers import shuffled_table

NEW_TOKENS = 48
BLOCK = 16


def executor_greedy(executor, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    per_seq = (max(map(len, prompts)) + new_tokens) // BLOCK + 1
    executor.init_cache(per_seq * len(prompts), 0, BLOCK)
    ids = shuffled_table(per_seq * len(prompts), seed=11)
    tables = [ids[i * per_seq:(i + 1) * per_seq] for i in range(len(prompts))]
    # min_tokens masks EOS like HF min_new_tokens, so both run the full length
    greedy = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens)
    step = StepInput([ScheduledSeq(i, f"r{i}", list(p), 0, tables[i], 1, greedy)
                      for i, p in enumerate(prompts)])
    outs: list[list[int]] = [[] for _ in prompts]
    for k in range(new_tokens):
        result = executor.execute(step)
        assert result.duration_s > 0
        for i in range(len(prompts)):
            outs[i].append(result.samples[i][0].token_id)
        step = StepInput([ScheduledSeq(i, f"r{i}", [outs[i][-1]], len(p) + k, tables[i], 1, greedy,
                                       sample_index=k + 1) for i, p in enumerate(prompts)])
    return outs


def test_greedy_matches_hf_generate(executor, hf_model, prompt_ids):
    prompts = [prompt_ids[0], prompt_ids[2], prompt_ids[3]]
    ours = executor_greedy(executor, prompts, NEW_TOKENS)
    for p, got in zip(prompts, ours):
        with torch.inference_mode():
            ref = hf_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                    max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                    pad_token_id=executor.eos_token_id)
        assert got == ref[0, len(p):].tolist()
