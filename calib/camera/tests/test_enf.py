"""Tests of the single-p.e. spectrum fit and the excess noise factor (I-DATA-xST-0107)."""
import numpy as np
import pytest

from calib import data
from calib.camera import enf
from calib.contract import CalibrationError

TRUTH = dict(lam=1.0, pedestal=200.0, pedestal_width=5.0, mu=30.0, rel_sigma=0.28, w_low=0.2,
             tau_rel=0.5)


def _ped(seed, n=20000):
    return np.random.default_rng(1000 + seed).normal(TRUTH["pedestal"], TRUTH["pedestal_width"], n)


def test_moments_match_monte_carlo():
    rng = np.random.default_rng(1)
    for low in enf.LOW_MODELS:
        x = enf.sample_spe(rng, 2_000_000, 30.0, 0.28, 0.2, 0.5, low)
        mean, var = enf.spe_moments(30.0, 0.28, 0.2, 0.5, low)
        # standard errors of the sample mean and variance, 2e6 draws
        assert abs(x.mean() - mean) < 4 * np.sqrt(var / x.size)
        assert abs(x.var() - var) < 4 * np.sqrt(np.mean((x - x.mean()) ** 4) / x.size)


def test_spectrum_probabilities_match_monte_carlo():
    """The FFT compound-Poisson model reproduces a large toy spectrum (chi2 within 4 sigma)."""
    q = enf.simulate_spe_charges(400_000, **TRUTH, seed=3)[:, 0]
    edges = np.linspace(q.min() - 1, np.quantile(q, 0.999), 121)
    prob = enf.spectrum_bin_probabilities(edges, *TRUTH.values())
    counts = np.histogram(q, edges)[0]
    nu = prob * q.size
    ndf = len(counts)
    chi2 = np.sum((counts - nu) ** 2 / nu)
    assert abs(chi2 - ndf) < 4 * np.sqrt(2 * ndf)
    # the model mass outside the histogram equals the fraction of events outside
    assert abs((1 - prob.sum()) - np.mean(q >= edges[-1])) < 4 * np.sqrt(1e-3 / q.size)


def test_enf_recovered_within_uncertainty_and_pull_spread():
    """Fitted F² agrees with the truth within its error; the errors are consistent over seeds."""
    truth_f2 = enf.spe_enf_sq(TRUTH["rel_sigma"], TRUTH["w_low"], TRUTH["tau_rel"])
    truth_gain = enf.spe_moments(TRUTH["mu"], TRUTH["rel_sigma"], TRUTH["w_low"], TRUTH["tau_rel"])[0]
    pulls, gpulls = [], []
    for seed in range(10):
        q = enf.simulate_spe_charges(20000, **TRUTH, seed=seed)[:, 0]
        fit = enf.fit_spe_spectrum(q, pedestal_charge=_ped(seed))
        assert fit.success
        assert 0.005 < fit.enf_sq_err < 0.1
        pulls.append((fit.enf_sq - truth_f2) / fit.enf_sq_err)
        gpulls.append((fit.gain - truth_gain) / fit.gain_err)
    pulls, gpulls = np.array(pulls), np.array(gpulls)
    assert np.all(np.abs(pulls) < 3) and np.all(np.abs(gpulls) < 3)
    # 10 pulls: the mean of a unit normal has sd 0.32; the sample sd has sd ~0.24
    # (the ML fit has a known +0.4 sigma bias at this statistics, see the module docstring)
    assert abs(pulls.mean()) < 1.0 + 0.4
    assert 0.4 < pulls.std(ddof=1) < 1.7
    assert 0.4 < gpulls.std(ddof=1) < 1.7


def test_exponential_low_component_model():
    truth = dict(TRUTH, w_low=0.25, tau_rel=0.4)
    q = enf.simulate_spe_charges(20000, **truth, seed=5, low="exponential")[:, 0]
    fit = enf.fit_spe_spectrum(q, low="exponential", pedestal_charge=_ped(5))
    f2 = enf.spe_enf_sq(truth["rel_sigma"], truth["w_low"], truth["tau_rel"], "exponential")
    assert fit.success and abs(fit.enf_sq - f2) < 3 * fit.enf_sq_err
    assert abs(fit.values["lam"] - 1.0) < 3 * fit.errors["lam"]


def test_lst_spectrum_representation_bias_is_small():
    x, p = np.loadtxt(data.path("lst_single_pe_spectrum.dat")).T
    bias, f2 = enf.model_representation_bias(x, p)
    assert f2 == pytest.approx(1.222, abs=5e-4)
    assert bias == pytest.approx(-0.006, abs=0.001)  # documented in the module docstring
    bias_exp, _ = enf.model_representation_bias(x, p, low="exponential")
    assert bias_exp == pytest.approx(0.005, abs=0.001)


