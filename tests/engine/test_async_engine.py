"""``AsyncEngine`` serves requests whether its loop runs in its own thread (``start``) or in the
caller's (``run``, what ``kvlab.serve`` does on the main thread), and stops on request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kvlab.request import SamplingParams
from kvlab.request_output import RequestOutput
from kvlab.server.async_engine import AsyncEngine


async def generate(ae: AsyncEngine, prompt: list[int], max_tokens: int) -> RequestOutput:
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    _, stream = await ae.add(lambda e, _waited: e.add_request(prompt, sp).request_id)
    out = await stream.get()
    while not out.finished:  # drain the per-step outputs up to the final one
        out = await stream.get()
    return out


@pytest.mark.parametrize("where", ["own thread", "caller's thread"])
def test_serves_from_either_thread(engine_factory, where: str) -> None:
    engine, _ = engine_factory()
    ae = AsyncEngine(engine)

    async def two_clients() -> list[RequestOutput]:
        return list(await asyncio.gather(generate(ae, [1, 2, 3], 4), generate(ae, [4, 5], 6)))

    if where == "own thread":
        ae.start()
        outs = asyncio.run(two_clients())
        ae.shutdown()
    else:  # the engine loop here, the clients' event loop in another thread
        box: dict[str, list[RequestOutput]] = {}
        clients = threading.Thread(target=lambda: box.update(outs=asyncio.run(two_clients())))
        clients.start()
        ae.run(keep_going=clients.is_alive)
        clients.join()
        outs = box["outs"]
    assert [len(o.outputs[0].token_ids) for o in outs] == [4, 6]
    assert engine.allocator.num_free_blocks() == engine.allocator.num_blocks


def test_request_stop_ends_an_idle_loop(engine_factory) -> None:
    engine, _ = engine_factory()
    ae = AsyncEngine(engine)
    threading.Timer(0.2, ae.request_stop).start()
    t = time.monotonic()
    ae.run()  # idle: blocks on the command queue, rechecking the stop flag every second
    assert time.monotonic() - t < 3.0
