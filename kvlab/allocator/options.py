"""Constructor argument validation shared by every allocator.

All allocators take ``(num_blocks, block_size, max_model_len, num_cpu_blocks=0, **options)``.
Bad values and unknown option keys fail here, before any state exists, with a ``ValueError``
naming the key and what is allowed — a typo in ``conf/allocator/*.yaml`` must not silently fall
back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_BLOCK_SIZE = 1
MAX_BLOCK_SIZE = 256


def validate_geometry(num_blocks: object, block_size: object, max_model_len: object,
                      num_cpu_blocks: object) -> None:
    """Raise ``ValueError`` naming the offending argument and its allowed range."""
    if not isinstance(block_size, int) or isinstance(block_size, bool) or not (
        MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE
    ):
        raise ValueError(
            f"block_size must be an integer in {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}, got {block_size!r}"
        )
    for key, value, low in (("num_blocks", num_blocks, 0), ("max_model_len", max_model_len, 1),
                            ("num_cpu_blocks", num_cpu_blocks, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")


def check_options(allocator: str, options: Mapping[str, object],
                  allowed: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Validate ``options`` against ``allowed`` (key -> choices; the first choice is the default).

    Returns the full option dict with defaults filled in. Raises ``ValueError`` for an unknown key
    (listing the known keys) or a value outside its choices (listing them).
    """
    for key in options:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "(none)"
            raise ValueError(f"unknown option {key!r} for allocator {allocator!r}; allowed options: {known}")
    resolved: dict[str, str] = {}
    for key, choices in allowed.items():
        value = options.get(key, choices[0])
        if value not in choices:
            raise ValueError(
                f"allocator {allocator!r}: option {key}={value!r} is invalid; choose one of: "
                f"{', '.join(choices)}"
            )
        resolved[key] = str(value)
    return resolved


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative ints."""
    return -(-a // b)
