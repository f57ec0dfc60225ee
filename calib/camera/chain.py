"""The camera calibration chain over calibration runs: pedestal + flat-field + F-factor.

Chain (cta-lstchain's calibration pipeline, ``LSTCalibrationCalculator``, reorganised into
pure functions): from the R1 waveforms of an interleaved pedestal run and a flasher
(flat-field) run,

1. waveform integration (I-DATA-xST-0101): the flat-field charges and peak times with a
   local-peak window (width 7, shift 3, ctapipe-like truncation at the readout edges,
   integration correction of ``calib.camera.extraction``); the pedestal charges with a
   fixed window of the same width placed where the flasher pulses are (the camera median
   peak sample of the flat-field run), so both runs integrate the same samples.  The
   baseline (mean of the first pedestal events, NSB offset included) is subtracted on the
   fly by the extractors of ``calib.camera.extraction`` (``baseline=``), which read each
   gain channel of the runs in place: one pass over the samples, no copy;
2. NSB pedestal (I-DATA-xST-0103): per-pixel pedestal window charge and its outliers;
   ``pedestal_offset`` = baseline + mean pedestal charge per (corrected) sample;
3. intensity flat-field (I-DATA-xST-0110, ``calib.camera.flatfield``);
4. timing flat-field (I-DATA-xST-0111, ``calib.camera.timing``);
5. F-factor ADC/p.e. (I-DATA-xST-0106, ``calib.camera.ffactor``) with the flat-field
   folded in: ``factor = median_camera(n_pe) / S``;
6. excluded pixels (I-DATA-xST-0112, ``calib.camera.excluded``): the union of all outliers.

The waveforms are read in place, so memory holds the per-event charges and times
(n_events x n_gains x n_pixels float32), never a copy of the waveforms.  Pedestal
statistics and outliers are those of ``calib.camera.pedestal`` (I-DATA-xST-0103: 4-sigma
clipped mean/median/std around the median; outliers beyond ``pedestal_outlier_k`` = 5
robust standard deviations, 1.4826 MAD, of the camera's medians or stds), computed, like
the flat-field and timing statistics, by the one compiled kernel of
``calib.camera.stats``.

Output: one astropy Table, one row per pixel, columns named as ctapipe's monitoring
tables where they match: ``factor`` [1/adc], ``pedestal_offset`` [adc per sample],
``time_shift`` [ns], ``outlier_mask``, ``is_valid``; plus the F-factor, flat-field and
timing details.  Provenance and the validity range (start/end time when given) in meta.

Upstream inputs of ``run()``: F² (I-DATA-xST-0107) from ``config["enf_sq"]`` or the sample's
``/upstream`` group (``calib.camera.enf`` on a small simulated single-p.e. run); the baseline
is measured from the pedestal run itself.  Nothing is read from the simulator truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
from astropy.table import Table

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "write_charge_sample",
    "read_charge_sample",
    "write_waveform_sample",
    "read_waveform_sample",
    "true_mean_npe",
    "extract_gains",
    "baseline_from_pedestal",
    "pedestal_statistics",
    "calibrate_runs",
    "calibrate_charges",
    "chain_table",
    "CONTRACT",
]

VERSION = "0.1.0"
ADC = u.Unit("adc")


# ---------------------------------------------------------------------------------------
# sample files: a flat-field run file with its pedestal run file beside it
# ---------------------------------------------------------------------------------------
def _write_pair(directory: Path, name: str, ff_run, ped_run, compression=None) -> Path:
    from calib.camera.io import write_run

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    ped_path = directory / f"{stem}_pedestal.h5"
    ff_path = directory / f"{stem}.h5"
    write_run(ped_path, ped_run, compression=compression)
    write_run(ff_path, ff_run, compression=compression)
    with h5py.File(ff_path, "a") as fh:  # the flat-field file names its pedestal run
        fh.attrs["pedestal_run"] = ped_path.name
    return ff_path


def _pedestal_path(ff_path: Path) -> Path:
    with h5py.File(ff_path, "r") as fh:
        name = fh.attrs.get("pedestal_run")
    if name is None:
        raise CalibrationError(f"{ff_path} names no pedestal run (attribute 'pedestal_run')")
    p = Path(ff_path).parent / str(name)
    if not p.is_file():
        raise CalibrationError(f"the pedestal run {p} named by {ff_path} is missing")
    return p


def _write_upstream_enf(path: Path, cam, seed: int) -> None:
    """F² (I-DATA-xST-0107) fitted by calib.camera.enf on a small simulated single-p.e. run of
    the same camera, stored under /upstream of the flat-field file (never the truth)."""
    from calib.camera.io import write_upstream
    from calib.camera.upstream import enf_sq_product

    f2, err, source = enf_sq_product(cam, seed + 12)
    write_upstream(path, {"enf_sq": f2, "enf_sq_err": err}, {"enf_sq": source, "enf_sq_err": source})


def write_charge_sample(directory: Path, seed: int, name: str, *, kind: str = "lst",
                        n_flatfield: int = 2000, n_pedestal: int = 1000,
                        upstream_enf: bool = False) -> Path:
    """Window charges of a flat-field and a pedestal run (camera-sim), truth inside;
    ``upstream_enf``: also the F² of the camera from calib.camera.enf under /upstream."""
    from calib.camera.simulation import make_camera, simulate_charges

    cam = make_camera(kind, seed=seed)
    ff = simulate_charges(cam, "flatfield", n_flatfield, seed=seed + 1)
    ped = simulate_charges(cam, "pedestal", n_pedestal, seed=seed + 2)
    # the per-event true signal charge is not needed by the checks: keep the files small
    ff.true_charge = None
    ped.true_charge = None
    path = _write_pair(directory, name, ff, ped, compression="lzf")
    if upstream_enf:
        _write_upstream_enf(path, cam, seed)
    return path


def _read_pair(path: Path, reader, what: str):
    """Flat-field run at ``path`` and its companion pedestal run, both read with ``reader``."""
    path = Path(path)
    ped_path = _pedestal_path(path)
    ff, ped = reader(path), reader(ped_path)
    if getattr(ff, what) is None or getattr(ped, what) is None:
        kind = "window charges (a waveform sample?)" if what == "charge" else "waveforms (a charge sample?)"
        raise CalibrationError(f"{path} holds no {kind}")
    return ff, ped, [path, ped_path]


def _charges(ff, ped, inputs: list) -> dict:
    clip = (ff.window or 1) * ff.camera.saturation_adc
    return {"camera": ff.camera, "flatfield_charge": ff.charge, "pedestal_charge": ped.charge,
            "flatfield_saturated": ff.charge >= clip, "inputs": inputs}


def read_charge_sample(path: Path) -> dict:
    """Charges, saturation masks and truth of a sample written by :func:`write_charge_sample`."""
    from calib.camera.io import read_run

    ff, ped, inputs = _read_pair(path, read_run, "charge")
    return {**_charges(ff, ped, inputs), "flatfield": ff, "pedestal": ped}


def write_waveform_sample(directory: Path, seed: int, name: str, *, kind: str = "tiny",
                          n_flatfield: int = 400, n_pedestal: int = 400,
                          upstream_enf: bool = False) -> Path:
    """R1 waveforms of a flat-field and a pedestal run (camera-sim), truth inside;
    ``upstream_enf``: also the F² of the camera from calib.camera.enf under /upstream."""
    from calib.camera.simulation import make_camera, simulate_waveforms

    cam = make_camera(kind, seed=seed)
    ff = simulate_waveforms(cam, "flatfield", n_flatfield, seed=seed + 1)
    ped = simulate_waveforms(cam, "pedestal", n_pedestal, seed=seed + 2)
    path = _write_pair(directory, name, ff, ped)
    if upstream_enf:
        _write_upstream_enf(path, cam, seed)
    return path


def read_charge_data(path: Path) -> dict:
    """The measured part of a charge sample (no truth): readout, charges, saturation masks."""
    from calib.camera.io import read_measured
    from calib.realdata import is_real_file

    if is_real_file(path):  # sim_telarray / LST-1 R0: its flat-field and pedestal events
        from calib.realdata.camera import real_charge_data

        return real_charge_data(path)
    return _charges(*_read_pair(path, read_measured, "charge"))


def read_waveform_data(path: Path) -> dict:
    """The measured part of a waveform sample (no truth): readout and the two runs."""
    from calib.camera.io import read_measured

    ff, ped, inputs = _read_pair(path, read_measured, "waveforms")
    return {"camera": ff.camera, "flatfield": ff, "pedestal": ped, "inputs": inputs}


def enf_sq_input(config: dict, path: Path) -> tuple[float, str]:
    """F² for the F-factor: ``config["enf_sq"]`` or the sample's /upstream/enf_sq (0107);
    returns (value, source).  Never the truth; neither there raises CalibrationError."""
    from calib.camera.io import read_upstream, upstream_input

    value, source = upstream_input("enf_sq", config, read_upstream(path), path, "calib.camera.enf")
    return value, source


def read_waveform_sample(path: Path) -> dict:
    """Runs and truth of a sample written by :func:`write_waveform_sample`."""
    from calib.camera.io import read_run

    ff = read_run(path)
    ped = read_run(_pedestal_path(Path(path)))
    if ff.waveforms is None or ped.waveforms is None:
        raise CalibrationError(f"{path} holds no waveforms (a charge sample?)")
    return {"camera": ff.camera, "flatfield": ff, "pedestal": ped,
            "inputs": [Path(path), _pedestal_path(Path(path))]}


def true_mean_npe(data: dict) -> np.ndarray:
    """Expected flasher p.e. per pixel of the sample's flat-field run (dead pixels: 0)."""
    cam = data["camera"]
    mu = float(np.mean(data["flatfield"].flasher_intensity))
    return np.where(cam.dead, 0.0, mu * np.asarray(cam.relative_qe, float))


