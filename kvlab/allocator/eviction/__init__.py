"""Eviction policies of the prefix cache: which unreferenced cached block goes first.

``EVICTION.build(name)`` builds one by its short name (``allocator.eviction=<name>``). Every module
of this package is imported, so a new policy is ONE file here with an
``@EVICTION.register("<name>")`` class implementing :class:`EvictionPolicy` (see ``base.py``;
``fifo.py`` is the smallest complete example). Both prefix indexes and ``python -m kvlab.replay``
pick it up by name.
"""

from kvlab.allocator.eviction.base import EvictionPolicy, HeapPolicy
from kvlab.registry import Registry

EVICTION: Registry[EvictionPolicy] = Registry("eviction")

import importlib  # noqa: E402
import pkgutil  # noqa: E402

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["EVICTION", "EvictionPolicy", "HeapPolicy"]
