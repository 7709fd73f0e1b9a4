"""Schedulers: ``static`` (request-level), ``fcfs`` (continuous batching), ``lpm`` (prefix-aware).

``SCHEDULERS.build(name, allocator, max_model_len, **options)`` builds one by its short name
(= ``conf/scheduler/<name>.yaml``). Every module of this package is imported here, so a new
scheduler is one module with a ``@SCHEDULERS.register("<name>")`` class or factory plus its YAML.
"""

import importlib
import pkgutil

from kvlab.scheduler.base import SCHEDULERS, ScheduledChunk, SchedulerBase, SchedulerOutput
from kvlab.scheduler.fcfs import FCFSScheduler

for _mod in pkgutil.iter_modules(__path__):  # importing a scheduler module registers it
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["SCHEDULERS", "FCFSScheduler", "ScheduledChunk", "SchedulerBase", "SchedulerOutput"]
