"""Coma aberration of single-mirror optics: centroid shift and asymmetric broadening vs off-axis angle.

Method.  For a paraboloid (LST) or Davies–Cotton (MST) reflector, third-order coma grows
linearly with the off-axis angle theta: a ray through normalised pupil radius rho and azimuth
phi lands at a rho^2 (2 + cos 2phi, sin 2phi) from the chief ray (radial, tangential), with
sagittal coma a = theta D^2 / (16 f).  Averaged over a uniformly filled pupil this gives

* a radial centroid shift  <dr> = a = kappa1 theta  (outwards),
* asymmetric broadening: radial variance sigma0^2 + a^2/2, tangential sigma0^2 + a^2/6
  (ratio 3 of the coma terms), and a positive radial third moment a^3/4 (the comet tail).

From CCD images of stars at known off-axis angles (star catalogue + pointing: the chief-ray
position is f tan theta along the star's direction), the background-subtracted image moments
are computed (vectorised over images) and fitted by weighted linear least squares:
dr = kappa1 theta + kappa3 theta^3, m_rr = s_r + beta_r theta^2, m_tt = s_t + beta_t theta^2,
m_rrr = gamma theta^3 + gamma5 theta^5 (weights from photon statistics, covariances scaled by the residual
chi^2).  ``correct_coma`` removes the fitted radial shift from measured centroids (fixed-point
inversion), returning the chief-ray positions used for pointing (star-guider, camera-lid
images) and for the sky mapping of image centroids.

Sources: D. J. Schroeder, Astronomical Optics, 2nd ed., Academic Press (2000), ch. 5–6
(third-order coma of a paraboloid); J. M. Davies & E. S. Cotton, Solar Energy 1 (1957) 16;
ctapipe ``ComaModel`` (asymmetric PSF whose widths grow with off-axis angle);
CTA-LST Collaboration, ApJ 956 (2023) 80 (LST-1 optics).
"""
from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table
from calib.pointing._io import linear_least_squares, norm_sf, read_table, require_finite, truth_of
from calib.pointing.star_images import FLAG_NAMES, image_moments, screen_images, subtract_background

__all__ = ["measure_star_images", "fit_coma", "correct_coma", "expected_coma", "CONTRACT"]

VERSION = "0.2.0"
MIN_IMAGES = 6


def measure_star_images(images, theta, psi, pixel, focal_length, corner_x, corner_y, saturation: float) -> Table:
    """Per-image centroid shift and moments in the radial/tangential frame.

    ``theta`` off-axis angle (deg), ``psi`` position angle of the star on the focal plane (deg),
    ``corner_x/y`` focal-plane position of each stamp's lower-left corner (mm).  Flagged images
    (NaN, saturation, no star) keep NaN moments and a non-zero ``flag``.
    """
    images = np.asarray(images, dtype=np.float64)
    theta = np.asarray(u.Quantity(theta, u.deg).value, float)
    psi = np.asarray(u.Quantity(psi, u.deg).to_value(u.rad), float)
    f = float(u.Quantity(focal_length, u.mm).value)
    px = float(u.Quantity(pixel, u.mm).value)
    cx, cy = (np.asarray(u.Quantity(c, u.mm).value, float) for c in (corner_x, corner_y))
    if images.ndim != 3 or not (theta.shape == psi.shape == cx.shape == cy.shape == images.shape[:1]):
        raise CalibrationError("images must be (n, ny, nx) with one theta, psi and stamp corner per image")
    require_finite("star positions (catalogue theta/psi or stamp corners)", theta, psi, cx, cy)
    flags = screen_images(images, saturation)
    good = flags == 0
    n = len(flags)
    table = Table()
    table["theta"] = theta * u.deg
    table["psi"] = np.degrees(psi) * u.deg
    cols = {k: np.full(n, np.nan) for k in ("dr", "dt", "m_rr", "m_tt", "m_rrr", "flux", "x", "y",
                                            "dr_err", "m_rr_err", "m_tt_err", "m_rrr_err")}
    if good.any():
        sub, _ = subtract_background(images[good])
        m = image_moments(sub, px, cx[good], cy[good], radial_angle=psi[good])
        r_chief = f * np.tan(np.radians(theta[good]))
        ex, ey = m["x"] - r_chief * np.cos(psi[good]), m["y"] - r_chief * np.sin(psi[good])
        c, s = np.cos(psi[good]), np.sin(psi[good])
        cols["dr"][good] = c * ex + s * ey
        cols["dt"][good] = -s * ex + c * ey
        for k in ("m_rr", "m_tt", "m_rrr", "flux", "x", "y"):
            cols[k][good] = m[k]
        for k, v in _moment_errors(images[good], m, px, cx[good], cy[good], c, s).items():
            cols[k][good] = v
    for k, unit in (("x", u.mm), ("y", u.mm), ("dr", u.mm), ("dt", u.mm), ("m_rr", u.mm**2),
                    ("m_tt", u.mm**2), ("m_rrr", u.mm**3)):
        table[k] = cols[k] * unit
    table["flux"] = cols["flux"]
    for k, unit in (("dr_err", u.mm), ("m_rr_err", u.mm**2), ("m_tt_err", u.mm**2), ("m_rrr_err", u.mm**3)):
        table[k] = cols[k] * unit
    table["flag"] = flags
    table.meta["focal_length_mm"] = f
    return table


