"""Telescope pointing model (absolute sky – optical axis misalignment) by linear least squares.

Method.  A star of known catalogue position is centred (or its image located on the pointing
CCD) and the raw encoder azimuth/elevation recorded.  The star's true position is its apparent
topocentric place (catalogue position with proper motion, precession-nutation, aberration and
refraction for the site pressure and temperature: ``calib.sky.altaz``), since refraction
(2.5 arcmin at 20 deg elevation) is not one of the mount terms.  The difference between
encoder and true horizontal position is modelled with the geometric terms of Wallace's TPOINT for an
alt-azimuth mount, linear in their coefficients:

    x = dA cos E = -IA cos E - CA - NPAE sin E - AN sin A sin E - AW cos A sin E
    y = dE       =  IE - AN cos A + AW sin A - TF cos E

with IA/IE the azimuth/elevation index errors, CA the left–right collimation error, NPAE the
non-perpendicularity of the azimuth and elevation axes, AN/AW the tilt of the azimuth axis
towards north/east, TF the Hooke-law tube (camera-support) bending proportional to cos E.
Sign convention here: raw encoder = true + (dA, dE); azimuth A from north through east
(astropy).  The 2N x 7 design matrix is built vectorised and solved by SVD after column
normalisation; its rank and condition number are checked first, so a degenerate star set
(too few stars, a single elevation, all stars on one line) is refused with a message naming the
terms it cannot separate.  Parameter uncertainties come from the covariance
s^2 (A^T A)^-1 with s^2 = RSS / (2N - p); the residual rms per axis is the pointing precision
after correction.  ``correct_pointing`` applies the model (true -> encoder demand),
``sky_position`` inverts it (encoder -> true) by fixed-point iteration.

Sources: P. T. Wallace, "TPOINT – A Telescope Pointing Analysis System" (manual, 2011) and
Wallace, "A rigorous algorithm for telescope pointing", Proc. SPIE 4848 (2002); pointing
calibration of Cherenkov telescopes: Bretz et al., "The drive system of MAGIC", Astropart.
Phys. 31 (2009) 92; Gillessen, "Arcsecond level pointing of the H.E.S.S. telescopes", Proc. 28th
ICRC (2003); LST-1
pointing: CTA-LST Collaboration, ApJ 956 (2023) 80.
"""
from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table
from calib.pointing._io import linear_least_squares, norm_sf, read_table, require_finite, truth_of

__all__ = [
    "TERMS",
    "design_matrix",
    "pointing_residuals",
    "fit_pointing_model",
    "pointing_offsets",
    "correct_pointing",
    "sky_position",
    "CONTRACT",
]

VERSION = "0.2.0"

#: TPOINT term names and what they describe
TERMS = {
    "IA": "azimuth index error",
    "IE": "elevation index error",
    "CA": "left-right collimation error",
    "NPAE": "azimuth/elevation axis non-perpendicularity",
    "AN": "azimuth axis tilt towards north",
    "AW": "azimuth axis tilt towards east",
    "TF": "tube bending, Hooke law (cos E)",
}

#: largest accepted condition number of the column-normalised design matrix
MAX_CONDITION = 1e3


def _rad(angle) -> np.ndarray:
    return np.asarray(u.Quantity(angle, u.deg).to_value(u.rad), dtype=float)


def design_matrix(az, el, terms=tuple(TERMS)) -> np.ndarray:
    """Design matrix (2N, n_terms): rows 0..N-1 the cross-elevation offset x = dA cos E,
    rows N..2N-1 the elevation offset y = dE, for coefficients in radians."""
    a, e = _rad(az).ravel(), _rad(el).ravel()
    sa, ca, se, ce = np.sin(a), np.cos(a), np.sin(e), np.cos(e)
    zero, one = np.zeros_like(a), np.ones_like(a)
    columns = {
        "IA": (-ce, zero),
        "IE": (zero, one),
        "CA": (-one, zero),
        "NPAE": (-se, zero),
        "AN": (-sa * se, -ca),
        "AW": (-ca * se, sa),
        "TF": (zero, -ce),
    }
    unknown = [t for t in terms if t not in columns]
    if unknown:
        raise CalibrationError(f"unknown pointing-model term(s) {unknown}; known: {list(columns)}")
    return np.column_stack([np.concatenate(columns[t]) for t in terms])


