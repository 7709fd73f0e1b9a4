"""Build an allocator from its Hydra config group (``conf/allocator/<name>.yaml``).

The YAML holds ``name`` (the registry name), ``block_size``, ``num_blocks`` (``null`` = let the
engine size the pool from the memory budget) and the allocator's own options. The engine decides
the pool size, so ``num_blocks`` arrives as an argument and the YAML value is dropped here.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.base import KVAllocator


def build_allocator(cfg_allocator: Mapping[str, object], num_blocks: int, max_model_len: int,
                    num_cpu_blocks: int = 0) -> KVAllocator:
    """Instantiate ``cfg_allocator["name"]`` with the remaining keys as options.

    Args:
        cfg_allocator: the ``allocator`` config group (a dict or an OmegaConf DictConfig).
        num_blocks: GPU blocks in the pool (the engine resolves ``num_blocks: null``).
        max_model_len: longest sequence in tokens.
        num_cpu_blocks: CPU swap pool size in blocks.

    Raises:
        ValueError: unknown allocator name (lists the registered ones), unknown option key or an
            invalid value (names the key and the allowed values).
    """
    options = {str(k): v for k, v in dict(cfg_allocator).items()}
    if "name" not in options:
        raise ValueError(f"allocator config needs a 'name'; choose one of: {', '.join(ALLOCATORS.names())}")
    name = str(options.pop("name"))
    options.pop("num_blocks", None)
    block_size = options.pop("block_size", 16)
    factory = ALLOCATORS.get(name)
    return factory(num_blocks, block_size, max_model_len, num_cpu_blocks=num_cpu_blocks, **options)
