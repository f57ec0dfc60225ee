"""Timing flat-fielding: per-pixel time offset relative to the camera, from flasher runs.

Method (I-DATA-xST-0111), as in cta-lstchain's flat-field time calibration
(``FlasherFlatFieldCalculator``: ``relative_time_median``, ``time_correction = -that``):

1. Peak times: the local-peak centroid of every pixel (I-DATA-xST-0101) is turned into the
   time of the pulse maximum by inverting the centroid-versus-phase relation of the
   reference pulse (``calib.camera.extraction.peak_time_at_maximum``).  The centroid alone
   is biased towards the window centre by a saw-tooth of the sub-sample phase (LST high
   gain: 0.24 ns peak to peak); with a flasher jitter well below a sample the phase of a
   pixel hardly changes from event to event, so that bias is a per-pixel systematic error
   (it made the residuals 2.2x the statistical errors).
2. Per flat-field event *j* and gain channel, the relative arrival time of pixel *i* is its
   peak time minus an event reference: first the camera median peak time of the event,
   ``dt_ij = t_ij - median_i(t_ij)`` (it removes the trigger jitter); then, once the offsets
   o_i are known, the camera median of ``t_ij - o_i``, whose noise (~1.25 sigma /
   sqrt(n_pixels)) no longer contains the pixel-to-pixel spread of the offsets.
   Per pixel, the time offset is the sigma-clipped mean of ``dt_ij`` over events, with the
   statistical uncertainty ``std / sqrt(n)``.  (lstchain takes the median; the median's
   error ``sqrt(pi/2) std / sqrt(n)`` holds only for Gaussian times, which the peak times
   near the saw-tooth jump are not: the mean's error holds for any distribution.)
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

VERSION = "0.2.0"
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
    arrays (n_gains, n_pixels): ``time_shift`` (sigma-clipped mean offset), ``time_shift_err``,
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
    # second pass: the event reference is the camera median of the offset-corrected times,
    # whose noise (~1.25 sigma / sqrt(n_pixels)) no longer contains the spread of the offsets
    ref = event_median(peak_time, exclude, offset=st["mean"])
    st = sigma_clipped_pixel_stats(peak_time, clip_sigma, clip_iterations, event_shift=ref)
    shift = st["mean"]
    with np.errstate(invalid="ignore", divide="ignore"):
        err = st["std"] / np.sqrt(st["n_used"])
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
        ("time_shift", "mean time of the pulse maximum relative to the camera; subtract from "
                       "peak times"),
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
    from calib.camera.extraction import peak_time_at_maximum

    config = dict(config or {})
    data = read_waveform_data(Path(input))  # measured waveforms + readout only, no truth
    baseline = baseline_from_pedestal(data["pedestal"].waveforms)  # R1 baseline incl. NSB
    # the extraction takes its own keys; the offset keys are this module's
    extraction_config = {k: v for k, v in config.items()
                         if k not in ("clip_sigma", "max_offset", "std_cut")}
    ext = extract_run(data["flatfield"], data["camera"], extraction_config, baseline=baseline)
    # the centroid's sub-sample phase bias is a per-pixel systematic: time the pulse maximum
    cam = data["camera"]
    peak_time = peak_time_at_maximum(ext["peak_time"], cam.pulse_template, cam.pulse_time_step,
                                     cam.sampling_rate, config.get("width", 7),
                                     config.get("shift", 3))
    res = time_offsets(peak_time, clip_sigma=config.get("clip_sigma", 4.0),
                       max_offset=config.get("max_offset", 5.0),
                       std_cut=config.get("std_cut", 5.0))
    meta = provenance(__name__, VERSION, [Path(input)], config)
    meta["method"] = ("flasher timing flat-field: mean over events of the pulse-maximum time "
                      "(phase-corrected centroid) - camera reference")
    t = timing_table(res, meta)
    write_table(t, Path(output))
    return t


def check(result: Table, input: Path) -> Evidence:
    """Recovered time offsets vs the simulated ``time_offset`` within their errors.

    Per gain channel, the pulls (offset - truth, camera median removed) / time_shift_err of
    the live pixels: their rms within the chi-square band of n pixels (p = 1e-4 each side,
    2e-4 per gain), the rms residual below 0.05 ns (a physics requirement, ~5x the
    statistical error: no chance failure), every dead pixel a timing outlier.  Designed
    false-fail rate 4e-4 (two gains).  Pulls for the ensemble: the chi-square of the pixel
    pulls as a z-score (chi2 - n) / sqrt(2n), and the pull of the first live pixel.
    """
    from calib._stats import pull_rms_bounds
    from calib.camera.chain import read_waveform_sample

    data = read_waveform_sample(Path(input))
    cam = data["camera"]
    truth = u.Quantity(cam.time_offset, u.ns).value
    good = ~(np.asarray(cam.dead) | np.asarray(cam.noisy))
    dead = np.asarray(cam.dead)
    n = int(good.sum())
    lo, hi = pull_rms_bounds(n)
    metrics, criteria, pulls, passed = {"n_pixels": n, "n_dead": int(dead.sum())}, {}, {}, True
    meas_all = u.Quantity(result["time_shift"]).to_value(u.ns)
    err_all = u.Quantity(result["time_shift_err"]).to_value(u.ns)
    names = ("high", "low") if meas_all.shape[1] == 2 else ("single",)
    for g, name in enumerate(names):
        meas, err = meas_all[:, g], err_all[:, g]
        # offsets are relative to the camera: remove the common term before comparing
        diff = meas[good] - truth[good]
        diff = diff - np.median(diff)
        pull = diff / err[good]
        rms = float(np.sqrt(np.mean(diff**2)))
        pull_rms = float(np.sqrt(np.mean(pull**2)))
        flagged = np.asarray(result["outlier_mask"])[:, g]
        metrics[f"rms_residual_ns_{name}"] = rms
        metrics[f"stat_error_rms_ns_{name}"] = float(np.sqrt(np.mean(err[good] ** 2)))
        metrics[f"pull_rms_{name}"] = pull_rms
        metrics[f"dead_flagged_{name}"] = int((flagged & dead).sum())
        criteria[f"rms_residual_ns_{name}"] = (f"< 0.05 ns (truth spread {np.std(truth):.2f} ns)")
        criteria[f"pull_rms_{name}"] = (f"within [{lo:.2f}, {hi:.2f}] (chi-square of {n} pixel "
                                        "pulls, p = 1e-4 each side)")
        criteria[f"dead_flagged_{name}"] = "every dead pixel is a timing outlier"
        pulls[f"time_offset_chi2_z_{name}"] = float((np.sum(pull**2) - n) / np.sqrt(2 * n))
        pulls[f"time_offset_first_pixel_{name}"] = float(pull[0])
        passed &= (rms < 0.05 and lo < pull_rms < hi
                   and metrics[f"dead_flagged_{name}"] == metrics["n_dead"])
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=2 * 2e-4,
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
    config={
        "width": "integration window, samples (default 7)",
        "shift": "window start before the peak, samples (default 3)",
        "phases": "sub-sample phases of the integration correction (default 1024)",
        "clip_sigma": "sigma-clipping threshold over events (default 4)",
        "max_offset": "largest time offset before a pixel is flagged, ns (default 5)",
        "std_cut": "time-spread outlier threshold, in sigma (default 5)",
    },
)
