"""Dual-mirror plate scale and distortion (I-DATA-xST-1003)."""
import astropy.units as u
import numpy as np
import pytest

from calib.contract import CalibrationError
from calib.pointing import dual_mirror as dm
from calib.pointing.simulation import simulate_dual_mirror


@pytest.fixture(scope="module")
def sample():
    return simulate_dual_mirror(site="south", seed=1)


def _fit(t):
    return dm.fit_plate_scale(t["theta_x"], t["theta_y"], t["x"], t["y"])


def test_recovers_plate_scale_and_distortion(sample):
    r = _fit(sample)[0]
    truth = {"plate_scale": 37.52, "k2": -2.0e-3, "k4": 2.0e-5, "roll": 0.8}
    for key, value in truth.items():
        assert abs(r[key] - value) < 3 * r[key + "_err"], (key, r[key], r[key + "_err"])
    dof = 2 * r["n_stars"] - 8
    # the residuals hold the noise and the decentering distortion the model lacks (noise-free fit)
    exact = simulate_dual_mirror(site="south", seed=1, noise=1e-9 * u.mm)
    unmodelled_rss = float(_fit(exact)[0]["residual_rms"]) ** 2 * dof
    expected = np.sqrt(0.15**2 + unmodelled_rss / dof)
    assert abs(r["residual_rms"] / expected - 1) < 3 / np.sqrt(2 * dof)
    # the distortion is detected: k2 differs from zero by many sigma
    assert abs(r["k2"]) > 5 * r["k2_err"]
    assert r["twist"] == pytest.approx(0, abs=3 * r["twist_err"])


def test_sample_has_a_distortion_the_model_lacks():
    """The simulated SC optics have a decentering distortion (even in w) besides the odd radial
    polynomial: noise-free images leave residuals of ~0.03 mm rms, up to ~0.1 mm at the field
    edge, while the plate scale and k2 stay within 0.05 % and 5 % of the radial truth."""
    t = simulate_dual_mirror(site="south", seed=3, noise=1e-9 * u.mm)
    r = _fit(t)[0]
    assert 0.015 < r["residual_rms"] < 0.06
    assert abs(r["plate_scale"] / 37.52 - 1) < 5e-4 and abs(r["k2"] / -2.0e-3 - 1) < 0.05
    p = 2.0e-3 - 1.0e-3j
    w = np.asarray(t["theta_x"]) + 1j * np.asarray(t["theta_y"])
    shift = np.conj(p) * w**2 + 2 * p * np.abs(w) ** 2
    assert 0.08 < np.max(np.abs(shift)) < 0.2


def test_check_expects_the_unmodelled_part(tmp_path):
    """The check compares with the optics' projection on the model and judges the residuals by a
    non-central chi^2: over 20 seeds every check passes, each states the unmodelled rms, and the
    residual pulls average to zero within 4 standard errors."""
    pulls = []
    for seed in range(20):
        path = dm.CONTRACT.sample(tmp_path, seed)
        ev = dm.CONTRACT.check(dm.CONTRACT.run(path, tmp_path / "out.ecsv", {}), path)
        assert ev.passed, ev.metrics
        assert ev.metrics["unmodelled_rms_mm"] > 0.015
        pulls.append(ev.pulls["residual_rss"])
    assert abs(np.mean(pulls)) < 4 / np.sqrt(20)


def test_mapping_round_trip_and_sky_residual(sample):
    model = _fit(sample)
    x, y = dm.focal_plane_from_sky(model, sample["theta_x"], sample["theta_y"])
    tx, ty = dm.sky_from_focal_plane(model, x, y)
    assert np.allclose(tx.value, sample["theta_x"], atol=1e-9) and np.allclose(ty.value, sample["theta_y"], atol=1e-9)
    # measured images mapped back to the sky scatter by the centroid noise / plate scale (~14")
    sx, sy = dm.sky_from_focal_plane(model, sample["x"], sample["y"])
    rms = np.sqrt(np.mean(np.concatenate([sx.value - sample["theta_x"], sy.value - sample["theta_y"]]) ** 2)) * 3600
    expected = 0.15 / 37.52 * 3600
    assert abs(rms / expected - 1) < 3 / np.sqrt(2 * len(sample)) + 0.02


def test_stars_at_one_radius_are_refused(sample):
    phi = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    tx, ty = 3 * np.cos(phi), 3 * np.sin(phi)
    with pytest.raises(CalibrationError, match="same off-axis angle"):
        dm.fit_plate_scale(tx * u.deg, ty * u.deg, 37.5 * tx * u.mm, 37.5 * ty * u.mm)


def test_stars_on_two_rings_are_refused():
    """Two off-axis angles only: plate scale and the two distortion terms cannot be separated."""
    phi = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    w = np.concatenate([1.0 * np.exp(1j * phi), 3.0 * np.exp(1j * phi)])
    with pytest.raises(CalibrationError, match="cannot separate.*c3_re"):
        dm.fit_plate_scale(w.real * u.deg, w.imag * u.deg, 37.5 * w.real * u.mm, 37.5 * w.imag * u.mm)


def test_too_few_and_missing(sample):
    with pytest.raises(CalibrationError, match="at least 5"):
        _fit(sample[:4])
    t = sample.copy()
    t["theta_y"][7] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        _fit(t)


def test_contract_sample_run_check(tmp_path):
    path = dm.CONTRACT.sample(tmp_path, 0)
    result = dm.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    assert result["plate_scale"].unit == u.mm / u.deg and "module" in result.meta
    evidence = dm.CONTRACT.check(result, path)
    assert evidence.passed, evidence.metrics


def test_zero_or_nan_centroid_errors_are_refused(sample):
    for bad in (0.0, np.nan, -0.1):
        with pytest.raises(CalibrationError, match="uncertainties must be finite and positive"):
            dm.fit_plate_scale(sample["theta_x"], sample["theta_y"], sample["x"], sample["y"], bad * u.mm)


def test_check_reports_pulls_and_false_fail_rate(tmp_path):
    path = dm.CONTRACT.sample(tmp_path, 5)
    result = dm.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    ev = dm.CONTRACT.check(result, path)
    assert ev.passed, ev.metrics
    assert set(ev.pulls) == {"plate_scale", "k2", "k4", "roll", "residual_rss"}
    assert ev.false_fail_rate == pytest.approx(4 * 6.334e-5 + 1e-4, rel=1e-3)
    result["k2"][0] += 5 * result["k2_err"][0]
    assert not dm.CONTRACT.check(result, path).passed
