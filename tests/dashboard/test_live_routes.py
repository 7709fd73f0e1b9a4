"""The live dashboard routes when the first snapshot cannot be taken: a busy engine is not an
error, a snapshot that raises is logged (with its traceback); either way the page gets a 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvlab.dashboard.live import LiveBlockMap
from kvlab.dashboard.routes import add_live_routes


def get_snapshot(run_on_engine: Callable[[Any], Awaitable[Any]]) -> int:
    app = FastAPI()
    add_live_routes(app, LiveBlockMap("paged"), run_on_engine)
    with TestClient(app) as client:
        return client.get("/dashboard/snapshot").status_code


def test_a_failing_first_snapshot_is_logged_not_swallowed(caplog):
    async def broken(fn: Any) -> Any:
        raise ValueError("snapshot bug")

    with caplog.at_level(logging.ERROR, logger="kvlab.serve"):
        assert get_snapshot(broken) == 503
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "first snapshot failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ValueError


def test_a_busy_engine_is_not_an_error(caplog):
    async def busy(fn: Any) -> Any:
        raise asyncio.TimeoutError  # what wait_for raises when the engine thread does not answer in time

    with caplog.at_level(logging.DEBUG, logger="kvlab.serve"):
        assert get_snapshot(busy) == 503
    assert [r for r in caplog.records if r.name == "kvlab.serve"] == []
