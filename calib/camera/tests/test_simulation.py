"""Tests of the camera simulator: truth conventions, statistics, reproducibility, bad input."""
import astropy.units as u
import numba
import numpy as np
import pytest

from calib.camera.simulation import (
    charge_pedestal_truth, iter_waveforms, make_camera, nonlinear_response, pedestal_truth,
    response_moments, simulate_charges, simulate_waveforms,
)
from calib.contract import CalibrationError


@pytest.fixture(scope="module")
def tiny():
    return make_camera("tiny", seed=0)


def test_cameras_have_the_documented_truth():
    lst = make_camera("lst", seed=1)
    assert (lst.n_pixels, lst.n_samples, lst.n_gains) == (1855, 40, 2)
    assert lst.sampling_rate.value == pytest.approx(1.024)
    assert np.allclose(lst.enf_sq, 1.222, atol=1e-3)
    assert np.median(lst.relative_qe) == pytest.approx(1.0)
    assert abs(lst.time_offset.value.mean()) < 1e-9
    ratio = lst.gain.value[0] / lst.gain.value[1]
    assert np.median(ratio) == pytest.approx(17.0, rel=0.01)
    assert lst.dead.sum() >= 1 and lst.noisy.sum() >= 1 and not np.any(lst.dead & lst.noisy)
    assert np.all(lst.neighbors().max(axis=1) >= 0)
    assert np.sum(lst.neighbors() >= 0, axis=1).max() == 6
    sipm = make_camera("sipm", seed=1)
    assert (sipm.n_pixels, sipm.n_gains) == (2048, 1)
    # F^2 with Borel cross-talk exceeds the cell-to-cell F^2 (1.01)
    assert np.all(sipm.enf_sq > 1.05) and np.all(sipm.crosstalk > 0)
    tiny = make_camera("tiny")
    nb = tiny.neighbors()
    n_nb = np.sum(nb >= 0, axis=1)
    assert n_nb.max() == 4 and n_nb.min() == 2  # square grid: corners have 2
    with pytest.raises(CalibrationError, match="unknown camera"):
        make_camera("magic")


def test_gain_is_the_full_pulse_integral(tiny):
    """Noise-free flasher: the sum of all samples / gain equals the true signal charge."""
    from dataclasses import replace

    # flasher early enough that the whole pulse (incl. the low-gain undershoot) is read out
    quiet = replace(tiny, electronic_noise=tiny.electronic_noise * 0, flasher_time=12 * u.ns)
    run = simulate_waveforms(quiet, "flatfield", 200, seed=3, nsb=False)
    ok = ~tiny.dead
    for g in range(2):
        q = run.waveforms[:, g].sum(-1) - 40 * tiny.baseline.value[g]
        true = tiny.gain.value[g] * nonlinear_response(run.true_charge, tiny.nonlinearity[g])
        ratio = q[:, ok].sum(0) / true[:, ok].sum(0)
        # sampling a pulse at one phase: sum of samples = integral within 0.7 % (LG), 0.3 % (HG)
        assert np.all(np.abs(ratio - 1) < 0.008)
        assert abs(np.mean(ratio) - 1) < 0.002


def test_photon_statistics_and_enf(tiny):
    run = simulate_charges(tiny, "flatfield", 3000, seed=4, nsb=False)
    ok = ~tiny.dead
    lam = 80.0 * tiny.relative_qe[ok]
    n = run.true_pe[:, ok]
    # Poisson: mean within 4 sigma per pixel (sigma = sqrt(lam / N))
    pull = (n.mean(0) - lam) / np.sqrt(lam / 3000)
    assert np.sqrt(np.mean(pull**2)) < 1.4
    # compound SPE sum (Gamma above 30 p.e.): Var(q | n) = n (F^2 - 1)
    resid = run.true_charge[:, ok] - n
    f2m1 = resid.var() / n.mean()
    assert f2m1 == pytest.approx(0.222, rel=4 * np.sqrt(2 / resid.size) + 0.01)
    assert run.true_pe[:, tiny.dead].sum() == 0


def test_exact_spe_sum_at_low_intensity(tiny):
    run = simulate_charges(tiny, "spe", 20000, seed=5, nsb=False)
    one = run.true_pe == 1
    q = run.true_charge[one]
    mean, var = response_moments(tiny.spe_charge, tiny.spe_pdf, 0.0)
    assert q.mean() == pytest.approx(mean, abs=4 * np.sqrt(var / q.size))
    assert q.var() / q.mean() ** 2 == pytest.approx(0.222, rel=0.05)


def test_sipm_crosstalk_probability():
    sipm = make_camera("sipm", seed=2)
    run = simulate_charges(sipm, "spe", 600, seed=6, intensity=0.5, nsb=False)
    one = run.true_pe == 1
    # with one primary p.e., P(>= 2 avalanches) = p_xt; the avalanche SPE is narrow (10 %)
    xt = (run.true_charge > 1.5) & one
    p_meas = xt.sum() / one.sum()
    p_true = np.sum(sipm.crosstalk[np.nonzero(one)[1]]) / one.sum()
    assert p_meas == pytest.approx(p_true, abs=4 * np.sqrt(p_true * (1 - p_true) / one.sum()))


