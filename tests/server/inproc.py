"""An in-process server for fault and fuzz tests: the real FastAPI app, AsyncEngine and uvicorn on
a free port, over the real allocator and scheduler, SmolLM2's real tokenizer (so chat templates,
tokenization and detokenization are the real ones) and a tensor-free fake executor (so a step
costs microseconds, or exactly as long as a test wants). Starts in well under a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from kvlab.engine import LLMEngine
from kvlab.server.api import ServerOptions, create_app
from kvlab.server.async_engine import AsyncEngine
from kvlab.server.generate import Serving
from kvlab.server.prometheus import ServerMetrics
from tests.engine.fake_executor import FakeExecutor
from tests.server.conftest import MODEL, free_port

VOCAB = 49152


class GatedExecutor(FakeExecutor):
    """Fake steps on the wall clock; each step first waits ``delay_s`` and for ``gate`` to be open."""

    virtual_time = False

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.delay_s = 0.0
        self.gate = threading.Event()
        self.gate.set()

    def execute(self, step):  # type: ignore[no-untyped-def]
        self.gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        out = super().execute(step)
        self.steps.clear()  # the fake keeps every step for engine tests; a server must not
        return out


class InProcServer:
    """``base`` URL, ``aengine``, ``executor``; ``health()`` / ``wait_idle()`` like ServerProcess."""

    def __init__(self, tokenizer: Any, *, num_blocks: int = 256, max_model_len: int = 256,
                 options: ServerOptions | None = None, block_size: int = 16) -> None:
        self.executor = GatedExecutor(num_blocks=num_blocks, max_model_len=max_model_len)
        self.executor.tokenizer = tokenizer
        self.executor.vocab_size = VOCAB  # prompts come from the real tokenizer (the fake samples ids < 1500)
        cfg = {
            "allocator": {"name": "paged", "block_size": block_size, "num_blocks": None},
            "scheduler": {"name": "fcfs", "preemption": "recompute", "max_num_batched_tokens": 512},
            "executor": {"name": "sim"},
            "model": {"max_model_len": max_model_len, "vocab_size": VOCAB},
            "kv": {"swap_space_gib": 0},
        }
        engine = LLMEngine(cfg, executor=self.executor, max_records=100)
        self.aengine = AsyncEngine(engine, ServerMetrics(lambda: engine.stats, MODEL))
        serving = Serving(self.aengine, MODEL, engine.max_model_len, VOCAB, tokenizer)
        self.options = options or ServerOptions()
        self.app = create_app(serving, self.options)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=5))
        self._http = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> InProcServer:
        self.aengine.start()
        self._http.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("in-process server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.executor.gate.set()
        self.server.should_exit = True
        self._http.join(timeout=15)
        self.aengine.shutdown()

    def health(self) -> dict:
        return httpx.get(self.base + "/health", timeout=10).json()

    def submitted(self) -> int:
        """Requests handed to the engine: those it holds plus those queued behind a running step.

        Reads the command queue, so it counts a request whose step is still gated shut; a queued
        submission is the ``register`` closure of :meth:`AsyncEngine.add`.
        """
        queued = [c for c in list(self.aengine._cmds.queue)
                  if c[0] == "call" and getattr(c[1], "__name__", "") == "register"]
        return self.aengine.in_flight + len(queued)

    def wait_idle(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        h = self.health()
        while time.monotonic() < deadline:
            h = self.health()
            if h["in_flight"] == 0 and h["running"] == 0 and h["waiting"] == 0 and h["swapped"] == 0 \
                    and h["free_blocks"] == h["num_blocks"]:
                return h
            time.sleep(0.05)
        return h


@contextmanager
def inproc_server(tokenizer: Any, **kw: Any) -> Iterator[InProcServer]:
    srv = InProcServer(tokenizer, **kw).start()
    try:
        yield srv
    finally:
        srv.stop()
