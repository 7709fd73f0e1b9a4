"""Trace files the user names with ``workload.path`` (nothing is downloaded).

Formats, chosen by content:

* ShareGPT JSON: a list of ``{"conversations": [{"from": "human", "value": ...},
  {"from": "gpt", "value": ...}, ...]}``. Like ``vllm bench``: the first human turn is the prompt,
  the reply after it gives the output length. Needs a tokenizer.
* JSONL (or a JSON list of the same objects), one request per record, any of:
  ``{"prompt_len": int, "output_len": int}`` (lengths only; synthetic prompt ids, no tokenizer),
  ``{"prompt": str, "output_len": int}``, ``{"prompt": str, "completion": str}`` (tokenizer
  needed), or ``{"prompt_token_ids": [...], "output_len": int}``. A record with both text and
  lengths uses the text when a tokenizer is given, else the lengths (synthetic ids, text dropped).

Records that fail the length filter are dropped; the rest are shuffled (``shuffle``) and, like the
paper's trace generator, repeated in that order if more requests are asked for than remain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise WorkloadError(f"workload.path: trace file not found: {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise WorkloadError(f"workload.path: cannot parse {str(path)!r} as JSON/JSONL: {e}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise WorkloadError(f"workload.path: {str(path)!r} must hold a list of JSON objects")
    return records


def _encode(ctx: WorkloadContext, text: str, path: Path) -> list[int]:
    if ctx.tokenizer is None:
        raise WorkloadError(
            f"workload.path: {str(path)!r} holds text; pass a tokenizer (approximate lengths are not "
            "used), or give a file with prompt_len/output_len records"
        )
    return list(ctx.tokenizer.encode(text))


def _body(rec: dict[str, Any], ctx: WorkloadContext, path: Path, i: int) -> RequestBody | None:
    """One record -> a request body; ``None`` when the record has no usable request."""
    where = f"workload.path: {str(path)!r} record {i}"
    if "conversations" in rec:
        turns = rec["conversations"]
        for j in range(len(turns) - 1):
            if turns[j].get("from") == "human" and turns[j + 1].get("from") in ("gpt", "chatgpt"):
                prompt = str(turns[j].get("value", ""))
                ids = _encode(ctx, prompt, path)
                out = len(_encode(ctx, str(turns[j + 1].get("value", "")), path))
                return RequestBody(len(ids), out, ids, prompt, [{"role": "user", "content": prompt}])
        return None
    if "output_len" in rec:
        output_len = int(rec["output_len"])
    elif "completion" in rec:
        output_len = len(_encode(ctx, str(rec["completion"]), path))
    else:
        raise WorkloadError(f"{where}: needs output_len or completion (keys: {sorted(rec)})")
    if "prompt_token_ids" in rec:
        ids = [int(t) for t in rec["prompt_token_ids"]]
        return RequestBody(len(ids), output_len, ids)
    if "prompt" in rec and (ctx.tokenizer is not None or "prompt_len" not in rec):
        prompt = str(rec["prompt"])
        ids = _encode(ctx, prompt, path)
        return RequestBody(len(ids), output_len, ids, prompt, [{"role": "user", "content": prompt}])
    if "prompt_len" in rec:  # lengths win when there is no tokenizer; ids are synthesised later
        return RequestBody(int(rec["prompt_len"]), output_len)
    raise WorkloadError(f"{where}: needs prompt, prompt_token_ids or prompt_len (keys: {sorted(rec)})")


def load_file(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    if not params.get("path"):
        raise WorkloadError("workload.path must name a local trace file (ShareGPT JSON or JSONL)")
    path = Path(str(params["path"])).expanduser()
    bodies = []
    for i, rec in enumerate(_read_records(path)):
        b = _body(rec, ctx, path, i)
        if b is not None and ctx.fits(b.prompt_len, b.output_len):
            bodies.append(b)
    if not bodies:
        raise WorkloadError(f"workload.path: no request in {str(path)!r} passes the length filter "
                            f"(max_prompt_len={ctx.max_prompt_len}, max_total_len={ctx.max_total_len})")
    if params.get("shuffle", True):
        order = ctx.rng("file").permutation(len(bodies))
        bodies = [bodies[k] for k in order]
    tok_rng = ctx.rng("tokens")
    out = []
    for k in range(num):
        b = bodies[k % len(bodies)]
        ids = b.prompt_token_ids if b.prompt_token_ids is not None else ctx.random_token_ids(
            tok_rng, b.prompt_len)
        out.append(RequestBody(b.prompt_len, b.output_len, list(ids), b.prompt, b.messages))
    return out
