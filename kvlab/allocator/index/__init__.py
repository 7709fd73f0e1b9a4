"""Prefix indexes of the paged allocator: which cached full blocks a new prompt can reuse.

``build_index(name, num_blocks, block_size, eviction=..., hash_fn=...)`` builds one by its short name
(``allocator.index=hash|radix``); the paged allocator takes the result (``None`` = no sharing).
The contract is :class:`~kvlab.allocator.index.base.PrefixIndex`; both indexes share the block
tree and eviction bookkeeping of :class:`~kvlab.allocator.index.base.BlockTree` and differ only in
how a prompt is looked up.
"""

from __future__ import annotations

from kvlab.allocator.eviction import EVICTION
from kvlab.allocator.index.base import BlockTree, PrefixIndex
from kvlab.allocator.index.hash_index import HASH_FUNCTIONS, HashIndex
from kvlab.allocator.index.radix import RadixIndex

INDEXES: dict[str, type[BlockTree]] = {"hash": HashIndex, "radix": RadixIndex}


def build_index(name: str, num_blocks: int, block_size: int, *, eviction: str = "lru",
                hash_fn: str = "builtin") -> PrefixIndex:
    """Build the index ``name`` with the eviction policy ``eviction``.

    Raises:
        ValueError: unknown index, policy or hash function, naming the key and the choices.
    """
    if name not in INDEXES:
        raise ValueError(f"allocator.index={name!r} is unknown; choose one of: {', '.join(INDEXES)}")
    if eviction not in EVICTION:
        raise ValueError(f"allocator.eviction={eviction!r} is unknown; choose one of: "
                         f"{', '.join(EVICTION.names())}")
    if hash_fn not in HASH_FUNCTIONS:
        raise ValueError(f"allocator.hash_fn={hash_fn!r} is unknown; choose one of: {', '.join(HASH_FUNCTIONS)}")
    policy = EVICTION.build(eviction)
    if name == "hash":
        return HashIndex(num_blocks, block_size, policy, hash_fn=hash_fn)
    return INDEXES[name](num_blocks, block_size, policy)


__all__ = ["INDEXES", "BlockTree", "HashIndex", "PrefixIndex", "RadixIndex", "build_index", "HASH_FUNCTIONS"]
