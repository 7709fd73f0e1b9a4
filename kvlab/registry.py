"""A tiny name -> factory registry; each pluggable family (allocator, scheduler, executor) has one.

The registered short name equals the YAML stem in ``conf/<family>/`` so that ``allocator=paged``
on the command line and ``registry.build("paged", ...)`` name the same thing. Unknown names fail
with the list of valid choices, before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} registered twice")
            self._items[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.family} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, *args: object, **kwargs: object) -> T:
        """Call the factory; an unknown keyword option becomes a ``ValueError`` naming it."""
        factory = self.get(name)
        try:
            return factory(*args, **kwargs)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
            bad = str(e).split("unexpected keyword argument")[-1].strip(" '\"")
            raise ValueError(f"unknown option {self.family}.{bad} for {self.family}={name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items
