"""Relative throughput of each telescope from a calibrated drone-borne light source (Octocopter).

Method (I-DATA-COM-3111), after the UAV-based calibration proposed for CTA (Brown 2018,
Astropart. Phys. 97, 1: 6-8 % between telescopes of one class) and flown over H.E.S.S.
(Brown, Muller, de Naurois & Clark 2019: consistent with the muon calibration at 5.4-5.8 %).  A pulsed source of calibrated radiant
intensity I0 (photons/sr) and known beam profile B(theta) hovers at a GPS-measured
position in the far field of each telescope in turn (the telescope points at it).  The
photon density at the mirror is

    rho_i = I0 B(theta_i) T_i / d_i^2,

theta_i the angle from the source axis (nadir) to the telescope, d_i the distance and T_i
the molecular transmission of the slant path (``calib.atmosphere.molecular``, US76).  The
throughput (photon -> photo-electron efficiency per unit mirror area) is
eps_i = <Q_i> / (A_i rho_i); relative throughputs eps_i / <eps> cancel I0 and most of T,
so telescopes of different types (LST/MST/SST) are inter-calibrated on one scale.
Uncertainty per telescope: the standard error of the mean charge over the flashes
(Poisson, excess noise, source jitter), the GPS distance error (2 sigma_d/d) and the
source's visit-to-visit stability, combined in quadrature.  Telescopes without charge, with
NaN charges or fewer than 2 flashes are flagged; fewer than two valid telescopes raise
CalibrationError.
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

__all__ = ["beam_profile", "photon_density", "throughputs", "CONTRACT"]

VERSION = "0.1.0"
WAVELENGTH_NM = 400.0
SITE_ALTITUDE_M = 2200.0


def beam_profile(theta_deg, sigma_deg: float = 20.0) -> np.ndarray:
    """Relative radiant intensity of the source versus angle from its axis (Gaussian beam)."""
    return np.exp(-0.5 * (np.asarray(theta_deg, dtype=float) / sigma_deg) ** 2)


def _geometry(source_xyz: np.ndarray, tel_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = source_xyz - tel_xyz
    d = np.linalg.norm(v, axis=1)
    theta = np.degrees(np.arccos(np.clip(v[:, 2] / d, -1, 1)))     # from nadir as seen from the source
    return d, theta


def slant_transmission(tel_xyz, source_xyz, molecular: MolecularProfile | None = None) -> np.ndarray:
    """Molecular transmission between telescope and source (vertical optical depth / cos)."""
    mol = molecular or MolecularProfile.us76()
    d, theta = _geometry(np.asarray(source_xyz, float), np.asarray(tel_xyz, float))
    h0 = SITE_ALTITUDE_M + np.asarray(tel_xyz, float)[:, 2]
    h1 = SITE_ALTITUDE_M + np.asarray(source_xyz, float)[:, 2]
    tau = np.array([mol.optical_depth(WAVELENGTH_NM * u.nm, a * u.m, b * u.m) for a, b in zip(h0, h1)])
    return np.exp(-tau / np.cos(np.radians(theta)))


def photon_density(intensity, source_xyz, tel_xyz, beam_sigma_deg: float = 20.0) -> np.ndarray:
    """Photons per m^2 at each telescope: I0 B(theta) T / d^2."""
    d, theta = _geometry(np.asarray(source_xyz, float), np.asarray(tel_xyz, float))
    return intensity * beam_profile(theta, beam_sigma_deg) * slant_transmission(tel_xyz, source_xyz) / d**2


def throughputs(charges, intensity, source_xyz, tel_xyz, mirror_area, *, position_error_m: float = 0.5,
                source_stability: float = 0.01, beam_sigma_deg: float = 20.0):
    """Per-telescope throughput eps_i = <Q_i>/(A_i rho_i), its error and a flag (1 = no valid charge)."""
    q = np.asarray(charges, dtype=float)
    if q.ndim != 2 or q.shape[0] != len(mirror_area):
        raise CalibrationError(f"charges must have shape (n_telescopes, n_flashes) with n_telescopes = "
                               f"{len(mirror_area)}; got {q.shape}")
    C.require_positive("the source intensity", intensity)
    C.require_positive("the mirror areas", mirror_area)
    tel_xyz = C.require_finite_positions("telescope positions", tel_xyz, q.shape[0])
    source_xyz = C.require_finite_positions("source positions", source_xyz, q.shape[0])
    C.require_positive("source-telescope distances", np.linalg.norm(source_xyz - tel_xyz, axis=1))
    bad = C.invalid_charges(q)
    qm, qe = C.mean_and_error(np.where(bad[:, None], np.nan, q))
    rho = photon_density(intensity, source_xyz, tel_xyz, beam_sigma_deg)
    d, _ = _geometry(np.asarray(source_xyz, float), np.asarray(tel_xyz, float))
    eff = qm / (np.asarray(mirror_area) * rho)
    # the distance error equals the per-axis GPS error (projection on the line of sight)
    rel = np.sqrt((qe / qm) ** 2 + (2 * position_error_m / d) ** 2 + source_stability**2)
    eff = np.where(bad, np.nan, eff)
    return eff, eff * rel, bad.astype(np.int32)


def write_sample(directory: Path, seed: int, n_flashes: int = 200) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = C.simulated_array(rng)
    n = len(arr["type"])
    tel = arr["position"]
    src_true = tel + np.column_stack([rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), rng.uniform(550, 650, n)])
    src_gps = src_true + rng.normal(0, 0.5, (n, 3))
    intensity = 3.5e8                                                         # photons / sr
    # the beam width is lab-calibrated to 20 +- 0.5 deg: the true one is drawn from that error
    beam_sigma, beam_sigma_err = 20.0, 0.5
    beam_true = beam_sigma + beam_sigma_err * rng.standard_normal()
    drift = 1 + 0.01 * rng.standard_normal(n)                                  # visit-to-visit stability
    mean_pe = arr["throughput"] * arr["mirror_area"] * photon_density(intensity, src_true, tel, beam_true) * drift
    q = C.flash_charges(rng, mean_pe, arr["enf_sq"], n_flashes, source_jitter=0.02)
    path = directory / "octocopter_sample.h5"
    with h5py.File(path, "w") as f:
        C.dump_array(f, arr)
        f.create_dataset("charges", data=q)
        f.create_dataset("source_position", data=src_gps)
        f.attrs["intensity"] = intensity
        f.attrs["position_error_m"] = 0.5
        f.attrs["source_stability"] = 0.01
        f.attrs["beam_sigma_deg"] = beam_sigma
        f.attrs["beam_sigma_err_deg"] = beam_sigma_err
        f["truth"].attrs["beam_sigma_deg"] = beam_true
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    with h5py.File(input, "r") as f:
        arr = C.load_array(f)
        q, src = f["charges"][()], f["source_position"][()]
        intensity = float(f.attrs["intensity"])
        pos_err, stab = float(f.attrs["position_error_m"]), float(f.attrs["source_stability"])
        beam = float(f.attrs.get("beam_sigma_deg", 20.0))
        beam_err = float(f.attrs.get("beam_sigma_err_deg", 0.0))
    beam = config.get("beam_sigma_deg", beam)
    eff, err, flag = throughputs(q, intensity, src, arr["position"], arr["mirror_area"],
                                 position_error_m=config.get("position_error_m", pos_err),
                                 source_stability=config.get("source_stability", stab), beam_sigma_deg=beam)
    rel = C.relative_throughputs(eff, err)
    # beam-width systematic: d ln B / d sigma = theta^2 / sigma^3, common to all telescopes (signed shift
    # of r_i for +1 sigma of the beam width; only the telescope-to-telescope part survives)
    _, theta = _geometry(np.asarray(src, float), np.asarray(arr["position"], float))
    dlnb = theta**2 / beam**3 * config.get("beam_sigma_err_deg", beam_err)
    good = np.isfinite(eff)
    shift = np.where(good, -rel[0] * (dlnb - np.mean(dlnb[good])), np.nan)
    t = C.throughput_table(arr, eff, err, flag, rel, np.abs(shift), shift)
    t.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    with h5py.File(input, "r") as f:
        truth = f["truth"]["throughput"][()]
    return C.check_throughputs(result, truth, "Octocopter")


CONTRACT = CalibrationModule(
    codes=("I-DATA-COM-3111",),
    title="Octocopter: relative telescope throughputs from a drone-borne calibrated light source",
    inputs=(Port("charges", "", "charge (p.e.) per telescope and flash"),
            Port("source_position", "m", "GPS position of the source for each telescope's visit"),
            Port("intensity", "1/sr", "calibrated radiant intensity of the source (photons per sr)")),
    outputs=(Port("throughput", "", "photon to p.e. efficiency per unit mirror area"),
             Port("relative_throughput", "", "throughput / array mean, with uncertainty")),
    sample=write_sample, run=run, check=check,
    references=("Brown A. M. 2018, On the prospects of cross-calibrating the Cherenkov Telescope Array with an "
                "airborne calibration platform, Astropart. Phys. 97, 1 (arXiv:1711.01413)",
                "Brown A. M., Muller J., de Naurois M., Clark P. 2019, Inter-calibration of atmospheric Cherenkov "
                "telescopes with UAV-based airborne calibration system, Proc. 36th ICRC",
                "Bucholtz A. 1995, Appl. Opt. 34, 2765"),
    tests=("calib/array/tests/test_octocopter.py",),
    version=VERSION,
    config={
        "position_error_m": "uncertainty of the drone position, m (default: the input file's)",
        "source_stability": "relative stability of the drone light source (default: the input file's)",
        "beam_sigma_deg": "angular width of the drone light beam, deg (default: the input file's)",
        "beam_sigma_err_deg": "its uncertainty, deg (default: the input file's)",
    },
)
