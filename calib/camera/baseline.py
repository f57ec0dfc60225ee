"""Dark baseline (I-DATA-xST-0102): per-pixel and per-sample baseline from dark runs.

Method: on dark runs (no light, camera closed), the baseline of every gain channel, pixel
and readout sample is the mean of the R1 samples over events, with its standard
deviation (the electronic noise per sample).  Statistics are streamed over chunks of
events with the pairwise (Chan, Golub & LeVeque 1979) form of Welford's online update,
so a long run never needs to be in memory.  A robust per-pixel estimate is accumulated
alongside: the mean and standard deviation of the samples within ``clip`` (default 4)
robust standard deviations (1.4826 MAD) of the median of the first chunk, corrected for
the truncation of a Gaussian at +-clip sigma (the first chunk's median is reported too).  This follows the per-sample pedestal of
nectarchain and the DRS4 baseline of lstchain (per pixel and sample/capacitor mean over a
dedicated run); NectarCAM's quality flags are used: fewer than ``min_events`` (100)
events, NaN or saturated samples (excluded and counted), baseline outside
[``mean_range``], per-sample noise below ``min_std`` (0.5 adc), std over samples of the
per-sample mean above ``max_sample_spread`` (4 adc).

Flags (bit mask per pixel and gain): 1 too few events, 2 NaN samples, 4 saturated
samples, 8 baseline out of range, 16 noise too low (dead channel), 32 per-sample baseline
spread too large, 64 noise outlier (> ``noisy_factor`` x camera median).
"""
from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy import special

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["BaselineAccumulator", "dark_baseline", "FLAGS", "clipped_gaussian_std_factor", "CONTRACT"]

FLAGS = {
    "too_few_events": 1,
    "nan_samples": 2,
    "saturated_samples": 4,
    "baseline_out_of_range": 8,
    "noise_too_low": 16,
    "sample_spread_too_large": 32,
    "noisy": 64,
}


def clipped_gaussian_std_factor(k: float) -> float:
    """std of a Gaussian truncated at +-k sigma divided by sigma."""
    phi = np.exp(-0.5 * k * k) / np.sqrt(2 * np.pi)
    mass = special.erf(k / np.sqrt(2))
    return float(np.sqrt(1 - 2 * k * phi / mass))


