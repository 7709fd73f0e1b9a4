"""Calibrating the simulator against the real executor (``python -m kvlab.calibrate``).

``machine`` (fingerprint, load), ``profile`` (the profile file and its provenance check; pure
Python, read by :mod:`kvlab.hardware`), ``grid`` (designed step shapes, timing), ``fit`` (NNLS on
relative error), ``overhead`` (engine host time per step), ``runs`` (replaying a workload),
``calibrate`` (the whole calibration), ``validate`` (held-out workloads, error table).
Nothing is imported here, so reading a profile does not load torch.
"""
