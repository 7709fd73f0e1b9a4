"""The dashboard in a real browser (headless Chromium, see browser.py).

Live: a real ``python -m kvlab.serve`` (SmolLM2, prefix allocator) on 127.0.0.1 while requests
stream, two of them with a shared prompt prefix. What the page draws (``window.kvlabDashboard``)
must agree with ``/metrics`` of the same engine step (blocks in use, requests holding blocks), the
shared prefix must show as blocks shared by both requests, and hovering one names both. Replay: the
slider moves through a recorded run. Screenshots go to results/dashboard/.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.block_map import block_map
from kvlab.dashboard.snapshot import encode
from kvlab.engine_stats import EngineStats, KVUsage
from kvlab.request import Request, SamplingParams
from tests.dashboard.browser import SHOTS, chrome, page_state, parse_metrics, wait_for
from tests.server.conftest import MODEL, ROOT, ServerProcess, free_port, stop_process

PREFIX = ("You are a careful assistant. Answer in one short paragraph, plainly, without lists, and "
          "always mention the colour of the sky in your answer, whatever the question is about. ") * 2


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    srv = ServerProcess(["allocator=prefix", "server.dashboard_hz=8"], tmp_path_factory.mktemp("dash") / "server.log")
    request.addfinalizer(srv.stop)  # stopped by PID whatever happens
    srv.wait_ready()
    return srv


class MetricsHistory(threading.Thread):
    """Scrapes /metrics as fast as it answers; keeps, per engine step, (blocks in use, running)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.by_step, self.stop = base, {}, threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set():
                m = parse_metrics(c.get(self.base + "/metrics").text)
                step = int(m.get("kvlab:engine_steps_total", -1))
                in_use = int(m["kvlab:kv_cache_blocks.total"] - m["kvlab:kv_cache_blocks.free"])
                self.by_step.setdefault(step, set()).add((in_use, int(m["kvlab:num_requests_running"])))
                time.sleep(0.005)


def stream_completion(base: str, prompt: str, ids: list[str], first: threading.Event, max_tokens: int) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                if not first.is_set():
                    ids.append(json.loads(line[6:])["id"])
                    first.set()


def test_live_page_agrees_with_metrics_and_shows_the_shared_prefix(server, driver):
    driver.get(server.base + "/dashboard")
    wait_for(lambda: (page_state(driver) or {}).get("seen", 0) >= 1, 30, what="the first snapshot")
    st = page_state(driver)
    assert st["mode"] == "live" and st["numBlocks"] == server.health()["num_blocks"] and not st["error"]
    history = MetricsHistory(server.base)
    history.start()
    ids: list[str] = []
    firsts = [threading.Event() for _ in range(4)]
    prompts = [PREFIX + "Question: why do cats sleep so much?", PREFIX + "Question: what is a prime number?",
               "Write a haiku about autumn rain.", "List three uses of copper."]
    threads = []
    for i, p in enumerate(prompts):  # the 2nd starts once the 1st has its first token: its prefix is cached
        t = threading.Thread(target=stream_completion, args=(server.base, p, ids, firsts[i], 64), daemon=True)
        t.start()
        threads.append(t)
        assert firsts[i].wait(120), f"request {i} got no token"
    samples, shared_seen, hover = [], None, None
    while any(t.is_alive() for t in threads):
        s = page_state(driver)
        samples.append(s)
        if s["crossRequestShared"] > 0 and shared_seen is None:
            shared_seen = driver.execute_script(
                "const d = window.kvlabDashboard; for (let i = 0; i < d.numBlocks; i++) {"
                " const x = d.describe(i); if (x.requests.length > 1) return x; } return null;")
            if shared_seen:
                from selenium.webdriver.common.action_chains import ActionChains

                grid = driver.find_element("id", "grid")
                c = driver.execute_script("return window.kvlabDashboard.blockCenter(arguments[0]);",
                                          shared_seen["block"])
                rect = grid.rect  # selenium offsets are from the element's center
                ActionChains(driver).move_to_element_with_offset(
                    grid, int(c["x"] - rect["width"] / 2), int(c["y"] - rect["height"] / 2)).perform()
                hover = driver.find_element("id", "tip").text
                SHOTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(SHOTS / "live_shared_prefix.png"))
        time.sleep(0.05)
    for t in threads:
        t.join()
    idle = server.wait_idle(30)
    final = wait_for(lambda: (lambda s: s if s["step"] == idle["step"] else None)(page_state(driver)), 10,
                     what="the page to show the idle engine")
    time.sleep(0.3)
    history.stop.set()
    history.join(10)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "live_idle.png"))
    print(f"\nscreenshots: {SHOTS}/live_shared_prefix.png, live_idle.png")

    # the shared prefix: blocks held by both prefixed requests, named on hover
    assert shared_seen is not None, "the page never showed a block shared across requests"
    assert shared_seen["stateName"] == "shared" and shared_seen["ref"] >= 2
    assert set(ids[:2]) <= set(shared_seen["requests"]), (ids, shared_seen)
    assert hover is not None and "shared" in hover and ids[0] in hover and ids[1] in hover, hover
    # page vs /metrics at the same engine step: blocks in use and requests holding blocks
    matched = [s for s in samples if s["step"] in history.by_step]
    assert len(matched) >= 3, (len(samples), sorted(history.by_step)[:5])
    for s in matched:
        assert (s["counts"]["inUse"], s["requestsShown"]) in history.by_step[s["step"]], (s, history.by_step[s["step"]])
    assert max(s["requestsShown"] for s in matched) >= 2
    assert final["counts"]["inUse"] == idle["num_blocks"] - idle["free_blocks"] == 0
    assert final["requestsShown"] == 0 and final["counts"]["cached"] > 0  # finished prompts stay cached


