"""HTTP routes of the dashboard page, live (``kvlab.serve``) or replaying a recording (``kvlab.view``).

Both modes serve the same page (``/dashboard``: ``static/index.html`` + ``static/dashboard.js``,
package data, nothing from outside) and ``/dashboard/info``, which tells the page its mode.

- live: ``/dashboard/stream`` is a Server-Sent Events stream of snapshots (one ``data:`` line
  per new snapshot, a comment every 15 s to keep proxies from closing it); ``/dashboard/snapshot``
  is the latest one as JSON. An open stream subscribes to the engine's :class:`LiveBlockMap`,
  which snapshots only while someone subscribes (throttled, see :mod:`kvlab.dashboard.live`).
- replay: ``/dashboard/frame/{i}`` is snapshot ``i`` of the recording, ``/dashboard/series`` the
  stats of every frame (for the charts and the timeline slider).

The routes are open (no API key), like ``/metrics``: they show block ids, request ids and
counts, never prompt or output text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from kvlab.dashboard.live import LiveBlockMap
from kvlab.dashboard.replay import Recording

log = logging.getLogger("kvlab.serve")

KEEPALIVE_S = 15.0
POLL_S = 0.05


def static_text(name: str) -> str:
    return resources.files("kvlab.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def _add_page(app: FastAPI, info: dict[str, Any]) -> None:
    page, script = static_text("index.html"), static_text("dashboard.js")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/dashboard/dashboard.js", include_in_schema=False)
    async def dashboard_js() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8")

    @app.get("/dashboard/info", include_in_schema=False)
    async def dashboard_info() -> JSONResponse:
        return JSONResponse(info)


def add_live_routes(app: FastAPI, live: LiveBlockMap, run_on_engine: Any,
                    stopping: Callable[[], bool] = lambda: False) -> None:
    """Live routes. ``run_on_engine(fn)`` is an awaitable running ``fn(engine)`` on the engine
    thread between steps (:meth:`AsyncEngine.call`), used to take a first snapshot at once;
    ``stopping()`` turning true (the server drains) ends open streams, so an open page never
    holds up a shutdown."""
    _add_page(app, {"mode": "live", "allocator": live.allocator, "max_hz": 1.0 / live.min_interval_s})

    async def first_snapshot() -> None:
        """Snapshot now, best effort: if this fails the stream waits for the engine's next snapshot."""
        try:
            await asyncio.wait_for(run_on_engine(lambda e: live.build(e)), timeout=5.0)
        except asyncio.TimeoutError:
            pass  # the engine thread is busy (a long step) or stopped: not an error, the page waits
        except Exception:  # noqa: BLE001 - the page must still load, but a failing snapshot is a bug: report it
            log.exception("dashboard: taking the first snapshot failed; the page waits for the next one")

    @app.get("/dashboard/snapshot", include_in_schema=False)
    async def snapshot() -> Response:
        if live.latest is None:
            await first_snapshot()
        if live.latest is None:
            return JSONResponse({"error": {"message": "no snapshot yet", "type": "server_error"}},
                                status_code=503)
        return Response(live.latest[1], media_type="application/json")

    @app.get("/dashboard/stream", include_in_schema=False)
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            live.subscribe()
            try:
                await first_snapshot()
                seen, last_sent = 0, time.monotonic()
                yield "retry: 1000\n\n"
                while not stopping():
                    latest = live.latest
                    if latest is not None and latest[0] != seen:
                        seen = latest[0]
                        last_sent = time.monotonic()
                        yield f"data: {latest[1]}\n\n"
                    elif time.monotonic() - last_sent > KEEPALIVE_S:
                        last_sent = time.monotonic()
                        yield ": keepalive\n\n"
                    await asyncio.sleep(POLL_S)
            finally:
                live.unsubscribe()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def add_replay_routes(app: FastAPI, rec: Recording) -> None:
    """Replay routes over a loaded recording."""
    first = rec.frame(0)
    _add_page(app, {"mode": "replay", "frames": len(rec.frames), "allocator": first.get("allocator", ""),
                    "num_blocks": first["num_blocks"], "meta": rec.meta, "path": str(rec.path)})

    @app.get("/dashboard/frame/{i}", include_in_schema=False)
    async def frame(i: int) -> Response:
        if not 0 <= i < len(rec.frames):
            return JSONResponse({"error": {"message": f"frame {i} is outside 0..{len(rec.frames) - 1}",
                                           "type": "invalid_request_error"}}, status_code=404)
        return Response(rec.frames[i], media_type="application/json")

    @app.get("/dashboard/series", include_in_schema=False)
    async def series() -> JSONResponse:
        return JSONResponse(list(rec.series))
