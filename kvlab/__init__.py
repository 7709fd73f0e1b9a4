"""kvlab: a laboratory for KV-cache memory management in LLM serving."""

from kvlab.request import Request, SamplingParams, Sequence, SequenceStatus

__all__ = ["Request", "SamplingParams", "Sequence", "SequenceStatus", "LLM"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing kvlab must not import torch
    if name == "LLM":
        from kvlab.llm import LLM

        return LLM
    raise AttributeError(name)
