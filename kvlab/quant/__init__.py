"""The KV-cache quantization comparison (``python -m kvlab.quant``): one harness that measures, per
KV format (``conf/kv_quant/*.yaml``), the bytes a token costs, accuracy on the real model
(perplexity, KL, top-1, greedy agreement, passkey retrieval) and the serving effect at one fixed KV
memory budget (real model on the CPU, simulator at paper scale). See docs/quantization.md.

Modules: :mod:`.schemes` (discovery and config composition), :mod:`.text` (offline evaluation
text and prompts), :mod:`.accuracy` (perplexity/KL through the executor, greedy, passkey),
:mod:`.serving` (fixed-budget runs through :func:`kvlab.experiment.run_experiment`),
:mod:`.report` (summary.csv, plots, the markdown section), :mod:`.settings` (quick/full sizes).
"""
