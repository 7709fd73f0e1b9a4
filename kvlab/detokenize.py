"""Incremental detokenization: each step decodes only the tokens it added, not the whole output.

Re-decoding a sequence's whole output at every step costs O(length) per step, O(length^2) per
streamed response. :class:`IncrementalDetokenizer` keeps two offsets into the sequence's output
ids (the scheme vLLM and TGI use): ``prefix`` marks a few tokens of context before ``read``, the
first token whose text has not been emitted yet. Each step decodes ``ids[prefix:]`` and
``ids[prefix:read]`` — a handful of tokens — and emits the difference. Decoding a short window
with its left context keeps tokenizer-specific joins (leading spaces, byte-level merges) right.

A character whose UTF-8 bytes are split across tokens decodes to U+FFFD until its last byte
arrives; while the window ends in U+FFFD nothing is emitted and the offsets stay, so the
character comes out whole one step later. At the end (:meth:`flush`) whatever is left is
emitted as the full decode would show it, so the accumulated text always equals
``decode(all ids)`` for byte-level BPE tokenizers such as SmolLM2's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text of one sequence's output, extended as tokens arrive. Mutated by :meth:`update`."""

    def __init__(self, decode: Decode) -> None:
        self.decode = decode
        self.text = ""
        self.prefix = 0  # start of the context window
        self.read = 0  # first token whose text is not in ``self.text`` yet
        self.last_id: int | None = None  # ids[read - 1], to notice a sequence that was rewritten

    def matches(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` still extends what was decoded (else the caller starts a new one)."""
        return len(ids) >= self.read and (self.read == 0 or ids[self.read - 1] == self.last_id)

    def update(self, ids: Sequence[int], final: bool = False) -> str:
        """Bring :attr:`text` up to ``ids`` (the whole output so far); returns the new text."""
        if len(ids) <= self.read and not final:
            return ""
        window = self.decode(ids[self.prefix:])
        before = self.decode(ids[self.prefix:self.read]) if self.read > self.prefix else ""
        if not final and (window.endswith(REPLACEMENT) or len(window) < len(before)):
            return ""  # an incomplete character (or a join still settling): wait for more tokens
        new = window[len(before):]
        self.text += new
        self.prefix, self.read = self.read, len(ids)
        self.last_id = ids[-1] if ids else None
        return new
