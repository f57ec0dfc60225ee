"""Cherenkov Transparency Coefficient (CTC) per telescope and for the array.

Method (I-DATA-COM-0006, implemented under I-DATA-COM-3201): Stefanik, Nosek et al. (ICRC
2019, PoS(ICRC2019)) for CTA, derived from the H.E.S.S. atmospheric transparency coefficient
of Hahn et al. (2014, Astropart. Phys. 54, 25).  The cosmic-ray trigger rate above the energy
threshold is R ~ E_th^-(Gamma-1) with Gamma ~ 2.7 the cosmic-ray spectral index, and the
threshold scales inversely with the Cherenkov light collected, E_th ~ 1/(mu g T): mu the
telescope's optical (muon) efficiency, g its gain/trigger factor, T the atmospheric
transmission.  Hence, per telescope i and run,

    t_i = R_i^(1/(Gamma-1)) / (mu_i g_i k_i),          CTC = (1/N) sum_i t_i

with R_i the zenith-corrected rate, R_i = R_i,obs / cos(z)^a (the exponent a from
simulations of the site; configurable), and k_i the normalisation that makes the mean of t_i
over clear reference runs equal to 1.  A 10 % loss of transmission lowers the rate by
1 - 0.9^1.7 = 16.4 %.  Uncertainties: Poisson counts and a relative rate systematic,
divided by (Gamma - 1), combined with the relative errors of mu and g and of the reference
normalisation k_i; the CTC error is that of the mean over telescopes.  Telescopes without a
rate (0, NaN), without a muon efficiency or without a usable reference run are excluded and
flagged; a run with fewer than ``min_telescopes`` usable telescopes is flagged (CTC NaN if none),
and input without any usable telescope raises CalibrationError.

Cross-check with a LIDAR: the LIDAR transmission along the line of sight,
exp(-VAOD(h)/cos z), weighted with the Cherenkov emission profile of a shower near the
trigger threshold (``calib.atmosphere.shower``; mostly the shower-maximum altitudes), is
compared with the CTC after both are normalised on the reference runs.
"""
from __future__ import annotations

import enum
import json
import warnings
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
from astropy.table import Table

from calib.atmosphere.shower import cherenkov_emission_profile
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["CTCFlag", "zenith_corrected_rate", "telescope_coefficients", "reference_normalisation",
           "cherenkov_transparency", "lidar_transmission_at_shower_max", "lidar_cross_check",
           "simulate_runs", "CONTRACT"]

VERSION = "0.1.0"
GAMMA_CR = 2.7


class CTCFlag(enum.IntFlag):
    NO_RATE = 1             #: telescope rate zero, negative or NaN
    NO_EFFICIENCY = 2       #: muon efficiency or gain missing / non-positive
    FEW_TELESCOPES = 4      #: fewer than ``min_telescopes`` usable telescopes in the run
    NO_REFERENCE = 8        #: telescope without a usable clear reference run: not normalised, excluded


def zenith_corrected_rate(rate, zenith_deg, index: float = 1.0) -> np.ndarray:
    """Rate corrected to the zenith, R / cos(z)^index."""
    return np.asarray(rate, dtype=float) / np.cos(np.radians(np.asarray(zenith_deg, dtype=float))) ** index


