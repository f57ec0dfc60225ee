"""Tests of PDE versus wavelength (I-DATA-xST-0104) and versus incidence angle (I-DATA-xST-0105)."""
import astropy.units as u
import numpy as np
import pytest

from calib.camera import pde_angle, pde_wavelength as pw
from calib.camera.simulation import make_camera
from calib.contract import CalibrationError

WL = np.arange(280.0, 701.0, 10.0)


def _truth_curve():
    cam = make_camera("tiny", seed=0)
    return lambda wl: np.interp(wl, cam.pde_wavelength.to_value(u.nm), cam.pde)


def _cherenkov_truth(f, lo=280.0, hi=700.0):
    g = np.linspace(lo, hi, 20001)
    w = g**-2.0
    return np.trapezoid(f(g) * w, g) / np.trapezoid(w, g)


def test_constant_pde_and_linear_functional():
    y = np.full(WL.size, 0.3)
    c = pw.fit_smooth_curve(WL, y, 0.01)
    np.testing.assert_allclose(c(np.linspace(280, 700, 50)), 0.3, atol=1e-10)
    val, err = pw.cherenkov_weighted_pde(c)
    assert val == pytest.approx(0.3, abs=1e-10)
    # the weighted mean of 43 points of sigma 0.01 cannot be better than 0.01/sqrt(43)
    assert 0.01 / np.sqrt(43) * 0.99 < err < 0.01
    _, err_f = pw.cherenkov_weighted_pde(c, kind="frequentist")
    assert err_f <= err * (1 + 1e-9)


def test_cherenkov_weighted_pde_pulls():
    """40 simulated bench curves of the simulator's bialkali PDE: pulls mean ~0, sd ~1."""
    f = _truth_curve()
    truth = _cherenkov_truth(f)
    rng = np.random.default_rng(4)
    pulls = []
    for _ in range(40):
        y0 = f(WL)
        e = np.sqrt((0.015 * y0) ** 2 + 0.003**2)
        c = pw.fit_smooth_curve(WL, y0 + e * rng.standard_normal(WL.size), e)
        v, s = pw.cherenkov_weighted_pde(c)
        pulls.append((v - truth) / s)
        assert 0.3 < c.effective_dof < WL.size
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 3 / np.sqrt(40) + 0.2  # + allowance for the smoothing bias
    assert 0.6 < pulls.std(ddof=1) < 1.35  # 40 pulls: sd of the sd ~0.11
    assert truth == pytest.approx(0.26, abs=0.02)


def test_rayleigh_transmission_and_weighting():
    t = pw.rayleigh_transmission([300, 400, 600] * u.nm)
    assert np.all(np.diff(t) > 0)
    # tau0(400 nm) = 0.36 at sea level, 47 % of the column between 2.2 and 10 km
    assert t[1] == pytest.approx(np.exp(-0.364 * 0.47), abs=0.01)
    assert pw.rayleigh_transmission(400 * u.nm, zenith=60 * u.deg) < t[1]
    f = _truth_curve()
    e = np.full(WL.size, 0.005)
    c = pw.fit_smooth_curve(WL, f(WL), e)
    v0, _ = pw.cherenkov_weighted_pde(c)
    v1, e1 = pw.cherenkov_weighted_pde(c, transmission=pw.rayleigh_transmission)
    # Rayleigh scattering removes blue/UV light, where the bialkali PDE is high
    assert v1 < v0
    g = np.linspace(280, 700, 20001)
    w = g**-2.0 * pw.rayleigh_transmission(g * u.nm)
    truth = np.trapezoid(f(g) * w, g) / np.trapezoid(w, g)
    assert abs(v1 - truth) < 3 * e1


def test_dish_geometry_and_constant_response():
    assert pde_angle.dish_incidence_angle(0.5 * u.m, 1.2 * u.m).to_value(u.deg) == pytest.approx(
        np.degrees(np.arctan(0.5 / (1.2 - 0.25 / 4.8))))
    th = np.arange(0, 70.1, 5.0)
    c = pw.fit_smooth_curve(th, np.ones(th.size), 0.01)
    v, err, tmax = pde_angle.dish_weighted_efficiency(c, 1.2)
    assert v == pytest.approx(1.0, abs=1e-10) and tmax == pytest.approx(23.5, abs=0.1)
    assert pde_angle.reference_angular_response(0 * u.deg) == pytest.approx(1.0)


