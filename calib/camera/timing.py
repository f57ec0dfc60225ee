"""Timing flat-fielding: per-pixel time offset relative to the camera, from flasher runs.

Method (I-DATA-xST-0111), as in cta-lstchain's flat-field time calibration
(``FlasherFlatFieldCalculator``: ``relative_time_median``, ``time_correction = -that``):

1. Per flat-field event *j* and gain channel, the relative arrival time of pixel *i* is its
   peak time minus the camera median peak time of that event,
   ``dt_ij = t_ij - median_i(t_ij)``; the event-wise reference removes the trigger jitter.
2. Per pixel, the time offset is the median of ``dt_ij`` over events.  Its statistical
   uncertainty is ``sqrt(pi/2) * std / sqrt(n)`` (the efficiency of the median for a Gaussian),
   with ``std`` the sigma-clipped standard deviation of ``dt_ij``.
3. ``time_shift`` = that offset, in ns.  This is ctapipe's convention: the calibrator
   *subtracts* ``time_shift`` from the peak time.  lstchain's ``time_correction`` (added to the
   peak time) is ``-time_shift``; both columns are written.
4. Outliers: an offset further than ``max_offset`` (default 5 ns) from the camera median, or a
   spread ``std`` above the camera median std by more than ``std_cut`` robust standard
   deviations (1.4826 MAD; default 5) and by more than ``std_min_excess`` (0.3 ns) -- e.g. a
   dead pixel whose "peak time" is noise.  One-sided: a narrow spread is no fault.

Output: an astropy Table, one row per pixel, columns of shape (n_pixels, n_gains), in ns.
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.camera.stats import event_median, robust_std, sigma_clipped_pixel_stats
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["relative_peak_time", "time_offsets", "timing_table", "CONTRACT"]

VERSION = "0.1.0"
DEFAULT_MIN_EVENTS = 20


def _as_event_gain_pixel(x, name):
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, np.newaxis, :]
    if x.ndim != 3:
        raise CalibrationError(
            f"{name} must have shape (n_events, n_gains, n_pixels) or (n_events, n_pixels); "
            f"got shape {x.shape}")
    return x


def relative_peak_time(peak_time: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Peak time minus the camera median peak time of the same event and gain channel."""
    peak_time = _as_event_gain_pixel(peak_time, "peak time")
    med = event_median(peak_time, exclude)
    return (peak_time - med[..., np.newaxis]).astype(np.float32)


def time_offsets(peak_time: np.ndarray, *, exclude: np.ndarray | None = None,
                 clip_sigma: float = 4.0, clip_iterations: int = 5,
                 max_offset: float = 5.0, std_cut: float = 5.0, std_min_excess: float = 0.3,
                 min_events: int = DEFAULT_MIN_EVENTS) -> dict[str, np.ndarray]:
    """Per-pixel time offsets from flat-field peak times (ns), with uncertainties and outliers.

    ``peak_time``: (n_events, n_gains, n_pixels) in ns (a Quantity is converted).  Returns
    arrays (n_gains, n_pixels): ``time_shift`` (median offset), ``time_shift_err``,
    ``time_correction`` (= -time_shift), ``relative_time_mean``, ``relative_time_std``,
    ``n_events``, ``offset_outlier``, ``std_outlier``, ``outlier_mask``.
    """
    if isinstance(peak_time, u.Quantity):
        peak_time = peak_time.to_value(u.ns)
    peak_time = _as_event_gain_pixel(peak_time, "peak time")
    n_events = peak_time.shape[0]
    if n_events < min_events:
        raise CalibrationError(f"the flat-field run has {n_events} events; the timing "
                               f"flat-field needs at least {min_events}")
    for g in range(peak_time.shape[1]):
        if not np.isfinite(peak_time[:, g]).any():
            raise CalibrationError(f"gain channel {g} has no finite peak time "
                                   "(missing gain channel?)")
    med = event_median(peak_time, exclude)  # camera median peak time per event and gain
    st = sigma_clipped_pixel_stats(peak_time, clip_sigma, clip_iterations, event_shift=med)
    shift = st["median"]
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(np.pi / 2) * st["std"] / np.sqrt(st["n_used"])
    masked = shift if exclude is None else np.where(np.broadcast_to(exclude, shift.shape),
                                                     np.nan, shift)
    cam = np.nanmedian(masked, axis=-1, keepdims=True)
    std = st["std"]
    std_med = np.nanmedian(std, axis=-1, keepdims=True)
    std_spread = robust_std(std, axis=-1)[..., np.newaxis]
    with np.errstate(invalid="ignore"):
        offset_outlier = ~(np.abs(shift - cam) <= max_offset)
        # one-sided: only a WIDER spread is a fault (a dead pixel's noise "peak times"); the
        # spread of good pixels depends on their light level and sub-sample phase, so the
        # excess must also exceed std_min_excess in absolute terms
        std_outlier = ~(std - std_med <= np.maximum(std_cut * std_spread, std_min_excess))
    return {
        "time_shift": shift,
        "time_shift_err": err,
        "time_correction": -shift,
        "relative_time_mean": st["mean"],
        "relative_time_std": std,
        "n_events": st["n_used"],
        "offset_outlier": offset_outlier,
        "std_outlier": std_outlier,
        "outlier_mask": offset_outlier | std_outlier,
    }


