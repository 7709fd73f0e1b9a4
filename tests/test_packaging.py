"""pyproject.toml lists every package directory, so a wheel (not only the editable install) has them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for name, src in cfg["package-dir"].items():
        base = ROOT / src
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]))
    missing = found - listed
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(missing)}"
    assert listed <= found, f"listed but absent: {sorted(listed - found)}"


def test_no_top_level_package_shadows_an_installed_one() -> None:
    """Run from the repo root (``python -m kvlab.run``, pytest), the root is on ``sys.path``, so a
    top-level package directory there hides any installed package of that name: ``./kernels`` hid
    PyPI's ``kernels``, which transformers>=5 imports, and broke loading the model."""
    shadowing = sorted(d.name for d in ROOT.iterdir()
                       if (d / "__init__.py").is_file() and d.name not in ("kvlab", "tests"))
    assert not shadowing, f"top-level package directories outside kvlab/: {shadowing}"
    code = "from transformers import LlamaConfig; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
