"""Tests of the intensity flat-field (I-DATA-xST-0110)."""
import numpy as np
import pytest

from calib.camera.flatfield import (
    CONTRACT,
    event_median,
    flatfield_relative_gain,
    sigma_clipped_pixel_stats,
)
from calib.camera.simulation import charge_pedestal_truth, make_camera, simulate_charges
from calib.contract import CalibrationError

N_FF = 1500


@pytest.fixture(scope="module")
def lst():
    cam = make_camera("lst", seed=4)
    ff = simulate_charges(cam, "flatfield", N_FF, seed=21, intensity_jitter=0.08)
    ped_mean, _ = charge_pedestal_truth(cam, window=ff.window)
    signal = ff.charge - ped_mean.astype(np.float32)
    return cam, ff, signal


def _pulls(meas, err, truth, good):
    # relative gains are defined up to the camera normalisation: fit the common scale
    scale = np.median(meas[good] / truth[good])
    return (meas[good] / scale - truth[good]) / err[good], scale


def test_relative_gain_recovers_relative_qe(lst):
    """Charges in p.e. (divided by the true ADC/p.e.): relative gain = relative_qe."""
    cam, ff, signal = lst
    pe = signal / cam.gain.value[None].astype(np.float32)
    res = flatfield_relative_gain(pe)
    good = ~(cam.dead | cam.noisy)
    m = good.sum()
    for g in range(2):
        pull, scale = _pulls(res["relative_gain_mean"][g], res["relative_gain_err"][g],
                             cam.relative_qe, good)
        # pull std is 1 within the error of a std from m pixels (4 sigma)
        assert abs(pull.std() - 1) < 4 / np.sqrt(2 * (m - 1))
        assert abs(pull.mean()) < 4 / np.sqrt(m) + 0.1
        assert abs(scale - 1) < 0.01
        # the event-wise normalisation removes the 8 % flasher jitter: the spread of the
        # relative gain is the photo-statistics sqrt(F^2 / n_pe) (+ pedestal noise), not 8 %
        expected = np.sqrt(1.222 / (80 * cam.relative_qe[good]))
        assert np.median(res["relative_gain_std"][g][good] / expected) < 1.1


def test_relative_gain_in_adc_is_total_response(lst):
    cam, ff, signal = lst
    res = flatfield_relative_gain(signal)
    good = ~(cam.dead | cam.noisy)
    truth = cam.relative_qe * cam.gain.value[0]
    truth /= np.median(truth[good])
    pull, _ = _pulls(res["relative_gain_mean"][0], res["relative_gain_err"][0], truth, good)
    assert abs(pull.std() - 1) < 4 / np.sqrt(2 * (good.sum() - 1))


def test_outliers_are_dead_and_true_response_outliers(lst):
    """Median outliers: the dead pixels plus the pixels whose TRUE response (relative_qe x
    ADC gain) is outside [-0.3, +0.3] of the camera median (3 such pixels in this camera)."""
    cam, ff, signal = lst
    res = flatfield_relative_gain(signal)
    good = ~(cam.dead | cam.noisy)
    for g in range(2):
        resp = cam.relative_qe * cam.gain.value[g]
        dev = resp / np.median(resp[good]) - 1
        expected = cam.dead | (np.abs(dev) > 0.3)
        assert 0 < (expected & ~cam.dead).sum() < 10
        assert np.array_equal(res["median_outlier"][g], expected)
        # the std test finds the dead pixels (no photo-statistics) and nothing else
        assert np.array_equal(res["std_outlier"][g], cam.dead)


