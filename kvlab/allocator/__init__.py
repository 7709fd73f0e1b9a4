"""KV allocators over one block pool: contiguous (Orca-style), paged, prefix-shared.

``ALLOCATORS.build(name, num_blocks, block_size, max_model_len, **options)`` builds one by its
short name (= ``conf/allocator/<name>.yaml``); ``build_allocator(cfg, num_blocks, ...)`` builds one
from that config group.
"""

from kvlab.allocator.base import KVAllocator, MemoryReport
from kvlab.registry import Registry

ALLOCATORS: Registry[KVAllocator] = Registry("allocator")

# Importing the implementations registers them: every module of this package is imported, so a
# new allocator is one module with an ``@ALLOCATORS.register("<name>")`` class plus its YAML.
import importlib  # noqa: E402
import pkgutil  # noqa: E402

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

from kvlab.allocator.build import build_allocator  # noqa: E402

__all__ = ["ALLOCATORS", "KVAllocator", "MemoryReport", "build_allocator"]
