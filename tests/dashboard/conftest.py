"""Fixtures shared with the server tests (SmolLM2's real tokenizer, no weights)."""

from tests.server.conftest import tokenizer  # noqa: F401
