"""Optical point-spread function: 80 % containment radius on and off axis, and a 2D model fit.

Method.  For each CCD image of a star (stamps screened for NaN, saturation and missing star;
background = mean of the stamp border), the light is accumulated in fine radial bins about the
image centroid and the radius enclosing 80 % of the total is interpolated, then refined with each
pixel's light spread uniformly over its square (exact pixel / disc overlap areas, Illinois root
finding; the 2 x pixel^2/12 variance this and the pixel integration add is removed in quadrature):
r80 (the CTA "D80 / 2").  This is vectorised over all images at once (one weighted ``bincount``
over image x radial-bin indices, cumulative sum, first crossing), in chunks to bound memory.  The
dependence on off-axis angle is modelled as r80^2 = p0 + p2 theta^2 + p4 theta^4 (blur added in
quadrature to the aberration, which grows linearly with theta for coma), fitted by linear
least squares weighted for a constant relative r80 error; sqrt(p0) is the on-axis r80 with its
propagated error.  A 2D elliptical Gaussian
(plus constant) is fitted to on-axis images by non-linear least squares (scipy
``least_squares``, Poisson weights) and its widths corrected for the pixel size (Sheppard,
sigma^2 - pixel^2 / 12); for a Gaussian PSF r80 = sigma sqrt(2 ln 5).

Sources: CTA optics requirement and D80 definition, e.g. A. Förster et al., "Mirror
development for CTA", Proc. 33rd ICRC (2013); K. Bernlöhr et al., Astropart. Phys. 20 (2003)
111 (H.E.S.S. optical system: PSF vs off-axis angle); MAGIC/LST PSF from star images on the
camera lid: CTA-LST Collaboration, ApJ 956 (2023) 80; optional PSF from muon-ring widths
(Vacanti et al., Astropart. Phys. 2 (1994) 1) is not implemented here.
"""
from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table
from calib.pointing._io import linear_least_squares, norm_sf, read_table, truth_of
from calib.pointing.star_images import FLAG_NAMES, image_moments, screen_images, subtract_background

__all__ = ["containment_radius", "fit_r80_curve", "fit_gaussian_2d", "measure_psf", "CONTRACT"]

VERSION = "0.3.0"
R80_PER_SIGMA = float(np.sqrt(2 * np.log(5.0)))


def _quadrant_area(x, y, radius):
    """Area of the disc |(u, v)| < radius inside the rectangle [0, x] x [0, y] (x, y >= 0; arrays)."""
    x, y = np.minimum(x, radius), np.minimum(y, radius)
    a = np.minimum(np.sqrt(np.maximum(radius**2 - y**2, 0.0)), x)     # where the circle reaches height y

    def segment(t):             # integral of sqrt(R^2 - u^2) from 0 to t
        return 0.5 * (t * np.sqrt(np.maximum(radius**2 - t**2, 0.0))
                      + radius**2 * np.arcsin(np.minimum(t / radius, 1.0)))

    return y * a + segment(x) - segment(a)


def _encircled(window, dx, dy, radius):
    """Light of pixel-uniform windows (m, w, w) within ``radius`` (m,) of the centroid; ``dx``, ``dy``
    (m, w + 1): pixel-edge coordinates relative to the centroid.  Exact pixel / disc overlap areas."""
    r = radius[:, None, None]
    x, y = dx[:, None, :], dy[:, :, None]
    g = np.sign(x) * np.sign(y) * _quadrant_area(np.abs(x), np.abs(y), r)           # (m, w+1, w+1)
    area = g[:, 1:, 1:] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, :-1, :-1]
    pix = (dx[:, 1] - dx[:, 0]) * (dy[:, 1] - dy[:, 0])
    return np.einsum("mij,mij->m", window, area) / pix


