"""Excluded (unusable) pixels from pedestal, flat-field, gain and timing outliers.

Method (I-DATA-xST-0112): the outlier tests of the individual calibrations are combined
per pixel into a bit mask of reasons, as ctapipe's ``PixelStatus`` / outlier detectors and
lstchain's ``unusable_pixels`` do.  A pixel is excluded when any bit is set in any gain
channel.  The calibration of a camera is declared invalid (``is_valid = False``) when the
fraction of excluded pixels reaches ``max_faulty_fraction`` (10 %, as ctapipe's outlier
detectors declare a chunk invalid).  Downstream, excluded pixels are interpolated from
valid neighbours (not done here).

Bits of ``exclusion_bits`` (class ``ExclusionReason``):

====  ==================  ==============================================================
bit   name                reason
====  ==================  ==============================================================
1     PEDESTAL_MEDIAN     pedestal median outside the camera median +- k std of medians
2     PEDESTAL_STD        pedestal std (NSB + electronic noise) outlier: noisy or dead
4     FLATFIELD_MEDIAN    relative gain median outside [-0.3, +0.3] of the camera median
8     FLATFIELD_STD       relative gain spread outlier
16    GAIN                F-factor invalid (no signal, no excess variance) or n_pe outlier
32    TIME                time offset or peak-time spread outlier
64    NON_FINITE          NaN / inf in the input charges or times
128   SATURATED           saturated flat-field events
====  ==================  ==============================================================

Output: astropy Table, one row per pixel: ``exclusion_bits`` (union over gains),
``outlier_mask`` (n_pixels, n_gains) and ``excluded`` (any gain); ``is_valid``,
``n_excluded`` and ``faulty_fraction`` in the table meta, with the bit meanings.
"""
from __future__ import annotations

import enum
import json
from pathlib import Path

import numpy as np
from astropy.table import Table

from calib.camera.chain import CHAIN_CONFIG
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["ExclusionReason", "exclusion_bits", "excluded_pixels_table", "CONTRACT"]

VERSION = "0.2.0"
MAX_FAULTY_FRACTION = 0.10


class ExclusionReason(enum.IntFlag):
    """Bits of ``exclusion_bits``; 0 = usable pixel."""

    PEDESTAL_MEDIAN = 1
    PEDESTAL_STD = 2
    FLATFIELD_MEDIAN = 4
    FLATFIELD_STD = 8
    GAIN = 16
    TIME = 32
    NON_FINITE = 64
    SATURATED = 128


def describe_bits() -> dict[str, str]:
    """Bit value -> name, for table metadata and documents."""
    return {str(int(b)): b.name for b in ExclusionReason}


def exclusion_bits(n_pixels: int, n_gains: int = 1, **masks) -> np.ndarray:
    """Combine boolean outlier masks into reason bits of shape (n_gains, n_pixels).

    Keyword names are the lower-case ``ExclusionReason`` names (``pedestal_median=...``,
    ``time=...``); each mask is (n_pixels,) (applies to every gain) or (n_gains, n_pixels).
    None masks are skipped.  A mask of the wrong size raises CalibrationError.
    """
    bits = np.zeros((n_gains, n_pixels), dtype=np.uint16)
    for name, mask in masks.items():
        if mask is None:
            continue
        try:
            reason = ExclusionReason[name.upper()]
        except KeyError:
            raise CalibrationError(f"unknown exclusion reason {name!r}; known: "
                                   + ", ".join(r.name.lower() for r in ExclusionReason)) from None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape not in ((n_pixels,), (n_gains, n_pixels), (1, n_pixels)):
            raise CalibrationError(
                f"the {name} outlier mask has shape {mask.shape}; expected ({n_pixels},) or "
                f"({n_gains}, {n_pixels})")
        bits |= np.where(np.broadcast_to(mask, bits.shape), np.uint16(reason), np.uint16(0))
    return bits


def excluded_pixels_table(bits: np.ndarray, *, max_faulty_fraction: float = MAX_FAULTY_FRACTION,
                          meta: dict | None = None) -> Table:
    """Per-pixel Table of exclusion reasons, with camera validity in meta."""
    bits = np.atleast_2d(np.asarray(bits, dtype=np.uint16))
    n_gains, n_pixels = bits.shape
    union = np.bitwise_or.reduce(bits, axis=0)
    excluded = union != 0
    frac = float(excluded.mean())
    t = Table()
    t["pixel_id"] = np.arange(n_pixels)
    t["exclusion_bits"] = union
    t["exclusion_bits"].description = "ExclusionReason bits, union over gains: " + json.dumps(
        describe_bits())
    t["outlier_mask"] = (bits != 0).T
    t["outlier_mask"].description = "pixel unusable in that gain channel"
    t["excluded"] = excluded
    t.meta.update(meta or {})
    t.meta.update({
        "n_excluded": int(excluded.sum()),
        "faulty_fraction": frac,
        "max_faulty_fraction": float(max_faulty_fraction),
        "is_valid": bool(frac < max_faulty_fraction),
        "exclusion_bits": json.dumps(describe_bits()),
    })
    return t


