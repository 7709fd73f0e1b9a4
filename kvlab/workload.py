"""Compatibility alias: the workload code lives in :mod:`kvlab.workloads` (DESIGN.md's module map
names ``kvlab/workload.py``; it outgrew one file). Import from either."""

from kvlab.workloads import COMMON_KEYS, GENERATORS, TraceRequest, Workload, WorkloadError, build_workload

__all__ = ["build_workload", "TraceRequest", "Workload", "WorkloadError", "GENERATORS", "COMMON_KEYS"]
