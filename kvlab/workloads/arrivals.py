"""Request arrival times.

The paper (§6.1) draws Poisson arrivals; its trace generator cut time into 10 ms quanta and
stamped ``Poisson(rate * 0.01)`` arrivals at each quantum's start. kvlab draws exact exponential
inter-arrival times instead (the continuous-time Poisson process, as ``vllm bench serve`` does with
burstiness 1): same process, without the 10 ms quantisation or simultaneous arrivals. With a rate
of ``None``/``inf`` every request arrives at t = 0 (an offline batch, like ``vllm bench
throughput``).
"""

from __future__ import annotations

import math

import numpy as np


def is_offline(rate: float | None) -> bool:
    return rate is None or math.isinf(rate)


def poisson_arrivals(
    rng: np.random.Generator, rate: float | None, *, num: int | None = None, duration_s: float | None = None
) -> np.ndarray:
    """Arrival times in seconds, sorted. Exactly one of ``num`` / ``duration_s``.

    ``num``: the first ``num`` arrivals of a rate-``rate`` Poisson process (the first at one
    inter-arrival gap after 0). ``duration_s``: every arrival in ``[0, duration_s)`` (needs a
    finite rate).
    """
    if (num is None) == (duration_s is None):
        raise ValueError("give exactly one of num / duration_s")
    if num is not None:
        if is_offline(rate):
            return np.zeros(num)
        return np.cumsum(rng.exponential(1.0 / rate, size=num))
    if is_offline(rate):
        raise ValueError("duration_s needs a finite rate")
    times: list[np.ndarray] = []
    t = 0.0
    chunk = max(16, int(rate * duration_s * 1.2) + 16)
    while t < duration_s:
        gaps = np.cumsum(rng.exponential(1.0 / rate, size=chunk)) + t
        times.append(gaps)
        t = float(gaps[-1])
    all_times = np.concatenate(times) if times else np.zeros(0)
    return all_times[all_times < duration_s]