def test_sigma_clipping_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=(2000, 3)).astype(np.float32)
    x[:20, 0] = 1000.0  # gross outliers are clipped
    x[5, 2] = np.nan  # NaN ignored
    st = sigma_clipped_pixel_stats(x, clip_sigma=4, clip_iterations=5)
    assert st["n_used"][0] == 1980 and st["n_used"][2] == 1999
    np.testing.assert_allclose(st["mean"][0], x[20:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(st["std"][0], x[20:, 0].std(ddof=1), rtol=1e-5)
    np.testing.assert_allclose(st["median"][1], np.median(x[:, 1]), rtol=1e-6)
    np.testing.assert_allclose(event_median(x.T)[:2], np.median(x.T[:2], axis=1), rtol=1e-6)


def test_bad_input():
    cam = make_camera("tiny", seed=1)
    ff = simulate_charges(cam, "flatfield", 100, seed=1)
    ped = simulate_charges(cam, "pedestal", 100, seed=2)
    ped_mean = ped.charge.mean(axis=0)
    with pytest.raises(CalibrationError, match="at least"):
        flatfield_relative_gain(ff.charge[:10] - ped_mean)
    with pytest.raises(CalibrationError, match="shape"):
        flatfield_relative_gain(ff.charge[..., None])
    bad = ff.charge - ped_mean
    bad[:, 1] = np.nan
    with pytest.raises(CalibrationError, match="gain channel 1"):
        flatfield_relative_gain(bad)
    with pytest.raises(CalibrationError, match="flasher"):
        flatfield_relative_gain(ped.charge - ped_mean)  # a pedestal run has no flasher light
    sig = ff.charge - ped_mean
    sig[3, 0, 10] = np.nan  # one NaN charge: that event is skipped for that pixel
    sat = np.zeros(sig.shape, bool)
    sat[0, 0, 11] = True
    res = flatfield_relative_gain(sig, saturated=sat)
    assert res["n_events"][0, 10] <= 99 and np.isfinite(res["relative_gain_mean"][0, 10])
    assert res["saturated"][0, 11] and res["outlier_mask"][0, 11]


def test_contract_sample_run_check(tmp_path):
    path = CONTRACT.sample(tmp_path, 0)
    table = CONTRACT.run(path, tmp_path / "flatfield.ecsv", {})
    assert table.meta["module"] == "calib.camera.flatfield"
    assert len(table) == 1855 and table["relative_gain_mean"].shape == (1855, 2)
    ev = CONTRACT.check(table, path)
    assert ev.passed, ev.to_dict()


def test_run_does_not_read_the_truth_flatfield(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.flatfield", tmp_path)


def test_error_includes_the_pedestal_error(lst):
    """A pedestal from only 100 events shifts all flat-field events of a pixel alike: its
    error (~27 % of the variance here) belongs in relative_gain_err, else the pulls are wide."""
    cam, ff, _ = lst
    ped = simulate_charges(cam, "pedestal", 100, seed=22).charge
    pedestal = ped.mean(axis=0, dtype=np.float64)
    pedestal_err = ped.std(axis=0, ddof=1) / np.sqrt(ped.shape[0])
    good = ~(cam.dead | cam.noisy)
    m = good.sum()
    truth = cam.relative_qe * cam.gain.value[0]
    truth /= np.median(truth[good])
    without = flatfield_relative_gain(ff.charge, pedestal=pedestal)
    res = flatfield_relative_gain(ff.charge, pedestal=pedestal, pedestal_err=pedestal_err)
    pull, _ = _pulls(res["relative_gain_mean"][0], res["relative_gain_err"][0], truth, good)
    assert abs(pull.std() - 1) < 4 / np.sqrt(2 * (m - 1))
    pull0, _ = _pulls(without["relative_gain_mean"][0], without["relative_gain_err"][0], truth, good)
    assert pull0.std() - 1 > 4 / np.sqrt(2 * (m - 1))  # the error without it is too small
    np.testing.assert_array_equal(res["relative_gain_mean"], without["relative_gain_mean"])


def test_contract_check_has_pulls_for_the_ensemble(tmp_path):
    """Seed 21 failed with pull std 1.068 (errors without the pedestal term)."""
    path = CONTRACT.sample(tmp_path, 21)
    ev = CONTRACT.check(CONTRACT.run(path, tmp_path / "ff.ecsv", {}), path)
    assert ev.passed, ev.to_dict()
    assert ev.false_fail_rate <= 0.01
    assert set(ev.pulls) == {f"relative_gain_{k}_{n}" for k in ("chi2_z", "first_pixel")
                             for n in ("high", "low")}
    assert all(abs(v) < 5 for v in ev.pulls.values())
