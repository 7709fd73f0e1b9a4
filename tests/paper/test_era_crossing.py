"""Paper-era capacity rule: X where the curve is still under the threshold at the check point, else
the crossing found by walking down below X (request-level batching)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kvlab.paperlib import era, jobs
from kvlab.paperlib.specs import Job

X = 2.0  # the fake saturated throughput


def _fake_runs(monkeypatch: pytest.MonkeyPatch, latency: Any) -> list[float | None]:
    """Replace the simulator: X at saturation, ``latency(rate)`` s/token at a rate. Returns the rates run."""
    ran: list[float | None] = []

    def point(job: Job, rate: float | None, root: Path, resume: bool = True, cfg: Any = None) -> dict[str, Any]:
        ran.append(rate)
        row = {"figure": "fig12", "panel": job.panel, "system": job.system,
               "rate": math.inf if rate is None else rate, "saturation": rate is None}
        if rate is None:
            return {**row, jobs.NL: 9.9, "sat_throughput": X}
        return {**row, jobs.NL: latency(rate)}

    monkeypatch.setattr(jobs, "run_point", point)
    monkeypatch.setattr(jobs, "compose", lambda overrides: {})
    return ran


def _job() -> Job:
    return next(j for j in era.jobs("a") if j.system == "ft")


def test_a_curve_under_the_threshold_at_the_check_point_is_read_as_x(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    ran = _fake_runs(monkeypatch, lambda r: 0.1)
    rows = jobs.run_job(_job(), str(tmp_path))
    assert ran == [None, round(era.CHECK_FRACTION * X, 4)]  # no walk down
    t = era.capacity_table(pd.DataFrame(rows), None).iloc[0]
    assert t["era_capacity"] == X and t["era_source"] == "X" and t["era_bound"] == ""


def test_a_curve_over_the_threshold_below_x_is_read_at_its_crossing(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    ran = _fake_runs(monkeypatch, lambda r: r / 2.0)  # crosses 0.5 s/token at 1.0 req/s = 0.5 X
    rows = jobs.run_job(_job(), str(tmp_path))
    # 0.9 X, 0.7 X are over; 0.5 X is exactly at the threshold (not over), so the walk stops there
    assert ran == [None, 1.8, 1.4, 1.0]
    t = era.capacity_table(pd.DataFrame(rows), None).iloc[0]
    assert t["era_source"] == "crossing" and t["era_bound"] == ""
    assert t["era_capacity"] == pytest.approx(1.0)
    assert t["saturated_x"] == X
    assert t["era_error_pct"] == pytest.approx(100 * (1.0 / t["paper"] - 1))


def test_a_curve_over_the_threshold_at_every_rate_is_an_upper_bound(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    ran = _fake_runs(monkeypatch, lambda r: 5.0)
    rows = jobs.run_job(_job(), str(tmp_path))
    lowest = round(era.DESCEND_FRACTIONS[-1] * X, 4)
    assert ran[-1] == lowest and len(ran) == 2 + len(era.DESCEND_FRACTIONS)
    t = era.capacity_table(pd.DataFrame(rows), None).iloc[0]
    # under the lowest rate run: reported there, marked "<", and still counted with its error
    assert t["era_bound"] == "<" and t["era_capacity"] == lowest and t["era_error_pct"] == t["era_error_pct"]


def test_x_alone_is_read_as_x() -> None:
    """A table of saturation runs only (the diagnostics' old files) keeps X."""
    rows = pd.DataFrame([{"figure": "fig12", "panel": "a", "system": "ft", "rate": math.inf,
                          "saturation": True, jobs.NL: 9.9, "sat_throughput": X}])
    t = era.capacity_table(rows, None).iloc[0]
    assert t["era_capacity"] == X and t["era_source"] == "X"