def containment_radius(images, pixel: float, fraction: float = 0.8, bins_per_pixel: int = 10,
                       chunk: int = 256, pixel_correction: bool = True, iterations: int = 8) -> np.ndarray:
    """Radius (same unit as ``pixel``) containing ``fraction`` of each background-subtracted image's
    light, about its centroid.  ``images`` (n, ny, nx); vectorised over images.

    Two passes.  A coarse radius: each pixel's light binned at its centre's radius, the cumulative
    averaged over one pixel width in r, the crossing interpolated.  Then the exact encircled
    light of the pixel-uniform image (each pixel's light spread evenly over its square; the
    pixel / disc overlap area in closed form) is solved for ``fraction`` by the Illinois
    (modified regula falsi) method in a bracket about the coarse radius.  Treating each pixel as
    a point instead errs by up to +-0.3 % with the pixel-grid position for a PSF of 3 pixels rms.
    Pixel integration and uniform spreading each add pixel^2 / 12 of variance per axis, removed
    in quadrature (exact for a Gaussian core: r_f^2 = -2 ln(1 - f) sigma^2; the aliasing of a PSF
    wider than ~1.5 pixels rms is negligible).
    Light beyond the stamp's inscribed circle counts in the total but is not binned finely; a
    containment radius that would lie beyond that circle raises CalibrationError (stamp too small).
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if not 0 < fraction < 1:
        raise CalibrationError(f"containment fraction must be between 0 and 1, not {fraction}")
    if not np.all(np.isfinite(images)):
        raise CalibrationError("images contain NaN or infinite pixels; screen them out first")
    n, ny, nx = images.shape
    width = pixel / bins_per_pixel
    xs = (np.arange(nx) + 0.5) * pixel
    ys = (np.arange(ny) + 0.5) * pixel
    half = bins_per_pixel // 2
    n_fine = int(np.ceil(0.5 * min(nx, ny) * pixel / width))
    n_bins = n_fine + half + 2          # the last bin collects all light further out
    out = np.empty(n)
    for start in range(0, n, chunk):
        block = images[start:start + chunk]
        m = block.shape[0]
        flux = block.sum(axis=(1, 2))
        if np.any(flux <= 0):
            raise CalibrationError("an image has no positive flux after background subtraction")
        cx = block.sum(axis=1) @ xs / flux
        cy = block.sum(axis=2) @ ys / flux
        r = np.hypot((xs[None, None, :] - cx[:, None, None]).astype(np.float32),
                     (ys[None, :, None] - cy[:, None, None]).astype(np.float32))
        idx = np.minimum(r * np.float32(1 / width), n_bins - 1).astype(np.int32)
        idx += (np.arange(m, dtype=np.int32) * n_bins)[:, None, None]
        hist = np.bincount(idx.ravel(), weights=block.ravel(), minlength=m * n_bins).reshape(m, n_bins)
        cum = np.cumsum(hist, axis=1)
        target = fraction * flux
        # the cumulative averaged over +-pixel/2 in r (a running mean by a double cumulative sum)
        cc = np.concatenate([np.zeros((m, 1)), np.cumsum(cum, axis=1)], axis=1)
        hi_ = np.minimum(np.arange(n_bins) + half + 1, n_bins)
        lo_ = np.maximum(np.arange(n_bins) - half, 0)
        smooth = (cc[:, hi_] - cc[:, lo_]) / (hi_ - lo_)
        rows = np.arange(m)
        k = np.argmax(smooth >= target[:, None], axis=1)
        if np.any(k >= n_fine):
            raise CalibrationError(f"the {fraction:.0%} containment radius of {int(np.sum(k >= n_fine))} image(s) "
                                   "lies beyond the stamp's inscribed circle: use larger stamps")
        below = np.where(k > 0, smooth[rows, np.maximum(k - 1, 0)], 0.0)
        step = smooth[rows, k] - below
        frac = np.clip(np.where(step > 0, (target - below) / np.where(step > 0, step, 1.0), 0.5), 0, 1)
        coarse = np.maximum((k + frac) * width, 0.5 * pixel)
        # exact pass in a window holding the bracket's outer circle about the centroid
        lo, hi = 0.9 * coarse, 1.1 * coarse + 0.5 * pixel
        h = min(int(np.ceil(hi.max() / pixel)) + 1, (min(nx, ny) - 1) // 2)
        w = 2 * h + 1
        i0 = np.clip(np.floor(cy / pixel).astype(int) - h, 0, ny - w)
        j0 = np.clip(np.floor(cx / pixel).astype(int) - h, 0, nx - w)
        pix_rows = i0[:, None] + np.arange(w)
        pix_cols = j0[:, None] + np.arange(w)
        window = block[rows[:, None, None], pix_rows[:, :, None], pix_cols[:, None, :]]
        dx = (j0[:, None] + np.arange(w + 1)) * pixel - cx[:, None]
        dy = (i0[:, None] + np.arange(w + 1)) * pixel - cy[:, None]
        inside = (np.minimum(-dx[:, 0], dx[:, -1]) >= hi) & (np.minimum(-dy[:, 0], dy[:, -1]) >= hi)
        f_lo = _encircled(window, dx, dy, lo) - target
        f_hi = _encircled(window, dx, dy, hi) - target
        ok = inside & (f_lo < 0) & (f_hi > 0)
        side = np.zeros(m)
        for _ in range(iterations):          # Illinois: regula falsi, halving a retained end's value
            rr = np.where(ok, hi - f_hi * (hi - lo) / np.where(ok, f_hi - f_lo, 1.0), coarse)
            f = _encircled(window, dx, dy, rr) - target
            up = f > 0
            hi, f_hi = np.where(up, rr, hi), np.where(up, f, f_hi)
            lo, f_lo = np.where(up, lo, rr), np.where(up, f_lo, f)
            f_lo = np.where(up & (side > 0), 0.5 * f_lo, f_lo)
            f_hi = np.where(~up & (side < 0), 0.5 * f_hi, f_hi)
            side = np.where(up, 1.0, -1.0)
        out[start:start + m] = np.where(ok, hi - f_hi * (hi - lo) / np.where(ok, f_hi - f_lo, 1.0), coarse)
    if pixel_correction:
        out = np.sqrt(np.maximum(out**2 + 2 * np.log(1 - fraction) * pixel**2 / 6.0, 0.0))
    return out


def fit_r80_curve(theta, r80) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit r80^2 = p0 + p2 theta^2 + p4 theta^4 (theta in deg, r80 in mm).

    Returns (coefficients, covariance, on-axis r80 error).  Off-axis angles must span the field.
    """
    theta = np.asarray(u.Quantity(theta, u.deg).value, float)
    r80 = np.asarray(u.Quantity(r80, u.mm).value, float)
    if np.ptp(theta) < 0.3 * max(theta.max(), 1e-9):
        raise CalibrationError("the star images do not span a range of off-axis angles; the r80 "
                               "dependence on off-axis angle cannot be fitted")
    design = np.column_stack([np.ones_like(theta), theta**2, theta**4])
    if not np.all(np.isfinite(r80)) or not np.all(np.isfinite(theta)):
        raise CalibrationError("r80 or off-axis angles contain NaN: pass only the unflagged images")
    names = ["r80^2 on axis", "theta^2", "theta^4"]
    what = f"r80 versus off-axis angle from {theta.size} images"
    p, cov, _, _, _ = linear_least_squares(design, r80**2, names, what, 1e6)
    # the relative r80 error per image is about constant (photon statistics of the same star), so the
    # error of r80^2 grows as r80^2: refit weighted by the model's r80^2, with the common scale from the
    # weighted residuals (an unweighted fit overstates the on-axis error: its noise estimate is
    # dominated by the broad off-axis images)
    model = design @ p
    if np.all(model > 0):
        p, inv, res, _, dof = linear_least_squares(design, r80**2, names, what, 1e6, sigma=model)
        cov = inv * float(np.sum((res / model) ** 2) / dof)
    if p[0] <= 0:
        raise CalibrationError(f"the fitted on-axis r80^2 is not positive ({p[0]:.3g} mm^2): the images near "
                               "the axis are missing or the r80 curve is not a quadratic in theta^2")
    on_axis_err = 0.5 * np.sqrt(cov[0, 0]) / np.sqrt(p[0])
    return p, cov, float(on_axis_err)


