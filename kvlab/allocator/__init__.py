"""KV allocators over one block pool: contiguous (Orca-style), paged, prefix-shared.

``ALLOCATORS.build(name, num_blocks, block_size, max_model_len, **options)`` builds one by its
short name (= ``conf/allocator/<name>.yaml``); ``build_allocator(cfg, num_blocks, ...)`` builds one
from that config group.
"""

from kvlab.allocator.base import KVAllocator, MemoryReport
from kvlab.registry import Registry

ALLOCATORS: Registry[KVAllocator] = Registry("allocator")

# Importing the implementations registers them.
from kvlab.allocator import contiguous, paged, prefix  # noqa: E402,F401
from kvlab.allocator.build import build_allocator  # noqa: E402

__all__ = ["ALLOCATORS", "KVAllocator", "MemoryReport", "build_allocator"]
