"""Intensity flat-fielding: relative gain of each pixel from flasher (flat-field) runs.

Method (I-DATA-xST-0110), after the LST flasher flat-field of S. Fegan as implemented in
cta-lstchain (``FlasherFlatFieldCalculator``):

1. Per flat-field event *j* and gain channel, the pedestal-subtracted charge of every pixel
   is divided by the camera median of that event: ``r_ij = Q_ij / median_i(Q_ij)``.  The
   event-wise normalisation removes the flasher intensity jitter from event to event.
2. Per pixel, the relative gains ``r_ij`` are summarised over the events by a sigma-clipped
   mean, median and standard deviation (clip at ``clip_sigma`` standard deviations around
   the mean, up to ``clip_iterations`` iterations).  The statistical uncertainty of the
   mean relative gain is ``std / sqrt(n_used)`` and, in quadrature, the error of the
   subtracted pedestal (mean of the pedestal run, error std_ped / sqrt(n_ped)), which shifts
   all events of a pixel alike: ``std_ped / sqrt(n_ped) x mean_j(1 / median_i Q_ij)`` (LST
   sample: ~105 adc / sqrt(500) against ~6,400 adc, 7e-4 beside 3.9e-3 -- without it the
   errors were 2 % small and the pulls 2 % too wide).
3. Outliers: a pixel whose median relative gain deviates from the camera median of the
   medians by a fraction outside ``median_range`` (default [-0.3, +0.3], lstchain default;
   production uses +-0.5) is a *median outlier* (dead, weak or hot pixel); a pixel whose
   standard deviation of the relative gain deviates from the camera median of the
   standard deviations by more than ``std_range`` (default [-5, +5]) robust standard
   deviations of the standard deviations (1.4826 x MAD) is a *std outlier* (noisy pixel).
   lstchain uses +-3 plain standard deviations; with 1,855 pixels that flags ~5 good pixels
   by chance, hence the wider, outlier-robust default here.

The flat-field coefficient that equalises the camera response is ``1 / relative_gain``;
the relative gain measures the product (relative photon detection) x (ADC/p.e. gain), i.e.
it equalises charges in ADC.  Divide the charges by a per-pixel ADC/p.e. first to obtain the
relative photon detection (``relative_qe``) alone.

Output: an astropy Table with one row per pixel; multi-gain quantities are columns of shape
(n_pixels, n_gains).  Column names follow ctapipe's ``FlatFieldContainer``
(``relative_gain_mean``, ``relative_gain_median``, ``relative_gain_std``) and monitoring
tables (``outlier_mask``).
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

# robust per-pixel statistics: one compiled implementation, shared with the pedestal and
# timing modules (re-exported here, where they first lived)
from calib.camera.stats import event_median, robust_std, sigma_clipped_pixel_stats
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "sigma_clipped_pixel_stats",
    "event_median",
    "relative_gain_per_event",
    "flatfield_relative_gain",
    "flatfield_table",
    "robust_std",
    "CONTRACT",
]

VERSION = "0.2.0"
DEFAULT_MIN_EVENTS = 20


# ---------------------------------------------------------------------------------------
# the flat-field kernel
# ---------------------------------------------------------------------------------------
def _as_event_gain_pixel(charge: np.ndarray, name: str) -> np.ndarray:
    charge = np.asarray(charge)
    if charge.ndim == 2:
        charge = charge[:, np.newaxis, :]
    if charge.ndim != 3:
        raise CalibrationError(
            f"{name} must have shape (n_events, n_gains, n_pixels) or (n_events, n_pixels); "
            f"got shape {charge.shape}")
    return charge


def relative_gain_per_event(charge: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per event and gain, pixel charge over the camera median of that event.

    ``charge``: pedestal-subtracted flat-field charges (n_events, n_gains, n_pixels).
    ``exclude``: pixels (n_pixels) or (n_gains, n_pixels) left out of the camera median.
    Events whose camera median is not positive give NaN (they carry no flasher light).
    """
    charge = _as_event_gain_pixel(charge, "flat-field charge")
    med = event_median(charge, exclude)
    with np.errstate(invalid="ignore", divide="ignore"):
        med = np.where(med > 0, med, np.nan)
        return (charge / med[..., np.newaxis]).astype(np.float32)