def timing_table(res: dict[str, np.ndarray], meta: dict | None = None) -> Table:
    """Per-pixel Table (columns (n_pixels, n_gains)) with units from :func:`time_offsets`."""
    n_pixels = res["time_shift"].shape[-1]
    t = Table()
    t["pixel_id"] = np.arange(n_pixels)
    spec = [
        ("time_shift", "median peak time relative to the camera median; subtract from peak times"),
        ("time_shift_err", "statistical uncertainty of time_shift"),
        ("time_correction", "lstchain convention: add to peak times (= -time_shift)"),
        ("relative_time_mean", "sigma-clipped mean relative peak time"),
        ("relative_time_std", "sigma-clipped std of the relative peak time over events"),
    ]
    for name, desc in spec:
        t[name] = u.Quantity(np.asarray(res[name], dtype=np.float64).T, u.ns)
        t[name].description = desc
    t["n_events"] = res["n_events"].T
    for name in ("offset_outlier", "std_outlier", "outlier_mask"):
        t[name] = res[name].T
    t["is_valid"] = ~res["outlier_mask"].T
    t.meta.update(meta or {})
    return t


# ---------------------------------------------------------------------------------------
# CONTRACT
# ---------------------------------------------------------------------------------------
def write_sample(directory: Path, seed: int = 0) -> Path:
    """Simulated LST flat-field waveforms' peak times (HDF5) with the camera truth inside."""
    from calib.camera.chain import write_waveform_sample

    return write_waveform_sample(Path(directory), seed, "timing_sample.h5")


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Time offsets from the flat-field events of a sample written by :func:`write_sample`."""
    from calib.camera.chain import baseline_from_pedestal, extract_run, read_waveform_data

    config = dict(config or {})
    data = read_waveform_data(Path(input))  # measured waveforms + readout only, no truth
    baseline = baseline_from_pedestal(data["pedestal"].waveforms)  # R1 baseline incl. NSB
    ext = extract_run(data["flatfield"], data["camera"], config, baseline=baseline)
    res = time_offsets(ext["peak_time"], clip_sigma=config.get("clip_sigma", 4.0),
                       max_offset=config.get("max_offset", 5.0),
                       std_cut=config.get("std_cut", 5.0))
    meta = provenance(__name__, VERSION, [Path(input)], config)
    meta["method"] = "flasher timing flat-field: median over events of peak time - camera median"
    t = timing_table(res, meta)
    write_table(t, Path(output))
    return t


def check(result: Table, input: Path) -> Evidence:
    """Recovered time offsets vs the simulated ``time_offset`` within their errors."""
    from calib.camera.chain import read_waveform_sample

    data = read_waveform_sample(Path(input))
    cam = data["camera"]
    truth = u.Quantity(cam.time_offset, u.ns).value
    good = ~(np.asarray(cam.dead) | np.asarray(cam.noisy))
    meas = u.Quantity(result["time_shift"]).to_value(u.ns)[:, 0]
    err = u.Quantity(result["time_shift_err"]).to_value(u.ns)[:, 0]
    # offsets are relative to the camera: remove the common term before comparing
    diff = meas[good] - truth[good]
    diff = diff - np.median(diff)
    pull = diff / err[good]
    n = good.sum()
    band = 4 / np.sqrt(2 * (n - 1))
    pull_std = float(np.std(pull))
    rms = float(np.sqrt(np.mean(diff**2)))
    dead = np.asarray(cam.dead)
    flagged = np.asarray(result["outlier_mask"])[:, 0]
    metrics = {"rms_residual_ns": rms, "pull_std": pull_std, "n_pixels": int(n),
               "median_error_ns": float(np.median(err[good])),
               "dead_flagged": int((flagged & dead).sum()), "n_dead": int(dead.sum())}
    # besides the statistical error, the centroid peak time of a sampled pulse carries a
    # sub-sample phase bias of a few 0.01 ns (I-DATA-xST-0101 systematic): allow 0.03 ns
    stat = float(np.sqrt(np.mean(err[good] ** 2)))
    metrics["stat_error_rms_ns"] = stat
    criteria = {"rms_residual_ns": f"< 0.05 ns (truth spread {np.std(truth):.2f} ns) and "
                                   "<= statistical error (quadrature) + 0.03 ns phase systematic",
                "pull_std": "informative (statistical errors only)",
                "dead_flagged": "every dead pixel is a timing outlier"}
    passed = (rms < 0.05 and rms <= np.hypot(stat, 0.03) * (1 + band)
              and metrics["dead_flagged"] == metrics["n_dead"])
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria,
                    summary="time offsets recover the simulated ones within their errors"
                    if passed else "time offsets do NOT match the simulated ones")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0111",),
    title="Timing flat-fielding: per-pixel time offsets from flasher runs",
    inputs=(Port("peak_time", "ns", "flat-field peak times, (n_events, n_gains, n_pixels)"),),
    outputs=(
        Port("time_shift", "ns", "per-pixel time offset relative to the camera (subtract)"),
        Port("time_shift_err", "ns", "statistical uncertainty of time_shift"),
        Port("time_correction", "ns", "lstchain convention, = -time_shift (add)"),
        Port("outlier_mask", "", "timing outlier (offset or spread)"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=(
        "cta-lstchain 0.12: lstchain/calib/camera/flatfield.py (relative_time_median)",
        "ctapipe CameraCalibrator: time_shift convention",
    ),
    tests=("calib/camera/tests/test_timing.py",),
    version=VERSION,
)