def telescope_coefficients(rate, muon_efficiency, gain, gamma: float = GAMMA_CR) -> np.ndarray:
    """Un-normalised per-telescope coefficients R^(1/(Gamma-1)) / (mu g); NaN where undefined."""
    r = np.asarray(rate, dtype=float)
    mu = np.asarray(muon_efficiency, dtype=float)
    g = np.asarray(gain, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where((r > 0) & (mu > 0) & (g > 0), np.abs(r) ** (1.0 / (gamma - 1.0)) / (mu * g), np.nan)
    return t


def reference_normalisation(coefficients: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """k_i: mean over the clear reference runs of each telescope's coefficient (runs x telescopes)."""
    ref = np.asarray(reference, dtype=bool)
    if not ref.any():
        raise CalibrationError("no reference (clear-night) run is marked: the CTC cannot be normalised")
    c = coefficients[ref]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN telescope: k is NaN, flagged upstream
        return np.nanmean(c, axis=0)


def cherenkov_transparency(counts, duration_s, zenith_deg, muon_efficiency, gain, reference, *,
                           gamma: float = GAMMA_CR, zenith_index: float = 1.0,
                           rate_systematic: float = 0.01, muon_efficiency_error: float = 0.01,
                           gain_error: float = 0.0, min_telescopes: int = 2) -> dict[str, np.ndarray]:
    """CTC per run and t_i per run and telescope.

    ``counts`` (n_runs, n_tel) triggers in ``duration_s`` (n_runs,); ``zenith_deg`` (n_runs,);
    ``muon_efficiency`` and ``gain`` (n_runs, n_tel); ``reference`` (n_runs,) bool.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise CalibrationError(f"counts must have shape (n_runs, n_telescopes); got {counts.shape}")
    n_runs, n_tel = counts.shape
    try:
        mu = np.broadcast_to(np.asarray(muon_efficiency, dtype=float), counts.shape)
        g = np.broadcast_to(np.asarray(gain, dtype=float), counts.shape)
        dur = np.broadcast_to(np.asarray(duration_s, dtype=float), (n_runs,))
        zen = np.broadcast_to(np.asarray(zenith_deg, dtype=float), (n_runs,))
        ref = np.broadcast_to(np.asarray(reference, dtype=bool), (n_runs,))
    except ValueError:
        raise CalibrationError(
            f"muon efficiency and gain must match the counts {counts.shape} (runs x telescopes); duration, "
            f"zenith and the reference mask must have one value per run ({n_runs})") from None
    if np.any(~np.isfinite(dur)) or np.any(dur <= 0):
        raise CalibrationError("every run needs a positive, finite duration")
    if np.any(~np.isfinite(zen)) or np.any((zen < 0) | (zen >= 80)):
        raise CalibrationError("zenith angles must be finite and below 80 deg for the CTC")
    flag = np.zeros((n_runs, n_tel), dtype=np.int32)
    flag[~(np.isfinite(counts) & (counts > 0))] |= CTCFlag.NO_RATE
    flag[~(np.isfinite(mu) & (mu > 0) & np.isfinite(g) & (g > 0))] |= CTCFlag.NO_EFFICIENCY
    rate = np.where(flag == 0, counts / dur[:, None], np.nan)
    rate_z = zenith_corrected_rate(rate, zen[:, None], zenith_index)
    coeff = telescope_coefficients(rate_z, np.where(flag == 0, mu, np.nan), np.where(flag == 0, g, np.nan), gamma)
    k = reference_normalisation(coeff, ref)
    flag[:, ~np.isfinite(k)] |= CTCFlag.NO_REFERENCE
    t = coeff / k[None, :]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rel_r = np.sqrt(1.0 / counts + rate_systematic**2)
        n_ref = np.sum(np.isfinite(t[ref]), axis=0)
        rel_k = np.where(n_ref > 1, np.nanstd(t[ref], axis=0, ddof=1) / np.sqrt(np.maximum(n_ref, 1)), 0.0)
    rel_t = np.sqrt((rel_r / (gamma - 1.0)) ** 2 + muon_efficiency_error**2 + gain_error**2
                    + rel_k[None, :] ** 2)
    t_err = t * rel_t
    usable = np.isfinite(t)
    n_use = usable.sum(axis=1)
    if not np.any(n_use):
        raise CalibrationError("no telescope has a usable rate and muon efficiency in any run: "
                               "the CTC cannot be computed")
    with np.errstate(invalid="ignore", divide="ignore"):
        ctc = np.nansum(np.where(usable, t, 0.0), axis=1) / n_use
        ctc_err = np.sqrt(np.nansum(np.where(usable, t_err, 0.0) ** 2, axis=1)) / n_use
    run_flag = np.where(n_use < min_telescopes, int(CTCFlag.FEW_TELESCOPES), 0)
    ctc = np.where(n_use > 0, ctc, np.nan)
    ctc_err = np.where(n_use > 0, ctc_err, np.nan)
    return {"ctc": ctc, "ctc_err": ctc_err, "t": t, "t_err": t_err, "k": k, "flag": flag,
            "run_flag": run_flag, "n_telescopes": n_use}


def lidar_transmission_at_shower_max(altitude_m, vaod, zenith_deg, site_altitude_m=2200.0,
                                     energy_gev: float = 100.0) -> float:
    """LIDAR aerosol transmission along the line of sight weighted with the Cherenkov emission
    profile (around shower maximum) of a shower of ``energy_gev``."""
    z = np.asarray(altitude_m, dtype=float)
    v = np.asarray(vaod, dtype=float)
    if z.shape != v.shape or z.size < 3:
        raise CalibrationError("the LIDAR profile needs matching altitude and VAOD arrays of at least 3 levels")
    ok = np.isfinite(v)
    if not ok.any():
        raise CalibrationError("the LIDAR VAOD profile has no finite value")
    grid = np.arange(site_altitude_m, 30000.0, 25.0)
    vg = np.interp(grid, z[ok], v[ok])   # held constant above the last valid LIDAR level
    w = cherenkov_emission_profile(grid, energy_gev, zenith_deg, site_altitude_m)
    return float(np.sum(w * np.exp(-vg / np.cos(np.radians(zenith_deg)))))


def _ratio_mean_err(ratio: np.ndarray, ref: np.ndarray) -> float:
    n, n_ref = len(ratio), int(ref.sum())
    n_o = n - n_ref
    if n < 2 or n_ref < 1 or n_o < 1:
        return float("nan")
    return float(np.std(ratio, ddof=1) * (n_o / n) * np.sqrt(1.0 / n_o + 1.0 / n_ref))


def lidar_cross_check(ctc, ctc_err, t_lidar, reference) -> dict[str, float]:
    """Compare the CTC with the LIDAR transmission normalised on the same reference runs."""
    ctc = np.asarray(ctc, float)
    t_l = np.asarray(t_lidar, float) / np.nanmean(np.asarray(t_lidar, float)[np.asarray(reference, bool)])
    ok = np.isfinite(ctc) & np.isfinite(t_l)
    ratio = ctc[ok] / t_l[ok]
    return {"ratio_mean": float(np.mean(ratio)), "ratio_rms": float(np.std(ratio)),
            # both are normalised on the reference runs, so the ratio averages to ~1 there; the other
            # n_o runs carry their scatter and the common normalisation error:
            # std x (n_o / n) sqrt(1/n_o + 1/n_ref)
            "ratio_mean_err": _ratio_mean_err(ratio, np.asarray(reference, bool)[ok]),
            "pearson_r": float(np.corrcoef(ctc[ok], t_l[ok])[0, 1]) if ok.sum() > 2 else np.nan,
            "n_runs": int(ok.sum())}


# ---------------------------------------------------------------------------------------
# simulation and contract
# ---------------------------------------------------------------------------------------

TELESCOPE_TYPES = ("LST",) * 4 + ("MST",) * 6 + ("SST",) * 6
BASE_RATE_HZ = {"LST": 7000.0, "MST": 1500.0, "SST": 400.0}     # at mu = mu0, T = 1, zenith
MU0 = {"LST": 0.20, "MST": 0.13, "SST": 0.10}


def _profile(vaod_bl: float) -> tuple[np.ndarray, np.ndarray]:
    """Boundary layer (1.5 km) with ``vaod_bl`` plus a weak free troposphere; VAOD vs altitude."""
    alt = 2200.0 + np.arange(0.0, 20000.0, 50.0)
    above = alt - 2200.0
    vaod = vaod_bl * np.clip(above / 1500.0, 0, 1) + 2e-6 * np.clip(above - 1500.0, 0, 4500.0)
    return alt, vaod


def simulate_runs(n_runs: int = 30, n_reference: int = 8, rng: np.random.Generator | int | None = None,
                  gamma: float = GAMMA_CR, zenith_index: float = 1.0, rate_systematic: float = 0.01,
                  muon_efficiency_error: float = 0.01, duration_s: float = 1200.0) -> dict:
    """Runs of a 16-telescope array (4 LST, 6 MST, 6 SST) through aerosol layers of known VAOD."""
    rng = np.random.default_rng(0 if rng is None else rng)   # seeded: reproducible by default
    types = np.array(TELESCOPE_TYPES)
    n_tel = len(types)
    vaod_bl = np.concatenate([np.full(n_reference, 0.02), rng.uniform(0.02, 0.40, n_runs - n_reference)])
    zen = rng.uniform(5.0, 50.0, n_runs)
    t_true = np.empty(n_runs)
    t_lidar = np.empty(n_runs)
    for j in range(n_runs):
        alt, vaod = _profile(vaod_bl[j])
        t_true[j] = lidar_transmission_at_shower_max(alt, vaod, zen[j])
        t_lidar[j] = lidar_transmission_at_shower_max(alt, vaod + rng.normal(0, 0.003) * np.clip((alt - 2200) / 1500, 0, 1), zen[j])
    mu0 = np.array([MU0[t] for t in types]) * rng.uniform(0.9, 1.1, n_tel)
    aging = 1.0 - 0.05 * np.linspace(0, 1, n_runs)[:, None] * rng.uniform(0.5, 1.5, n_tel)[None, :]
    mu_true = mu0[None, :] * aging
    gain = 1.0 + 0.03 * rng.standard_normal((n_runs, n_tel))
    base = np.array([BASE_RATE_HZ[t] for t in types]) / np.array([MU0[t] for t in types]) ** (gamma - 1)
    rate = (base[None, :] * (mu_true * gain * t_true[:, None]) ** (gamma - 1)
            * np.cos(np.radians(zen))[:, None] ** zenith_index
            * (1.0 + rate_systematic * rng.standard_normal((n_runs, n_tel))))
    counts = rng.poisson(rate * duration_s).astype(float)
    mu_meas = mu_true * (1.0 + muon_efficiency_error * rng.standard_normal((n_runs, n_tel)))
    reference = np.arange(n_runs) < n_reference
    return {"counts": counts, "duration_s": np.full(n_runs, duration_s), "zenith_deg": zen,
            "muon_efficiency": mu_meas, "gain": gain, "reference": reference, "types": types,
            "transmission_true": t_true, "lidar_transmission": t_lidar, "vaod_bl": vaod_bl}


def write_sample(directory: Path, seed: int) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sim = simulate_runs(rng=np.random.default_rng(seed))
    path = directory / "ctc_sample.h5"
    with h5py.File(path, "w") as f:
        for key in ("counts", "duration_s", "zenith_deg", "muon_efficiency", "gain", "reference",
                    "lidar_transmission"):
            f.create_dataset(key, data=sim[key])
        f.create_dataset("types", data=np.array(sim["types"], dtype="S3"))
        g = f.create_group("truth")
        g.create_dataset("transmission", data=sim["transmission_true"])
        g.create_dataset("vaod_bl", data=sim["vaod_bl"])
        g.attrs["gamma"] = GAMMA_CR
        g.attrs["zenith_index"] = 1.0
        g.attrs["description"] = ("rates from R ~ (mu g T)^(Gamma-1) cos(z); T = aerosol transmission "
                                  "weighted with the Cherenkov emission profile of 100 GeV showers")
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    with h5py.File(input, "r") as f:
        d = {k: f[k][()] for k in ("counts", "duration_s", "zenith_deg", "muon_efficiency", "gain",
                                   "reference", "lidar_transmission")}
        types = [t.decode() for t in f["types"][()]]
    res = cherenkov_transparency(d["counts"], d["duration_s"], d["zenith_deg"], d["muon_efficiency"],
                                 d["gain"], d["reference"], **config)
    t = Table()
    t["run"] = np.arange(len(res["ctc"]))
    t["zenith"] = d["zenith_deg"] * u.deg
    t["reference"] = d["reference"].astype(bool)
    t["ctc"] = res["ctc"]
    t["ctc_err"] = res["ctc_err"]
    t["n_telescopes"] = res["n_telescopes"]
    t["t_telescope"] = res["t"]
    t["t_telescope_err"] = res["t_err"]
    t["telescope_flag"] = res["flag"]
    t["flag"] = res["run_flag"]
    t["lidar_transmission"] = d["lidar_transmission"]
    t.meta["telescope_types"] = json.dumps(types)
    t.meta["lidar_cross_check"] = json.dumps(lidar_cross_check(res["ctc"], res["ctc_err"],
                                                               d["lidar_transmission"], d["reference"]))
    t.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(t, output)
    return t


RMS_TAIL = 1e-3
PULL_MAX = 4.0


def check(result: Table, input: Path) -> Evidence:
    """CTC per run against the true transmission (normalised on the reference runs)."""
    with h5py.File(input, "r") as f:
        truth = f["truth"]["transmission"][()]
        ref = f["reference"][()].astype(bool)
    truth_n = truth / truth[ref].mean()
    ctc = np.asarray(result["ctc"], float)
    err = np.asarray(result["ctc_err"], float)
    pull = (ctc - truth_n) / err
    per_tel = np.asarray(result["t_telescope"], float) / truth_n[:, None]
    cc = json.loads(result.meta["lidar_cross_check"])
    from scipy.stats import norm

    from calib._stats import pull_rms_bounds

    n = len(ctc)
    # the reference runs define the normalisation: their mean CTC is 1 by construction (one constraint)
    ndof = n - 1
    lo, hi = pull_rms_bounds(ndof, RMS_TAIL)
    lo, hi = lo * np.sqrt(ndof / n), hi * np.sqrt(ndof / n)
    chi2 = float(np.sum(pull**2))
    wh = 2.0 / (9.0 * ndof)
    pulls = {"ctc_chi2": float(((chi2 / ndof) ** (1 / 3) - (1 - wh)) / np.sqrt(wh)),
             "lidar_ratio_mean": float((cc["ratio_mean"] - 1) / cc["ratio_mean_err"])}
    metrics = {"n_runs": int(n), "pull_rms": float(np.sqrt(np.mean(pull**2))), "pull_rms_band": f"{lo:.3f}-{hi:.3f}",
               "pull_max": float(np.max(np.abs(pull))), "mean_ctc_over_truth": float(np.mean(ctc / truth_n)),
               "telescope_t_over_truth_rms": float(np.nanstd(per_tel)),
               "lidar_ratio_mean": cc["ratio_mean"], "lidar_ratio_mean_err": cc["ratio_mean_err"],
               "lidar_ratio_rms": cc["ratio_rms"], "lidar_pearson_r": cc["pearson_r"]}
    passed = (lo < metrics["pull_rms"] < hi and metrics["pull_max"] < PULL_MAX
              and abs(pulls["lidar_ratio_mean"]) < PULL_MAX and cc["pearson_r"] > 0.95)
    false_fail = 2 * RMS_TAIL + (n + 1) * float(2 * norm.sf(PULL_MAX))
    criteria = {"pull_rms": f"(CTC - T_true/T_ref)/sigma over runs: rms in the chi^2 band ({RMS_TAIL:g} per side), "
                            f"max < {PULL_MAX}",
                "lidar": f"CTC / LIDAR transmission (both normalised on reference runs): mean 1 within {PULL_MAX} "
                         "standard errors, Pearson r > 0.95 (the sample spans VAOD 0.02-0.4)"}
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=float(false_fail),
                    summary=f"CTC pull rms {metrics['pull_rms']:.2f} over {n} runs; "
                            f"CTC/LIDAR {cc['ratio_mean']:.3f} +- {cc['ratio_rms']:.3f} (r = {cc['pearson_r']:.3f})")


CONTRACT = CalibrationModule(
    codes=("I-DATA-COM-0006", "I-DATA-COM-3201"),
    title="Cherenkov Transparency Coefficient per telescope and array, with LIDAR cross-check",
    inputs=(Port("counts", "", "trigger counts per run and telescope"),
            Port("duration_s", "s", "run duration"), Port("zenith_deg", "deg", "mean zenith angle of the run"),
            Port("muon_efficiency", "", "optical (muon) efficiency per run and telescope"),
            Port("gain", "", "gain / trigger factor per run and telescope"),
            Port("reference", "", "clear reference runs used for the normalisation")),
    outputs=(Port("ctc", "", "array Cherenkov transparency coefficient per run"),
             Port("ctc_err", "", "its uncertainty"),
             Port("t_telescope", "", "per-telescope transparency coefficient t_i"),
             Port("lidar_cross_check", "", "CTC vs LIDAR transmission at shower maximum (table meta)")),
    sample=write_sample, run=run, check=check,
    references=("Stefanik S., Nosek D. et al. 2019, Proc. 36th ICRC, PoS(ICRC2019)",
                "Hahn J. et al. 2014, Astropart. Phys. 54, 25 (arXiv:1310.1639)",
                "Greisen K. 1956, Prog. Cosmic Ray Physics 3, 1"),
    tests=("calib/atmosphere/tests/test_ctc.py",),
    version=VERSION,
    config={
        "gamma": "spectral index of the cosmic-ray rate (default 2.7)",
        "zenith_index": "exponent of the cos(zenith) dependence of the rate (default 1.0)",
        "rate_systematic": "relative systematic uncertainty of a trigger rate (default 0.01)",
        "muon_efficiency_error": "relative uncertainty of the muon optical efficiency (default 0.01)",
        "gain_error": "relative uncertainty of the camera gain (default 0)",
        "min_telescopes": "fewest telescopes for a run's CTC (default 2)",
    },
)
