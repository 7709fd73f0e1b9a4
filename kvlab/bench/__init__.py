"""Benchmarks against running servers: ``python -m kvlab.bench serve ...`` (see :mod:`kvlab.bench.serve`)."""
