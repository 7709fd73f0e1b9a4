"""Offline evaluation text and prompts for the accuracy phases.

* Perplexity text: the license texts every Debian/Ubuntu system ships in
  ``/usr/share/common-licenses`` (GPL-3 first, ~35k characters, then MPL-2.0, Apache-2.0,
  GFDL-1.3), concatenated and cut into contexts of a fixed number of tokens. Real English prose,
  available without a download; where the folder is missing the Python standard library's own
  ``LICENSE`` file stands in (both are named in the results).
* Greedy prompts: the instructions of ``workload=prompts`` in the model's chat template.
* Passkey prompts: a five-digit key hidden at a given depth in repetitive filler, then asked for.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlab.workloads.prompts import INSTRUCTIONS

LICENSE_DIR = Path("/usr/share/common-licenses")
LICENSE_FILES = ("GPL-3", "MPL-2.0", "Apache-2.0", "GFDL-1.3")


def eval_text_sources() -> list[Path]:
    """The text files perplexity is computed on, in order (see the module docstring)."""
    files = [LICENSE_DIR / n for n in LICENSE_FILES if (LICENSE_DIR / n).is_file()]
    if files:
        return files
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt"
    if stdlib.is_file():
        return [stdlib]
    raise FileNotFoundError(f"no evaluation text: neither {LICENSE_DIR} nor {stdlib} exists")


def eval_contexts(tokenizer: Any, context_tokens: int, num_contexts: int) -> tuple[list[list[int]], list[str]]:
    """``num_contexts`` consecutive, non-overlapping windows of ``context_tokens`` token ids of the
    evaluation text (each starting with the BOS token when the tokenizer has one), and the files used.

    Raises ``ValueError`` when the text is too short for the request."""
    files = eval_text_sources()
    text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    bos = getattr(tokenizer, "bos_token_id", None)
    body = context_tokens - (1 if bos is not None else 0)
    if body * num_contexts > len(ids):
        raise ValueError(f"the evaluation text has {len(ids)} tokens; {num_contexts} contexts of "
                         f"{context_tokens} need {body * num_contexts}")
    prefix = [bos] if bos is not None else []
    contexts = [prefix + ids[i * body:(i + 1) * body] for i in range(num_contexts)]
    return contexts, [str(p) for p in files]


def greedy_prompts(tokenizer: Any, num: int) -> list[list[int]]:
    """The first ``num`` instructions of ``workload=prompts``, chat-formatted, as token ids."""
    out = []
    for text in INSTRUCTIONS[:num]:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        out.append(list(tokenizer.encode(text)))
    return out


FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
QUESTION = "\nWhat is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyCase:
    """One retrieval prompt: ``key`` sits at ``depth`` (0 = start, 1 = end) of ``length`` tokens."""

    length: int
    depth: float
    key: str
    token_ids: list[int]


def passkey_cases(tokenizer: Any, lengths: list[int], depths: list[float], seed: int = 0) -> list[PasskeyCase]:
    """One case per (length, depth): filler around the sentence that states the key, then the question.
    Lengths are in tokens (the prompt is within a few tokens of it)."""
    rng = random.Random(seed)
    unit = list(tokenizer.encode(FILLER, add_special_tokens=False))
    question = list(tokenizer.encode(QUESTION, add_special_tokens=False))
    bos = getattr(tokenizer, "bos_token_id", None)
    cases = []
    for length in lengths:
        for depth in depths:
            key = str(rng.randint(10000, 99999))
            needle = list(tokenizer.encode(f" The pass key is {key}. Remember it. {key} is the pass key. ",
                                           add_special_tokens=False))
            room = length - len(needle) - len(question) - (1 if bos is not None else 0)
            if room < len(unit):
                raise ValueError(f"passkey length {length} is too short for the prompt (needs > "
                                 f"{length - room + len(unit)} tokens)")
            filler = (unit * (room // len(unit) + 1))[:room]
            cut = int(round(depth * room / len(unit))) * len(unit)  # at a sentence-group boundary
            cut = min(cut, room)
            ids = ([bos] if bos is not None else []) + filler[:cut] + needle + filler[cut:] + question
            cases.append(PasskeyCase(length, depth, key, ids))
    return cases
