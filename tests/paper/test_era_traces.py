"""Paper-era mode on a user's dataset file: the right panels switch to it, a cached run never crosses
files, bad ``--trace`` arguments are refused, and a panel runs end to end on a lengths JSONL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from kvlab.paperlib import era
from kvlab.paperlib.era_traces import parse_traces, with_traces


def _lengths(path: Path, pairs: list[tuple[int, int]]) -> Path:
    path.write_text("".join(json.dumps({"prompt_len": p, "output_len": o}) + "\n" for p, o in pairs))
    return path


def test_only_the_datasets_panels_switch_to_the_file(tmp_path: Path) -> None:
    f = _lengths(tmp_path / "alpaca.jsonl", [(20, 60), (12, 4)])
    traces = parse_traces([f"alpaca={f}"])
    assert traces == {"alpaca": str(f.resolve())}
    base = {j.key: j for j in era.jobs(reading="fixed")}
    swapped = with_traces(era.jobs(reading="fixed"), traces)
    for j in swapped:
        if j.panel in "def":
            assert "workload=alpaca" not in j.overrides
            assert j.overrides[j.overrides.index("workload=file") + 1] == f"workload.path={f.resolve()}"
            assert j.key not in base and j.tags["trace"]
        else:
            assert j.key in base and j.overrides == base[j.key].overrides
    other = with_traces(era.jobs("d", reading="fixed"), {"alpaca": str(_lengths(tmp_path / "b.jsonl", [(9, 9)]))})
    assert {j.key for j in other}.isdisjoint(j.key for j in swapped)  # another file: other run folders


@pytest.mark.parametrize(("arg", "says"), [("alpaca", "DATASET=PATH"), ("wmt16=x.jsonl", "sharegpt, alpaca"),
                                           ("sharegpt=/no/such.json", "no such file")])
def test_bad_trace_arguments_are_refused(arg: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=says):
        parse_traces([arg])
    with pytest.raises(SystemExit):
        era.main(["--trace", arg])
    assert says in capsys.readouterr().err


def test_a_panel_runs_end_to_end_on_a_lengths_file(tmp_path: Path) -> None:
    f = _lengths(tmp_path / "alpaca.jsonl", [(15, 40), (30, 90), (10, 3), (25, 150), (18, 60)])
    table = era.run(tmp_path / "era", n_jobs=1, panels="d", num_requests=40, readings=("fixed",),
                    traces={"alpaca": str(f)})
    points = pd.read_csv(tmp_path / "era" / "points_fixed.csv")
    assert set(points["workload"]) == {"file"} and len(table) == 5
    assert all(math.isfinite(c) and c > 0 for c in table["era_capacity"])