def test_camera_table_flags_bad_pixels():
    q = enf.simulate_spe_charges(6000, **TRUTH, seed=7, n_pixels=3)
    ped = np.random.default_rng(8).normal(200, 5, (5000, 3))
    q[:, 1] = np.random.default_rng(9).normal(200, 5, 6000)  # pixel without light
    q[10, 2] = np.nan
    t = enf.fit_spe_spectra(q, ped)
    assert list(t["fit_ok"]) == [True, False, False]
    assert "no signal" in t["reason"][1] and "NaN" in t["reason"][2]
    assert np.isnan(t["enf_sq"][1])
    assert t["gain"].unit == "adc"


@pytest.mark.parametrize("charges, match", [
    (np.array([]), "empty"),
    (np.full(5000, np.nan), "NaN"),
    (np.ones(100), "at least"),
])
def test_bad_input(charges, match):
    with pytest.raises(CalibrationError, match=match):
        enf.fit_spe_spectrum(charges)


def test_saturated_and_no_signal():
    q = enf.simulate_spe_charges(5000, **TRUTH, seed=2)[:, 0]
    with pytest.raises(CalibrationError, match="saturation"):
        enf.fit_spe_spectrum(q, saturation=260.0)
    dark = np.random.default_rng(3).normal(200, 5, 5000)
    with pytest.raises(CalibrationError, match="no signal"):
        enf.fit_spe_spectrum(dark)
    with pytest.raises(CalibrationError, match="pixels"):
        enf.fit_spe_spectra(np.zeros((10, 3)), np.zeros((10, 2)))


def test_contract_sample_run_check(tmp_path):
    from astropy.table import Table

    path = enf.CONTRACT.sample(tmp_path, 3)
    result = enf.CONTRACT.run(path, tmp_path / "enf.ecsv", {})
    evidence = enf.CONTRACT.check(result, path)
    assert evidence.passed, evidence.summary
    # over-estimated errors make every pull small: the two-sided pull rms must catch them
    wide = result.copy()
    wide["enf_sq_err"] *= 10
    wide["gain_err"] *= 10
    assert not enf.CONTRACT.check(wide, path).passed
    # a NaN F² of a "good" fit is a failure, not skipped (np.max, not np.nanmax)
    nan = result.copy()
    nan["enf_sq"][0] = np.nan
    assert nan["fit_ok"][0] and not enf.CONTRACT.check(nan, path).passed
    # the evidence states its headline pulls and its designed false-fail rate (sum of the tails)
    assert set(evidence.pulls) == {"camera_mean_enf_sq", "camera_mean_gain"}
    assert all(np.isfinite(v) and abs(v) < 4 for v in evidence.pulls.values())
    assert evidence.false_fail_rate == pytest.approx(enf.check_false_fail_rate(len(result)))
    assert 1e-4 < evidence.false_fail_rate <= 0.01
    # a common gain offset of 4.5 camera-mean errors (about 1.6 sigma per pixel for 8 pixels)
    # is caught by the camera-mean gain pull
    shifted = result.copy()
    err = evidence.metrics["camera_mean_gain_err"]
    # the camera-mean error holds the common bootstrap-bias error fully correlated
    c = result.meta["gain_bias_rel_err"] * np.mean(np.asarray(result["gain"]))
    n = len(result)
    naive = np.sqrt(np.sum(np.asarray(result["gain_err"]) ** 2)) / n
    assert err == pytest.approx(np.sqrt(naive**2 + c**2 * (1 - 1 / n)), rel=0.02)
    assert result.meta["bootstrap_n_toys"] == enf.BOOTSTRAP_TOYS
    sign = 1.0 if evidence.pulls["camera_mean_gain"] >= 0 else -1.0
    shifted["gain"][:] = np.asarray(result["gain"]) + sign * 4.5 * err
    ev = enf.CONTRACT.check(shifted, path)
    assert abs(ev.pulls["camera_mean_gain"] - evidence.pulls["camera_mean_gain"] - 4.5 * sign) < 1e-6
    assert abs(ev.pulls["camera_mean_gain"]) > enf.CHECK_MEAN_PULL and not ev.passed
    back = Table.read(tmp_path / "enf.ecsv")
    assert back["gain"].unit == "adc" and "module" in back.meta
    # a check that can fail: a wrong truth is detected
    import h5py
    with h5py.File(path, "a") as f:
        f["true_enf_sq"][...] = 1.30
    assert not enf.CONTRACT.check(result, path).passed


