"""Real runs the hypervisor left alone: measure each run's CPU steal and rerun a disturbed one.

The dev machine is a 2-vCPU VM. While a neighbour holds the physical core, a vCPU that wants to
run waits, and ``/proc/stat`` counts that wait as *steal*. A step on two threads waits for its
slower thread, so a few percent of steal can stretch the step more than that. One 0.5x-saturation
run on 2026-12-07 lost 19% of its CPU time this way: its TPOT came out 847 ms, against 142 ms for
the run before it. Nothing in the workload caused that, and no model of this machine should predict
it. So validation counts the steal over every real run. A run above ``max_steal`` (%) is thrown
away and run again, within a per-workload ``budget`` of reruns. When the budget is spent, the last
run is kept and its steal is reported beside the errors. Where ``/proc/stat`` is missing, the
steal reads NaN and nothing is rerun.

Steal comes in episodes: the same afternoon a 5-second busy loop read 0-5% steal, and an hour
later 52-87%, for minutes on end. Rerunning straight into such an episode wastes the rerun, so
:func:`wait_quiet` first measures the steal of a short busy moment (an idle vCPU reads none) and
waits, idle, until it falls under the bound or a time limit passes. Calibration and validation
call it before they start, and validation again before each rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kvlab.machine import cpu_ticks, steal_percent

T = TypeVar("T")
DEFAULT_MAX_STEAL = 5.0  # % of the run's CPU time; quiet stretches of the dev VM read 0-2%
DEFAULT_RERUNS = 2  # per workload, over all of its repeats


@dataclass
class Undisturbed(Generic[T]):
    result: T
    steal_pct: float  # the kept run's steal (NaN where unmeasurable)
    discarded: list[float]  # steal of each run thrown away before it


def run_undisturbed(run: Callable[[], T], *, max_steal: float | None, budget: int,
                    on_discard: Callable[[float], None] = lambda _: None,
                    ticks: Callable[[], tuple[int, int] | None] = cpu_ticks) -> Undisturbed[T]:
    """Call ``run`` until one call's steal is at most ``max_steal`` (None: never rerun), at most
    ``budget`` extra times. ``on_discard(steal)`` runs after each thrown-away call, for example
    to log it or to re-time the machine before the next try."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    discarded: list[float] = []
    while True:
        before = ticks()
        result = run()
        steal = steal_percent(before, ticks())
        disturbed = max_steal is not None and steal > max_steal  # NaN (no reading) compares False
        if not disturbed or len(discarded) == budget:
            return Undisturbed(result, steal, discarded)
        discarded.append(steal)
        on_discard(steal)


def busy_steal(seconds: float = 2.0, ticks: Callable[[], tuple[int, int] | None] = cpu_ticks) -> float:
    """Steal (%) while this process keeps every torch thread busy for ``seconds``. An idle vCPU
    asks for no time and so reads no steal: only a busy one shows what the neighbours take."""
    import torch

    a = torch.ones(384, 384)
    before = ticks()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.mm(a, a).clamp_(-1.0, 1.0)
    return steal_percent(before, ticks())


def wait_quiet(max_steal: float, max_wait_s: float, *, log: Callable[[str], None] = print,
               measure: Callable[[], float] = busy_steal, sleep: Callable[[float], None] = time.sleep,
               pause_s: float = 20.0) -> float:
    """Measure the steal of a busy moment; while it is above ``max_steal`` and less than
    ``max_wait_s`` has been spent waiting, say so, sit idle ``pause_s`` (leaving the cores to the
    neighbours) and measure again. Returns the last reading; the caller goes on either way, and
    the runs that follow are still checked one by one (:func:`run_undisturbed`)."""
    steal, waited = measure(), 0.0
    while steal > max_steal and waited < max_wait_s:  # NaN (no reading) compares False
        log(f"machine busy: {steal:.0f}% of a busy moment's CPU time went to other VMs (steal > {max_steal:g}%); "
            f"waiting for a quieter one ({waited:.0f} of {max_wait_s:.0f} s so far)")
        sleep(pause_s)
        waited += pause_s
        steal = measure()
    if steal > max_steal:
        log(f"WARNING: still {steal:.0f}% steal after {waited:.0f} s; measuring anyway, timings will be "
            "inflated and noisy")
    return steal
