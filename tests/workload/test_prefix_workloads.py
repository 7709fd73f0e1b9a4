"""The prefix-cache workloads: multi-turn chat with system prompts and few-shot prompting."""

from __future__ import annotations

import pytest

from kvlab.workloads import WorkloadError, build_workload


def build(name: str, **kw):
    return build_workload({"name": name, "num_requests": 300, **kw}, seed=0, vocab_size=50_000, max_model_len=2048)


def test_multiturn_turns_extend_their_history_and_share_system_prompts():
    reqs = build("multiturn", system_prompts=4, system_len_min=100, system_len_max=100).requests
    prompts = [r.prompt_token_ids for r in reqs]
    heads = {tuple(p[:100]) for p in prompts}
    assert len(heads) <= 4  # every prompt starts with one of the system prompts
    # a later turn contains an earlier turn's whole prompt as its prefix (the history is kept)
    continued = sum(1 for i, p in enumerate(prompts) for q in prompts[:i] if len(q) < len(p) and p[:len(q)] == q)
    assert continued > 50
    assert all(r.prompt_len + r.output_len <= 2047 for r in reqs)


def test_few_shot_prompts_share_header_and_task_prefixes():
    reqs = build("few_shot", tasks=4, header_len=32).requests
    prompts = [r.prompt_token_ids for r in reqs]
    assert len({tuple(p[:32]) for p in prompts}) == 1
    assert len({tuple(p[:32 + 5 * 40]) for p in prompts}) <= 4


@pytest.mark.parametrize("name,kw,key", [
    ("multiturn", {"system_len_min": 900, "system_len_max": 800}, "system_len_min"),
    ("multiturn", {"system_zipf": -1}, "system_zipf"),
    ("few_shot", {"shots": 0}, "shots"),
    ("few_shot", {"task_zipf": "x"}, "task_zipf"),
])
def test_bad_values_name_the_key(name, kw, key):
    with pytest.raises(WorkloadError, match=key):
        build(name, **kw)