class BaselineAccumulator:
    """Streaming per-(gain, pixel, sample) baseline statistics of dark-run waveforms.

    ``update(chunk)`` with chunk (n_events, n_gains, n_pixels, n_samples) [adc, raw R1];
    ``result()`` returns the per-pixel table.
    """

    def __init__(self, n_gains: int, n_pixels: int, n_samples: int, *, clip: float = 4.0,
                 saturation_adc: float | None = None):
        self.shape = (n_gains, n_pixels, n_samples)
        self.clip = float(clip)
        self.saturation_adc = saturation_adc
        self.n_events = 0
        self.count = np.zeros(self.shape, np.int64)
        self.mean = np.zeros(self.shape)
        self.m2 = np.zeros(self.shape)
        self.n_nan = np.zeros(self.shape[:2], np.int64)
        self.n_saturated = np.zeros(self.shape[:2], np.int64)
        self.ref_center = None
        self.ref_width = None
        self.c_n = np.zeros(self.shape[:2], np.int64)
        self.c_sum = np.zeros(self.shape[:2])
        self.c_sum2 = np.zeros(self.shape[:2])

    def update(self, waveforms) -> None:
        wf = np.asarray(waveforms)
        if wf.ndim != 4 or wf.shape[1:] != self.shape:
            raise CalibrationError(
                f"dark waveforms must be (n_events, {self.shape[0]} gains, {self.shape[1]} pixels, "
                f"{self.shape[2]} samples), got {wf.shape}"
                + ("; a gain channel is missing" if wf.ndim == 4 and wf.shape[1] != self.shape[0] else ""))
        if wf.shape[0] == 0:
            return
        wf = wf.astype(np.float64)
        bad = np.isnan(wf)
        self.n_nan += bad.sum(axis=(0, 3))
        if self.saturation_adc is not None:
            sat = (wf >= self.saturation_adc) | (wf <= 0)
            self.n_saturated += sat.sum(axis=(0, 3))
            bad |= sat
        x = np.where(bad, 0.0, wf)
        good = ~bad
        # chunk statistics, merged pairwise (Chan et al.)
        n_b = good.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, x.sum(axis=0) / n_b, 0.0)
        m2_b = (np.where(good, x - mean_b, 0.0) ** 2).sum(axis=0)
        n_a = self.count
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean_b - self.mean
            self.mean = np.where(n > 0, self.mean + delta * n_b / np.maximum(n, 1), 0.0)
            self.m2 = self.m2 + m2_b + delta**2 * n_a * n_b / np.maximum(n, 1)
        self.count = n
        self.n_events += wf.shape[0]
        # robust per-pixel statistics: clip around the first chunk's median / MAD
        if self.ref_center is None:
            vals = np.where(bad, np.nan, wf)
            vals = np.moveaxis(vals, 0, 2).reshape(self.shape[0], self.shape[1], -1)
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    med = np.nanmedian(vals, axis=-1)
                    mad = np.nanmedian(np.abs(vals - med[..., None]), axis=-1)
            self.ref_center = med
            self.ref_width = 1.4826 * mad
        lo = (self.ref_center - self.clip * self.ref_width)[None, :, :, None]
        hi = (self.ref_center + self.clip * self.ref_width)[None, :, :, None]
        inside = good & (wf >= lo) & (wf <= hi)
        xin = np.where(inside, wf, 0.0)
        self.c_n += inside.sum(axis=(0, 3))
        self.c_sum += xin.sum(axis=(0, 3))
        self.c_sum2 += (xin**2).sum(axis=(0, 3))

    def result(self, *, min_events: int = 100, mean_range=(-np.inf, np.inf), min_std: float = 0.5,
               max_sample_spread: float = 4.0, noisy_factor: float = 2.0) -> Table:
        if self.n_events == 0:
            raise CalibrationError("no dark events were given: the baseline cannot be computed")
        n_g, n_pix, n_s = self.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            per_sample_std = np.sqrt(self.m2 / (self.count - 1))
            n_pix_vals = self.count.sum(-1)
            pix_mean = (self.mean * self.count).sum(-1) / n_pix_vals
            # pooled variance over samples (within-sample), per pixel
            pix_std = np.sqrt(self.m2.sum(-1) / (n_pix_vals - n_s))
            c_mean = self.c_sum / self.c_n
            c_var = self.c_sum2 / self.c_n - c_mean**2
            c_std = np.sqrt(np.clip(c_var, 0, None) * self.c_n / np.maximum(self.c_n - 1, 1))
            c_std = c_std / clipped_gaussian_std_factor(self.clip)
            spread = np.nanstd(np.where(self.count > 0, self.mean, np.nan), axis=-1)
        flags = np.zeros((n_g, n_pix), np.int32)
        if self.n_events < min_events:
            flags |= FLAGS["too_few_events"]
        flags |= np.where(self.n_nan > 0, FLAGS["nan_samples"], 0).astype(np.int32)
        flags |= np.where(self.n_saturated > 0, FLAGS["saturated_samples"], 0).astype(np.int32)
        flags |= np.where((c_mean < mean_range[0]) | (c_mean > mean_range[1]) | ~np.isfinite(c_mean),
                          FLAGS["baseline_out_of_range"], 0).astype(np.int32)
        flags |= np.where(~(pix_std >= min_std), FLAGS["noise_too_low"], 0).astype(np.int32)
        flags |= np.where(spread > max_sample_spread, FLAGS["sample_spread_too_large"], 0).astype(np.int32)
        med_std = np.nanmedian(c_std, axis=1, keepdims=True)
        flags |= np.where(c_std > noisy_factor * med_std, FLAGS["noisy"], 0).astype(np.int32)

        t = Table()
        t["pixel_id"] = np.arange(n_pix)
        names = ("high", "low") if n_g == 2 else ("single",)
        for g, name in enumerate(names):
            t[f"baseline_{name}"] = c_mean[g] * u.adc
            t[f"baseline_std_{name}"] = c_std[g] * u.adc
            t[f"baseline_median_{name}"] = self.ref_center[g] * u.adc  # first chunk
            t[f"baseline_mean_{name}"] = pix_mean[g] * u.adc
            t[f"baseline_pooled_std_{name}"] = pix_std[g] * u.adc
            t[f"baseline_per_sample_{name}"] = self.mean[g] * u.adc
            t[f"baseline_per_sample_std_{name}"] = per_sample_std[g] * u.adc
            t[f"n_values_{name}"] = self.c_n[g]
            t[f"n_nan_{name}"] = self.n_nan[g]
            t[f"n_saturated_{name}"] = self.n_saturated[g]
            t[f"flags_{name}"] = flags[g]
        t.meta["n_events"] = int(self.n_events)
        t.meta["clip_sigma"] = self.clip
        t.meta["flag_bits"] = ", ".join(f"{v}={k}" for k, v in FLAGS.items())
        return t