# ---------------------------------------------------------------------------------------
# extraction (calib.camera.extraction, reading the runs in place) and pedestal statistics
# ---------------------------------------------------------------------------------------
def extract_gains(waveforms: np.ndarray, baseline: np.ndarray, *, method: str, sampling_rate,
                  correction, width: int = 7, shift: int = 3, peak_index: int | None = None,
                  saturation_adc: float = np.inf) -> dict[str, np.ndarray]:
    """Charges, peak times and saturation flags (n_events, n_gains, n_pixels) of a run.

    Every gain channel of the (n_events, n_gains, n_pixels, n_samples) waveforms is
    integrated in place by ``calib.camera.extraction.extract`` (``method`` "local_peak" or
    "fixed", ctapipe-like truncation at the readout edges) with the per-pixel ``baseline``
    (n_gains, n_pixels) subtracted on the fly: one pass over the samples, no copy.
    """
    from calib.camera.extraction import extract

    wf = np.asarray(waveforms)
    if wf.ndim != 4:
        raise CalibrationError("waveforms must be (n_events, n_gains, n_pixels, n_samples); "
                               f"got shape {wf.shape}")
    n_ev, n_gains, n_pix, _ = wf.shape
    if n_ev == 0:
        raise CalibrationError("the run has no events")
    if method not in ("local_peak", "fixed"):
        raise CalibrationError(f"the chain extracts with local_peak or fixed, not {method!r}")
    if not (wf.dtype in (np.float32, np.float64) and wf.flags.c_contiguous):
        wf = np.ascontiguousarray(wf, dtype=np.float32)
    base = np.asarray(baseline, dtype=np.float64)
    if base.shape != (n_gains, n_pix):
        raise CalibrationError(f"baseline must be (n_gains, n_pixels) = {(n_gains, n_pix)}, got "
                               f"{base.shape}")
    corr = np.broadcast_to(np.asarray(correction, float), (n_gains,))
    out = {"charge": np.empty((n_ev, n_gains, n_pix), np.float32),
           "peak_time": np.empty((n_ev, n_gains, n_pix), np.float32),
           "saturated": np.empty((n_ev, n_gains, n_pix), np.bool_)}
    for g in range(n_gains):
        no_base = ~np.isfinite(base[g])  # no baseline: NaN charge (flagged), not a number
        d = extract(wf, method, width=width, shift=shift, sampling_rate=sampling_rate,
                    correction=float(corr[g]), peak_index=peak_index, gain=g,
                    baseline=np.where(no_base, 0.0, base[g]), saturation_adc=saturation_adc)
        if no_base.any():
            d.charge[:, no_base] = np.nan
            d.peak_time[:, no_base] = np.nan
        out["charge"][:, g] = d.charge
        out["peak_time"][:, g] = d.peak_time
        out["saturated"][:, g] = d.saturated
    return out


