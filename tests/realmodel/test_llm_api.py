"""The offline ``LLM`` API on the real model: parallel sampling and beam search share KV blocks,
prefix hits skip work, and bad input is refused without leaking a block."""

from __future__ import annotations

import pytest

from kvlab import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM("smollm2-135m", "paged", num_blocks=256, overrides=["executor.num_threads=1"])


@pytest.fixture(scope="module")
def prefix_llm() -> LLM:
    return LLM("smollm2-135m", "prefix", num_blocks=256, overrides=["executor.num_threads=1"])


def _saved(llm: LLM) -> int:
    return max((s.shared_saved_slots for s in llm.engine.step_records), default=0)


def test_parallel_sampling_n4_shares_the_prompt(llm):
    (out,) = llm.generate("Write one sentence about the ocean:", SamplingParams(n=4, max_tokens=12, seed=7))
    assert len(out.outputs) == 4
    assert all(0 < len(o.token_ids) <= 12 for o in out.outputs)
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1  # independent samples
    assert _saved(llm) > 0  # prompt blocks held once for four sequences
    llm.engine.allocator.check_invariants()
    assert llm.engine.allocator.num_free_blocks() == llm.engine.allocator.num_blocks


def test_beam_search_width4_shares_blocks(llm):
    (out,) = llm.generate("The best way to learn a language is", SamplingParams(beam_width=4, max_tokens=10))
    assert len(out.outputs) == 4
    scores = [o.cumulative_logprob for o in out.outputs]
    assert len({tuple(o.token_ids) for o in out.outputs}) == 4  # distinct hypotheses
    assert all(s <= 0 for s in scores)
    assert _saved(llm) > 0
    assert llm.engine.allocator.num_free_blocks() == llm.engine.allocator.num_blocks


def test_prefix_hit_runs_only_the_suffix(prefix_llm):
    tok = prefix_llm.tokenizer
    prefix = tok.encode(" ".join(f"word{i}" for i in range(120)))[:200]
    assert len(prefix) == 200
    first = prefix + tok.encode(" First question: what is two plus two?")
    second = prefix + tok.encode(" Second question: name a color.")
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    prefix_llm.generate([first], greedy)
    start = len(prefix_llm.engine.step_records)
    (out,) = prefix_llm.generate([second], greedy)
    computed_prompt_tokens = sum(s.num_prefill_tokens for s in prefix_llm.engine.step_records[start:])
    hit = 192  # 12 full blocks of 16 tokens of the shared 200-token prefix
    assert out.num_cached_tokens == hit
    assert computed_prompt_tokens == len(second) - hit


@pytest.mark.parametrize("prompt,params,match", [
    ("", SamplingParams(), "empty"),
    ("hello " * 9000, SamplingParams(), "maximum length"),
])
def test_bad_prompts_are_refused_without_leaks(llm, prompt, params, match):
    with pytest.raises(ValueError, match=match):
        llm.generate([prompt], params)
    assert not llm.engine.has_unfinished_requests()
    llm.engine.allocator.check_invariants()
    assert llm.engine.allocator.num_free_blocks() == llm.engine.allocator.num_blocks


def test_max_tokens_must_be_positive():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)


@pytest.mark.parametrize("model,exc,match", [
    ("gpt-17", ValueError, "gpt-17"),
    ("/nonexistent/checkpoint/dir", FileNotFoundError, "nonexistent"),
])
def test_unknown_model_or_missing_checkpoint(model, exc, match):
    with pytest.raises(exc, match=match):
        LLM(model)
