"""Relative inter-calibration of telescopes with a Central Laser Facility (CLF).

Method (I-DATA-COM-3121), as for the Pierre Auger CLF (Fick et al. 2006) and its proposed use
for CTA (Gaug et al. 2014, arXiv:1404.5639: relative precision better than 5 %, absolute
4-11 %).  A vertical laser beam of known pulse energy E (measured shot by shot) at
wavelength lambda is seen side-on by every telescope.  The photons reaching telescope i
from the beam between heights h1 and h2 (the track in its field of view) are

    n_i = N_gamma int_h1^h2 T_up(h) [alpha_mol(h) P_mol(theta)/4pi + alpha_aer(h) P_HG(theta)/4pi]
                         T_down,i(h) A_i / R_i(h)^2 dh,

with N_gamma = E lambda/(h c), alpha_mol from ``calib.atmosphere.molecular`` (US76, Bucholtz
cross-section and Rayleigh phase function with depolarisation), the aerosols from a
measured VAOD profile (Henyey-Greenstein phase function, g = 0.7), theta the scattering
angle, R_i the distance from the beam element to the telescope and T the transmissions up
the beam and along the slant path down.  eps_i = <Q_i / E> / (n_i / E) per telescope;
relative throughputs eps_i / <eps> are formed shot by shot (the pulse energy cancels) and are
nearly independent of the atmosphere because all telescopes see the same beam.
Uncertainties: the statistical error is the standard error over the shots
(``relative_throughput_err``); the aerosol systematic (``relative_throughput_syst``) is
propagated by varying the VAOD by +- its error (only the part that differs between
telescopes matters for relative throughputs).
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
from astropy.table import Table

from calib.array import _common as C
from calib.atmosphere.molecular import MolecularProfile, rayleigh_phase_function
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["henyey_greenstein", "photons_at_telescopes", "throughputs", "CONTRACT"]

VERSION = "0.1.0"
H_PLANCK = 6.62607015e-34
C_LIGHT = 299792458.0
SITE_ALTITUDE_M = 2200.0


def henyey_greenstein(theta_rad, g: float = 0.7) -> np.ndarray:
    """Henyey-Greenstein phase function normalised to 4 pi."""
    c = np.cos(theta_rad)
    return (1 - g**2) / (1 + g**2 - 2 * g * c) ** 1.5


def photons_at_telescopes(energy_j: float, wavelength_nm: float, laser_xy, tel_xyz, mirror_area,
                          h_range=(5500.0, 6500.0), vaod_top: float = 0.0, aerosol_scale_m: float = 1500.0,
                          molecular: MolecularProfile | None = None, step_m: float = 10.0) -> np.ndarray:
    """Photons collected by each telescope from the beam between ``h_range`` (m above ground) for one shot.

    Aerosols: extinction alpha_aer(h) = (vaod_top / H) exp(-h/H) (scale height ``aerosol_scale_m``).
    """
    mol = molecular or MolecularProfile.us76()
    lam = wavelength_nm * u.nm
    h = np.arange(0.0, h_range[1] + step_m, step_m) + 0.5 * step_m
    a_mol = mol.extinction((SITE_ALTITUDE_M + h) * u.m, lam).value
    a_aer = vaod_top / aerosol_scale_m * np.exp(-h / aerosol_scale_m)
    a_tot = a_mol + a_aer
    tau_up = np.cumsum(a_tot) * step_m - 0.5 * a_tot * step_m
    n_gamma = energy_j * wavelength_nm * 1e-9 / (H_PLANCK * C_LIGHT)
    tel = np.asarray(tel_xyz, dtype=float)
    lx, ly = laser_xy
    dx = tel[:, 0] - lx
    dy = tel[:, 1] - ly
    horiz = np.hypot(dx, dy)[:, None]                          # (n_tel, 1)
    dz = h[None, :] - tel[:, 2][:, None]                         # beam element above the telescope
    r = np.sqrt(horiz**2 + dz**2)
    theta = np.pi / 2 + np.arctan2(dz, horiz)                    # beam goes up; light goes down-out
    p_mol = rayleigh_phase_function(theta * u.rad, lam)
    scatter = (a_mol[None, :] * p_mol + a_aer[None, :] * henyey_greenstein(theta)) / (4 * np.pi)
    tau_down = tau_up[None, :] * r / np.maximum(dz, 1.0)         # slant path through the same layers
    integrand = np.exp(-tau_up)[None, :] * scatter * np.exp(-tau_down) / r**2
    sel = (h >= h_range[0]) & (h <= h_range[1])
    return n_gamma * np.asarray(mirror_area, dtype=float) * np.sum(integrand[:, sel], axis=1) * step_m


def throughputs(charges, shot_energy_j, laser_xy, tel_xyz, mirror_area, *, wavelength_nm=355.0,
                h_range=(5500.0, 6500.0), vaod_top=0.05, vaod_err=0.01):
    """eps_i = <Q_i/E> / (n_i/E) and its total error, a flag (1 = no valid charge) per telescope,
    the relative throughputs (mean over shots of eps_i,s / <eps>_s, in which the shot energy
    cancels) with their statistical errors, and their aerosol systematic: the signed shift of each
    relative throughput for a +1 sigma VAOD change (fully correlated between telescopes)."""
    q = np.asarray(charges, dtype=float)
    e = np.asarray(shot_energy_j, dtype=float)
    if q.ndim != 2 or q.shape[0] != len(mirror_area) or e.shape != (q.shape[1],):
        raise CalibrationError(f"charges must be (n_telescopes={len(mirror_area)}, n_shots) and shot energies "
                               f"(n_shots,); got {q.shape} and {e.shape}")
    if np.any(~np.isfinite(e)) or np.any(e <= 0):
        raise CalibrationError("every laser shot needs a positive, finite measured energy")
    C.require_positive("the mirror areas", mirror_area)
    C.require_positive("the laser wavelength", wavelength_nm)
    tel_xyz = C.require_finite_positions("telescope positions", tel_xyz, q.shape[0])
    if not np.all(np.isfinite(np.asarray(laser_xy, dtype=float))):
        raise CalibrationError("the laser position must be finite")
    if not (np.isfinite(vaod_top) and vaod_top >= 0 and np.isfinite(vaod_err) and vaod_err >= 0):
        raise CalibrationError("the aerosol optical depth and its error must be finite and non-negative")
    bad = C.invalid_charges(q)
    qn = np.where(bad[:, None], np.nan, q / e[None, :])            # p.e. per joule
    qm, qe = C.mean_and_error(qn)
    per_joule = photons_at_telescopes(1.0, wavelength_nm, laser_xy, tel_xyz, mirror_area, h_range, vaod_top)
    eff = np.where(bad, np.nan, qm / per_joule)
    # relative throughputs shot by shot: the shot energy (and its measurement error) cancels
    eff_shot = qn / per_joule[:, None]
    r_shot = eff_shot / np.mean(eff_shot[~bad], axis=0)[None, :]
    r, r_stat = C.mean_and_error(r_shot)
    # aerosol uncertainty: only the telescope-to-telescope part matters for relative throughputs
    up = photons_at_telescopes(1.0, wavelength_nm, laser_xy, tel_xyz, mirror_area, h_range, vaod_top + vaod_err)
    dn = photons_at_telescopes(1.0, wavelength_nm, laser_xy, tel_xyz, mirror_area, h_range,
                               max(vaod_top - vaod_err, 0.0))
    d_rel = 0.5 * (up - dn) / per_joule
    d_rel = d_rel - np.mean(d_rel[~bad]) if np.any(~bad) else d_rel
    rel = np.sqrt((qe / qm) ** 2 + d_rel**2)
    r_syst = r * d_rel
    return (eff, eff * rel, bad.astype(np.int32),
            (np.where(bad, np.nan, r), np.where(bad, np.nan, r_stat)), np.where(bad, np.nan, r_syst))


def write_sample(directory: Path, seed: int, n_shots: int = 100) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = C.simulated_array(rng)
    laser_xy = (2500.0, 1200.0)
    vaod_known, vaod_err = 0.05, 0.01
    # the LIDAR measured the VAOD with an error: the true value is drawn from that error, not the measured one
    vaod_true = max(0.0, vaod_known + vaod_err * rng.standard_normal())
    energy = 5e-3 * (1 + 0.03 * rng.standard_normal(n_shots))                  # J, measured per shot
    per_joule = photons_at_telescopes(1.0, 355.0, laser_xy, arr["position"], arr["mirror_area"],
                                      vaod_top=max(vaod_true, 0.0))
    mean_pe = (arr["throughput"] * per_joule)[:, None] * energy[None, :]
    npe = rng.poisson(mean_pe)
    q = npe + rng.standard_normal(npe.shape) * np.sqrt(npe * (arr["enf_sq"][:, None] - 1))
    # per-shot, per-telescope fluctuation of the track integration (NSB, image cleaning, clipping): 5 %
    q = q * (1 + 0.05 * rng.standard_normal(q.shape))
    path = directory / "clf_sample.h5"
    with h5py.File(path, "w") as f:
        C.dump_array(f, arr)
        f.create_dataset("charges", data=q)
        f.create_dataset("shot_energy", data=energy * (1 + 0.005 * rng.standard_normal(n_shots)))
        f.attrs["laser_xy"] = laser_xy
        f.attrs["wavelength_nm"] = 355.0
        f.attrs["vaod"] = vaod_known
        f.attrs["vaod_err"] = vaod_err
        f["truth"].attrs["vaod"] = vaod_true
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    with h5py.File(input, "r") as f:
        arr = C.load_array(f)
        q, e = f["charges"][()], f["shot_energy"][()]
        laser_xy = tuple(f.attrs["laser_xy"])
        lam, vaod, vaod_err = float(f.attrs["wavelength_nm"]), float(f.attrs["vaod"]), float(f.attrs["vaod_err"])
    eff, err, flag, rel, syst = throughputs(q, e, laser_xy, arr["position"], arr["mirror_area"], wavelength_nm=lam,
                                      vaod_top=config.get("vaod", vaod), vaod_err=config.get("vaod_err", vaod_err))
    t = C.throughput_table(arr, eff, err, flag, rel, np.abs(syst), syst)
    t.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    with h5py.File(input, "r") as f:
        truth = f["truth"]["throughput"][()]
    return C.check_throughputs(result, truth, "CLF")


CONTRACT = CalibrationModule(
    codes=("I-DATA-COM-3121",),
    title="Central Laser Facility: relative inter-calibration of telescopes from side-scattered laser light",
    inputs=(Port("charges", "", "integrated track charge (p.e.) per telescope and laser shot"),
            Port("shot_energy", "J", "measured energy of each laser shot"),
            Port("laser_xy", "m", "laser position"), Port("vaod", "", "aerosol optical depth (LIDAR)")),
    outputs=(Port("throughput", "", "photon to p.e. efficiency per telescope"),
             Port("relative_throughput", "", "throughput / array mean, with uncertainty")),
    sample=write_sample, run=run, check=check,
    references=("Gaug M. et al. 2014, On the possibility of using vertically pointing Central Laser Facilities "
                "to calibrate the Cherenkov Telescope Array (arXiv:1404.5639)",
                "Fick B. et al. 2006, The Central Laser Facility at the Pierre Auger Observatory, JINST 1, P11003",
                "Bucholtz A. 1995, Appl. Opt. 34, 2765"),
    tests=("calib/array/tests/test_clf.py",),
    version=VERSION,
    config={
        "vaod": "vertical aerosol optical depth above the array at the laser wavelength (default: the input file's)",
        "vaod_err": "its uncertainty (default: the input file's)",
    },
)
