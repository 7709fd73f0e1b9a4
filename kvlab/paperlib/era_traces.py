"""Paper-era runs on the real datasets: put a trace file in place of a synthetic ShareGPT/Alpaca.

kvlab cannot download the paper's datasets, so paper-era mode runs on synthetic lengths with the
published means (docs/workloads.md). FasterTransformer's Fig. 12 capacities depend on what those
leave open, the ShareGPT output tail and Alpaca's shortest outputs (:mod:`kvlab.paperlib.era_shapes`).
Whoever has the data can rerun the mode on it: ``python -m kvlab.paperlib.era --trace
sharegpt=PATH --trace alpaca=PATH`` swaps ``workload=<dataset>`` for ``workload=file
workload.path=PATH`` in the panels of that dataset, and writes into its own folder
(:data:`TRACES_ROOT` unless ``--out``), so the committed synthetic-trace tables stay as they are.

The file is a lengths-only JSONL (``{"prompt_len": ..., "output_len": ...}`` per line, tokenized
elsewhere with OPT's tokenizer): the simulator has no OPT tokenizer, so text records (ShareGPT JSON)
get the file loader's error asking for a tokenizer or length records. The paper's own
preprocessing of the conversations is not published (``vllm-paper.md`` 2.3), so say how the file
was cut when reporting its numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from kvlab.paperlib.specs import Job
from kvlab.workloads.lengths import LENGTH_SHAPES

DATASETS = tuple(LENGTH_SHAPES)  # the synthetic datasets a file can stand in for


def parse_traces(items: Sequence[str]) -> dict[str, str]:
    """``["sharegpt=PATH", ...]`` -> ``{"sharegpt": "/abs/PATH"}``; a clear error for a bad item."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in DATASETS:
            raise ValueError(f"--trace {item!r}: expected DATASET=PATH with DATASET one of {', '.join(DATASETS)}")
        if not Path(path).is_file():
            raise ValueError(f"--trace {item!r}: no such file: {path!r}")
        out[name] = str(Path(path).resolve())  # the runs happen in worker processes
    return out


def with_traces(jobs: list[Job], traces: Mapping[str, str]) -> list[Job]:
    """``jobs`` with ``workload=<dataset>`` replaced by the dataset's trace file where one is given. The
    file's content hash tags the job, so another file never reuses a cached run."""
    digest = {name: hashlib.sha1(Path(path).read_bytes()).hexdigest()[:10] for name, path in traces.items()}
    for j in jobs:
        name = j.override("workload")
        if name in traces:
            i = j.overrides.index(f"workload={name}")
            j.overrides = [*j.overrides[:i], "workload=file", f"workload.path={traces[name]}", *j.overrides[i + 1:]]
            j.tags = {**j.tags, "trace": digest[name]}
    return jobs
