"""Tests of the SiPM optical cross-talk estimates (I-DATA-xST-0109)."""
import numpy as np
import pytest

from calib.camera import crosstalk as xt
from calib.contract import CalibrationError


def toy_sipm(n_events, n_pixels, mu, p_xt, seed, gain=25.0, sigma0=2.6, sigma1=2.5, ped=1400.0):
    """Poisson primaries, Borel branching (each avalanche fires Poisson(lam) more), Gaussian cells."""
    rng = np.random.default_rng(seed)
    lam = -np.log1p(-p_xt)
    k = rng.poisson(mu, (n_events, n_pixels))
    pend = k.copy()
    while pend.any():
        pend = rng.poisson(lam * pend)
        k += pend
    return ped + k * gain + np.sqrt(sigma0**2 + k * sigma1**2) * rng.standard_normal(k.shape)


def test_generalized_poisson_moments_and_monte_carlo():
    mu, p = 1.3, 0.2
    lam = -np.log1p(-p)
    k = np.arange(200)
    pk = xt.generalized_poisson_pmf(k, mu, lam)
    assert pk.sum() == pytest.approx(1.0, abs=1e-10)
    mean = np.sum(k * pk)
    assert mean == pytest.approx(mu / (1 - lam), rel=1e-9)
    assert np.sum((k - mean) ** 2 * pk) == pytest.approx(mu / (1 - lam) ** 3, rel=1e-8)
    q = toy_sipm(200_000, 1, mu, p, seed=1, sigma0=0.0, sigma1=0.0, gain=1.0, ped=0.0)[:, 0]
    counts = np.bincount(np.rint(q).astype(int), minlength=8)[:8]
    expected = pk[:8] * q.size
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 8 + 4 * np.sqrt(16)  # 8 dof, 4 sigma


def test_enf_from_crosstalk_matches_simulator_convention():
    from calib.camera.simulation import response_moments

    c = np.linspace(0, 2, 401)
    pdf = np.exp(-0.5 * ((c - 1) / 0.1) ** 2)
    pdf /= np.trapezoid(pdf, c)
    mean, var = response_moments(c, pdf, np.array([0.15]))
    rel = np.sqrt(response_moments(c, pdf, np.array([0.0]))[1][0])
    assert xt.enf_sq_from_crosstalk(-np.log(0.85), rel) == pytest.approx(1 + var[0] / mean[0] ** 2,
                                                                         rel=1e-6)


def test_dark_count_estimates_pulls():
    """Pile-up corrected estimate: unbiased with consistent errors; the naive one is biased by ~μ/2."""
    p_true, mu = 0.15, 0.06
    q = toy_sipm(40_000, 40, mu, p_true, seed=2)
    d = xt.crosstalk_from_dark_counts(q, 1400.0, 25.0)
    pull = (d["p_corrected"] - p_true) / d["p_corrected_err"]
    # 40 pixels: mean of pulls has sd 0.16, sample sd has sd 0.11
    assert abs(pull.mean()) < 3 * 0.16
    assert abs(pull.std(ddof=1) - 1) < 3 * 0.11
    assert np.all(np.abs(pull) < 4)
    assert d["dark_pe"].mean() == pytest.approx(mu, rel=0.05)
    naive_bias = np.mean(d["p_naive"]) - p_true
    sd_mean = np.sqrt(np.sum(d["p_naive_err"] ** 2)) / 40
    # pile-up of two primaries: P(>=2 primaries)/P(>=1) ~ mu/2 (times (1 - p_xt) for the 1-cell case)
    assert abs(naive_bias - (1 - p_true) * mu / 2) < 3 * sd_mean


def test_spectrum_fit_recovers_crosstalk_with_consistent_errors():
    p_true, mu = 0.15, 1.0
    q = toy_sipm(8000, 10, mu, p_true, seed=3)
    t = xt.fit_crosstalk_camera(q)
    assert np.all(t["fit_ok"])
    pull = (t["crosstalk"] - p_true) / t["crosstalk_err"]
    gpull = (t["gain"].value - 25.0) / t["gain_err"].value
    mpull = (t["mu"] - mu) / t["mu_err"]
    for p in (pull, gpull, mpull):
        assert np.all(np.abs(p) < 3.5)
        assert 0.4 < np.std(p, ddof=1) < 1.7  # 10 pulls: sd of the sample sd ~0.24
        assert abs(np.mean(p)) < 3 / np.sqrt(10)
    enf_true = xt.enf_sq_from_crosstalk(-np.log1p(-p_true), 2.5 / 25.0)
    assert np.all(np.abs(t["enf_sq"] - enf_true) < 3.5 * t["enf_sq_err"])


def test_contract_with_simulator(tmp_path):
    path = xt.CONTRACT.sample(tmp_path, 1)
    result = xt.CONTRACT.run(path, tmp_path / "xt.ecsv", {})
    ev = xt.CONTRACT.check(result, path)
    assert ev.passed, ev.metrics
    # |pull| < 3.5 on 4 quantities x 8 pixels was a 1.5 % false-fail rate by design; at 4 sigma
    assert ev.false_fail_rate == pytest.approx(4 * 8 * 6.3e-5 + 4 * 2e-4)
    assert set(ev.pulls) == {f"{k}_{s}" for k in ("crosstalk_fit", "crosstalk_dark", "gain",
                                                  "enf_sq") for s in ("mean_z", "chi2_z")}
    wide = result.copy()  # over-estimated errors: caught by the two-sided pull rms
    for col in ("crosstalk_err", "crosstalk_dark_err", "gain_err", "enf_sq_err"):
        wide[col] *= 10
    assert not xt.CONTRACT.check(wide, path).passed
    nan = result.copy()  # a NaN cross-talk of a "good" fit fails (np.max, not np.nanmax)
    nan["crosstalk"][0] = np.nan
    assert nan["fit_ok"][0] and not xt.CONTRACT.check(nan, path).passed
    assert result.meta["branching_model"].startswith("Borel")
    import h5py
    with h5py.File(path, "a") as f:
        f["true_crosstalk"][...] = f["true_crosstalk"][()] + 0.03
    assert not xt.CONTRACT.check(result, path).passed


def test_bad_input():
    with pytest.raises(CalibrationError, match="empty"):
        xt.fit_crosstalk_spectrum(np.array([]))
    with pytest.raises(CalibrationError, match="NaN"):
        xt.fit_crosstalk_spectrum(np.full(5000, np.nan))
    with pytest.raises(CalibrationError, match="at least"):
        xt.fit_crosstalk_spectrum(np.ones(50))
    with pytest.raises(CalibrationError, match="at least"):
        xt.crosstalk_from_dark_counts(np.ones((50, 2)), 0.0, 1.0)
    q = toy_sipm(5000, 1, 1.0, 0.15, seed=4)[:, 0]
    with pytest.raises(CalibrationError, match="saturation"):
        xt.fit_crosstalk_spectrum(q, saturation=1450.0)
    noise = np.random.default_rng(5).normal(1400, 2.6, 5000)
    with pytest.raises(CalibrationError, match="no signal"):
        xt.fit_crosstalk_spectrum(noise)
    t = xt.fit_crosstalk_camera(np.stack([q, noise], axis=1))
    assert list(t["fit_ok"]) == [True, False] and "no signal" in t["reason"][1]


def test_run_does_not_read_the_truth_crosstalk(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.crosstalk", tmp_path)
