"""Optical cross-talk of SiPM pixels from dark-count and low-illumination charge spectra.

Method (I-DATA-xST-0109).  Branching model: every avalanche (fired cell) triggers a Poisson
number of further avalanches with mean λ (the branching parameter), so the probability that an
avalanche triggers cross-talk is p_xt = 1 − exp(−λ) and one primary p.e. (photon or thermal
carrier) yields a Borel-distributed number of avalanches (Vinogradov 2012, NIM A 695, 247).  For
a Poisson number of primaries of mean μ, the number k of fired cells follows the generalised
Poisson distribution (Consul & Jain 1973)::

    P(k) = μ (μ + kλ)^{k−1} e^{−μ−kλ} / k!        E k = μ/(1−λ),  Var k = μ/(1−λ)³

(this is the model of the camera simulator, ``calib.camera.simulation``).

1. Dark counts: with pedestal and gain known, the events of a dark run are counted below
   0.5 p.e. (N0), between 0.5 and 1.5 p.e. (N1) and above 1.5 p.e. (N≥2).  The classic estimate
   is p_xt ≈ N≥2 / (N1 + N≥2) (binomial error); it counts accidental pile-up of two thermal
   carriers as cross-talk, an overestimate of ≈ (1 − p_xt)·μ/2.  The pile-up-corrected
   estimate follows from the generalised Poisson: P0 = e^{−μ}, P1 = μ e^{−μ−λ}, so μ = −ln(N0/N) and
   p_xt = 1 − N1/(N μ e^{−μ}) (multinomial delta-method error).
2. Low-illumination spectrum (μ ≈ 0.5–2): the charge spectrum
   f(Q) = Σ_k P(k; μ, λ) · Gauss(Q; pedestal + k g, √(σ0² + k σ1²)) is fitted by a binned Poisson
   likelihood (scipy.optimize, covariance from the numerical Hessian) giving μ, p_xt, the gain g
   (ADC per fired cell), the pedestal, the noise σ0 and the per-cell gain spread σ1, with
   uncertainties.  The excess noise factor of one primary p.e. follows:
   F² = 1 + [E N σ1² + Var N g²] / (E N g)², E N = 1/(1−λ), Var N = λ/(1−λ)³.

Not modelled: delayed cross-talk and after-pulses (they add a tail between the peaks in real
SiPM spectra; spefit's "modified Poisson" / Gentile models address them), and the saturation
of the microcell count.

References: Vinogradov 2012, NIM A 695, 247 (Borel branching, generalised Poisson); Consul &
Jain 1973, Technometrics 15, 791; Gallego et al. 2013, JINST 8, P05010 (cross-talk from dark
counts); spefit (SiPM single-p.e. spectrum fits, parameter ``opct``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy import optimize, special

from calib._stats import numerical_hessian, pull_rms_bounds
from calib.camera.io import read_arrays, write_arrays
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "generalized_poisson_pmf",
    "crosstalk_from_dark_counts",
    "spectrum_probabilities",
    "fit_crosstalk_spectrum",
    "fit_crosstalk_camera",
    "enf_sq_from_crosstalk",
    "CONTRACT",
]

MIN_EVENTS = 1000


def generalized_poisson_pmf(k, mu, lam):
    """P(k fired cells) for Poisson(μ) primaries and Borel(λ) branching; broadcasts."""
    k = np.asarray(k, float)
    mu = np.asarray(mu, float)
    lam = np.asarray(lam, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = (np.log(mu) + (k - 1) * np.log(mu + k * lam) - mu - k * lam - special.gammaln(k + 1))
    return np.exp(logp)


def enf_sq_from_crosstalk(lam, rel_cell_sigma):
    """F² of the response to one primary p.e.: Borel(λ) avalanches of relative spread σ1/g."""
    lam = np.asarray(lam, float)
    en, vn = 1 / (1 - lam), lam / (1 - lam) ** 3
    return 1 + (en * rel_cell_sigma**2 + vn) / en**2


def _clean(charge, name="charge"):
    q = np.asarray(getattr(charge, "value", charge), float)
    if q.size == 0:
        raise CalibrationError(f"the {name} spectrum is empty")
    if not np.all(np.isfinite(q)):
        raise CalibrationError(f"the {name} spectrum contains {np.count_nonzero(~np.isfinite(q))} "
                               "NaN or infinite values")
    return q


def crosstalk_from_dark_counts(charge, pedestal, gain, saturation=None):
    """Cross-talk from a dark run (charges (n_events, ...) ADC, pedestal and gain broadcastable).

    Returns a dict of arrays over the remaining axes: n_events, n0, n1, n2 (counts below 0.5,
    between 0.5 and 1.5, above 1.5 p.e.), dark_pe (μ per event), p_naive ± err,
    p_corrected ± err.  Pixels without any dark count give NaN.
    """
    q = _clean(charge, "dark-run charge")
    if q.shape[0] < MIN_EVENTS:
        raise CalibrationError(f"only {q.shape[0]} dark events: at least {MIN_EVENTS} are needed")
    if saturation is not None and np.any(q >= saturation):
        raise CalibrationError("saturated charges in a dark run: the pixel or the run is broken")
    pe = (q - pedestal) / gain
    n = q.shape[0]
    n0 = np.sum(pe < 0.5, axis=0).astype(float)
    n1 = np.sum((pe >= 0.5) & (pe < 1.5), axis=0).astype(float)
    n2 = np.sum(pe >= 1.5, axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_naive = n2 / (n1 + n2)
        err_naive = np.sqrt(p_naive * (1 - p_naive) / (n1 + n2))
        f0, f1 = n0 / n, n1 / n
        mu = -np.log(f0)
        p_corr = 1 - f1 / (mu * f0)
        # delta method, multinomial (f0, f1): d p / d f1 = -1/(mu f0);
        # d p / d f0 = f1 (mu - 1) / (mu f0)^2   (from d(mu f0)/d f0 = mu - 1)
        d1 = -1 / (mu * f0)
        d0 = f1 * (mu - 1) / (mu * f0) ** 2
        var = (d0**2 * f0 * (1 - f0) + d1**2 * f1 * (1 - f1) - 2 * d0 * d1 * f0 * f1) / n
    nodark = (n1 + n2) == 0
    nan = np.where(nodark, np.nan, 1.0)
    return {"n_events": np.full(n0.shape, n), "n0": n0, "n1": n1, "n2": n2, "dark_pe": mu,
            "p_naive": p_naive * nan, "p_naive_err": err_naive * nan,
            "p_corrected": p_corr * nan, "p_corrected_err": np.sqrt(np.maximum(var, 0)) * nan}


def spectrum_probabilities(edges, mu, lam, pedestal, gain, sigma0, sigma1, k_max=None):
    """Probability of each charge bin under the generalised-Poisson multi-peak model."""
    edges = np.asarray(edges, float)
    if k_max is None:
        mean, sd = mu / (1 - lam), np.sqrt(mu / (1 - lam) ** 3)
        k_max = int(np.ceil(mean + 10 * sd + 5))
        k_max = max(k_max, int(np.ceil((edges[-1] - pedestal) / gain)) + 3)
    k = np.arange(k_max + 1)
    pk = generalized_poisson_pmf(k, mu, lam)
    sig = np.sqrt(sigma0**2 + k * sigma1**2)
    z = (edges[None, :] - pedestal - k[:, None] * gain) / sig[:, None]
    cdf = 0.5 * special.erfc(-z / np.sqrt(2))
    return pk @ np.diff(cdf, axis=1)


def _peak_guess(q):
    """Pedestal, noise and gain starting values from the histogram (lowest peak, next peak)."""
    lo, hi = np.quantile(q, [0.001, 0.995])
    ped = np.median(q[q < np.quantile(q, 0.3)]) if np.mean(q < lo) < 1 else lo
    counts, e = np.histogram(q, bins=400, range=(lo, hi))
    c = 0.5 * (e[1:] + e[:-1])
    k0 = int(np.argmax(counts))
    ped = c[k0]
    left = q[(q < ped) & (q > lo)]
    sigma0 = np.sqrt(np.mean((left - ped) ** 2)) if left.size > 20 else (hi - lo) / 100
    # next peak: maximum of the smoothed histogram beyond pedestal + 4 sigma0
    smooth = np.convolve(counts, np.ones(5) / 5, mode="same")
    beyond = c > ped + 4 * sigma0
    if not beyond.any() or smooth[beyond].max() <= 0:
        raise CalibrationError("no signal: no single-cell peak is found above the pedestal")
    k1 = np.flatnonzero(beyond)[np.argmax(smooth[beyond])]
    gain = c[k1] - ped
    return ped, sigma0, gain


def fit_crosstalk_spectrum(charge, *, pedestal=None, gain=None, saturation=None,
                           min_events: int = MIN_EVENTS) -> dict:
    """Fit one pixel's low-illumination SiPM spectrum with the generalised-Poisson model.

    Returns a dict of values and errors: mu, crosstalk (p_xt), branching (λ), pedestal, gain,
    sigma0, sigma1, enf_sq, deviance, ndf, success.  CalibrationError on bad input.
    """
    q = _clean(charge).ravel()
    if q.size < min_events:
        raise CalibrationError(f"only {q.size} events: the cross-talk fit needs at least {min_events}")
    if saturation is not None and np.any(q >= saturation):
        raise CalibrationError(f"{np.count_nonzero(q >= saturation)} charges reach saturation: "
                               "not a low-illumination run")
    ped0, s0, g0 = _peak_guess(q)
    if pedestal is not None:
        ped0 = float(pedestal)
    if gain is not None:
        g0 = float(gain)
    if g0 < 3 * s0:
        raise CalibrationError(f"the single-cell peaks are not resolved (gain guess {g0:.3g} ADC "
                               f"vs noise {s0:.3g} ADC)")
    frac0 = np.mean(q < ped0 + 0.5 * g0)
    if frac0 > 0.995:
        raise CalibrationError("no signal: fewer than 0.5 % of the events are above half a p.e.")
    mu0 = -np.log(max(frac0, 0.01))
    width = min(s0 / 2, g0 / 10)
    lo, hi = q.min() - width, np.quantile(q, 0.9995)
    n_bins = int(np.ceil((hi - lo) / width))
    if n_bins > 5000:
        raise CalibrationError("the charge range is too wide for the noise: is this a dark run?")
    edges = lo + width * np.arange(n_bins + 1)
    counts = np.histogram(q, edges)[0].astype(float)
    n_in = counts.sum()

    def natural(v):
        return (np.exp(v[0]), 0.9 * special.expit(v[1]), ped0 + v[2] * g0, np.exp(v[3]) * g0,
                np.exp(v[4]) * g0, np.exp(v[5]) * g0)

    def deviance(v):
        p = natural(v)
        prob = spectrum_probabilities(edges, *p)
        tot = prob.sum()
        if not (tot > 0 and np.all(np.isfinite(prob))):
            return 1e30
        nu = n_in * np.maximum(prob / tot, 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(counts > 0, counts * np.log(counts / nu), 0.0)
        return 2.0 * np.sum(nu - counts + term)

    v0 = np.array([np.log(mu0), special.logit(0.1 / 0.9), 0.0, 0.0, np.log(s0 / g0),
                   np.log(0.08)])
    res = optimize.minimize(deviance, v0, method="Nelder-Mead",
                            options=dict(maxiter=3000, maxfev=3000, xatol=1e-4, fatol=1e-3,
                                         adaptive=True))
    res = optimize.minimize(deviance, res.x, method="BFGS", options=dict(gtol=1e-4))
    v = res.x
    hess = numerical_hessian(deviance, v, np.full(len(v), 2e-3))
    try:
        cov_v = 2 * np.linalg.inv(hess)
        ok = bool(np.all(np.diag(cov_v) > 0))
    except np.linalg.LinAlgError:
        cov_v, ok = np.full((len(v), len(v)), np.nan), False

    def derived(vv):
        mu, lam, ped, g, s0_, s1 = natural(vv)
        return np.array([mu, 1 - np.exp(-lam), lam, ped, g, s0_, s1,
                         enf_sq_from_crosstalk(lam, s1 / g)])

    names = ("mu", "crosstalk", "branching", "pedestal", "gain", "sigma0", "sigma1", "enf_sq")
    jac = np.empty((len(names), len(v)))
    for i in range(len(v)):
        dv = np.zeros(len(v))
        dv[i] = 1e-6
        jac[:, i] = (derived(v + dv) - derived(v - dv)) / 2e-6
    cov = jac @ cov_v @ jac.T
    vals = derived(v)
    out = {n: float(x) for n, x in zip(names, vals)}
    out.update({n + "_err": float(np.sqrt(c)) if c > 0 else np.nan
                for n, c in zip(names, np.diag(cov))})
    out.update(deviance=float(res.fun), ndf=int(np.count_nonzero(counts)) - len(v) - 1,
               success=ok and np.isfinite(out["crosstalk_err"]), n_events=int(q.size))
    return out


def fit_crosstalk_camera(spe_charges, dark_charges=None, pixel_ids=None, saturation=None) -> Table:
    """Per pixel: generalised-Poisson fit of the low-illumination run and, if a dark run is
    given, the dark-count estimates (using the fitted pedestal and gain).  Bad pixels are
    flagged (``fit_ok`` False with a ``reason``)."""
    q = np.asarray(getattr(spe_charges, "value", spe_charges), float)
    if q.ndim != 2:
        raise CalibrationError(f"expected charges (n_events, n_pixels), got shape {q.shape}")
    n_pix = q.shape[1]
    if dark_charges is not None:
        qd = np.asarray(getattr(dark_charges, "value", dark_charges), float)
        if qd.ndim != 2 or qd.shape[1] != n_pix:
            raise CalibrationError(f"dark-run charges {qd.shape} do not match {n_pix} pixels")
    names = ("mu", "crosstalk", "branching", "pedestal", "gain", "sigma0", "sigma1", "enf_sq")
    cols = {k: np.full(n_pix, np.nan) for k in names + tuple(n + "_err" for n in names)}
    dark_keys = ("dark_pe", "p_naive", "p_naive_err", "p_corrected", "p_corrected_err")
    dark = {k: np.full(n_pix, np.nan) for k in dark_keys}
    ok = np.zeros(n_pix, bool)
    reason = np.full(n_pix, "", dtype="U120")
    for i in range(n_pix):
        try:
            f = fit_crosstalk_spectrum(q[:, i], saturation=saturation)
            for k in cols:
                cols[k][i] = f[k]
            ok[i] = f["success"]
            if not ok[i]:
                reason[i] = "fit covariance not positive definite"
            if dark_charges is not None:
                d = crosstalk_from_dark_counts(qd[:, i], f["pedestal"], f["gain"], saturation)
                for k in dark_keys:
                    dark[k][i] = d[k]
        except CalibrationError as err:
            ok[i] = False
            reason[i] = str(err)[:120]
    t = Table()
    t["pixel_id"] = np.arange(n_pix) if pixel_ids is None else np.asarray(pixel_ids)
    for k in ("mu", "mu_err"):
        t[k] = cols[k]
    t["mu"].description = "mean number of primary p.e. per event"
    for k in ("crosstalk", "crosstalk_err", "branching", "branching_err"):
        t[k] = cols[k]
    t["crosstalk"].description = "probability that an avalanche triggers cross-talk, 1 - exp(-branching)"
    for k in ("pedestal", "pedestal_err", "gain", "gain_err", "sigma0", "sigma1"):
        t[k] = cols[k] * u.adc
    t["gain"].description = "ADC per fired cell"
    t["enf_sq"], t["enf_sq_err"] = cols["enf_sq"], cols["enf_sq_err"]
    t["dark_pe"] = dark["dark_pe"]
    t["crosstalk_dark_naive"], t["crosstalk_dark_naive_err"] = dark["p_naive"], dark["p_naive_err"]
    t["crosstalk_dark"], t["crosstalk_dark_err"] = dark["p_corrected"], dark["p_corrected_err"]
    t["crosstalk_dark"].description = "pile-up corrected dark-count estimate"
    t["fit_ok"] = ok
    t["reason"] = reason
    return t


# --------------------------------------------------------------------------- contract
_PER_PIXEL = ("pix_x", "pix_y", "baseline", "gain", "electronic_noise", "enf_sq", "time_offset",
              "nsb_rate", "dark_count_rate", "relative_qe", "crosstalk", "nonlinearity", "dead",
              "noisy")


def _camera_subset(camera, pixels):
    """The simulated camera restricted to ``pixels`` (keeps sample data small and fast)."""
    changes = {name: getattr(camera, name)[..., pixels] for name in _PER_PIXEL}
    return dataclasses.replace(camera, n_pixels=len(pixels), extra={}, **changes)


def write_sample(directory: Path, seed: int, n_pixels: int = 8) -> Path:
    """SiPM camera (simulator 'sipm', Borel cross-talk ≈ 0.15): a low-illumination run (μ = 1,
    20 000 events) and a dark run (60 000 events, ≈ 0.035 dark counts per window), no NSB."""
    from calib.camera.simulation import make_camera, simulate_charges

    full = make_camera("sipm", seed=seed)
    pix = np.flatnonzero(~full.dead & ~full.noisy)[:n_pixels]
    camera = _camera_subset(full, pix)
    spe = simulate_charges(camera, "spe", 20000, seed + 1, intensity=1.0, nsb=False)
    dark = simulate_charges(camera, "dark", 60000, seed + 2)
    path = Path(directory) / f"sipm_crosstalk_seed{seed}.h5"
    return write_arrays(path, {
        "spe_charge": spe.charge[:, 0], "dark_charge": dark.charge[:, 0], "pixel_id": pix,
        "true_crosstalk": camera.crosstalk, "true_gain": camera.gain[0].to_value(u.adc),
        "true_enf_sq": camera.enf_sq, "true_mu": camera.relative_qe * 1.0,
    }, {"camera": "sipm", "seed": seed, "saturation": camera.saturation_adc * spe.window,
        "content": "charges in adc (window sum, pedestal included); true_* = simulator truth"})


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Cross-talk per pixel from the sample's low-illumination and dark runs; ECSV output."""
    config = dict(config or {})
    d, attrs = read_arrays(input, ("spe_charge",))
    t = fit_crosstalk_camera(d["spe_charge"], d.get("dark_charge"), d.get("pixel_id"),
                             saturation=attrs.get("saturation"))
    t.meta.update(provenance(__name__, CONTRACT.version, [Path(input)], config))
    t.meta["branching_model"] = "Borel (each avalanche fires Poisson(branching) more)"
    if output is not None:
        write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    """Fitted and dark-count cross-talk, gain and F² against the simulator truth."""
    d, _ = read_arrays(input, ("true_crosstalk", "true_gain"))
    ok = np.asarray(result["fit_ok"], bool)
    truth = d["true_crosstalk"]

    def pulls(col):
        return (np.asarray(result[col]) - truth) / np.asarray(result[col + "_err"])

    p_fit, p_dark = pulls("crosstalk"), pulls("crosstalk_dark")
    p_gain = (np.asarray(result["gain"]) - d["true_gain"]) / np.asarray(result["gain_err"])
    p_enf = (np.asarray(result["enf_sq"]) - d["true_enf_sq"]) / np.asarray(result["enf_sq_err"])
    m = {
        "fraction_fit_ok": float(ok.mean()),
        # np.max, not nanmax: a NaN value or error of a "good" fit must fail the check
        "max_abs_pull_crosstalk_fit": float(np.max(np.abs(p_fit[ok]))) if ok.any() else np.nan,
        "max_abs_pull_crosstalk_dark": float(np.max(np.abs(p_dark[ok]))) if ok.any() else np.nan,
        "max_abs_pull_gain": float(np.max(np.abs(p_gain[ok]))) if ok.any() else np.nan,
        "max_abs_pull_enf_sq": float(np.max(np.abs(p_enf[ok]))) if ok.any() else np.nan,
        "mean_crosstalk_fit": float(np.nanmean(result["crosstalk"][ok])),
        "mean_crosstalk_dark_naive": float(np.nanmean(result["crosstalk_dark_naive"][ok])),
        "mean_crosstalk_true": float(np.mean(truth[ok])) if ok.any() else np.nan,
    }
    crit = {"fraction_fit_ok": "== 1",
            "max_abs_pull_crosstalk_fit": "< 4 (generalised-Poisson fit vs truth, each pixel)",
            "max_abs_pull_crosstalk_dark": "< 4 (pile-up corrected dark-count estimate)",
            "max_abs_pull_gain": "< 4", "max_abs_pull_enf_sq": "< 4"}
    n_ok = int(ok.sum())
    lo, hi = pull_rms_bounds(max(n_ok, 1))
    ens = {}
    for key, p in (("crosstalk_fit", p_fit), ("crosstalk_dark", p_dark), ("gain", p_gain),
                   ("enf_sq", p_enf)):
        m[f"rms_pull_{key}"] = float(np.sqrt(np.mean(p[ok] ** 2))) if ok.any() else np.nan
        if ok.any():
            ens[f"{key}_mean_z"] = float(np.mean(p[ok]) * np.sqrt(n_ok))
            ens[f"{key}_chi2_z"] = float((np.sum(p[ok] ** 2) - n_ok) / np.sqrt(2 * n_ok))
        crit[f"rms_pull_{key}"] = (f"within [{lo:.2f}, {hi:.2f}] (chi² of {n_ok} pulls, p = 1e-4 "
                                   "each side): errors neither under- nor over-estimated")
    passed = m["fraction_fit_ok"] == 1 and all(
        m[k] < 4 for k in crit if k.startswith("max_abs")) and all(
        lo < m[k] < hi for k in crit if k.startswith("rms_pull"))
    # designed false-fail rate: 4 quantities x n pixels x 6.3e-5 (|pull| < 4) + 4 x 2e-4
    # (chi-square bands); every fit converging is a requirement
    return Evidence(passed=bool(passed), metrics=m, criteria=crit, pulls=ens,
                    false_fail_rate=4 * len(truth) * 6.3e-5 + 4 * 2e-4,
                    summary=f"cross-talk {m['mean_crosstalk_fit']:.4f} (fit) vs "
                            f"{m['mean_crosstalk_true']:.4f} (truth) over {ok.sum()} pixels")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0109",),
    title="SiPM optical cross-talk from dark-count and single-p.e. spectra",
    inputs=(
        Port("spe_charge", "adc", "low-illumination charges (μ ≈ 1 p.e.), (n_events, n_pixels)"),
        Port("dark_charge", "adc", "dark-run charges, (n_events, n_pixels) (optional)"),
    ),
    outputs=(
        Port("crosstalk", "", "cross-talk probability per avalanche (fit), with crosstalk_err"),
        Port("crosstalk_dark", "", "pile-up corrected dark-count estimate, with error"),
        Port("crosstalk_dark_naive", "", "P(>=2 p.e.)/P(>=1 p.e.) of dark counts"),
        Port("gain", "adc", "ADC per fired cell, with gain_err"),
        Port("enf_sq", "", "F² of one primary p.e. (cross-talk and cell spread)"),
        Port("fit_ok", "", "fit succeeded; reason otherwise"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=(
        "Vinogradov 2012, NIM A 695, 247",
        "Consul & Jain 1973, Technometrics 15, 791",
        "Gallego et al. 2013, JINST 8, P05010",
    ),
    tests=("calib/camera/tests/test_crosstalk.py",),
    config={},
)