def baseline_from_pedestal(pedestal_waveforms: np.ndarray, n_events: int = 200) -> np.ndarray:
    """Per-sample baseline (n_gains, n_pixels) [adc]: mean of the first pedestal events.

    Includes the DC offset of the NSB, as the R1 baseline of an observation does; a
    residual offset is absorbed by the pedestal subtraction of the charges.  NaN samples
    are skipped; a channel without any finite sample gets a NaN baseline, and its charges
    are then NaN (flagged NON_FINITE downstream), never integrated with a made-up baseline.
    """
    sub = np.asarray(pedestal_waveforms[:n_events])
    if sub.ndim != 4:
        raise CalibrationError("pedestal waveforms must be (n_events, n_gains, n_pixels, "
                               f"n_samples); got shape {sub.shape}")
    base = sub.mean(axis=(0, 3), dtype=np.float64)
    for g, p in zip(*np.nonzero(~np.isfinite(base))):  # rare: only those channels again
        with np.errstate(invalid="ignore"):
            base[g, p] = np.nanmean(sub[:, g, p].astype(np.float64)) \
                if np.isfinite(sub[:, g, p]).any() else np.nan
    return base


def pedestal_statistics(pedestal_charge: np.ndarray, *, clip_sigma: float = 4.0,
                        clip_iterations: int = 5, outlier_k: float = 5.0,
                        width: int = 7) -> dict:
    """Per-pixel pedestal charge statistics and outliers by ``calib.camera.pedestal`` (0103).

    Sigma-clipped mean/median/std over events (around the median); outliers when the median
    or the std deviate from the camera median by more than ``outlier_k`` robust standard
    deviations (1.4826 MAD over pixels) of the medians or stds.
    """
    from calib.camera.pedestal import FLAGS
    from calib.camera.pedestal import pedestal_statistics as pedestal_0103

    p = pedestal_0103(pedestal_charge, int(width), sigma=clip_sigma, iterations=clip_iterations,
                      min_events=1, outlier_k=outlier_k)
    return {"charge_mean": p["mean"], "charge_median": p["median"], "charge_std": p["std"],
            "n_events": p["n_used"],
            "median_outlier": (p["flags"] & FLAGS["median_outlier"]) != 0,
            "std_outlier": (p["flags"] & FLAGS["std_outlier"]) != 0}


