"""``python -m kvlab.replay``: block-access traces, eviction policies against Belady's optimum.

- :mod:`kvlab.replay.trace`: a :class:`BlockTrace` (per admission, the chain of full-block
  content ids of its prompt) recorded from a workload (arrival order) or from a run of the engine
  with the simulator (admission order, preemptions included);
- :mod:`kvlab.replay.simulate`: the prefix cache of ``capacity`` blocks replayed under any
  registered eviction policy, and Belady's offline optimum;
- :mod:`kvlab.replay.__main__`: the command (CSV, plot, config, manifest, ``results: DIR``).
"""
