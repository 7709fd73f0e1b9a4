"""Replay of a recorded run: ``kvlab.run ... record.blocks=true`` writes the snapshots,
``kvlab.view`` serves them frame by frame (API level here; the browser test drives the slider)
and exports an animation whose frame count is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kvlab.dashboard.replay import load_recording
from kvlab.view import build_app, main

ROOT = Path(__file__).resolve().parents[2]
RUN = ["executor=sim", "allocator=prefix", "allocator.num_blocks=160", "workload=shared_prefix",
       "workload.num_requests=40", "workload.rate=8", "show_progress=false",
       "record.blocks=true", "record.every_n_steps=4"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recorded")
    proc = subprocess.run([sys.executable, "-m", "kvlab.run", *RUN, f"output_dir={out}"], cwd=ROOT, text=True,
                          capture_output=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_run_records_block_snapshots(recorded):
    meta = json.loads((recorded / "blocks_meta.json").read_text())
    rec = load_recording(recorded)
    assert meta["frames"] == len(rec.frames) >= 5 and meta["allocator"] == "prefix" and meta["every_n_steps"] == 4
    steps = [s["step"] for s in rec.series]
    assert steps == sorted(steps) and all(s % 4 == 0 for s in steps[:-1])
    assert any(s["blocks_in_use"] > 0 for s in rec.series)
    assert any(rec.frame(i)["shared"] for i in range(len(rec.frames)))  # the shared prefix is shared
    final = rec.frame(len(rec.frames) - 1)
    assert final["stats"]["unfinished"] == 0 and final["stats"]["blocks_in_use"] == 0
    assert (recorded / "manifest.json").is_file()


def test_view_serves_every_frame_in_order(recorded):
    rec = load_recording(recorded)
    client = TestClient(build_app(rec))
    info = client.get("/dashboard/info").json()
    assert info["mode"] == "replay" and info["frames"] == len(rec.frames)
    assert "<canvas" in client.get("/dashboard").text
    steps = [client.get(f"/dashboard/frame/{i}").json()["step"] for i in range(info["frames"])]
    assert steps == [s["step"] for s in rec.series] and steps[0] < steps[-1]
    assert client.get(f"/dashboard/frame/{info['frames']}").status_code == 404
    assert len(client.get("/dashboard/series").json()) == info["frames"]


def test_export_gif_has_one_frame_per_snapshot(recorded, tmp_path):
    n = len(load_recording(recorded).frames)
    out = tmp_path / "run.gif"
    assert main([str(recorded), "--export", str(out)]) == 0
    with Image.open(out) as im:
        assert im.n_frames == n and im.size[0] > 200
    capped = tmp_path / "capped.gif"
    assert main([str(recorded), "--export", str(capped), "--max-frames", "3"]) == 0
    with Image.open(capped) as im:
        assert im.n_frames == 3


def test_view_errors_name_the_problem(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "record.blocks=true" in capsys.readouterr().err
    bad = tmp_path / "x.avi"
    (tmp_path / "blocks.jsonl.gz").write_bytes(b"")
    assert main([str(tmp_path), "--export", str(bad)]) == 2
    assert "holds no snapshot" in capsys.readouterr().err


def test_run_rejects_a_bad_record_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kvlab.run", *RUN[:-2], "record.blocks=true", "+record.every=3",
                           f"output_dir={tmp_path}"], cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 2 and "record.every is unknown" in proc.stderr