# ---------------------------------------------------------------------------------------
# the chain
# ---------------------------------------------------------------------------------------
DEFAULT_CONFIG = {
    "width": 7, "shift": 3, "phases": 1024,
    "enf_sq": None, "b_term": 0.0, "min_events": 100,
    "clip_sigma": 4.0, "clip_iterations": 5,
    "flatfield_median_range": (-0.3, 0.3), "flatfield_std_range": (-5.0, 5.0),
    # robust stds (1.4826 MAD) of the camera's pedestal medians / stds; on the simulated LST
    # camera the good pixels reach |z| = 4.0 (NSB rate spread), dead pixels 7 (high gain),
    # noisy pixels >= 10 (low gain): 5 separates them (lstchain's plain std at k = 3 flags
    # ~7 good pixels per gain there)
    "pedestal_outlier_k": 5.0,
    "time_max_offset": 5.0, "time_std_cut": 5.0,
    "npe_cut_sigma": 5.0, "qe_dispersion": 0.07,
    "max_faulty_fraction": 0.10,
    # ISO times of the calibration runs (validity range written to the table meta)
    "validity_start": None, "validity_end": None,
}


def _config(config: dict | None) -> dict:
    """DEFAULT_CONFIG updated by ``config``; an unknown key (a typo) raises."""
    unknown = sorted(set(config or {}) - set(DEFAULT_CONFIG))
    if unknown:
        raise CalibrationError(f"unknown chain configuration keys {unknown}; known: "
                               f"{sorted(DEFAULT_CONFIG)}")
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config or {})
    return cfg


def calibrate_runs(pedestal_waveforms: np.ndarray, flatfield_waveforms: np.ndarray, camera,
                   config: dict | None = None) -> dict:
    """Pedestal + flat-field + timing + F-factor + excluded pixels from two waveform runs.

    ``*_waveforms``: (n_events, n_gains, n_pixels, n_samples) R1 waveforms [adc] (baseline
    included).  ``camera``: readout description with ``sampling_rate``, ``pulse_template``,
    ``pulse_time_step``, ``saturation_adc`` (``calib.camera.io.Readout``; a ``CameraTruth``
    works too).  F² comes from ``config["enf_sq"]``; only when that is None, from the camera's
    ``enf_sq`` if it has one (simulation studies), else CalibrationError.  Returns a dict of per-(gain, pixel) arrays and
    the intermediate results (``pedestal``, ``flatfield``, ``timing``, ``ffactor``,
    ``exclusion_bits``, ``baseline``, ``peak_index``).
    """
    from calib.camera.extraction import integration_correction
    from calib.camera.flatfield import event_median

    cfg = _config(config)
    ped_wf, ff_wf = pedestal_waveforms, flatfield_waveforms
    for name, wf in (("pedestal", ped_wf), ("flat-field", ff_wf)):
        if np.ndim(wf) != 4:
            raise CalibrationError(f"{name} waveforms must be (n_events, n_gains, n_pixels, "
                                   f"n_samples); got shape {np.shape(wf)}")
    if ped_wf.shape[1:] != ff_wf.shape[1:]:
        raise CalibrationError(f"pedestal waveforms {ped_wf.shape[1:]} and flat-field waveforms "
                               f"{ff_wf.shape[1:]} differ in gains, pixels or samples")
    for name, wf in (("pedestal", ped_wf), ("flat-field", ff_wf)):
        if wf.shape[0] < cfg["min_events"]:
            raise CalibrationError(f"the {name} run has {wf.shape[0]} events; the chain needs "
                                   f"at least {cfg['min_events']}")
    n_gains = ff_wf.shape[1]
    rate = camera.sampling_rate
    width, shift = int(cfg["width"]), int(cfg["shift"])
    tmpl = np.atleast_2d(camera.pulse_template)[:n_gains]
    corr = integration_correction(tmpl, camera.pulse_time_step, rate, width, shift, "peak",
                                  phases=cfg["phases"])
    sat_adc = float(getattr(camera, "saturation_adc", np.inf))

    baseline = baseline_from_pedestal(ped_wf, n_events=min(200, ped_wf.shape[0]))

    def run_extract(wf, method, peak_index=None):
        return extract_gains(wf, baseline, method=method, sampling_rate=rate, correction=corr,
                             width=width, shift=shift, peak_index=peak_index,
                             saturation_adc=sat_adc)

    ff = run_extract(ff_wf, "local_peak")
    # the pedestal window sits where the flasher pulses are: camera median peak sample
    t_med = event_median(ff["peak_time"][:, 0])
    rate_ghz = float(u.Quantity(rate, u.GHz).value)
    peak_index = int(np.round(np.nanmedian(t_med) * rate_ghz))
    ped = run_extract(ped_wf, "fixed", peak_index)
    return calibrate_charges(ped["charge"], ff["charge"], ff["peak_time"], camera, cfg,
                             flatfield_saturated=ff["saturated"], baseline=baseline,
                             correction=corr, peak_index=peak_index)


