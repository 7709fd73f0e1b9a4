"""The FastAPI app: OpenAI-compatible routes plus ``/health`` and ``/metrics``.

``create_app(serving, api_key)`` wires routes to a :class:`~kvlab.server.generate.Serving`.
Bodies are parsed by hand (not by FastAPI's signature magic) so that malformed JSON and wrong
types become OpenAI-style 400 errors rather than FastAPI's 422. Every error — ours, routing
(404/405) or unexpected (500) — leaves in OpenAI's ``{"error": {...}}`` body. When ``api_key``
is set, the ``/v1`` routes need ``Authorization: Bearer <key>``; ``/health`` and ``/metrics``
stay open (as in vLLM) so probes and scrapers need no secret.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

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


async def parse_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model``; malformed JSON or a wrong field raises a 400 naming it."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenAIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise OpenAIError(400, f"invalid value for {param}: {err['msg']}", param=param) from None


def create_app(serving: Serving, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="kvlab", docs_url=None, redoc_url=None)
    engine = serving.engine

    async def auth(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, e: OpenAIError) -> JSONResponse:
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
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": serving.model_name, **engine.snapshot}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

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
        body = await parse_body(request, CompletionRequest)
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
        body = await parse_body(request, ChatCompletionRequest)
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
