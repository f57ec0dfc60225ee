"""Small numerical helpers shared by the ``calib`` fitting modules."""
from __future__ import annotations

import numpy as np

__all__ = ["numerical_hessian", "pull_rms_bounds"]


def numerical_hessian(f, x, steps) -> np.ndarray:
    """Hessian of the scalar function ``f`` at ``x`` by central finite differences.

    Diagonal: (f(x+h_i) - 2 f(x) + f(x-h_i)) / h_i^2; off-diagonal: the four-point formula
    (f(x+h_i+h_j) - f(x+h_i-h_j) - f(x-h_i+h_j) + f(x-h_i-h_j)) / (4 h_i h_j).  Truncation
    error O(h^2); choose ``steps`` (one per parameter, in the units of ``x``) small against
    the curvature scale but large against the numerical noise of ``f``.  For a deviance
    (-2 ln L) the covariance of the fit parameters is 2 x inverse(Hessian); for -ln L it is
    the inverse.  Costs 1 + 2 n + 2 n (n - 1) evaluations of ``f``.
    """
    x = np.asarray(x, dtype=float)
    steps = np.broadcast_to(np.asarray(steps, dtype=float), x.shape)
    if x.ndim != 1 or not np.all(steps > 0):
        raise ValueError("numerical_hessian needs a 1-d parameter vector and positive steps")
    n = len(x)
    h = np.zeros((n, n))
    f0 = f(x)
    for i in range(n):
        ei = np.zeros(n)
        ei[i] = steps[i]
        h[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / steps[i] ** 2
        for j in range(i + 1, n):
            ej = np.zeros(n)
            ej[j] = steps[j]
            h[i, j] = h[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej)
                                 + f(x - ei - ej)) / (4 * steps[i] * steps[j])
    return h


def pull_rms_bounds(n: int, p: float = 1e-4) -> tuple[float, float]:
    """Two-sided acceptance band of the rms of ``n`` unit-Gaussian pulls.

    n x rms^2 follows a chi^2 with n degrees of freedom; the band holds the central
    1 - 2p of it.  A check needs both sides: errors that are too large make every pull
    small and pass a one-sided ``max |pull| < k`` test however wrong the values are.
    """
    from scipy.stats import chi2

    if n < 1:
        raise ValueError("pull_rms_bounds needs at least one pull")
    return (float(np.sqrt(chi2.ppf(p, n) / n)), float(np.sqrt(chi2.isf(p, n) / n)))


def device_pulls(pull, name: str) -> dict[str, float]:
    """Seed-level pulls of per-device pulls ``pull`` (N(0, 1) each if the errors are right):
    their mean times sqrt(n), their chi-square as a z score, and the first device's pull."""
    pull = np.asarray(pull, float)
    n = pull.size
    return {f"{name}_mean_z": float(np.mean(pull) * np.sqrt(n)),
            f"{name}_chi2_z": float((np.sum(pull**2) - n) / np.sqrt(2 * n)),
            f"{name}_first_device": float(pull[0])}