def _moment_errors(raw, m, pixel, corner_x, corner_y, c, s) -> dict[str, np.ndarray]:
    """Per-image errors of the centroid and moments by the delta method over pixels: each pixel's
    Poisson variance (its raw count: star + background) times the squared influence of that pixel
    on the moment, e.g. d m_rrr / d I = (r^3 - 3 m_rr r - m_rrr) / F with r the radial offset from
    the centroid.  Background photons far from the star dominate the higher moments' errors."""
    n, ny, nx = raw.shape
    xs = (np.arange(nx) + 0.5) * pixel + corner_x[:, None] - m["x"][:, None]     # (n, nx)
    ys = (np.arange(ny) + 0.5) * pixel + corner_y[:, None] - m["y"][:, None]     # (n, ny)
    r = c[:, None, None] * xs[:, None, :] + s[:, None, None] * ys[:, :, None]
    t = -s[:, None, None] * xs[:, None, :] + c[:, None, None] * ys[:, :, None]
    var = np.maximum(raw, 0.0)
    f2 = m["flux"] ** 2
    rr, rrr = m["m_rr"][:, None, None], m["m_rrr"][:, None, None]

    def err(influence):
        return np.sqrt(np.einsum("nij,nij->n", var, influence**2) / f2)

    return {"dr_err": err(r), "m_rr_err": err(r**2 - rr), "m_tt_err": err(t**2 - m["m_tt"][:, None, None]),
            "m_rrr_err": err(r**3 - 3 * rr * r - rrr)}


def _weighted(design, data, sigma, names, what):
    """Relative weights; covariance scaled by the residual chi^2 / dof."""
    p, cov, resid, cond, dof = linear_least_squares(design / sigma[:, None], data / sigma, names, what, 1e6)
    return p, cov, float(np.sum(resid**2) / dof)


