"""The run summary's text samples: distinct prompts, and the end of a long prompt."""

from __future__ import annotations

from types import SimpleNamespace

from kvlab.experiment import _samples
from kvlab.summary import print_summary


def _engine(prompts: list[list[int]]):
    reqs = [SimpleNamespace(prompt=None, prompt_token_ids=p, text=f"out{i}") for i, p in enumerate(prompts)]
    return SimpleNamespace(
        finished_requests=reqs,
        make_output=lambda r: SimpleNamespace(outputs=[SimpleNamespace(text=r.text)]),
        tokenizer=SimpleNamespace(decode=lambda ids: " ".join(map(str, ids))),
    )


def test_samples_skip_repeated_prompts_and_stop_at_k():
    eng = _engine([[1, 2], [1, 2], [3], [1, 2], [4], [5]])
    assert _samples(eng, k=3) == [("1 2", "out0"), ("3", "out2"), ("4", "out4")]
    assert _samples(_engine([[7], [7]]), k=3) == [("7", "out0")]


def test_summary_shows_the_end_of_a_long_prompt(capsys):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"allocator": {"name": "paged", "block_size": 16}, "scheduler": {"name": "fcfs"},
                            "executor": {"name": "sim"}, "model": {"name": "m"}, "workload": {"name": "w"}})
    long_prompt = "SYSTEM " * 40 + "the question at the end"
    result = {"metrics": {}, "workload": SimpleNamespace(description="d"), "samples": [(long_prompt, "answer")]}
    print_summary(cfg, result)
    out = capsys.readouterr().out
    assert "the question at the end" in out and "answer" in out and "'..." in out
