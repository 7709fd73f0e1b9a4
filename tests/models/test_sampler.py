"""Sampler unit tests on synthetic logits: greedy, seeds, top-k/top-p masks, logprobs, beams."""

from __future__ import annotations

import math

import torch

from kvlab.executor.base import ScheduledSeq
from kvlab.executor.sampler import Sampler, apply_top_k_top_p, filtered_candidates
from kvlab.request import SamplingParams

VOCAB = 50


def seq(sp: SamplingParams, seq_id: int = 0, num_samples: int = 1, sample_index: int = 0,
        request_id: str = "r", beam: bool = False) -> ScheduledSeq:
    return ScheduledSeq(seq_id, request_id, [1], 0, [0], num_samples, sp,
                        sample_index=sample_index, beam=beam)


def logits(rows: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_picks_argmax_with_raw_logprob():
    x = logits(2)
    greedy = SamplingParams(temperature=0)
    out = Sampler(eos_token_id=None).sample(x, [seq(greedy), seq(greedy, seq_id=1)])
    lp = torch.log_softmax(x, -1)
    for row, samples in enumerate(out):
        assert samples[0].token_id == int(x[row].argmax())
        assert math.isclose(samples[0].logprob, float(lp[row].max()), abs_tol=1e-6)


def test_same_seed_same_tokens_different_seed_differs():
    x = logits(1)

    def draw(seed: int) -> list[int]:
        sp = SamplingParams(temperature=1.5, seed=seed)
        sampler = Sampler(None, seed=123)
        return [sampler.sample(x, [seq(sp, sample_index=i)])[0][0].token_id for i in range(40)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_seeded_draws_do_not_depend_on_batch_order_or_executor_seed():
    x = logits(3)
    sps = [SamplingParams(temperature=1.0, seed=s) for s in (1, 2, 3)]
    seqs = [seq(sp, seq_id=i, request_id=f"r{i}") for i, sp in enumerate(sps)]
    fwd = Sampler(None, seed=0).sample(x, seqs)
    rev = Sampler(None, seed=99).sample(x.flip(0), seqs[::-1])[::-1]
    assert [s[0].token_id for s in fwd] == [s[0].token_id for s in rev]


def test_logprob_is_raw_log_softmax_and_top_alternatives():
    x = logits(1, seed=3)
    sp = SamplingParams(temperature=0.7, top_k=5, logprobs=4, seed=0)
    sample = Sampler(None).sample(x, [seq(sp)])[0][0]
    lp = torch.log_softmax(x[0], -1)
    assert math.isclose(sample.logprob, float(lp[sample.token_id]), abs_tol=1e-6)
    top = lp.topk(4)
    assert sample.top_logprobs == dict(zip(top.indices.tolist(), top.values.tolist()))


def test_top_k_mask_keeps_exactly_k():
    x = logits(2)
    out = apply_top_k_top_p(x, torch.tensor([3, 0]), torch.tensor([1.0, 1.0]))
    assert torch.isfinite(out[0]).sum() == 3
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == set(x[0].topk(3).indices.tolist())
    assert torch.isfinite(out[1]).all()


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_top_k_top_p(probs.log(), torch.tensor([0]), torch.tensor([0.75]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]
    out = apply_top_k_top_p(probs.log(), torch.tensor([0]), torch.tensor([0.1]))
    assert torch.isfinite(out[0]).tolist() == [True, False, False, False]


def test_sampled_tokens_stay_inside_the_masks():
    x = logits(1, seed=5)
    allowed = set(x[0].topk(4).indices.tolist())
    sp = SamplingParams(temperature=2.0, top_k=4)
    for i in range(30):
        assert Sampler(None, seed=i).sample(x, [seq(sp)])[0][0].token_id in allowed


def test_parallel_samples_are_independent_and_reproducible():
    x = torch.zeros(1, VOCAB)  # uniform: 8 identical draws would be a bug
    sp = SamplingParams(n=8, temperature=1.0, seed=5)
    a = [s.token_id for s in Sampler(None).sample(x, [seq(sp, num_samples=8)])[0]]
    b = [s.token_id for s in Sampler(None).sample(x, [seq(sp, num_samples=8)])[0]]
    assert a == b and len(set(a)) > 1


def test_beam_returns_best_candidates_descending():
    x = logits(1, seed=9)
    beam = seq(SamplingParams(beam_width=3, temperature=0), num_samples=6, beam=True)
    out = Sampler(None).sample(x, [beam])[0]
    assert [s.token_id for s in out] == x[0].topk(6).indices.tolist()
    lps = [s.logprob for s in out]
    assert lps == sorted(lps, reverse=True)


def test_min_tokens_masks_eos_and_stop_tokens():
    x = torch.zeros(1, VOCAB)
    x[0, 2], x[0, 7], x[0, 9] = 10.0, 9.0, 8.0
    sp = SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[7])
    sampler = Sampler(eos_token_id=2)
    assert sampler.sample(x, [seq(sp, sample_index=1)])[0][0].token_id == 9
    assert sampler.sample(x, [seq(sp, sample_index=3)])[0][0].token_id == 2


def test_candidate_filter_matches_the_full_vocabulary_reference():
    x = torch.randn(6, 3000, generator=torch.Generator().manual_seed(1)) * 3
    x[5] = torch.randn(3000, generator=torch.Generator().manual_seed(2)) * 0.01  # flat: nucleus > 1024
    top_k = torch.tensor([0, 5, 0, 40, 0, 0])
    top_p = torch.tensor([0.9, 1.0, 0.5, 0.8, 1.0, 0.95])
    ref = apply_top_k_top_p(x, top_k, top_p)
    for row, (vals, ids) in enumerate(filtered_candidates(x, top_k, top_p)):
        kept = set(ids[torch.isfinite(vals)].tolist())
        assert kept == set(torch.isfinite(ref[row]).nonzero().flatten().tolist())
