"""Intensity flat-fielding: relative gain of each pixel from flasher (flat-field) runs.

Method (I-DATA-xST-0110), after the LST flasher flat-field of S. Fegan as implemented in
cta-lstchain (``FlasherFlatFieldCalculator``):

1. Per flat-field event *j* and gain channel, the pedestal-subtracted charge of every pixel
   is divided by the camera median of that event: ``r_ij = Q_ij / median_i(Q_ij)``.  The
   event-wise normalisation removes the flasher intensity jitter from event to event.
2. Per pixel, the relative gains ``r_ij`` are summarised over the events by a sigma-clipped
   mean, median and standard deviation (clip at ``clip_sigma`` standard deviations around
   the mean, up to ``clip_iterations`` iterations).  The statistical uncertainty of the
   mean relative gain is ``std / sqrt(n_used)``.
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
import numba
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance

__all__ = [
    "sigma_clipped_pixel_stats",
    "event_median",
    "relative_gain_per_event",
    "flatfield_relative_gain",
    "flatfield_table",
    "robust_std",
    "CONTRACT",
]

VERSION = "0.1.0"
DEFAULT_MIN_EVENTS = 20


# ---------------------------------------------------------------------------------------
# robust statistics over events, per pixel (compiled, parallel over pixels)
# ---------------------------------------------------------------------------------------
_TILE = 16  # pixels per tile: one 64-byte cache line of float32


@numba.njit(cache=True)
def _select_median(a, n):  # pragma: no cover - compiled
    """Median of a[:n] by quickselect (reorders a[:n]); O(n) instead of a full sort."""
    if n == 0:
        return np.nan
    k = n // 2
    lo = 0
    hi = n - 1
    while hi > lo:
        # median-of-three pivot
        mid = (lo + hi) // 2
        x, y, z = a[lo], a[mid], a[hi]
        if x < y:
            pivot = y if y < z else (z if x < z else x)
        else:
            pivot = x if x < z else (z if y < z else y)
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    upper = a[k]
    if n % 2 == 1:
        return upper
    lower = a[0]
    for i in range(1, k):
        if a[i] > lower:
            lower = a[i]
    return 0.5 * (lower + upper)


@numba.njit(cache=True, inline="always")
def _transform(v, off, mode, ev):  # pragma: no cover - compiled
    v = v - off
    if mode == 1:
        v = v / ev
    elif mode == 2:
        v = v - ev
    return v


@numba.njit(parallel=True, cache=True)
def _clipped_cols(x, offset, event_term, group_size, mode, n_sigma, max_iter,
                  mean, median, std, n_used):  # pragma: no cover - compiled
    """Per column of x (n_events, n_cols): sigma-clipped stats of the transformed values
    v = (x - offset[c]) [/ or -] event_term[e, c // group_size] (mode 0: none, 1: /, 2: -).
    Columns are processed in tiles of _TILE so that reads are cache-line contiguous."""
    n_ev, n_cols = x.shape
    n_tiles = (n_cols + _TILE - 1) // _TILE
    for t in numba.prange(n_tiles):
        c0 = t * _TILE
        c1 = min(n_cols, c0 + _TILE)
        w = c1 - c0
        tile = np.empty((w, n_ev), dtype=np.float64)
        for e in range(n_ev):
            for k in range(w):
                c = c0 + k
                ev = event_term[e, c // group_size] if mode != 0 else 1.0
                tile[k, e] = _transform(np.float64(x[e, c]), offset[c], mode, ev)
        for k in range(w):
            c = c0 + k
            buf = tile[k]
            m = 0
            for j in range(n_ev):
                v = buf[j]
                if np.isfinite(v):
                    buf[m] = v
                    m += 1
            if m < 2:
                mean[c] = np.nan
                median[c] = np.nan
                std[c] = np.nan
                n_used[c] = m
                continue
            # one pass per iteration: count, sum and sum of squares (shifted by a
            # reference value for numerical stability) of the values inside [lo, hi]
            ref = buf[0]
            lo = -np.inf
            hi = np.inf
            mu = 0.0
            sd = np.nan
            k_in = m
            k_prev = -1
            for it in range(max_iter + 1):
                s1 = 0.0
                s2 = 0.0
                kk = 0
                for j in range(m):
                    v = buf[j]
                    if v >= lo and v <= hi:
                        d = v - ref
                        s1 += d
                        s2 += d * d
                        kk += 1
                if kk == k_prev:  # nothing clipped by the last bounds: converged
                    break
                k_in = kk
                mu = ref + s1 / kk
                var = (s2 - s1 * s1 / kk) / (kk - 1) if kk > 1 else np.nan
                sd = np.sqrt(var) if var > 0 else 0.0
                if it == max_iter or not (sd > 0) or kk < 2:
                    break
                lo = mu - n_sigma * sd
                hi = mu + n_sigma * sd
                k_prev = kk
            kept = np.empty(k_in, dtype=np.float64)
            cnt = 0
            for j in range(m):
                v = buf[j]
                if v >= lo and v <= hi:
                    kept[cnt] = v
                    cnt += 1
            mean[c] = mu
            std[c] = sd
            median[c] = _select_median(kept, cnt)
            n_used[c] = cnt


@numba.njit(parallel=True, cache=True)
def _event_medians(x, offset, exclude, group_size, out):  # pragma: no cover - compiled
    """out[e, g] = median over the columns of group g of (x[e, c] - offset[c]), ignoring
    non-finite values and excluded columns."""
    n_ev, n_cols = x.shape
    n_groups = n_cols // group_size
    for e in numba.prange(n_ev):
        buf = np.empty(group_size, dtype=np.float64)
        for g in range(n_groups):
            m = 0
            for k in range(group_size):
                c = g * group_size + k
                v = np.float64(x[e, c]) - offset[c]
                if not exclude[c] and np.isfinite(v):
                    buf[m] = v
                    m += 1
            out[e, g] = _select_median(buf, m)


def _flat2d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return np.ascontiguousarray(values.reshape(values.shape[0], -1))


def sigma_clipped_pixel_stats(values: np.ndarray, clip_sigma: float = 4.0,
                              clip_iterations: int = 5, *, offset: np.ndarray | None = None,
                              event_scale: np.ndarray | None = None,
                              event_shift: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sigma-clipped mean, median, std and number of used events along axis 0.

    ``values`` has shape (n_events, ...); non-finite entries are ignored.  Returns arrays of
    the trailing shape.  Clipping is around the mean (as lstchain does), iterated until no
    value is removed or ``clip_iterations`` is reached; ``clip_iterations=0`` gives plain
    statistics.  The statistics are of ``(values - offset) / event_scale`` (or
    ``- event_shift``), computed on the fly without temporaries: ``offset`` has the trailing
    shape, ``event_scale`` / ``event_shift`` the shape (n_events, n_groups) where the
    trailing values are split into n_groups equal groups (e.g. gain channels).
    """
    values = np.asarray(values)
    if values.ndim < 1 or values.shape[0] == 0:
        raise CalibrationError("no events were given to compute per-pixel statistics from")
    trailing = values.shape[1:]
    x = _flat2d(values)
    n_cols = x.shape[1]
    off = np.zeros(n_cols) if offset is None else np.broadcast_to(
        np.asarray(offset, float), trailing).reshape(-1).copy()
    if event_scale is not None and event_shift is not None:
        raise ValueError("give event_scale or event_shift, not both")
    term = event_scale if event_scale is not None else event_shift
    mode = 0 if term is None else (1 if event_scale is not None else 2)
    if term is None:
        term = np.ones((x.shape[0], 1))
    term = np.asarray(term, float).reshape(x.shape[0], -1)
    group = n_cols // term.shape[1]
    mean, median, std = np.empty(n_cols), np.empty(n_cols), np.empty(n_cols)
    n_used = np.empty(n_cols, dtype=np.int64)
    _clipped_cols(x, off, np.ascontiguousarray(term), group, mode, float(clip_sigma),
                  int(clip_iterations), mean, median, std, n_used)
    return {
        "mean": mean.reshape(trailing),
        "median": median.reshape(trailing),
        "std": std.reshape(trailing),
        "n_used": n_used.reshape(trailing),
    }


def event_median(values: np.ndarray, exclude: np.ndarray | None = None,
                 offset: np.ndarray | None = None) -> np.ndarray:
    """Median over the last axis (pixels) of ``values - offset``, per event (and gain).

    Non-finite values and ``exclude`` pixels (broadcast to the trailing shape) are ignored.
    ``values``: (n_events, ..., n_pixels); returns (n_events, ...).
    """
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[np.newaxis]
        squeeze = True
    else:
        squeeze = False
    trailing = values.shape[1:]
    x = _flat2d(values)
    off = np.zeros(x.shape[1]) if offset is None else np.broadcast_to(
        np.asarray(offset, float), trailing).reshape(-1).copy()
    exc = np.zeros(x.shape[1], bool) if exclude is None else np.broadcast_to(
        np.asarray(exclude, bool), trailing).reshape(-1).copy()
    n_pix = values.shape[-1]
    out = np.empty((x.shape[0], x.shape[1] // n_pix))
    _event_medians(x, off, exc, n_pix, out)
    out = out.reshape(values.shape[:-1])
    return out[0] if squeeze else out


def robust_std(values: np.ndarray, axis=-1) -> np.ndarray:
    """1.4826 x median absolute deviation (the std of a Gaussian), ignoring NaN."""
    med = np.nanmedian(values, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(values - med), axis=axis)


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
                            pedestal: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Relative gain per pixel and gain channel from pedestal-subtracted flat-field charges.

    ``charge``: (n_events, n_gains, n_pixels).  If ``pedestal`` (n_gains, n_pixels) is
    given, the charges are raw and the pedestal is subtracted on the fly (no copy).

    Returns a dict of arrays of shape (n_gains, n_pixels): ``relative_gain_mean``,
    ``relative_gain_median``, ``relative_gain_std``, ``relative_gain_err`` (= std/sqrt(n)),
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
        out["relative_gain_err"] = stats["std"] / np.sqrt(stats["n_used"])
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
            "relative_gain_err": "statistical uncertainty of relative_gain_mean (std/sqrt(n))",
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
    from calib.camera.chain import read_charge_sample

    config = dict(config or {})
    data = read_charge_sample(Path(input))
    pedestal = data["pedestal_charge"].mean(axis=0, dtype=np.float64)
    res = flatfield_relative_gain(
        data["flatfield_charge"], pedestal=pedestal, saturated=data["flatfield_saturated"],
        clip_sigma=config.get("clip_sigma", 4.0),
        clip_iterations=config.get("clip_iterations", 5),
        median_range=tuple(config.get("median_range", (-0.3, 0.3))),
        std_range=tuple(config.get("std_range", (-5.0, 5.0))))
    meta = provenance(__name__, VERSION, [Path(input)], config)
    meta["method"] = "flasher flat-field: per-event charge / camera median, sigma-clipped over events"
    t = flatfield_table(res, meta)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    t.write(output, overwrite=True, **({"format": "ascii.ecsv"} if output.suffix == ".ecsv" else {}))
    return t


def check(result: Table, input: Path) -> Evidence:
    """Relative gains vs the simulated response (relative_qe x ADC gain), within errors."""
    from calib.camera.chain import read_charge_sample

    data = read_charge_sample(Path(input))
    cam = data["camera"]
    good = ~(np.asarray(cam.dead) | np.asarray(cam.noisy))
    truth = _response_truth(cam)[0]
    meas = np.asarray(result["relative_gain_mean"])[:, 0]
    err = np.asarray(result["relative_gain_err"])[:, 0]
    # the normalisation is the camera median: compare shapes after matching medians
    ratio = meas[good] / truth[good]
    scale = np.median(ratio)
    pull = (meas[good] / scale - truth[good]) / err[good]
    n = good.sum()
    pull_std = float(np.std(pull))
    band = 4.0 / np.sqrt(2 * (n - 1))
    flagged = np.asarray(result["outlier_mask"])[:, 0]
    dead = np.asarray(cam.dead)
    metrics = {"pull_std": pull_std, "pull_mean": float(np.mean(pull)),
               "normalisation_offset": float(scale - 1), "n_pixels": int(n),
               "dead_flagged": int((flagged & dead).sum()), "n_dead": int(dead.sum())}
    criteria = {
        "pull_std": f"|pull std - 1| < {band:.3f} (4 sigma of a std from {n} pixels)",
        "pull_mean": f"|pull mean| < {4 / np.sqrt(n):.3f} (4 sigma)",
        "normalisation_offset": "|median(measured / truth) - 1| < 0.01",
        "dead_flagged": "every dead pixel is a flat-field outlier",
    }
    passed = (abs(pull_std - 1) < band and abs(metrics["pull_mean"]) < 4 / np.sqrt(n)
              and abs(scale - 1) < 0.01 and metrics["dead_flagged"] == metrics["n_dead"])
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria,
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
    tests=("calib/camera/tests/test_flatfield.py",),
    version=VERSION,
)
