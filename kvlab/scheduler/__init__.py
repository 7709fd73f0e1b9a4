"""Schedulers: ``static`` (request-level), ``fcfs`` (continuous batching), ``lpm`` (prefix-aware).

``SCHEDULERS.build(name, allocator, max_model_len, **options)`` builds one by its short name
(= ``conf/scheduler/<name>.yaml``).
"""

from kvlab.scheduler import lpm, static  # noqa: F401  (registers)
from kvlab.scheduler.base import ScheduledChunk, SchedulerBase, SchedulerOutput
from kvlab.scheduler.fcfs import SCHEDULERS, FCFSScheduler

__all__ = ["SCHEDULERS", "FCFSScheduler", "ScheduledChunk", "SchedulerBase", "SchedulerOutput"]
