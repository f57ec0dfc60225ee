"""Telescope-to-telescope flat-fielding with a uniform light source (Illuminator).

Method (I-DATA-COM-3141): a pulsed source with a wide, uniform beam (calibrated angular
uniformity, e.g. an LED behind a diffuser, as in the CTA Illuminator concept; Gaug et al.
2014, "Calibration strategies for the Cherenkov Telescope Array", Proc. SPIE 9149; an
independent cross-check of the muon-ring throughput calibration, Gaug et al. 2019, ApJS
243, 11) placed at a known position illuminates all telescopes, each
pointing at it.  For telescope i at distance d_i the photon density at the mirror is
rho_i = I0 u(phi_i) T_i / d_i^2 with u the known uniformity map of the beam and T_i the
horizontal transmission at ground level (molecular from ``calib.atmosphere.molecular``
plus a measured aerosol extinction).  Every camera pixel p records Q_ip = eps_i f_ip
(A_i / n_pix) rho_i; the camera mean over pixels gives the telescope throughput
eps_i = <Q_i> n_pix / (A_i rho_i) and the pixel flat-field coefficients f_ip = Q_ip / <Q_i>
(standard error from the flash-to-flash scatter of the ratio, in which the source jitter
cancels).  Relative throughputs eps_i / <eps> inter-calibrate the telescopes, across types, on one
scale; I0 and the pulse-to-pulse jitter cancel (ratios are formed flash by flash).
Uncertainties: standard error over the flashes and the residual non-uniformity of the beam
(``uniformity_error``); the aerosol
extinction error is propagated as a distance-dependent systematic
(``relative_throughput_syst``).  Telescopes with NaN or non-positive charges are flagged.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
from astropy.table import Table

from calib.array import _common as C
from calib.atmosphere.molecular import MolecularProfile
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["ground_transmission", "throughputs", "flat_field_coefficients", "flat_field_errors", "CONTRACT"]

VERSION = "0.1.0"
WAVELENGTH_NM = 400.0
SITE_ALTITUDE_M = 2200.0


def ground_transmission(distance_m, aerosol_extinction_per_m: float = 0.0) -> np.ndarray:
    """Horizontal transmission at the site altitude over ``distance_m``."""
    a_mol = MolecularProfile.us76().extinction(SITE_ALTITUDE_M * u.m, WAVELENGTH_NM * u.nm).value
    return np.exp(-(a_mol + aerosol_extinction_per_m) * np.asarray(distance_m, dtype=float))


def flat_field_coefficients(pixel_charges: np.ndarray) -> np.ndarray:
    """f_ip = <Q_ip>_flashes / <Q_i>_camera (n_tel, n_pix)."""
    q = np.asarray(pixel_charges, dtype=float)
    m = q.mean(axis=2)
    return m / m.mean(axis=1, keepdims=True)


def flat_field_errors(pixel_charges: np.ndarray) -> np.ndarray:
    """Standard error of f_ip from the flash-to-flash scatter of Q_ip / <Q_i>_camera (common jitter cancels)."""
    q = np.asarray(pixel_charges, dtype=float)
    if q.ndim != 3 or q.shape[2] < 2:
        raise CalibrationError("pixel charges must be (n_telescopes, n_pixels, n_flashes >= 2)")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = q / q.mean(axis=1, keepdims=True)
    return ratio.std(axis=2, ddof=1) / np.sqrt(q.shape[2])


def throughputs(pixel_charges, intensity, source_xyz, tel_xyz, mirror_area, uniformity, *,
                aerosol_extinction=2e-5, aerosol_extinction_err=1e-5, uniformity_error=0.005):
    """Per telescope: throughput, its error, flag; relative throughputs (stat) and their aerosol systematic.

    ``pixel_charges``: (n_tel, n_pix, n_flashes) in p.e.; ``uniformity``: beam intensity
    towards each telescope relative to the axis (known map)."""
    q = np.asarray(pixel_charges, dtype=float)
    n_tel = len(mirror_area)
    if q.ndim != 3 or q.shape[0] != n_tel or q.shape[2] < 2:
        raise CalibrationError(f"pixel charges must be (n_telescopes={n_tel}, n_pixels, n_flashes >= 2); got {q.shape}")
    C.require_positive("the source intensity", intensity)
    C.require_positive("the mirror areas", mirror_area)
    C.require_positive("the beam uniformity towards each telescope", np.broadcast_to(uniformity, (n_tel,)))
    tel_xyz = C.require_finite_positions("telescope positions", tel_xyz, n_tel)
    source_xyz = C.require_finite_positions("the source position", np.reshape(source_xyz, (1, 3)))[0]
    bad = ~np.all(np.isfinite(q), axis=(1, 2))
    camera_mean = np.where(bad[:, None], np.nan, np.where(np.isfinite(q), q, 0.0).mean(axis=1))  # (n_tel, n_flashes)
    bad |= ~(np.nan_to_num(np.where(bad[:, None], 0.0, camera_mean).mean(axis=1)) > 0)
    if bad.all():
        raise CalibrationError("no telescope recorded a positive charge from the illuminator")
    qm, qe = C.mean_and_error(np.where(bad[:, None], np.nan, camera_mean))
    d = np.linalg.norm(np.asarray(source_xyz, float)[None, :] - np.asarray(tel_xyz, float), axis=1)
    n_pix = q.shape[1]
    rho = intensity * np.asarray(uniformity, float) * ground_transmission(d, aerosol_extinction) / d**2
    eff = np.where(bad, np.nan, qm * n_pix / (np.asarray(mirror_area) * rho))
    rel_stat = np.sqrt((qe / qm) ** 2 + uniformity_error**2)
    err = eff * rel_stat
    # relative throughputs flash by flash: the source's pulse-to-pulse jitter cancels
    eff_f = camera_mean * n_pix / (np.asarray(mirror_area) * rho)[:, None]
    r_f = eff_f / np.mean(eff_f[~bad], axis=0)[None, :]
    r, r_stat = C.mean_and_error(np.where(bad[:, None], np.nan, r_f))
    r_err = np.sqrt(r_stat**2 + (r * uniformity_error) ** 2 * (1 - 1 / max(1, (~bad).sum())))
    # aerosol systematic: d-dependent part of exp(-alpha d) relative to the array mean
    dd = aerosol_extinction_err * (d - np.mean(d[~bad]))
    # signed: the shift of each r_i for +1 sigma of aerosol extinction (fully correlated)
    return eff, err, bad.astype(np.int32), (r, r_err), np.where(bad, np.nan, -r * dd)


def write_sample(directory: Path, seed: int, n_flashes: int = 50, n_pixels: int = 64) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = C.simulated_array(rng)
    n = len(arr["type"])
    source = np.array([1800.0, -900.0, 30.0])
    d = np.linalg.norm(source[None, :] - arr["position"], axis=1)
    uniformity_map = 1.0 - 0.02 * ((np.arange(n) % 5) / 4.0)                 # known, measured in the lab
    uniformity_true = uniformity_map * (1 + 0.005 * rng.standard_normal(n))   # residual non-uniformity
    intensity = 2e11                                                          # photons / sr
    alpha_aer, alpha_aer_err = 2e-5, 1e-5          # measured (input) and its error
    alpha_true = max(0.0, alpha_aer + alpha_aer_err * rng.standard_normal())   # not the measured value
    rho = intensity * uniformity_true * ground_transmission(d, alpha_true) / d**2
    f_pix = 1 + 0.08 * rng.standard_normal((n, n_pixels))
    f_pix /= f_pix.mean(axis=1, keepdims=True)
    mean_pe = (arr["throughput"] * arr["mirror_area"] * rho / n_pixels)[:, None] * f_pix   # (n, n_pix)
    jitter = 1 + 0.03 * rng.standard_normal(n_flashes)                        # common source jitter
    mu = mean_pe[:, :, None] * jitter[None, None, :]
    npe = rng.poisson(mu)
    q = npe + rng.standard_normal(npe.shape) * np.sqrt(npe * (arr["enf_sq"][:, None, None] - 1))
    path = directory / "illuminator_sample.h5"
    with h5py.File(path, "w") as f:
        C.dump_array(f, arr)
        f.create_dataset("pixel_charges", data=q.astype(np.float32), compression="gzip")
        f.create_dataset("uniformity", data=uniformity_map)
        f.attrs["source_position"] = source
        f.attrs["intensity"] = intensity
        f.attrs["aerosol_extinction"] = alpha_aer
        f.attrs["aerosol_extinction_err"] = alpha_aer_err
        f["truth"].attrs["aerosol_extinction"] = alpha_true
        f["truth"].create_dataset("flat_field", data=f_pix)
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    with h5py.File(input, "r") as f:
        arr = C.load_array(f)
        q, unif = f["pixel_charges"][()], f["uniformity"][()]
        src, intensity = f.attrs["source_position"], float(f.attrs["intensity"])
        alpha = float(f.attrs["aerosol_extinction"])
        alpha_err = float(f.attrs.get("aerosol_extinction_err", 1e-5))
    eff, err, flag, rel, syst = throughputs(q, intensity, src, arr["position"], arr["mirror_area"], unif,
                                            aerosol_extinction=config.get("aerosol_extinction", alpha),
                                            aerosol_extinction_err=config.get("aerosol_extinction_err", alpha_err))
    t = C.throughput_table(arr, eff, err, flag, rel, np.abs(syst), syst)
    ff = flat_field_coefficients(q)
    t["pixel_flat_field"] = ff
    t["pixel_flat_field_err"] = flat_field_errors(q)
    t["pixel_flat_field_rms"] = np.std(ff, axis=1)
    t.meta["n_flashes"] = int(q.shape[2])
    t.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(t, output)
    return t


FLAT_FIELD_RMS_TAIL = 1e-3
FLAT_FIELD_MAX_PULL = 6.0


def check(result: Table, input: Path) -> Evidence:
    with h5py.File(input, "r") as f:
        truth = f["truth"]["throughput"][()]
        ff_true = f["truth"]["flat_field"][()]
    ev = C.check_throughputs(result, truth, "Illuminator")
    rms_true = np.std(ff_true, axis=1)
    rms = np.asarray(result["pixel_flat_field_rms"])
    # per-pixel flat-field coefficients against the simulated ones, in units of their standard error
    ff, ff_err = np.asarray(result["pixel_flat_field"], float), np.asarray(result["pixel_flat_field_err"], float)
    good = np.asarray(result["flag"]) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = ((ff - ff_true) / ff_err)[good].ravel()
    n_pull = pull.size
    pull_rms = float(np.sqrt(np.mean(pull**2))) if n_pull else np.nan
    pull_max = float(np.max(np.abs(pull))) if n_pull else np.nan
    # the errors come from the flash-to-flash scatter of n_flashes: the pulls follow Student's t with
    # nu = n_flashes - 1, E[t^2] = nu/(nu-2), Var[t^2] = 2 nu^2 (nu-1) / ((nu-2)^2 (nu-4)); the mean of
    # n_pull squared pulls is judged with its normal approximation at 1e-3 per side
    from scipy.stats import norm, t as student_t
    nu = int(result.meta.get("n_flashes", 50)) - 1
    m2, v2 = nu / (nu - 2.0), 2.0 * nu**2 * (nu - 1.0) / ((nu - 2.0) ** 2 * (nu - 4.0))
    z_tail = float(norm.isf(FLAT_FIELD_RMS_TAIL))
    half_band = z_tail * np.sqrt(v2 / max(n_pull, 1))
    mean_sq = float(np.mean(pull**2)) if n_pull else np.nan
    ok = bool(abs(mean_sq - m2) < half_band and pull_max < FLAT_FIELD_MAX_PULL)
    pulls = dict(ev.pulls, pixel_flat_field_mean_square=float((mean_sq - m2) / np.sqrt(v2 / max(n_pull, 1))))
    false_fail = (ev.false_fail_rate + 2 * FLAT_FIELD_RMS_TAIL
                  + n_pull * 2 * float(student_t.sf(FLAT_FIELD_MAX_PULL, nu)))
    metrics = dict(ev.metrics, pixel_flat_field_rms_mean=float(np.mean(rms)),
                   pixel_flat_field_rms_true=float(np.mean(rms_true)),
                   pixel_flat_field_pull_rms=pull_rms, pixel_flat_field_pull_max=pull_max,
                   pixel_flat_field_pull_mean_square=mean_sq)
    criteria = dict(ev.criteria, pixel_flat_field=f"(f - f_true)/sigma over all pixels (Student t, nu = {nu}): "
                                                  f"mean square {m2:.4f} +- {half_band:.4f} "
                                                  f"({FLAT_FIELD_RMS_TAIL:g} per side), max < {FLAT_FIELD_MAX_PULL}")
    return Evidence(passed=bool(ev.passed and ok), metrics=metrics, criteria=criteria, summary=ev.summary,
                    pulls=pulls, false_fail_rate=float(false_fail))


CONTRACT = CalibrationModule(
    codes=("I-DATA-COM-3141",),
    title="Illuminator: telescope-to-telescope flat-fielding from a uniform light source",
    inputs=(Port("pixel_charges", "", "charge (p.e.) per telescope, pixel and flash"),
            Port("uniformity", "", "relative beam intensity towards each telescope (lab-calibrated map)"),
            Port("source_position", "m", "position of the illuminator")),
    outputs=(Port("throughput", "", "photon to p.e. efficiency per telescope"),
             Port("relative_throughput", "", "throughput / array mean, with uncertainty"),
             Port("pixel_flat_field", "", "pixel flat-field coefficients f_ip (n_telescopes x n_pixels)"),
             Port("pixel_flat_field_rms", "", "rms of the pixel flat-field coefficients per camera")),
    sample=write_sample, run=run, check=check,
    references=("Gaug M. et al. 2014, Calibration strategies for the Cherenkov Telescope Array, Proc. SPIE 9149",
                "Gaug M. et al. 2019, ApJS 243, 11 (muon-ring throughput calibration of CTA)",
                "Bucholtz A. 1995, Appl. Opt. 34, 2765"),
    tests=("calib/array/tests/test_illuminator.py",),
    version=VERSION,
    config={
        "aerosol_extinction": "aerosol extinction coefficient along the illuminator path, 1/m (default: the input file's)",
        "aerosol_extinction_err": "its uncertainty, propagated to the throughputs (default: the input file's)",
    },
)