def record_run(out: Path) -> None:
    args = ["executor=sim", "allocator=contiguous", "allocator.reservation=pow2", "allocator.num_blocks=256",
            "workload=uniform",
            "workload.num_requests=30", "show_progress=false", "record.blocks=true", "record.every_n_steps=10",
            f"output_dir={out}"]
    proc = subprocess.run([sys.executable, "-m", "kvlab.run", *args], cwd=ROOT, text=True, capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


class ViewProcess:
    def __init__(self, results: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "kvlab.view", str(results), "--port", str(self.port)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: self._up(), 60, 0.2, "kvlab.view to listen")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"kvlab.view exited with {self.proc.returncode}")
        try:
            return httpx.get(self.base + "/dashboard/info", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def test_replay_slider_moves_through_the_run(driver, tmp_path, request):
    record_run(tmp_path)
    view = ViewProcess(tmp_path)
    request.addfinalizer(view.stop)
    series = httpx.get(view.base + "/dashboard/series").json()
    driver.get(view.base + "/dashboard")
    wait_for(lambda: (page_state(driver) or {}).get("seen", 0) >= 1, 30, what="the first frame")
    st = page_state(driver)
    assert st["mode"] == "replay" and st["frames"] == len(series) >= 4 and st["step"] == series[0]["step"]
    slider = driver.find_element("id", "slider")
    from selenium.webdriver.common.keys import Keys

    seen = []
    for _ in range(3):  # the keyboard moves the slider as a person would
        slider.send_keys(Keys.ARROW_RIGHT)
        k = len(seen) + 1
        seen.append(wait_for(lambda k=k: (lambda s: s if s["frame"] == k else None)(page_state(driver)), 10,
                             what=f"frame {k}"))
    assert [s["step"] for s in seen] == [series[k]["step"] for k in (1, 2, 3)]
    slider.send_keys(Keys.END)
    last = wait_for(lambda: (lambda s: s if s["frame"] == len(series) - 1 else None)(page_state(driver)), 10,
                    what="the last frame")
    assert last["step"] == series[-1]["step"] and last["counts"]["inUse"] == series[-1]["blocks_in_use"] == 0
    mid = len(series) // 2
    driver.execute_script("return window.kvlabDashboard.goto(arguments[0]);", mid)
    s = wait_for(lambda: (lambda s: s if s["frame"] == mid else None)(page_state(driver)), 10, what="mid frame")
    assert s["counts"]["inUse"] == series[mid]["blocks_in_use"]
    assert s["counts"]["reserved"] + s["counts"]["slack"] > 0  # contiguous runs show their unused tail
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "replay_contiguous.png"))


def ten_thousand_blocks(out: Path) -> None:
    """A recording of one snapshot of a 10,000-block prefix pool, mostly in use, some blocks shared."""
    alloc = ALLOCATORS.build("prefix", 10_000, block_size=16, max_model_len=4096)
    rng = np.random.default_rng(0)
    shared = [int(t) for t in rng.integers(1, 30_000, 256)]
    i = 0
    while alloc.num_free_blocks() > 800:
        n = int(rng.integers(40, 1200))
        toks = (shared if i % 3 == 0 else []) + [int(t) for t in rng.integers(1, 30_000, n)]
        req = Request(f"r{i}", toks, SamplingParams(max_tokens=64, ignore_eos=True), 0.0, expected_output_len=64)
        seq = req.seqs[0]
        computed = alloc.get_computed_blocks(seq)
        if alloc.allocate_slots(seq, seq.num_tokens - computed[1], computed) is None:
            break
        seq.num_computed_tokens = seq.num_tokens
        i += 1
    free = alloc.num_free_blocks()
    snap = encode(block_map(alloc), EngineStats(step=1, kv=KVUsage(total_slots=160_000, total_blocks=10_000,
                                                                   free_blocks=free, block_size=16)), "prefix")
    with gzip.open(out / "blocks.jsonl.gz", "wt") as f:
        f.write(json.dumps(snap) + "\n")


def test_redraw_of_ten_thousand_blocks_is_measured(driver, tmp_path, request):
    ten_thousand_blocks(tmp_path)
    view = ViewProcess(tmp_path)
    request.addfinalizer(view.stop)
    driver.get(view.base + "/dashboard")
    wait_for(lambda: (page_state(driver) or {}).get("seen", 0) >= 1, 30, what="the 10,000-block frame")
    times = driver.execute_script(
        "const d = window.kvlabDashboard, t = []; for (let i = 0; i < 30; i++) t.push(d.redraw()); return t;")
    st = page_state(driver)
    assert st["numBlocks"] == 10_000 and st["counts"]["inUse"] >= 9_000 and st["crossRequestShared"] > 0
    med = float(np.median(times))
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "redraw_10k.png"))
    (SHOTS / "redraw_10k.json").write_text(json.dumps({"blocks": 10_000, "redraw_ms": times, "median_ms": med,
                                                        "loadavg": os.getloadavg()}, indent=1))
    print(f"\nredraw of 10,000 blocks: median {med:.1f} ms, max {max(times):.1f} ms over 30 redraws "
          f"(load average {os.getloadavg()[0]:.1f}); see {SHOTS}/redraw_10k.json")
    assert all(t > 0 for t in times)
