"""Paper-era capacity rule: the 0.5 s/token crossing on a trace like the paper's, found by walking
up from X while the curve is under the threshold, or down while it is over (request-level batching)."""

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


def _job(panel: str = "a") -> Job:
    return next(j for j in era.jobs(panel) if j.system == "ft")


def _read(rows: list[dict[str, Any]]) -> pd.Series:
    return era.capacity_table(pd.DataFrame(rows), None).iloc[0]


def test_a_curve_under_the_threshold_at_the_check_point_is_read_where_it_crosses_above_x(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran = _fake_runs(monkeypatch, lambda r: 0.5 * r / 2.2)  # crosses at 2.2 req/s = 1.1 X
    t = _read(jobs.run_job(_job(), str(tmp_path)))
    # 0.9 X and 1.0 X are under, 1.1 X is exactly at the threshold (not over), 1.25 X is over: stop;
    # then two bisections of (1.1 X, 1.25 X), both over
    assert ran == [None, 1.8, 2.0, 2.2, 2.5, 2.35, 2.275]
    assert t["era_capacity"] == pytest.approx(2.2) and t["era_bound"] == ""
    assert t["capacity_over_x"] == pytest.approx(1.1) and t["saturated_x"] == X


def test_a_curve_over_the_threshold_below_x_is_read_at_its_crossing(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    ran = _fake_runs(monkeypatch, lambda r: r / 2.0)  # crosses 0.5 s/token at 1.0 req/s = 0.5 X
    t = _read(jobs.run_job(_job(), str(tmp_path)))
    # 0.9 X, 0.7 X are over; 0.5 X is exactly at the threshold (not over), so the walk stops there;
    # then two bisections of (0.5 X, 0.7 X)
    assert ran == [None, 1.8, 1.4, 1.0, 1.2, 1.1]
    assert t["era_bound"] == "" and t["era_capacity"] == pytest.approx(1.0)
    assert t["era_error_pct"] == pytest.approx(100 * (1.0 / t["paper"] - 1))


@pytest.mark.parametrize("level, bound, fraction", [(5.0, "<", era.DESCEND_FRACTIONS[-1]),
                                                    (0.01, ">", era.ASCEND_FRACTIONS[-1])])
def test_a_curve_that_never_crosses_is_a_bound_and_still_counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 level: float, bound: str, fraction: float) -> None:
    ran = _fake_runs(monkeypatch, lambda r: level)
    t = _read(jobs.run_job(_job(), str(tmp_path)))
    walk = era.DESCEND_FRACTIONS if bound == "<" else era.ASCEND_FRACTIONS
    assert ran[-1] == round(fraction * X, 4) and len(ran) == 2 + len(walk)
    assert t["era_bound"] == bound and t["era_capacity"] == round(fraction * X, 4)
    assert t["era_error_pct"] == t["era_error_pct"]  # not NaN: the bound is reported with its error


def test_x_alone_is_read_as_x() -> None:
    """A table of saturation runs only keeps X."""
    rows = [{"figure": "fig12", "panel": "a", "system": "ft", "rate": math.inf,
             "saturation": True, jobs.NL: 9.9, "sat_throughput": X}]
    t = _read(rows)
    assert t["era_capacity"] == X and t["capacity_over_x"] == 1.0


def test_rate_runs_use_the_papers_trace_durations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One hour, 15 minutes on OPT-175B, the first 60 s dropped; the saturation run keeps its requests."""
    assert {j.panel: j.sweep["trace"]["duration_s"] for j in era.jobs() if j.system == "vllm"} == \
        {"a": 3600.0, "b": 3600.0, "c": 900.0, "d": 3600.0, "e": 3600.0, "f": 900.0}
    assert all(j.sweep["trace"] is None for j in era.jobs("a", num_requests=50))
    import kvlab.experiment

    seen: list[dict[str, Any]] = []

    def fake_run(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
        seen.append(dict(cfg["workload"]))
        Path(out).mkdir(parents=True, exist_ok=True)
        return {"metrics": {}, "engine": type("E", (), {"request_records": [], "step_records": []})()}

    monkeypatch.setattr(kvlab.experiment, "run_experiment", fake_run)
    job, cfg = _job("c"), {"workload": {"name": "w", "rate": 1.0, "num_requests": 500, "duration_s": None,
                                        "warmup_s": 0.0},
                           "allocator": {}, "model": {"name": "m"}, "hardware": {"name": "h"}}
    monkeypatch.setattr(jobs, "saturated_throughput", lambda engine: X)
    jobs.run_point(job, None, tmp_path, cfg=cfg)
    jobs.run_point(job, 0.5, tmp_path, cfg=cfg)
    assert seen[0]["num_requests"] == 500 and seen[0]["rate"] is None
    assert seen[1] == {"name": "w", "rate": 0.5, "num_requests": None, "duration_s": 900.0, "warmup_s": 60.0}
    assert (tmp_path / "runs" / job.key / "rate-0.5-900s-warmup60s" / "row.json").exists()


def test_bisection_reads_a_hockey_sticks_knee(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A curve flat until 1.95 req/s, then far over: a straight line between 0.9 X and 1.0 X would
    read 1.82; two bisections bring the reading into the last interval before the knee."""
    _fake_runs(monkeypatch, lambda r: 0.1 if r < 1.95 else 5.0)
    t = _read(jobs.run_job(_job(), str(tmp_path)))
    assert 1.9 <= t["era_capacity"] < 1.95


def test_the_fixed_count_reading_keeps_x_under_the_threshold(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """The previous reading: no walk up, no bisection, no trace duration; X when 0.9 X is under."""
    ran = _fake_runs(monkeypatch, lambda r: 0.1)
    job = next(j for j in era.jobs("a", reading="fixed") if j.system == "ft")
    assert job.sweep.get("trace") is None and not job.sweep.get("ascend") and not job.sweep.get("refine")
    t = era.capacity_table(pd.DataFrame(jobs.run_job(job, str(tmp_path))), None, "fixed").iloc[0]
    assert ran == [None, 1.8] and t["era_capacity"] == X
    with pytest.raises(ValueError, match="reading"):
        era.jobs("a", reading="nope")