def reasons_of(bits: int) -> list[str]:
    """Names of the reasons set in one pixel's bits."""
    return [r.name for r in ExclusionReason if int(bits) & int(r)]


# ---------------------------------------------------------------------------------------
# CONTRACT: the whole chain on simulated waveforms with dead and noisy pixels
# ---------------------------------------------------------------------------------------
def write_sample(directory: Path, seed: int = 0) -> Path:
    """Simulated pedestal + flat-field waveforms (HDF5) of a camera with dead/noisy pixels."""
    from calib.camera.chain import write_waveform_sample

    return write_waveform_sample(Path(directory), seed, "excluded_sample.h5", upstream_enf=True)


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Run the pedestal + flat-field + F-factor + timing chain and combine the outliers."""
    from calib.camera.chain import calibrate_sample_file

    config = dict(config or {})
    res = calibrate_sample_file(Path(input), config)  # measured data + upstream F² only
    meta = provenance(__name__, VERSION, [Path(input)], config)
    meta["upstream_inputs"] = json.dumps(res["upstream_inputs"])
    meta["method"] = "union of pedestal, flat-field, F-factor and timing outlier tests"
    t = excluded_pixels_table(res["exclusion_bits"],
                              max_faulty_fraction=config.get("max_faulty_fraction",
                                                             MAX_FAULTY_FRACTION), meta=meta)
    write_table(t, Path(output))
    return t


def check(result: Table, input: Path) -> Evidence:
    """Excluded pixels must be exactly the simulated dead and noisy pixels, and the pixels
    whose TRUE response (relative_qe x ADC gain) lies outside the flat-field median range
    (+-30 % of the camera median, lstchain's rule): those are excluded by design.

    A classification, no estimator with an error: no pulls.  Designed false-fail rate 6e-3:
    a pixel whose true response lies within the error of the measured median relative gain
    (0.8 %) of the +-30 % boundary lands on either side: with 0.9 true responses per unit
    deviation near +-0.3 per camera (400 simulated cameras), 0.9 x 2 x 0.008 x 0.4 = 5e-3;
    plus the Gaussian tails of the 5-sigma (robust) pedestal, flat-field-spread and timing
    cuts over 64 pixels x 2 gains (~6e-4).  (12 of 400 cameras have a true response outlier,
    which the former check, dead + noisy only, counted as a false positive.)
    """
    from calib.camera.chain import DEFAULT_CONFIG, read_waveform_sample
    from calib.camera.flatfield import _response_truth

    cam = read_waveform_sample(Path(input))["camera"]
    cfg = json.loads(result.meta.get("config", "{}"))
    lo, hi = cfg.get("flatfield_median_range", DEFAULT_CONFIG["flatfield_median_range"])
    bad = np.asarray(cam.dead, dtype=bool) | np.asarray(cam.noisy, dtype=bool)
    dev = _response_truth(cam) - 1.0  # (n_gains, n_pixels), camera median 1 over good pixels
    response_outlier = ((dev < lo) | (dev > hi)).any(axis=0) & ~bad
    truth = bad | response_outlier
    got = np.asarray(result["excluded"], dtype=bool)
    missed = int((truth & ~got).sum())
    extra = int((got & ~truth).sum())
    metrics = {"n_true_bad": int(bad.sum()), "n_true_response_outliers": int(response_outlier.sum()),
               "n_excluded": int(got.sum()), "missed": missed, "false_positives": extra,
               "is_valid": str(result.meta.get("is_valid"))}
    criteria = {"missed": "== 0 (every dead, noisy or true response-outlier pixel excluded)",
                "false_positives": "== 0 (no other pixel excluded)"}
    passed = missed == 0 and extra == 0
    return Evidence(passed=passed, metrics=metrics, criteria=criteria, pulls={},
                    false_fail_rate=6e-3,
                    summary="excluded pixels are exactly the simulated dead, noisy and response-"
                            "outlier ones" if passed
                    else f"{missed} bad pixels missed, {extra} good pixels excluded")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0112",),
    title="Excluded pixels: pedestal, flat-field, gain and timing outliers with reasons",
    inputs=(
        Port("pedestal_outliers", "", "pedestal median / std outlier masks"),
        Port("flatfield_outliers", "", "relative-gain median / std outlier masks"),
        Port("gain_outliers", "", "F-factor flags and n_pe outliers"),
        Port("time_outliers", "", "time offset / spread outliers"),
    ),
    outputs=(
        Port("exclusion_bits", "", "reason bits per pixel (ExclusionReason)"),
        Port("outlier_mask", "", "unusable per pixel and gain channel"),
        Port("is_valid", "", "False when >= 10 % of the pixels are excluded"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=(
        "ctapipe: monitoring outlier detectors and PixelStatus bits",
        "cta-lstchain 0.12: unusable_pixels in calibration_calculator.py",
    ),
    tests=("calib/camera/tests/test_excluded.py",),
    version=VERSION,
    config=CHAIN_CONFIG,  # the chain's keys: this module runs it
)