def fit_coma(measurements: Table) -> Table:
    """Fit the coma model to ``measure_star_images`` output (flagged rows ignored).

    Returns a one-row Table: kappa1 (mm/deg), kappa3 (mm/deg^3), beta_r, beta_t (mm^2/deg^2),
    s_r, s_t (mm^2, on-axis variances), gamma (mm^3/deg^3), broadening ratio beta_r/beta_t, with
    uncertainties and reduced chi^2 of each fit.
    """
    ok = np.asarray(measurements["flag"]) == 0
    n = int(ok.sum())
    if n < MIN_IMAGES:
        reasons = sorted({FLAG_NAMES[b] for f in np.asarray(measurements["flag"]) for b in FLAG_NAMES if f & b})
        raise CalibrationError(f"only {n} usable star images (rejected: {', '.join(reasons) or 'none'}); "
                               f"at least {MIN_IMAGES} across the field are needed for the coma fit")
    m = measurements[ok]
    theta = np.asarray(m["theta"].quantity.to_value(u.deg))
    if np.ptp(theta) < 0.3 * max(theta.max(), 1e-9) or np.unique(np.round(theta, 3)).size < 3:
        raise CalibrationError("the star images do not span a range of off-axis angles (need at least 3 "
                               "distinct angles from near the axis to the edge); coma cannot be measured")
    m_rr, m_tt = np.asarray(m["m_rr"].value), np.asarray(m["m_tt"].value)
    dr, m_rrr = np.asarray(m["dr"].value), np.asarray(m["m_rrr"].value)
    what = f"coma from {n} star images"
    ones = np.ones_like(theta)
    # weights: per-image moment errors from the pixel counts (photon + background Poisson noise, delta
    # method, ``measure_star_images``); covariances scaled by the residual chi^2 / dof
    broad = np.column_stack([ones, theta**2])
    err = {k: np.asarray(u.Quantity(m[k + "_err"]).value, float) for k in ("dr", "m_rr", "m_tt", "m_rrr")}
    p_r, cov_r, chi_r = _weighted(broad, m_rr, err["m_rr"], ["s_r", "beta_r"], what)
    p_t, cov_t, chi_t = _weighted(broad, m_tt, err["m_tt"], ["s_t", "beta_t"], what)
    p_c, cov_c, chi_c = _weighted(np.column_stack([theta, theta**3]), dr, err["dr"], ["kappa1", "kappa3"], what)
    # comet-tail skewness: third order gives theta^3; an exact paraboloid at f/D ~ 1.2 adds a clear
    # theta^5 part (~15 % at 1.5 deg by ray tracing), which a theta^3-only fit would absorb as misfit
    p_g, cov_g, chi_g = _weighted(np.column_stack([theta**3, theta**5]), m_rrr, err["m_rrr"],
                                  ["gamma", "gamma5"], what)
    ratio = p_r[1] / p_t[1]
    ratio_err = abs(ratio) * np.sqrt(cov_r[1, 1] / p_r[1] ** 2 + cov_t[1, 1] / p_t[1] ** 2)
    table = Table()
    entries = [("kappa1", p_c[0], cov_c[0, 0], u.mm / u.deg), ("kappa3", p_c[1], cov_c[1, 1], u.mm / u.deg**3),
               ("s_r", p_r[0], cov_r[0, 0], u.mm**2), ("beta_r", p_r[1], cov_r[1, 1], u.mm**2 / u.deg**2),
               ("s_t", p_t[0], cov_t[0, 0], u.mm**2), ("beta_t", p_t[1], cov_t[1, 1], u.mm**2 / u.deg**2),
               ("gamma", p_g[0], cov_g[0, 0], u.mm**3 / u.deg**3), ("gamma5", p_g[1], cov_g[1, 1], u.mm**3 / u.deg**5)]
    for name, value, var, unit in entries:
        table[name] = [value] * unit
        table[name + "_err"] = [np.sqrt(var)] * unit
    table["broadening_ratio"] = [ratio]
    table["broadening_ratio_err"] = [ratio_err]
    table["n_images"] = [n]
    table["max_theta"] = [theta.max()] * u.deg
    table["chi2_dof_shift"] = [chi_c]
    table["chi2_dof_radial"] = [chi_r]
    table["chi2_dof_tangential"] = [chi_t]
    table["chi2_dof_skew"] = [chi_g]
    table.meta["kappa_covariance_mm2_per_deg"] = str(cov_c.tolist())
    table.meta["focal_length_mm"] = measurements.meta.get("focal_length_mm")
    return table


def correct_coma(x, y, coma: Table, focal_length, iterations: int = 6) -> tuple[u.Quantity, u.Quantity]:
    """Chief-ray (coma-free) positions from measured image centroids (mm, optical-axis frame)."""
    row = coma[0]
    k1 = float(u.Quantity(row["kappa1"], u.mm / u.deg).value)
    k3 = float(u.Quantity(row["kappa3"], u.mm / u.deg**3).value)
    f = float(u.Quantity(focal_length, u.mm).value)
    z = u.Quantity(x, u.mm).value + 1j * u.Quantity(y, u.mm).value
    r_meas = np.abs(z)
    r = r_meas.copy()
    for _ in range(iterations):
        th = np.degrees(np.arctan(r / f))
        r = r_meas - (k1 * th + k3 * th**3)
    scale = np.where(r_meas > 0, r / np.where(r_meas > 0, r_meas, 1.0), 1.0)
    return (z * scale).real * u.mm, (z * scale).imag * u.mm


# --------------------------------------------------------------------------- contract
def _sample(directory: Path, seed: int) -> Path:
    from calib.pointing.simulation import simulate_star_images

    path = Path(directory) / "coma_sample.h5"
    write_table(simulate_star_images(n_images=60, seed=seed, site="north", on_axis_fraction=0.1), path)
    return path


def _measure(data: Table, config: dict) -> Table:
    pixel = float(config.get("pixel_mm", data.meta.get("pixel_mm", np.nan)))
    focal = float(config.get("focal_length_mm", data.meta.get("focal_length_mm", np.nan)))
    if not (np.isfinite(pixel) and np.isfinite(focal)):
        raise CalibrationError("pixel size and focal length (mm) are needed: config 'pixel_mm', 'focal_length_mm'")
    return measure_star_images(data["image"], data["theta"], data["psi"], pixel * u.mm, focal * u.mm,
                               data["stamp_x"], data["stamp_y"],
                               float(config.get("saturation", data.meta.get("saturation", np.inf))))


