"""Debug switches read once from the environment.

``KVLAB_CHECK_INVARIANTS`` makes the engine run the allocator's ``check_invariants()`` (O(pool
size): for tests and debugging, not for measurements): ``1`` (or ``true``/``yes``) after every
step, an integer ``N`` after every N-th step, ``0`` (or unset, ``false``, ``no``) never. The test
suite sets 1 in ``tests/conftest.py``; its paper-scale subprocess (``kvlab.paper --quick``, tens
of thousands of steps on pools of up to ~10^5 blocks) sets a period, because a broken invariant
(a leaked block, a wrong reference count) persists from the step that breaks it, so a periodic
check still catches it, a few steps later.
"""

from __future__ import annotations

import os

_OFF, _ON = ("", "0", "false", "no"), ("1", "true", "yes")


def check_period(value: str | None) -> int:
    """The step period of a ``KVLAB_CHECK_INVARIANTS`` value (0 = off). Raises ``ValueError``
    naming the variable and its choices for anything else."""
    v = (value or "").strip().lower()
    if v in _OFF:
        return 0
    if v in _ON:
        return 1
    if v.isdigit():
        return int(v)
    raise ValueError(f"KVLAB_CHECK_INVARIANTS={value!r} is invalid; choose one of: 0/false/no (off), "
                     "1/true/yes (every step), or an integer N (every N-th step)")


# the period in steps; truthy when checks are on
CHECK_INVARIANTS: int = check_period(os.environ.get("KVLAB_CHECK_INVARIANTS"))
