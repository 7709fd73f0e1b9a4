"""``AsyncEngine``: one thread owns the (not thread-safe) ``LLMEngine``.

``python -m kvlab.serve`` runs that loop on the process's MAIN thread (:meth:`AsyncEngine.run`)
and uvicorn's event loop in a second thread: measured on the 2-core dev VM, torch with 2 intra-op
threads decoding a batch of 16 from a non-main thread used ~1.5 cores and ran ~25% slower than
from the main thread (``cpu/wall`` 1.5 vs 1.97). :meth:`AsyncEngine.start` still runs the loop in
a background thread for embedding the server in another program (and for tests).

HTTP handlers never touch the engine. They submit closures (``call``) and aborts through a
queue; the engine thread runs them between steps, then steps while anything is unfinished, so
every request in flight — from any client — shares one continuous batch. Each step's outputs are
handed to the owning handler's ``asyncio.Queue`` with ``call_soon_threadsafe``. What handlers
read about the engine is :attr:`stats`, the immutable snapshot the engine publishes per step.

A step that raises (it should not) fails only the requests in flight: they are aborted (blocks
freed), their clients get an error, and the server keeps serving. :meth:`begin_drain` starts a
graceful shutdown: in-flight requests run on for a grace period, then each is ended with
:class:`ShuttingDown` (streams send an error event and ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from kvlab.engine import LLMEngine
from kvlab.engine_stats import EngineStats
from kvlab.request_output import RequestOutput
from kvlab.server.prometheus import ServerMetrics

log = logging.getLogger("kvlab.serve")
T = TypeVar("T")


class EngineDead(RuntimeError):
    """The engine failed while this request was in flight (the request was aborted)."""


class ShuttingDown(RuntimeError):
    """The server shut down before this request finished (the request was aborted)."""


class RequestStream:
    """Outputs of one request, delivered to the event loop that created it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()

    def put(self, item: RequestOutput | Exception) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the client's event loop is closed: nobody is listening any more
            pass

    async def get(self) -> RequestOutput:
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item


class AsyncEngine:
    """Owns the engine thread and the map request id -> stream of the requests in flight."""

    def __init__(self, engine: LLMEngine, metrics: ServerMetrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics or ServerMetrics(lambda: engine.stats)
        self._cmds: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._streams: dict[str, RequestStream] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvlab-engine", daemon=True)
        self._drain_deadline: float | None = None
        self.drained = threading.Event()  # set once a drain has ended every request in flight

    # -- what other threads may read --
    @property
    def stats(self) -> EngineStats:
        """The engine's latest published snapshot (immutable; safe from any thread)."""
        return self.engine.stats

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

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

    def begin_drain(self, grace_s: float) -> None:
        """Graceful shutdown: new requests are refused (see ``draining``); those in flight may run
        for ``grace_s`` seconds, then are ended with :class:`ShuttingDown`. Only sets fields, so a
        signal handler may call it."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + max(grace_s, 0.0)
            self._cmds.put(("noop", None, None))

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

    async def add(self, add_fn: Callable[[LLMEngine, float], str]) -> tuple[str, RequestStream]:
        """``add_fn(engine, waited_s)`` calls ``engine.add_request`` on the engine thread and returns
        the request id; ``waited_s`` is how long the command queued (to back-date the arrival).
        The returned stream yields that request's outputs."""
        stream = RequestStream(asyncio.get_running_loop())
        submitted = time.monotonic()

        def register(engine: LLMEngine) -> str:
            if self.draining:
                raise ShuttingDown("the server is shutting down")
            rid = add_fn(engine, time.monotonic() - submitted)
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
                cmd = self._cmds.get_nowait() if busy else self._cmds.get(timeout=0.5)
            except queue.Empty:
                cmd = None
            ran = False
            while cmd is not None:
                self._execute(cmd)
                ran = True
                try:
                    cmd = self._cmds.get_nowait()
                except queue.Empty:
                    cmd = None
            if ran:
                self.engine.publish_stats()  # adds/aborts show up at once, even if the next step hangs
            if self.engine.has_unfinished_requests():
                self._step()
            if self._drain_deadline is not None and not self.drained.is_set():
                self._check_drain()

    def _check_drain(self) -> None:
        assert self._drain_deadline is not None
        if self._streams and time.monotonic() < self._drain_deadline:
            return
        if self._streams:
            log.warning("shutdown: grace period over, ending %d requests in flight", len(self._streams))
        self._fail_all(ShuttingDown("the server is shutting down; the request was not finished"))
        self.engine.publish_stats()
        self.drained.set()

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
            if self._streams.pop(arg, None) is not None:
                self.engine.abort_request(arg)
                self.metrics.aborted.inc()

    def _fail_all(self, error: Exception) -> None:
        for rid, stream in list(self._streams.items()):
            self.engine.abort_request(rid)
            self._streams.pop(rid, None)
            self.metrics.aborted.inc()
            stream.put(error)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:  # noqa: BLE001 - keep serving; fail only the requests in flight
            log.error("engine step failed; aborting %d requests:\n%s", len(self._streams), traceback.format_exc())
            self._fail_all(EngineDead(f"engine error: {e}"))
            self.engine.publish_stats()
            return
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if out.finished:
                self._streams.pop(out.request_id, None)
                self.metrics.observe_finished(out)
            if stream is not None:
                stream.put(out)
