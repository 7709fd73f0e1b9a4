"""Serving one generation request: validate, enqueue on the engine thread, stream or collect.

Both ``/v1/completions`` and ``/v1/chat/completions`` go through :class:`Serving`: request
fields become :class:`~kvlab.request.SamplingParams` (errors -> 400 naming the parameter), the
prompt is tokenized and length-checked on the engine thread (prompt + max_tokens must fit the
model's maximum length), and the handler then either streams SSE chunks or waits for the final
output. Any way a handler ends before its request finished (client disconnect, cancellation,
error) aborts the request, which frees its blocks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from kvlab.request_output import RequestOutput
from kvlab.server.async_engine import AsyncEngine, EngineDead, RequestStream
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

    async def submit(
        self, prompt: str | list[int], params: SamplingParams, max_tokens_given: bool, prefix: str
    ) -> tuple[str, RequestStream]:
        """Tokenize, check lengths and add the request on the engine thread."""
        rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
        arrival = None if self.engine.engine.virtual_time else self.engine.engine.now()
        limit, vocab = self.max_model_len, self.vocab_size

        def add(engine: LLMEngine) -> str:
            if isinstance(prompt, str):
                if engine.tokenizer is None:
                    raise OpenAIError(400, "this model has no tokenizer: send token ids", param="prompt")
                ids = engine.tokenizer.encode(prompt)
            else:
                ids = prompt
            if not ids:
                raise OpenAIError(400, "the prompt is empty", param="prompt")
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise OpenAIError(
                    400, f"token id {bad} is outside the vocabulary [0, {vocab})", param="prompt"
                )
            if not max_tokens_given:
                params.max_tokens = max(limit - len(ids), 1)
            if len(ids) + params.max_tokens > limit:
                raise OpenAIError(
                    400,
                    f"This model's maximum context length is {limit} tokens. However, you requested "
                    f"{len(ids) + params.max_tokens} tokens ({len(ids)} in the prompt, "
                    f"{params.max_tokens} in the completion). Please reduce the prompt or max_tokens.",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
            try:
                engine.add_request(ids, params, request_id=rid, arrival_time=arrival)
            except ValueError as e:
                raise OpenAIError(400, str(e), param="prompt") from None
            return rid

        return await self.engine.add(add)

    async def collect(self, rid: str, stream: RequestStream, http: HttpRequest) -> RequestOutput:
        """Wait for the final output; abort if the client disconnects or the handler is cancelled."""
        try:
            while True:
                try:
                    out = await asyncio.wait_for(stream.get(), timeout=1.0)
                except TimeoutError:
                    if await http.is_disconnected():
                        raise ClientGone(rid) from None
                    continue
                if out.finished:
                    break
        except BaseException:
            self.engine.abort(rid)
            raise
        if any(o.finish_reason == "abort" for o in out.outputs):
            raise OpenAIError(
                400,
                "the request cannot fit in the server's KV cache (prompt x n too large)",
                param="n",
                code="kv_capacity_exceeded",
            )
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
        before any text of choice i (chat's role delta)."""
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
        except EngineDead as e:
            finished = True  # the engine already aborted it
            yield sse(error_body(str(e), "server_error"))
            yield DONE
        finally:
            if not finished:
                self.engine.abort(rid)


def envelope(prefix: str, obj: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
    }
