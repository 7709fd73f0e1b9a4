"""Shape variants of the synthetic ShareGPT/Alpaca lengths: same published means, the one feature
each re-reads moved the stated way, the base untouched, a bad name refused with the choices."""

from __future__ import annotations

import numpy as np
import pytest

from kvlab.workloads import WorkloadError, build_workload
from kvlab.workloads.lengths import LENGTH_SHAPES, PAPER_MEANS, length_shapes, paper_length_distributions

OPT = {"vocab_size": 50272, "max_model_len": 2048}
VARIANTS = [(d, s) for d, shapes in LENGTH_SHAPES.items() for s in shapes]


def lengths(dataset: str, shape: str | None, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    cfg = {"name": dataset, "rate": None, "num_requests": n, **({"length_shape": shape} if shape else {})}
    w = build_workload(cfg, seed=0, **OPT)
    return np.array([r.prompt_len for r in w.requests]), np.array([r.output_len for r in w.requests])


@pytest.mark.parametrize(("dataset", "shape"), VARIANTS)
def test_every_shape_keeps_the_published_means(dataset: str, shape: str) -> None:
    inp, out = paper_length_distributions(dataset, shape)
    assert (inp.mean, out.mean) == pytest.approx(PAPER_MEANS[dataset], abs=1e-3)  # exact discrete means
    p, o = lengths(dataset, shape)
    assert np.all(p + o < 2048)  # the paper's filter; long_tail's redraws lower its realised mean ~1%
    assert (p.mean(), o.mean()) == pytest.approx(PAPER_MEANS[dataset], rel=0.02)


def test_the_base_shape_is_the_default_and_draws_the_same_requests() -> None:
    for dataset in LENGTH_SHAPES:
        assert paper_length_distributions(dataset) == paper_length_distributions(dataset, "base")
        a, b = lengths(dataset, None, 500), lengths(dataset, "base", 500)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_each_variant_moves_the_feature_it_rereads() -> None:
    def p99(dist) -> float:  # noqa: ANN001
        return float(dist.values[np.searchsorted(np.cumsum(dist.pmf), 0.99)])

    def inv(dist) -> float:  # noqa: ANN001 - E[1/output]: what a short request's wait is divided by
        return float(np.dot(dist.pmf, 1.0 / dist.values))

    sg = {s: paper_length_distributions("sharegpt", s)[1] for s in length_shapes("sharegpt")}
    assert p99(sg["long_tail"]) > 1400 > 1023 >= sg["base"].values[-1]
    assert p99(sg["light_tail"]) < p99(sg["base"]) < p99(sg["long_tail"])
    al = {s: paper_length_distributions("alpaca", s)[1] for s in length_shapes("alpaca")}
    assert inv(al["few_short"]) < inv(al["base"]) < inv(al["many_short"])
    assert paper_length_distributions("sharegpt", "long_tail")[0] == paper_length_distributions("sharegpt")[0]


def test_a_bad_shape_names_the_key_and_the_choices() -> None:
    choices = r"workload.length_shape='long_tail' for alpaca; choose one of: base, few_short, many_short"
    with pytest.raises(WorkloadError, match=choices):
        build_workload({"name": "alpaca", "num_requests": 3, "length_shape": "long_tail"}, seed=0, **OPT)
    with pytest.raises(WorkloadError, match="length_shape"):  # refused even when nothing would be drawn
        build_workload({"name": "sharegpt", "rate": 1.0, "duration_s": 1e-6, "num_requests": None,
                        "length_shape": 3}, seed=0, **OPT)
    with pytest.raises(WorkloadError, match="length_shape"):  # not a key of the other generators
        build_workload({"name": "fixed", "num_requests": 3, "length_shape": "base"}, seed=0, **OPT)
    w = build_workload({"name": "sharegpt", "num_requests": 3, "length_shape": "long_tail"}, seed=0, **OPT)
    assert "length_shape=long_tail" in w.description