def _run(input: Path, output: Path, config: dict) -> Table:
    data = read_table(input)
    result = fit_coma(_measure(data, config))
    result.meta.update(provenance("calib.pointing.coma", VERSION, [Path(input)], config))
    write_table(result, output)
    return result


def expected_coma(truth: dict, theta, flux, pixel: float, errors: dict | None = None) -> dict[str, float]:
    """The coefficients ``fit_coma`` takes when fitted, with its own weights, to the TRUE image moments
    (ray-traced, in the sample's truth) at the observed off-axis angles: what its functional forms
    can represent of the simulated optics.  ``theta`` (deg), ``flux`` per image, ``pixel`` (mm: adds
    pixel^2 / 12 to both variances)."""
    grid = np.asarray(truth["moments_theta_grid_deg"], float)
    theta = np.asarray(theta, float)
    g = grid[1:]

    def curve(key: str, power: int, offset: float = 0.0) -> np.ndarray:
        values = np.asarray(truth[f"{key}_on_grid"], float)
        base = values[0] if offset else 0.0
        ratio = np.interp(theta, g, (values[1:] - base) / g**power)   # smooth: interpolate value / theta^power
        return base + offset + ratio * theta**power

    pix = pixel**2 / 12.0
    shift, skew = curve("shift", 1), curve("skew_r", 3)
    var_r, var_t = curve("var_r", 2, pix), curve("var_t", 2, pix)

    def wls(columns, data, weight2):
        a = np.column_stack(columns) * np.sqrt(weight2)[:, None]
        return np.linalg.lstsq(a, data * np.sqrt(weight2), rcond=None)[0]

    ones = np.ones_like(theta)
    # the fit's weights: the measured per-image errors (``errors``: dr, m_rr, m_tt, m_rrr), else photon-only
    w = ({k: 1.0 / np.asarray(v, float) ** 2 for k, v in errors.items()} if errors else
         {"dr": flux / var_r, "m_rr": flux / var_r**2, "m_tt": flux / var_t**2, "m_rrr": flux / var_r**3})
    k1, k3 = wls([theta, theta**3], shift, w["dr"])
    _, beta_r = wls([ones, theta**2], var_r, w["m_rr"])
    _, beta_t = wls([ones, theta**2], var_t, w["m_tt"])
    gamma, gamma5 = wls([theta**3, theta**5], skew, w["m_rrr"])
    return {"kappa1": float(k1), "kappa3": float(k3), "beta_r": float(beta_r), "beta_t": float(beta_t),
            "gamma": float(gamma), "gamma5": float(gamma5)}


