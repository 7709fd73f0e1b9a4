"""Hypothesis strategies built from the server's own request schema (pydantic's JSON schema of
:class:`~kvlab.server.protocol.CompletionRequest` / ``ChatCompletionRequest``), no extra library.

:func:`from_schema` turns a JSON-schema node into a strategy for values that match it, biased
towards the edges that break servers (huge and negative integers, NaN-free extremes, empty and
odd strings, control tokens, lone surrogates); :func:`request_bodies` mixes schema-valid bodies
with bodies where a field holds a value of the wrong type. ``overrides`` pins fields whose valid
range would make a test slow (e.g. long generations).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MAX_INT = 2**70
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-MAX_INT, MAX_INT),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                        max_leaves=8)
INTS = st.one_of(st.integers(-3, 8), st.integers(-MAX_INT, MAX_INT), st.sampled_from([0, 1, 2**31, 2**63, 2**64]))
NUMBERS = st.one_of(st.floats(-3, 3, allow_nan=False), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, 1.0, 2.0, -0.0, 1e308]))
ODD_TEXT = st.sampled_from(["", " ", "<|im_end|>", "<|im_start|>system\n", "<|endoftext|>", "\x00", "\ud800",
                            "a\udfffb", "🌊" * 3, "中文", "\\", '"', "\n\n", "user", "assistant"])
STRINGS = st.one_of(st.text(max_size=20), ODD_TEXT)


def from_schema(node: dict[str, Any], defs: dict[str, Any], overrides: dict[str, st.SearchStrategy] | None = None,
                depth: int = 0) -> st.SearchStrategy:
    """Values matching one JSON-schema node (``$ref``, ``anyOf``, ``type``, ``items``, ``properties``)."""
    overrides = overrides or {}
    if "$ref" in node:
        return from_schema(defs[node["$ref"].split("/")[-1]], defs, overrides, depth)
    if "anyOf" in node:
        return st.one_of(*(from_schema(n, defs, overrides, depth) for n in node["anyOf"]))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "string":
        return STRINGS
    if kind == "integer":
        return INTS
    if kind == "number":
        return NUMBERS
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(node.get("items", {}), defs, overrides, depth + 1) if node.get("items") else JSON_SCALARS
        return st.lists(items, min_size=node.get("minItems", 0), max_size=max(node.get("minItems", 0), 4))
    if kind == "object":
        props = node.get("properties")
        if props is None:
            extra = node.get("additionalProperties")
            values = from_schema(extra, defs, overrides, depth + 1) if isinstance(extra, dict) else JSON_SCALARS
            return st.dictionaries(st.text(max_size=6), values, max_size=3)
        required = set(node.get("required", []))
        strat = {k: overrides.get(k, from_schema(v, defs, {}, depth + 1)) for k, v in props.items()}
        return st.fixed_dictionaries({k: s for k, s in strat.items() if k in required},
                                     optional={k: s for k, s in strat.items() if k not in required})
    return ANY_JSON  # no type: anything


def request_bodies(model_cls: type, overrides: dict[str, st.SearchStrategy],
                   plausible: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Schema-valid bodies of ``model_cls``, the same with one field replaced by any JSON, and (as
    often as both together) ``plausible`` bodies — mostly-servable ones a test supplies so that
    the fuzz reaches the engine, not only the validators."""
    schema = model_cls.model_json_schema()
    valid = from_schema(schema, schema.get("$defs", {}), overrides)
    names = sorted(schema["properties"])

    @st.composite
    def corrupted(draw: st.DrawFn) -> dict[str, Any]:
        body = dict(draw(valid))
        body[draw(st.sampled_from(names))] = draw(ANY_JSON)
        return body

    if plausible is None:
        return st.one_of(valid, valid, corrupted())
    return st.one_of(valid, corrupted(), plausible, plausible)
