"""Fitting the calibrated cost model: weighted non-negative least squares on relative error.

Method. Each grid point ``i`` has a feature vector ``x_i`` (:func:`~kvlab.executor.cost_calibrated.
step_features`) and a measured step time ``y_i`` (the median of its repeats). We solve

    min_c  sum_i ((x_i . c - y_i) / y_i)^2     subject to  c >= 0

i.e. ordinary NNLS on rows scaled by ``1 / y_i``: every point counts by its *relative* error, so
a 40 ms decode step weighs as much as a 2 s prefill, and no coefficient may turn negative (each is
seconds per unit of work, so a negative one would have no meaning). Columns are scaled to unit
norm before solving (the features span 1 to 1e6) and scaled back. The solver is Lawson and
Hanson's active-set algorithm (1974), written here in numpy (scipy is not a dependency).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None, tol: float = 1e-12) -> np.ndarray:
    """argmin ||a x - b||_2 subject to x >= 0 (Lawson-Hanson active set). Pure."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    it, limit = 0, max_iter or 3 * n + 30
    while (~passive).any() and (w[~passive] > tol).any() and it < limit:
        it += 1
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            neg = passive & (z <= tol)
            alpha = np.min(x[neg] / (x[neg] - z[neg] + 1e-300))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


@dataclass
class FitResult:
    """Coefficients (seconds per feature unit) and the fit's residuals on every point."""

    coef: dict[str, float]
    predicted: list[float]
    measured: list[float]

    @property
    def rel_errors(self) -> np.ndarray:
        y = np.asarray(self.measured)
        return (np.asarray(self.predicted) - y) / y

    @property
    def rms_rel_error(self) -> float:
        e = self.rel_errors
        return float(np.sqrt(np.mean(e ** 2))) if len(e) else float("nan")

    @property
    def max_abs_rel_error(self) -> float:
        e = self.rel_errors
        return float(np.max(np.abs(e))) if len(e) else float("nan")


def fit_relative(features: Sequence[Mapping[str, float]], measured: Sequence[float],
                 names: Sequence[str], weights: Sequence[float] | None = None) -> FitResult:
    """Fit ``measured ~ features . coef`` by NNLS on relative error (module docstring);
    ``weights`` (default 1) multiply each row's relative error."""
    if len(features) != len(measured) or not len(features):
        raise ValueError("fit: need as many measurements as feature rows, and at least one")
    x = np.array([[float(f.get(k, 0.0)) for k in names] for f in features])
    y = np.asarray(measured, dtype=float)
    if (y <= 0).any():
        raise ValueError("fit: measured times must be > 0")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    a = x / y[:, None] * w[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    c = nnls(a / scale, w) / scale
    pred = x @ c
    return FitResult({k: float(v) for k, v in zip(names, c)}, pred.tolist(), y.tolist())
