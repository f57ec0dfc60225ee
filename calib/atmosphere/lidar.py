"""Raman LIDAR: simulation of elastic and N2-Raman returns, and aerosol retrieval.

Method (I-DATA-COM-3001).  Simulated signals (photon counts per range bin, summed over the
shots of one line of sight), with overlap O(r), background and Poisson noise:

    P(r, l0)  = K0 O(r) [beta_mol + beta_aer](r) dr / r^2 exp(-2 int_0^r (alpha_mol + alpha_aer)) + B0
    P_R(r)    = K_R O(r) N_N2(r) dsigma_R/dOmega(pi) dr / r^2
                 exp(-int_0^r [alpha(l0) + alpha(lR)]) + B_R,     alpha_aer(lR) = alpha_aer(l0) (l0/lR)^a

Retrieval, vectorised over profiles:

* Background from the pre-trigger bins; Poisson variance of every net count.
* Raman extinction (Ansmann et al. 1990, Opt. Lett. 15, 746; 1992, Appl. Phys. B 55, 18):
  alpha_aer(r, l0) = { d/dr ln[N_N2(r) / (P_R(r) r^2)] - alpha_mol(l0) - alpha_mol(lR) } / [1 + (l0/lR)^a]
  with the derivative a sliding least-squares slope whose window grows with range
  (max(window_min, window_fraction r)); the molecular term passes through the same window,
  so the result is the true extinction seen through the window's (parabolic) averaging kernel.
* Aerosol optical depth from the window-averaged Raman log-signal itself (the integral of the
  derivative), below the first valid bin the extinction is taken constant down to the
  ground; vertical AOD = slant AOD cos(z), transmission T_aer(h) = exp(-VAOD(h)), along the
  line of sight exp(-AOD).  Transmission at 3, 6, 9, 12 km above ground (MAGIC/LST practice).
* Elastic backscatter: Klett (1981, Appl. Opt. 20, 211) - Fernald (1984, Appl. Opt. 23, 652)
  backward solution from an aerosol-free reference range r_m with an assumed aerosol lidar
  ratio S_a:  Y(r) = X(r) exp(2(S_a - S_m) int_r^rm beta_mol),
  beta_aer + beta_mol = Y / {X(r_m)/beta(r_m) + 2 S_a int_r^rm Y}.
* Raman backscatter (Ansmann et al. 1992): scattering ratio R = beta_tot/beta_mol from the
  elastic-to-Raman ratio (overlap and lidar constants cancel; normalised to 1 in the reference
  range; corrected for the differential aerosol transmission), beta_aer = (R - 1) beta_mol, and
  the aerosol lidar ratio alpha_aer/beta_aer.
* Clouds: from the same scattering ratio: layers where R - 1 exceeds
  a threshold and 5 standard deviations give base and top; the layer's optical depth is the
  drop of the Raman log-signal across it (cloud Angstrom exponent 0 by default).
* Uncertainties from photon statistics: Var(ln P_R) = Var(P_R)/P_R^2 propagated linearly
  through the window sums (exact for the least-squares slope and mean).

Bad input (negative counts, NaN, wrong shape, a profile too short to reach the reference
range, no Raman signal) raises CalibrationError; bins without enough signal are flagged
(``LidarFlag``) and set to NaN, as is the Klett-Fernald solution of a profile without
significant elastic signal at the reference range.
"""
from __future__ import annotations

import enum
import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import astropy.units as u
import h5py
import numba
import numpy as np
from astropy.table import Table

from calib.atmosphere._jit import njit
from calib.atmosphere.molecular import (MolecularProfile, N2_FRACTION, molecular_lidar_ratio,
                                        raman_n2_backscatter_cross_section, raman_wavelength)
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "LidarConfig", "AerosolProfile", "LidarFlag", "LidarRetrieval", "CloudLayer",
    "GENERIC_RAMAN_LIDAR", "ARCADE_LIDAR",
    "simulate_lidar", "expected_signals", "retrieve", "sliding_slope", "sliding_mean", "window_half_widths",
    "klett_fernald", "transmission_at", "retrieval_table", "site_atmosphere", "CONTRACT",
]

VERSION = "0.1.0"
H_PLANCK = 6.62607015e-34
C_LIGHT = 299792458.0
TRANSMISSION_HEIGHTS = (3000.0, 6000.0, 9000.0, 12000.0)  # m above ground


@dataclass(frozen=True)
class LidarConfig:
    """Instrument and geometry of a Raman LIDAR (SI units, names carry the unit)."""

    name: str = "CTAO Raman LIDAR (generic 355/387 nm)"
    wavelength_nm: float = 355.0
    raman_wavelength_nm: float = float(raman_wavelength(355.0 * u.nm).value)
    bin_width_m: float = 7.5
    n_bins: int = 3000
    n_background_bins: int = 1000          # pre-trigger bins recorded per profile
    zenith_deg: float = 0.0
    site_altitude_m: float = 2200.0
    full_overlap_m: float = 300.0
    pulse_energy_J: float = 0.1
    mirror_area_m2: float = 2.54           # 1.8 m diameter
    efficiency_elastic: float = 2e-4       # includes neutral-density attenuation of the elastic line
    efficiency_raman: float = 0.10
    n_shots: int = 600                     # one minute at 10 Hz
    background_elastic: float = 2e-3       # counts per bin per shot (night sky, dark counts)
    background_raman: float = 2e-3

    @property
    def ranges_m(self) -> np.ndarray:
        return (np.arange(self.n_bins) + 0.5) * self.bin_width_m

    @property
    def altitudes_m(self) -> np.ndarray:
        return self.site_altitude_m + self.ranges_m * np.cos(np.radians(self.zenith_deg))

    def overlap(self, r: np.ndarray) -> np.ndarray:
        """Geometric overlap of laser beam and receiver field of view: smooth rise to exactly 1
        at ``full_overlap_m`` (zero slope there)."""
        x = np.clip(np.asarray(r, dtype=float) / self.full_overlap_m, 0.0, 1.0)
        return 1.0 - (1.0 - x) ** 3 * (1.0 + 3.0 * x)


#: A 1.8 m class Raman LIDAR at CTAO-North (numbers representative of the Barcelona pathfinder)
GENERIC_RAMAN_LIDAR = LidarConfig()

#: The ARCADE Raman LIDAR (INFN; 355 nm elastic, 387 nm N2-Raman; tested at L'Aquila and
#: deployed at CTAO-North).  Instrument numbers are representative, not the datasheet:
#: a 0.5 m receiver, 3.75 m bins to 18.75 km, 2 minutes of shots at 10 Hz, overlap complete at 500 m.
ARCADE_LIDAR = LidarConfig(
    name="ARCADE Raman LIDAR (355/387 nm)", bin_width_m=3.75, n_bins=5000,
    full_overlap_m=500.0, pulse_energy_J=0.1, mirror_area_m2=0.196, efficiency_elastic=2e-3,
    efficiency_raman=0.15, n_shots=1200, background_elastic=5e-4, background_raman=5e-4)


