"""Camera – optical axis misalignment from reference LEDs and star images on the camera lid.

Method.  A pointing CCD at the dish centre images the camera: the reference LEDs mounted on the
camera body and the images of stars reflected by the mirror onto the (closed) camera lid.  Both
are measured in the CCD frame (converted to focal-plane mm), whose zero point and roll are not
known a priori.  Using complex coordinates z = x + i y:

* star images obey z = a (f w + (kappa1 theta + kappa3 theta^3) w / |w|) + o, where w = xi + i eta
  are the gnomonic sky offsets of the catalogue stars from the optical-axis direction (AltAz frame
  at the observation time), f the focal length, kappa1 theta + kappa3 theta^3 the coma shift of the
  image centroid outwards (from the coma calibration I-DATA-xST-1004; theta = arctan |w| in deg;
  ~4 % of the radius for the LST, which the LEDs on the camera body do not share: ignoring it
  shrinks the fitted camera offset by that much), a = s e^{i rho} the CCD roll (and scale) and o
  the image of the optical axis;
* LED spots obey z = c L + e, where L are the nominal LED positions in the camera frame.

Both are linear least-squares problems (4 real parameters each, design matrix rank checked).
The camera, relative to the optical axis, is then z_opt = b L + d with b = c / a (rotation
psi = arg b, scale |b|) and d = (e - o) / a (displacement).  Uncertainties are propagated
linearly from the two independent fits (weights from the stated centroid errors; the
chi^2 / dof of each fit is reported).  This is the scheme of the LED + star-on-lid pointing
monitors of H.E.S.S. (Gillessen 2003), MAGIC (Riegel et al. 2005; Bretz et al. 2009 "starguider")
and the LST-1 camera-displacement monitor.

Sources: S. Gillessen, "Arcsecond level pointing of the H.E.S.S. telescopes", Proc. 28th ICRC (2003);
T. Bretz et al., Astropart. Phys. 31 (2009) 92; B. Riegel et al., Proc. 29th ICRC 5 (2005) 219
(MAGIC starguider); CTA-LST Collaboration, ApJ 956 (2023) 80.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table
from calib.pointing._io import (linear_least_squares, norm_sf, propagate, read_table, require_finite,
                                truth_of)

__all__ = ["fit_similarity", "fit_camera_alignment", "camera_to_optical", "CONTRACT"]

VERSION = "0.3.0"
MAX_CONDITION = 1e4


def fit_similarity(source: np.ndarray, target: np.ndarray, sigma: np.ndarray, what: str):
    """Fit target = a * source + o (complex a, o) by weighted linear least squares.

    Returns (params [Re a, Im a, Re o, Im o], covariance, chi2, dof).
    """
    source, target = np.asarray(source, complex), np.asarray(target, complex)
    n = source.size
    one, zero = np.ones(n), np.zeros(n)
    design = np.vstack([
        np.column_stack([source.real, -source.imag, one, zero]),
        np.column_stack([source.imag, source.real, zero, one]),
    ])
    data = np.concatenate([target.real, target.imag])
    sig = np.concatenate([sigma, sigma])
    params, cov, resid, _, dof = linear_least_squares(
        design, data, ["scale*cos(roll)", "scale*sin(roll)", "zero point x", "zero point y"], what,
        MAX_CONDITION, sigma=sig)
    chi2 = float(np.sum((resid / sig) ** 2))
    return params, cov, chi2, dof


def _derived(p: np.ndarray) -> np.ndarray:
    """(a, o, c, e) parameters -> (d_x, d_y, psi [rad], |b|, rho [rad])."""
    a, o = complex(p[0], p[1]), complex(p[2], p[3])
    c, e = complex(p[4], p[5]), complex(p[6], p[7])
    b, d = c / a, (e - o) / a
    return np.array([d.real, d.imag, np.angle(b), abs(b), np.angle(a)])


def fit_camera_alignment(star_x, star_y, star_xi, star_eta, star_sigma,
                         led_x, led_y, led_nominal_x, led_nominal_y, led_sigma, focal_length,
                         coma=0.0 * u.mm / u.deg, coma3=0.0 * u.mm / u.deg**3) -> Table:
    """Camera displacement and rotation relative to the optical axis.

    Star and LED positions in the pointing-CCD frame (mm), star sky offsets (rad) from the
    optical axis, nominal LED positions in the camera frame (mm), centroid errors (mm); ``coma``
    (kappa1, mm/deg) and ``coma3`` (kappa3, mm/deg^3): the radial centroid shift of the telescope's
    optics, kappa1 theta + kappa3 theta^3.
    Returns a one-row Table: offset_x/y and their uncertainties (mm and arcsec on the sky),
    rotation (deg), LED-ring scale, CCD roll, chi^2/dof of both fits.
    """
    mm = lambda q: np.atleast_1d(u.Quantity(q, u.mm).to_value(u.mm)).astype(float)  # noqa: E731
    rad = lambda q: np.atleast_1d(u.Quantity(q, u.rad).to_value(u.rad)).astype(float)  # noqa: E731
    sx, sy, sxi, seta, ss = mm(star_x), mm(star_y), rad(star_xi), rad(star_eta), mm(star_sigma)
    lx, ly, lnx, lny, ls = mm(led_x), mm(led_y), mm(led_nominal_x), mm(led_nominal_y), mm(led_sigma)
    f = float(u.Quantity(focal_length, u.mm).value)
    kappa1 = float(u.Quantity(coma, u.mm / u.deg).value)
    kappa3 = float(u.Quantity(coma3, u.mm / u.deg**3).value)
    ss, ls = np.broadcast_to(ss, sx.shape), np.broadcast_to(ls, lx.shape)
    require_finite("star images", sx, sy, sxi, seta, ss)
    require_finite("reference LEDs", lx, ly, lnx, lny, ls)
    if sx.size < 3:
        raise CalibrationError(f"only {sx.size} star image(s) on the lid; at least 3 are needed to fix the "
                               "optical axis and the CCD roll with a noise estimate")
    if lx.size < 3:
        raise CalibrationError(f"only {lx.size} reference LED(s) found; at least 3 are needed")
    if np.any(ss <= 0) or np.any(ls <= 0):
        raise CalibrationError("centroid uncertainties must be positive")
    w = sxi + 1j * seta
    radial = np.where(np.abs(w) > 0, w / np.where(np.abs(w) > 0, np.abs(w), 1.0), 0.0)
    theta = np.degrees(np.arctan(np.abs(w)))
    image = f * w + (kappa1 * theta + kappa3 * theta**3) * radial         # coma-shifted centroids
    p_star, cov_star, chi2_s, dof_s = fit_similarity(image, sx + 1j * sy, ss,
                                                     f"optical axis from {sx.size} star images")
    p_led, cov_led, chi2_l, dof_l = fit_similarity(lnx + 1j * lny, lx + 1j * ly, ls,
                                                   f"camera position from {lx.size} reference LEDs")
    p = np.concatenate([p_star, p_led])
    cov = np.zeros((8, 8))
    cov[:4, :4], cov[4:, 4:] = cov_star, cov_led
    values, errors = propagate(_derived, p, cov, 1e-7)
    arcsec_per_mm = (1 / f * u.rad).to_value(u.arcsec)
    table = Table()
    table["offset_x"] = [values[0]] * u.mm
    table["offset_x_err"] = [errors[0]] * u.mm
    table["offset_y"] = [values[1]] * u.mm
    table["offset_y_err"] = [errors[1]] * u.mm
    table["offset_x_sky"] = [values[0] * arcsec_per_mm] * u.arcsec
    table["offset_y_sky"] = [values[1] * arcsec_per_mm] * u.arcsec
    table["rotation"] = [np.degrees(values[2])] * u.deg
    table["rotation_err"] = [np.degrees(errors[2])] * u.deg
    table["led_scale"] = [values[3]]
    table["led_scale_err"] = [errors[3]]
    table["ccd_roll"] = [np.degrees(values[4])] * u.deg
    table["n_stars"] = [sx.size]
    table["n_leds"] = [lx.size]
    table["chi2_dof_stars"] = [chi2_s / dof_s]
    table["chi2_dof_leds"] = [chi2_l / dof_l]
    return table


def camera_to_optical(x, y, alignment: Table) -> tuple[u.Quantity, u.Quantity]:
    """Map camera-frame positions (mm) to the optical-axis frame with a fitted alignment."""
    row = alignment[0]
    b = row["led_scale"] * np.exp(1j * np.radians(float(u.Quantity(row["rotation"], u.deg).value)))
    d = complex(u.Quantity(row["offset_x"], u.mm).value, u.Quantity(row["offset_y"], u.mm).value)
    z = b * (u.Quantity(x, u.mm).value + 1j * u.Quantity(y, u.mm).value) + d
    return z.real * u.mm, z.imag * u.mm


# --------------------------------------------------------------------------- contract
def _sample(directory: Path, seed: int) -> Path:
    from calib.pointing.simulation import simulate_camera_alignment

    path = Path(directory) / "camera_alignment_sample.ecsv"
    write_table(simulate_camera_alignment(site="north", seed=seed), path)
    return path


def _run(input: Path, output: Path, config: dict) -> Table:
    data = read_table(input)
    stars = data[data["kind"] == "star"]
    leds = data[data["kind"] == "led"]
    focal = config.get("focal_length_mm", data.meta.get("focal_length_mm"))
    if focal is None:
        raise CalibrationError("the focal length is needed (config 'focal_length_mm' or input meta)")
    coma = config.get("coma_mm_per_deg", data.meta.get("coma_mm_per_deg"))
    if coma is None:
        raise CalibrationError("the coma shift of the star images is needed (config 'coma_mm_per_deg', e.g. "
                               "kappa1 of the coma calibration I-DATA-xST-1004, or input meta); give 0 for "
                               "coma-free optics")
    result = fit_camera_alignment(stars["x"], stars["y"], stars["xi"], stars["eta"], stars["sigma"],
                                  leds["x"], leds["y"], leds["nominal_x"], leds["nominal_y"], leds["sigma"],
                                  float(focal) * u.mm, float(coma) * u.mm / u.deg,
                                  float(config.get("coma_mm_per_deg3", data.meta.get("coma_mm_per_deg3", 0.0)))
                                  * u.mm / u.deg**3)
    result.meta.update(provenance("calib.pointing.camera_alignment", VERSION, [Path(input)], config))
    write_table(result, output)
    return result


def _check(result: Table, input: Path) -> Evidence:
    truth = truth_of(read_table(input))
    row = result[0]
    pulls = {
        "offset_x": float((row["offset_x"] - truth["offset_x_mm"]) / row["offset_x_err"]),
        "offset_y": float((row["offset_y"] - truth["offset_y_mm"]) / row["offset_y_err"]),
        "rotation": float((row["rotation"] - truth["rotation_deg"]) / row["rotation_err"]),
    }
    # the pulls only mean something if the stated centroid errors are right: chi^2 of both fits
    from scipy.stats import chi2 as chi2_dist
    p_values = {}
    for what, n_col in (("stars", "n_stars"), ("leds", "n_leds")):
        dof = 2 * int(row[n_col]) - 4
        p_values[what] = float(chi2_dist.sf(float(row[f"chi2_dof_{what}"]) * dof, dof))
    pull_limit, p_band = 4.0, 5e-5
    false_fail = len(pulls) * 2 * norm_sf(pull_limit) + len(p_values) * 2 * p_band
    passed = (all(abs(v) < pull_limit for v in pulls.values())
              and all(p_band < p < 1 - p_band for p in p_values.values()))
    metrics = {f"pull_{k}": v for k, v in pulls.items()}
    metrics.update({f"chi2_p_value_{k}": v for k, v in p_values.items()})
    metrics.update({"offset_x_mm": float(row["offset_x"]), "offset_y_mm": float(row["offset_y"]),
                    "rotation_deg": float(row["rotation"]), "offset_err_mm": float(row["offset_x_err"]),
                    "n_stars": int(row["n_stars"])})
    return Evidence(passed=bool(passed), metrics=metrics, pulls=pulls, false_fail_rate=false_fail,
                    criteria={**{f"pull_{k}": f"within {pull_limit:g} sigma of the simulated truth" for k in pulls},
                              **{f"chi2_p_value_{k}": f"{p_band:g} < p < 1 - {p_band:g} (stated centroid errors "
                                                      "consistent with the fit residuals)" for k in p_values}},
                    summary=f"offset ({row['offset_x']:.2f}, {row['offset_y']:.2f}) ± {row['offset_x_err']:.2f} mm, "
                            f"rotation {row['rotation']:.3f} ± {row['rotation_err']:.3f} deg; truth "
                            f"({truth['offset_x_mm']}, {truth['offset_y_mm']}) mm, {truth['rotation_deg']} deg; "
                            f"false-fail rate {false_fail:.1e}")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-1001",),
    title="Camera displacement and rotation relative to the optical axis (LEDs + stars on the lid)",
    inputs=(
        Port("x", "mm", "measured spot position in the pointing-CCD frame (stars and LEDs)"),
        Port("y", "mm", "measured spot position in the pointing-CCD frame"),
        Port("sigma", "mm", "centroid uncertainty per spot"),
        Port("xi", "rad", "gnomonic sky offset of the star from the optical axis (AltAz frame)"),
        Port("eta", "rad", "gnomonic sky offset of the star from the optical axis"),
        Port("nominal_x", "mm", "nominal LED position in the camera frame"),
        Port("nominal_y", "mm", "nominal LED position in the camera frame"),
        Port("coma_mm_per_deg", "mm / deg", "radial coma shift of the star images, kappa1 of I-DATA-xST-1004 "
             "(meta/config; coma_mm_per_deg3: kappa3)"),
    ),
    outputs=(
        Port("offset_x", "mm", "camera-centre displacement from the optical axis"),
        Port("offset_y", "mm", "camera-centre displacement from the optical axis"),
        Port("rotation", "deg", "camera rotation relative to the optical (horizon-aligned) frame"),
        Port("offset_x_err", "mm", "1-sigma uncertainty"),
        Port("rotation_err", "deg", "1-sigma uncertainty"),
    ),
    references=(
        "S. Gillessen, Arcsecond level pointing of the H.E.S.S. telescopes, Proc. 28th ICRC (2003)",
        "T. Bretz et al., The drive system of the MAGIC telescope, Astropart. Phys. 31 (2009) 92",
        "B. Riegel et al., A tracking monitor for the MAGIC telescope, Proc. 29th ICRC 5 (2005) 219",
        "CTA-LST Collaboration, Observations of the Crab Nebula and Pulsar with LST-1, ApJ 956 (2023) 80",
    ),
    sample=_sample,
    run=_run,
    check=_check,
    tests=("calib/pointing/tests/test_camera_alignment.py",),
    version=VERSION,
    config={
        "focal_length_mm": "focal length, mm (default: the input file's)",
        "coma_mm_per_deg": "radial coma shift of star images per degree off axis (kappa1 of I-DATA-xST-1004), "
                           "mm/deg (default: the input file's; required)",
        "coma_mm_per_deg3": "third-order term of that shift (kappa3 of I-DATA-xST-1004), mm/deg^3 "
                            "(default: the input file's, else 0)",
    },
)
