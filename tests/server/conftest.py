"""Fixtures for the server tests: a real ``python -m kvlab.serve`` subprocess on a free port.

One server per test module (module-scoped fixtures); one torch thread (robust on a shared 2-core
machine, where two threads spin against other jobs) and a small KV budget keep the
start and the steps quick on a 2-core CPU. The helpers poll ``/health`` for the pool state.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"
START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a child by its PID: SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ServerProcess:
    """A running server: ``base`` is ``http://127.0.0.1:<port>``; ``log`` its captured output."""

    def __init__(self, overrides: list[str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        args = [
            sys.executable,
            "-m",
            "kvlab.serve",
            f"server.port={self.port}",
            "executor.num_threads=1",
            "kv.cpu_kv_gib=0.25",
            "kv.swap_space_gib=0",
            *overrides,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            with contextlib.suppress(httpx.HTTPError):  # not listening yet: poll again
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {START_TIMEOUT_S} s:\n{self.log}")

    def health(self) -> dict:
        r = httpx.get(self.base + "/health", timeout=10)
        r.raise_for_status()
        return r.json()

    def wait_idle(self, timeout: float = 10.0) -> dict:
        """Poll /health until no request is in flight and every block is free; returns the last state."""
        deadline = time.monotonic() + timeout
        h = self.health()
        while time.monotonic() < deadline:
            h = self.health()
            if (
                h["in_flight"] == 0
                and h["running"] == 0
                and h["waiting"] == 0
                and h["free_blocks"] == h["num_blocks"]
            ):
                return h
            time.sleep(0.1)
        return h

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)
        self._log.close()


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]
) -> Iterator[ServerProcess]:
    server = ServerProcess(overrides, tmp_path_factory.mktemp(name) / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's real tokenizer (no weights)."""
    from kvlab.models.config import resolve_model
    from kvlab.models.loader import checkpoint_dir, load_tokenizer

    path = checkpoint_dir(resolve_model(MODEL))
    assert path is not None
    tok = load_tokenizer(path)
    assert tok is not None
    return tok