def pointing_residuals(az_true, el_true, az_encoder, el_encoder) -> tuple[u.Quantity, u.Quantity]:
    """On-sky offsets encoder − true: (dA cos E, dE), azimuth difference wrapped to ±180°."""
    d_az = (u.Quantity(az_encoder, u.deg) - u.Quantity(az_true, u.deg) + 180 * u.deg) % (360 * u.deg) - 180 * u.deg
    x = d_az * np.cos(u.Quantity(el_true, u.deg))
    y = u.Quantity(el_encoder, u.deg) - u.Quantity(el_true, u.deg)
    return x.to(u.arcsec), y.to(u.arcsec)


def fit_pointing_model(az_true, el_true, az_encoder, el_encoder, terms=tuple(TERMS),
                       max_condition: float = MAX_CONDITION) -> Table:
    """Fit the TPOINT terms to star observations.

    Parameters: true (catalogue) and raw encoder azimuth/elevation of N star observations
    (Quantities or degrees).  Returns a Table with one row per term (``term``, ``description``,
    ``value`` and ``uncertainty`` in arcsec) and in ``meta``: n_observations, residual rms per
    axis and on the sky (arcsec), condition number, degrees of freedom, covariance (arcsec^2).
    """
    az_true, el_true, az_encoder, el_encoder = (u.Quantity(v, u.deg).ravel()
                                                for v in (az_true, el_true, az_encoder, el_encoder))
    n = az_true.size
    if not (el_true.size == az_encoder.size == el_encoder.size == n):
        raise CalibrationError("true and encoder azimuth/elevation arrays must have the same length")
    require_finite("star observations", az_true, el_true, az_encoder, el_encoder)
    if np.any(np.abs(el_true) >= 89.0 * u.deg) or np.any(el_true < 0 * u.deg):
        raise CalibrationError("star elevations must be between 0 and 89 deg (azimuth is undefined at the zenith)")
    terms = tuple(terms)
    x, y = pointing_residuals(az_true, el_true, az_encoder, el_encoder)
    design = design_matrix(az_true, el_true, terms)
    data = np.concatenate([x.value, y.value])  # arcsec; parameters come out in arcsec
    params, cov, resid, condition, dof = linear_least_squares(
        design, data, list(terms), f"pointing model from {n} star observations", max_condition)
    rss = float(np.sum(resid**2))
    table = Table()
    table["term"] = list(terms)
    table["description"] = [TERMS[t] for t in terms]
    table["value"] = params * u.arcsec
    table["uncertainty"] = np.sqrt(np.diag(cov)) * u.arcsec
    table.meta.update({
        "n_observations": n,
        "dof": dof,
        "residual_rms_per_axis_arcsec": float(np.sqrt(rss / dof)),
        "residual_rms_x_arcsec": float(np.sqrt(np.mean(resid[:n] ** 2))),
        "residual_rms_y_arcsec": float(np.sqrt(np.mean(resid[n:] ** 2))),
        "sky_rms_arcsec": float(np.sqrt(rss / (n - len(terms) / 2))),
        "condition_number": condition,
        "covariance_arcsec2": json.dumps(np.round(cov, 9).tolist()),
        "convention": "encoder = true + (dA, dE); x = dA cos E; azimuth N through E; TPOINT terms",
    })
    return table


def _coefficients(model) -> tuple[tuple[str, ...], np.ndarray]:
    if isinstance(model, Table):
        return tuple(model["term"]), u.Quantity(model["value"], u.arcsec).to_value(u.arcsec)
    model = dict(model)
    return tuple(model), np.array([u.Quantity(v, u.arcsec).to_value(u.arcsec) for v in model.values()])


