"""Shared pieces of the array-calibration modules: a simulated array of LST/MST/SST
telescopes of known throughput, relative throughputs with the delta-method uncertainty,
the output table and the truth check."""
from __future__ import annotations

import warnings

import numpy as np
from astropy.table import Table
import astropy.units as u

from calib.contract import CalibrationError, Evidence

#: effective mirror areas (m^2): LST 23 m dish, MST 12 m, SST 4 m
MIRROR_AREA = {"LST": 386.0, "MST": 106.0, "SST": 8.6}
#: nominal photon -> photo-electron efficiency (mirror x window x QE x collection)
NOMINAL_THROUGHPUT = {"LST": 0.13, "MST": 0.11, "SST": 0.09}
#: excess noise factor squared of the photosensors (PMT for LST/MST, SiPM for SST)
ENF_SQ = {"LST": 1.222, "MST": 1.2, "SST": 1.1}


def simulated_array(rng: np.random.Generator, n_lst: int = 4, n_mst: int = 8, n_sst: int = 8) -> dict:
    """Telescope ids, types, ground positions (m), mirror areas and true throughputs."""
    types = np.array(["LST"] * n_lst + ["MST"] * n_mst + ["SST"] * n_sst)
    n = len(types)
    radius = np.where(types == "LST", 90.0, np.where(types == "MST", 300.0, 600.0))
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.column_stack([radius * np.cos(phi), radius * np.sin(phi), rng.normal(0, 5, n)])
    area = np.array([MIRROR_AREA[t] for t in types])
    eff = np.array([NOMINAL_THROUGHPUT[t] for t in types]) * rng.uniform(0.8, 1.1, n)
    return {"tel_id": np.arange(1, n + 1), "type": types, "position": pos, "mirror_area": area,
            "throughput": eff, "enf_sq": np.array([ENF_SQ[t] for t in types])}


