"""``KVLAB_CHECK_INVARIANTS``: its values (off, every step, every N-th step, a clear error
otherwise) and the engine checking the allocator on exactly those steps."""

from __future__ import annotations

import pytest

from kvlab import debug
from kvlab.request import SamplingParams


@pytest.mark.parametrize("value, period", [(None, 0), ("", 0), ("0", 0), ("false", 0), ("No", 0),
                                           ("1", 1), ("true", 1), ("YES", 1), ("10", 10), (" 3 ", 3)])
def test_check_period_values(value, period):
    assert debug.check_period(value) == period


@pytest.mark.parametrize("value", ["-1", "often", "2.5"])
def test_a_bad_value_names_the_variable_and_the_choices(value):
    with pytest.raises(ValueError, match=r"KVLAB_CHECK_INVARIANTS=.* is invalid; choose one of: 0/false/no"):
        debug.check_period(value)


@pytest.mark.parametrize("period", [0, 1, 3])
def test_the_engine_checks_on_every_period_th_step(engine_factory, monkeypatch, period):
    monkeypatch.setattr(debug, "CHECK_INVARIANTS", period)
    eng, _ = engine_factory(num_blocks=64)
    checked: list[int] = []
    real = eng.allocator.check_invariants

    def spy() -> None:
        checked.append(eng.num_steps)
        real()

    monkeypatch.setattr(eng.allocator, "check_invariants", spy)
    eng.add_request(list(range(1, 9)), SamplingParams(max_tokens=10, ignore_eos=True))
    while eng.has_unfinished_requests():
        eng.step()
    assert eng.num_steps >= 10
    assert checked == ([s for s in range(1, eng.num_steps + 1) if s % period == 0] if period else [])