def pointing_offsets(model, az, el) -> tuple[u.Quantity, u.Quantity]:
    """Model offsets (dA, dE) at true positions (az, el); dA is the azimuth offset (not × cos E)."""
    terms, coeff = _coefficients(model)
    az, el = u.Quantity(az, u.deg), u.Quantity(el, u.deg)
    shape = np.broadcast(az, el).shape
    az, el = np.broadcast_to(az, shape, subok=True), np.broadcast_to(el, shape, subok=True)
    offsets = design_matrix(az, el, terms) @ coeff
    n = int(np.prod(shape))
    x, y = offsets[:n].reshape(shape), offsets[n:].reshape(shape)
    return (x / np.cos(el.to_value(u.rad)) * u.arcsec).to(u.deg), (y * u.arcsec).to(u.deg)


def correct_pointing(model, az, el) -> tuple[u.Quantity, u.Quantity]:
    """Encoder demand that puts the optical axis on the true position (az, el)."""
    d_az, d_el = pointing_offsets(model, az, el)
    return (u.Quantity(az, u.deg) + d_az) % (360 * u.deg), u.Quantity(el, u.deg) + d_el


def sky_position(model, az_encoder, el_encoder, iterations: int = 4) -> tuple[u.Quantity, u.Quantity]:
    """True direction of the optical axis for raw encoder readings (inverse of ``correct_pointing``)."""
    az_encoder, el_encoder = u.Quantity(az_encoder, u.deg), u.Quantity(el_encoder, u.deg)
    az, el = az_encoder, el_encoder
    for _ in range(iterations):
        d_az, d_el = pointing_offsets(model, az, el)
        az, el = az_encoder - d_az, el_encoder - d_el
    return az % (360 * u.deg), el


# --------------------------------------------------------------------------- contract
def _sample(directory: Path, seed: int) -> Path:
    from calib.pointing.simulation import simulate_pointing_run

    table = simulate_pointing_run(n_observations=300, site="north", seed=seed)
    path = Path(directory) / "pointing_model_sample.ecsv"
    write_table(table, path)
    return path


def _run(input: Path, output: Path, config: dict) -> Table:
    data = read_table(input)
    if "az_true" not in data.colnames or "el_true" not in data.colnames:
        # a real pointing run: star identifier (hip: Hipparcos, hr: Yale BSC) + time + encoders
        from calib.realdata.sky import with_catalogue_positions
        data = with_catalogue_positions(data)
    terms = tuple(config.get("terms", TERMS))
    result = fit_pointing_model(data["az_true"], data["el_true"], data["az_encoder"], data["el_encoder"],
                                terms=terms, max_condition=float(config.get("max_condition", MAX_CONDITION)))
    result.meta.update(provenance("calib.pointing.pointing_model", VERSION, [Path(input)], config))
    write_table(result, output)
    return result