def relative_throughputs(eff: np.ndarray, eff_err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r_i = eff_i / mean(eff) and its uncertainty (delta method, correlation with the mean included)."""
    eff = np.asarray(eff, float)
    err = np.asarray(eff_err, float)
    ok = np.isfinite(eff) & np.isfinite(err) & (eff > 0)
    if ok.sum() < 2:
        raise CalibrationError("fewer than two telescopes have a valid throughput: no relative calibration")
    n = ok.sum()
    m = eff[ok].mean()
    r = np.where(ok, eff / m, np.nan)
    s2 = np.sum(err[ok] ** 2)
    var = (err**2 / m**2) * (1 - 2 * r / n) + r**2 * s2 / (n**2 * m**2)
    return r, np.where(ok, np.sqrt(np.maximum(var, 0)), np.nan)


def throughput_table(arr: dict, eff: np.ndarray, eff_err: np.ndarray, flag: np.ndarray,
                     relative: tuple[np.ndarray, np.ndarray] | None = None,
                     systematic: np.ndarray | None = None, systematic_shift: np.ndarray | None = None) -> Table:
    r, r_err = relative_throughputs(eff, eff_err) if relative is None else relative
    t = Table()
    t["tel_id"] = arr["tel_id"]
    t["type"] = arr["type"]
    t["throughput"] = eff
    t["throughput_err"] = eff_err
    t["relative_throughput"] = r
    t["relative_throughput_err"] = r_err
    if systematic is not None:
        t["relative_throughput_syst"] = systematic
    if systematic_shift is not None:
        # signed shift of each r_i for a +1 sigma change of the common nuisance (fully correlated)
        t["relative_throughput_syst_shift"] = systematic_shift
    # relative to the mean of the telescope's own type (intra-type flat-fielding)
    rt = np.full(len(r), np.nan)
    for typ in np.unique(arr["type"]):
        sel = (arr["type"] == typ) & np.isfinite(eff)
        if sel.any():
            rt[arr["type"] == typ] = eff[arr["type"] == typ] / eff[sel].mean()
    t["relative_throughput_in_type"] = rt
    t["mirror_area"] = arr["mirror_area"] * u.m**2
    t["flag"] = flag
    return t


#: tails of the throughput check: chi^2 band (per side) and the per-telescope |pull| limit
CHI2_TAIL = 1e-3
MAX_PULL = 4.0


def wilson_hilferty_z(chi2: float, ndof: int) -> float:
    """Standard normal deviate of a chi^2 value with ``ndof`` degrees of freedom (Wilson & Hilferty 1931)."""
    v = 2.0 / (9.0 * ndof)
    return float(((chi2 / ndof) ** (1.0 / 3.0) - (1.0 - v)) / np.sqrt(v))


def check_throughputs(result: Table, true_eff: np.ndarray, what: str) -> Evidence:
    """Relative throughputs against the truth, with the full error budget.

    Errors: ``relative_throughput_err`` (statistical, independent between telescopes) and, if
    given, ``relative_throughput_syst_shift`` (the shift of every r_i for a +1 sigma change of
    the common nuisance, e.g. the aerosol optical depth: fully correlated).  The chi^2 of the
    residuals with the covariance diag(stat^2) + s s^T (Sherman-Morrison inverse) follows
    chi^2(n) if the budget is right; it must lie in the central 1 - 2 x 1e-3 of that
    distribution, and every telescope's pull with sqrt(stat^2 + s^2) must be below 4.
    Designed false-fail rate 2e-3 + n P(|z| > 4).  Pulls: the chi^2 as a normal deviate, and
    per telescope type the mean pull x sqrt(n_type / (1 - n_type/n)) (the throughputs are
    relative to the array mean, which removes that fraction of the variance)."""
    from scipy.stats import chi2 as chi2_dist, norm

    r = np.asarray(result["relative_throughput"], float)
    err = np.asarray(result["relative_throughput_err"], float)
    shift = (np.asarray(result["relative_throughput_syst_shift"], float)
             if "relative_throughput_syst_shift" in result.colnames else np.zeros(len(r)))
    ok = np.isfinite(r) & np.isfinite(err) & (err > 0) & np.isfinite(shift)
    if not ok.any():
        return Evidence(passed=False, metrics={"n_telescopes": 0},
                        criteria={"coverage": ">= 90 % of telescopes calibrated"},
                        summary=f"{what}: no telescope calibrated", false_fail_rate=0.0)
    # the result is relative to the mean of the calibrated telescopes: so is the truth
    r_true = true_eff / true_eff[ok].mean()
    res, s2, v = (r - r_true)[ok], err[ok] ** 2, shift[ok]
    n = int(ok.sum())
    dinv_res, dinv_v = res / s2, v / s2
    chi2 = float(res @ dinv_res - (v @ dinv_res) ** 2 / (1.0 + v @ dinv_v))
    # the quoted errors are the marginal ones (the correlation with the array mean included), so each
    # term has expectation 1: E[chi^2] = n
    ndof = n
    lo, hi = float(chi2_dist.ppf(CHI2_TAIL, ndof)), float(chi2_dist.isf(CHI2_TAIL, ndof))
    pull = res / np.sqrt(s2 + v**2)
    types = np.asarray(result["type"])[ok]
    pulls = {"chi2": wilson_hilferty_z(chi2, ndof)}
    cross = {}
    for typ in np.unique(types):
        sel = types == typ
        cross[f"{typ}_mean_ratio_to_truth"] = float(np.mean(r[ok][sel] / r_true[ok][sel]))
        frac = sel.sum() / n
        if frac < 1:
            pulls[f"{typ}_mean"] = float(pull[sel].sum() / np.sqrt(sel.sum() * (1.0 - frac)))
    metrics = {"n_telescopes": n, "chi2": chi2, "ndof": ndof, "chi2_band": f"{lo:.1f}-{hi:.1f}",
               "pull_rms": float(np.sqrt(np.mean(pull**2))), "pull_max": float(np.max(np.abs(pull))),
               "median_relative_error": float(np.median(err[ok] / r[ok])),
               "median_relative_syst": float(np.median(np.abs(v) / r[ok])), **cross}
    passed = lo < chi2 < hi and metrics["pull_max"] < MAX_PULL and ok.sum() >= 0.9 * len(r)
    return Evidence(passed=bool(passed), metrics=metrics, pulls=pulls,
                    false_fail_rate=float(2 * CHI2_TAIL + n * 2 * norm.sf(MAX_PULL)),
                    criteria={"chi2": f"residuals r - r_true with covariance diag(stat^2) + s s^T: chi^2 in the "
                                      f"central 1 - 2x{CHI2_TAIL:g} of chi^2(n)",
                              "pull": f"every |r - r_true| / sqrt(stat^2 + s^2) < {MAX_PULL}",
                              "coverage": ">= 90 % of telescopes calibrated"},
                    summary=f"{what}: {n} telescopes, chi2 {chi2:.1f}/{ndof}, "
                            f"median relative error {100 * metrics['median_relative_error']:.1f} %")


def dump_array(f, arr: dict) -> None:
    g = f.create_group("array")
    g.create_dataset("tel_id", data=arr["tel_id"])
    g.create_dataset("type", data=np.array(arr["type"], dtype="S3"))
    g.create_dataset("position", data=arr["position"])
    g.create_dataset("mirror_area", data=arr["mirror_area"])
    g.create_dataset("enf_sq", data=arr["enf_sq"])
    f.create_group("truth").create_dataset("throughput", data=arr["throughput"])


def load_array(f) -> dict:
    g = f["array"]
    return {"tel_id": g["tel_id"][()], "type": np.array([t.decode() for t in g["type"][()]]),
            "position": g["position"][()], "mirror_area": g["mirror_area"][()], "enf_sq": g["enf_sq"][()]}


def flash_charges(rng, mean_pe: np.ndarray, enf_sq: np.ndarray, n_flashes: int, source_jitter: float) -> np.ndarray:
    """Charges (p.e.) of n_flashes per telescope: Poisson photo-electrons with excess noise
    (Gaussian approximation) and a pulse-to-pulse source jitter."""
    mu = mean_pe[:, None] * (1 + source_jitter * rng.standard_normal((len(mean_pe), n_flashes)))
    npe = rng.poisson(np.maximum(mu, 0))
    return npe + rng.standard_normal(npe.shape) * np.sqrt(npe * (enf_sq[:, None] - 1))


def require_positive(name: str, value) -> np.ndarray:
    """Raise CalibrationError unless every element of ``value`` is finite and > 0."""
    a = np.asarray(value, dtype=float)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise CalibrationError(f"{name} must be finite and positive; got {a.ravel()[:5].tolist()}"
                               f"{' ...' if a.size > 5 else ''}")
    return a


def require_finite_positions(name: str, xyz, n: int | None = None) -> np.ndarray:
    """Positions (n, 3) in metres, finite; raise CalibrationError otherwise."""
    a = np.asarray(xyz, dtype=float)
    if a.ndim != 2 or a.shape[1] != 3 or (n is not None and a.shape[0] != n):
        raise CalibrationError(f"{name} must have shape ({'n' if n is None else n}, 3); got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CalibrationError(f"{name} contain NaN or infinite coordinates (rows "
                               f"{np.flatnonzero(~np.all(np.isfinite(a), axis=1))[:10].tolist()})")
    return a


def invalid_charges(q: np.ndarray) -> np.ndarray:
    """Telescopes (rows of ``q``, n_telescopes x n_flashes) with a NaN charge or no positive mean charge."""
    bad = ~np.all(np.isfinite(q), axis=1)
    return bad | (np.where(bad[:, None], 0.0, np.where(np.isfinite(q), q, 0.0)).mean(axis=1) <= 0)


def mean_and_error(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean charge per telescope and its standard error from the flash-to-flash scatter."""
    if q.ndim != 2 or q.shape[1] < 2:
        raise CalibrationError("need at least two flashes per telescope, as (n_telescopes, n_flashes)")
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # flagged (all-NaN) telescopes give NaN
        return np.nanmean(q, axis=1), np.nanstd(q, axis=1, ddof=1) / np.sqrt(np.sum(np.isfinite(q), axis=1))

