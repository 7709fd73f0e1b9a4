"""``executor=auto``: the real model where one can run, which is every machine kvlab supports.

Auto picks ``torch`` (the model of ``model=...`` on CUDA when present, else on the CPU) for models
that have weights (``checkpoint`` set); for weightless paper-scale shapes (``opt-13b`` ...) it
picks the simulator, since nothing else can run them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resolve_auto(cfg: Mapping[str, Any]) -> str:
    return "torch" if (cfg.get("model") or {}).get("checkpoint") else "sim"
