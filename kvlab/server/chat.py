"""``/v1/chat/completions``: messages through the model's chat template, chat-shaped responses.

The conversation is rendered to text with the tokenizer's chat template (with the generation
prompt) and then served exactly like a completion. Messages are checked first: the role must be
one of :data:`ROLES`, and no role, name or content may contain one of the tokenizer's special
tokens (``<|im_end|>`` ...), which would let a message close its turn and forge another one in the
rendered prompt (400 naming the message); responses and stream chunks take the chat
shapes (``message`` / ``delta`` with the assistant role, ``logprobs.content``).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request as HttpRequest

from kvlab.server.generate import ClientGone, Serving, build_params, envelope
from kvlab.server.outputs import ChoiceCursor, Delta, usage
from kvlab.server.protocol import ChatCompletionRequest, OpenAIError

ROLES = ("system", "developer", "user", "assistant", "tool")


def _text(content: str | list[dict[str, Any]] | None, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(
                400,
                f"messages[{i}]: only text content parts are supported",
                param=f"messages.{i}.content",
                code="unsupported_parameter",
            )
        parts.append(part["text"])
    return "".join(parts)


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special-token strings (template control tokens such as ``<|im_end|>``)."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            found.add(str(tok))
    return tuple(sorted(t for t in found if t))


def _check_message(i: int, role: str, name: str | None, text: str, controls: tuple[str, ...]) -> None:
    if role not in ROLES:
        raise OpenAIError(400, f"messages[{i}].role {role[:40]!r} is not one of: {', '.join(ROLES)}",
                          param=f"messages.{i}.role")
    for field, value in (("name", name), ("content", text)):
        if value and any(c in value for c in controls):
            tok = next(c for c in controls if c in value)
            raise OpenAIError(400, f"messages[{i}].{field} contains the control token {tok!r}, which the chat "
                              "template reserves", param=f"messages.{i}.{field}")


def chat_prompt(tokenizer: Any, body: ChatCompletionRequest) -> str:
    """The conversation rendered by the chat template (400 if a message or the template rejects it)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise OpenAIError(400, "this model has no chat template: use /v1/completions", param="messages")
    controls = control_tokens(tokenizer)
    msgs = []
    for i, m in enumerate(body.messages):
        text = _text(m.content, i)
        _check_message(i, m.role, m.name, text, controls)
        msgs.append({"role": m.role, "content": text})
    try:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=body.add_generation_prompt
        )
    except Exception as e:  # noqa: BLE001 - jinja raises many kinds; all are the client's input
        raise OpenAIError(400, f"the chat template rejected the messages: {e}", param="messages") from None


async def chat_response(
    serving: Serving, body: ChatCompletionRequest, prompt: str, request: HttpRequest
) -> Any:
    """Serve a rendered chat prompt: a StreamingResponse (SSE) or the final JSON body."""
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    top_k = body.top_logprobs or 0
    if not 0 <= top_k <= 20:
        raise OpenAIError(400, f"top_logprobs must be in 0..20, got {top_k}", param="top_logprobs")
    try:
        params = build_params(body, max_tokens, top_k if body.logprobs else None)
    except OpenAIError as e:
        e.param = param if e.param == "max_tokens" else e.param
        raise
    rid, stream = await serving.submit(prompt, params, max_tokens is not None, "chatcmpl")
    env = {**envelope("chatcmpl", "chat.completion.chunk", serving.model_name), "id": rid}

    def logprobs(ids: list[int], lps: list[dict[int, float]]) -> dict[str, Any] | None:
        return serving.fmt.chat(ids, lps, top_k) if body.logprobs else None

    def first(i: int) -> dict[str, Any]:
        return {
            "index": i,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }

    def choice(i: int, d: Delta, cur: ChoiceCursor) -> dict[str, Any]:
        delta = {"content": d.text} if d.text or d.finish_reason is None else {}
        return {
            "index": i,
            "delta": delta,
            "logprobs": logprobs(d.token_ids, d.logprobs),
            "finish_reason": d.finish_reason,
        }

    if body.stream:
        return StreamingResponse(
            serving.stream(rid, stream, body, env, choice, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        out = await serving.collect(rid, stream, request)
    except ClientGone:
        return Response(status_code=499)
    choices = [
        {
            "index": o.index,
            "message": {"role": "assistant", "content": o.text},
            "logprobs": logprobs(o.token_ids, o.logprobs or []),
            "finish_reason": o.finish_reason,
        }
        for o in out.outputs
    ]
    return {**env, "object": "chat.completion", "choices": choices, "usage": usage(out)}
