"""Shared loaders for the simulator tests: shapes and profiles straight from conf/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kvlab.hardware import HardwareProfile
from kvlab.models.shapes import ModelShape

CONF = Path(__file__).resolve().parents[2] / "conf"


def load_yaml(group: str, name: str) -> dict[str, Any]:
    with open(CONF / group / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def shape(name: str) -> ModelShape:
    return ModelShape.from_config(load_yaml("model", name))


def hardware(name: str) -> HardwareProfile:
    return HardwareProfile.from_config(load_yaml("hardware", name))


def sim_cfg(model: str = "opt-13b", hw: str = "a100-40gb", **kv: Any) -> dict[str, Any]:
    return {
        "model": load_yaml("model", model),
        "hardware": load_yaml("hardware", hw),
        "executor": load_yaml("executor", "sim"),
        "kv": {"gpu_memory_utilization": 0.9, "swap_space_gib": 4.0, "max_model_len": None, **kv},
        "seed": 0,
    }


@pytest.fixture
def opt13b_cfg() -> dict[str, Any]:
    return sim_cfg()