def calibrate_charges(pedestal_charge, flatfield_charge, flatfield_peak_time, camera,
                      config: dict | None = None, *, flatfield_saturated=None, baseline=None,
                      correction=None, peak_index=None) -> dict:
    """The statistics part of the chain, from extracted charges and peak times."""
    from calib.camera.excluded import exclusion_bits
    from calib.camera.ffactor import (FFactorFlag, charge_moments, ffactor_from_moments,
                                      finish_ffactor)
    from calib.camera.flatfield import flatfield_relative_gain
    from calib.camera.timing import time_offsets

    cfg = _config(config)
    n_gains, n_pix = flatfield_charge.shape[1:]
    for name, q in (("pedestal", pedestal_charge), ("flat-field", flatfield_charge)):
        for g in range(n_gains):
            if not np.isfinite(q[:, g]).any():
                raise CalibrationError(f"gain channel {g} of the {name} run has no finite "
                                       "charge (missing gain channel?)")
    ped = pedestal_statistics(pedestal_charge, clip_sigma=cfg["clip_sigma"],
                              clip_iterations=cfg["clip_iterations"],
                              outlier_k=cfg["pedestal_outlier_k"], width=int(cfg["width"]))
    ped_m = charge_moments(pedestal_charge)
    ff_m = charge_moments(flatfield_charge)
    # flat-field: relative gain of the pedestal-subtracted charges (mean pedestal, as S)
    exclude_ped = ped["median_outlier"] | ped["std_outlier"]
    flat = flatfield_relative_gain(
        flatfield_charge, pedestal=ped_m.mean, exclude=exclude_ped,
        clip_sigma=cfg["clip_sigma"], clip_iterations=cfg["clip_iterations"],
        median_range=tuple(cfg["flatfield_median_range"]),
        std_range=tuple(cfg["flatfield_std_range"]), saturated=flatfield_saturated,
        min_events=min(cfg["min_events"], 20))
    timing = time_offsets(flatfield_peak_time, exclude=exclude_ped | flat["outlier_mask"],
                          clip_sigma=cfg["clip_sigma"], clip_iterations=cfg["clip_iterations"],
                          max_offset=cfg["time_max_offset"], std_cut=cfg["time_std_cut"],
                          min_events=min(cfg["min_events"], 20))
    enf_sq = cfg["enf_sq"]
    if enf_sq is None:  # a simulation study may pass a camera that knows its F²
        enf_sq = getattr(camera, "enf_sq", None)
        if enf_sq is None:
            raise CalibrationError("the F-factor needs F² (I-DATA-xST-0107): pass config['enf_sq']")
        enf_sq = np.asarray(enf_sq, float)
    ffr = ffactor_from_moments(ff_m, ped_m, enf_sq=enf_sq, b_term=cfg["b_term"])
    sat_pix = None if flatfield_saturated is None else flatfield_saturated.any(axis=0)
    others = exclude_ped | flat["outlier_mask"]
    ffr = finish_ffactor(ffr, saturated=sat_pix, npe_cut_sigma=cfg["npe_cut_sigma"],
                         qe_dispersion=cfg["qe_dispersion"], exclude=others)
    fflag = ffr["ffactor_flag"]
    gain_bad = (fflag & (FFactorFlag.NO_SIGNAL | FFactorFlag.NO_EXCESS_VARIANCE
                         | FFactorFlag.NPE_OUTLIER)) != 0
    bits = exclusion_bits(
        n_pix, n_gains,
        pedestal_median=ped["median_outlier"], pedestal_std=ped["std_outlier"],
        flatfield_median=flat["median_outlier"], flatfield_std=flat["std_outlier"],
        gain=gain_bad, time=timing["outlier_mask"],
        non_finite=(fflag & FFactorFlag.NON_FINITE) != 0,
        saturated=(fflag & FFactorFlag.SATURATED) != 0)
    if correction is None:
        correction = np.ones(n_gains)
    width = int(cfg["width"])
    base = np.zeros((n_gains, n_pix)) if baseline is None else np.asarray(baseline)
    # per-sample pedestal of the R1 waveform: baseline + mean pedestal window charge per
    # (corrected) sample -- consistent with S, which uses the mean pedestal charge
    pedestal_offset = base + ped_m.mean / (np.asarray(correction)[:, None] * width)
    return {
        "pedestal": ped, "flatfield": flat, "timing": timing, "ffactor": ffr,
        "exclusion_bits": bits, "baseline": base, "peak_index": peak_index,
        "pedestal_offset": pedestal_offset, "correction": np.asarray(correction),
        "n_pedestal_events": int(pedestal_charge.shape[0]),
        "n_flatfield_events": int(flatfield_charge.shape[0]),
        "config": cfg,
    }


