"""Tests of the dark baseline (I-DATA-xST-0102)."""
import astropy.units as u
import numpy as np
import pytest

from calib.camera.baseline import FLAGS, BaselineAccumulator, clipped_gaussian_std_factor, dark_baseline
from calib.camera import baseline as B
from calib.camera.simulation import make_camera, simulate_waveforms
from calib.contract import CalibrationError


@pytest.fixture(scope="module")
def dark():
    cam = make_camera("tiny", seed=1)
    return simulate_waveforms(cam, "dark", 400, seed=2)


def test_streaming_equals_one_pass(dark):
    wf = dark.waveforms
    one = dark_baseline(wf, saturation_adc=4095)
    acc = BaselineAccumulator(*wf.shape[1:], saturation_adc=4095)
    acc.update(wf[:150])  # robust reference from the first chunk
    for start in range(150, 400, 37):
        acc.update(wf[start:start + 37])
    chunked = acc.result()
    x = wf.astype(float)
    assert np.allclose(chunked["baseline_per_sample_high"], x[:, 0].mean(0), rtol=0, atol=1e-9)
    assert np.allclose(chunked["baseline_per_sample_std_low"], x[:, 1].std(0, ddof=1), rtol=1e-9)
    assert np.allclose(chunked["baseline_mean_high"], one["baseline_mean_high"], rtol=1e-12)
    assert np.allclose(chunked["baseline_pooled_std_high"], one["baseline_pooled_std_high"], rtol=1e-12)


def test_recovers_truth_within_std_over_sqrt_n(dark):
    cam = dark.camera
    t = dark_baseline(dark.waveforms, saturation_adc=cam.saturation_adc)
    assert t["baseline_high"].unit == u.adc
    for g, name in enumerate(("high", "low")):
        n = np.asarray(t[f"n_values_{name}"], float)
        sig = cam.electronic_noise[g].value
        pull_b = (np.asarray(t[f"baseline_{name}"]) - cam.baseline[g].value) / (sig / np.sqrt(n))
        pull_s = (np.asarray(t[f"baseline_std_{name}"]) - sig) / (sig / np.sqrt(2 * n))
        for pull in (pull_b, pull_s):
            assert np.sqrt(np.mean(pull**2)) < 1 + 4 / np.sqrt(2 * pull.size)
            assert abs(pull.mean()) < 4 / np.sqrt(pull.size)
    flagged = (np.asarray(t["flags_high"]) & FLAGS["noisy"]) > 0
    assert np.array_equal(flagged, cam.noisy)


def test_clipping_factor():
    assert clipped_gaussian_std_factor(4.0) == pytest.approx(0.99946, abs=2e-5)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 2_000_000)
    assert np.std(x[np.abs(x) < 2]) == pytest.approx(clipped_gaussian_std_factor(2.0), abs=2e-3)


def test_flags_for_bad_data(dark):
    wf = dark.waveforms[:50].copy()
    wf[3, 0, 5, 10] = np.nan
    wf[4, 1, 7, :3] = 4095.0
    t = dark_baseline(wf, saturation_adc=4095.0)
    assert np.all(np.asarray(t["flags_high"]) & FLAGS["too_few_events"])
    assert t["n_nan_high"][5] == 1 and t["flags_high"][5] & FLAGS["nan_samples"]
    assert t["n_saturated_low"][7] == 3 and t["flags_low"][7] & FLAGS["saturated_samples"]
    # NaN / saturated samples are excluded, not averaged in
    assert np.isfinite(t["baseline_high"][5]) and t["baseline_low"][7] < 500
    assert t["flags_high"][6] & (FLAGS["nan_samples"] | FLAGS["saturated_samples"]) == 0
    dead = dark.waveforms[:120].copy()
    dead[:, 0, 2] = 400.0  # a channel without noise
    t = dark_baseline(dead, mean_range=(300, 500))
    assert t["flags_high"][2] & FLAGS["noise_too_low"]
    t = dark_baseline(dark.waveforms[:120], mean_range=(500, 600))
    assert np.all(np.asarray(t["flags_high"]) & FLAGS["baseline_out_of_range"])


def test_bad_shapes_raise(dark):
    with pytest.raises(CalibrationError, match="gain channel is missing"):
        acc = BaselineAccumulator(2, 64, 40)
        acc.update(dark.waveforms[:, :1])
    with pytest.raises(CalibrationError, match="n_events, n_gains"):
        dark_baseline(dark.waveforms[0])
    with pytest.raises(CalibrationError, match="no dark events"):
        BaselineAccumulator(2, 64, 40).result()


def test_contract_sample_run_check(tmp_path):
    path = B.CONTRACT.sample(tmp_path, 3)
    table = B.CONTRACT.run(path, tmp_path / "baseline.ecsv", {"chunk_size": 70})
    assert "module" in table.meta
    evidence = B.CONTRACT.check(table, path)
    assert evidence.passed, evidence.metrics
    # ensemble pulls: mean x sqrt(n) and chi-square z-score of baseline and noise, per gain
    assert set(evidence.pulls) == {f"{k}_{s}_z_{g}" for k in ("baseline", "noise")
                                   for s in ("mean", "chi2") for g in ("high", "low")}
    assert all(abs(v) < 5 for v in evidence.pulls.values())
    assert evidence.false_fail_rate == pytest.approx(4 * (2e-4 + 6.3e-5))
    from astropy.table import Table

    back = Table.read(tmp_path / "baseline.ecsv")
    assert back["baseline_high"].unit == u.adc
    # the check can fail: shift the result by 5 statistical errors
    shifted = table.copy()
    shifted["baseline_high"] += 0.5  # adc
    assert not B.CONTRACT.check(shifted, path).passed
    # a result claiming 4x fewer samples (4x wider error bars, all pulls small) fails: the
    # sample count is bounded by the input and the pull rms is two-sided
    few = table.copy()
    few["n_values_high"] = few["n_values_high"] // 4
    ev = B.CONTRACT.check(few, path)
    assert not ev.passed and ev.metrics["n_values_outside_input_high"] == len(table)


def test_run_does_not_read_the_truth_baseline(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.baseline", tmp_path)
