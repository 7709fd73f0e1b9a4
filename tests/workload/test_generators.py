"""Synthetic generators: determinism, the paper's published means, Poisson arrivals, shared prefix, chat."""

from __future__ import annotations

import numpy as np
import pytest

from kvlab.driver import trace_params
from kvlab.workloads import build_workload
from kvlab.workloads.base import TEXT_TOKEN_ID_LOW
from kvlab.workloads.lengths import PAPER_MEANS

OPT = {"vocab_size": 50272, "max_model_len": 2048}


def build(cfg: dict, seed: int = 0, **kw):
    return build_workload(cfg, seed=seed, **{**OPT, **kw})


def test_deterministic_for_a_seed_and_different_across_seeds():
    cfg = {"name": "sharegpt", "rate": 2.0, "num_requests": 50}
    a, b, c = build(cfg), build(cfg), build(cfg, seed=1)
    assert [vars(r) for r in a.requests] == [vars(r) for r in b.requests]
    assert [r.prompt_len for r in a.requests] != [r.prompt_len for r in c.requests]
    # a workload.seed offset changes the draw too
    assert [r.prompt_len for r in build({**cfg, "seed": 3}).requests] != [r.prompt_len for r in a.requests]


def test_lengths_do_not_depend_on_the_rate():
    lens = [[(r.prompt_len, r.output_len) for r in build({"name": "alpaca", "rate": rate,
                                                          "num_requests": 30}).requests]
            for rate in (1.0, 10.0, None)]
    assert lens[0] == lens[1] == lens[2]


@pytest.mark.parametrize("dataset", ["sharegpt", "alpaca"])
def test_means_match_the_paper_within_2_percent_after_the_filter(dataset):
    w = build({"name": dataset, "rate": None, "num_requests": 20_000})
    p = np.array([r.prompt_len for r in w.requests])
    o = np.array([r.output_len for r in w.requests])
    assert np.all(p + o < 2048)  # the paper's filter
    mean_in, mean_out = PAPER_MEANS[dataset]
    assert p.mean() == pytest.approx(mean_in, rel=0.02)
    assert o.mean() == pytest.approx(mean_out, rel=0.02)
    assert "SYNTHETIC" in w.description


def test_sharegpt_shape_peak_below_50_and_long_tail():
    w = build({"name": "sharegpt", "num_requests": 20_000})
    p = np.array([r.prompt_len for r in w.requests])
    assert np.median(p) < 80 and np.percentile(p, 99) > 700


def test_poisson_rate_and_exponential_gaps():
    rate = 4.0
    w = build({"name": "fixed", "rate": rate, "num_requests": 8000, "prompt_len": 8, "output_len": 8})
    t = np.array([r.arrival_time for r in w.requests])
    gaps = np.diff(t)
    assert np.all(gaps >= 0)
    assert 1.0 / gaps.mean() == pytest.approx(rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV = 1


def test_duration_mode_counts_about_rate_times_duration():
    w = build({"name": "uniform", "rate": 5.0, "duration_s": 400})
    assert len(w) == pytest.approx(2000, rel=0.1)
    assert max(r.arrival_time for r in w.requests) < 400


def test_offline_rate_puts_everything_at_zero():
    for rate in (None, "inf", float("inf")):
        w = build({"name": "fixed", "rate": rate, "num_requests": 5})
        assert all(r.arrival_time == 0.0 for r in w.requests)


def test_token_ids_avoid_special_tokens_and_fit_the_vocab():
    w = build({"name": "uniform", "num_requests": 200}, vocab_size=1000, max_model_len=2048)
    ids = np.concatenate([r.prompt_token_ids for r in w.requests])
    assert ids.min() >= TEXT_TOKEN_ID_LOW and ids.max() < 1000
    assert all(len(r.prompt_token_ids) == r.prompt_len for r in w.requests)


def test_filters_and_sampling_fields():
    w = build({"name": "sharegpt", "num_requests": 500, "max_prompt_len": 100, "max_total_len": 300, "n": 4})
    assert all(r.prompt_len <= 100 and r.prompt_len + r.output_len <= 300 for r in w.requests)
    assert all(r.n == 4 and r.beam_width == 1 for r in w.requests)
    sp = trace_params(w.requests[0])  # what the driver submits for a trace request
    assert sp.n == 4 and sp.min_tokens == 0
    assert sp.ignore_eos and sp.max_tokens == w.requests[0].output_len
    small = build({"name": "sharegpt", "num_requests": 50}, max_model_len=512)
    assert all(r.prompt_len + r.output_len < 512 for r in small.requests)


def test_shared_prefix_requests_share_the_same_prefix_ids():
    w = build({"name": "shared_prefix", "num_requests": 50, "prefix_len": 341})
    prefix = w.requests[0].prompt_token_ids[:341]
    assert all(r.prompt_token_ids[:341] == prefix for r in w.requests)
    suffixes = [r.prompt_len - 341 for r in w.requests]
    assert min(suffixes) >= 20 and max(suffixes) <= 40
    assert len({tuple(r.prompt_token_ids[341:]) for r in w.requests}) == 50


def test_chat_history_is_truncated_to_the_last_tokens_and_consistent():
    w = build({"name": "chat", "num_requests": 300, "max_history": 256, "max_output": 64, "new_prob": 0.3})
    assert all(r.prompt_len <= 256 and 1 <= r.output_len <= 64 for r in w.requests)
    assert any(r.prompt_len == 256 for r in w.requests)  # long conversations hit the window
    # Some later turn extends an earlier turn's prompt (same history ids => prefix-cache hits).
    prompts = [tuple(r.prompt_token_ids) for r in w.requests]
    extends = sum(1 for i, p in enumerate(prompts) for q in prompts[:i]
                  if len(q) < len(p) and p[:len(q)] == q)
    assert extends > 0


def test_chat_continuation_keeps_history_then_new_query():
    # new_prob 1.0: every arrival is a fresh conversation, so no prompt extends another.
    w = build({"name": "chat", "num_requests": 50, "new_prob": 1.0})
    prompts = [tuple(r.prompt_token_ids) for r in w.requests]
    assert not any(p[:len(q)] == q for i, p in enumerate(prompts) for q in prompts[:i])