def test_contract_rejects_bad_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(CalibrationError):
        enf.CONTRACT.run(bad, tmp_path / "x.ecsv", {})


def test_run_does_not_read_the_truth_enf(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth."""
    from calib.camera.tests.truthless import assert_run_ignores_truth

    assert_run_ignores_truth("calib.camera.enf", tmp_path)


def test_asymptotic_fit_bias_vanishes_for_a_representable_spe():
    """The Asimov fit of spectra whose SPE *is* the parametric model converges to the truth; on
    the LST SPE table it gives the model-representation bias quoted in the module docstring."""
    c = np.linspace(0.0005, 4.0, 4000)
    mu, r, w, tau = 1.17, 0.28, 0.2, 0.33
    main = np.exp(-0.5 * ((c - mu) / (r * mu)) ** 2) / (r * mu) / enf._norm_cdf(1 / r)
    pdf = (1 - w) * main + w * 2 * np.exp(-0.5 * (c / (tau * mu)) ** 2) / (tau * mu)
    b = enf.asymptotic_fit_bias(c, pdf, 1.0, 0.165)
    # the table is piecewise uniform on 1e-3 p.e. cells: its moments differ from the model by < 1e-5
    assert abs(b["gain_rel"]) < 2e-4 and abs(b["enf_sq"]) < 2e-4
    x, p = np.loadtxt(data.path("lst_single_pe_spectrum.dat")).T
    lst = enf.asymptotic_fit_bias(x, p, 1.0, 0.165)
    assert lst["gain_rel"] == pytest.approx(-0.0044, abs=3e-4)
    assert lst["enf_sq"] == pytest.approx(-0.0046, abs=3e-4)


@pytest.mark.slow
def test_bootstrap_removes_the_finite_sample_bias():
    """3000 events, σ_ped = 0.07 p.e. (stable fits): the ML F² is biased by ≈ +0.4 σ per pixel
    (+0.0097 ± 0.0015 from 200 toys), so the uncorrected mean of 128 pixels is off by ≈ 5 of its
    errors.  The parametric bootstrap measures the bias and the corrected camera mean agrees with
    the truth within 3 of its errors (the common bootstrap error included)."""
    truth = dict(TRUTH, pedestal_width=2.0)
    n_pix, n_ev = 128, 3000
    q = enf.simulate_spe_charges(n_ev, **truth, seed=21, n_pixels=n_pix)
    ped = np.random.default_rng(22).normal(truth["pedestal"], truth["pedestal_width"], (n_ev, n_pix))
    f2_true = enf.spe_enf_sq(truth["rel_sigma"], truth["w_low"], truth["tau_rel"])
    gain_true = enf.spe_moments(truth["mu"], truth["rel_sigma"], truth["w_low"], truth["tau_rel"])[0]
    cor = enf.fit_spe_spectra(q, ped, bootstrap=200, bootstrap_seed=5)
    assert cor["fit_ok"].all() and cor.meta["bootstrap_n_toys"] == 200
    b, b_err = cor.meta["enf_sq_bias"], cor.meta["enf_sq_bias_err"]
    assert b > 4 * b_err  # the bias is there and measured
    f2, e2 = np.asarray(cor["enf_sq"]), np.asarray(cor["enf_sq_err"])
    raw, raw_err = f2 + b, np.sqrt(e2**2 - b_err**2)
    pull_raw = (raw.mean() - f2_true) / (np.sqrt(np.sum(raw_err**2)) / n_pix)
    pull_cor = (f2.mean() - f2_true) / np.hypot(np.sqrt(np.sum(raw_err**2)) / n_pix, b_err)
    assert pull_raw > 3
    assert abs(pull_cor) < 3
    # the gain is divided by (1 + relative bias); the camera mean agrees with the truth
    g, eg = np.asarray(cor["gain"]), np.asarray(cor["gain_err"])
    g_err_common = cor.meta["gain_bias_rel_err"] * gain_true
    gain_raw_err = np.sqrt(eg**2 - (g * cor.meta["gain_bias_rel_err"]) ** 2)
    g_pull = (g.mean() - gain_true) / np.hypot(np.sqrt(np.sum(gain_raw_err**2)) / n_pix,
                                               g_err_common)
    assert abs(g_pull) < 3


def test_bootstrap_refuses_too_few_toys(tmp_path):
    with pytest.raises(CalibrationError, match="at least 2"):
        enf.bootstrap_bias([1.0, 200, 5, 30, 0.28, 0.2, 0.5], 3000, 3000, 1)
    path = enf.CONTRACT.sample(tmp_path, 0)
    with pytest.raises(CalibrationError, match="bootstrap_toys"):
        enf.CONTRACT.run(path, None, {"bootstrap_toys": 1})
