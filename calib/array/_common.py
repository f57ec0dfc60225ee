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
                     systematic: np.ndarray | None = None) -> Table:
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


def check_throughputs(result: Table, true_eff: np.ndarray, what: str) -> Evidence:
    """Pulls of the relative throughputs against the truth; cross-type ratios."""
    r = np.asarray(result["relative_throughput"], float)
    err = np.asarray(result["relative_throughput_err"], float)
    ok = np.isfinite(r) & np.isfinite(err) & (err > 0)
    if not ok.any():
        return Evidence(passed=False, metrics={"n_telescopes": 0},
                        criteria={"coverage": ">= 90 % of telescopes calibrated"},
                        summary=f"{what}: no telescope calibrated")
    # the result is relative to the mean of the calibrated telescopes: so is the truth
    r_true = true_eff / true_eff[ok].mean()
    pull = (r[ok] - r_true[ok]) / err[ok]
    types = np.asarray(result["type"])
    cross = {}
    for typ in np.unique(types):
        sel = (types == typ) & ok
        cross[f"{typ}_mean_ratio_to_truth"] = float(np.mean(r[sel] / r_true[sel]))
    metrics = {"n_telescopes": int(ok.sum()), "pull_rms": float(np.sqrt(np.mean(pull**2))),
               "pull_max": float(np.max(np.abs(pull))),
               "median_relative_error": float(np.median(err[ok] / r[ok])), **cross}
    passed = 0.6 < metrics["pull_rms"] < 1.5 and metrics["pull_max"] < 4.0 and ok.sum() >= 0.9 * len(r)
    return Evidence(passed=bool(passed), metrics=metrics,
                    criteria={"pull": "(r - r_true)/sigma over telescopes: rms in 0.6-1.5, max < 4",
                              "coverage": ">= 90 % of telescopes calibrated"},
                    summary=f"{what}: {int(ok.sum())} telescopes, pull rms {metrics['pull_rms']:.2f}, "
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

