"""Executors: ``sim`` (cost model of paper-scale hardware) and ``torch`` (a real model)."""

from kvlab.executor.base import Executor, Sample, ScheduledSeq, StepInput, StepOutput
from kvlab.registry import Registry

EXECUTORS: Registry[Executor] = Registry("executor")

__all__ = ["EXECUTORS", "Executor", "Sample", "ScheduledSeq", "StepInput", "StepOutput"]
