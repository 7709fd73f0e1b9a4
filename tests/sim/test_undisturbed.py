"""CPU steal: reading it from /proc/stat, and validation's rerun of a real run the hypervisor disturbed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kvlab.calibrate.__main__ import main
from kvlab.calibrate.undisturbed import busy_steal, run_undisturbed, wait_quiet
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


def test_wait_quiet_sits_idle_until_the_steal_falls_under_the_bound() -> None:
    readings, slept, said = iter([40.0, 12.0, 3.0, 50.0]), [], []
    got = wait_quiet(5.0, 300, log=said.append, measure=lambda: next(readings), sleep=slept.append, pause_s=20)
    assert got == 3.0 and slept == [20, 20] and len(said) == 2 and "40% of a busy moment" in said[0]


def test_wait_quiet_gives_up_after_its_limit_and_warns() -> None:
    slept, said = [], []
    got = wait_quiet(5.0, 45, log=said.append, measure=lambda: 60.0, sleep=slept.append, pause_s=20)
    assert got == 60.0 and slept == [20, 20, 20] and said[-1].startswith("WARNING: still 60% steal after 60 s")
    assert wait_quiet(5.0, 0, log=said.append, measure=lambda: float("nan"), sleep=slept.append) != 0  # NaN: no wait
    assert slept == [20, 20, 20]


def test_busy_steal_reads_a_share_of_the_busy_seconds() -> None:
    assert busy_steal(0.05, ticks=_ticks([7.0])) == pytest.approx(7.0)
    if Path("/proc/stat").exists():
        assert 0 <= busy_steal(0.2) <= 100


@pytest.mark.parametrize(("args", "wait"), [([], 300.0), (["--quick"], 0.0), (["--quiet-wait", "42"], 42.0)])
def test_the_cli_waits_for_quiet_only_outside_quick_runs(monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                         wait: float) -> None:
    import kvlab.calibrate.validate as v

    seen: dict[str, object] = {}

    def fake(*_: object, **kw: object) -> None:
        seen.update(kw)
        raise ValueError("stop here")

    monkeypatch.setattr(v, "validate", fake)
    assert main(["--validate", "p.json", "--max-steal", "7", *args]) == 2
    assert seen["quiet_wait_s"] == wait and seen["max_steal"] == 7.0 and seen["steal_reruns"] == 2