def flatfield_relative_gain(charge: np.ndarray, *, exclude: np.ndarray | None = None,
                            clip_sigma: float = 4.0, clip_iterations: int = 5,
                            median_range: tuple[float, float] = (-0.3, 0.3),
                            std_range: tuple[float, float] = (-5.0, 5.0),
                            min_events: int = DEFAULT_MIN_EVENTS,
                            saturated: np.ndarray | None = None,
                            pedestal: np.ndarray | None = None,
                            pedestal_err: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Relative gain per pixel and gain channel from pedestal-subtracted flat-field charges.

    ``charge``: (n_events, n_gains, n_pixels).  If ``pedestal`` (n_gains, n_pixels) is
    given, the charges are raw and the pedestal is subtracted on the fly (no copy).
    ``pedestal_err`` (n_gains, n_pixels): standard error of the subtracted pedestal (e.g.
    pedestal std / sqrt(n_pedestal_events)); it shifts every event of the pixel alike, so it
    enters ``relative_gain_err`` as pedestal_err x mean_j(1 / camera median_j), in quadrature.

    Returns a dict of arrays of shape (n_gains, n_pixels): ``relative_gain_mean``,
    ``relative_gain_median``, ``relative_gain_std``, ``relative_gain_err`` (std/sqrt(n), with
    the pedestal error in quadrature when given),
    ``n_events`` (used after clipping), ``median_outlier``, ``std_outlier``,
    ``saturated`` (pixel had saturated flat-field events) and ``outlier_mask`` (any of them
    or no finite value).  Raises CalibrationError on too few events, no finite charge in a
    gain channel, or a camera without light.
    """
    charge = _as_event_gain_pixel(charge, "flat-field charge")
    n_events, n_gains, n_pixels = charge.shape
    if n_events < min_events:
        raise CalibrationError(
            f"the flat-field run has {n_events} events; at least {min_events} are needed "
            "for a relative gain")
    for g in range(n_gains):
        if not np.isfinite(charge[:, g]).any():
            raise CalibrationError(f"gain channel {g} of the flat-field run has no finite charge "
                                   "(missing gain channel?)")
    cam_med = event_median(charge, exclude, offset=pedestal)  # (n_events, n_gains)
    with np.errstate(invalid="ignore"):
        level = np.nanmean(cam_med, axis=0)
        jitter = np.nanstd(cam_med, axis=0) / level
    if np.any(~(level > 0)) or np.any(~(jitter < 0.5)):
        raise CalibrationError(
            "the camera median charge of the flat-field events is not clearly positive "
            f"(mean {np.round(level, 2).tolist()} adc, relative spread "
            f"{np.round(jitter, 2).tolist()}): no flasher light, or charges not "
            "pedestal-subtracted?")
    with np.errstate(invalid="ignore"):
        scale = np.where(cam_med > 0, cam_med, np.nan)
    if (np.isfinite(scale).sum(axis=0) < min_events).any():
        raise CalibrationError(
            "fewer than %d flat-field events have a positive camera median charge; "
            "was the flasher firing?" % min_events)
    stats = sigma_clipped_pixel_stats(charge, clip_sigma, clip_iterations, offset=pedestal,
                                      event_scale=scale)
    out = {
        "relative_gain_mean": stats["mean"],
        "relative_gain_median": stats["median"],
        "relative_gain_std": stats["std"],
        "n_events": stats["n_used"],
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        var = stats["std"] ** 2 / stats["n_used"]
        if pedestal_err is not None:
            inv_level = np.nanmean(1.0 / scale, axis=0)[:, np.newaxis]  # (n_gains, 1)
            var = var + (np.broadcast_to(np.asarray(pedestal_err, float), var.shape)
                         * inv_level) ** 2
        out["relative_gain_err"] = np.sqrt(var)
    med = stats["median"]
    cam_med = np.nanmedian(np.where(_broadcast_exclude(exclude, med.shape), np.nan, med),
                           axis=-1, keepdims=True)
    dev = med / cam_med - 1.0
    std = stats["std"]
    std_med = np.nanmedian(std, axis=-1, keepdims=True)
    std_spread = robust_std(std, axis=-1)[..., np.newaxis]
    with np.errstate(invalid="ignore"):
        out["median_outlier"] = ~((dev >= median_range[0]) & (dev <= median_range[1]))
        out["std_outlier"] = ~((std - std_med >= std_range[0] * std_spread)
                               & (std - std_med <= std_range[1] * std_spread))
    if saturated is not None:
        sat = _as_event_gain_pixel(saturated, "saturation mask").any(axis=0)
    else:
        sat = np.zeros((n_gains, n_pixels), dtype=bool)
    out["saturated"] = sat
    out["outlier_mask"] = out["median_outlier"] | out["std_outlier"] | sat | ~np.isfinite(med)
    return out


def _broadcast_exclude(exclude, shape):
    if exclude is None:
        return np.zeros(shape, dtype=bool)
    return np.broadcast_to(np.asarray(exclude, dtype=bool), shape)


def flatfield_table(result: dict[str, np.ndarray], meta: dict | None = None) -> Table:
    """Per-pixel astropy Table (columns of shape (n_pixels, n_gains)) from the kernel output."""
    n_pixels = result["relative_gain_mean"].shape[-1]
    t = Table()
    t["pixel_id"] = np.arange(n_pixels)
    for name in ("relative_gain_mean", "relative_gain_median", "relative_gain_std",
                 "relative_gain_err"):
        t[name] = u.Quantity(result[name].T.astype(np.float64), u.dimensionless_unscaled)
        t[name].description = {
            "relative_gain_mean": "sigma-clipped mean over events of charge / camera median",
            "relative_gain_median": "median over events of charge / camera median",
            "relative_gain_std": "sigma-clipped std over events of charge / camera median",
            "relative_gain_err": "statistical uncertainty of relative_gain_mean (std/sqrt(n) "
                                 "+ pedestal error, in quadrature)",
        }[name]
    t["flatfield_coefficient"] = 1.0 / t["relative_gain_mean"]
    t["flatfield_coefficient"].description = "multiply charges by this to equalise the camera"
    t["n_events"] = result["n_events"].T
    for name in ("median_outlier", "std_outlier", "saturated", "outlier_mask"):
        t[name] = result[name].T
    t["is_valid"] = ~result["outlier_mask"].T
    t.meta.update(meta or {})
    return t


# ---------------------------------------------------------------------------------------
# CONTRACT: sample / run / check with the camera simulator
# ---------------------------------------------------------------------------------------
def write_sample(directory: Path, seed: int = 0) -> Path:
    """Simulated LST flat-field + pedestal charges (HDF5) with the camera truth inside."""
    from calib.camera.chain import write_charge_sample

    return write_charge_sample(Path(directory), seed, "flatfield_sample.h5",
                               n_flatfield=1000, n_pedestal=500)


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Relative gains from a sample file written by :func:`write_sample`."""
    from calib.camera.chain import read_charge_data

    config = dict(config or {})
    data = read_charge_data(Path(input))  # measured charges only, no truth
    ped_charge = data["pedestal_charge"]
    pedestal = ped_charge.mean(axis=0, dtype=np.float64)
    pedestal_err = ped_charge.std(axis=0, ddof=1, dtype=np.float64) / np.sqrt(ped_charge.shape[0])
    res = flatfield_relative_gain(
        data["flatfield_charge"], pedestal=pedestal, pedestal_err=pedestal_err,
        saturated=data["flatfield_saturated"],
        clip_sigma=config.get("clip_sigma", 4.0),
        clip_iterations=config.get("clip_iterations", 5),
        median_range=tuple(config.get("median_range", (-0.3, 0.3))),
        std_range=tuple(config.get("std_range", (-5.0, 5.0))))
    meta = provenance(__name__, VERSION, [Path(input)], config)
    meta["method"] = "flasher flat-field: per-event charge / camera median, sigma-clipped over events"
    t = flatfield_table(res, meta)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    """Relative gains vs the simulated response (relative_qe x ADC gain), within errors.

    Per gain channel, over the n live pixels, pulls (measured / common scale - truth) / error
    with the common scale = median(measured / truth) (relative gains have no absolute
    normalisation): pull std within 1 +- 4 / sqrt(2 (n - 1)) and |pull mean| < 4 / sqrt(n)
    (4 sigma each, 6.3e-5 each), the scale within 1 % of 1 and every dead pixel flagged
    (physics requirements, no chance failure).  Designed false-fail rate 2.5e-4 (two gains).
    Pulls for the ensemble: the chi-square of the pixel pulls as a z-score
    (chi2 - n) / sqrt(2n), and the pull of the first live pixel, per gain.
    """
    from calib.camera.chain import read_charge_sample

    data = read_charge_sample(Path(input))
    cam = data["camera"]
    good = ~(np.asarray(cam.dead) | np.asarray(cam.noisy))
    dead = np.asarray(cam.dead)
    truth_all = _response_truth(cam)
    n = int(good.sum())
    band = 4.0 / np.sqrt(2 * (n - 1))
    metrics = {"n_pixels": n, "n_dead": int(dead.sum())}
    criteria, pulls, passed = {}, {}, True
    names = ("high", "low") if truth_all.shape[0] == 2 else ("single",)
    for g, name in enumerate(names):
        truth = truth_all[g]
        meas = np.asarray(result["relative_gain_mean"])[:, g]
        err = np.asarray(result["relative_gain_err"])[:, g]
        # the normalisation is the camera median: compare shapes after matching medians
        scale = np.median(meas[good] / truth[good])
        pull = (meas[good] / scale - truth[good]) / err[good]
        flagged = np.asarray(result["outlier_mask"])[:, g]
        m = {f"pull_std_{name}": float(np.std(pull)), f"pull_mean_{name}": float(np.mean(pull)),
             f"normalisation_offset_{name}": float(scale - 1),
             f"dead_flagged_{name}": int((flagged & dead).sum())}
        metrics.update(m)
        criteria.update({
            f"pull_std_{name}": f"|pull std - 1| < {band:.3f} (4 sigma of a std from {n} pixels)",
            f"pull_mean_{name}": f"|pull mean| < {4 / np.sqrt(n):.3f} (4 sigma)",
            f"normalisation_offset_{name}": "|median(measured / truth) - 1| < 0.01",
            f"dead_flagged_{name}": "every dead pixel is a flat-field outlier",
        })
        pulls[f"relative_gain_chi2_z_{name}"] = float((np.sum(pull**2) - n) / np.sqrt(2 * n))
        pulls[f"relative_gain_first_pixel_{name}"] = float(pull[0])
        passed &= (abs(m[f"pull_std_{name}"] - 1) < band
                   and abs(m[f"pull_mean_{name}"]) < 4 / np.sqrt(n)
                   and abs(scale - 1) < 0.01 and m[f"dead_flagged_{name}"] == metrics["n_dead"])
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=len(names) * 2 * 6.3e-5,
                    summary="relative gains recover the simulated relative response within "
                            "their statistical errors" if passed else
                            "relative gains do NOT match the simulated response")