def chain_table(res: dict, meta: dict | None = None) -> Table:
    """The camera calibration table: one row per pixel, columns (n_pixels, n_gains)."""
    from calib.camera.excluded import describe_bits

    ffr, flat, timing = res["ffactor"], res["flatfield"], res["timing"]
    bits = res["exclusion_bits"]
    n_pix = bits.shape[-1]
    t = Table()
    t["pixel_id"] = np.arange(n_pix)

    def col(name, value, unit, desc):
        t[name] = u.Quantity(np.asarray(value, dtype=np.float64).T, unit)
        t[name].description = desc

    col("factor", ffr["factor"], 1 / ADC,
        "p.e. per adc of the pedestal-subtracted charge, flat-field folded in (dc_to_pe)")
    col("pedestal_offset", res["pedestal_offset"], ADC, "pedestal per sample of the R1 waveform")
    col("time_shift", timing["time_shift"], u.ns, "subtract from peak times")
    col("time_shift_err", timing["time_shift_err"], u.ns, "uncertainty of time_shift")
    col("n_pe", ffr["n_pe"], u.dimensionless_unscaled, "F-factor photo-electrons per flasher event")
    col("n_pe_err", ffr["n_pe_err"], u.dimensionless_unscaled, "uncertainty of n_pe")
    col("adc_per_pe", ffr["adc_per_pe"], ADC, "F-factor ADC per p.e.")
    col("adc_per_pe_err", ffr["adc_per_pe_err"], ADC, "uncertainty of adc_per_pe")
    col("relative_gain", flat["relative_gain_mean"], u.dimensionless_unscaled,
        "flat-field relative gain (charge / camera median)")
    col("relative_gain_err", flat["relative_gain_err"], u.dimensionless_unscaled,
        "uncertainty of relative_gain")
    col("pedestal_std", res["pedestal"]["charge_std"], ADC, "pedestal window-charge std")
    t["outlier_mask"] = (bits != 0).T
    t["exclusion_bits"] = np.bitwise_or.reduce(bits, axis=0)
    t["exclusion_bits"].description = "ExclusionReason bits: " + json.dumps(describe_bits())
    t["is_valid"] = t["exclusion_bits"] == 0
    frac = float((t["exclusion_bits"] != 0).mean())
    t.meta.update(meta or {})
    t.meta.update({
        "n_pedestal_events": res["n_pedestal_events"],
        "n_flatfield_events": res["n_flatfield_events"],
        "window_peak_index": res["peak_index"] if res["peak_index"] is None
        else int(res["peak_index"]),
        "faulty_fraction": frac,
        "is_valid": bool(frac < res["config"]["max_faulty_fraction"]),
        "gain_channels": "0=high, 1=low" if bits.shape[0] == 2 else "0",
        "chain_config": json.dumps(res["config"], default=str, sort_keys=True),
        # validity range of the calibration (ISO times of the calibration runs, if known)
        "validity_start": str(res["config"].get("validity_start") or "unknown"),
        "validity_end": str(res["config"].get("validity_end") or "unknown"),
    })
    return t


# ---------------------------------------------------------------------------------------
# CONTRACT: the whole chain on a waveform sample
# ---------------------------------------------------------------------------------------
def calibrate_sample_file(path: Path, config: dict | None = None) -> dict:
    """Run :func:`calibrate_runs` on the measured data of a sample written by
    :func:`write_waveform_sample`; F² from ``config`` or the sample's /upstream group
    (``res["upstream_inputs"]`` names its source)."""
    config = dict(config or {})
    data = read_waveform_data(Path(path))
    enf_sq, source = enf_sq_input(config, Path(path))
    config["enf_sq"] = float(enf_sq) if np.ndim(enf_sq) == 0 else enf_sq
    res = calibrate_runs(data["pedestal"].waveforms, data["flatfield"].waveforms,
                         data["camera"], config)
    res["upstream_inputs"] = {"enf_sq": source}
    res["inputs"] = data["inputs"]
    return res


