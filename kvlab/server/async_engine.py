"""``AsyncEngine``: one thread owns the (not thread-safe) ``LLMEngine``.

``python -m kvlab.serve`` runs that loop on the process's MAIN thread (:meth:`AsyncEngine.run`)
and uvicorn's event loop in a second thread: measured on the 2-core dev VM, torch with 2 intra-op
threads decoding a batch of 16 from a non-main thread used ~1.5 cores and ran ~25% slower than
from the main thread (``cpu/wall`` 1.5 vs 1.97), and the whole server with 2 torch threads was
slower than with 1. :meth:`AsyncEngine.start` still runs the loop in a background thread for
embedding the server in another program (and for tests).

HTTP handlers never touch the engine. They submit closures (``call``) and aborts through a
queue; the engine thread runs them between steps, then steps while anything is unfinished, so
every request in flight — from any client — shares one continuous batch. Each step's outputs
are handed to the owning handler's ``asyncio.Queue`` with ``call_soon_threadsafe``.

After every loop iteration the thread publishes :attr:`snapshot` (pool and queue state) and
updates the Prometheus metrics; readers never look inside the engine. A step that raises (it
should not) fails only the requests in flight: they are aborted (blocks freed) and their
clients get an error, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from kvlab.engine import LLMEngine
from kvlab.request_output import RequestOutput
from kvlab.server.metrics import ServerMetrics

log = logging.getLogger("kvlab.serve")
T = TypeVar("T")


class EngineDead(RuntimeError):
    """The engine failed while this request was in flight (the request was aborted)."""


class RequestStream:
    """Outputs of one request, delivered to the event loop that created it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()

    def put(self, item: RequestOutput | Exception) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def get(self) -> RequestOutput:
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item


class AsyncEngine:
    """Owns the engine thread. ``max_records`` caps the engine's step/request record lists."""

    def __init__(
        self, engine: LLMEngine, metrics: ServerMetrics | None = None, max_records: int = 10_000
    ) -> None:
        self.engine = engine
        self.metrics = metrics or ServerMetrics(engine)
        self.max_records = max_records
        self._cmds: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._streams: dict[str, RequestStream] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvlab-engine", daemon=True)
        self.snapshot: dict[str, Any] = {}
        self._publish()

    # -- lifecycle --
    def start(self) -> None:
        """Run the engine loop in a background thread."""
        self._thread.start()

    def run(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Run the engine loop in the calling thread until :meth:`shutdown` or until
        ``keep_going()`` turns false (checked at least once a second)."""
        self._run(keep_going)

    def request_stop(self) -> None:
        """Ask the loop to end within a second; only sets a flag, so a signal handler may call it."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop the loop and wait for its thread (if it runs in one)."""
        self._stop.set()
        self._cmds.put(("noop", None, None))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    # -- API for handlers (event loop side) --
    async def call(self, fn: Callable[[LLMEngine], T]) -> T:
        """Run ``fn(engine)`` on the engine thread between steps; exceptions propagate."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._cmds.put(("call", fn, fut))
        return await asyncio.wrap_future(fut)

    async def add(self, add_fn: Callable[[LLMEngine], str]) -> tuple[str, RequestStream]:
        """``add_fn`` validates and calls ``engine.add_request`` (on the engine thread) and returns
        the request id; the returned stream yields that request's outputs."""
        stream = RequestStream(asyncio.get_running_loop())

        def register(engine: LLMEngine) -> str:
            rid = add_fn(engine)
            self._streams[rid] = stream
            return rid

        rid = await self.call(register)
        return rid, stream

    def abort(self, request_id: str) -> None:
        """Abort a request (frees its blocks). Safe from any thread; idempotent."""
        self._cmds.put(("abort", request_id, None))

    # -- engine thread --
    def _run(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        while not self._stop.is_set() and keep_going():
            busy = self.engine.has_unfinished_requests()
            try:
                cmd = self._cmds.get_nowait() if busy else self._cmds.get(timeout=1.0)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                self._execute(cmd)
                try:
                    cmd = self._cmds.get_nowait()
                except queue.Empty:
                    cmd = None
            if self.engine.has_unfinished_requests():
                self._step()
            self._publish()

    def _execute(self, cmd: tuple[str, Any, Any]) -> None:
        kind, arg, fut = cmd
        if kind == "call":
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(arg(self.engine))
            except BaseException as e:  # noqa: BLE001 - handed to the waiting handler
                fut.set_exception(e)
        elif kind == "abort":
            if arg in self._streams or arg in self.engine.requests:
                self.engine.abort_request(arg)
                self._forget(arg)
                self.metrics.aborted.inc()

    def _forget(self, rid: str) -> None:
        self._streams.pop(rid, None)
        self.engine.requests.pop(rid, None)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:  # noqa: BLE001 - keep serving; fail only the requests in flight
            log.error(
                "engine step failed; aborting %d requests:\n%s", len(self._streams), traceback.format_exc()
            )
            for rid, stream in list(self._streams.items()):
                self.engine.abort_request(rid)
                self._forget(rid)
                stream.put(EngineDead(f"engine error: {e}"))
            return
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if out.finished:
                self._forget(out.request_id)
                self.metrics.observe_finished(out)
            if stream is not None:
                stream.put(out)
        self._trim_records()

    def _trim_records(self) -> None:
        for records in (self.engine.step_records, self.engine.request_records):
            if len(records) > self.max_records:
                del records[: len(records) - self.max_records // 2]

    def _publish(self) -> None:
        e = self.engine
        a, s = e.allocator, e.scheduler
        self.snapshot = {
            "num_blocks": int(a.num_blocks),
            "free_blocks": int(a.num_free_blocks()),
            "block_size": e.block_size,
            "running": len(s.running),
            "waiting": len(s.waiting),
            "swapped": len(s.swapped),
            "num_preemptions": int(s.num_preemptions),
            "in_flight": len(self._streams),
        }
        self.metrics.update(self.snapshot)
