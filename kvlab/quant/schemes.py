"""Which KV formats exist and how a run selects one.

Schemes are discovered from ``conf/kv_quant/*.yaml`` (one file per scheme, the YAML stem is the
name), so a new scheme appears in the comparison without code changes. Where the group does not
exist yet, the comparison runs the unquantized cache alone (``none``). :func:`scheme_overrides`
turns a scheme name into the Hydra override that selects it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
GROUP = "kv_quant"
BASELINE = "none"
# Preferred order of the known schemes (most bytes first); unknown ones follow alphabetically.
KNOWN_ORDER = ("none", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "kivi2")


def available_schemes(conf_dir: Path = CONF_DIR) -> list[str]:
    """Scheme names under ``conf/kv_quant`` in :data:`KNOWN_ORDER`; ``["none"]`` without the group."""
    group = conf_dir / GROUP
    names = sorted(p.stem for p in group.glob("*.yaml")) if group.is_dir() else []
    if BASELINE not in names:
        names.append(BASELINE)
    rank = {n: i for i, n in enumerate(KNOWN_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def group_exists(conf_dir: Path = CONF_DIR) -> bool:
    return (conf_dir / GROUP).is_dir()


def select_schemes(requested: Sequence[str] | None, conf_dir: Path = CONF_DIR) -> list[str]:
    """The schemes to run: all available ones, or ``requested`` (baseline added first, order kept).

    Raises ``ValueError`` naming an unknown scheme and the choices."""
    avail = available_schemes(conf_dir)
    if not requested:
        return avail
    bad = [s for s in requested if s not in avail]
    if bad:
        raise ValueError(f"--schemes: unknown scheme {bad[0]!r}; choose from: {', '.join(avail)}")
    out = [BASELINE] + [s for s in requested if s != BASELINE]
    return list(dict.fromkeys(out))


def scheme_overrides(scheme: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Hydra overrides selecting ``scheme``. ``none`` without the group selects nothing (the
    unquantized cache is what the engine runs then)."""
    if not group_exists(conf_dir):
        if scheme != BASELINE:
            raise ValueError(f"kv_quant={scheme!r}: conf/{GROUP}/ does not exist; only {BASELINE!r} runs")
        return []
    in_defaults = re.search(rf"^\s*-\s*{GROUP}\s*:", (conf_dir / "config.yaml").read_text(), re.M)
    return [f"{'' if in_defaults else '+'}{GROUP}={scheme}"]
