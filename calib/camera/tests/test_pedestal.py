"""Tests of the NSB pedestal (I-DATA-xST-0103)."""
import astropy.units as u
import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats as astropy_clipped

from calib.camera import pedestal as P
from calib.camera.simulation import make_camera, nsb_variance_factor, simulate_charges
from calib.contract import CalibrationError


def test_sigma_clipping_matches_astropy():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 5, (500, 3, 20))
    x[:7, 0, 3] = 1e4  # outliers
    x[10, 1, 5] = -1e4
    mean, median, std, n = P.sigma_clipped_stats(x, axis=0, sigma=4, iterations=5)
    for g, p in [(0, 3), (1, 5), (2, 9)]:
        m_a, med_a, s_a = astropy_clipped(x[:, g, p], sigma=4, maxiters=5)
        assert mean[g, p] == pytest.approx(m_a, rel=1e-9)
        assert median[g, p] == pytest.approx(med_a, rel=1e-9)
        assert std[g, p] == pytest.approx(s_a, rel=2e-3)  # ddof 1 vs 0
    assert n[0, 3] == 493 and n[1, 5] == 499


def test_window_variance_factor():
    cam = make_camera("tiny")
    f7 = P.window_variance_factor(cam.pulse_template, cam.pulse_time_step, cam.sampling_rate, 7)
    # shorter than the width (pulse longer than 1 sample), positive
    assert np.all(f7 < 7) and np.all(f7 > 3)
    # a window much longer than the pulse: sum W_k^2 -> width (edges cost ~ one pulse length)
    f400 = P.window_variance_factor(cam.pulse_template, cam.pulse_time_step, cam.sampling_rate, 400)
    assert np.all(np.abs(f400 / 400 - 1) < 0.03)
    # the simulator's NSB (8 arrival phases) agrees with the estimator's 32-phase average
    assert np.allclose(nsb_variance_factor(cam, 7), f7, rtol=1e-3)


def test_nsb_rate_formula_inverts():
    rate = P.nsb_rate_from_variance(pedestal_var=7 * 25 + 0.3 / 1.024 * 80**2 * 1.222 * 5.0,
                                    dark_var_per_sample=25.0, gain=80.0, enf_sq=1.222, width=7,
                                    variance_factor=5.0, sampling_rate=1.024 * u.GHz)
    assert rate.unit == u.GHz and rate.value == pytest.approx(0.3)


def test_statistics_and_flags():
    cam = make_camera("tiny", seed=2)
    run = simulate_charges(cam, "pedestal", 300, seed=3)
    q = run.charge.copy()
    q[5, 0, 10] = np.nan
    q[:, 1, 20] += np.random.default_rng(1).normal(0, 500, 300)  # a very noisy pixel
    q[:, 0, 30] += 2000  # a pedestal far from the others
    st = P.pedestal_statistics(q, 7, min_events=100)
    assert st["n_nan"][0, 10] == 1 and st["flags"][0, 10] & P.FLAGS["nan_charges"]
    assert st["flags"][1, 20] & P.FLAGS["std_outlier"]
    assert st["flags"][0, 30] & P.FLAGS["median_outlier"]
    assert st["pedestal_per_sample"][0, 3] == pytest.approx(st["median"][0, 3] / 7)
    few = P.pedestal_statistics(q[:50], 7, min_events=100)
    assert np.all(few["flags"] & P.FLAGS["too_few_events"])
    sat = np.zeros(q.shape, bool)
    sat[:4, 0, 2] = True
    st = P.pedestal_statistics(q, 7, saturated=sat)
    assert st["n_saturated"][0, 2] == 4 and st["n_all"][0, 2] == 296
    with pytest.raises(CalibrationError, match="n_events, n_gains, n_pixels"):
        P.pedestal_statistics(q[:, 0], 7)
    with pytest.raises(CalibrationError, match="no pedestal events"):
        P.pedestal_statistics(q[:0], 7)


def test_contract_sample_run_check(tmp_path):
    path = P.CONTRACT.sample(tmp_path, 4)
    table = P.CONTRACT.run(path, tmp_path / "pedestal.ecsv", {})
    assert table["nsb_rate_high"].unit == u.GHz and table["pedestal_std_high"].unit == u.adc
    evidence = P.CONTRACT.check(table, path)
    assert evidence.passed, evidence.metrics
    # the NSB rate from both gains agrees with the truth to a few per cent on the camera
    cam = make_camera("tiny", seed=4)
    ok = ~cam.dead & ~cam.noisy
    for name, tol in (("high", 0.03), ("low", 0.1)):  # LG: NSB variance ~ electronic noise
        r = np.asarray(table[f"nsb_rate_{name}"])[ok] / cam.nsb_rate.value[ok]
        assert abs(np.median(r) - 1) < tol
    # the check can fail: a pedestal width off by 5 %
    wrong = table.copy()
    wrong["pedestal_std_all_high"] *= 1.05
    assert not P.CONTRACT.check(wrong, path).passed
    with pytest.raises(CalibrationError, match="leaves"):
        P.CONTRACT.run(path, tmp_path / "x.ecsv", {"window_start": 38})
