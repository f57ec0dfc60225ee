import numpy as np
import pytest

from calib.atmosphere import correction as C
from calib.atmosphere import shower
from calib.contract import CalibrationError


def test_flux_bias_reference_numbers():
    # atmosphere.md / Schmuckermaier et al. 2023: Gamma = 2.6
    assert C.flux_bias(0.95, 2.6) == pytest.approx(0.921, abs=5e-4)
    assert C.flux_bias(0.80, 2.6) == pytest.approx(0.700, abs=5e-4)
    assert C.flux_bias(0.65, 2.6) == pytest.approx(0.502, abs=5e-4)


def test_light_weighted_transmission():
    alt = 2200 + np.arange(0, 25000, 50.0)
    above = alt - 2200
    # a thin ground layer only: (almost) all light crosses it -> T-bar = exp(-VAOD/cos z)
    bl = 0.2 * np.clip(above / 200, 0, 1)
    t = C.light_weighted_transmission(alt, bl, [50, 1000, 10000], 30.0)
    assert np.allclose(t, np.exp(-0.2 / np.cos(np.radians(30))), rtol=1e-3)
    # light emitted inside a thick layer crosses only part of it: T-bar slightly higher
    thick = C.light_weighted_transmission(alt, 0.2 * np.clip(above / 1000, 0, 1), 10000.0, 30.0)
    assert thick > np.exp(-0.2 / np.cos(np.radians(30)))
    # an elevated layer at 6-8 km a.g.l.: low-energy showers emit higher up, behind more of it
    el = 0.1 * np.clip((above - 6000) / 2000, 0, 1)
    t_el = C.light_weighted_transmission(alt, el, [50, 1000, 10000], 0.0)
    assert np.all(np.diff(t_el) > 0) and np.all(t_el > np.exp(-0.1)) and np.all(t_el < 1)
    # the light-weighted value equals the emission-weighted mean by construction
    grid = np.arange(2200, 40000, 25.0)
    w = shower.cherenkov_emission_profile(grid, 1000.0, 0.0)
    assert t_el[1] == pytest.approx(np.sum(w * np.exp(-np.interp(grid, alt, el))), rel=1e-9)


def test_shower_maximum_altitude():
    # X_max(1 TeV) = 36.7 ln(1000/0.085) = 344 g/cm^2 -> ~8.4 km a.s.l. in US76
    xmax = shower.shower_max_depth(1000.0)
    assert xmax == pytest.approx(344.0, abs=0.5)
    assert 8000 < shower.altitude_at_depth(xmax) < 8800
    assert shower.depth_at(0.0) == pytest.approx(1033.2, abs=0.5)


def test_energy_and_effective_area_correction():
    grid = np.geomspace(10, 1e5, 50)
    aeff0 = 1e5 * (1 - np.exp(-(grid / 60) ** 2.5))
    e_corr = C.correct_energy([100.0, 1000.0], 0.8)
    assert np.allclose(e_corr, [125.0, 1250.0])
    a_t = C.corrected_effective_area(grid[10:40], grid, aeff0, 0.8)
    expected = np.exp(np.interp(np.log(0.8 * grid[10:40]), np.log(grid), np.log(aeff0)))
    assert np.allclose(a_t, expected)
    assert np.all(a_t <= np.interp(grid[10:40], grid, aeff0) * (1 + 1e-12))   # threshold moves up
    # energy-dependent T-bar: fixed point E_corr = E_rec / T(E_corr)
    tb = np.linspace(0.7, 0.9, 50)
    e = C.correct_energy(np.array([200.0]), tb, grid)
    assert e[0] * np.interp(np.log(e[0]), np.log(grid), tb) == pytest.approx(200.0, rel=1e-6)


def test_bad_input():
    with pytest.raises(CalibrationError):
        C.correct_energy([100.0], 0.0)
    with pytest.raises(CalibrationError):
        C.correct_energy([-1.0], 0.9)
    with pytest.raises(CalibrationError):
        C.flux_bias(1.2)
    with pytest.raises(CalibrationError):
        C.light_weighted_transmission([0, 1, 2], [0, np.nan, 0], 100.0)
    with pytest.raises(CalibrationError, match="grid"):       # a decreasing / negative energy grid
        C.correct_energy([100.0], np.array([0.8, 0.9]), np.array([1000.0, -10.0]))
    with pytest.raises(CalibrationError, match="grid"):
        C.corrected_effective_area([100.0], np.array([10.0, 5.0]), np.array([1.0, 2.0]), 0.9)


def test_contract(tmp_path):
    path = C.CONTRACT.sample(tmp_path, 4)
    table = C.CONTRACT.run(path, tmp_path / "corr.ecsv", {})
    ev = C.CONTRACT.check(table, path)
    assert ev.passed, ev.metrics
    # without the correction the check fails: use the uncorrected flux as the result
    table["flux_corrected"] = table["flux_uncorrected"]
    assert not C.CONTRACT.check(table, path).passed


def test_untrusted_transmission_is_flagged(tmp_path):
    """A thick layer (T-bar < 0.65) is flagged in the output, not silently corrected."""
    import h5py
    path = C.CONTRACT.sample(tmp_path, 1)
    with h5py.File(path, "r+") as f:
        f["lidar_vaod"][...] = f["lidar_vaod"][()] * 5.0      # VAOD ~ 1.1: T-bar ~ 0.3
    table = C.CONTRACT.run(path, tmp_path / "thick.ecsv", {})
    assert np.all(np.asarray(table["tbar"]) < C.TRUSTED_TRANSMISSION)
    assert not np.any(table["trusted"])


def test_evidence_pulls_and_false_fail_rate(tmp_path):
    from calib.atmosphere import correction as M
    path = M.CONTRACT.sample(tmp_path, 1)
    ev = M.CONTRACT.check(M.CONTRACT.run(path, tmp_path / "c.ecsv", {}), path)
    assert ev.passed and set(ev.pulls) == {"corrected_over_true", "chi2"} and 0 < ev.false_fail_rate <= 0.01
