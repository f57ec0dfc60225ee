"""Small shared helpers for the pointing modules: reading inputs, truth and outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError


def read_table(path: Path) -> Table:
    """Read an ECSV or HDF5 sample table, with a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"input file {path} does not exist")
    if path.suffix in (".h5", ".hdf5"):
        return Table.read(path, path="data")
    return Table.read(path)


def truth_of(table: Table) -> dict:
    """The simulated truth stored in a sample table's meta (JSON string or dict)."""
    truth = table.meta.get("truth")
    if truth is None:
        raise CalibrationError("the input file carries no simulated truth (meta 'truth'); it is not a sample file")
    return json.loads(truth) if isinstance(truth, str) else dict(truth)


def require_finite(name: str, *arrays) -> None:
    """Raise CalibrationError naming the rows where any array is not finite."""
    bad = np.zeros(np.shape(np.asarray(arrays[0]))[:1], dtype=bool)
    for a in arrays:
        a = np.asarray(getattr(a, "value", a), dtype=float)
        bad |= ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CalibrationError(
            f"{bad.sum()} {name} have NaN or infinite values (rows {rows[:10].tolist()}"
            f"{' ...' if rows.size > 10 else ''}); a catalogue entry or a measurement is missing — "
            "remove these rows before fitting")


def linear_least_squares(design: np.ndarray, data: np.ndarray, names: list[str], what: str,
                         max_condition: float = 1e4, sigma: np.ndarray | None = None):
    """Linear least squares with a rank / condition-number guard and parameter covariance.

    ``design`` (n_rows, n_par), ``data`` (n_rows,).  With ``sigma`` (per row) the fit is weighted
    and the covariance follows from those errors alone; without it the noise is estimated
    from the residuals, s^2 = RSS / (n_rows - n_par).
    Returns (params, covariance, residuals, condition_number, dof).
    Raises CalibrationError naming the parameters the data cannot separate.
    """
    design = np.asarray(design, dtype=float)
    data = np.asarray(data, dtype=float)
    n_rows, n_par = design.shape
    if n_rows <= n_par:
        raise CalibrationError(
            f"{what}: {n_rows} equations for {n_par} parameters — too few measurements to fit "
            "(and none left to estimate the noise)")
    if not (np.all(np.isfinite(design)) and np.all(np.isfinite(data))):
        raise CalibrationError(f"{what}: the measurements or their model contain NaN or infinite values")
    if sigma is not None:
        sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (n_rows,))
        if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise CalibrationError(f"{what}: measurement uncertainties must be finite and positive")
    w = np.ones(n_rows) if sigma is None else 1.0 / sigma
    a = design * w[:, None]
    b = data * w
    norms = np.sqrt(np.einsum("ij,ij->j", a, a))
    if np.any(norms == 0):
        dead = [names[i] for i in np.flatnonzero(norms == 0)]
        raise CalibrationError(f"{what}: the measurements do not constrain {', '.join(dead)} at all")
    a = a / norms
    u_, s, vt = np.linalg.svd(a, full_matrices=False)
    condition = float(s[0] / s[-1]) if s[-1] > 0 else np.inf
    if not np.isfinite(condition) or condition > max_condition:
        weak = vt[(s < s[0] / max_condition) | (np.arange(s.size) == s.size - 1)]
        involved = [names[i] for i in np.flatnonzero(np.any(np.abs(weak) > 0.25, axis=0))]
        raise CalibrationError(
            f"{what}: the measurements cannot separate {', '.join(involved)} (design-matrix condition "
            f"number {condition:.3g} > {max_condition:.3g}); use measurements spread over more of the "
            "sky / field (not on one line, one ring or in one spot)")
    scaled = vt.T @ ((u_.T @ b) / s)
    params = scaled / norms
    residuals = data - design @ params
    dof = n_rows - n_par
    inv = (vt.T / s**2) @ vt / np.outer(norms, norms)
    if sigma is None:
        s2 = float(np.sum(residuals**2) / dof)
        covariance = inv * s2
    else:
        covariance = inv
    return params, covariance, residuals, condition, dof


def propagate(derived, params: np.ndarray, covariance: np.ndarray, rel_step: float = 1e-7):
    """Values ``derived(params)`` and their 1-sigma errors by linear propagation of ``covariance``
    (central-difference Jacobian, step ``rel_step`` x max(1, |p_k|))."""
    params = np.asarray(params, dtype=float)
    values = np.asarray(derived(params), dtype=float)
    jac = np.empty((values.size, params.size))
    for k in range(params.size):
        step = np.zeros(params.size)
        step[k] = rel_step * max(1.0, abs(params[k]))
        jac[:, k] = (np.asarray(derived(params + step)) - np.asarray(derived(params - step))) / (2 * step[k])
    return values, np.sqrt(np.diag(jac @ covariance @ jac.T))


def norm_sf(z: float) -> float:
    """One-sided tail probability of a unit Gaussian beyond ``z`` (a |pull| < z criterion fails a
    correct module with probability 2 norm_sf(z): 6.3e-5 for z = 4)."""
    from scipy.special import ndtr

    return float(ndtr(-z))