def _gauss_model(q, xx, yy):
    amp, x0, y0, sa, sb, ang, const = q
    c, s = np.cos(ang), np.sin(ang)
    u_ = c * (xx - x0) + s * (yy - y0)
    v_ = -s * (xx - x0) + c * (yy - y0)
    return amp * np.exp(-0.5 * ((u_ / sa) ** 2 + (v_ / sb) ** 2)) + const


def fit_gaussian_2d(image, pixel: float, background: float = 0.0) -> dict[str, float]:
    """Elliptical 2D Gaussian + constant fitted to one stamp (counts); widths in mm, pixel-corrected.

    Poisson weights 1/sqrt(model + background), iterated once from data weights.  Returns sigma_major, sigma_minor, their
    errors, angle (deg), centroid (mm, stamp frame), r80 of the fitted Gaussian (mm) and
    reduced chi^2.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or not np.all(np.isfinite(image)):
        raise CalibrationError("the 2D PSF fit needs one finite 2D image")
    m = image_moments(image, pixel)
    flux = float(m["flux"][0])
    s0 = float(np.sqrt(max(0.5 * (m["m_rr"][0] + m["m_tt"][0]), pixel**2)))
    # fit a window of +-5 sigma around the centroid (speed; the wings carry only background)
    half = int(np.ceil(5 * s0 / pixel))
    ci, cj = int(m["y"][0] / pixel), int(m["x"][0] / pixel)
    i0, j0 = max(ci - half, 0), max(cj - half, 0)
    image = image[i0:ci + half + 1, j0:cj + half + 1]
    ny, nx = image.shape
    yy, xx = np.mgrid[i0:i0 + ny, j0:j0 + nx]
    xx = (xx + 0.5) * pixel
    yy = (yy + 0.5) * pixel
    q0 = [flux / (2 * np.pi * s0**2) * pixel**2, float(m["x"][0]), float(m["y"][0]), s0, s0, 0.0, 0.0]
    # Poisson weights from the model of the previous pass (iteratively reweighted least squares):
    # weighting by the data itself would bias the width low.
    weight = 1.0 / np.sqrt(np.maximum(image, 0.0) + background + 1.0)
    for _ in range(2):
        def resid(q, weight=weight):
            return ((_gauss_model(q, xx, yy) - image) * weight).ravel()

        fit = least_squares(resid, q0, x_scale="jac", max_nfev=200)
        q0 = fit.x
        weight = 1.0 / np.sqrt(np.maximum(_gauss_model(fit.x, xx, yy) - fit.x[6], 0.0) + background + 1e-3)
    if not fit.success:
        raise CalibrationError(f"the 2D Gaussian PSF fit did not converge: {fit.message}")
    dof = image.size - len(q0)
    chi2 = float(np.sum(fit.fun**2))
    jtj = fit.jac.T @ fit.jac
    try:
        cov = np.linalg.inv(jtj) * max(chi2 / dof, 1.0)
    except np.linalg.LinAlgError:
        raise CalibrationError("the 2D Gaussian PSF fit is degenerate (singular Jacobian)") from None
    sa, sb = abs(fit.x[3]), abs(fit.x[4])
    ea, eb = np.sqrt(cov[3, 3]), np.sqrt(cov[4, 4])
    pix_var = pixel**2 / 12.0
    ca, cb = np.sqrt(max(sa**2 - pix_var, 0.0)), np.sqrt(max(sb**2 - pix_var, 0.0))
    ea, eb = ea * sa / max(ca, 1e-12), eb * sb / max(cb, 1e-12)
    if cb > ca:
        ca, cb, ea, eb = cb, ca, eb, ea
    return {"sigma_major": ca, "sigma_minor": cb, "sigma_major_err": ea, "sigma_minor_err": eb,
            "angle_deg": float(np.degrees(fit.x[5]) % 180), "x0": float(fit.x[1]), "y0": float(fit.x[2]),
            "r80_gauss": float(R80_PER_SIGMA * np.sqrt(ca * cb)), "chi2_dof": chi2 / dof}


def measure_psf(images, theta, pixel, saturation: float, fraction: float = 0.8) -> Table:
    """Per-image PSF table: off-axis angle, r80, radial/tangential rms widths and a quality flag.

    Flagged images (NaN, saturated, no star) get r80 = NaN and a non-zero ``flag``; they are not
    used by the fits.  Raises CalibrationError if fewer than 3 images survive.
    """
    pixel = float(u.Quantity(pixel, u.mm).value)
    images = np.asarray(images, dtype=np.float64)
    theta = np.asarray(u.Quantity(theta, u.deg).value, float)
    if images.ndim != 3 or theta.shape != images.shape[:1]:
        raise CalibrationError("images must be (n, ny, nx) with one off-axis angle per image")
    flags = screen_images(images, saturation)
    good = flags == 0
    if good.sum() < 3:
        reasons = sorted({FLAG_NAMES[b] for f in flags for b in FLAG_NAMES if f & b})
        raise CalibrationError(f"only {int(good.sum())} of {len(flags)} star images are usable "
                               f"(rejected: {', '.join(reasons) or 'none'}); at least 3 are needed")
    sub, background = subtract_background(images[good])
    r80 = np.full(len(flags), np.nan)
    r80[good] = containment_radius(sub, pixel, fraction)
    mom = image_moments(sub, pixel)
    table = Table()
    table["theta"] = theta * u.deg
    table["r80"] = r80 * u.mm
    for key in ("m_rr", "m_tt"):
        col = np.full(len(flags), np.nan)
        col[good] = mom[key]
        table[key.replace("m_rr", "sigma_x").replace("m_tt", "sigma_y")] = np.sqrt(np.maximum(col, 0)) * u.mm
    flux = np.full(len(flags), np.nan)
    flux[good] = mom["flux"]
    table["flux"] = flux
    table["flag"] = flags
    return table


# --------------------------------------------------------------------------- contract
def _sample(directory: Path, seed: int) -> Path:
    from calib.pointing.simulation import simulate_star_images

    path = Path(directory) / "psf_sample.h5"
    write_table(simulate_star_images(n_images=60, seed=seed, site="north"), path)
    return path


def _run(input: Path, output: Path, config: dict) -> Table:
    data = read_table(input)
    pixel = float(config.get("pixel_mm", data.meta.get("pixel_mm", np.nan)))
    saturation = float(config.get("saturation", data.meta.get("saturation", np.inf)))
    if not np.isfinite(pixel):
        raise CalibrationError("the CCD pixel size (mm on the focal plane) is needed: config 'pixel_mm'")
    result = measure_psf(data["image"], data["theta"], pixel * u.mm, saturation)
    good = result["flag"] == 0
    p, cov, on_axis_err = fit_r80_curve(result["theta"][good], result["r80"][good])
    on_axis = np.flatnonzero(good & (np.asarray(result["theta"].value) < 0.05))
    gauss = {}
    if on_axis.size:
        sub, bkg = subtract_background(np.asarray(data["image"][on_axis], float))
        fits = [fit_gaussian_2d(sub[k], pixel, float(bkg[k])) for k in range(min(on_axis.size, 5))]
        sig = np.array([np.sqrt(f["sigma_major"] * f["sigma_minor"]) for f in fits])
        gauss = {"gauss_sigma_on_axis_mm": float(sig.mean()),
                 "gauss_sigma_on_axis_err_mm": float(sig.std(ddof=1) / np.sqrt(sig.size)) if sig.size > 1 else np.nan,
                 "gauss_axis_ratio_on_axis": float(np.mean([f["sigma_minor"] / f["sigma_major"] for f in fits])),
                 "gauss_n_images": len(fits)}
    result.meta.update({
        "r80_on_axis_mm": float(np.sqrt(p[0])), "r80_on_axis_err_mm": on_axis_err,
        "r80_curve": json.dumps({"p0_mm2": p[0], "p2_mm2_per_deg2": p[1], "p4_mm2_per_deg4": p[2],
                                 "covariance": cov.tolist()}),
        "r80_model": "r80^2 = p0 + p2 theta^2 + p4 theta^4",
        "plate_scale_mm_per_deg": float(data.meta.get("plate_scale_mm_per_deg", np.nan)),
        "n_used": int(good.sum()), "n_flagged": int((~good).sum()), **gauss,
    })
    result.meta.update(provenance("calib.pointing.psf", VERSION, [Path(input)], config))
    write_table(result, output)
    return result


def _check(result: Table, input: Path) -> Evidence:
    data = read_table(input)
    truth = truth_of(data)
    good = np.asarray(result["flag"]) == 0
    if len(result) != len(data) or good.sum() < 3:
        return Evidence(passed=False, metrics={"n_images": int(good.sum())},
                        criteria={"n_images": "one result row per input image, >= 3 usable"},
                        summary="the result does not match the input images")
    theta = np.asarray(u.Quantity(data["theta"], u.deg).value)[good]     # off-axis angles of the input
    r80 = np.asarray(result["r80"].value)[good]
    # the truth is deterministic (pupil quadrature, < 3e-5 relative): no error of its own; a cubic
    # spline interpolates it (linear interpolation on the grid would overestimate the convex r80(theta))
    true = CubicSpline(truth["r80_theta_grid_deg"], truth["r80_mm_on_grid"])(theta)
    ratio = r80 / true
    mean_dev = float(ratio.mean() - 1)
    err = float(ratio.std(ddof=1) / np.sqrt(ratio.size))
    on_true = truth["r80_mm_on_grid"][0]
    on_dev = (result.meta["r80_on_axis_mm"] - on_true) / on_true
    on_err = result.meta["r80_on_axis_err_mm"] / on_true
    pulls = {"r80_mean_over_images": mean_dev / err, "r80_on_axis": float(on_dev / on_err)}
    pull_limit = 4.0
    false_fail = len(pulls) * 2 * norm_sf(pull_limit)
    passed = all(abs(p) < pull_limit for p in pulls.values())
    metrics = {"mean_r80_relative_deviation": mean_dev, "its_standard_error": err,
               "r80_on_axis_mm": result.meta["r80_on_axis_mm"], "r80_on_axis_true_mm": on_true,
               "r80_on_axis_relative_deviation": float(on_dev), "n_images": int(good.sum()),
               **{f"pull_{k}": v for k, v in pulls.items()}}
    if "gauss_sigma_on_axis_mm" in result.meta:
        metrics["gauss_sigma_on_axis_mm"] = result.meta["gauss_sigma_on_axis_mm"]
        metrics["blur_sigma_true_mm"] = truth["blur_mm"]
    return Evidence(
        passed=bool(passed), metrics=metrics, pulls=pulls, false_fail_rate=false_fail,
        criteria={"pull_r80_mean_over_images": f"|mean(r80/r80_true) - 1| < {pull_limit:g} standard errors",
                  "pull_r80_on_axis": f"|r80(0)/truth - 1| < {pull_limit:g} sigma (fit error)"},
        summary=f"r80 on axis {result.meta['r80_on_axis_mm']:.2f} ± {result.meta['r80_on_axis_err_mm']:.2f} mm "
                f"(truth {on_true:.2f}); per-image r80 / truth - 1 = {100 * mean_dev:+.2f} ± {100 * err:.2f} %; "
                f"false-fail rate {false_fail:.1e}")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-1005",),
    title="Optical PSF: 80 % containment radius on and off axis, 2D model fit, from star images",
    inputs=(
        Port("image", "count", "CCD stamps of star images (n, ny, nx)"),
        Port("theta", "deg", "off-axis angle of each star image"),
        Port("pixel_mm", "mm", "CCD pixel size projected on the focal plane (meta/config)"),
    ),
    outputs=(
        Port("r80", "mm", "80 % containment radius per image, about the centroid"),
        Port("sigma_x", "mm", "rms width along x per image"),
        Port("flag", "", "bit flags: 1 NaN, 2 saturated, 4 no star"),
        Port("r80_on_axis_mm", "mm", "on-axis r80 from the fit r80^2(theta) (meta)"),
        Port("gauss_sigma_on_axis_mm", "mm", "2D Gaussian width on axis (meta)"),
    ),
    references=(
        "K. Bernlöhr et al., The optical system of the H.E.S.S. imaging atmospheric Cherenkov telescopes I, "
        "Astropart. Phys. 20 (2003) 111",
        "A. Förster et al., Mirror development for CTA, Proc. 33rd ICRC (2013)",
        "CTA-LST Collaboration, Observations of the Crab Nebula and Pulsar with LST-1, ApJ 956 (2023) 80",
        "W. F. Sheppard, On the calculation of the most probable values of frequency-constants, "
        "Proc. London Math. Soc. 29 (1898) 353 (grouping correction)",
    ),
    sample=_sample,
    run=_run,
    check=_check,
    tests=("calib/pointing/tests/test_psf.py",),
    version=VERSION,
    config={
        "pixel_mm": "CCD pixel size on the focal plane, mm (default: the input file's)",
        "saturation": "CCD saturation level, counts (default: the input file's)",
    },
)
