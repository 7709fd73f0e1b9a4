"""The Ray payload measurement: the stand-ins carry what each engine sent, and the fit recovers known costs."""

from __future__ import annotations

import json
import pickle

import pytest

from kvlab.paperlib import era, era_payload


def test_v026_sends_the_context_and_the_paper_engine_only_new_tokens() -> None:
    """A decode step of one sequence with 1000 tokens of context: v0.2.6's group carries every token id,
    the paper engine's carries the last one (plus the same block table)."""
    ctx = list(range(1000, 2000))
    v026 = pickle.dumps(era_payload.group_v026(0, ctx), protocol=5)
    paper = pickle.dumps(era_payload.group_cacheflow(0, ctx[-1:]), protocol=5)
    assert len(v026) > 2 * len(ctx) and len(paper) < len(v026) / 4
    groups = [era_payload.group_v026(i, ctx) for i in range(3)]
    assert pickle.loads(pickle.dumps(groups, protocol=5))[2].seq_data[2].output_token_ids == ctx[500:]


def test_fit_recovers_known_costs() -> None:
    rows = [{"n": n, "tokens": k, "ints": n * era_payload.ints_per_seq(k),
             "seconds": 1e-6 * (5.0 * n + 0.02 * n * era_payload.ints_per_seq(k))}
            for n in era_payload.GRID_N for k in era_payload.GRID_INTS]
    f = era_payload.fit(rows)
    assert f["seq_us"] == pytest.approx(5.0, rel=1e-9) and f["int_us"] == pytest.approx(0.02, rel=1e-9)
    assert f["max_residual_pct"] < 1e-6


def test_measure_times_every_grid_point() -> None:
    rows = era_payload.measure("cacheflow_2023", repeats=1)
    assert len(rows) == len(era_payload.GRID_N) * len(era_payload.GRID_INTS)
    assert all(r["seconds"] > 0 for r in rows)


def test_committed_measurement_names_its_machine_and_orders_the_layouts() -> None:
    out = json.loads((era.ROOT / "payload_fit.json").read_text())
    assert out["machine"]["model"] and "python" in out["machine"]
    v026, paper = (out["layouts"][k]["fit"] for k in ("v0.2.6", "cacheflow_2023"))
    assert v026["seq_us"] > paper["seq_us"] > 0 and v026["int_us"] > 0 and paper["int_us"] > 0