def dark_baseline(waveforms, *, clip: float = 4.0, saturation_adc: float | None = None,
                  **result_kw) -> Table:
    """Per-pixel baseline table of dark waveforms (n_events, n_gains, n_pixels, n_samples)."""
    wf = np.asarray(waveforms)
    if wf.ndim != 4:
        raise CalibrationError(f"dark waveforms must be (n_events, n_gains, n_pixels, n_samples), got {wf.shape}")
    acc = BaselineAccumulator(*wf.shape[1:], clip=clip, saturation_adc=saturation_adc)
    acc.update(wf)
    return acc.result(**result_kw)


# ----------------------------------------------------------------------------- contract
_DEFAULT_CONFIG = {"clip": 4.0, "chunk_size": 100, "min_events": 100, "min_std": 0.5,
                   "max_sample_spread": 4.0, "noisy_factor": 2.0}


def write_sample(directory: Path, seed: int = 0) -> Path:
    """A dark run of the tiny camera (300 events) with its truth."""
    from calib.camera.io import write_run
    from calib.camera.simulation import make_camera, simulate_waveforms

    cam = make_camera("tiny", seed=seed)
    run_ = simulate_waveforms(cam, "dark", 300, seed + 2)
    return write_run(Path(directory) / "baseline_dark.h5", run_)


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Stream the dark run in chunks of events and write the baseline table."""
    from calib.camera.io import read_measured, read_readout

    cfg = {**_DEFAULT_CONFIG, **(config or {})}
    cam = read_readout(input)  # readout description only: no truth is read
    acc = BaselineAccumulator(cam.n_gains, cam.n_pixels, cam.n_samples, clip=cfg["clip"],
                              saturation_adc=cam.saturation_adc)
    start = 0
    while True:
        part = read_measured(input, events=slice(start, start + int(cfg["chunk_size"])))
        if part.waveforms is None:
            raise CalibrationError(f"{input} holds no waveforms: a dark baseline needs R1 waveforms")
        if part.n_events == 0:
            break
        acc.update(part.waveforms)
        start += part.n_events
    t = acc.result(min_events=cfg["min_events"], min_std=cfg["min_std"],
                   max_sample_spread=cfg["max_sample_spread"], noisy_factor=cfg["noisy_factor"])
    t.meta.update(provenance(__name__, CONTRACT.version, [Path(input)], cfg))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    """Pulls of the baseline and noise against the truth, in units of their statistical errors."""
    from calib._stats import pull_rms_bounds
    from calib.camera.io import read_run

    sim = read_run(input)
    cam = sim.camera
    names = ("high", "low") if cam.n_gains == 2 else ("single",)
    metrics, criteria, pulls, passed = {}, {}, {}, True
    for g, name in enumerate(names):
        n = np.asarray(result[f"n_values_{name}"], float)
        # the error bars scale with the number of samples the result claims to have used:
        # bound it by the input (finite, unsaturated samples; a 4-sigma clip keeps > 99 %)
        wf = sim.waveforms[:, g]
        n_input = (np.isfinite(wf) & (wf < cam.saturation_adc)).sum(axis=(0, 2)).astype(float)
        bad_n = int(np.sum((n > n_input) | (n < 0.99 * n_input)))
        metrics[f"n_values_outside_input_{name}"] = bad_n
        criteria[f"n_values_outside_input_{name}"] = ("== 0 (samples used between 99 % and 100 % "
                                                      "of the usable input samples)")
        passed &= bad_n == 0
        sig = cam.electronic_noise[g].to_value(u.adc)
        pull_b = (np.asarray(result[f"baseline_{name}"], float) - cam.baseline[g].to_value(u.adc)) / (sig / np.sqrt(n))
        pull_s = (np.asarray(result[f"baseline_std_{name}"], float) - sig) / (sig / np.sqrt(2 * n))
        n_pix = len(pull_b)
        for key, pull in (("baseline", pull_b), ("noise", pull_s)):
            rms = float(np.sqrt(np.mean(pull**2)))
            metrics[f"{key}_pull_mean_{name}"] = float(np.mean(pull))
            metrics[f"{key}_pull_rms_{name}"] = rms
            metrics[f"{key}_pull_max_{name}"] = float(np.max(np.abs(pull)))
            lo, hi = pull_rms_bounds(n_pix)
            pulls[f"{key}_mean_z_{name}"] = float(np.mean(pull) * np.sqrt(n_pix))
            pulls[f"{key}_chi2_z_{name}"] = float((np.sum(pull**2) - n_pix) / np.sqrt(2 * n_pix))
            criteria[f"{key}_pull_rms_{name}"] = (f"rms of (estimate - truth) / (statistical error) "
                                                  f"within [{lo:.2f}, {hi:.2f}] (chi² of {n_pix} "
                                                  "pixels, p = 1e-4 each side)")
            criteria[f"{key}_pull_mean_{name}"] = "|mean pull| < 4 / sqrt(n_pixels)"
            passed &= lo < rms < hi and abs(np.mean(pull)) < 4 / np.sqrt(n_pix)
    flagged_noisy = (np.asarray(result[f"flags_{names[0]}"]) & FLAGS["noisy"]) > 0
    metrics["noisy_pixels_found"] = int(np.sum(flagged_noisy & cam.noisy))
    metrics["noisy_pixels_true"] = int(np.sum(cam.noisy))
    metrics["noisy_false_positives"] = int(np.sum(flagged_noisy & ~cam.noisy))
    criteria["noisy_pixels_found"] = "every simulated noisy pixel is flagged, no other pixel"
    passed &= metrics["noisy_pixels_found"] == metrics["noisy_pixels_true"] and metrics["noisy_false_positives"] == 0
    # designed false-fail rate: per gain and quantity 2e-4 (chi-square band) + 6.3e-5 (4-sigma
    # mean); the event count and the noisy-pixel flags are exact requirements
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=len(names) * 2 * (2e-4 + 6.3e-5),
                    summary="dark baseline and noise per pixel agree with the truth within std/sqrt(N)")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0102",),
    title="Dark baseline per pixel and sample",
    inputs=(Port("waveforms", "adc", "dark-run R1 waveforms (n_events, n_gains, n_pixels, n_samples)"),),
    outputs=(Port("baseline", "adc", "per-pixel baseline per sample (sigma-clipped mean)"),
             Port("baseline_std", "adc", "per-pixel electronic noise per sample"),
             Port("baseline_per_sample", "adc", "baseline of every readout sample"),
             Port("flags", "", "bit mask of quality flags per pixel and gain")),
    sample=write_sample,
    run=run,
    check=check,
    references=("Chan, Golub & LeVeque 1979, Am. Stat. 37, 242 (pairwise variance)",
                "nectarchain pedestal component; lstchain DRS4 baseline"),
    tests=("calib/camera/tests/test_baseline.py",),
    config={
        "clip": "sigma-clipping threshold of the baseline samples (default 4)",
        "chunk_size": "events read at a time (default 100)",
        "min_events": "fewest dark events per pixel (default 100)",
        "min_std": "lowest plausible baseline noise, adc (default 0.5): below it a pixel is flagged dead",
        "max_sample_spread": "largest spread of the per-sample baselines, in noise units (default 4)",
        "noisy_factor": "noise above this factor times the camera median flags a noisy pixel (default 2)",
    },
)
