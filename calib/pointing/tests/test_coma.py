"""Coma of single-mirror optics (I-DATA-xST-1004): shift, asymmetric broadening, correction."""
import json

import astropy.units as u
import numpy as np
import pytest

from calib.contract import CalibrationError
from calib.pointing import coma
from calib.pointing.simulation import simulate_star_images


@pytest.fixture(scope="module")
def sample():
    return simulate_star_images(n_images=50, seed=4, on_axis_fraction=0.1)


def _measure(t):
    return coma.measure_star_images(t["image"], t["theta"], t["psi"], 2.5 * u.mm, 28 * u.m,
                                    t["stamp_x"], t["stamp_y"], 4095)


def test_recovers_coma_of_a_paraboloid(sample):
    """Images are ray-traced off an exact paraboloid; the fit recovers what its forms represent of it."""
    meas = _measure(sample)
    r = coma.fit_coma(meas)[0]
    truth = json.loads(sample.meta["truth"])
    k1_third = truth["coma_mm_per_deg"]   # theta D^2/(16 f) per degree: third order only
    assert k1_third == pytest.approx(np.radians(1) * 23000**2 / (16 * 28000))
    ok = np.asarray(meas["flag"]) == 0
    expect = coma.expected_coma(truth, np.asarray(sample["theta"])[ok], np.asarray(meas["flux"])[ok], 2.5)
    for key, value in expect.items():
        assert abs(float(r[key]) - value) < 4 * float(r[key + "_err"]), (key, r[key], r[key + "_err"], value)
    # the exact paraboloid at f/D = 1.2 shifts images ~3 % more than third order: the fit sees it
    assert expect["kappa1"] / k1_third == pytest.approx(1.029, abs=0.01)
    assert (float(r["kappa1"]) - k1_third) / float(r["kappa1_err"]) > 5
    # the asymmetry is measured: radial broadening about three times the tangential one, positive skew
    assert abs(r["broadening_ratio"] - 3) < 4 * r["broadening_ratio_err"] + 0.1
    assert r["gamma"] > 0


def test_ray_trace_matches_third_order_coma_at_small_angles():
    """Independent check of the ray tracer: at 0.05 deg the shift and the variances follow
    Schroeder's third-order coma a = theta D^2 / (16 f): <dr> = a, var_r = a^2/2, var_t = a^2/6."""
    from calib.pointing.simulation import paraboloid_image_moments
    m = paraboloid_image_moments([0.05] * u.deg, blur=0 * u.mm)
    a = np.radians(0.05) * 23000**2 / (16 * 28000)
    assert m["shift"][0] == pytest.approx(a, rel=0.04)
    assert m["var_r"][0] == pytest.approx(a**2 / 2, rel=0.15)
    assert m["var_t"][0] == pytest.approx(a**2 / 6, rel=0.15)
    assert m["skew_r"][0] > 0


def test_check_reports_pulls_and_false_fail_rate(tmp_path):
    path = coma.CONTRACT.sample(tmp_path, 2)
    result = coma.CONTRACT.run(path, tmp_path / "out.h5", {})
    ev = coma.CONTRACT.check(result, path)
    assert ev.passed, ev.metrics
    assert set(ev.pulls) == {"kappa1", "kappa3", "beta_r", "beta_t", "gamma", "gamma5", "correction_at_1deg"}
    assert ev.false_fail_rate == pytest.approx(7 * 6.334e-5, rel=1e-3)
    # a fit that reported the third-order kappa1 would be caught
    result["kappa1"][0] = ev.metrics["kappa1_third_order_formula"]
    assert not coma.CONTRACT.check(result, path).passed


def test_correction_puts_centroids_on_chief_rays(sample):
    meas = _measure(sample)
    fit = coma.fit_coma(meas)
    x, y = coma.correct_coma(meas["x"], meas["y"], fit, 28 * u.m)
    r_chief = 28000 * np.tan(np.radians(sample["theta"]))
    resid = np.hypot(x.value, y.value) - r_chief
    off = np.asarray(sample["theta"]) > 0.3
    before = np.asarray(meas["dr"])[off]
    assert before.mean() > 10  # mm: coma shifts centroids outwards by ~20 mm/deg
    assert abs(resid[off].mean()) < 3 * resid[off].std(ddof=1) / np.sqrt(off.sum())
    # no residual trend with off-axis angle
    slope = np.polyfit(np.asarray(sample["theta"])[off], resid[off], 1)[0]
    assert abs(slope) < 0.5


def test_correct_coma_inverts_the_shift():
    from astropy.table import Table
    model = Table({"kappa1": [20.0] * u.mm / u.deg, "kappa3": [0.5] * u.mm / u.deg**3})
    r_chief = np.linspace(0, 700, 15)
    th = np.degrees(np.arctan(r_chief / 28000))
    r_meas = r_chief + 20 * th + 0.5 * th**3
    x, y = coma.correct_coma(r_meas * np.cos(0.7) * u.mm, r_meas * np.sin(0.7) * u.mm, model, 28 * u.m)
    assert np.allclose(np.hypot(x.value, y.value), r_chief, atol=1e-6)


def test_one_off_axis_angle_is_refused(sample):
    t = sample.copy()
    t["theta"] = np.full(len(t), 0.8) * u.deg
    with pytest.raises(CalibrationError, match="range of off-axis angles"):
        coma.fit_coma(_measure(t))


def test_too_few_usable_images(sample):
    t = sample[:8].copy()
    t["image"][:5] *= 40   # saturated
    with pytest.raises(CalibrationError, match="only 3 usable.*saturated"):
        coma.fit_coma(_measure(t))


def test_missing_star_position(sample):
    t = sample[:10].copy()
    t["theta"][3] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        _measure(t)


def test_contract_sample_run_check(tmp_path):
    path = coma.CONTRACT.sample(tmp_path, 0)
    result = coma.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    assert result["kappa1"].unit == u.mm / u.deg and "module" in result.meta
    evidence = coma.CONTRACT.check(result, path)
    assert evidence.passed, evidence.metrics