def _check(result: Table, input: Path) -> Evidence:
    """Compare the fit with what a 7-term model can represent of the simulated (geometric) mount.

    The true encoder offsets at the observed stars come from the simulator's rotation model of
    the mount (``calib.pointing.simulation.mount_encoder_offsets``: misalignments plus terms the
    model lacks).  Their least-squares projection on the fitted terms is the expected coefficient
    set; fitted minus expected over the stated error is N(0, 1).  The part the model cannot
    represent (rss_u) adds to the noise: RSS / sigma^2 follows a non-central chi^2 with
    dof = 2N - p and non-centrality rss_u / sigma^2.
    """
    from scipy.stats import ncx2

    from calib.pointing.simulation import mount_encoder_offsets

    data = read_table(input)
    truth = truth_of(data)
    if "mount" not in truth:
        raise CalibrationError("the sample file carries no simulated mount geometry (truth 'mount'); "
                               "re-create it with this version's sample()")
    noise = float(truth["noise_arcsec_per_axis"])
    terms = tuple(result["term"])
    az, el = data["az_true"].quantity, data["el_true"].quantity
    d_az, d_el = mount_encoder_offsets(truth["mount"], az, el)
    true_offsets = np.concatenate([(d_az * np.cos(el)).to_value(u.arcsec), d_el.to_value(u.arcsec)])
    design = design_matrix(az, el, terms)
    expected, *_ = np.linalg.lstsq(design, true_offsets, rcond=None)
    rss_unmodelled = float(np.sum((true_offsets - design @ expected) ** 2))
    values = u.Quantity(result["value"], u.arcsec).value
    errors = u.Quantity(result["uncertainty"], u.arcsec).value
    pulls = {t: float((v - e) / s) for t, v, e, s in zip(terms, values, expected, errors)}
    dof = int(result.meta["dof"])
    rms = float(result.meta["residual_rms_per_axis_arcsec"])
    lam = rss_unmodelled / noise**2
    rss_scaled = rms**2 * dof / noise**2
    p_rss = float(ncx2.sf(rss_scaled, dof, lam))
    pulls["residual_rss"] = float((rss_scaled - (dof + lam)) / np.sqrt(2 * (dof + 2 * lam)))
    first_order = truth["tpoint_equivalent_arcsec"]
    max_pull = max(abs(pulls[t]) for t in terms)
    pull_limit, p_band = 4.0, 5e-5
    passed = max_pull < pull_limit and p_band < p_rss < 1 - p_band
    false_fail = len(terms) * 2 * float(norm_sf(pull_limit)) + 2 * p_band
    metrics = {f"pull_{k}": v for k, v in pulls.items()}
    metrics.update({f"{t}_minus_first_order_truth_arcsec": float(v - first_order[t])
                    for t, v in zip(terms, values) if t in first_order})
    metrics.update({"residual_rms_arcsec": rms, "simulated_noise_arcsec": noise,
                    "unmodelled_rms_per_axis_arcsec": float(np.sqrt(rss_unmodelled / true_offsets.size)),
                    "expected_residual_rms_arcsec": float(np.sqrt(noise**2 + rss_unmodelled / dof)),
                    "rss_p_value": p_rss, "max_abs_pull": max_pull})
    return Evidence(
        passed=bool(passed), metrics=metrics, pulls=pulls, false_fail_rate=false_fail,
        criteria={"max_abs_pull": f"every term within {pull_limit:g} sigma of the mount's projection on the "
                                  "model (the part of the true geometry a 7-term model represents)",
                  "rss_p_value": f"{p_band:g} < p < 1 - {p_band:g}: residuals = simulated noise plus the "
                                 "unmodelled mount terms (non-central chi^2)"},
        summary=f"{len(result)} terms, max |pull| {max_pull:.2f}, residual rms {rms:.2f}\" (expected "
                f"{metrics['expected_residual_rms_arcsec']:.2f}\": noise {noise:.2f}\" + unmodelled "
                f"{metrics['unmodelled_rms_per_axis_arcsec']:.2f}\"); false-fail rate {false_fail:.1e}")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-1002",),
    title="Telescope pointing model (TPOINT terms) from star observations",
    inputs=(
        Port("az_true", "deg", "apparent (refracted) star azimuth at the observation time (N through E)"),
        Port("el_true", "deg", "apparent (refracted) star elevation at the observation time"),
        Port("az_encoder", "deg", "raw azimuth encoder reading with the star on the optical axis"),
        Port("el_encoder", "deg", "raw elevation encoder reading with the star on the optical axis"),
    ),
    outputs=(
        Port("term", "", "TPOINT term name (IA, IE, CA, NPAE, AN, AW, TF)"),
        Port("value", "arcsec", "fitted coefficient"),
        Port("uncertainty", "arcsec", "1-sigma uncertainty of the coefficient"),
        Port("residual_rms_per_axis_arcsec", "arcsec", "pointing rms per axis after correction (meta)"),
    ),
    references=(
        "P. T. Wallace, TPOINT - A Telescope Pointing Analysis System, manual (2011)",
        "P. T. Wallace, A rigorous algorithm for telescope pointing, Proc. SPIE 4848 (2002) 125",
        "Bretz et al., The drive system of the MAGIC telescope, Astropart. Phys. 31 (2009) 92",
        "S. Gillessen, Arcsecond level pointing of the H.E.S.S. telescopes, Proc. 28th ICRC (2003)",
        "CTA-LST Collaboration, Observations of the Crab Nebula and Pulsar with LST-1, ApJ 956 (2023) 80",
    ),
    sample=_sample,
    run=_run,
    check=_check,
    tests=("calib/pointing/tests/test_pointing_model.py",),
    version=VERSION,
    config={
        "terms": "list of pointing-model terms to fit (default: the module's TERMS)",
        "max_condition": "largest condition number of the design matrix accepted",
    },
)