def extract_run(run, camera, config: dict | None = None, baseline=None) -> dict:
    """Baseline-subtracted local-peak charges and peak times of one waveform run.

    ``baseline`` (n_gains, n_pixels) [adc per sample], measured (e.g.
    :func:`baseline_from_pedestal`); ``None`` only for a simulated camera in tests (its truth)."""
    from calib.camera.extraction import integration_correction

    cfg = _config(config)
    corr = integration_correction(camera.pulse_template, camera.pulse_time_step,
                                  camera.sampling_rate, cfg["width"], cfg["shift"], "peak",
                                  phases=cfg["phases"])
    if baseline is None and not hasattr(camera, "baseline"):
        raise CalibrationError("no baseline given: extract with a measured baseline")
    base = camera.baseline.to_value(ADC) if baseline is None else np.asarray(baseline)
    return extract_gains(run.waveforms, base, method="local_peak",
                         sampling_rate=camera.sampling_rate, correction=corr,
                         width=cfg["width"], shift=cfg["shift"],
                         saturation_adc=camera.saturation_adc)


def write_sample(directory: Path, seed: int = 0) -> Path:
    """Pedestal + flat-field waveforms of the tiny camera (one dead, one noisy pixel), with the
    F² of calib.camera.enf (fitted on a small single-p.e. run) under /upstream."""
    return write_waveform_sample(Path(directory), seed, "chain_sample.h5", upstream_enf=True)


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """The full chain on the measured data of a waveform sample; F² from ``config`` or the
    sample's /upstream group; writes the camera calibration table."""
    config = dict(config or {})
    res = calibrate_sample_file(Path(input), config)
    meta = provenance(__name__, VERSION, res["inputs"], config)
    meta["method"] = "pedestal + flat-field + timing + F-factor chain (lstchain-like)"
    meta["enf_sq"] = float(np.mean(res["config"]["enf_sq"]))
    meta["upstream_inputs"] = json.dumps(res["upstream_inputs"])
    t = chain_table(res, meta)
    write_table(t, Path(output))
    return t


def check(result: Table, input: Path) -> Evidence:
    """factor x signal recovers equalised p.e.; excluded = dead + noisy; time shifts."""
    data = read_waveform_sample(Path(input))
    cam = data["camera"]
    bad = np.asarray(cam.dead) | np.asarray(cam.noisy)
    good = ~bad
    n_ff = data["flatfield"].waveforms.shape[0]
    npe = np.asarray(result["n_pe"])[:, 0]
    # n_pe is proportional to the F² the chain used (an upstream input, checked below against
    # the truth within its own error): the expectation is the truth scaled by F²_used / F²
    f2_used, f2_true = float(result.meta["enf_sq"]), float(np.mean(cam.enf_sq[good]))
    truth = true_mean_npe(data) * f2_used / f2_true
    rel = npe[good] / truth[good] - 1
    tshift = u.Quantity(result["time_shift"]).to_value(u.ns)[:, 0]
    dt = tshift[good] - cam.time_offset.to_value(u.ns)[good]
    dt -= np.median(dt)
    excluded = ~np.asarray(result["is_valid"])
    m = good.sum()
    # expected scatters from the result's propagated errors, tested two-sided (errors that
    # are too large must fail as well as values that scatter too much)
    npe_err = np.asarray(result["n_pe_err"])[:, 0]
    expected = float(np.sqrt(np.mean((npe_err[good] / npe[good]) ** 2)))
    t_err = u.Quantity(result["time_shift_err"]).to_value(u.ns)[:, 0]
    t_stat = float(np.sqrt(np.mean(t_err[good] ** 2)))
    band = 4 / np.sqrt(2 * (m - 1))
    metrics = {
        "npe_bias": float(np.mean(rel)), "npe_scatter": float(np.std(rel)),
        "npe_expected_scatter": expected, "sqrt_2_over_n": float(np.sqrt(2 / n_ff)),
        "time_shift_rms_ns": float(np.sqrt(np.mean(dt**2))), "time_shift_stat_ns": t_stat,
        "excluded_missed": int((bad & ~excluded).sum()),
        "excluded_false": int((good & excluded).sum()),
    }
    criteria = {
        "npe_bias": "|bias| < 4 x scatter / sqrt(n_pixels) + 1 % (waveform extraction)",
        "npe_scatter": f"scatter / propagated error within 1 +- {band:.2f} (4 sigma of a std "
                       f"from {m} pixels), and the propagated error within 0.8-1.25 x sqrt(2/N)",
        "time_shift_rms_ns": "< 0.05 ns and <= statistical error (quadrature) + 0.03 ns "
                             "sub-sample phase systematic",
        "excluded_missed": "== 0", "excluded_false": "== 0",
    }
    passed = upstream_enf_criterion(f2_used, input, f2_true, metrics, criteria)
    passed &= (abs(metrics["npe_bias"]) < 4 * metrics["npe_scatter"] / np.sqrt(m) + 0.01
              and abs(metrics["npe_scatter"] / expected - 1) < band
              and 0.8 < expected / metrics["sqrt_2_over_n"] < 1.25
              and metrics["time_shift_rms_ns"] < 0.05
              and metrics["time_shift_rms_ns"] <= np.hypot(t_stat, 0.03) * (1 + band)
              and metrics["excluded_missed"] == 0 and metrics["excluded_false"] == 0)
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria,
                    summary="chain recovers n_pe, time offsets and bad pixels" if passed
                    else "chain does NOT recover the simulated truth")


