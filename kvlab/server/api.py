"""The FastAPI app: OpenAI-compatible routes plus ``/health`` and ``/metrics``.

``create_app(serving, options)`` wires routes to a :class:`~kvlab.server.generate.Serving`.
Bodies are parsed by hand (not by FastAPI's signature magic) so that every malformed input —
invalid JSON, nesting deeper than :data:`MAX_DEPTH`, lone UTF-16 surrogates, wrong types, a body
over ``max_body_bytes`` (413) — becomes an OpenAI-style 4xx naming the problem, never a 500.
Every error — ours, routing (404/405) or unexpected (500) — leaves in OpenAI's ``{"error":
{...}}`` body. When an API key is set, every route needs ``Authorization: Bearer <key>`` except
``/health``, ``/metrics`` and the ``/dashboard`` routes (probes, scrapers and the block-map page
need no secret; the page shows ids and counts, no text); ``/openapi.json`` needs the key too.
``/health`` and ``/metrics`` read only the engine's published
:class:`~kvlab.engine_stats.EngineStats`, so they answer at once even during a long step.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kvlab.dashboard.live import LiveBlockMap
from kvlab.dashboard.routes import add_live_routes
from kvlab.server.async_engine import EngineDead
from kvlab.server.chat import chat_prompt, chat_response
from kvlab.server.generate import ClientGone, Serving, build_params, envelope
from kvlab.server.outputs import ChoiceCursor, Delta, usage
from kvlab.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    check_unsupported,
    error_body,
)

log = logging.getLogger("kvlab.serve")
M = TypeVar("M", bound=BaseModel)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_DEPTH = 32  # JSON nesting a request may use (the deepest real field is 4 levels down)
SURROGATE = re.compile("[\ud800-\udfff]")
OPEN_ROUTES = ("/health", "/metrics")  # the routes that never need the API key


@dataclass
class ServerOptions:
    """HTTP-side limits and policies (``server.*`` in conf/serve.yaml)."""

    api_key: str | None = None
    max_body_bytes: int = 4 << 20
    stall_timeout_s: float = 60.0
    dashboard: bool = True  # serve /dashboard (the live KV block map, docs/dashboard.md)
    dashboard_hz: float = 4.0  # at most this many block-map snapshots per second while watched


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or a 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"the request body ({int(declared)} bytes) exceeds the limit of {limit} bytes",
                          code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OpenAIError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def check_json(data: Any) -> None:
    """400 for nesting deeper than :data:`MAX_DEPTH` or a string with a lone surrogate (names where)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise OpenAIError(400, f"the request body is nested more than {MAX_DEPTH} levels deep",
                              param=path or None)
        if isinstance(node, str):
            if SURROGATE.search(node):
                raise OpenAIError(400, f"invalid value for {path}: the string contains a lone UTF-16 surrogate "
                                  "(not valid Unicode)", param=path or None)
        elif isinstance(node, dict):
            for k, v in node.items():
                key = f"{path}.{k}" if path else str(k)
                if SURROGATE.search(k):
                    raise OpenAIError(400, "a key of the request body contains a lone UTF-16 surrogate",
                                      param=path or None)
                stack.append((v, key, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{path}.{i}", depth + 1) for i, v in enumerate(node))


async def parse_body(request: Request, model: type[M], limit: int) -> M:
    """The JSON body as ``model``; any malformed body raises a 4xx naming the problem."""
    raw = await read_body(request, limit)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenAIError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise OpenAIError(400, f"the request body is nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    check_json(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise OpenAIError(400, f"invalid value for {param}: {err['msg']}", param=param) from None


def create_app(serving: Serving, options: ServerOptions | str | None = None) -> FastAPI:
    """The app; ``options`` may also be just the API key (or None: no key, default limits)."""
    opts = options if isinstance(options, ServerOptions) else ServerOptions(api_key=options)
    app = FastAPI(title="kvlab", docs_url=None, redoc_url=None, openapi_url=None)
    engine = serving.engine
    key = opts.api_key.encode() if opts.api_key else None

    async def auth(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: constant time in the key's content, so timing reveals nothing of it
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
            raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, e: OpenAIError) -> JSONResponse:
        if 400 <= e.status < 500:
            engine.metrics.rejected.labels(str(e.status)).inc()
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail), code=str(e.status_code)), status_code=e.status_code)

    @app.exception_handler(EngineDead)
    async def _engine_error(_: Request, e: EngineDead) -> JSONResponse:
        return JSONResponse(error_body(str(e), "server_error"), status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body(f"internal error: {e.__class__.__name__}", "server_error"), status_code=500
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        s, now = engine.stats, time.time()
        stalled_s = s.seconds_without_progress(now)
        status = "draining" if engine.draining else "stalled" if stalled_s > opts.stall_timeout_s else "ok"
        body = {
            "status": status,
            "model": serving.model_name,
            "timestamp": s.published_at,  # wall time of the engine snapshot the figures come from
            "age_s": max(now - s.published_at, 0.0),
            "last_step_at": s.last_step_at,
            "seconds_without_progress": stalled_s,
            "stall_timeout_s": opts.stall_timeout_s,
            "step": s.step,
            "num_blocks": s.kv.total_blocks,
            "free_blocks": s.kv.free_blocks,
            "block_size": s.kv.block_size,
            "running": s.running,
            "waiting": s.waiting,
            "swapped": s.swapped,
            "num_preemptions": s.num_preemptions,
            "in_flight": engine.in_flight,
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    if opts.dashboard:  # open like /metrics: block ids, request ids and counts, no text
        live = LiveBlockMap(str(engine.engine.cfg["allocator"]["name"]), opts.dashboard_hz)
        engine.engine.stats_listeners.append(live)  # runs on the engine thread; idle unless watched
        app.state.dashboard = live
        add_live_routes(app, live, engine.call, stopping=lambda: engine.draining)

    @app.get("/openapi.json", dependencies=[Depends(auth)], include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": serving.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "kvlab",
                    "max_model_len": serving.max_model_len,
                }
            ],
        }

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(request: Request) -> Any:
        serving.check_open()
        body = await parse_body(request, CompletionRequest, opts.max_body_bytes)
        serving.check_model(body.model)
        check_unsupported(body)
        prompt = _single_prompt(body.prompt)
        params = build_params(body, body.max_tokens, body.logprobs)
        rid, stream = await serving.submit(prompt, params, body.max_tokens is not None, "cmpl")
        env = {**envelope("cmpl", "text_completion", serving.model_name), "id": rid}
        want_lp = body.logprobs is not None

        def choice(i: int, d: Delta, cur: ChoiceCursor) -> dict[str, Any]:
            lp = None
            if want_lp:
                lp, cur.text_offset = serving.fmt.completion(d.token_ids, d.logprobs, cur.text_offset)
            return {"index": i, "text": d.text, "logprobs": lp, "finish_reason": d.finish_reason}

        if body.stream:
            return StreamingResponse(
                serving.stream(rid, stream, body, env, choice),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        try:
            out = await serving.collect(rid, stream, request)
        except ClientGone:
            return Response(status_code=499)
        choices = []
        for o in out.outputs:
            lp = serving.fmt.completion(o.token_ids, o.logprobs or [], 0)[0] if want_lp else None
            choices.append(
                {"index": o.index, "text": o.text, "logprobs": lp, "finish_reason": o.finish_reason}
            )
        return {**env, "choices": choices, "usage": usage(out)}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat_completions(request: Request) -> Any:
        serving.check_open()
        body = await parse_body(request, ChatCompletionRequest, opts.max_body_bytes)
        serving.check_model(body.model)
        check_unsupported(body)
        return await chat_response(serving, body, chat_prompt(serving.tokenizer, body), request)

    return app


def _single_prompt(prompt: Any) -> str | list[int]:
    """``prompt`` as one string or one token-id list (a batch of one is unwrapped)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise OpenAIError(
                400,
                "batched prompts are not supported: send one prompt per request",
                param="prompt",
                code="unsupported_parameter",
            )
        prompt = prompt[0]
    if isinstance(prompt, list) and not prompt:
        raise OpenAIError(400, "the prompt is empty", param="prompt")
    return prompt
