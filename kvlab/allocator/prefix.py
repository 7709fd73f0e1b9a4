"""``allocator=prefix``: the paged allocator composed with a prefix index and an eviction policy.

Options (``conf/allocator/prefix.yaml``; the first choice is the default):

- ``index``: ``hash`` (vLLM-style hash chain, :mod:`kvlab.allocator.index.hash_index`) |
  ``radix`` (SGLang-style token tree, :mod:`kvlab.allocator.index.radix`);
- ``eviction``: ``lru`` | ``lfu`` | ``fifo`` | ``lru-depth`` | any policy registered in
  :mod:`kvlab.allocator.eviction`;
- ``hash_fn``: ``builtin`` | ``sha256`` (hash index only; see its module for the cost of each).

There is no prefix allocator class: sharing is what :class:`~kvlab.allocator.paged.PagedAllocator`
does when given an index.
"""

from __future__ import annotations

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.eviction import EVICTION
from kvlab.allocator.index import HASH_FUNCTIONS, INDEXES, build_index
from kvlab.allocator.options import check_options, validate_geometry
from kvlab.allocator.paged import PagedAllocator


def prefix_options() -> dict[str, tuple[str, ...]]:
    """Allowed values per option, default first (read at build time: policies may be added)."""
    policies = ("lru", *[n for n in EVICTION.names() if n != "lru"])
    return {"index": tuple(INDEXES), "eviction": policies, "hash_fn": tuple(HASH_FUNCTIONS)}


@ALLOCATORS.register("prefix")
def build_prefix_allocator(num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
                           num_cpu_blocks: int = 0, **options: object) -> PagedAllocator:
    """A :class:`PagedAllocator` with the index and policy named by ``options``.

    Raises:
        ValueError: bad geometry, unknown option key or value (naming the key and the choices).
    """
    validate_geometry(num_blocks, block_size, max_model_len, num_cpu_blocks)
    opts = check_options("prefix", options, prefix_options())
    index = build_index(opts["index"], num_blocks, block_size, eviction=opts["eviction"], hash_fn=opts["hash_fn"])
    alloc = PagedAllocator(num_blocks, block_size, max_model_len, num_cpu_blocks, index=index)
    alloc.name = "prefix"
    alloc.options = opts
    return alloc
