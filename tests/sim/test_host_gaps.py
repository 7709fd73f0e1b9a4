"""The engine's host gaps between steps, with and without the idle waits of an arrival-driven run."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from kvlab.calibrate.overhead import host_gaps


def _step(t: float, d: float, seqs: int = 1) -> NS:
    return NS(time=t, duration_s=d, num_running_seqs=seqs)


STEPS = [_step(1.0, 0.4), _step(1.5, 0.4), _step(2.0, 0.4), _step(2.5, 0.4)]  # each 0.4 s, 0.1 s apart


def test_without_requests_every_gap_counts_idle_waits_included() -> None:
    assert [g for _, g in host_gaps(STEPS)] == pytest.approx([0.1, 0.1, 0.1])


def test_gaps_after_which_the_engine_idled_are_left_out() -> None:
    # request a runs until the step ending at 1.5; b arrives at 1.85, while the engine idles
    slow = [_step(1.0, 0.4), _step(1.5, 0.4), _step(2.3, 0.4), _step(2.8, 0.45)]
    reqs = [NS(arrival_time=0.5, finish_time=1.5), NS(arrival_time=1.85, finish_time=2.8)]
    assert [g for _, g in host_gaps(slow)] == pytest.approx([0.1, 0.4, 0.05])
    assert [g for _, g in host_gaps(slow, reqs)] == pytest.approx([0.1, 0.05])
    # a request that arrived during a step keeps the engine busy after it, and so does an unfinished one
    during = [NS(arrival_time=0.5, finish_time=1.5), NS(arrival_time=1.4, finish_time=None)]
    assert len(host_gaps(slow, during)) == 3
