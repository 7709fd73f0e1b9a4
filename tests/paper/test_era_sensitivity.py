"""Paper-era diagnostics: the sweeps set one knob each, count misses honestly, and move the right way."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from kvlab.paperlib import era
from kvlab.paperlib import era_sensitivity as sens
from kvlab.paperlib.era_shapes import PREDICTION_CSV, prediction_jobs, shape_lines, shape_spread
from kvlab.workloads.lengths import LENGTH_SHAPES


def test_sweep_jobs_set_one_knob_each_and_never_share_a_run() -> None:
    jobs = sens.sweep_jobs(tp_values=(100.0,), ft_values=(2,), ray_forms=("per_step",), shapes=())
    tp = [j for j in jobs if "allreduce_us" in j.tags]
    ft = [j for j in jobs if "ft_batch" in j.tags]
    ray = [j for j in jobs if "ray_form" in j.tags]
    assert {j.panel for j in tp} == set(sens.TP_PANELS) and len(tp) == 4 * 5
    assert {(j.panel, j.system) for j in ft} == {("c", "ft"), ("f", "ft")}
    assert {j.panel for j in ray} == set(sens.TP_PANELS) and len(ray) == 4 * 5
    knob_keys = ("hardware.interconnect", "scheduler.max_batch", "hardware.engine_per_worker",
                 "hardware.engine_allreduce")
    for j in jobs:
        knob = next(iter(j.tags))
        want = (sens.ray_form_overrides(j.tags[knob]) if knob == "ray_form"
                else sens.allreduce_overrides(j.tags[knob]) if knob == "allreduce_us"
                else [f"{sens.KNOBS[knob]}={j.tags[knob]}"])
        assert [o for o in j.overrides if o.startswith(knob_keys)] == want
        assert "+experiment/era=paper2023" in j.overrides
    # the per-step form replaces the mode's two terms with its one constant and no per-sequence part
    assert ray[0].overrides[-2].endswith("engine_per_worker_seq_us=0.0")
    assert ray[0].overrides[-1].endswith("engine_per_worker_int_us=0")
    # a swept all-reduce value is the whole per-call cost: the derived engine term is switched off
    assert tp[0].overrides[-2:] == ["hardware.interconnect_latency_us=100.0", "hardware.engine_allreduce_us=0"]
    assert len({j.key for j in jobs}) == len(jobs)
    low = sens.lowload_jobs(tp_values=(10.0, 100.0), ray_forms=("per_seq",))
    own = sens.PREDICTED_ALLREDUCE_US  # the Ray forms run at the prediction's own all-reduce
    assert own == 10.0 + 46.2
    assert sorted((j.panel, j.tags["allreduce_us"], j.tags.get("ray_form", "")) for j in low) == \
        [("b", 10.0, ""), ("b", own, ""), ("b", own, "per_seq"), ("b", 100.0, ""),
         ("c", 10.0, ""), ("c", own, ""), ("c", own, "per_seq"), ("c", 100.0, "")]
    assert all(j.sweep is None and j.rates == [sens.LOWLOAD_RATE[j.panel]] for j in low)
    assert len({j.key for j in low}) == len(low)
    form = [j for j in low if "ray_form" in j.tags]
    assert all(j.overrides[-3:] == sens.ray_form_overrides("per_seq") for j in form)


def test_each_shape_runs_on_its_own_datasets_panels_for_every_system() -> None:
    jobs = sens.sweep_jobs(tp_values=(), ft_values=(), ray_forms=())
    assert {j.tags["length_shape"] for j in jobs} == set(sens.SHAPES) == {
        "long_tail", "light_tail", "few_short", "many_short"}
    for j in jobs:
        shape = j.tags["length_shape"]
        assert j.panel in ("abc" if shape in LENGTH_SHAPES["sharegpt"] else "def")
        assert j.overrides[-1] == f"workload.length_shape={shape}"
    assert len(jobs) == 4 * 3 * 5 and len({j.key for j in jobs}) == len(jobs)
    assert not {j.key for j in jobs} & {j.key for j in era.jobs(reading=sens.READING)}  # own run dirs


def test_shape_spread_says_where_a_shape_brackets_the_paper() -> None:
    base = pd.DataFrame({"panel": ["a", "a", "d"], "system": ["ft", "vllm", "ft"],
                         "era_error_pct": [36.0, -5.0, -16.0]})
    sweep = pd.DataFrame({"knob": ["length_shape"] * 5 + ["ft_batch"],
                          "value": ["long_tail", "light_tail", "long_tail", "few_short", "many_short", "2"],
                          "panel": ["a", "a", "a", "d", "d", "c"], "system": ["ft", "ft", "vllm", "ft", "ft", "ft"],
                          "era_error_pct": [-4.0, 38.0, -13.0, -40.0, -71.0, 5.0]})
    t = shape_spread(sweep, base).set_index(["panel", "system"])
    assert t.loc[("a", "ft"), ["low", "high"]].tolist() == [-4.0, 38.0] and t.loc[("a", "ft"), "brackets_paper"]
    assert not t.loc[("d", "ft"), "brackets_paper"] and t.loc[("d", "ft"), "within_25_with"] == "base"
    assert t.loc[("a", "ft"), "within_25_with"] == "long_tail"
    assert ("c", "ft") not in t.index  # other knobs' rows are not shapes
    text = shape_lines(sweep, base)[0]
    assert "(a) -4% to +38% (within 25%: long_tail)" in text and "(d) -71% to -16% (within 25%: base)" in text
    assert "at most 8 points" in text  # (a) vLLM: -13 .. -5


def test_ft_rows_also_run_on_the_paper_traces_per_shape() -> None:
    jobs = prediction_jobs(("long_tail", "few_short"), "abcdef", None)
    assert sorted((j.panel, j.tags["length_shape"]) for j in jobs) == [
        ("a", "long_tail"), ("b", "long_tail"), ("c", "long_tail"),
        ("d", "few_short"), ("e", "few_short"), ("f", "few_short")]
    for j in jobs:
        assert j.system == "ft" and j.tags["reading"] == "paper_trace" and j.sweep["trace"]["warmup_s"] == 60
        assert j.sweep["trace"]["duration_s"] == (900 if j.panel in "cf" else 3600)
    assert not {j.key for j in jobs} & {j.key for j in sens.sweep_jobs()}  # never a fixed-count run's dir


def test_shape_lines_add_the_ft_rows_on_the_paper_traces() -> None:
    base = pd.DataFrame({"panel": ["c"], "system": ["ft"], "era_error_pct": [131.0]})
    sweep = pd.DataFrame({"knob": ["length_shape"], "value": ["long_tail"], "panel": ["c"], "system": ["ft"],
                          "era_error_pct": [-45.0]})
    pred = pd.DataFrame({"value": ["long_tail", "light_tail", "few_short"], "panel": ["c", "c", "f"],
                         "system": ["ft"] * 3, "era_error_pct": [20.0, 215.0, 156.0]})
    own = pd.DataFrame({"panel": ["c", "c", "f"], "system": ["ft", "vllm", "ft"],
                        "era_error_pct": [209.0, -4.0, -44.0]})
    text = "\n".join(shape_lines(sweep, base, pred, own))
    assert "(c) -45% to +131%" in text  # fixed-count
    assert "`light_tail` (c) +215%; `long_tail` (c) +20%" in text
    assert "(c) +20% to +215% (within 25%: long_tail)" in text
    assert "(f) -44% to +156% (within 25%: none; the range brackets the paper)" in text
    assert PREDICTION_CSV in text and "not adopted" in text
    assert "paper's traces" not in "\n".join(shape_lines(sweep, base))  # without the csv, no such line


def _base() -> pd.DataFrame:
    return pd.DataFrame({"panel": ["a", "b", "b", "c"], "system": ["vllm", "vllm", "ft", "ft"],
                         "era_error_pct": [-7.0, 33.0, 85.0, 554.0]})


def test_summary_replaces_only_the_rows_its_knob_changes() -> None:
    sweep = pd.DataFrame({"knob": ["allreduce_us", "allreduce_us", "ft_batch"], "value": [200.0, 200.0, 2.0],
                          "panel": ["b", "b", "c"], "system": ["vllm", "ft", "ft"],
                          "era_error_pct": [-8.0, 40.0, 5.0]})
    s = sens.summary(sweep, _base()).set_index("knob")
    assert s.loc["allreduce_us", "within_25"] == 2 and s.loc["allreduce_us", "of"] == 4
    assert s.loc["allreduce_us", "misses"] == "(b) ft +40%, (c) ft +554%"
    assert s.loc["ft_batch", "within_25"] == 2  # (a) vllm and (c) ft; both (b) rows keep the prediction's misses
    assert "(b) vllm +33%" in s.loc["ft_batch", "misses"]


def test_section_reports_both_observables(tmp_path: Path) -> None:
    root = tmp_path / "sensitivity"
    _base().to_csv(tmp_path / sens.BASELINE, index=False)
    pd.DataFrame({"knob": ["allreduce_us", "ft_batch"], "value": [150.0, 2.0], "panel": ["b", "c"],
                  "system": ["vllm", "ft"], "era_error_pct": [0.0, 5.0]}).to_csv(tmp_path / "sensitivity.csv")
    assert sens.section(root)[0].startswith("#### What the misses imply")
    pd.DataFrame({"allreduce_us": [10.0, 150.0], "panel": ["b", "b"], "rate": [0.4, 0.4],
                  "normalized_latency": [0.039, 0.06], "paper_min": [0.05, 0.05], "paper_max": [0.09, 0.09],
                  "in_range": [False, True]}).to_csv(tmp_path / "sensitivity_lowload.csv", index=False)
    text = "\n".join(sens.section(root))
    assert "one-term forms" not in text  # an old csv without the ray_form column still reads
    pd.DataFrame({"allreduce_us": [10.0, 150.0, 10.0], "ray_form": ["", "", "per_step"], "panel": ["b", "b", "b"],
                  "rate": [0.4, 0.4, 0.4], "normalized_latency": [0.039, 0.06, 0.068], "paper_min": [0.05] * 3,
                  "paper_max": [0.09] * 3, "in_range": [False, True, True]}).to_csv(
                      tmp_path / "sensitivity_lowload.csv", index=False)
    text = "\n".join(sens.section(root))
    assert "per_step: (b) 0.068 (in range)" in text
    assert "not predictions" in text and "2 of 4" in text
    assert "+12.0 ms (66B/4)" in text  # 2 x 64 layers x (150 - 56.2) µs
    assert "In the paper's range at: 150 µs." in text


def test_a_costlier_multi_gpu_step_lowers_every_capacity(tmp_path: Path) -> None:
    """End to end on panel (e): raising the per-all-reduce cost lowers every system's saturated
    capacity and raises vLLM's low-load latency in panels (b, c)."""
    table = sens.run(tmp_path / "sensitivity", n_jobs=1, resume=False, tp_values=(10.0, 200.0), ft_values=(),
                     ray_forms=(), panels="e", num_requests=60, shapes=("many_short",))
    shaped = table[table["knob"] == "length_shape"]
    assert sorted(shaped["system"]) == sorted(cap_systems := ["ft", "orca_max", "orca_pow2", "orca_oracle", "vllm"])
    assert shaped["era_capacity"].gt(0).all()
    ft = pd.read_csv(tmp_path / PREDICTION_CSV)
    assert ft[["value", "panel", "system"]].values.tolist() == [["many_short", "e", "ft"]]
    table = table[table["knob"] == "allreduce_us"]
    cap = table.pivot(index="system", columns="value", values="era_capacity")
    assert sorted(cap.index) == sorted(cap_systems)
    assert len(cap) == 5 and (cap[200.0] < cap[10.0]).all(), cap
    low = pd.read_csv(tmp_path / "sensitivity_lowload.csv").pivot(index="panel", columns="allreduce_us",
                                                                  values="normalized_latency")
    assert (low[200.0] > low[10.0]).all() and not math.isnan(low.values.sum())
