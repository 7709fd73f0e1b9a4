"""CPU steal: reading it from /proc/stat, and validation's rerun of a real run the hypervisor disturbed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kvlab.calibrate.__main__ import main
from kvlab.calibrate.undisturbed import run_undisturbed
from kvlab.calibrate.validate import METRICS, _errors, markdown
from kvlab.machine import cpu_ticks, steal_percent

STAT = "cpu  {user} 0 50 {idle} 5 0 3 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2\n"


def test_cpu_ticks_reads_the_steal_and_the_total_of_the_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT.format(user=1000, idle=800, steal=142))
    assert cpu_ticks(stat) == (142, 1000 + 50 + 800 + 5 + 3 + 142)  # guest time is inside user already
    assert cpu_ticks(tmp_path / "missing") is None
    stat.write_text("intr 1 2\n")
    assert cpu_ticks(stat) is None


def test_steal_percent_is_the_stolen_share_of_the_ticks_between_two_readings() -> None:
    assert steal_percent((100, 10_000), (130, 10_200)) == pytest.approx(15.0)
    assert math.isnan(steal_percent(None, (1, 2))) and math.isnan(steal_percent((5, 100), (5, 100)))


def _ticks(steals: list[float]):  # noqa: ANN202 - a fake /proc/stat: each run spans 1000 ticks
    state = {"i": 0, "steal": 0, "total": 0}
    runs = iter(steals)

    def read() -> tuple[int, int]:
        if state["i"] % 2 == 1:  # the reading after a run: add that run's ticks
            s = next(runs)
            state["steal"] += round(10 * s)
            state["total"] += 1000
        state["i"] += 1
        return state["steal"], state["total"]
    return read


def test_a_disturbed_run_is_discarded_and_the_next_kept() -> None:
    calls, seen = [], []
    got = run_undisturbed(lambda: calls.append(len(calls)) or len(calls), max_steal=5.0, budget=2,
                          on_discard=seen.append, ticks=_ticks([19.0, 1.5]))
    assert got.result == 2 and got.steal_pct == pytest.approx(1.5) and got.discarded == [19.0] and seen == [19.0]


def test_a_spent_budget_keeps_the_last_run_and_reports_its_steal() -> None:
    got = run_undisturbed(lambda: "run", max_steal=5.0, budget=1, ticks=_ticks([9.0, 8.0, 0.0]))
    assert got.steal_pct == pytest.approx(8.0) and got.discarded == [9.0]
    none = run_undisturbed(lambda: "run", max_steal=5.0, budget=0, ticks=_ticks([30.0]))
    assert none.steal_pct == pytest.approx(30.0) and none.discarded == []


def test_without_a_bound_or_a_reading_nothing_is_rerun() -> None:
    assert run_undisturbed(lambda: 1, max_steal=None, budget=3, ticks=_ticks([50.0])).discarded == []
    blind = run_undisturbed(lambda: 1, max_steal=5.0, budget=3, ticks=lambda: None)
    assert blind.discarded == [] and math.isnan(blind.steal_pct)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        run_undisturbed(lambda: 1, max_steal=5.0, budget=-1)


def test_markdown_lists_each_workloads_steal_and_the_discards() -> None:
    base = {m: 10.0 for m in METRICS}
    row = {"workload": "offline batch", "rate": "null", **_errors(base, base), "real_steal_pct": 0.4,
           "real_steal_max_pct": 1.25, "real_discarded": 1}
    text = markdown(pd.DataFrame([row, row | {"workload": "poisson 2x saturation", "real_discarded": 2}]))
    assert "offline batch 1.2%, poisson 2x saturation 1.2%; runs discarded for steal: 3." in text


def test_a_negative_rerun_budget_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate", "no-such-profile.json", "--steal-reruns", "-1"]) == 2
    assert "steal_reruns must be >= 0, got -1" in capsys.readouterr().err
