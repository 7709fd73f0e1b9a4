"""Serving one generation request: validate, tokenize, enqueue on the engine thread, stream or collect.

Both ``/v1/completions`` and ``/v1/chat/completions`` go through :class:`Serving`: request
fields become :class:`~kvlab.request.SamplingParams` (errors -> 400 naming the parameter); the
prompt is tokenized on a worker thread of the HTTP side (never on the engine thread, so a huge
prompt delays only itself) and length-checked (prompt + max_tokens must fit the model's maximum
length); then the request is added on the engine thread and the handler either streams SSE
chunks or waits for the final output. Any way a handler ends before its request finished
(client disconnect — streamed or not —, cancellation, error) aborts the request, which frees its
blocks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from kvlab.request_output import RequestOutput
from kvlab.server.async_engine import AsyncEngine, EngineDead, RequestStream, ShuttingDown
from kvlab.server.outputs import DONE, ChoiceCursor, Delta, LogprobFormatter, next_delta, sse, usage
from kvlab.server.protocol import GenerationRequest, OpenAIError, error_body, stop_list

MAX_N = 64  # parallel samples per request (each is a sequence in the batch)
# chunk(choice index, delta, cursor) -> the choice object of one streamed chunk
ChoiceFn = Callable[[int, Delta, ChoiceCursor], dict[str, Any]]


class ClientGone(Exception):
    """The client disconnected while waiting for a non-streamed response."""


def build_params(body: GenerationRequest, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
    """SamplingParams from the request; a bad value raises a 400 naming the parameter."""
    if max_tokens is not None and max_tokens < 1:
        raise OpenAIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    if not 1 <= body.n <= MAX_N:
        raise OpenAIError(400, f"n must be in 1..{MAX_N}, got {body.n}", param="n")
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0 <= temperature <= 2:
        raise OpenAIError(400, f"temperature must be in [0, 2], got {temperature}", param="temperature")
    try:
        return SamplingParams(
            n=body.n,
            max_tokens=max_tokens or 1,
            min_tokens=body.min_tokens,
            ignore_eos=body.ignore_eos,
            temperature=temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            stop=stop_list(body.stop),
            stop_token_ids=list(body.stop_token_ids or []),
            logprobs=logprobs,
        )
    except ValueError as e:
        msg = str(e).removeprefix("invalid SamplingParams: ")
        raise OpenAIError(400, msg, param=msg.split()[0]) from None


@dataclass
class Serving:
    engine: AsyncEngine
    model_name: str
    max_model_len: int
    vocab_size: int
    tokenizer: Any

    def __post_init__(self) -> None:
        self.fmt = LogprobFormatter(self.tokenizer)

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise OpenAIError(
                404,
                f"The model `{name}` does not exist. This server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )

    def check_open(self) -> None:
        """503 once a graceful shutdown has begun (new requests go elsewhere)."""
        if self.engine.draining:
            raise OpenAIError(503, "the server is shutting down", code="server_shutting_down",
                              type_="service_unavailable")

    async def tokenize(self, prompt: str | list[int]) -> list[int]:
        """Token ids of ``prompt``, encoded on a worker thread (the fast tokenizer releases the GIL)."""
        if not isinstance(prompt, str):
            return list(prompt)
        if self.tokenizer is None:
            raise OpenAIError(400, "this model has no tokenizer: send token ids", param="prompt")
        try:
            return await asyncio.to_thread(self.tokenizer.encode, prompt)
        except Exception as e:  # noqa: BLE001 - whatever the tokenizer rejects is the client's input
            raise OpenAIError(400, f"the prompt cannot be tokenized: {e.__class__.__name__}",
                              param="prompt") from None

    def fit_to_vocab(self, params: SamplingParams) -> SamplingParams:
        """A copy of ``params`` checked against the vocabulary by the one rule
        (:meth:`SamplingParams.validate`): token ids outside it are a 400 naming the parameter,
        ``top_k`` above it means "no top-k" and is clamped."""
        params = dataclasses.replace(params)  # validate(vocab_size) clamps top_k in place
        try:
            params.validate(self.vocab_size)
        except ValueError as e:
            param = "stop_token_ids" if "stop_token_ids" in str(e) else None
            raise OpenAIError(400, str(e).removeprefix("invalid SamplingParams: "), param=param) from None
        return params

    async def submit(
        self, prompt: str | list[int], params: SamplingParams, max_tokens_given: bool, prefix: str
    ) -> tuple[str, RequestStream]:
        """Tokenize (off the engine thread), check lengths, then add the request on the engine thread."""
        self.check_open()
        rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
        ids = await self.tokenize(prompt)
        limit, vocab = self.max_model_len, self.vocab_size
        if not ids:
            raise OpenAIError(400, "the prompt is empty", param="prompt")
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise OpenAIError(400, f"token id {bad} is outside the vocabulary [0, {vocab})", param="prompt")
        params = self.fit_to_vocab(params)
        if not max_tokens_given:  # a fresh params object: nothing the engine holds is ever mutated
            params = dataclasses.replace(params, max_tokens=max(limit - len(ids), 1))
        if len(ids) + params.max_tokens > limit:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + params.max_tokens} tokens ({len(ids)} in the prompt, "
                f"{params.max_tokens} in the completion). Please reduce the prompt or max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        real_clock = not self.engine.engine.virtual_time

        def add(engine: LLMEngine, waited_s: float) -> str:
            # the arrival is back-dated by the time the command queued (engine clock, engine thread)
            arrival = engine.now() - waited_s if real_clock else None
            try:
                engine.add_request(ids, params, request_id=rid, arrival_time=arrival)
            except ValueError as e:
                raise add_error(str(e), params) from None
            return rid

        try:
            return await self.engine.add(add)
        except ShuttingDown:
            self.check_open()
            raise

    async def collect(self, rid: str, stream: RequestStream, http: HttpRequest) -> RequestOutput:
        """Wait for the final output; abort if the client disconnects or the handler is cancelled."""
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            while True:
                get = asyncio.ensure_future(stream.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    raise ClientGone(rid)
                out = get.result()
                if out.finished:
                    break
        except ShuttingDown as e:
            raise OpenAIError(503, str(e), code="server_shutting_down", type_="service_unavailable") from None
        except BaseException:
            self.engine.abort(rid)
            raise
        finally:
            gone.cancel()
        if any(o.finish_reason == "abort" for o in out.outputs):
            raise capacity_error(out, self.engine.stats.kv.total_slots)
        return out

    async def stream(
        self,
        rid: str,
        stream: RequestStream,
        body: GenerationRequest,
        chunk: dict[str, Any],
        choice: ChoiceFn,
        first: Callable[[int], dict[str, Any]] | None = None,
    ) -> AsyncIterator[str]:
        """SSE events: one chunk per new piece of a choice, optional usage chunk, ``[DONE]``.

        ``chunk`` is the envelope (id, object, created, model); ``first(i)`` the choice sent once
        before any text of choice i (chat's role delta). If the engine fails or the server shuts
        down first, the stream ends with an error event and ``[DONE]``."""
        holdback = max((len(s) for s in stop_list(body.stop)), default=1) - 1
        cursors: dict[int, ChoiceCursor] = {}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        finished = False
        try:
            out = None
            while not finished:
                out = await stream.get()
                finished = out.finished
                for o in out.outputs:
                    cur = cursors.setdefault(o.index, ChoiceCursor())
                    if first is not None and not cur.started:
                        cur.started = True
                        yield sse({**chunk, "choices": [first(o.index)]})
                    d = next_delta(cur, o, holdback)
                    if d is not None:
                        yield sse({**chunk, "choices": [choice(o.index, d, cur)]})
            if include_usage and out is not None:
                yield sse({**chunk, "choices": [], "usage": usage(out)})
            yield DONE
        except (EngineDead, ShuttingDown) as e:
            finished = True  # the engine thread already aborted it
            kind = "server_error" if isinstance(e, EngineDead) else "service_unavailable"
            yield sse(error_body(str(e), kind))
            yield DONE
        finally:
            if not finished:
                self.engine.abort(rid)


async def _disconnected(http: HttpRequest) -> None:
    """Returns when the client of a request whose body was already read disconnects."""
    while True:
        message = await http.receive()
        if message.get("type") == "http.disconnect":
            return


def add_error(message: str, params: SamplingParams) -> OpenAIError:
    """The 400 for a request the engine refused (``ValueError`` from ``add_request``), naming the
    parameter the message is about (the engine names it; ``prompt`` otherwise)."""
    low = message.lower()
    fits = any(w in low for w in ("never fit", "cannot fit", "kv cache", "kv pool", "blocks"))
    param = "prompt"
    for name in ("max_tokens", "beam_width", "top_k", "stop_token_ids", "min_tokens", "logprobs"):
        if name in low:
            param = name
            break
    else:
        if fits:
            param = "n" if params.num_seqs > 1 else "max_tokens"
    return OpenAIError(400, message, param=param, code="kv_capacity_exceeded" if fits else None)


def capacity_error(out: RequestOutput, capacity_tokens: int) -> OpenAIError:
    """The 400 for a request the scheduler dropped because it can never fit the KV cache."""
    n = len(out.outputs)
    prompt = len(out.prompt_token_ids)
    done = max((len(o.token_ids) for o in out.outputs), default=0)
    cause = (f"{n} sequences x ({prompt} prompt + {done} generated tokens so far)" if n > 1 else
             f"{prompt} prompt + {done} generated tokens")
    return OpenAIError(
        400,
        f"the request cannot fit in the server's KV cache ({capacity_tokens} token slots): it needed "
        f"more than {cause}; reduce max_tokens" + (" or n" if n > 1 else ""),
        param="n" if n > 1 else "max_tokens",
        code="kv_capacity_exceeded",
    )


def envelope(prefix: str, obj: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
    }
