"""``python -m kvlab.paper --quick`` end to end: every figure file and the report are written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kvlab.paperlib.figures import FIGURE_FILES

REPO = Path(__file__).resolve().parents[2]


def test_paper_quick_writes_every_figure_and_the_report(tmp_path: Path) -> None:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kvlab.paper", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in FIGURE_FILES:
        png = tmp_path / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 5000, name
    report = (tmp_path / "README.md").read_text()
    for name in FIGURE_FILES:
        assert f"figures/{name}.png" in report
    assert (tmp_path / "tables" / "fig12_capacity.csv").exists()
    assert time.perf_counter() - t < 300, "the quick run must stay under 5 minutes"
