import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from calib.atmosphere import molecular as m
from calib.contract import CalibrationError


def test_us76_reference_levels():
    # US76 tables: 11 km geopotential (11.019 km geometric) 22632 Pa, 216.65 K; 86 km 0.3734 Pa
    t, p = m.us76_temperature_pressure([0.0, 11019.1, 86000.0] * u.m)
    assert t[0].value == pytest.approx(288.15)
    assert p[0].value == pytest.approx(101325.0)
    assert p[1].value == pytest.approx(22632, rel=2e-4)
    assert t[1].value == pytest.approx(216.65, abs=0.01)
    assert p[2].value == pytest.approx(0.3734, rel=2e-3)
    n0 = m.MolecularProfile.us76().number_density(0 * u.m)
    assert n0.value == pytest.approx(2.547e25, rel=1e-3)


def test_vertical_rayleigh_optical_depth_355nm_reference():
    prof = m.MolecularProfile.us76()
    tau = prof.optical_depth(355 * u.nm, 0 * u.m)
    assert 0.593 <= tau <= 0.594


def test_cross_sections_match_bucholtz_fit_and_bodhaine():
    lam = np.linspace(300, 600, 31) * u.nm
    full = m.rayleigh_cross_section(lam)
    fit = m.bucholtz_fit_cross_section(lam)
    # Bucholtz's fit represents his table to about 0.3 %
    assert np.max(np.abs(fit / full - 1)) < 0.003
    # Bodhaine et al. 1999: sigma(550 nm) = 4.513e-27 cm^2, tau(550 nm, sea level) = 0.0973
    assert m.rayleigh_cross_section(550 * u.nm).to_value(u.cm**2) == pytest.approx(4.513e-27, rel=2e-3)
    assert m.MolecularProfile.us76().optical_depth(550 * u.nm, 0 * u.m) == pytest.approx(0.0973, rel=3e-3)
    # the cross-section falls roughly as lambda^-4.0 to -4.1 over the Cherenkov band
    slope = np.gradient(np.log(full.value), np.log(lam.value))
    assert np.all((slope < -3.95) & (slope > -4.45))


def test_depolarisation_king_factor_and_lidar_ratio():
    rho = m.depolarization_ratio([355, 532] * u.nm)
    # Bucholtz Table 1: rho_n ~ 0.0301 at 355 nm, ~0.0284 at 532 nm
    assert rho[0] == pytest.approx(0.0306, abs=0.0008)
    assert rho[1] == pytest.approx(0.0284, abs=0.0005)
    assert np.all(np.diff(m.depolarization_ratio(np.linspace(300, 600, 7) * u.nm)) < 0)
    s_m = m.molecular_lidar_ratio(355 * u.nm).value
    assert 8 * np.pi / 3 < s_m < 8 * np.pi / 3 * 1.02
    # phase function normalised to 4 pi
    th = np.linspace(0, np.pi, 2001)
    integral = np.trapezoid(m.rayleigh_phase_function(th * u.rad, 355 * u.nm) * 2 * np.pi * np.sin(th), th)
    assert integral == pytest.approx(4 * np.pi, rel=1e-5)


def test_raman_wavelengths():
    lam = m.raman_wavelength(m.LIDAR_WAVELENGTHS[[0, 2]])
    assert lam[0].value == pytest.approx(387.0, abs=0.2)
    assert lam[1].value == pytest.approx(607.3, abs=0.3)


def test_profile_from_table_and_extinction():
    z = np.arange(0, 30001, 500.0)
    t, p = m.us76_temperature_pressure(z * u.m)
    tab = Table({"altitude": z * u.m, "temperature": t * 1.01, "pressure": p})
    prof = m.MolecularProfile.from_table(tab, "warm season")
    us = m.MolecularProfile.us76()
    ratio = prof.number_density(5000 * u.m) / us.number_density(5000 * u.m)
    assert ratio.value == pytest.approx(1 / 1.01, rel=1e-3)
    # optical depth above the site: 1 % warmer at the same pressures -> 1 % fewer molecules
    ratio_tau = prof.optical_depth(355 * u.nm, 2200 * u.m) / us.optical_depth(355 * u.nm, 2200 * u.m)
    assert ratio_tau == pytest.approx(1 / 1.01, rel=1e-3)
    alpha = us.extinction(2200 * u.m, 355 * u.nm)
    assert alpha.unit == 1 / u.m and 4e-5 < alpha.value < 6e-5
    beta = us.backscatter(2200 * u.m, 355 * u.nm)
    assert (alpha / beta).to_value(u.sr) == pytest.approx(m.molecular_lidar_ratio(355 * u.nm).value)


def test_bad_input():
    with pytest.raises(CalibrationError):
        m.rayleigh_cross_section(np.nan * u.nm)
    with pytest.raises(CalibrationError):
        m.us76_temperature_pressure([np.nan] * u.m)
    with pytest.raises(CalibrationError):
        m.MolecularProfile.from_table(Table({"altitude": [0, 1] * u.m, "temperature": [1, 2] * u.K}))
    with pytest.raises(CalibrationError):
        m.MolecularProfile.from_table(Table({"altitude": [0, 1, 2] * u.m, "temperature": [280, np.nan, 270] * u.K,
                                             "pressure": [1e5, 9e4, 8e4] * u.Pa}))


def test_extrapolation_below_and_above_the_profile_in_one_call():
    """Each side of a measured profile is extrapolated from its own end level, also in one call."""
    z = np.arange(2000.0, 30001.0, 500.0)
    t, p = m.us76_temperature_pressure(z * u.m)
    prof = m.MolecularProfile(z, t.value * 1.02, p.value * 0.99)
    both = prof.temperature_at([1000.0, 40000.0] * u.m).value
    t_us = m.us76_temperature_pressure([1000.0, 40000.0] * u.m)[0].value
    assert both == pytest.approx(1.02 * t_us, rel=1e-9)       # the 2 % offset of both end levels
    assert prof.pressure_at([1000.0, 40000.0] * u.m).value == pytest.approx(
        0.99 * m.us76_temperature_pressure([1000.0, 40000.0] * u.m)[1].value, rel=1e-9)
