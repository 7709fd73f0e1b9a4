"""The OpenAI wire protocol the server speaks: request bodies (pydantic) and the error body.

Request models accept every field the official ``openai`` client may send. Fields kvlab cannot
honour are accepted by the parser and then rejected with a 400 by :func:`check_unsupported` when
set to a non-default value, so a client learns which parameter is the problem. Unknown fields are
ignored (as vLLM does). kvlab extensions (``ignore_eos``, ``top_k``, ``min_tokens``,
``stop_token_ids``) travel in the client's ``extra_body``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class OpenAIError(Exception):
    """An error the API returns as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # accepted by the parser, rejected unless at their default (see check_unsupported)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # kvlab / vLLM extensions (extra_body)
    ignore_eos: bool = False
    top_k: int = -1
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None


class CompletionRequest(GenerationRequest):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    add_generation_prompt: bool = True


def check_unsupported(req: GenerationRequest) -> None:
    """Raise a 400 :class:`OpenAIError` naming the first parameter kvlab does not implement."""
    rules: list[tuple[str, bool, str]] = [
        ("presence_penalty", bool(req.presence_penalty), "presence_penalty is not supported (use 0)"),
        ("frequency_penalty", bool(req.frequency_penalty), "frequency_penalty is not supported (use 0)"),
        ("logit_bias", bool(req.logit_bias), "logit_bias is not supported"),
    ]
    if isinstance(req, CompletionRequest):
        rules += [
            ("echo", req.echo, "echo is not supported"),
            ("suffix", req.suffix is not None, "suffix is not supported"),
            ("best_of", req.best_of not in (None, req.n), "best_of other than n is not supported"),
        ]
    if isinstance(req, ChatCompletionRequest):
        fmt = (req.response_format or {}).get("type", "text")
        rules += [
            (
                "tools",
                bool(req.tools) or req.tool_choice not in (None, "none"),
                "tool calling is not supported",
            ),
            ("functions", bool(req.functions), "function calling is not supported"),
            (
                "response_format",
                fmt != "text",
                f"response_format type {fmt!r} is not supported (only 'text')",
            ),
            (
                "top_logprobs",
                req.top_logprobs is not None and not req.logprobs,
                "top_logprobs needs logprobs=true",
            ),
        ]
    for param, bad, msg in rules:
        if bad:
            raise OpenAIError(400, msg, param=param, code="unsupported_parameter")
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else req.stop
        if any(s == "" for s in stops):
            raise OpenAIError(400, "stop strings must be non-empty", param="stop")


def stop_list(stop: str | list[str] | None) -> list[str]:
    return [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


FinishReason = Literal["stop", "length", "abort"]
