"""Linearity of the camera response from a flasher intensity scan, and the high/low gain ratio.

Method (I-DATA-xST-0108).  A flasher intensity scan (filter-wheel settings of known relative
transmission t_k, several hundred events each) and a pedestal run give, per step, gain channel
and pixel, the mean signal S_k = <Q> − <Q_ped> and the signal variance V_k = Var(Q) − Var(Q_ped).

1. Scan model (photon statistics with compression), per pixel: the step intensity is μ_k = c·t_k
   p.e., the charge q_k has variance F²·μ_k + B²·μ_k² (F² known, I-DATA-xST-0107; B the relative
   flasher jitter) and each gain responds as y_h = tanh(√a_h q)/√a_h (compression scale
   s_h = 1/√a_h, continued analytically to a_h ≤ 0).  S_hk = g_h·E[y_h], V_hk = g_h²·Var[y_h]
   (Gauss-Hermite quadrature) are fitted to the measured mean signals and signal variances of
   both gains and every unsaturated step by generalised least squares with the full covariance:
   the two gains see the same photo-electrons, and the pedestal run is subtracted from every
   step.  Fitted: c, g_HG, g_LG, B², a_HG, a_LG; the HG/LG ratio is g_HG/g_LG.  The covariance
   is rescaled to the model variances in a second pass (weights from the sample variances bias
   B² low).  The earlier linear fit V = F²gS + B²S² over 5-195 p.e. ignored the 0.3 % HG
   compression at the top step and biased B² by −0.4 σ per pixel.
2. Camera means of the parameters with errors from the linearised estimator over events: the
   flasher jitter is common to all pixels, so σ/√n understates them (meta ``camera_mean_*``).
3. Linearity curve: measured p.e. (high gain below ``hg_max_pe``, low gain above) over the
   expected c·t_k per step, and the fitted model non-linearity E[y]/μ; the correction is the
   monotone (PCHIP) interpolation of the factor expected/measured in log(measured p.e.)
   (:func:`apply_linearity_correction`).  Points after the measured response stops increasing
   (saturation plateau) are excluded and the range of validity is reported (``max_valid_pe``).

References: cta-lstchain intensity-scan / photostatistics (B-term); nectarchain HG/LG ratio;
Fritsch & Carlson 1980, SIAM J. Numer. Anal. 17, 238 (monotone piecewise cubic interpolation).

F² of the photon-statistics fit is an upstream product (I-DATA-xST-0107): ``run()`` takes it
from ``config["enf_sq"]`` or the sample's ``/upstream`` group (``calib.camera.enf`` on a small
simulated single-p.e. run), never from the truth; the output meta names its source.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy.interpolate import PchipInterpolator

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "scan_moments",
    "photostatistics_fit",
    "hg_lg_ratio",
    "linearity_curve",
    "apply_linearity_correction",
    "CONTRACT",
]

MIN_EVENTS = 50


def _array(x, name):
    a = np.asarray(getattr(x, "value", x), float)
    if a.size == 0:
        raise CalibrationError(f"{name} is empty")
    return a


def scan_moments(charges, pedestal_charges, saturation=None):
    """Per step, gain and pixel: mean signal, signal variance and their sampling errors.

    charges: (n_steps, n_events, n_gains, n_pixels) ADC, pedestal included;
    pedestal_charges: (n_ped_events, n_gains, n_pixels).
    Returns dict of arrays (n_steps, n_gains, n_pixels): signal, signal_err, variance,
    variance_err, and ``saturated`` (bool: some charge at or above ``saturation``; its moments are NaN)
    and ``bad`` (non-finite charges).
    """
    q = _array(charges, "the intensity-scan charge array")
    qp = _array(pedestal_charges, "the pedestal charge array")
    if q.ndim != 4 or qp.ndim != 3 or q.shape[2:] != qp.shape[1:]:
        raise CalibrationError(f"expected scan charges (n_steps, n_events, n_gains, n_pixels) and "
                               f"pedestal charges (n_events, n_gains, n_pixels); got {q.shape} "
                               f"and {qp.shape}")
    n, n_ped = q.shape[1], qp.shape[0]
    if n < MIN_EVENTS or n_ped < MIN_EVENTS:
        raise CalibrationError(f"too few events ({n} per step, {n_ped} pedestal); need at least "
                               f"{MIN_EVENTS} for variances")
    if not np.all(np.isfinite(qp)):
        raise CalibrationError("the pedestal run contains NaN or infinite charges")
    bad = ~np.all(np.isfinite(q), axis=1)
    saturated = np.zeros_like(bad)
    if saturation is not None:
        saturated = np.any(q >= saturation, axis=1)

    def moments(x):
        m = np.nanmean(x, axis=-3)
        d = x - np.expand_dims(m, -3)
        v = np.nanmean(d**2, axis=-3) * x.shape[-3] / (x.shape[-3] - 1)
        m4 = np.nanmean(d**4, axis=-3)
        m3 = np.nanmean(d**3, axis=-3)
        k = x.shape[-3]
        return m, v, (m4 - v**2 * (k - 3) / (k - 1)) / k, m3

    m, v, var_v, _ = moments(q)
    mp, vp, var_vp, _ = moments(qp)
    out = {
        "signal": m - mp,
        "signal_err": np.sqrt(v / n + vp / n_ped),
        "variance": v - vp,
        "variance_err": np.sqrt(np.maximum(var_v, 0) + np.maximum(var_vp, 0)),
        "pedestal_variance": vp,
        "saturated": saturated,
        "bad": bad,
    }
    invalid = bad | saturated
    for key in ("signal", "signal_err", "variance", "variance_err"):
        out[key] = np.where(invalid, np.nan, out[key])
    return out


def photostatistics_fit(signal, variance, variance_err, enf_sq, signal_err=None):
    """Fit V = F²·g·S + B²·S² per pixel over the steps (first axis; NaN steps are skipped).

    Returns dict of arrays (remaining shape): gain, gain_err, b_term_sq, b_term_sq_err, n_steps,
    chi2.  The effective variance of each point adds (dV/dS · σ_S)².  Fewer than 3 valid steps
    give NaN.
    """
    s = np.asarray(signal, float)
    v = np.asarray(variance, float)
    ev = np.asarray(variance_err, float)
    enf_sq = np.asarray(enf_sq, float)
    ok = np.isfinite(s) & np.isfinite(v) & np.isfinite(ev) & (ev > 0) & (s > 0)
    s0, v0 = np.where(ok, s, 0.0), np.where(ok, v, 0.0)
    a_prev = None
    for _ in range(2):  # second pass: include the signal error through the first-pass slope
        var_eff = np.where(ok, ev, 1.0) ** 2
        if signal_err is not None and a_prev is not None:
            with np.errstate(invalid="ignore"):
                slope = np.nan_to_num(a_prev[0] + 2 * a_prev[1] * s0)
            var_eff = var_eff + (slope * np.nan_to_num(np.asarray(signal_err, float))) ** 2
        w = np.where(ok, 1.0 / var_eff, 0.0)
        x1, x2 = s0, s0**2
        a11, a12, a22 = (w * x1 * x1).sum(0), (w * x1 * x2).sum(0), (w * x2 * x2).sum(0)
        b1, b2 = (w * x1 * v0).sum(0), (w * x2 * v0).sum(0)
        det = a11 * a22 - a12**2
        with np.errstate(divide="ignore", invalid="ignore"):
            c1 = (a22 * b1 - a12 * b2) / det
            c2 = (a11 * b2 - a12 * b1) / det
        a_prev = (c1, c2)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_c1, var_c2 = a22 / det, a11 / det
        chi2 = (w * (v0 - c1 * x1 - c2 * x2) ** 2).sum(0)
    n_ok = ok.sum(0)
    good = n_ok >= 3
    gain = np.where(good, c1 / enf_sq, np.nan)
    return {
        "gain": gain,
        "gain_err": np.where(good, np.sqrt(var_c1) / enf_sq, np.nan),
        "b_term_sq": np.where(good, c2, np.nan),
        "b_term_sq_err": np.where(good, np.sqrt(var_c2), np.nan),
        "n_steps": n_ok,
        "chi2": np.where(good, chi2, np.nan),
    }


def hg_lg_ratio(signal_hg, signal_lg, gain_hg, pe_range=(10.0, 200.0), pedestal_err=None):
    """High/low gain ratio per pixel from pedestal-subtracted event charges.

    signal_hg, signal_lg: (n_events, n_pixels) ADC (events of all scan steps stacked);
    gain_hg: (n_pixels,) ADC per p.e. of the high gain.  Uses events with
    pe_range[0] <= signal_hg/gain_hg <= pe_range[1].  Returns (ratio, ratio_err, n_used);
    pixels with fewer than 20 such events get NaN.  ``pedestal_err`` = (σ of the HG pedestal
    mean, σ of the LG pedestal mean) per pixel adds the error of the subtracted pedestals, which
    is common to all events (it dominates with a few thousand pedestal events).
    """
    hg = _array(signal_hg, "the high-gain signal")
    lg = _array(signal_lg, "the low-gain signal")
    if hg.shape != lg.shape or hg.ndim != 2:
        raise CalibrationError(f"high- and low-gain signals must both be (n_events, n_pixels); "
                               f"got {hg.shape} and {lg.shape}")
    pe = hg / np.asarray(gain_hg, float)
    sel = (pe >= pe_range[0]) & (pe <= pe_range[1]) & np.isfinite(hg) & np.isfinite(lg)
    n = sel.sum(0)
    hs, ls = np.where(sel, hg, 0.0).sum(0), np.where(sel, lg, 0.0).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hs / ls
        resid = np.where(sel, hg - ratio * lg, 0.0)
        mean_lg = ls / n
        var_r = (resid**2).sum(0) / (n - 1) / n / mean_lg**2
        if pedestal_err is not None:
            e_h, e_l = (np.asarray(e, float) for e in pedestal_err)
            var_r = var_r + ratio**2 * ((e_h / (hs / n)) ** 2 + (e_l / mean_lg) ** 2)
    good = n >= 20
    return np.where(good, ratio, np.nan), np.where(good, np.sqrt(var_r), np.nan), n


def linearity_curve(measured_pe, transmission, reference_pe=(10.0, 200.0)):
    """Non-linearity per step and pixel from the measured p.e. of a scan of known relative intensity.

    measured_pe: (n_steps, n_pixels); transmission: (n_steps,) relative intensity (any scale).
    The expected p.e. are c·t with c from the steps whose measured p.e. lie in ``reference_pe``
    (least squares through the origin).  Returns dict: expected_pe, ratio (measured/expected),
    valid (monotone part of the response, no NaN), max_valid_pe (n_pixels,).
    """
    m = np.asarray(measured_pe, float)
    t = np.asarray(transmission, float)
    if m.ndim != 2 or t.shape != (m.shape[0],):
        raise CalibrationError(f"measured p.e. (n_steps, n_pixels) and transmission (n_steps,) "
                               f"expected; got {m.shape} and {t.shape}")
    if np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise CalibrationError("the relative transmissions must be finite and positive")
    order = np.argsort(t)
    m, t = m[order], t[order]
    ref = (m >= reference_pe[0]) & (m <= reference_pe[1]) & np.isfinite(m)
    tt = t[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(ref, m * tt, 0).sum(0) / np.where(ref, tt * tt, 0).sum(0)
    c = np.where(ref.sum(0) >= 1, c, np.nan)
    expected = c[None, :] * tt
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = m / expected
    # monotone part: stop at the first step whose response does not increase
    finite = np.isfinite(m)
    inc = np.ones_like(finite)
    inc[1:] = m[1:] > np.fmax.accumulate(np.where(finite, m, -np.inf), axis=0)[:-1]
    valid = np.logical_and.accumulate(finite & inc, axis=0) & np.isfinite(c)[None, :]
    max_valid = np.where(valid.any(0), np.nanmax(np.where(valid, m, np.nan), axis=0,
                                                 initial=-np.inf), np.nan)
    inv = np.argsort(order)
    return {"expected_pe": expected[inv], "ratio": ratio[inv], "valid": valid[inv],
            "max_valid_pe": max_valid, "scale": c}


def apply_linearity_correction(measured_pe, curve_measured, curve_expected, valid=None):
    """Corrected p.e. for one pixel from its scan curve.

    The correction factor expected/measured is interpolated monotonically (PCHIP) in
    log(measured p.e.) — a smooth, slowly varying function, which interpolates far better than
    expected-vs-measured itself near saturation.  Below the first scan point the first factor
    is used; above the last valid point the result is NaN (outside the calibrated range).
    """
    x = np.asarray(curve_measured, float)
    y = np.asarray(curve_expected, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if valid is not None:
        keep &= np.asarray(valid, bool)
    x, y = x[keep], y[keep]
    if x.size < 2:
        raise CalibrationError("fewer than two valid scan points: no linearity correction")
    order = np.argsort(x)
    x, y = x[order], y[order]
    q = np.asarray(measured_pe, float)
    lq = np.log(np.clip(q, x[0], None))
    factor = PchipInterpolator(np.log(x), y / x, extrapolate=False)(lq)
    return np.where(q > x[-1], np.nan, q * factor)


# --------------------------------------------------------------------------- compression model
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(32)
_GH_W = _GH_W / _GH_W.sum()
#: parameters of the scan model, in order (c: p.e. per unit transmission; a = 1/s², 1/p.e.²)
SCAN_PARAMS = ("c", "gain_hg", "gain_lg", "b_term_sq", "compression_hg", "compression_lg")


def compressed_response(q, a):
    """The response model y = tanh(√a q)/√a (compression scale s = 1/√a), continued analytically
    to a ≤ 0 (a = 0: linear; a < 0: tan, an expanding response) so that a fit of a is unbounded
    and unbiased around 0.  y = q − a q³/3 + 2 a² q⁵/15 − ..."""
    q = np.asarray(q, float)
    a = np.asarray(a, float)
    r = np.sqrt(np.abs(a))
    rq = r * q
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pos = np.tanh(rq) / np.where(r > 0, r, 1.0)
        neg = np.tan(np.clip(rq, -1.5, 1.5)) / np.where(r > 0, r, 1.0)
    return np.where(a > 0, pos, np.where(a < 0, neg, q))


def response_moments_gaussian(mean, var, a):
    """Mean and variance of ``compressed_response(q, a)`` for q ~ Normal(mean, var), by 32-node
    Gauss-Hermite quadrature (arrays broadcast)."""
    mean, var, a = np.broadcast_arrays(*(np.asarray(x, float) for x in (mean, var, a)))
    q = mean[..., None] + np.sqrt(np.maximum(var, 0.0))[..., None] * _GH_X
    y = compressed_response(q, a[..., None])
    m = np.sum(_GH_W * y, axis=-1)
    return m, np.sum(_GH_W * (y - m[..., None]) ** 2, axis=-1)


def scan_covariance(charges, pedestal_charges):
    """Per step and pixel, the covariance (n_steps, n_pixels, 4, 4) of (S_HG, S_LG, V_HG, V_LG):
    mean signals and signal variances of the two gains of the same events are correlated (the
    same photo-electrons).  Large-N sample-moment formulas: Cov(S_i, S_j) = c_ij/N,
    Cov(S_i, V_j) = E[d_i d_j²]/N, Cov(V_i, V_j) = (E[d_i² d_j²] − c_ii c_jj)/N, plus the same
    terms of the pedestal run.  Returns (per step (n_steps, n_pixels, 4, 4), pedestal
    (n_pixels, 4, 4)): the pedestal is subtracted from every step, so its term is common to all
    pairs of steps."""
    def block(x):  # x (n_steps, n_events, 2, n_pixels) -> (n_steps, n_pixels, 4, 4)
        n = x.shape[1]
        d = x - np.nanmean(x, axis=1, keepdims=True)
        d = np.moveaxis(d, 2, -1)  # (n_steps, n_events, n_pixels, 2)
        c2 = np.einsum("senj,senk->snjk", d, d) / n
        c3 = np.einsum("senj,senk->snjk", d, d**2) / n
        c4 = np.einsum("senj,senk->snjk", d**2, d**2) / n
        diag = np.einsum("snjj->snj", c2)
        out = np.empty(c2.shape[:2] + (4, 4))
        out[..., :2, :2] = c2
        out[..., :2, 2:] = c3
        out[..., 2:, :2] = np.swapaxes(c3, -1, -2)
        out[..., 2:, 2:] = c4 - diag[..., :, None] * diag[..., None, :]
        return out / n
    q = np.asarray(charges, float)
    qp = np.asarray(pedestal_charges, float)[None]
    return block(q), block(qp)[0]


def _whitening(cov, ped_cov, use):
    """Inverse Cholesky factor (n_used, n_used) of the covariance of the used data: per-step
    blocks plus the pedestal term, common to every pair of steps."""
    n_steps = cov.shape[0]
    full = np.kron(np.ones((n_steps, n_steps)), ped_cov)
    for k in range(n_steps):
        full[4 * k:4 * k + 4, 4 * k:4 * k + 4] += cov[k]
    j = np.flatnonzero(use.ravel())
    return np.linalg.inv(np.linalg.cholesky(full[np.ix_(j, j)]))


def fit_scan_model(signal, variance, cov, ped_cov, valid, transmission, enf_sq, start):
    """Fit the photon-statistics + compression model of one pixel to its scan.

    Model, per step k and gain h (h = HG, LG): q_k ~ (mean μ_k = c t_k, variance F² μ_k + B² μ_k²)
    p.e.; y_h = compressed_response(q_k, a_h); S_hk = g_h E[y_h], V_hk = g_h² Var[y_h].
    signal, variance: (n_steps, 2); cov: (n_steps, 4, 4) sample covariance of (S_HG, S_LG, V_HG,
    V_LG), ped_cov (4, 4) that of the pedestal run; valid: (n_steps, 2) channels used (unsaturated).  Generalised least squares (each
    step's residuals whitened by its covariance; scipy.optimize.least_squares), twice: the second
    fit rescales the covariance to the first fit's model variances (σ_S ∝ √V, σ_V ∝ V), because
    weights from the sample variances themselves favour the steps whose variance fluctuated low
    and bias B² low (≈ −0.4 σ per pixel).  Returns (params, covariance, chi², ndf, influence) or
    None when the fit fails; ``influence`` (n_params, n_steps, 4) maps a data shift to a
    parameter shift (the linearised estimator, for the error of camera means).
    """
    from scipy.optimize import least_squares

    t = np.asarray(transmission, float)
    idx = np.concatenate([valid, valid], axis=1)  # (n_steps, 4): S_H, S_L, V_H, V_L
    data = np.concatenate([signal, variance], axis=1)
    use = idx & np.isfinite(data)
    n_data = int(use.sum())
    if n_data <= len(SCAN_PARAMS):
        return None
    data0 = np.where(use, data, 0.0)

    def model(p):
        c, gh, gl, b2, ah, al = p
        mu = c * t
        var = enf_sq * mu + b2 * mu**2
        m, v = response_moments_gaussian(mu[:, None], var[:, None], np.array([ah, al]))
        g = np.array([gh, gl])
        return np.concatenate([g * m, g**2 * v], axis=1)

    scale = np.abs(np.asarray(start, float))
    scale = np.where(scale > 0, scale, 1.0)
    scale[3] = max(abs(start[3]), 1e-3)
    scale[4:] = 1e-7
    p = np.asarray(start, float)
    for stage in range(2):
        c_k, c_p = cov, ped_cov
        if stage == 1:  # covariance scaled to the model variances of the first fit
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(use[:, 2:], model(p)[:, 2:] / data0[:, 2:], 1.0)
            ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
            f = np.concatenate([np.sqrt(ratio), ratio], axis=1)
            c_k = cov * f[:, :, None] * f[:, None, :]
        try:
            whiten = _whitening(c_k, c_p, use)
        except np.linalg.LinAlgError:
            return None

        def resid(pp):
            return whiten @ (model(pp) - data0)[use]

        try:
            res = least_squares(resid, p, x_scale=scale, method="trf", xtol=1e-10, ftol=1e-10)
        except (ValueError, np.linalg.LinAlgError):
            return None
        if not res.success or not np.all(np.isfinite(res.x)):
            return None
        p = res.x
    jac = res.jac
    try:
        pcov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.diag(pcov) > 0):
        return None
    # d(params) = pcov J^T W d(data), per step block
    influence = np.zeros((len(p), len(t) * 4))
    influence[:, use.ravel()] = pcov @ jac.T @ whiten
    influence = influence.reshape(len(p), len(t), 4)
    return p, pcov, float(2 * res.cost), n_data - len(SCAN_PARAMS), influence


# --------------------------------------------------------------------------- camera analysis
def analyse_intensity_scan(charges, pedestal_charges, transmission, enf_sq, *, saturation=None,
                           gain_hg=None, ratio_pe_range=(10.0, 200.0), hg_max_pe=200.0,
                           pixel_ids=None) -> Table:
    """Full intensity-scan analysis of a two-gain camera (see the module docstring).

    charges (n_steps, n_events, 2, n_pixels) ADC; pedestal_charges (n_ped, 2, n_pixels);
    transmission (n_steps,); enf_sq scalar or (n_pixels,).  ``gain_hg`` (n_pixels,) overrides
    the high-gain gain used to start the fit.
    """
    q = _array(charges, "the intensity-scan charge array")
    if q.ndim != 4 or q.shape[2] != 2:
        raise CalibrationError(f"expected two-gain scan charges (n_steps, n_events, 2, n_pixels), "
                               f"got {q.shape}")
    t = np.asarray(transmission, float)
    if t.shape != (q.shape[0],) or np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise CalibrationError("the relative transmissions must be finite and positive, one per "
                               "scan step")
    mom = scan_moments(q, pedestal_charges, saturation)
    n_steps, n_pix = q.shape[0], q.shape[3]
    enf = np.broadcast_to(np.asarray(enf_sq, float), (n_pix,))

    # starting values: linear photon statistics on the high gain, HG/LG ratio in its linear range
    ps_hg = photostatistics_fit(mom["signal"][:, 0], mom["variance"][:, 0],
                                mom["variance_err"][:, 0], enf, mom["signal_err"][:, 0])
    g0 = ps_hg["gain"] if gain_hg is None else np.asarray(gain_hg, float)
    qp = _array(pedestal_charges, "pedestal")
    ped = qp.mean(axis=0)
    sig = q - ped[None, None]
    if saturation is not None:
        sig = np.where(q >= saturation, np.nan, sig)
    flat = sig.reshape(-1, 2, n_pix)
    ratio0, _, n_ratio = hg_lg_ratio(flat[:, 0], flat[:, 1], g0, ratio_pe_range)

    # the model fit: photon statistics + compression of both gains, per pixel
    valid = ~(mom["saturated"] | mom["bad"])  # (n_steps, 2, n_pixels)
    cov, ped_cov = scan_covariance(np.where(np.isfinite(q), q, 0.0), qp)  # (n_steps, n_pixels, 4, 4)
    par = np.full((n_pix, len(SCAN_PARAMS)), np.nan)
    err = np.full_like(par, np.nan)
    ratio, ratio_err = np.full(n_pix, np.nan), np.full(n_pix, np.nan)
    chi2, ndf = np.full(n_pix, np.nan), np.zeros(n_pix, int)
    infl = np.zeros((n_pix, len(SCAN_PARAMS) + 1, n_steps, 4))  # + the HG/LG ratio
    for i in range(n_pix):
        s_h = mom["signal"][:, 0, i]
        lin = valid[:, 0, i] & (s_h / g0[i] >= ratio_pe_range[0]) & (s_h / g0[i] <= ratio_pe_range[1])
        if not (np.isfinite(g0[i]) and np.isfinite(ratio0[i]) and lin.any()):
            continue
        c0 = float(np.median(s_h[lin] / (g0[i] * t[lin])))
        b0 = ps_hg["b_term_sq"][i] if np.isfinite(ps_hg["b_term_sq"][i]) else 0.0
        start = np.array([c0, g0[i], g0[i] / ratio0[i], b0, 0.0, 0.0])
        out = fit_scan_model(mom["signal"][:, :, i], mom["variance"][:, :, i], cov[:, i],
                             ped_cov[i], valid[:, :, i], t, enf[i], start)
        if out is None:
            continue
        p, pcov, chi2[i], ndf[i], a_i = out
        par[i], err[i] = p, np.sqrt(np.diag(pcov))
        ratio[i] = p[1] / p[2]
        grad = np.array([0.0, 1 / p[2], -p[1] / p[2] ** 2, 0, 0, 0])
        ratio_err[i] = np.sqrt(grad @ pcov @ grad)
        infl[i, :-1] = a_i
        infl[i, -1] = np.einsum("a,akj->kj", grad, a_i)
    camera_mean = _camera_means(q, qp, np.column_stack([par, ratio]), infl)
    c, g_hg, g_lg = par[:, 0], par[:, 1], par[:, 2]

    # linearity curve: HG p.e. where unsaturated and below hg_max_pe, LG above
    hg_pe = mom["signal"][:, 0] / g_hg
    use_hg = np.isfinite(hg_pe) & (hg_pe <= hg_max_pe)
    lg_pe = mom["signal"][:, 1] / g_lg
    measured = np.where(use_hg, hg_pe, lg_pe)
    measured_err = np.where(use_hg, mom["signal_err"][:, 0] / g_hg, mom["signal_err"][:, 1] / g_lg)
    curve = linearity_curve(measured, t, reference_pe=ratio_pe_range)
    expected = c[None, :] * t[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = expected
        m_used = response_moments_gaussian(mu, enf * mu + par[:, 3] * mu**2,
                                           np.where(use_hg, par[:, 4], par[:, 5]))[0]
        model_lin = m_used / mu
        linearity = measured / expected

    out = Table()
    out["pixel_id"] = np.arange(n_pix) if pixel_ids is None else np.asarray(pixel_ids)
    out["gain_hg"] = g_hg * u.adc
    out["gain_hg_err"] = err[:, 1] * u.adc
    out["gain_hg"].description = "ADC per p.e., high gain (photon statistics + compression fit)"
    out["gain_lg"] = g_lg * u.adc
    out["gain_lg_err"] = err[:, 2] * u.adc
    out["b_term_sq"] = par[:, 3]
    out["b_term_sq_err"] = err[:, 3]
    out["b_term_sq"].description = "B² (relative flasher jitter squared)"
    out["compression_hg"] = par[:, 4] / u.pe**2
    out["compression_hg_err"] = err[:, 4] / u.pe**2
    out["compression_hg"].description = "a = 1/s² of the HG response y = tanh(√a q)/√a"
    out["compression_lg"] = par[:, 5] / u.pe**2
    out["compression_lg_err"] = err[:, 5] / u.pe**2
    out["intensity_scale"] = c * u.pe
    out["intensity_scale_err"] = err[:, 0] * u.pe
    out["intensity_scale"].description = "p.e. at transmission 1 (μ_k = c t_k)"
    out["photostat_chi2"] = chi2
    out["photostat_ndf"] = ndf
    out["hg_lg_ratio"] = ratio
    out["hg_lg_ratio_err"] = ratio_err
    out["hg_lg_ratio"].description = "gain_hg / gain_lg of the scan-model fit"
    out["hg_lg_ratio_n_events"] = n_ratio
    out["max_valid_pe"] = curve["max_valid_pe"] * u.pe
    out["transmission"] = np.broadcast_to(t, (n_pix, n_steps))
    out["expected_pe"] = expected.T * u.pe
    out["measured_pe"] = measured.T * u.pe
    out["measured_pe_err"] = measured_err.T * u.pe
    out["linearity"] = linearity.T
    out["linearity"].description = "measured / expected p.e. per scan step"
    out["model_linearity"] = model_lin.T
    out["model_linearity"].description = "E[y]/μ of the fitted compression, channel used per step"
    out["curve_valid"] = curve["valid"].T
    out["hg_used"] = use_hg.T
    out["saturated_hg"] = mom["saturated"][:, 0].T
    flag = np.zeros(n_pix, dtype="U100")
    flag[~np.isfinite(ps_hg["gain"])] = "photon-statistics fit impossible (fewer than 3 steps)"
    flag[~np.isfinite(ratio0)] = "no events with a high-gain signal in the ratio range"
    flag[~np.isfinite(g_hg) & (flag == "")] = "the scan-model fit failed"
    flag[~np.isfinite(curve["max_valid_pe"])] = "no valid linearity curve"
    out["flag"] = flag
    for name, (value, error) in camera_mean.items():
        out.meta[f"camera_mean_{name}"] = value
        out.meta[f"camera_mean_{name}_err"] = error
    return out


def _camera_means(charges, pedestal_charges, values, influence):
    """Camera means of the fitted parameters (pixels with a fit) and their errors, including the
    correlation between pixels (a flasher's event-to-event jitter is common to all pixels: the
    mean of 16 pixels' B² or compression is ≈ 2 x less precise than σ/√n says).

    Linearised estimator (influence functions): a parameter's shift is Σ influence · (shift of S
    and V); S and V are event means of d = x − x̄ and d² − V, so the camera mean's error is the
    spread over events of (1/n) Σ_pixels influence · (d, d²), per scan step and for the pedestal
    run (its events enter every step with the opposite sign)."""
    ok = np.all(np.isfinite(values), axis=1)
    names = SCAN_PARAMS + ("hg_lg_ratio",)
    if not ok.any():
        return {n: (np.nan, np.nan) for n in names}
    a = influence[ok]  # (n_ok, n_par, n_steps, 4)
    n_ok = int(ok.sum())

    def psi(x):  # (..., n_events, 2, n_pixels) -> (..., n_events, n_ok, 4)
        d = x[..., ok] - x[..., ok].mean(axis=-3, keepdims=True)
        d2 = d**2 - (d**2).mean(axis=-3, keepdims=True)
        return np.moveaxis(np.concatenate([d, d2], axis=-2), -2, -1)

    q = np.asarray(charges, float)
    var = np.zeros(len(names))
    for k in range(q.shape[0]):
        phi = np.einsum("ipj,eij->ep", a[:, :, k], psi(q[k])) / n_ok
        var += phi.var(axis=0, ddof=1) / phi.shape[0]
    phi = -np.einsum("ipkj,eij->ep", a, psi(np.asarray(pedestal_charges, float))) / n_ok
    var += phi.var(axis=0, ddof=1) / phi.shape[0]
    mean = values[ok].mean(axis=0)
    return {n: (float(m), float(np.sqrt(v))) for n, m, v in zip(names, mean, var)}


def write_sample(directory: Path, seed: int, n_pixels: int = 16, n_per_step: int = 1000) -> Path:
    """Intensity scan of the simulated 'tiny' camera: 8 flasher levels 5–3000 p.e. (filter
    transmissions = level / max), 1000 events each, flasher jitter B = 0.03, plus a pedestal run;
    the first ``n_pixels`` good pixels, both gains; truth (gains, compression scales, F²) beside."""
    from calib.camera.simulation import make_camera, simulate_charges

    camera = make_camera("tiny", seed=seed)
    levels = np.geomspace(5.0, 3000.0, 8)
    scan = simulate_charges(camera, "intensity_scan", n_per_step * len(levels), seed + 1,
                            intensity=levels, intensity_jitter=0.03, nsb=False)
    ped = simulate_charges(camera, "pedestal", 2000, seed + 2, nsb=False)
    pix = np.flatnonzero(~camera.dead & ~camera.noisy)[:n_pixels]
    q = scan.charge[:, :, pix].reshape(len(levels), n_per_step, 2, len(pix))
    true_q = scan.true_charge[:, pix].reshape(len(levels), n_per_step, len(pix)).astype(float)
    from calib.camera.io import write_arrays

    path = Path(directory) / f"intensity_scan_seed{seed}.h5"
    write_arrays(path, {
        "charge": q, "pedestal_charge": ped.charge[:, :, pix], "transmission": levels / levels.max(),
        "pixel_id": pix, "true_gain": camera.gain[:, pix].to_value(u.adc),
        "true_nonlinearity": camera.nonlinearity[:, pix], "true_enf_sq": camera.enf_sq[pix],
        "true_level_pe": levels, "true_relative_qe": camera.relative_qe[pix],
        "true_mean_charge_pe": true_q.mean(axis=1),
    }, {"camera": camera.name, "seed": seed, "saturation": camera.saturation_adc * scan.window,
        "intensity_jitter": 0.03, "content": "charges (n_steps, n_events, n_gains, n_pixels) adc"})
    # upstream: F² of the camera by calib.camera.enf (I-DATA-xST-0107) on a small SPE run
    from calib.camera.io import write_upstream
    from calib.camera.upstream import enf_sq_product

    f2, f2_err, source = enf_sq_product(camera, seed + 12)
    write_upstream(path, {"enf_sq": f2, "enf_sq_err": f2_err}, {"enf_sq": source, "enf_sq_err": source})
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Intensity-scan analysis of ``input``; ECSV output with provenance.  F² (I-DATA-xST-0107)
    from ``config["enf_sq"]`` or the sample's /upstream group; never from the truth."""
    import json

    from calib.camera.io import read_arrays, read_upstream, upstream_input

    config = dict(config or {})
    d, attrs = read_arrays(input, ("charge", "pedestal_charge", "transmission"))
    enf_sq, enf_source = upstream_input("enf_sq", config, read_upstream(input), input,
                                        "calib.camera.enf")
    kw = {k: config[k] for k in ("hg_max_pe",) if k in config}
    if "ratio_pe_range" in config:
        kw["ratio_pe_range"] = tuple(config["ratio_pe_range"])
    t = analyse_intensity_scan(d["charge"], d["pedestal_charge"], d["transmission"], enf_sq,
                               saturation=attrs.get("saturation"), pixel_ids=d.get("pixel_id"), **kw)
    t.meta.update(provenance(__name__, CONTRACT.version, [Path(input)], config))
    t.meta["enf_sq"] = float(np.mean(enf_sq))
    t.meta["upstream_inputs"] = json.dumps({"enf_sq": enf_source})
    if output is not None:
        write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    """Scan-model parameters and the non-linearity against the simulator truth.

    Per quantity (HG gain, B², HG/LG ratio, HG and LG compression a = 1/s²): the camera mean
    is within 4 of its errors of the truth (tail 6.3e-5; errors include the pixel correlation
    through the flasher jitter), no pixel pull |fit − truth|/σ ≥ 5 (16 x 5.7e-7, a union bound);
    the summed fit chi² is in the central 1 − 2e-4 of its distribution (the model describes the
    scan and the data errors are right, from which the parameter errors follow); the upstream F²
    within 4 sigma.  Designed false-fail rate: 5 x 7.2e-5 + 2e-4 + 6.3e-5 = 6.3e-4.
    """
    from scipy.stats import chi2 as chi2_dist

    from calib.camera.chain import upstream_enf_criterion
    from calib.camera.io import read_arrays
    from calib.camera.simulation import compressed_moments

    d, attrs = read_arrays(input, ("true_gain", "true_nonlinearity", "true_enf_sq",
                                   "true_level_pe", "true_relative_qe"))
    g_true = d["true_gain"]
    # F² is an upstream input (checked below against the truth within its own error); the fit's
    # p.e. scale is F²_used/F²_true times the true one: gains / r, intensities and s x r
    f2_used, f2_true = float(result.meta["enf_sq"]), float(np.mean(d["true_enf_sq"]))
    r = f2_used / f2_true
    s_true = d["true_nonlinearity"]  # (2, n_pixels) p.e.
    b_true = attrs.get("intensity_jitter", 0.0) ** 2
    truth = {
        "gain_hg": g_true[0] / r,
        "b_term_sq": np.full(g_true.shape[1], b_true),
        "hg_lg_ratio": g_true[0] / g_true[1],
        "compression_hg": 1 / (r * s_true[0]) ** 2,
        "compression_lg": 1 / (r * s_true[1]) ** 2,
    }
    metrics, criteria, pulls = {}, {}, {}
    passed = upstream_enf_criterion(f2_used, Path(input), f2_true, metrics, criteria)
    pulls["upstream_enf_sq"] = metrics["upstream_enf_sq_pull"]
    false_fail = 6.3e-5
    for name, want in truth.items():
        z = (np.asarray(getattr(result[name], "value", result[name]), float) - want) / \
            np.asarray(getattr(result[name + "_err"], "value", result[name + "_err"]), float)
        n = z.size
        # camera mean over its error with the pixel correlations (a common flasher jitter)
        mean = float((float(result.meta[f"camera_mean_{name}"]) - np.mean(want))
                     / float(result.meta[f"camera_mean_{name}_err"]))
        rms = float(np.sqrt(np.mean(z**2)))
        zmax = float(np.max(np.abs(z)))  # np.max, not nanmax: a NaN must fail the check
        metrics.update({f"pull_camera_mean_{name}": mean, f"rms_pull_{name}": rms,
                        f"max_abs_pull_{name}": zmax})
        criteria[f"pull_camera_mean_{name}"] = ("|.| < 4 (camera mean − truth over its error, "
                                                "pixel correlations included)")
        # information only: the pixels share the flasher's jitter, so their pulls are correlated
        # and their rms does not follow a chi² of n; the errors are tested by the fit chi²
        criteria[f"max_abs_pull_{name}"] = "< 5"
        pulls[name] = mean
        passed &= bool(abs(mean) < 4 and zmax < 5)
        false_fail += 6.3e-5 + n * 5.7e-7
    chi2 = np.asarray(result["photostat_chi2"], float)
    ndf = int(np.sum(result["photostat_ndf"]))
    c_lo, c_hi = chi2_dist.ppf(1e-4, max(ndf, 1)), chi2_dist.isf(1e-4, max(ndf, 1))
    metrics["fit_chi2"], metrics["fit_ndf"] = float(np.sum(chi2)), ndf
    criteria["fit_chi2"] = f"within [{c_lo:.0f}, {c_hi:.0f}] (chi² of {ndf} dof, p = 1e-4 each side)"
    passed &= bool(c_lo < metrics["fit_chi2"] < c_hi)
    false_fail += 2e-4
    # the non-linearity curve (information): measured and fitted vs true E[s tanh(q/s)]/E[q]
    mu = np.outer(d["true_level_pe"], d["true_relative_qe"])  # (n_steps, n_pixels)
    used_hg = np.asarray(result["hg_used"]).T
    s = np.where(used_hg, s_true[0][None], s_true[1][None])
    lin_true = compressed_moments(mu, f2_true * mu + b_true * mu**2, s)[0] / mu
    valid = np.asarray(result["curve_valid"]).T
    lin = np.asarray(result["linearity"]).T
    model = np.asarray(result["model_linearity"]).T
    metrics["max_true_compression"] = float(np.max(1 - lin_true[valid])) if valid.any() else np.nan
    metrics["max_abs_dev_linearity"] = float(np.max(np.abs(lin - lin_true)[valid])) \
        if valid.any() else np.nan
    metrics["max_abs_dev_model_linearity"] = float(np.max(np.abs(model - lin_true)[valid])) \
        if valid.any() else np.nan
    metrics["n_valid_curve_points"] = int(valid.sum())
    criteria["max_abs_dev_model_linearity"] = "< 1 % (requirement; the fitted compression)"
    passed &= bool(metrics["max_abs_dev_model_linearity"] < 0.01)
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=false_fail,
                    summary=f"HG gain, B², HG/LG ratio and compression pulls within their errors "
                            f"(camera means {', '.join(f'{v:+.1f}' for v in pulls.values())}); "
                            f"fitted non-linearity within "
                            f"{100 * metrics['max_abs_dev_model_linearity']:.2f} % of the truth "
                            f"(true compression up to {100 * metrics['max_true_compression']:.1f} %)")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0108",),
    title="Camera linearity from an intensity scan, high/low gain ratio, photon statistics",
    inputs=(
        Port("charge", "adc", "intensity-scan charges (n_steps, n_events, n_gains, n_pixels)"),
        Port("pedestal_charge", "adc", "pedestal-run charges (n_events, n_gains, n_pixels)"),
        Port("transmission", "", "relative flasher intensity (filter transmission) per step"),
    ),
    outputs=(
        Port("gain_hg", "adc", "ADC per p.e. from V = F² g S + B² S² (high gain), with error"),
        Port("b_term_sq", "", "B² of the flasher intensity jitter, with error"),
        Port("hg_lg_ratio", "", "high/low gain ratio in the linear range, with error"),
        Port("expected_pe", "pe", "expected p.e. per scan step (n_pixels, n_steps)"),
        Port("measured_pe", "pe", "measured p.e. per scan step: the correction curve"),
        Port("linearity", "", "measured/expected per step"),
        Port("max_valid_pe", "pe", "upper end of the valid (monotone, unsaturated) range"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=(
        "cta-lstchain intensity-scan / photostatistics analysis",
        "nectarchain high/low gain ratio",
        "Fritsch & Carlson 1980, SIAM J. Numer. Anal. 17, 238 (PCHIP)",
    ),
    tests=("calib/camera/tests/test_linearity.py",),
    config={
        "enf_sq": "F², scalar or per pixel (I-DATA-xST-0107; default: the sample's /upstream group)",
        "hg_max_pe": "highest signal of the high-gain fit, p.e.",
        "ratio_pe_range": "[low, high] signal range of the high/low gain ratio, p.e.",
    },
)
