"""Tests of the timing flat-field (I-DATA-xST-0111)."""
import astropy.units as u
import numpy as np
import pytest

from calib.camera.simulation import make_camera
from calib.camera.timing import CONTRACT, relative_peak_time, time_offsets
from calib.contract import CalibrationError


def _peak_times(cam, n_events, seed, sigma=0.4):
    """Peak times as the simulator defines them: flasher time + event jitter + offset + noise;
    dead pixels see no light, their 'peak time' is anywhere in the readout."""
    rng = np.random.default_rng(seed)
    t_event = 18.0 + 0.2 * rng.standard_normal((n_events, 1, 1))
    t = t_event + cam.time_offset.to_value(u.ns) + sigma * rng.standard_normal(
        (n_events, 2, cam.n_pixels))
    t[:, :, cam.dead] = rng.uniform(0, 39, (n_events, 2, cam.dead.sum()))
    return t.astype(np.float32)


def test_offsets_recover_truth_within_errors():
    cam = make_camera("lst", seed=5)
    n = 1000
    t = _peak_times(cam, n, 1)
    res = time_offsets(t * u.ns)
    good = ~cam.dead
    m = good.sum()
    truth = cam.time_offset.to_value(u.ns)
    for g in range(2):
        diff = res["time_shift"][g, good] - truth[good]
        diff -= np.median(diff)  # offsets are relative to the camera median
        pull = diff / res["time_shift_err"][g, good]
        # error of the (clipped) mean: sigma / sqrt(n)
        np.testing.assert_allclose(np.median(res["time_shift_err"][g, good]),
                                   0.4 / np.sqrt(n), rtol=0.05)
        assert abs(pull.std() - 1) < 4 / np.sqrt(2 * (m - 1))
        np.testing.assert_array_equal(res["time_correction"][g], -res["time_shift"][g])
        # dead pixels (noise "peak times") are the only outliers
        assert np.array_equal(res["outlier_mask"][g], cam.dead)


def test_relative_time_removes_event_jitter():
    cam = make_camera("tiny", seed=1)
    t = _peak_times(cam, 50, 2, sigma=0.0)
    rel = relative_peak_time(t, exclude=cam.dead)  # dead pixels must not set the median
    good = ~cam.dead
    # without per-pixel noise the relative time is the same in every event
    assert np.allclose(rel[:, 0, good].std(axis=0), 0, atol=1e-5)


def test_large_offset_flagged():
    cam = make_camera("tiny", seed=1)
    t = _peak_times(cam, 100, 3)
    t[:, :, 7] += 8.0  # a pixel 8 ns late (e.g. a wrong cable delay)
    res = time_offsets(t)
    assert res["offset_outlier"][:, 7].all()
    assert res["time_shift"][0, 7] > 7


def test_bad_input():
    cam = make_camera("tiny", seed=1)
    t = _peak_times(cam, 100, 3)
    with pytest.raises(CalibrationError, match="at least"):
        time_offsets(t[:5])
    with pytest.raises(CalibrationError, match="shape"):
        time_offsets(t[0, 0])
    bad = t.copy()
    bad[:, 1] = np.nan
    with pytest.raises(CalibrationError, match="gain channel 1"):
        time_offsets(bad)


def test_contract_sample_run_check(tmp_path):
    path = CONTRACT.sample(tmp_path, 0)
    table = CONTRACT.run(path, tmp_path / "timing.ecsv", {})
    assert table["time_shift"].unit == u.ns
    ev = CONTRACT.check(table, path)
    assert ev.passed, ev.to_dict()


def test_run_does_not_read_the_truth_timing(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.timing", tmp_path)


def test_peak_time_at_maximum_removes_the_phase_bias():
    """Noise-free LST pulses: the local-peak centroid is off the pulse maximum by a saw-tooth
    of the sub-sample phase (rms 0.07 ns in high gain); inverted, the times are the truth."""
    from dataclasses import replace

    from calib.camera.extraction import extract_run, peak_time_at_maximum
    from calib.camera.simulation import simulate_waveforms

    cam = make_camera("tiny", seed=2)
    quiet = replace(cam, electronic_noise=cam.electronic_noise * 0.0)
    sim = simulate_waveforms(quiet, "flatfield", 200, 5, nsb=False)
    d = extract_run(sim)
    live = ~cam.dead
    # the truth is the pulse maximum; the simulator places it to 1/128 sample (4.4 ps rms)
    raw = (d.peak_time[:, 0] - sim.true_time)[:, live]
    fixed = (peak_time_at_maximum(d.peak_time, cam.pulse_template, cam.pulse_time_step,
                                  cam.sampling_rate)[:, 0] - sim.true_time)[:, live]
    raw, fixed = raw - np.median(raw), fixed - np.median(fixed)
    assert np.std(raw) > 0.05  # the centroid's phase bias
    assert np.std(fixed) < 0.01
    # per pixel (the phase hardly changes with 0.2 ns jitter): no systematic left
    assert np.abs(fixed.mean(axis=0)).max() < 0.01


def test_offset_pulls_over_pixels_are_unit_gaussian(tmp_path):
    """Simulated waveforms through run(): pulls of the time offsets have rms 1 within the
    chi-square band of the live pixels in both gains (they were 2.2 with the centroid)."""
    from calib._stats import pull_rms_bounds
    from calib.camera.chain import read_waveform_sample

    path = CONTRACT.sample(tmp_path, 3)
    table = CONTRACT.run(path, tmp_path / "timing.ecsv", {})
    cam = read_waveform_sample(path)["camera"]
    good = ~(cam.dead | cam.noisy)
    lo, hi = pull_rms_bounds(int(good.sum()))
    truth = cam.time_offset.to_value(u.ns)[good]
    for g in range(2):
        diff = u.Quantity(table["time_shift"]).to_value(u.ns)[good, g] - truth
        pull = (diff - np.median(diff)) / u.Quantity(table["time_shift_err"]).to_value(u.ns)[good, g]
        assert lo < np.sqrt(np.mean(pull**2)) < hi
    ev = CONTRACT.check(table, path)
    assert ev.passed and ev.false_fail_rate <= 0.01
    assert set(ev.pulls) == {f"time_offset_{k}_{n}" for k in ("chi2_z", "first_pixel")
                             for n in ("high", "low")}
