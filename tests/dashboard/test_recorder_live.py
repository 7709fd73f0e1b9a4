"""The block-map publishers on a real engine: the recorder's stride and size bound, the live
publisher's subscriber gate and throttle, and the live routes of an in-process server."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np

from kvlab.dashboard.live import LiveBlockMap
from kvlab.dashboard.recorder import BlockRecorder
from kvlab.dashboard.replay import load_recording
from kvlab.dashboard.snapshot import decode_arrays
from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from tests.engine.fake_executor import FakeExecutor
from tests.server.inproc import inproc_server


def engine(num_blocks: int = 64, allocator: str = "prefix") -> LLMEngine:
    cfg = {"allocator": {"name": allocator, "block_size": 4, "num_blocks": None},
           "scheduler": {"name": "fcfs", "max_num_batched_tokens": 256},
           "executor": {"name": "sim"}, "model": {"max_model_len": 128, "vocab_size": 2048},
           "kv": {"swap_space_gib": 0}}
    return LLMEngine(cfg, executor=FakeExecutor(num_blocks=num_blocks, max_model_len=128))


def run(e: LLMEngine, n: int = 6, out: int = 20) -> None:
    for i in range(n):
        e.add_request(list(range(1, 13)) + [100 + i], SamplingParams(max_tokens=out, ignore_eos=True))
    while e.has_unfinished_requests():
        e.step()


def test_recorder_keeps_every_nth_step_and_the_final_state(tmp_path):
    e = engine()
    rec = BlockRecorder(every_n_steps=3, allocator="prefix")
    e.stats_listeners.append(rec)
    run(e)
    rec.finish(e)
    steps = [s for s, _ in rec.frames]
    assert steps[:-1] == list(range(3, e.num_steps + 1, 3))[: len(steps) - 1]
    assert steps[-1] == e.num_steps
    rec.write(tmp_path)
    loaded = load_recording(tmp_path)
    assert len(loaded.frames) == len(steps) and [s["step"] for s in loaded.series] == steps
    last = loaded.frame(len(steps) - 1)
    assert last["stats"]["blocks_in_use"] == 0 and last["requests"] == []
    assert json.loads((tmp_path / "blocks_meta.json").read_text())["frames"] == len(steps)


def test_recorder_stays_under_its_size_bound_by_thinning(tmp_path):
    e = engine()
    probe = BlockRecorder(every_n_steps=1)
    e.stats_listeners.append(probe)
    run(e, n=2, out=4)
    frame_bytes = max(len(t) for _, t in probe.frames)
    e2 = engine()
    bound_mb = 6.5 * frame_bytes / 1e6  # room for 6 frames
    rec = BlockRecorder(every_n_steps=1, max_mb=bound_mb)
    e2.stats_listeners.append(rec)
    run(e2, n=6, out=40)
    rec.finish(e2)
    assert rec.thinned >= 2 and rec.stride == 2 ** rec.thinned
    assert rec.num_bytes <= rec.max_bytes + frame_bytes  # the final state may ride on top of the bound
    steps = [s for s, _ in rec.frames]
    assert steps == sorted(steps) and steps[-1] == e2.num_steps and len(steps) >= 3
    assert all(s % rec.stride == 0 for s in steps[1:-1])


def test_live_publisher_builds_nothing_without_subscribers_and_throttles_with_them():
    e = engine()
    live = LiveBlockMap("prefix", max_hz=1000.0)
    e.stats_listeners.append(live)
    run(e, n=3, out=10)
    assert live.latest is None and not live.build_times_s  # nobody watched
    live.subscribe()
    live.min_interval_s = 3600.0  # at most one per hour while busy ...
    run(e, n=3, out=10)
    built = len(live.build_times_s)
    assert 1 <= built <= 2  # the first one, plus the final state when the engine went idle
    snap = json.loads(live.latest[1])
    assert snap["step"] == e.num_steps and snap["stats"]["unfinished"] == 0
    live.unsubscribe()
    assert live.subscribers == 0


def test_inproc_server_streams_snapshots_that_agree_with_health(tokenizer):
    with inproc_server(tokenizer, num_blocks=128) as srv:
        js = httpx.get(srv.base + "/dashboard/dashboard.js").text
        assert "kvlabDashboard" in js and "http://" not in js and "https://" not in js  # offline
        page = httpx.get(srv.base + "/dashboard").text
        assert "<canvas" in page and "http://" not in page and "https://" not in page  # nothing from outside
        assert httpx.get(srv.base + "/dashboard/info").json()["mode"] == "live"
        srv.executor.delay_s = 0.02  # ~40 steps x 20 ms: several 4 Hz snapshots while the three run
        bodies = [{"model": "smollm2-135m", "prompt": f"Tell me a story number {i}", "max_tokens": 40,
                   "ignore_eos": True} for i in range(3)]
        threads = [threading.Thread(target=httpx.post, args=(srv.base + "/v1/completions",),
                                    kwargs={"json": b, "timeout": 60}) for b in bodies]
        snaps = []
        with httpx.stream("GET", srv.base + "/dashboard/stream", timeout=30) as stream:
            # Hold the engine's first step until all three requests are submitted, so that they
            # run together however slowly the threads start (a busy CI machine once let the first
            # request finish before the third arrived).
            srv.executor.gate.clear()
            try:
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 20
                while srv.submitted() < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert srv.submitted() == 3
            finally:
                srv.executor.gate.set()
            # Read until the engine is idle again after the burst was seen. The stream sends only the
            # newest snapshot each poll, so how many arrive depends on timing; a keepalive comes at
            # least every 15 s, so the deadline below is checked even when no snapshot comes (an
            # earlier "more than two snapshots" condition could wait on keepalives forever).
            deadline = time.monotonic() + 60
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    snaps.append(json.loads(line[5:]))
                    if snaps[-1]["stats"]["unfinished"] == 0 and any(s["requests"] for s in snaps):
                        break
                assert time.monotonic() < deadline, f"no idle snapshot after the burst in 60 s: {len(snaps)} seen"
        for t in threads:
            t.join()
        assert any(len(s["requests"]) == 3 for s in snaps), [s["requests"] for s in snaps]
        for s in snaps:  # each block map agrees with the stats published with it
            assert int(np.count_nonzero(decode_arrays(s)["ref"])) == s["stats"]["blocks_in_use"]
            assert len(s["requests"]) == s["stats"]["running"]
        deadline = time.monotonic() + 5
        while srv.aengine.engine.stats_listeners[0].subscribers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.app.state.dashboard.subscribers == 0  # the closed stream unsubscribed
        health = srv.wait_idle()
        snap = httpx.get(srv.base + "/dashboard/snapshot").json()
        assert snap["step"] == health["step"] and snap["stats"]["free_blocks"] == health["free_blocks"]


def test_open_stream_ends_when_the_server_drains(tokenizer):
    """An open page must not hold up a shutdown: the stream ends once the server drains."""
    with inproc_server(tokenizer, num_blocks=64) as srv:
        done = threading.Event()
        got = []

        def read() -> None:
            with httpx.stream("GET", srv.base + "/dashboard/stream", timeout=30) as stream:
                for line in stream.iter_lines():
                    got.append(line)
            done.set()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        wait = time.monotonic() + 10
        while not any(x.startswith("data:") for x in got) and time.monotonic() < wait:
            time.sleep(0.02)
        assert any(x.startswith("data:") for x in got)
        assert not done.is_set()
        srv.aengine.begin_drain(0.0)
        assert done.wait(5), "the dashboard stream did not end on drain"
