"""Debug switches read once from the environment.

``KVLAB_CHECK_INVARIANTS=1`` makes the engine run the allocator's ``check_invariants()`` after
every step (O(pool size) per step: for tests and debugging, not for measurements). The test
suite turns it on in ``tests/conftest.py``.
"""

from __future__ import annotations

import os

CHECK_INVARIANTS: bool = os.environ.get("KVLAB_CHECK_INVARIANTS", "0") not in ("", "0", "false", "no")