def upstream_enf_criterion(f2_used: float, input: Path, f2_true: float, metrics: dict,
                           criteria: dict) -> bool:
    """The F² a result used against the truth, within the error of the sample's upstream fit."""
    from calib.camera.io import read_upstream

    up = read_upstream(input)
    err = float(up["enf_sq_err"][0]) if "enf_sq_err" in up else np.nan
    metrics["upstream_enf_sq"] = f2_used
    metrics["upstream_enf_sq_pull"] = (f2_used - f2_true) / err if err > 0 else np.nan
    criteria["upstream_enf_sq_pull"] = ("|F² used - true F²| < 4 x error of the upstream "
                                        "single-p.e. fit (when the sample provides it)")
    return bool(not np.isfinite(err) or abs(f2_used - f2_true) < 4 * err)


#: configuration keys of the chain (and of I-DATA-xST-0112, which runs it)
CHAIN_CONFIG = {
    "width": "integration window, samples (default 7)",
    "shift": "window start before the peak, samples (default 3)",
    "phases": "sub-sample phases of the integration correction (default 1024)",
    "enf_sq": "F², scalar or per pixel (I-DATA-xST-0107; default: the sample's /upstream group)",
    "b_term": "B term of the F-factor formula (default 0)",
    "min_events": "fewest events per run (default 100)",
    "clip_sigma": "sigma-clipping threshold (default 4)",
    "clip_iterations": "sigma-clipping iterations (default 5)",
    "flatfield_median_range": "[low, high] allowed relative flat-field median (default [-0.3, 0.3])",
    "flatfield_std_range": "[low, high] allowed flat-field spread, in sigma (default [-5, 5])",
    "pedestal_outlier_k": "pedestal outlier threshold, in robust sigma (default 5)",
    "time_max_offset": "largest time offset before a pixel is flagged, ns (default 5)",
    "time_std_cut": "time-spread outlier threshold, in sigma (default 5)",
    "npe_cut_sigma": "photo-electron outlier threshold of the F-factor, in sigma (default 5)",
    "qe_dispersion": "pixel-to-pixel dispersion of the quantum efficiency (default 0.07)",
    "max_faulty_fraction": "largest fraction of excluded pixels of a valid calibration (default 0.1)",
    "validity_start": "start of validity written in the table (default unknown)",
    "validity_end": "end of validity written in the table (default unknown)",
}

CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0106", "I-DATA-xST-0110", "I-DATA-xST-0111", "I-DATA-xST-0112"),
    title="Camera calibration chain: pedestal + flat-field + timing + F-factor + excluded pixels",
    inputs=(
        Port("pedestal_waveforms", "adc", "pedestal run R1 waveforms (n_events, n_gains, n_pixels, n_samples)"),
        Port("flatfield_waveforms", "adc", "flasher run R1 waveforms, same layout"),
    ),
    outputs=(
        Port("factor", "1/adc", "p.e. per adc, flat-field folded in"),
        Port("pedestal_offset", "adc", "pedestal per sample"),
        Port("time_shift", "ns", "per-pixel time offset (subtract)"),
        Port("outlier_mask", "", "excluded pixels per gain; exclusion_bits give the reasons"),
    ),
    sample=write_sample,
    run=run,
    check=check,
    references=("cta-lstchain 0.12 LSTCalibrationCalculator", "ctapipe monitoring tables"),
    tests=("calib/camera/tests/test_chain.py", "calib/camera/tests/test_shared_helpers.py"),
    version=VERSION,
    config=CHAIN_CONFIG,
)
