"""Molecular atmosphere: number density and Rayleigh extinction / backscatter versus altitude.

Method.  Temperature and pressure follow the U.S. Standard Atmosphere 1976 (NOAA/NASA/USAF
1976; seven layers of constant lapse rate in geopotential altitude up to 84.852 km, i.e.
86 km geometric; above that an isothermal continuation, which holds < 4e-6 of the column).
The number density is n = p / (k_B T).  A measured or seasonal site profile (radiosonde,
GDAS/ECMWF, CTAO's seasonal reference profiles) can replace US76 through a table of
altitude, temperature and pressure (``MolecularProfile.from_table``), or directly from a real
GDAS / ERA5 file or a calibpipe reference atmosphere (``MolecularProfile.from_meteo_file``;
``calib.realdata.atmosphere``: agreement with calibpipe's Rayleigh optical depths 0.2 %).

Rayleigh scattering of air after Bucholtz (1995, Appl. Opt. 34, 2765), from first
principles as recommended by Bodhaine et al. (1999, J. Atmos. Ocean. Tech. 16, 1854):

    sigma(lambda) = 24 pi^3 (n_s^2 - 1)^2 / (lambda^4 N_s^2 (n_s^2 + 2)^2) * F_K(lambda)

with n_s the refractive index of standard air (15 C, 1013.25 hPa; Peck & Reeder 1972),
N_s = 2.54743e19 cm^-3 and the King correction factor F_K = (6 + 3 rho_n)/(6 - 7 rho_n) of
air from the N2, O2, Ar and CO2 values of Bates (1984), which gives Bucholtz's wavelength
dependent depolarisation ratio rho_n.  Bucholtz's analytic fit
sigma = A lambda^-(B + C lambda + D/lambda) is provided as a cross-check.
The volume extinction is alpha_mol(h) = n(h) sigma(lambda); the backscatter is
beta_mol = alpha_mol / S_m with the molecular lidar ratio S_m = 4 pi / P(pi) from the
Rayleigh phase function with depolarisation (Chandrasekhar 1950; Bucholtz eq. 12),
P(theta) = 3/(4(1+2 gamma)) [(1+3 gamma) + (1-gamma) cos^2 theta], gamma = rho_n/(2-rho_n),
i.e. S_m = 8 pi/3 (1+2 gamma)/(1+gamma) (8.49 sr at 355 nm).

N2 vibrational Raman: Stokes shift 2330.7 cm^-1 (355 -> 387 nm, 532 -> 607 nm); the
differential backscatter cross-section 3.5e-30 cm^2/sr at 337.1 nm (Inaba & Kobayasi 1972)
scaled with the fourth power of the Raman-shifted wavenumber.

Reference numbers reproduced by the tests: vertical Rayleigh optical depth of the whole
US76 atmosphere from sea level at 355 nm 0.593-0.594; sigma(550 nm) = 4.51e-27 cm^2 and
tau(550 nm) = 0.097 (Bodhaine et al. 1999).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError

__all__ = [
    "us76_temperature_pressure",
    "refractive_index_standard_air",
    "king_factor",
    "depolarization_ratio",
    "rayleigh_cross_section",
    "bucholtz_fit_cross_section",
    "rayleigh_phase_function",
    "molecular_lidar_ratio",
    "raman_wavelength",
    "raman_n2_backscatter_cross_section",
    "MolecularProfile",
    "N2_FRACTION",
    "LIDAR_WAVELENGTHS",
]

K_B = 1.380649e-23          # J/K
N_A = 6.02214076e23
R_STAR = 8.31432            # J/(mol K), the US76 value
G0 = 9.80665                # m/s^2
M0 = 0.0289644              # kg/mol, mean molar mass of air (US76)
R_EARTH = 6356766.0         # m, US76 effective Earth radius for geopotential
N_STANDARD = 2.54743e25     # m^-3, standard air (288.15 K, 1013.25 hPa)
N2_FRACTION = 0.78084
CO2_PPMV = 360.0
RAMAN_SHIFT_N2 = 2330.7     # cm^-1
LIDAR_WAVELENGTHS = (355.0, 387.0, 532.0, 607.0) * u.nm

# US76 layers: base geopotential altitude (m), base temperature (K), lapse rate (K/m)
_US76_H = np.array([0.0, 11000.0, 20000.0, 32000.0, 47000.0, 51000.0, 71000.0, 84852.0])
_US76_L = np.array([-0.0065, 0.0, 0.001, 0.0028, 0.0, -0.0028, -0.002, 0.0])


def _us76_bases() -> tuple[np.ndarray, np.ndarray]:
    temps = [288.15]
    press = [101325.0]
    for i in range(len(_US76_H) - 1):
        dh = _US76_H[i + 1] - _US76_H[i]
        t_b, p_b, lapse = temps[-1], press[-1], _US76_L[i]
        t_top = t_b + lapse * dh
        if lapse == 0.0:
            p_top = p_b * np.exp(-G0 * M0 * dh / (R_STAR * t_b))
        else:
            p_top = p_b * (t_b / t_top) ** (G0 * M0 / (R_STAR * lapse))
        temps.append(t_top)
        press.append(p_top)
    return np.array(temps), np.array(press)


_US76_T, _US76_P = _us76_bases()


def us76_temperature_pressure(altitude) -> tuple[u.Quantity, u.Quantity]:
    """Temperature (K) and pressure (Pa) of the US Standard Atmosphere 1976 at geometric ``altitude``."""
    z = np.asarray(u.Quantity(altitude, u.m).value, dtype=float)
    if np.any(~np.isfinite(z)) or np.any(z < -5000.0) or np.any(z > 200_000.0):
        raise CalibrationError("altitudes must be finite and between -5 km and 200 km for the US76 model")
    h = R_EARTH * z / (R_EARTH + z)                       # geopotential altitude
    i = np.clip(np.searchsorted(_US76_H, h, side="right") - 1, 0, len(_US76_H) - 1)
    t_b, p_b, lapse, h_b = _US76_T[i], _US76_P[i], _US76_L[i], _US76_H[i]
    t = t_b + lapse * (h - h_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_grad = p_b * (t_b / t) ** (G0 * M0 / (R_STAR * np.where(lapse == 0, 1.0, lapse)))
    p_iso = p_b * np.exp(-G0 * M0 * (h - h_b) / (R_STAR * t_b))
    p = np.where(lapse == 0.0, p_iso, p_grad)
    return t * u.K, p * u.Pa


def _micron(wavelength) -> np.ndarray:
    lam = np.asarray(u.Quantity(wavelength, u.nm).to_value(u.um), dtype=float)
    if np.any(~np.isfinite(lam)) or np.any(lam <= 0.18) or np.any(lam > 4.0):
        raise CalibrationError("wavelengths must lie between 180 nm and 4 um for the Rayleigh formulas")
    return lam


def refractive_index_standard_air(wavelength) -> np.ndarray:
    """Refractive index of standard air (15 C, 1013.25 hPa, 300 ppmv CO2), Peck & Reeder (1972),
    scaled to 360 ppmv CO2 (Edlen 1966 / Bodhaine et al. 1999 eq. 19)."""
    lam = _micron(wavelength)
    s2 = lam ** -2
    n300 = (8060.51 + 2480990.0 / (132.274 - s2) + 17455.7 / (39.32957 - s2)) * 1e-8
    return 1.0 + n300 * (1.0 + 0.54 * (CO2_PPMV * 1e-6 - 0.0003))


def king_factor(wavelength) -> np.ndarray:
    """King correction factor F_K of air: Bates (1984) values of N2, O2, Ar, CO2 (Bodhaine et al. eq. 23)."""
    lam = _micron(wavelength)
    f_n2 = 1.034 + 3.17e-4 / lam**2
    f_o2 = 1.096 + 1.385e-3 / lam**2 + 1.448e-4 / lam**4
    c_co2 = CO2_PPMV * 1e-4  # per cent by volume
    return (78.084 * f_n2 + 20.946 * f_o2 + 0.934 * 1.00 + c_co2 * 1.15) / (78.084 + 20.946 + 0.934 + c_co2)


def depolarization_ratio(wavelength) -> np.ndarray:
    """Depolarisation ratio rho_n of air, from F_K = (6 + 3 rho)/(6 - 7 rho) (Bucholtz 1995 Table 1)."""
    f = king_factor(wavelength)
    return 6.0 * (f - 1.0) / (3.0 + 7.0 * f)


def rayleigh_cross_section(wavelength) -> u.Quantity:
    """Rayleigh scattering cross-section per molecule of air (first principles, Bucholtz 1995 eq. 1)."""
    lam_cm = _micron(wavelength) * 1e-4
    ns = refractive_index_standard_air(wavelength)
    n_s_cm = N_STANDARD * 1e-6
    sigma = (24.0 * np.pi**3 * (ns**2 - 1.0) ** 2 / (lam_cm**4 * n_s_cm**2 * (ns**2 + 2.0) ** 2)
             * king_factor(wavelength))
    return (sigma * u.cm**2).to(u.m**2)


def bucholtz_fit_cross_section(wavelength) -> u.Quantity:
    """Bucholtz (1995) analytic fit to his cross-section table: sigma = A lambda^-(B + C lambda + D/lambda)."""
    lam = _micron(wavelength)
    low = lam <= 0.5
    a = np.where(low, 3.01577e-28, 4.01061e-28)
    b = np.where(low, 3.55212, 3.99668)
    c = np.where(low, 1.35579, 1.10298e-3)
    d = np.where(low, 0.11563, 2.71393e-2)
    return (a * lam ** -(b + c * lam + d / lam) * u.cm**2).to(u.m**2)


def rayleigh_phase_function(theta, wavelength) -> np.ndarray:
    """Rayleigh phase function with depolarisation, normalised to 4 pi over the sphere."""
    rho = depolarization_ratio(wavelength)
    gamma = rho / (2.0 - rho)
    cos2 = np.cos(u.Quantity(theta, u.rad).value) ** 2
    return 3.0 / (4.0 * (1.0 + 2.0 * gamma)) * ((1.0 + 3.0 * gamma) + (1.0 - gamma) * cos2)


def molecular_lidar_ratio(wavelength) -> u.Quantity:
    """Extinction-to-backscatter ratio of air S_m = 4 pi / P(pi) (8 pi/3 without depolarisation)."""
    return (4.0 * np.pi / rayleigh_phase_function(np.pi * u.rad, wavelength)) * u.sr


def raman_wavelength(wavelength, shift_cm=RAMAN_SHIFT_N2) -> u.Quantity:
    """Wavelength of the N2 vibrational Raman line excited at ``wavelength`` (355 -> 387 nm, 532 -> 607 nm)."""
    lam_cm = u.Quantity(wavelength, u.nm).to_value(u.cm)
    return (1.0 / (1.0 / lam_cm - shift_cm) * u.cm).to(u.nm)


def raman_n2_backscatter_cross_section(wavelength) -> u.Quantity:
    """Differential N2 vibrational Raman backscatter cross-section (m^2/sr) for excitation at ``wavelength``."""
    ref = raman_wavelength(337.1 * u.nm).value
    lam_r = raman_wavelength(wavelength).value
    return 3.5e-34 * (ref / lam_r) ** 4 * u.m**2 / u.sr


@dataclass(frozen=True)
class MolecularProfile:
    """A molecular atmosphere: temperature and pressure on an altitude grid (m a.s.l.).

    Interpolation is linear in temperature and in ln(pressure); outside the grid the US76
    shape is used, scaled to the profile's last level.  Build with ``us76()`` or
    ``from_table()``.
    """

    altitude: np.ndarray    # m, increasing
    temperature: np.ndarray  # K
    pressure: np.ndarray    # Pa
    name: str = "US Standard Atmosphere 1976"

    @classmethod
    def us76(cls, top=120 * u.km, step=25 * u.m) -> "MolecularProfile":
        return _us76_profile(float(u.Quantity(top, u.m).value), float(u.Quantity(step, u.m).value))

    @classmethod
    def from_table(cls, table: Table, name: str = "measured profile") -> "MolecularProfile":
        """A site profile from a table with columns altitude, temperature, pressure (with units)."""
        for col in ("altitude", "temperature", "pressure"):
            if col not in table.colnames:
                raise CalibrationError(f"a molecular profile table needs the column '{col}'")
        z = u.Quantity(table["altitude"], u.m).value.astype(float)
        t = u.Quantity(table["temperature"], u.K).value.astype(float)
        p = u.Quantity(table["pressure"], u.Pa).value.astype(float)
        if len(z) < 3:
            raise CalibrationError("a molecular profile table needs at least three levels")
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
            raise CalibrationError("the molecular profile table contains NaN or infinite values")
        if np.any(t <= 0) or np.any(p <= 0):
            raise CalibrationError("temperatures and pressures of a molecular profile must be positive")
        order = np.argsort(z)
        z, t, p = z[order], t[order], p[order]
        if np.any(np.diff(z) <= 0):
            raise CalibrationError("the altitudes of a molecular profile must be distinct")
        # extend above the top with the US76 shape so that optical depths include the whole column
        if z[-1] < 120_000.0:
            z_ext = np.arange(z[-1] + 250.0, 120_001.0, 250.0)
            t_us, p_us = us76_temperature_pressure(np.concatenate([[z[-1]], z_ext]) * u.m)
            t_us, p_us = t_us.value, p_us.value
            z = np.concatenate([z, z_ext])
            t = np.concatenate([t, t_us[1:] * t[-1] / t_us[0]])
            p = np.concatenate([p, p_us[1:] * p[-1] / p_us[0]])
        return cls(z, t, p, name)

    @classmethod
    def from_meteo_file(cls, path, **kwargs) -> "MolecularProfile":
        """A site profile from a real meteorological file: GDAS or ERA5 (Copernicus) pressure
        levels as ECSV (ctao-calibpipe), or a calibpipe reference atmosphere
        (``calib.realdata.atmosphere``; ``kwargs``: latitude, longitude, time of the GDAS/ERA5 profile)."""
        from calib.realdata import atmosphere

        if "reference_atmo_model" in str(path):
            return atmosphere.reference_atmosphere(path)
        return atmosphere.meteo_profile(path, **kwargs)

    def _interp(self, altitude) -> tuple[np.ndarray, np.ndarray]:
        z = np.asarray(u.Quantity(altitude, u.m).value, dtype=float)
        t = np.interp(z, self.altitude, self.temperature)
        lnp = np.interp(z, self.altitude, np.log(self.pressure))
        # below the first / above the last level: the US76 shape scaled to that level (each side
        # to its own level, also when one call asks for altitudes on both sides)
        for outside, i0 in ((z < self.altitude[0], 0), (z > self.altitude[-1], -1)):
            if np.any(outside):
                t_us, p_us = us76_temperature_pressure(z[outside] * u.m)
                t0, p0 = us76_temperature_pressure(self.altitude[i0] * u.m)
                t[outside] = t_us.value * self.temperature[i0] / t0.value
                lnp[outside] = np.log(p_us.value * self.pressure[i0] / p0.value)
        return t, np.exp(lnp)

    def temperature_at(self, altitude) -> u.Quantity:
        return self._interp(altitude)[0] * u.K

    def pressure_at(self, altitude) -> u.Quantity:
        return self._interp(altitude)[1] * u.Pa

    def number_density(self, altitude) -> u.Quantity:
        """Number density of air molecules (m^-3)."""
        t, p = self._interp(altitude)
        return p / (K_B * t) / u.m**3

    def extinction(self, altitude, wavelength) -> u.Quantity:
        """Rayleigh volume extinction coefficient alpha_mol (1/m)."""
        return (self.number_density(altitude) * rayleigh_cross_section(wavelength)).to(1 / u.m)

    def backscatter(self, altitude, wavelength) -> u.Quantity:
        """Rayleigh volume backscatter coefficient beta_mol (1/(m sr))."""
        return self.extinction(altitude, wavelength) / molecular_lidar_ratio(wavelength)

    def column_density(self, altitude_from, altitude_to=None) -> u.Quantity:
        """Vertical column of molecules (m^-2) between two altitudes (default: to the top)."""
        z0 = u.Quantity(altitude_from, u.m).value
        z1 = self.altitude[-1] if altitude_to is None else u.Quantity(altitude_to, u.m).value
        return _column(self, np.atleast_1d(z0), np.atleast_1d(z1)).reshape(np.shape(z0)) / u.m**2

    def optical_depth(self, wavelength, altitude_from, altitude_to=None) -> np.ndarray:
        """Vertical Rayleigh optical depth between two altitudes (default: to the top of the atmosphere)."""
        col = self.column_density(altitude_from, altitude_to)
        return (col * rayleigh_cross_section(wavelength)).to_value(u.one)

    def cumulative_optical_depth(self, altitude, wavelength, ground) -> np.ndarray:
        """Vertical Rayleigh optical depth from ``ground`` up to each of ``altitude`` (array)."""
        z = np.asarray(u.Quantity(altitude, u.m).value, dtype=float)
        z0 = np.full_like(z, u.Quantity(ground, u.m).value)
        return _column(self, z0.ravel(), z.ravel()).reshape(z.shape) * rayleigh_cross_section(wavelength).to_value(u.m**2)


@lru_cache(maxsize=8)
def _us76_profile(top_m: float, step_m: float) -> MolecularProfile:
    z = np.arange(-500.0, top_m + 1.0, step_m)
    t, p = us76_temperature_pressure(z * u.m)
    for a in (z, t.value, p.value):
        a.setflags(write=False)
    return MolecularProfile(z, t.value, p.value)


def _column(profile: MolecularProfile, z0: np.ndarray, z1: np.ndarray) -> np.ndarray:
    """Integral of n dz, exact for n varying exponentially between grid levels."""
    z = profile.altitude
    n = profile.pressure / (K_B * profile.temperature)
    lnn = np.log(n)
    dz = np.diff(z)
    dl = np.diff(lnn)
    with np.errstate(divide="ignore", invalid="ignore"):
        seg = np.where(np.abs(dl) > 1e-12, (n[1:] - n[:-1]) * dz / dl, 0.5 * (n[1:] + n[:-1]) * dz)
    cum = np.concatenate([[0.0], np.cumsum(seg)])

    def cum_at(x):
        x = np.clip(x, z[0], z[-1])
        i = np.clip(np.searchsorted(z, x, side="right") - 1, 0, len(z) - 2)
        d = x - z[i]
        k = dl[i] / dz[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.where(np.abs(k * d) > 1e-12, n[i] * np.expm1(k * d) / k, n[i] * d)
        return cum[i] + part

    return cum_at(z1) - cum_at(z0)