def test_dish_efficiency_pulls():
    rng = np.random.default_rng(7)
    th = np.arange(0.0, 70.01, 2.5)
    r = np.linspace(0, 0.5, 2000)
    tdish = pde_angle.dish_incidence_angle(r * u.m, 1.2 * u.m)
    pulls = []
    for _ in range(40):
        n, a = rng.uniform(1.45, 1.6), rng.uniform(0.3, 0.8)
        y0 = pde_angle.reference_angular_response(th * u.deg, n, a)
        t = pde_angle.fit_angular_curves(th, y0 * (1 + 0.01 * rng.standard_normal(th.size)),
                                         0.01 * y0)
        truth = np.trapezoid(pde_angle.reference_angular_response(tdish, n, a) * r, r) / 0.125
        pulls.append((t["dish_efficiency"][0] - truth) / t["dish_efficiency_err"][0])
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 3 / np.sqrt(40) + 0.2
    assert 0.6 < pulls.std(ddof=1) < 1.35


def test_bad_input():
    with pytest.raises(CalibrationError, match="NaN"):
        pw.fit_smooth_curve(WL, np.where(WL == 400, np.nan, 0.3), 0.01)
    with pytest.raises(CalibrationError, match="at least 5"):
        pw.fit_smooth_curve(WL[:3], [0.1, 0.2, 0.3], 0.01)
    with pytest.raises(CalibrationError, match="positive uncertainty"):
        pw.fit_smooth_curve(WL, np.full(WL.size, 0.3), 0.0)
    with pytest.raises(CalibrationError, match="repeated"):
        pw.fit_smooth_curve(np.r_[WL, 400.0], np.full(WL.size + 1, 0.3), 0.01)
    with pytest.raises(CalibrationError, match="outside"):
        pw.fit_pde_curves(WL, np.full((1, WL.size), 1.3), 0.01)
    with pytest.raises(CalibrationError, match="no PDE"):
        pw.fit_pde_curves(WL, np.zeros((0, WL.size)), 0.01)
    c = pw.fit_smooth_curve(WL, np.full(WL.size, 0.3), 0.01)
    with pytest.raises(CalibrationError, match="extrapolation"):
        pw.cherenkov_weighted_pde(c, wl_min=250 * u.nm)
    with pytest.raises(CalibrationError, match="90"):
        pde_angle.fit_angular_curves([0, 45, 90, 95, 100.0], np.ones(5), 0.01)
    th = np.arange(0, 20.1, 2.5)
    short = pw.fit_smooth_curve(th, np.ones(th.size), 0.01)
    with pytest.raises(CalibrationError, match="stops"):
        pde_angle.dish_weighted_efficiency(short, 1.0)
    with pytest.raises(CalibrationError, match="f/D"):
        pde_angle.dish_weighted_efficiency(short, 0.1)


@pytest.mark.parametrize("module", [pw, pde_angle])
def test_contracts(module, tmp_path):
    import h5py

    path = module.CONTRACT.sample(tmp_path, 5)
    result = module.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    ev = module.CONTRACT.check(result, path)
    assert ev.passed, ev.metrics
    # errors over-estimated 5x: every pull small, caught by the two-sided pull rms (16 devices)
    col = "cherenkov_pde_err" if module is pw else "dish_efficiency_err"
    wide = result.copy()
    wide[col] *= 5
    assert not module.CONTRACT.check(wide, path).passed
    assert "module" in result.meta
    key = "true_pde" if module is pw else "true_efficiency"
    with h5py.File(path, "a") as f:  # a 3 % wrong truth must be detected
        f[key][...] = f[key][()] * 1.03
    assert not module.CONTRACT.check(result, path).passed


def test_run_does_not_read_the_truth_pde_wavelength(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.pde_wavelength", tmp_path)


def test_run_does_not_read_the_truth_pde_angle(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.pde_angle", tmp_path)


@pytest.mark.parametrize("module", [pw, pde_angle], ids=["wavelength", "angle"])
def test_ensemble_pulls_and_designed_false_fail_rate(module, tmp_path):
    """Over 20 seeds the per-seed headline pulls are N(0, 1) within 4 sigma, and the designed
    false-fail rate is the sum of the criteria tails: 16 devices x 6.3e-5 (|pull| < 4) + 2e-4
    (chi-square band), well below 0.01 (|pull| < 3.5 on 16 devices alone was 7.4e-3)."""
    key = "cherenkov_pde" if module is pw else "dish_efficiency"
    z = []
    for seed in range(20):
        path = module.CONTRACT.sample(tmp_path / str(seed), seed)
        ev = module.CONTRACT.check(module.CONTRACT.run(path, None, {}), path)
        assert ev.false_fail_rate == pytest.approx(16 * 6.3e-5 + 2e-4)
        assert set(ev.pulls) == {f"{key}_mean_z", f"{key}_chi2_z", f"{key}_first_device"}
        z.append(ev.pulls[f"{key}_mean_z"])
    z = np.asarray(z)
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.std(ddof=1) - 1) < 4 / np.sqrt(2 * (z.size - 1))
