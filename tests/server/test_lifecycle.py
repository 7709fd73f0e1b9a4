"""Process lifecycle of ``python -m kvlab.serve``: the engine loop runs on the main thread and
uvicorn in a second one, so signals and startup failures must still end the process cleanly."""

from __future__ import annotations

import json
import signal
import threading
import time
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


def test_sigint_stops_an_idle_server_cleanly(server: ServerProcess) -> None:
    """Runs last in this module: it stops the module's server."""
    srv = server
    try:
        r = httpx.post(srv.base + "/v1/completions", timeout=60,
                       json={"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(timeout=20) == 0
        assert "Traceback" not in srv.log
    finally:
        srv.stop()  # a no-op signal once the process has exited


def test_sigterm_under_load_drains_then_ends_every_stream(tmp_path) -> None:
    """SIGTERM with 12 live streams: the port closes at once, streams run on for the grace period,
    then each ends with an error event and [DONE]; the process exits 0 without tracebacks."""
    srv = ServerProcess(["server.shutdown_grace_s=1.5"], tmp_path / "SIGTERM.log")
    try:
        srv.wait_ready()
        results: list[list[str]] = []
        started = threading.Barrier(13)

        def stream_one(i: int) -> None:
            body = {"model": "smollm2-135m", "prompt": f"Story {i}:", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}
            with httpx.stream("POST", srv.base + "/v1/completions", json=body, timeout=60) as r:
                lines = []
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        lines.append(line)
                        if len(lines) == 1:
                            started.wait(timeout=60)
                results.append(lines)

        threads = [threading.Thread(target=stream_one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        started.wait(timeout=60)  # every stream has its first chunk
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(srv.base + "/health", timeout=2)
        for t in threads:
            t.join(timeout=60)
        assert srv.proc.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 20
        assert len(results) == 12
        for lines in results:
            assert lines[-1] == "data: [DONE]", lines[-3:]
            assert "shutting down" in json.loads(lines[-2][5:])["error"]["message"]
        assert "Traceback" not in srv.log and "CancelledError" not in srv.log, srv.log[-2000:]
    finally:
        srv.stop()
