"""Validation with repeated real runs: the median is compared, the spread is the machine's noise floor."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kvlab.calibrate.__main__ import main
from kvlab.calibrate.validate import METRICS, RELATIVE, _errors, aggregate_real, markdown


def _run(tput: float, ttft: float) -> dict[str, float]:
    base = {m: 10.0 for m in METRICS}
    return {**base, "output_throughput": tput, "mean_ttft_ms": ttft, "num_preemptions": 2.0}


def test_aggregate_takes_the_median_and_the_spread_over_it() -> None:
    median, spread = aggregate_real([_run(100, 50), _run(80, 70), _run(90, 40)])
    assert median["output_throughput"] == 90 and median["mean_ttft_ms"] == 50
    assert spread["real_spread_output_throughput"] == pytest.approx(100 * 20 / 90)
    assert spread["real_spread_mean_ttft_ms"] == pytest.approx(100 * 30 / 50)
    assert set(spread) == {f"real_spread_{m}" for m in RELATIVE}  # none for the preemption count
    one, s1 = aggregate_real([_run(100, 50)])
    assert one["output_throughput"] == 100 and s1["real_spread_output_throughput"] == 0


def test_markdown_shows_the_spread_row_only_with_repeats() -> None:
    median, spread = aggregate_real([_run(100, 50), _run(80, 70), _run(90, 40)])
    row = {"workload": "offline batch", "rate": "null", **_errors(median, _run(95, 45)), **spread, "real_repeats": 3}
    text = markdown(pd.DataFrame([row]))
    assert "real runs' own spread (max-min of 3, mean)" in text and "| 22.2% |" in text
    plain = {k: v for k, v in row.items() if not k.startswith("real_spread_")}
    assert "own spread" not in markdown(pd.DataFrame([plain]))
    assert math.isclose(row["err_output_throughput"], 100 * (95 - 90) / 90)


def test_bad_repeat_count_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate", "no-such-profile.json", "--real-repeats", "0"]) == 2
    assert "real_repeats must be >= 1, got 0" in capsys.readouterr().err
