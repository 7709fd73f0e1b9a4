"""Every config group choice named anywhere (defaults, registries) has its YAML, and composes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kvlab.config_check import EXECUTOR_MODULES
from kvlab.llm import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_every_executor_name_has_a_yaml():
    assert {p.stem for p in (CONF / "executor").glob("*.yaml")} == set(EXECUTOR_MODULES)


def test_root_defaults_exist():
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    for item in defaults:
        if isinstance(item, dict):
            ((group, choice),) = item.items()
            if not group.startswith("override"):
                assert (CONF / group / f"{choice}.yaml").is_file(), (group, choice)


@pytest.mark.parametrize("group", ["allocator", "scheduler", "executor", "model", "hardware", "workload"])
def test_every_choice_composes(group):
    for f in sorted((CONF / group).glob("*.yaml")):
        cfg = compose_config(overrides=[f"{group}={f.stem}"])
        assert cfg[group]["name"] == f.stem
