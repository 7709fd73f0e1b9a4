"""Process lifecycle of ``python -m kvlab.serve``: the engine loop runs on the main thread and
uvicorn in a second one, so signals and startup failures must still end the process cleanly."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from start_server(tmp_path_factory, "lifecycle", [])


def test_port_in_use_exits_nonzero(server: ServerProcess, tmp_path) -> None:
    clash = ServerProcess([], tmp_path / "clash.log", port=server.port)  # the first server holds it
    try:
        assert clash.proc.wait(timeout=120) == 1
        assert "address already in use" in clash.log.lower()
    finally:
        clash.stop()
    assert httpx.get(server.base + "/health", timeout=10).status_code == 200  # the first one is unharmed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_serving_cleanly(tmp_path, sig: signal.Signals) -> None:
    srv = ServerProcess([], tmp_path / f"{sig.name}.log")
    try:
        srv.wait_ready()
        r = httpx.post(srv.base + "/v1/completions", timeout=60,
                       json={"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200
        srv.proc.send_signal(sig)
        assert srv.proc.wait(timeout=20) == 0
        assert "Traceback" not in srv.log
    finally:
        srv.stop()  # a no-op signal once the process has exited
