"""Incremental detokenization with SmolLM2's real tokenizer: streamed pieces concatenate to the full
decode, multi-byte characters split across tokens come out whole, and each update decodes only a
short window (not the whole output)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.detokenize import IncrementalDetokenizer
from kvlab.models.loader import load_tokenizer

TEXTS = [
    "Hello, world! The ocean is deep.",
    "emoji 👩‍💻🚀🌊 and flags 🇫🇷🇯🇵 mixed with text",
    "中文测试：海洋很深。日本語のテキスト、한국어 문장도 있습니다。",
    "ÀÉÎÕÜ ñ ß — “quotes” … €100 ≠ ∞",
    "code:\n\tdef f(x):\n\t\treturn x ** 2  # 🙂\n",
]


@pytest.fixture(scope="module")
def tok(smol_dir: Path):
    t = load_tokenizer(smol_dir)
    assert t is not None
    return t


def stream(tok, ids: list[int]) -> tuple[list[str], IncrementalDetokenizer]:
    d = IncrementalDetokenizer(lambda x: tok.decode(x, skip_special_tokens=True))
    pieces = [d.update(ids[: i + 1]) for i in range(len(ids))]
    pieces.append(d.update(ids, final=True))
    return pieces, d


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_full_decode(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    pieces, d = stream(tok, ids)
    assert "".join(pieces) == d.text == tok.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in p for p in pieces)  # a split character is never sent half-done


def test_characters_really_are_split_across_tokens(tok) -> None:
    """The texts above exercise the hard case: some prefix of their ids decodes to U+FFFD."""
    split = 0
    for text in TEXTS[1:3]:
        ids = tok.encode(text, add_special_tokens=False)
        split += sum(tok.decode(ids[:i]).endswith("\ufffd") for i in range(1, len(ids)))
    assert split >= 3


def test_each_update_decodes_a_short_window(tok) -> None:
    ids = tok.encode(" ".join(TEXTS) * 8, add_special_tokens=False)
    lengths: list[int] = []

    def decode(x: list[int]) -> str:
        lengths.append(len(x))
        return tok.decode(x, skip_special_tokens=True)

    d = IncrementalDetokenizer(decode)
    for i in range(len(ids)):
        d.update(ids[: i + 1])
    assert len(ids) > 500 and max(lengths) <= 8
    assert d.update(ids, final=True) == "" and d.text == tok.decode(ids)


def test_special_tokens_are_skipped_like_the_full_decode(tok) -> None:
    ids = tok.encode("a<|im_end|><|im_end|>b", add_special_tokens=False)
    pieces, d = stream(tok, ids)
    assert d.text == tok.decode(ids, skip_special_tokens=True) == "ab"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 49151), min_size=1, max_size=40))
def test_any_token_sequence_ends_equal_to_the_full_decode(tok, ids: list[int]) -> None:
    _, d = stream(tok, ids)
    assert d.text == tok.decode(ids, skip_special_tokens=True)


def test_a_rewritten_sequence_is_noticed(tok) -> None:
    a = tok.encode("one two three", add_special_tokens=False)
    b = tok.encode("four five", add_special_tokens=False)
    _, d = stream(tok, a)
    assert d.matches(a + b) and not d.matches(b + b) and not d.matches(a[:2])
