"""The committer decides without side effects outside the request: it returns the KV operations
(forks, frees) in the order the scheduler must apply them."""

from __future__ import annotations

from kvlab.commit import Committer
from kvlab.executor.base import Sample
from kvlab.request import Request, SamplingParams, SequenceStatus


def running(sp: SamplingParams, prompt: int = 5) -> Request:
    req = Request("r", list(range(prompt)), sp)
    req.seqs[0].status = SequenceStatus.RUNNING
    return req


def test_parallel_samples_fork_before_append_then_free_stopped_ones():
    req = running(SamplingParams(n=3, max_tokens=4, stop_token_ids=[42]))
    parent = req.seqs[0]
    ops: list = []
    got = Committer(eos_token_id=None, max_model_len=64).commit(
        req, {parent.seq_id: [Sample(10, -0.1), Sample(42, -0.2), Sample(11, -0.3)]}, 1.0, ops)
    assert got and len(req.seqs) == 3
    c1, c2 = req.seqs[1:]
    assert ops == [(parent, c1), (parent, c2), (c1, None)]  # forks first, then the stop of sample 2
    assert [s.output_token_ids for s in req.seqs] == [[10], [42], [11]]
    assert c1.status is SequenceStatus.FINISHED_STOPPED and c1.stop_reason == 42
    assert c2.token_ids[:5] == parent.token_ids[:5] and c2.num_computed_tokens == parent.num_computed_tokens


def test_beam_search_frees_losers_before_forking_winners():
    req = running(SamplingParams(beam_width=2, max_tokens=8, ignore_eos=True))
    first = req.seqs[0]
    c = Committer(None, 64)
    ops: list = []
    c.commit(req, {first.seq_id: [Sample(1, -0.1), Sample(2, -0.2), Sample(3, -0.3), Sample(4, -0.4)]}, 0.0, ops)
    a, b = req.seqs
    assert ops == [(a, b)] and [s.output_token_ids for s in req.seqs] == [[1], [2]]
    ops = []  # next step: both candidates come from beam a, so beam b loses and a forks
    c.commit(req, {a.seq_id: [Sample(5, -0.01), Sample(6, -0.02)], b.seq_id: [Sample(7, -5.0), Sample(8, -6.0)]},
             0.0, ops)
    assert ops[0] == (b, None) and ops[1][0] is a and len(ops) == 2
    assert b.status is SequenceStatus.FINISHED_PRUNED and b not in req.seqs
    assert [s.output_token_ids for s in req.seqs] == [[1, 5], [1, 6]]


def test_nothing_sampled_means_no_ops():
    req = running(SamplingParams(max_tokens=4))
    ops: list = []
    assert not Committer(None, 64).commit(req, {}, 0.0, ops) and ops == []