def _check(result: Table, input: Path) -> Evidence:
    """Fitted coma coefficients against the ray-traced truth (projected on the fit's functional forms),
    and coma-corrected centroids against the chief rays; each as a pull, |pull| < 4."""
    data = read_table(input)
    truth = truth_of(data)
    if "moments_theta_grid_deg" not in truth:
        raise CalibrationError("the sample file carries no ray-traced image moments (truth "
                               "'moments_theta_grid_deg'); re-create it with this version's sample()")
    row = result[0]
    meas = _measure(data, {})
    ok = np.asarray(meas["flag"]) == 0
    theta = np.asarray(u.Quantity(data["theta"], u.deg).value)[ok]
    errors = {k: np.asarray(u.Quantity(meas[k + "_err"]).value, float)[ok] for k in ("dr", "m_rr", "m_tt", "m_rrr")}
    expect = expected_coma(truth, theta, np.asarray(meas["flux"])[ok], float(data.meta["pixel_mm"]), errors)
    pulls = {k: float((float(row[k].value if hasattr(row[k], "value") else row[k]) - v) / float(
        row[k + "_err"].value if hasattr(row[k + "_err"], "value") else row[k + "_err"])) for k, v in expect.items()}
    # coma correction at 1 deg off axis: the TRUE image centroid, corrected with the fitted coma,
    # must land on the chief ray within the error propagated from the kappa covariance
    f = data.meta["focal_length_mm"]
    t1 = 1.0
    shift1 = float(np.interp(t1, truth["moments_theta_grid_deg"], truth["shift_on_grid"]))
    r1 = f * np.tan(np.radians(t1))
    xc1, _ = correct_coma([r1 + shift1], [0.0], result, f * u.mm)
    cov_k = np.array(json.loads(result.meta["kappa_covariance_mm2_per_deg"]))
    jac = np.array([t1, t1**3])
    pulls["correction_at_1deg"] = float((xc1.value[0] - r1) / np.sqrt(jac @ cov_k @ jac))
    # and the sample's corrected centroids: mean radial residual (a metric: the fit forces it near 0)
    xc, yc = correct_coma(meas["x"][ok], meas["y"][ok], result, f * u.mm)
    resid = np.hypot(xc.value, yc.value) - f * np.tan(np.radians(theta))
    off = theta > 0.3
    mean_resid = float(resid[off].mean())
    mean_err = float(resid[off].std(ddof=1) / np.sqrt(off.sum()))
    uncorrected = float(np.asarray(meas["dr"][ok])[off].mean())
    pull_limit = 4.0
    false_fail = len(pulls) * 2 * norm_sf(pull_limit)
    passed = all(abs(p) < pull_limit for p in pulls.values())
    k1 = expect["kappa1"]
    metrics = {f"pull_{k}": v for k, v in pulls.items()}
    metrics.update({"kappa1_mm_per_deg": float(row["kappa1"]), "kappa1_expected": k1,
                    "kappa1_third_order_formula": truth["coma_mm_per_deg"],
                    "broadening_ratio": float(row["broadening_ratio"]),
                    "mean_radial_shift_before_mm": uncorrected,
                    "mean_radial_residual_after_mm": mean_resid, "its_standard_error_mm": mean_err})
    criteria = {f"pull_{k}": f"within {pull_limit:g} sigma of the ray-traced coma (as the fit's form represents it)"
                for k in expect}
    criteria["pull_correction_at_1deg"] = (f"true centroid at 1 deg, coma-corrected, on the chief ray within {pull_limit:g} "
                                           "sigma (kappa covariance)")
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls, false_fail_rate=false_fail,
                    summary=f"kappa1 {row['kappa1']:.2f} ± {row['kappa1_err']:.2f} mm/deg (ray-traced {k1:.2f}, "
                            f"third-order formula {truth['coma_mm_per_deg']:.2f}); radial shift {uncorrected:.2f} mm "
                            f"-> {mean_resid:.3f} ± {mean_err:.3f} mm after correction; false-fail rate {false_fail:.1e}")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-1004",),
    title="Coma aberration of single-mirror optics: centroid shift, asymmetric broadening and correction",
    inputs=(
        Port("image", "count", "CCD stamps of star images (n, ny, nx)"),
        Port("theta", "deg", "off-axis angle of the star (catalogue + pointing)"),
        Port("psi", "deg", "position angle of the star on the focal plane"),
        Port("stamp_x", "mm", "focal-plane position of the stamp corner"),
        Port("stamp_y", "mm", "focal-plane position of the stamp corner"),
    ),
    outputs=(
        Port("kappa1", "mm / deg", "radial centroid shift per degree off axis"),
        Port("beta_r", "mm2 / deg2", "radial variance growth with theta^2"),
        Port("beta_t", "mm2 / deg2", "tangential variance growth with theta^2"),
        Port("gamma", "mm3 / deg3", "radial third moment (comet-tail asymmetry) per theta^3"),
        Port("gamma5", "mm3 / deg5", "fifth-order term of the radial third moment, per theta^5"),
        Port("broadening_ratio", "", "beta_r / beta_t (3 for pure third-order coma)"),
    ),
    references=(
        "D. J. Schroeder, Astronomical Optics, 2nd ed., Academic Press (2000), ch. 5-6",
        "J. M. Davies, E. S. Cotton, Design of the quartermaster solar furnace, Solar Energy 1 (1957) 16",
        "ctapipe ComaModel (asymmetric PSF growing with off-axis angle), ctapipe.instrument.optics",
        "CTA-LST Collaboration, Observations of the Crab Nebula and Pulsar with LST-1, ApJ 956 (2023) 80",
    ),
    sample=_sample,
    run=_run,
    check=_check,
    tests=("calib/pointing/tests/test_coma.py",),
    version=VERSION,
    config={
        "pixel_mm": "CCD pixel size on the focal plane, mm (default: the input file's)",
        "focal_length_mm": "focal length, mm (default: the input file's)",
        "saturation": "CCD saturation level, counts (default: the input file's)",
    },
)
