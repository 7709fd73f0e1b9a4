"""Reproduction of the vLLM paper's figures (``python -m kvlab.paper``).

Modules: ``specs`` (read ``conf/experiment/paper_*.yaml`` into jobs), ``jobs`` (one run or one
adaptive rate sweep, executed in a joblib worker), ``runner`` (parallel execution with progress),
``numbers`` (the paper's numbers, ``paper/paper_numbers.csv``), ``capacity`` (threshold crossings),
``tables`` (kvlab-vs-paper CSVs), ``plots_*`` (figures) and ``report`` (``paper/README.md``).
"""