def _response_truth(cam) -> np.ndarray:
    """Relative charge response (n_gains, n_pixels): relative_qe x gain, camera median 1."""
    qe = np.asarray(cam.relative_qe, dtype=float)
    gain = np.asarray(u.Quantity(cam.gain).value, dtype=float)
    resp = qe[np.newaxis, :] * gain
    good = ~(np.asarray(cam.dead) | np.asarray(cam.noisy))
    return resp / np.median(resp[:, good], axis=-1, keepdims=True)


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0110",),
    title="Intensity flat-fielding: relative gain per pixel from flasher runs",
    inputs=(
        Port("flatfield_charge", "adc", "flat-field charges, (n_events, n_gains, n_pixels)"),
        Port("pedestal_charge", "adc", "pedestal charges in the same window, same shape"),
    ),
    outputs=(
        Port("relative_gain_mean", "", "sigma-clipped mean relative gain per pixel and gain"),
        Port("relative_gain_median", "", "median relative gain per pixel and gain"),
        Port("relative_gain_std", "", "std of the relative gain over events"),
        Port("relative_gain_err", "", "statistical uncertainty of relative_gain_mean"),
        Port("outlier_mask", "", "median / std / saturation outlier, per pixel and gain"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=(
        "S. Fegan, flat-field relative gain method (as used by cta-lstchain FlasherFlatFieldCalculator)",
        "cta-lstchain 0.12: lstchain/calib/camera/flatfield.py",
        "ctapipe FlatFieldContainer (column names)",
    ),
    tests=("calib/camera/tests/test_flatfield.py", "calib/camera/tests/test_shared_helpers.py"),
    version=VERSION,
    config={
        "clip_sigma": "sigma-clipping threshold over events (default 4)",
        "clip_iterations": "sigma-clipping iterations (default 5)",
        "median_range": "[low, high] allowed relative gain - 1 of a pixel (default [-0.3, 0.3])",
        "std_range": "[low, high] allowed spread of a pixel, in sigma (default [-5, 5])",
    },
)
