"""Block-access traces: what a prefix cache is asked, independent of any policy.

A trace is a list of accesses, one per admission; an access is the chain of content ids of the
prompt's full blocks that a prefix cache could serve (``(num_tokens - 1) // block_size`` blocks;
the last token is always computed). A content id names a block's tokens AND everything before it
(ids are assigned to ``(parent id, block tokens)`` pairs), exactly as the hash index's keys do,
so equal ids mean reusable KV.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BlockTrace:
    """Accesses (lists of content ids, parent first) plus, per id, its parent id (-1 = none)
    and its depth. Built with :meth:`add`; read-only afterwards."""

    block_size: int
    accesses: list[list[int]] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    _ids: dict[tuple[int, tuple[int, ...]], int] = field(default_factory=dict, repr=False)

    def add(self, token_ids: Sequence[int]) -> list[int]:
        """Append the access of a prompt with these tokens; returns its chain of ids."""
        bs = self.block_size
        n = (len(token_ids) - 1) // bs
        chain: list[int] = []
        prev = -1
        for chunk in zip(*[iter(list(token_ids[:n * bs]))] * bs):
            key = (prev, chunk)
            i = self._ids.get(key)
            if i is None:
                i = self._ids[key] = len(self.parent)
                self.parent.append(prev)
                self.depth.append(len(chain))
            chain.append(i)
            prev = i
        self.accesses.append(chain)
        return chain

    @property
    def num_blocks(self) -> int:
        """Distinct blocks in the trace (the cache size at which nothing is ever evicted)."""
        return len(self.parent)

    @property
    def num_accesses(self) -> int:
        return sum(len(a) for a in self.accesses)

    def compulsory_hits(self) -> int:
        """Accesses minus first touches: the hits of an infinite cache."""
        return self.num_accesses - self.num_blocks

    def save(self, path: str | Path) -> None:
        """JSON: block size, accesses and parents (ids only, no tokens)."""
        Path(path).write_text(json.dumps({"block_size": self.block_size, "parent": self.parent,
                                          "accesses": self.accesses}))

    @classmethod
    def load(cls, path: str | Path) -> BlockTrace:
        d = json.loads(Path(path).read_text())
        t = cls(int(d["block_size"]), [list(a) for a in d["accesses"]], list(d["parent"]))
        for p in t.parent:  # parents always have smaller ids
            t.depth.append(0 if p < 0 else t.depth[p] + 1)
        return t


def trace_from_prompts(prompts: Iterable[Sequence[int]], block_size: int) -> BlockTrace:
    """One access per prompt, in the given order (a workload in arrival order)."""
    t = BlockTrace(block_size)
    for p in prompts:
        t.add(p)
    return t


def trace_from_run(cfg: dict[str, Any], requests: list[Any], *, show_progress: bool = True) -> BlockTrace:
    """Run ``requests`` through an engine built from ``cfg`` (use ``executor=sim``) and record one
    access per admission (a sequence's first block allocation, re-admissions after a
    recompute-preemption included), with the tokens it had then."""
    from kvlab.driver import replay
    from kvlab.engine import LLMEngine

    engine = LLMEngine(cfg)
    alloc = engine.allocator
    t = BlockTrace(engine.block_size)
    inner = alloc.allocate_slots

    def recording(seq, num_new_tokens, computed=None):  # type: ignore[no-untyped-def]
        fresh = not alloc.block_table(seq)
        out = inner(seq, num_new_tokens, computed)
        if fresh and out is not None:
            t.add(seq.token_ids)
        return out

    alloc.allocate_slots = recording  # instance attribute: the scheduler calls it through the object
    replay(engine, requests, show_progress=show_progress, desc="recording")
    return t