def test_pedestal_waveforms_match_the_analytic_truth(tiny):
    run = simulate_waveforms(tiny, "pedestal", 3000, seed=7)
    q = run.waveforms[..., 15:22].sum(-1).astype(float)
    mean_t, std_t = pedestal_truth(tiny, 7)
    ok = ~tiny.dead
    n = q.shape[0]
    kurt = np.mean((q - q.mean(0)) ** 4, 0) / q.var(0) ** 2 - 3
    pull_m = ((q.mean(0) - mean_t) / (std_t / np.sqrt(n)))[:, ok]
    pull_s = ((q.std(0) - std_t) / (std_t * np.sqrt((kurt + 2) / (4 * n))))[:, ok]
    for pull in (pull_m, pull_s):
        assert np.sqrt(np.mean(pull**2)) < 1 + 4 / np.sqrt(2 * pull.size)
        assert abs(pull.mean()) < 4 / np.sqrt(pull.size)


def test_charge_level_pedestal_truth(tiny):
    run = simulate_charges(tiny, "pedestal", 4000, seed=8)
    mean_t, std_t = charge_pedestal_truth(tiny, 7)
    pull = (run.charge.mean(0) - mean_t) / (std_t / np.sqrt(4000))
    assert np.sqrt(np.mean(pull**2)) < 1 + 4 / np.sqrt(2 * pull.size)


def test_reproducible_for_any_chunking_and_thread_count(tiny):
    a = simulate_waveforms(tiny, "flatfield", 23, seed=9, intensity_jitter=0.05)
    b = np.concatenate([c.waveforms for c in iter_waveforms(tiny, "flatfield", 23, 9,
                                                            intensity_jitter=0.05, chunk_size=5)])
    assert np.array_equal(a.waveforms, b)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        c = simulate_waveforms(tiny, "flatfield", 23, seed=9, intensity_jitter=0.05)
    finally:
        numba.set_num_threads(n)
    assert np.array_equal(a.waveforms, c.waveforms)
    d = simulate_waveforms(tiny, "flatfield", 23, seed=10)
    assert not np.array_equal(a.waveforms, d.waveforms)


def test_saturation_and_dead_pixels(tiny):
    run = simulate_waveforms(tiny, "flatfield", 5, seed=11, intensity=2000.0)
    assert run.waveforms.max() == tiny.saturation_adc
    assert run.waveforms.min() >= 0
    hg = run.waveforms[:, 0]
    assert np.mean(hg[:, ~tiny.dead].max(-1) == tiny.saturation_adc) > 0.99
    # dead pixels: baseline and noise only
    dead = hg[:, tiny.dead]
    assert np.all(np.abs(dead - tiny.baseline.value[0, tiny.dead][None, :, None]) < 40)


def test_intensity_scan_and_jitter(tiny):
    levels = [10.0, 100.0, 1000.0]
    run = simulate_charges(tiny, "intensity_scan", 300, seed=12, intensity=levels)
    assert np.array_equal(np.unique(run.flasher_intensity), levels)
    assert np.all(np.diff(run.flasher_intensity) >= 0)
    jit = simulate_charges(tiny, "flatfield", 4000, seed=13, intensity_jitter=0.1)
    rel = jit.flasher_intensity.std() / jit.flasher_intensity.mean()
    assert rel == pytest.approx(0.1, abs=4 * 0.1 / np.sqrt(2 * 4000))


def test_nonlinearity_is_smooth_compression():
    q = np.array([0.0, 10.0, 1000.0, 1e6])
    out = nonlinear_response(q, 1000.0)
    assert out[0] == 0 and out[1] == pytest.approx(10.0, rel=1e-4)
    assert out[2] == pytest.approx(1000 * np.tanh(1.0))
    assert out[3] == pytest.approx(1000.0)
    assert np.array_equal(nonlinear_response(q, np.inf), q)


@pytest.mark.parametrize("kw, msg", [
    (dict(run_type="cosmics", n_events=3), "unknown run type"),
    (dict(run_type="dark", n_events=0), "at least one event"),
    (dict(run_type="flatfield", n_events=3, intensity=-1.0), "non-negative"),
])
def test_bad_arguments_raise(tiny, kw, msg):
    with pytest.raises(CalibrationError, match=msg):
        simulate_waveforms(tiny, seed=0, **kw)
    with pytest.raises(CalibrationError, match=msg):
        simulate_charges(tiny, seed=0, **kw)


def test_sipm_waveforms_with_crosstalk_match_the_truth():
    """SiPM pedestal (NSB + dark counts, Borel cross-talk): window variance = truth."""
    sipm = make_camera("sipm", seed=3)
    run = simulate_waveforms(sipm, "pedestal", 250, seed=4)
    assert run.waveforms.shape == (250, 1, 2048, 64)
    q = run.waveforms[:, 0, :, 30:37].sum(-1).astype(float)
    mean_t, std_t = pedestal_truth(sipm, 7)
    ok = ~sipm.dead
    ratio = (q.var(0, ddof=1) / std_t[0] ** 2)[ok]
    assert ratio.mean() == pytest.approx(1.0, abs=4 * ratio.std() / np.sqrt(ratio.size))
    pull = ((q.mean(0) - mean_t[0]) / (std_t[0] / np.sqrt(250)))[ok]
    assert abs(pull.mean()) < 4 / np.sqrt(pull.size)