@dataclass(frozen=True)
class AerosolProfile:
    """Aerosol and cloud extinction at the elastic wavelength on an altitude grid (m a.s.l.).

    Piecewise constant: level i holds from altitude[i] to altitude[i+1] (the last to infinity).
    """

    altitude: np.ndarray         # m a.s.l., increasing
    extinction: np.ndarray       # 1/m at the elastic wavelength
    lidar_ratio: np.ndarray      # sr
    angstrom: np.ndarray         # extinction Angstrom exponent

    def at(self, altitude_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = np.clip(np.searchsorted(self.altitude, altitude_m, side="right") - 1, 0, len(self.altitude) - 1)
        below = altitude_m < self.altitude[0]
        alpha = np.where(below, self.extinction[0], self.extinction[i])
        return alpha, self.lidar_ratio[i], self.angstrom[i]

    @classmethod
    def boundary_layer_and_cloud(cls, site_altitude_m=2200.0, vaod_bl=0.075, bl_top_m=1500.0,
                                 free_troposphere_alpha=2e-6, cloud_base_m=8000.0,
                                 cloud_top_m=8450.0, cloud_vod=0.10, angstrom=1.0,
                                 lidar_ratio=50.0, cloud_lidar_ratio=25.0) -> "AerosolProfile":
        """A boundary layer of VAOD ``vaod_bl`` (heights above ground), a weak free troposphere
        up to 6 km and, if ``cloud_vod`` > 0, a thin cloud layer (Angstrom exponent 0)."""
        z = site_altitude_m + np.array([-100.0, bl_top_m, 6000.0, cloud_base_m, cloud_top_m])
        alpha = np.array([vaod_bl / (bl_top_m + 100.0), free_troposphere_alpha, 0.0,
                          cloud_vod / (cloud_top_m - cloud_base_m), 0.0])
        ratio = np.array([lidar_ratio, lidar_ratio, lidar_ratio, cloud_lidar_ratio, lidar_ratio])
        angs = np.array([angstrom, angstrom, angstrom, 0.0, angstrom])
        return cls(z, alpha, ratio, angs)


class LidarFlag(enum.IntFlag):
    """Bits of the per-bin ``flag`` of a retrieval; 0 = good."""

    BELOW_OVERLAP = 1      #: the window reaches below complete overlap (VAOD there: extinction held constant)
    LOW_SIGNAL = 2         #: Raman net signal below the significance cut within the window
    WINDOW_TRUNCATED = 4   #: the smoothing window does not fit inside the recorded range
    CLOUD = 8              #: bin inside a detected cloud layer
    BEYOND_REFERENCE = 16  #: above the reference range: no Klett-Fernald solution
    NO_ELASTIC_REFERENCE = 32  #: no significant elastic signal at the reference range: no Klett-Fernald solution


@dataclass(frozen=True)
class CloudLayer:
    base_m: float            # m a.s.l.
    top_m: float             # m a.s.l.
    vod: float               # vertical optical depth at the elastic wavelength
    vod_err: float
    max_scattering_ratio: float
    top_reached: bool        # False if the Raman signal vanished inside the layer (vod is a lower limit)


@dataclass
class LidarRetrieval:
    """Per-profile, per-bin results (arrays (n_profiles, n_bins)); see ``retrieval_table``."""

    range_m: np.ndarray
    altitude_m: np.ndarray
    alpha_aer: np.ndarray
    alpha_aer_err: np.ndarray
    vaod: np.ndarray
    vaod_err: np.ndarray
    beta_aer_klett: np.ndarray
    alpha_aer_klett: np.ndarray
    scattering_ratio: np.ndarray
    beta_aer_raman: np.ndarray
    scattering_ratio_err: np.ndarray
    flag: np.ndarray
    half_width: np.ndarray
    clouds: list[list[CloudLayer]] = field(default_factory=list)
    config: LidarConfig = GENERIC_RAMAN_LIDAR
    #: relative systematic of alpha_aer and VAOD from the assumed Angstrom exponent's uncertainty
    angstrom_relative_syst: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def transmission(self) -> np.ndarray:
        """Vertical aerosol transmission from the ground to each altitude."""
        return np.exp(-self.vaod)

    @property
    def transmission_los(self) -> np.ndarray:
        """Aerosol transmission along the line of sight from the LIDAR to each range."""
        return np.exp(-self.vaod / np.cos(np.radians(self.config.zenith_deg)))


# ---------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------

def _cumulative_midpoint(alpha: np.ndarray, dr: float) -> np.ndarray:
    """Optical depth from r=0 to each bin centre for bin-constant extinction."""
    c = np.cumsum(alpha, axis=-1) * dr
    return c - 0.5 * alpha * dr


def expected_signals(config: LidarConfig, aerosol: AerosolProfile,
                     molecular: MolecularProfile | None = None) -> dict[str, np.ndarray]:
    """Noise-free mean counts per bin of both channels and the truth on the range grid."""
    mol = molecular or MolecularProfile.us76()
    r = config.ranges_m
    z = config.altitudes_m
    dr = config.bin_width_m
    lam0, lamr = config.wavelength_nm * u.nm, config.raman_wavelength_nm * u.nm
    n_air = mol.number_density(z * u.m).value
    a_mol0 = mol.extinction(z * u.m, lam0).value
    a_molr = mol.extinction(z * u.m, lamr).value
    b_mol0 = a_mol0 / molecular_lidar_ratio(lam0).value
    a_aer0, s_aer, ang = aerosol.at(z)
    a_aerr = a_aer0 * (config.wavelength_nm / config.raman_wavelength_nm) ** ang
    b_aer0 = np.divide(a_aer0, s_aer, out=np.zeros_like(a_aer0), where=s_aer > 0)
    tau0 = _cumulative_midpoint(a_mol0 + a_aer0, dr)
    taur = _cumulative_midpoint(a_molr + a_aerr, dr)
    photons = config.pulse_energy_J * config.wavelength_nm * 1e-9 / (H_PLANCK * C_LIGHT)
    k = config.n_shots * photons * config.mirror_area_m2 * config.overlap(r) * dr / r**2
    mu_e = k * config.efficiency_elastic * (b_mol0 + b_aer0) * np.exp(-2 * tau0)
    sig_r = raman_n2_backscatter_cross_section(lam0).value
    mu_r = k * config.efficiency_raman * N2_FRACTION * n_air * sig_r * np.exp(-tau0 - taur)
    cosz = np.cos(np.radians(config.zenith_deg))
    return {
        "elastic": mu_e, "raman": mu_r,
        "background_elastic": config.n_shots * config.background_elastic,
        "background_raman": config.n_shots * config.background_raman,
        "alpha_aer": a_aer0, "beta_aer": b_aer0,
        "tau_aer_slant": _cumulative_midpoint(a_aer0, dr),
        "vaod": _cumulative_midpoint(a_aer0, dr) * cosz,
    }


def simulate_lidar(config: LidarConfig, aerosol: AerosolProfile, n_profiles: int = 1,
                   rng: np.random.Generator | int | None = None,
                   molecular: MolecularProfile | None = None) -> dict[str, np.ndarray]:
    """Poisson photon counts of ``n_profiles`` independent lines of sight (same atmosphere).

    Returns elastic, raman (n_profiles, n_bins), pretrigger_elastic, pretrigger_raman
    (n_profiles, n_background_bins) and the truth (alpha_aer, beta_aer, vaod on the bins).
    """
    rng = np.random.default_rng(0 if rng is None else rng)   # seeded: reproducible by default
    mean = expected_signals(config, aerosol, molecular)
    shape = (n_profiles, config.n_bins)
    bshape = (n_profiles, config.n_background_bins)
    out = {
        "elastic": rng.poisson(mean["elastic"] + mean["background_elastic"], shape).astype(np.float64),
        "raman": rng.poisson(mean["raman"] + mean["background_raman"], shape).astype(np.float64),
        "pretrigger_elastic": rng.poisson(mean["background_elastic"], bshape).astype(np.float64),
        "pretrigger_raman": rng.poisson(mean["background_raman"], bshape).astype(np.float64),
    }
    out.update({k: mean[k] for k in ("alpha_aer", "beta_aer", "vaod", "tau_aer_slant")})
    return out


# ---------------------------------------------------------------------------------------
# window operators (vectorised over profiles with cumulative sums)
# ---------------------------------------------------------------------------------------

def window_half_widths(config: LidarConfig, window_min_m: float = 150.0,
                       window_fraction: float = 0.1) -> np.ndarray:
    """Half-width (bins) of the sliding window at each range: full width max(min, fraction * r)."""
    width = np.maximum(window_min_m, window_fraction * config.ranges_m)
    return np.maximum(1, np.round(width / (2 * config.bin_width_m))).astype(np.int64)


def _window_sums(values: np.ndarray, half: np.ndarray, power: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum over j in [i-h, i+h] of (j-i)^power * values_j, for each i; and a validity mask."""
    n = values.shape[-1]
    i = np.arange(n)
    lo = i - half
    hi = i + half + 1
    ok = (lo >= 0) & (hi <= n)
    lo_c = np.clip(lo, 0, n)
    hi_c = np.clip(hi, 0, n)
    j = np.arange(n, dtype=np.float64)
    pad = np.zeros(values.shape[:-1] + (1,))
    total = 0.0
    for k in range(power + 1):
        # (j - i)^p = sum_k C(p,k) j^k (-i)^(p-k)
        coeff = float(math.comb(power, k))
        c = np.concatenate([pad, np.cumsum(values * j**k, axis=-1)], axis=-1)
        s = c[..., hi_c] - c[..., lo_c]
        total = total + coeff * s * (-i.astype(np.float64)) ** (power - k)
    return total, ok


def sliding_slope(y: np.ndarray, half: np.ndarray, var: np.ndarray | None = None):
    """Least-squares slope (per bin) of ``y`` in windows [i-h, i+h]; its variance if ``var`` is given."""
    h = half.astype(np.float64)
    sxx = h * (h + 1) * (2 * h + 1) / 3.0
    s1, ok = _window_sums(y, half, 1)
    slope = s1 / sxx
    if var is None:
        return slope, ok
    v2, _ = _window_sums(var, half, 2)
    return slope, v2 / sxx**2, ok


def sliding_mean(y: np.ndarray, half: np.ndarray, var: np.ndarray | None = None):
    """Mean of ``y`` in windows [i-h, i+h]; its variance if ``var`` is given."""
    m = 2.0 * half + 1.0
    s0, ok = _window_sums(y, half, 0)
    if var is None:
        return s0 / m, ok
    v0, _ = _window_sums(var, half, 0)
    return s0 / m, v0 / m**2, ok


# ---------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------

def _as_profiles(x, name: str, n_bins: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[np.newaxis, :]
    if a.ndim != 2:
        raise CalibrationError(f"{name} must have shape (n_profiles, n_bins); got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise CalibrationError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise CalibrationError(f"{name} contains NaN or infinite counts (first at profile {bad[0]}, bin {bad[1]})")
    if np.any(a < 0):
        bad = np.argwhere(a < 0)[0]
        raise CalibrationError(f"{name} contains negative photon counts (first at profile {bad[0]}, bin {bad[1]}): "
                               "raw photon-counting signals cannot be negative; pass the counts before background subtraction")
    if n_bins is not None and a.shape[1] != n_bins:
        raise CalibrationError(f"{name} has {a.shape[1]} range bins but the LIDAR configuration has {n_bins}")
    return a


def _background(pre: np.ndarray | None, signal: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if pre is None:
        tail = signal[:, -max(50, signal.shape[1] // 20):]
        return tail.mean(axis=1), tail.mean(axis=1) / tail.shape[1]
    pre = _as_profiles(pre, f"pre-trigger {name} counts")
    if pre.shape[0] != signal.shape[0]:
        raise CalibrationError(f"pre-trigger {name} counts have {pre.shape[0]} profiles, the signal {signal.shape[0]}")
    mean = pre.mean(axis=1)
    return mean, np.maximum(mean, 1.0 / pre.shape[1]) / pre.shape[1]


def klett_fernald(x: np.ndarray, beta_mol: np.ndarray, dr: float, lidar_ratio: float,
                  molecular_ratio: float, i_ref: int, ref_half: int) -> np.ndarray:
    """Backward Klett-Fernald inversion of range-corrected elastic signals ``x`` (n_profiles, n_bins).

    The reference is the aerosol-free bin ``i_ref``: X(r_m)/beta(r_m) is estimated from the ratio
    of window sums of X and beta_mol over i_ref +- ref_half.  Returns beta_aer (1/(m sr)); NaN
    beyond the reference bin.
    """
    n = x.shape[1]
    lo, hi = max(0, i_ref - ref_half), min(n, i_ref + ref_half + 1)
    xm_over_bm = x[:, lo:hi].sum(axis=1) / beta_mol[lo:hi].sum()                  # (n_prof,)
    # integral of beta_mol from r to r_m (reverse cumulative, trapezoid)
    bm = beta_mol[: i_ref + 1]
    seg = 0.5 * (bm[1:] + bm[:-1]) * dr
    int_bm = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])                   # (i_ref+1,)
    y = x[:, : i_ref + 1] * np.exp(2.0 * (lidar_ratio - molecular_ratio) * int_bm)
    segy = 0.5 * (y[:, 1:] + y[:, :-1]) * dr
    int_y = np.concatenate([np.cumsum(segy[:, ::-1], axis=1)[:, ::-1], np.zeros((x.shape[0], 1))], axis=1)
    beta_tot = y / (xm_over_bm[:, None] + 2.0 * lidar_ratio * int_y)
    out = np.full(x.shape, np.nan)
    out[:, : i_ref + 1] = beta_tot - bm
    return out


@njit(parallel=True)
def _raman_windows(ra, bg, vbg, log_n, r, r_overlap, half, min_snr):
    """Per profile: y = log_n - ln(P_R - B), Var(y); window slope/mean via prefix sums; validity."""
    n_prof, n = ra.shape
    slope = np.full((n_prof, n), np.nan)
    vslope = np.full((n_prof, n), np.nan)
    ybar = np.full((n_prof, n), np.nan)
    vybar = np.full((n_prof, n), np.nan)
    valid = np.zeros((n_prof, n), dtype=np.bool_)
    n_good = np.zeros(n_prof, dtype=np.int64)
    for p in numba.prange(n_prof):
        c0 = np.zeros(n + 1)
        c1 = np.zeros(n + 1)
        w0 = np.zeros(n + 1)
        w1 = np.zeros(n + 1)
        w2 = np.zeros(n + 1)
        nb = np.zeros(n + 1)
        first_bad = n
        for j in range(n):
            s = ra[p, j] - bg[p]
            v = max(ra[p, j], 1.0) + vbg[p]
            g = (s > min_snr * np.sqrt(v)) and (r[j] >= r_overlap)
            y = 0.0
            vy = 0.0
            if g:
                y = log_n[j] - np.log(s)
                vy = v / (s * s)
                n_good[p] += 1
            elif r[j] >= r_overlap and first_bad == n:
                first_bad = j
            c0[j + 1] = c0[j] + y
            c1[j + 1] = c1[j] + j * y
            w0[j + 1] = w0[j] + vy
            w1[j + 1] = w1[j] + j * vy
            w2[j + 1] = w2[j] + j * j * vy
            nb[j + 1] = nb[j] + (0.0 if g else 1.0)
        for i in range(n):
            h = half[i]
            lo = i - h
            hi = i + h + 1
            if lo < 0 or hi > n or hi - 1 >= first_bad or nb[hi] - nb[lo] > 0.5:
                continue
            hf = float(h)
            sxx = hf * (hf + 1.0) * (2.0 * hf + 1.0) / 3.0
            m = 2.0 * hf + 1.0
            s0 = c0[hi] - c0[lo]
            s1 = (c1[hi] - c1[lo]) - i * s0
            v0 = w0[hi] - w0[lo]
            v2 = (w2[hi] - w2[lo]) - 2.0 * i * (w1[hi] - w1[lo]) + i * i * v0
            slope[p, i] = s1 / sxx
            vslope[p, i] = v2 / (sxx * sxx)
            ybar[p, i] = s0 / m
            vybar[p, i] = v0 / (m * m)
            valid[p, i] = True
    return slope, vslope, ybar, vybar, valid, n_good


@njit(parallel=True)
def _scattering_ratio(el, ra, bg_e, vbg_e, bg_r, vbg_r, corr, r, r_overlap, k, min_snr, i0, i1, threshold):
    """Boxcar (2k+1 bins) elastic/Raman ratio times N_N2/beta_mol, normalised over bins [i0, i1);
    and the cloud mask R - 1 > threshold and > 5 sigma."""
    n_prof, n = ra.shape
    out = np.full((n_prof, n), np.nan)
    err = np.full((n_prof, n), np.nan)
    above = np.zeros((n_prof, n), dtype=np.bool_)
    for p in numba.prange(n_prof):
        ce = np.zeros(n + 1)
        cr = np.zeros(n + 1)
        ve = np.zeros(n + 1)
        vr = np.zeros(n + 1)
        for j in range(n):
            ce[j + 1] = ce[j] + el[p, j] - bg_e[p]
            cr[j + 1] = cr[j] + ra[p, j] - bg_r[p]
            ve[j + 1] = ve[j] + max(el[p, j], 1.0) + vbg_e[p]
            vr[j + 1] = vr[j] + max(ra[p, j], 1.0) + vbg_r[p]
        se_ref = ce[i1] - ce[i0]
        sr_ref = cr[i1] - cr[i0]
        if se_ref <= 0 or sr_ref <= 0:
            continue
        cmean = 0.0
        for j in range(i0, i1):
            cmean += corr[j]
        norm = se_ref / sr_ref * cmean / (i1 - i0)
        for i in range(k, n - k):
            if r[i] < r_overlap:
                continue
            se = ce[i + k + 1] - ce[i - k]
            sr = cr[i + k + 1] - cr[i - k]
            vse = ve[i + k + 1] - ve[i - k]
            vsr = vr[i + k + 1] - vr[i - k]
            if se <= 0 or sr <= min_snr * np.sqrt(vsr):
                continue
            q = se / sr * corr[i] / norm
            e = q * np.sqrt(vse / (se * se) + vsr / (sr * sr))
            out[p, i] = q
            err[p, i] = e
            above[p, i] = (q - 1.0 > threshold) and (q - 1.0 > 5.0 * e)
    return out, err, above


@njit(parallel=True)
def _klett_kernel(el, bg_e, r, beta_mol, dr, s_a, s_m, i_ref, ref_half):
    """Backward Klett-Fernald: beta_aer per profile up to the reference bin (NaN beyond)."""
    n_prof, n = el.shape
    out = np.full((n_prof, n), np.nan)
    lo = max(0, i_ref - ref_half)
    hi = min(n, i_ref + ref_half + 1)
    bsum = 0.0
    for j in range(lo, hi):
        bsum += beta_mol[j]
    for p in numba.prange(n_prof):
        xsum = 0.0
        for j in range(lo, hi):
            xsum += (el[p, j] - bg_e[p]) * r[j] * r[j]
        x_over_b = xsum / bsum
        int_bm = 0.0
        int_y = 0.0
        y_prev = (el[p, i_ref] - bg_e[p]) * r[i_ref] ** 2
        out[p, i_ref] = y_prev / x_over_b - beta_mol[i_ref]
        for i in range(i_ref - 1, -1, -1):
            int_bm += 0.5 * (beta_mol[i] + beta_mol[i + 1]) * dr
            x = (el[p, i] - bg_e[p]) * r[i] * r[i]
            y = x * np.exp(2.0 * (s_a - s_m) * int_bm)
            int_y += 0.5 * (y + y_prev) * dr
            out[p, i] = y / (x_over_b + 2.0 * s_a * int_y) - beta_mol[i]
            y_prev = y
    return out


@njit(parallel=True)
def _alpha_kernel(slope, vslope, mol_slope, scale):
    """alpha = (slope - molecular slope)/scale and its error; NaN stays NaN."""
    n_prof, n = slope.shape
    a = np.empty((n_prof, n))
    e = np.empty((n_prof, n))
    for p in numba.prange(n_prof):
        for i in range(n):
            a[p, i] = (slope[p, i] - mol_slope[i]) / scale
            e[p, i] = np.sqrt(vslope[p, i]) / scale
    return a, e


@njit(parallel=True)
def _aod_kernel(ybar, vybar, mol_bar, valid, alpha, alpha_err, cloud_region, cloud_denom, r, denom, cosz):
    """Vertical AOD and its error: slant AOD with constant extinction below the first valid bin,
    then increments of the window-averaged Raman log-signal (minus molecular) divided by
    1 + (l0/lR)^a; NaN after the first invalid bin; times cos(z)."""
    n_prof, n = ybar.shape
    slant = np.full((n_prof, n), np.nan)
    var = np.full((n_prof, n), np.nan)
    for p in numba.prange(n_prof):
        first = -1
        for i in range(n):
            if valid[p, i]:
                first = i
                break
        if first < 0:
            continue
        a1 = alpha[p, first]
        e1 = alpha_err[p, first]
        for i in range(first + 1):
            slant[p, i] = a1 * r[i]
            var[p, i] = (e1 * r[i]) ** 2
        v1 = vybar[p, first]
        for i in range(first + 1, n):
            if not valid[p, i]:
                break
            d = (ybar[p, i] - mol_bar[i]) - (ybar[p, i - 1] - mol_bar[i - 1])
            slant[p, i] = slant[p, i - 1] + d / (cloud_denom if cloud_region[p, i] else denom)
            var[p, i] = (vybar[p, i] + v1) / (denom * denom) + (e1 * r[first]) ** 2
        for i in range(n):
            slant[p, i] *= cosz
            var[p, i] = np.sqrt(var[p, i]) * cosz
    return slant, var


def retrieve(elastic, raman, config: LidarConfig = GENERIC_RAMAN_LIDAR, *,
             pretrigger_elastic=None, pretrigger_raman=None,
             molecular: MolecularProfile | None = None, angstrom: float = 1.0,
             lidar_ratio: float = 50.0, window_min_m: float = 150.0, window_fraction: float = 0.1,
             reference_m: tuple[float, float] = (13000.0, 15000.0), min_snr: float = 3.0,
             cloud_threshold: float = 1.0, cloud_angstrom: float = 0.0,
             cloud_smoothing_bins: int = 5, cloud_min_bins: int = 4,
             find_clouds: bool = True, angstrom_err: float = 0.29) -> LidarRetrieval:
    """Raman extinction, AOD, transmission, Klett-Fernald backscatter and cloud layers.

    ``elastic``, ``raman``: raw photon counts (n_profiles, n_bins) including background;
    ``pretrigger_*``: background-only bins (n_profiles, n_background) (else the far tail is used);
    ``reference_m``: aerosol-free range of heights above ground for the Klett-Fernald
    reference and the scattering-ratio normalisation.
    ``angstrom_err``: uncertainty of the assumed aerosol Angstrom exponent (default 0.29, the
    standard deviation of a value anywhere in 0.5-1.5); the Raman extinction scales with
    1/(1 + (l0/lR)^a), so alpha_aer and VAOD carry the relative systematic
    (l0/lR)^a |ln(l0/lR)| / (1 + (l0/lR)^a) x angstrom_err (1.2 % at 355/387 nm).
    """
    el = _as_profiles(elastic, "elastic signal", config.n_bins)
    ra = _as_profiles(raman, "Raman signal", config.n_bins)
    if el.shape != ra.shape:
        raise CalibrationError(f"elastic {el.shape} and Raman {ra.shape} signals differ in shape")
    n_prof, n = ra.shape
    mol = molecular or MolecularProfile.us76()
    dr = config.bin_width_m
    r = config.ranges_m
    z = config.altitudes_m
    cosz = np.cos(np.radians(config.zenith_deg))
    r_ref = np.asarray(reference_m, dtype=float) / cosz
    if r_ref[1] > r[-1]:
        raise CalibrationError(
            f"the profile is too short: it ends at {r[-1]:.0f} m range but the aerosol-free reference "
            f"range reaches {r_ref[1]:.0f} m; record more bins or lower reference_m")
    if n < 100:
        raise CalibrationError(f"a profile of {n} bins is too short for a Raman retrieval (at least 100)")
    ref_mask = (r >= r_ref[0]) & (r <= r_ref[1])
    lam0, lamr = config.wavelength_nm * u.nm, config.raman_wavelength_nm * u.nm
    ratio_l = config.wavelength_nm / config.raman_wavelength_nm

    # background
    bg_r, vbg_r = _background(pretrigger_raman, ra, "Raman")
    bg_e, vbg_e = _background(pretrigger_elastic, el, "elastic")

    # molecular terms on the range grid
    n_air = mol.number_density(z * u.m).value
    a_mol0 = mol.extinction(z * u.m, lam0).value
    a_molr = mol.extinction(z * u.m, lamr).value
    s_m = float(molecular_lidar_ratio(lam0).value)
    b_mol0 = a_mol0 / s_m
    tau_mol = _cumulative_midpoint(a_mol0 + a_molr, dr)
    half = window_half_widths(config, window_min_m, window_fraction)
    mol_slope, ok_w = sliding_slope(tau_mol[None, :], half)
    mol_bar, _ = sliding_mean(tau_mol[None, :], half)
    mol_slope, mol_bar = mol_slope[0], mol_bar[0]

    # Raman log-signal y = ln(N_N2 / (P_R r^2)): window slope and mean with photon-statistics variances
    log_n = np.log(N2_FRACTION * n_air) - 2.0 * np.log(r)
    slope, vslope, ybar, vybar, valid, n_good = _raman_windows(
        ra, bg_r, vbg_r, log_n, r, config.full_overlap_m, half, float(min_snr))
    if not np.any(n_good > 0):
        raise CalibrationError("the Raman channel has no signal above background: check the detector and the laser")

    flag = np.zeros((n_prof, n), dtype=np.int32)
    win_below = (r - (half + 0.5) * dr) < config.full_overlap_m   # window reaches into the overlap region
    flag[:, win_below] |= LidarFlag.BELOW_OVERLAP
    flag[:, ~ok_w] |= LidarFlag.WINDOW_TRUNCATED
    flag[~valid & (ok_w & ~win_below)[None, :]] |= LidarFlag.LOW_SIGNAL

    denom = 1.0 + ratio_l ** angstrom
    alpha, alpha_err = _alpha_kernel(slope, vslope, mol_slope, float(dr * denom))

    # scattering ratio from elastic / Raman (short boxcar), normalised in the reference range
    k = max(0, cloud_smoothing_bins // 2)
    corr = N2_FRACTION * n_air / b_mol0 * np.exp(_cumulative_midpoint(a_mol0 - a_molr, dr))
    i_ref0, i_ref1 = int(np.flatnonzero(ref_mask)[0]), int(np.flatnonzero(ref_mask)[-1]) + 1
    sratio, sratio_err, above = _scattering_ratio(el, ra, bg_e, vbg_e, bg_r, vbg_r, corr, r,
                                                  config.full_overlap_m, k, float(min_snr), i_ref0, i_ref1,
                                                  float(cloud_threshold))

    # cloud layers
    clouds: list[list[CloudLayer]] = [[] for _ in range(n_prof)]
    in_cloud = np.zeros((n_prof, n), dtype=bool)
    cloud_region = np.zeros((n_prof, n), dtype=bool)   # bins whose AOD increment carries cloud light
    if find_clouds:
        for p in np.flatnonzero(above.any(axis=1)):
            idx = np.flatnonzero(above[p])
            breaks = np.flatnonzero(np.diff(idx) > cloud_smoothing_bins + 1)
            starts = np.concatenate([[idx[0]], idx[breaks + 1]])
            stops = np.concatenate([idx[breaks], [idx[-1]]])
            for i0, i1 in zip(starts, stops):
                if i1 - i0 + 1 < cloud_min_bins:
                    continue
                i0 = min(n - 1, i0 + k)   # undo the boxcar spread
                i1 = max(i0, i1 - k)
                in_cloud[p, i0:i1 + 1] = True
                lo = i0 - half[i0] - 2
                hi = i1 + half[i1] + 2
                reached = hi < n and lo >= 0 and bool(valid[p, hi]) and bool(valid[p, lo])
                if reached:
                    dtau = (ybar[p, hi] - ybar[p, lo]) - (mol_bar[hi] - mol_bar[lo])
                    vod = dtau / (1.0 + ratio_l ** cloud_angstrom) * cosz
                    vod_err = np.sqrt(vybar[p, hi] + vybar[p, lo]) / (1.0 + ratio_l ** cloud_angstrom) * cosz
                else:
                    vod, vod_err = np.nan, np.nan
                clouds[p].append(CloudLayer(base_m=float(z[i0] - 0.5 * dr * cosz),
                                            top_m=float(z[i1] + 0.5 * dr * cosz),
                                            vod=float(vod), vod_err=float(vod_err),
                                            max_scattering_ratio=float(np.nanmax(sratio[p, i0:i1 + 1])),
                                            top_reached=reached))
                # AOD increments whose windows overlap the layer use the cloud Angstrom exponent
                cloud_region[p, max(0, lo):min(n, hi + 1)] = True
        flag[in_cloud] |= LidarFlag.CLOUD

    # aerosol optical depth: increments of the window-averaged log-signal
    if not np.any(valid):
        raise CalibrationError("no range bin has enough Raman signal for an extinction retrieval")
    vaod, vaod_err = _aod_kernel(ybar, vybar, mol_bar, valid, alpha, alpha_err, cloud_region,
                                 float(1.0 + ratio_l ** cloud_angstrom), r, float(denom), float(cosz))

    # Raman backscatter (Ansmann et al. 1992): scattering ratio corrected for the differential
    # aerosol transmission exp(-(tau_aer(l0) - tau_aer(lR))), normalised at the reference range
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # profiles not reaching the reference: NaN
        dtau = (vaod / cosz) * (1.0 - ratio_l ** angstrom)
        dtau_ref = np.nanmean(dtau[:, ref_mask], axis=1)
        r_corr = sratio * np.exp(dtau - dtau_ref[:, None])
        beta_raman = (r_corr - 1.0) * b_mol0[None, :]

    # Klett-Fernald elastic inversion
    i_ref = int(np.flatnonzero(ref_mask).mean())
    ref_half = int(ref_mask.sum() // 2)
    beta_k = _klett_kernel(el, bg_e, r, b_mol0, dr, float(lidar_ratio), s_m, i_ref, ref_half)
    beta_k[:, r < config.full_overlap_m] = np.nan
    # the backward solution starts from the elastic signal at the reference: without a significant
    # one (dead or saturated-then-blanked channel) it would divide by ~0 -> flag and NaN instead
    lo_ref, hi_ref = max(0, i_ref - ref_half), min(n, i_ref + ref_half + 1)
    net_ref = el[:, lo_ref:hi_ref].sum(axis=1) - (hi_ref - lo_ref) * bg_e
    var_ref = np.maximum(el[:, lo_ref:hi_ref], 1.0).sum(axis=1) + (hi_ref - lo_ref) ** 2 * vbg_e
    no_ref = ~(net_ref > min_snr * np.sqrt(var_ref))
    beta_k[no_ref] = np.nan
    flag[no_ref] |= LidarFlag.NO_ELASTIC_REFERENCE
    flag[:, i_ref + 1:] |= LidarFlag.BEYOND_REFERENCE

    angstrom_syst = float(ratio_l ** angstrom * abs(np.log(ratio_l)) / denom * angstrom_err)
    settings = dict(angstrom=angstrom, angstrom_err=angstrom_err, lidar_ratio=lidar_ratio, window_min_m=window_min_m,
                    window_fraction=window_fraction, reference_m=list(reference_m), min_snr=min_snr,
                    cloud_threshold=cloud_threshold, cloud_angstrom=cloud_angstrom)
    return LidarRetrieval(range_m=r, altitude_m=z, alpha_aer=alpha, alpha_aer_err=alpha_err,
                          vaod=vaod, vaod_err=vaod_err, beta_aer_klett=beta_k,
                          alpha_aer_klett=beta_k * lidar_ratio, scattering_ratio=sratio,
                          beta_aer_raman=beta_raman, scattering_ratio_err=sratio_err,
                          flag=flag, half_width=half, clouds=clouds, config=config, settings=settings,
                          angstrom_relative_syst=angstrom_syst)


def transmission_at(result: LidarRetrieval, heights_m=TRANSMISSION_HEIGHTS) -> dict[str, np.ndarray]:
    """VAOD, its error and vertical aerosol transmission at heights above ground (per profile)."""
    above = result.altitude_m - result.config.site_altitude_m
    out = {}
    for h in heights_m:
        i = int(np.argmin(np.abs(above - h)))
        out[f"vaod_{h / 1000:.0f}km"] = result.vaod[:, i]
        out[f"vaod_err_{h / 1000:.0f}km"] = result.vaod_err[:, i]
        out[f"transmission_{h / 1000:.0f}km"] = np.exp(-result.vaod[:, i])
    return out


def retrieval_table(result: LidarRetrieval, profile: int = 0) -> Table:
    """One profile's retrieval as an astropy Table; clouds and transmissions in ``meta``."""
    p = profile
    t = Table()
    t["altitude"] = result.altitude_m * u.m
    t["range"] = result.range_m * u.m
    t["alpha_aer"] = result.alpha_aer[p] / u.m
    t["alpha_aer_err"] = result.alpha_aer_err[p] / u.m
    t["vaod"] = result.vaod[p]
    t["vaod_err"] = result.vaod_err[p]
    t["vaod_syst"] = np.abs(result.vaod[p]) * result.angstrom_relative_syst
    t["transmission_aer"] = np.exp(-result.vaod[p])
    t["transmission_aer_los"] = result.transmission_los[p]
    t["beta_aer_klett"] = result.beta_aer_klett[p] / (u.m * u.sr)
    t["alpha_aer_klett"] = result.alpha_aer_klett[p] / u.m
    t["scattering_ratio"] = result.scattering_ratio[p]
    t["beta_aer_raman"] = result.beta_aer_raman[p] / (u.m * u.sr)
    with np.errstate(invalid="ignore", divide="ignore"):
        t["lidar_ratio"] = result.alpha_aer[p] / result.beta_aer_raman[p] * u.sr
    t["window_half_width"] = result.half_width
    t["flag"] = result.flag[p]
    t.meta["lidar"] = result.config.name
    t.meta["wavelength_nm"] = result.config.wavelength_nm
    t.meta["zenith_deg"] = result.config.zenith_deg
    t.meta["site_altitude_m"] = result.config.site_altitude_m
    t.meta["settings"] = json.dumps(result.settings)
    t.meta["angstrom_relative_syst"] = result.angstrom_relative_syst
    t.meta["clouds"] = json.dumps([c.__dict__ for c in result.clouds[p]])
    for key, val in transmission_at(result).items():
        t.meta[key] = float(val[p])
    return t


# ---------------------------------------------------------------------------------------
# contract: sample / run / check
# ---------------------------------------------------------------------------------------

def site_atmosphere(rng: np.random.Generator, site_altitude_m: float = 2200.0, top_m: float = 30000.0,
                    step_m: float = 25.0) -> MolecularProfile:
    """A site atmosphere that is not US76: a temperature departure dT0 ~ U(-8, 8) K at the site,
    decaying with a 6 km scale, plus a U(-4, 4) K tropopause-region wave; the site pressure
    scaled by U(0.985, 1.015); hydrostatic equilibrium (ln p integrated with M g / (R T)).
    Stands for the radiosonde / GDAS sounding given to the retrieval with the LIDAR data."""
    from calib.atmosphere.molecular import G0, M0, R_STAR, us76_temperature_pressure
    z = np.arange(site_altitude_m - 500.0, top_m + step_m, step_m)
    t_us, p_us = us76_temperature_pressure(z * u.m)
    above = z - site_altitude_m
    t = (t_us.value + rng.uniform(-8.0, 8.0) * np.exp(-np.maximum(above, 0.0) / 6000.0)
         + rng.uniform(-4.0, 4.0) * np.exp(-0.5 * ((z - 11000.0) / 3000.0) ** 2))
    i0 = int(np.argmin(np.abs(z - site_altitude_m)))
    p0 = float(p_us.value[i0]) * rng.uniform(0.985, 1.015)
    dlnp = -G0 * M0 / (R_STAR * 0.5 * (t[1:] + t[:-1])) * np.diff(z)
    lnp = np.concatenate([[0.0], np.cumsum(dlnp)])
    p = p0 * np.exp(lnp - lnp[i0])
    return MolecularProfile(z, t, p, "site sounding (simulated)")


def write_sample(directory: Path, seed: int, config: LidarConfig = GENERIC_RAMAN_LIDAR,
                 name: str = "lidar_sample.h5") -> Path:
    """One line of sight (5 minutes of shots) through a boundary layer (VAOD 0.075) and a thin
    cloud (VOD 0.10 at 8.0-8.45 km above ground).

    The nuisance parameters of the simulation are drawn per seed, away from what the retrieval
    assumes: the aerosol Angstrom exponent U(0.5, 1.5) (the retrieval assumes 1.0 +- 0.29 and
    propagates that as a systematic), the aerosol and cloud lidar ratios U(30, 70) and
    U(15, 35) sr (the Klett inversion assumes 50), the overlap complete at U(0.6, 1.0) x the
    configured range (the configuration is the instrument's upper bound), the lidar constants
    x U(0.7, 1.3) (they cancel in the Raman slope), the backgrounds x U(0.5, 2) (measured on
    the pre-trigger bins) and a non-US76 atmosphere (``site_atmosphere``) given as the sounding."""
    nominal = replace(config, n_shots=5 * config.n_shots)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    angstrom = rng.uniform(0.5, 1.5)
    lidar_ratio, cloud_lidar_ratio = rng.uniform(30.0, 70.0), rng.uniform(15.0, 35.0)
    true_instrument = replace(
        nominal, full_overlap_m=nominal.full_overlap_m * rng.uniform(0.6, 1.0),
        efficiency_elastic=nominal.efficiency_elastic * rng.uniform(0.7, 1.3),
        efficiency_raman=nominal.efficiency_raman * rng.uniform(0.7, 1.3),
        background_elastic=nominal.background_elastic * rng.uniform(0.5, 2.0),
        background_raman=nominal.background_raman * rng.uniform(0.5, 2.0))
    atmosphere = site_atmosphere(rng, nominal.site_altitude_m)
    aerosol = AerosolProfile.boundary_layer_and_cloud(site_altitude_m=nominal.site_altitude_m, angstrom=angstrom,
                                                      lidar_ratio=lidar_ratio, cloud_lidar_ratio=cloud_lidar_ratio)
    sim = simulate_lidar(true_instrument, aerosol, 1, rng, molecular=atmosphere)
    path = directory / name
    with h5py.File(path, "w") as f:
        for key in ("elastic", "raman", "pretrigger_elastic", "pretrigger_raman"):
            f.create_dataset(key, data=sim[key], compression="gzip")
        f.attrs["config"] = json.dumps(nominal.__dict__)
        m = f.create_group("molecular_profile")      # the sounding: an input, like the counts
        m.create_dataset("altitude", data=atmosphere.altitude)
        m.create_dataset("temperature", data=atmosphere.temperature)
        m.create_dataset("pressure", data=atmosphere.pressure)
        g = f.create_group("truth")
        for key in ("alpha_aer", "vaod", "tau_aer_slant"):
            g.create_dataset(key, data=sim[key])
        g.attrs["cloud_base_m"] = nominal.site_altitude_m + 8000.0
        g.attrs["cloud_top_m"] = nominal.site_altitude_m + 8450.0
        g.attrs["cloud_vod"] = 0.10
        g.attrs["angstrom"] = angstrom
        g.attrs["lidar_ratio"] = lidar_ratio
        g.attrs["cloud_lidar_ratio"] = cloud_lidar_ratio
        g.attrs["full_overlap_m"] = true_instrument.full_overlap_m
        g.attrs["description"] = ("simulated Poisson photon counts; truth alpha_aer (1/m) at the elastic "
                                  "wavelength, vaod on the range bins, one cloud layer; nuisance values drawn")
    return path


def _read_sample(path: Path) -> tuple[LidarConfig, dict]:
    with h5py.File(path, "r") as f:
        cfg = LidarConfig(**json.loads(f.attrs["config"]))
        data = {k: f[k][()] for k in ("elastic", "raman", "pretrigger_elastic", "pretrigger_raman")}
        molecular = None
        if "molecular_profile" in f:
            g = f["molecular_profile"]
            molecular = MolecularProfile.from_table(
                Table({"altitude": g["altitude"][()] * u.m, "temperature": g["temperature"][()] * u.K,
                       "pressure": g["pressure"][()] * u.Pa}), name="site sounding")
        truth = {k: f["truth"][k][()] for k in f["truth"]}
        truth.update({k: f["truth"].attrs[k] for k in f["truth"].attrs})
    return cfg, {"data": data, "truth": truth, "molecular": molecular}


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    cfg, content = _read_sample(Path(input))
    d = content["data"]
    molecular = config.pop("molecular", None)
    if isinstance(molecular, (str, Path)):  # a sounding file: GDAS, ERA5 or a calibpipe reference atmosphere
        molecular = MolecularProfile.from_meteo_file(Path(molecular))
    res = retrieve(d["elastic"], d["raman"], cfg, pretrigger_elastic=d["pretrigger_elastic"],
                   pretrigger_raman=d["pretrigger_raman"],
                   molecular=content["molecular"] if molecular is None else molecular, **config)
    table = retrieval_table(res, 0)
    table.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(table, output)
    return table


#: per-bin extinction pulls: two-sided tail of the rms band and of the max |pull| criterion
EXTINCTION_RMS_TAIL = 1e-3
EXTINCTION_MAX_PULL = 4.5
HEADLINE_MAX_PULL = 4.0


def check(result: Table, input: Path) -> Evidence:
    """Extinction pulls in 0.4-6 km, VAOD at 3 km (statistical and total error), the cloud.

    Error budget.  The retrieval measures alpha_aer (1 + (l0/lR)^a_true) / (1 + (l0/lR)^a_assumed):
    per-bin pulls against that (the truth the method measures, window-smoothed) test the
    photon-statistics errors; the VAOD at 3 km against the plain truth with
    sqrt(stat^2 + syst^2) (syst: the Angstrom exponent's uncertainty, ``vaod_syst``) tests the
    whole budget.  The sounding is exact; lidar ratio, overlap (complete below the configured
    range), lidar constants and backgrounds do not enter the Raman extinction.  Windows overlap,
    so the per-bin pulls are correlated: their rms is judged against chi^2 with the effective
    number of independent windows n_eff = sum 1/(2h+1).  Designed false-fail rate: 2 x 1e-3 (rms
    band) + n_eff x P(|z| > 4.5) + 3 x P(|z| > 4) (VAOD stat, VAOD total, cloud VOD)."""
    from scipy.stats import norm

    from calib._stats import pull_rms_bounds

    cfg, content = _read_sample(Path(input))
    truth = content["truth"]
    settings = json.loads(result.meta["settings"])
    ratio_l = cfg.wavelength_nm / cfg.raman_wavelength_nm
    measured_scale = (1.0 + ratio_l ** float(truth["angstrom"])) / (1.0 + ratio_l ** float(settings["angstrom"]))
    half = np.asarray(result["window_half_width"], dtype=np.int64)
    true_smooth, _ = sliding_slope(truth["tau_aer_slant"][None, :], half)
    true_smooth = true_smooth[0] / cfg.bin_width_m
    target = true_smooth * measured_scale
    alpha = np.asarray(result["alpha_aer"].quantity.to_value(1 / u.m))
    err = np.asarray(result["alpha_aer_err"].quantity.to_value(1 / u.m))
    above = np.asarray(result["altitude"].quantity.to_value(u.m)) - cfg.site_altitude_m
    # bins whose smoothing window lies above complete overlap (instrument geometry of the input)
    above_overlap = cfg.ranges_m - (half + 0.5) * cfg.bin_width_m >= cfg.full_overlap_m
    window = (above > 400) & (above < 6000) & above_overlap
    sel = window & np.isfinite(alpha) & np.isfinite(err)
    coverage = float(sel.sum() / max(window.sum(), 1))
    if sel.sum() < 2:     # nothing retrieved: the check fails instead of passing on an empty set
        sel = window
    pull = (alpha[sel] - target[sel]) / err[sel]
    n_eff = float(np.sum(1.0 / (2 * half[sel] + 1)))
    lo, hi = pull_rms_bounds(max(1, int(round(n_eff))), EXTINCTION_RMS_TAIL)
    bl = (above > 400) & (above < 1300) & above_overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_bl = float(np.sqrt(np.mean(((alpha[bl] - true_smooth[bl]) / true_smooth[bl]) ** 2)))
        rel_err_bl = float(np.sqrt(np.mean((err[bl] / true_smooth[bl]) ** 2)))
    i3 = int(np.argmin(np.abs(above - 3000)))
    vaod3, vaod3_err = float(result["vaod"][i3]), float(result["vaod_err"][i3])
    vaod3_syst = float(result["vaod_syst"][i3]) if "vaod_syst" in result.colnames else 0.0
    vaod3_true = float(truth["vaod"][i3])
    pulls = {"vaod_3km": (vaod3 - vaod3_true) / np.hypot(vaod3_err, vaod3_syst),
             "vaod_3km_stat": (vaod3 - vaod3_true * measured_scale) / vaod3_err}
    clouds = json.loads(result.meta["clouds"])
    metrics = {
        "n_bins_checked": int(np.sum(sel & np.isfinite(alpha))),
        "coverage_0p4_6km": coverage,
        "extinction_pull_rms": float(np.sqrt(np.mean(pull**2))),
        "extinction_pull_rms_band": f"{lo:.3f}-{hi:.3f}",
        "extinction_n_eff": n_eff,
        "extinction_pull_max": float(np.max(np.abs(pull))),
        "bl_extinction_rms_relative_deviation": rel_bl,
        "bl_extinction_expected_relative_error": rel_err_bl,
        "vaod_3km": vaod3, "vaod_3km_err": vaod3_err, "vaod_3km_syst": vaod3_syst, "vaod_3km_true": vaod3_true,
        "angstrom_true": float(truth["angstrom"]), "angstrom_assumed": float(settings["angstrom"]),
        "n_clouds": len(clouds),
    }
    passed = (coverage >= 0.99
              and lo < metrics["extinction_pull_rms"] < hi and metrics["extinction_pull_max"] < EXTINCTION_MAX_PULL
              and all(abs(v) < HEADLINE_MAX_PULL for v in pulls.values()))
    if clouds:
        c = clouds[0]
        pulls["cloud_vod"] = (c["vod"] - float(truth["cloud_vod"])) / c["vod_err"]
        metrics.update(cloud_base_m=c["base_m"], cloud_top_m=c["top_m"], cloud_vod=c["vod"],
                       cloud_vod_err=c["vod_err"], cloud_base_true_m=float(truth["cloud_base_m"]),
                       cloud_top_true_m=float(truth["cloud_top_m"]), cloud_vod_true=float(truth["cloud_vod"]))
        passed &= (len(clouds) == 1 and abs(c["base_m"] - truth["cloud_base_m"]) < 60
                   and abs(c["top_m"] - truth["cloud_top_m"]) < 60 and abs(pulls["cloud_vod"]) < HEADLINE_MAX_PULL)
    else:
        passed = False
    metrics.update({f"pull_{k}": float(v) for k, v in pulls.items()})
    tail = lambda k: float(2 * norm.sf(k))
    false_fail = 2 * EXTINCTION_RMS_TAIL + n_eff * tail(EXTINCTION_MAX_PULL) + 3 * tail(HEADLINE_MAX_PULL)
    criteria = {
        "coverage_0p4_6km": "extinction retrieved (finite, with an error) in >= 99 % of the bins 0.4-6 km a.g.l. above complete overlap",
        "extinction_pull_rms": "(alpha - truth the method measures, window-smoothed)/sigma_stat in 0.4-6 km a.g.l.: "
                               f"rms in the chi^2 band of n_eff windows at {EXTINCTION_RMS_TAIL:g} per side, "
                               f"max < {EXTINCTION_MAX_PULL}",
        "vaod_3km": f"|VAOD - truth| < {HEADLINE_MAX_PULL} sqrt(stat^2 + syst^2) (Angstrom exponent systematic); "
                    f"against the truth the method measures < {HEADLINE_MAX_PULL} sigma_stat",
        "cloud": f"exactly one layer; base and top within 60 m (8 bins); |VOD - truth| < {HEADLINE_MAX_PULL} sigma",
    }
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=float(false_fail),
                    summary=f"Raman retrieval of {cfg.name}: pull rms {metrics['extinction_pull_rms']:.2f}, "
                            f"BL extinction within {100 * rel_bl:.1f} %, VAOD(3 km) {vaod3:.4f} +- {vaod3_err:.4f} "
                            f"(stat) +- {vaod3_syst:.4f} (syst) (true {vaod3_true:.4f})")


CONTRACT = CalibrationModule(
    codes=("I-DATA-COM-3001",),
    title="Raman LIDAR: aerosol extinction, optical depth, transmission and cloud layers",
    inputs=(Port("elastic", "", "elastic (355 nm) photon counts per range bin, (n_profiles, n_bins)"),
            Port("raman", "", "N2-Raman (387 nm) photon counts per range bin, (n_profiles, n_bins)"),
            Port("pretrigger_elastic", "", "background-only counts recorded before the laser shot"),
            Port("pretrigger_raman", "", "background-only counts of the Raman channel")),
    outputs=(Port("alpha_aer", "1/m", "aerosol extinction at the elastic wavelength per altitude"),
             Port("vaod", "", "vertical aerosol optical depth from the ground"),
             Port("transmission_aer", "", "vertical aerosol transmission exp(-VAOD)"),
             Port("beta_aer_klett", "1/(m sr)", "aerosol backscatter, Klett-Fernald backward inversion"),
             Port("scattering_ratio", "", "total/molecular backscatter from elastic/Raman"),
             Port("clouds", "", "cloud layers: base, top, vertical optical depth (table meta)")),
    sample=write_sample, run=run, check=check,
    references=("Ansmann A., Riebesell M., Weitkamp C. 1990, Opt. Lett. 15, 746", "Ansmann A. et al. 1992, Appl. Phys. B 55, 18",
                "Klett J. D. 1981, Appl. Opt. 20, 211", "Fernald F. G. 1984, Appl. Opt. 23, 652",
                "Bucholtz A. 1995, Appl. Opt. 34, 2765",
                "Pathfinder Barcelona Raman LIDAR performance, Remote Sens. 2025, 17, 1815 (arXiv:2505.17996)"),
    tests=("calib/atmosphere/tests/test_lidar.py", "calib/atmosphere/tests/test_jit.py"),
    version=VERSION,
    config={
        "molecular": "molecular profile instead of the sample's sounding: a GDAS/ERA5/calibpipe .ecsv file (or a MolecularProfile)",
        "angstrom": "aerosol Angstrom exponent between the elastic and Raman wavelengths (default 1.0)",
        "angstrom_err": "its uncertainty, propagated to the extinction (default 0.29)",
        "lidar_ratio": "aerosol extinction-to-backscatter ratio, sr (default 50)",
        "window_min_m": "smallest range window of the Raman derivative, m (default 150)",
        "window_fraction": "range window as a fraction of the range (default 0.1)",
        "reference_m": "[low, high] aerosol-free reference range, m (default [13000, 15000])",
        "min_snr": "lowest signal-to-noise ratio of a retrieved bin (default 3)",
        "cloud_threshold": "backscatter-ratio excess that marks a cloud (default 1.0)",
        "cloud_angstrom": "Angstrom exponent inside clouds (default 0)",
        "cloud_smoothing_bins": "bins smoothed before cloud detection (default 5)",
        "cloud_min_bins": "fewest consecutive bins of a cloud layer (default 4)",
        "find_clouds": "false: skip the cloud search (default true)",
    },
)
