"""Electromagnetic shower helpers: atmospheric depth, Greisen profile, Cherenkov emission heights.

Atmospheric (vertical) depth X_v(h) = p(h)/g0 from the molecular profile (US76 by default).
Longitudinal profile of a gamma-ray shower: Greisen (1956) approximation,
N(t) = 0.31/sqrt(b0) exp[t (1 - 1.5 ln s)], s = 3t/(t + 2 b0), b0 = ln(E/E_c), t = X/X_0,
with X_0 = 36.7 g/cm^2 and E_c = 85 MeV in air; the depth of maximum is X_max = X_0 b0.
Cherenkov light emitted per unit depth is taken proportional to N(X) (the emission per unit
path ~ 2(n-1) is proportional to the air density, so per unit depth it is constant; the
altitude dependence of the threshold is neglected), which is the weighting used by
Schmuckermaier et al. (2023, A&A 673, A2) for the light-weighted transmission.
"""
from __future__ import annotations

import numpy as np

from calib.atmosphere.molecular import G0, MolecularProfile

__all__ = ["depth_at", "altitude_at_depth", "greisen_profile", "shower_max_depth",
           "cherenkov_emission_profile", "RADIATION_LENGTH", "CRITICAL_ENERGY_GEV"]

RADIATION_LENGTH = 36.7          # g/cm^2
CRITICAL_ENERGY_GEV = 0.085


def depth_at(altitude_m, molecular: MolecularProfile | None = None) -> np.ndarray:
    """Vertical atmospheric depth (g/cm^2) above ``altitude_m``."""
    mol = molecular or MolecularProfile.us76()
    p = mol.pressure_at(np.asarray(altitude_m, dtype=float)).value       # Pa = kg m^-1 s^-2
    return p / G0 / 10.0                                                  # kg/m^2 -> g/cm^2


def altitude_at_depth(depth_g_cm2, molecular: MolecularProfile | None = None) -> np.ndarray:
    """Altitude (m a.s.l.) where the vertical depth equals ``depth_g_cm2``."""
    mol = molecular or MolecularProfile.us76()
    z = np.arange(-500.0, 60000.0, 10.0)
    d = depth_at(z, mol)
    return np.interp(np.log(np.asarray(depth_g_cm2, dtype=float)), np.log(d[::-1]), z[::-1])


def shower_max_depth(energy_gev) -> np.ndarray:
    """Slant depth of the maximum of a gamma-ray shower (g/cm^2), X_0 ln(E/E_c)."""
    return RADIATION_LENGTH * np.log(np.asarray(energy_gev, dtype=float) / CRITICAL_ENERGY_GEV)


def greisen_profile(slant_depth_g_cm2, energy_gev) -> np.ndarray:
    """Number of shower particles versus slant depth (Greisen 1956)."""
    t = np.asarray(slant_depth_g_cm2, dtype=float) / RADIATION_LENGTH
    b0 = np.log(np.asarray(energy_gev, dtype=float) / CRITICAL_ENERGY_GEV)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 3.0 * t / (t + 2.0 * b0)
        n = 0.31 / np.sqrt(b0) * np.exp(t * (1.0 - 1.5 * np.log(s)))
    return np.where(t > 0, np.nan_to_num(n), 0.0)


def cherenkov_emission_profile(altitude_m, energy_gev, zenith_deg=0.0, site_altitude_m=2200.0,
                               molecular: MolecularProfile | None = None) -> np.ndarray:
    """Relative Cherenkov light emitted per metre of altitude at ``altitude_m`` (normalised to sum 1
    on the given grid) for a gamma ray of ``energy_gev`` at zenith angle ``zenith_deg``."""
    z = np.asarray(altitude_m, dtype=float)
    cosz = np.cos(np.radians(zenith_deg))
    slant = depth_at(z, molecular) / cosz
    n = greisen_profile(slant, energy_gev)
    # per metre of altitude: N(X) dX/dh, dX/dh = rho(h)/cos z  ~ depth derivative
    dxdh = -np.gradient(slant, z)
    w = np.where(z >= site_altitude_m, n * np.maximum(dxdh, 0.0), 0.0)
    total = w.sum()
    return w / total if total > 0 else w
