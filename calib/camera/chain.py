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
   fly by a one-pass kernel (``extract_fused``) that reproduces
   ``calib.camera.extraction.extract`` on baseline-subtracted waveforms (tested equal);
   ``extractor="calib.camera.extraction"`` instead runs camera-sim's extractor on
   baseline-subtracted chunks of ``chunk_size`` events (one extra copy pass);
2. NSB pedestal (I-DATA-xST-0103): per-pixel pedestal window charge and its outliers;
   ``pedestal_offset`` = baseline + mean pedestal charge per (corrected) sample;
3. intensity flat-field (I-DATA-xST-0110, ``calib.camera.flatfield``);
4. timing flat-field (I-DATA-xST-0111, ``calib.camera.timing``);
5. F-factor ADC/p.e. (I-DATA-xST-0106, ``calib.camera.ffactor``) with the flat-field
   folded in: ``factor = median_camera(n_pe) / S``;
6. excluded pixels (I-DATA-xST-0112, ``calib.camera.excluded``): the union of all outliers.

The waveforms are read in place (or in chunks of events), so memory holds at most one
chunk of waveform temporaries plus the per-event charges and times (n_events x n_gains x
n_pixels float32), never a copy of the waveforms.  Pedestal statistics (4-sigma clipped
mean/median/std, outliers beyond 8 robust standard deviations of the camera) are computed
by the compiled kernel of ``calib.camera.flatfield``; ``pedestal_module=
"calib.camera.pedestal"`` uses the I-DATA-xST-0103 module instead.

Output: one astropy Table, one row per pixel, columns named as ctapipe's monitoring
tables where they match: ``factor`` [1/adc], ``pedestal_offset`` [adc per sample],
``time_shift`` [ns], ``outlier_mask``, ``is_valid``; plus the F-factor, flat-field and
timing details.  Provenance and the validity range (start/end time when given) in meta.
"""
from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import h5py
import numba
import numpy as np
from astropy.table import Table

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.camera.extraction import _window_bounds  # the readout-edge rule of the extractor
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance

__all__ = [
    "write_charge_sample",
    "read_charge_sample",
    "write_waveform_sample",
    "read_waveform_sample",
    "true_mean_npe",
    "write_table",
    "extract_fused",
    "extract_chunks",
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


def write_charge_sample(directory: Path, seed: int, name: str, *, kind: str = "lst",
                        n_flatfield: int = 2000, n_pedestal: int = 1000) -> Path:
    """Window charges of a flat-field and a pedestal run (camera-sim), truth inside."""
    from calib.camera.simulation import make_camera, simulate_charges

    cam = make_camera(kind, seed=seed)
    ff = simulate_charges(cam, "flatfield", n_flatfield, seed=seed + 1)
    ped = simulate_charges(cam, "pedestal", n_pedestal, seed=seed + 2)
    # the per-event true signal charge is not needed by the checks: keep the files small
    ff.true_charge = None
    ped.true_charge = None
    return _write_pair(directory, name, ff, ped, compression="lzf")


def read_charge_sample(path: Path) -> dict:
    """Charges, saturation masks and truth of a sample written by :func:`write_charge_sample`."""
    from calib.camera.io import read_run

    ff = read_run(path)
    ped = read_run(_pedestal_path(Path(path)))
    if ff.charge is None or ped.charge is None:
        raise CalibrationError(f"{path} holds no window charges (a waveform sample?)")
    cam = ff.camera
    clip = (ff.window or 1) * cam.saturation_adc
    return {
        "camera": cam,
        "flatfield": ff,
        "pedestal": ped,
        "flatfield_charge": ff.charge,
        "pedestal_charge": ped.charge,
        "flatfield_saturated": ff.charge >= clip,
        "inputs": [Path(path), _pedestal_path(Path(path))],
    }


def write_waveform_sample(directory: Path, seed: int, name: str, *, kind: str = "tiny",
                          n_flatfield: int = 400, n_pedestal: int = 400) -> Path:
    """R1 waveforms of a flat-field and a pedestal run (camera-sim), truth inside."""
    from calib.camera.simulation import make_camera, simulate_waveforms

    cam = make_camera(kind, seed=seed)
    ff = simulate_waveforms(cam, "flatfield", n_flatfield, seed=seed + 1)
    ped = simulate_waveforms(cam, "pedestal", n_pedestal, seed=seed + 2)
    return _write_pair(directory, name, ff, ped)


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


def write_table(table: Table, output: Path) -> None:
    """Write a result table as ECSV (by suffix) or FITS/HDF5 (astropy's choice by suffix)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".ecsv":
        table.write(output, format="ascii.ecsv", overwrite=True)
    else:
        table.write(output, overwrite=True)


# ---------------------------------------------------------------------------------------
# waveform preparation and extraction in chunks
# ---------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def _prepare_chunk(wf, baseline, saturation, out, saturated):  # pragma: no cover - compiled
    """out = wf - baseline (per pixel), saturated = any sample >= saturation; one pass."""
    n_ev, n_pix, n_s = wf.shape
    for idx in numba.prange(n_ev * n_pix):
        e = idx // n_pix
        p = idx - e * n_pix
        b = baseline[p]
        mx = -np.inf
        for i in range(n_s):
            v = wf[e, p, i]
            if v > mx:
                mx = v
            out[e, p, i] = v - b
        saturated[e, p] = mx >= saturation


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "arcp", "nsz", "afn"})
def _fused_window_kernel(wf, g, baseline, fixed_peak, width, shift, inv_rate, corr, sat_adc,
                         out_q, out_t, out_sat):  # pragma: no cover - compiled
    """Local-peak (fixed_peak < 0) or fixed-window charge and peak time of gain ``g`` of the
    4-d waveforms, with the per-pixel baseline subtracted on the fly and saturation recorded,
    in one pass over the samples.  Same window (ctapipe-like truncation at the readout
    edges, via calib.camera.extraction._window_bounds), charge and positive-sample centroid
    as calib.camera.extraction's kernels applied to ``waveforms - baseline``."""
    n_ev = wf.shape[0]
    n_pix = wf.shape[2]
    n_s = wf.shape[3]
    zero = np.float32(0.0)
    for e in numba.prange(n_ev):
        for p in range(n_pix):
            b = baseline[p]
            # branch-free scan (vectorises): maximum and a NaN-propagating sum
            best = wf[e, g, p, 0]
            total = zero
            for i in range(n_s):
                v = wf[e, g, p, i]
                total += v
                best = max(best, v)
            if fixed_peak < 0:  # first sample at the maximum (= argmax)
                pk = 0
                while pk < n_s - 1 and wf[e, g, p, pk] != best:
                    pk += 1
            else:
                pk = fixed_peak
            start, stop = _window_bounds(pk - shift, width, n_s, 0)
            q = 0.0
            tw = 0.0
            w = 0.0
            for i in range(start, stop):
                v = wf[e, g, p, i] - b
                q += v
                vp = max(v, zero)  # centroid over the positive samples
                tw += vp * i
                w += vp
            t = tw / w if w > 0 else float(pk)
            if np.isnan(total):
                out_q[e, g, p] = np.nan
                out_t[e, g, p] = np.nan
            else:
                out_q[e, g, p] = q * corr
                out_t[e, g, p] = t * inv_rate
            out_sat[e, g, p] = best >= sat_adc


def extract_fused(waveforms: np.ndarray, baseline: np.ndarray, *, method: str, sampling_rate,
                  correction, width: int = 7, shift: int = 3, peak_index: int | None = None,
                  saturation_adc: float = np.inf) -> dict[str, np.ndarray]:
    """One-pass extraction of all gains without a baseline-subtracted copy of the waveforms.

    Equivalent to ``calib.camera.extraction.extract(waveforms[:, g] - baseline[g], method)``
    ("local_peak" or "fixed", edge truncation) plus a saturation flag per trace (any sample
    >= ``saturation_adc``); reads the 4-d array in place (no chunk copies).
    """
    wf = np.asarray(waveforms)
    if wf.ndim != 4:
        raise CalibrationError("waveforms must be (n_events, n_gains, n_pixels, n_samples); "
                               f"got shape {wf.shape}")
    if wf.shape[0] == 0:
        raise CalibrationError("the run has no events")
    if method not in ("local_peak", "fixed"):
        raise CalibrationError(f"the fused extractor does local_peak or fixed, not {method!r}")
    if method == "fixed" and peak_index is None:
        raise CalibrationError("the fixed-window extractor needs peak_index")
    if wf.dtype not in (np.float32, np.float64) or not wf.flags.c_contiguous:
        wf = np.ascontiguousarray(wf, dtype=np.float32)
    n_ev, n_gains, n_pix, n_s = wf.shape
    if not 1 <= int(width) <= n_s:
        raise CalibrationError(f"window width must be between 1 and {n_s} samples, got {width}")
    base = np.asarray(baseline, dtype=np.float64).reshape(n_gains, n_pix)
    corr = np.broadcast_to(np.asarray(correction, float), (n_gains,))
    inv_rate = 1.0 / float(u.Quantity(sampling_rate, u.GHz).value)
    q = np.empty((n_ev, n_gains, n_pix), np.float32)
    t = np.empty((n_ev, n_gains, n_pix), np.float32)
    sat = np.empty((n_ev, n_gains, n_pix), np.bool_)
    fixed = -1 if method == "local_peak" else int(peak_index)
    for g in range(n_gains):
        # baseline in the waveform dtype: the same rounding as subtracting it from a copy
        _fused_window_kernel(wf, g, np.ascontiguousarray(base[g], dtype=wf.dtype), fixed,
                             int(width), int(shift),
                             inv_rate, float(corr[g]), float(saturation_adc), q, t, sat)
    return {"charge": q, "peak_time": t, "saturated": sat}


def baseline_from_pedestal(pedestal_waveforms: np.ndarray, n_events: int = 200) -> np.ndarray:
    """Per-sample baseline (n_gains, n_pixels) [adc]: mean of the first pedestal events.

    Includes the DC offset of the NSB, as the R1 baseline of an observation does; a
    residual offset is absorbed by the pedestal subtraction of the charges.
    """
    sub = np.asarray(pedestal_waveforms[:n_events])
    if sub.ndim != 4:
        raise CalibrationError("pedestal waveforms must be (n_events, n_gains, n_pixels, "
                               f"n_samples); got shape {sub.shape}")
    return sub.mean(axis=(0, 3), dtype=np.float64)


def extract_chunks(waveforms: np.ndarray, baseline: np.ndarray, *, method: str,
                   sampling_rate, correction, width: int = 7, shift: int = 3,
                   peak_index: int | None = None, saturation_adc: float = np.inf,
                   chunk_size: int = 64) -> dict[str, np.ndarray]:
    """Charges, peak times and saturation flags (n_events, n_gains, n_pixels) of a run.

    Per chunk of events and gain channel, the baseline is subtracted into a reusable
    buffer (one pass that also records saturated samples) and the chunk is integrated by
    ``calib.camera.extraction`` (``method`` "local_peak" or "fixed").
    """
    from calib.camera.extraction import extract

    wf = waveforms
    if wf.ndim != 4:
        raise CalibrationError("waveforms must be (n_events, n_gains, n_pixels, n_samples); "
                               f"got shape {wf.shape}")
    n_ev, n_gains, n_pix, n_s = wf.shape
    if n_ev == 0:
        raise CalibrationError("the run has no events")
    charge = np.empty((n_ev, n_gains, n_pix), np.float32)
    peak_time = np.empty((n_ev, n_gains, n_pix), np.float32)
    saturated = np.empty((n_ev, n_gains, n_pix), np.bool_)
    base = np.asarray(baseline, dtype=np.float64).reshape(n_gains, n_pix)
    corr = np.broadcast_to(np.asarray(correction, float), (n_gains,))
    buf = np.empty((min(chunk_size, n_ev), n_pix, n_s), np.float32)
    sat = np.empty((min(chunk_size, n_ev), n_pix), np.bool_)
    for start in range(0, n_ev, chunk_size):
        stop = min(n_ev, start + chunk_size)
        n = stop - start
        for g in range(n_gains):
            block = wf[start:stop, g]
            if block.dtype != np.float32 or not block.flags.c_contiguous:
                block = np.ascontiguousarray(block, dtype=np.float32)
            _prepare_chunk(block, base[g], float(saturation_adc), buf[:n], sat[:n])
            d = extract(buf[:n], method, width=width, shift=shift, sampling_rate=sampling_rate,
                        correction=float(corr[g]), peak_index=peak_index)
            charge[start:stop, g] = d.charge
            peak_time[start:stop, g] = d.peak_time
            saturated[start:stop, g] = sat[:n]
    return {"charge": charge, "peak_time": peak_time, "saturated": saturated}


# ---------------------------------------------------------------------------------------
# pedestal statistics (0103) of the window charges
# ---------------------------------------------------------------------------------------
def pedestal_statistics(pedestal_charge: np.ndarray, *, clip_sigma: float = 4.0,
                        clip_iterations: int = 5, outlier_cut: float = 8.0) -> dict:
    """Per-pixel pedestal charge statistics and outliers (lstchain PedestalIntegrator rules).

    Sigma-clipped mean/median/std over events; outliers when the median or the std deviate
    from the camera median by more than ``outlier_cut`` robust standard deviations
    (1.4826 MAD over pixels) of the medians or stds.
    """
    from calib.camera.flatfield import robust_std, sigma_clipped_pixel_stats

    st = sigma_clipped_pixel_stats(pedestal_charge, clip_sigma, clip_iterations)
    out = {"charge_mean": st["mean"], "charge_median": st["median"], "charge_std": st["std"],
           "n_events": st["n_used"]}
    for key, name in (("median", "median_outlier"), ("std", "std_outlier")):
        v = st[key]
        med = np.nanmedian(v, axis=-1, keepdims=True)
        spread = robust_std(v, axis=-1)[..., np.newaxis]
        with np.errstate(invalid="ignore"):
            out[name] = ~(np.abs(v - med) <= outlier_cut * spread)
    return out


# ---------------------------------------------------------------------------------------
# the chain
# ---------------------------------------------------------------------------------------
DEFAULT_CONFIG = {
    # "fused": one pass, baseline subtracted on the fly (extract_fused); "calib.camera.
    # extraction": baseline-subtracted chunks of chunk_size events through camera-sim's
    # extractor (one extra copy pass per chunk)
    "extractor": "fused", "width": 7, "shift": 3, "phases": 32, "chunk_size": 256,
    "enf_sq": None, "b_term": 0.0, "min_events": 100,
    "clip_sigma": 4.0, "clip_iterations": 5,
    "flatfield_median_range": (-0.3, 0.3), "flatfield_std_range": (-5.0, 5.0),
    "pedestal_outlier_cut": 8.0,  # robust stds (1.4826 MAD) of the camera's medians / stds
    # "chain": compiled statistics here; "calib.camera.pedestal": the 0103 module (numpy,
    # plain-std outlier cut pedestal_outlier_k)
    "pedestal_module": "chain", "pedestal_outlier_k": 5.0,
    "time_max_offset": 5.0, "time_std_cut": 5.0,
    "npe_cut_sigma": 5.0, "qe_dispersion": 0.07,
    "max_faulty_fraction": 0.10,
}


def calibrate_runs(pedestal_waveforms: np.ndarray, flatfield_waveforms: np.ndarray, camera,
                   config: dict | None = None) -> dict:
    """Pedestal + flat-field + timing + F-factor + excluded pixels from two waveform runs.

    ``*_waveforms``: (n_events, n_gains, n_pixels, n_samples) R1 waveforms [adc] (baseline
    included).  ``camera``: readout description with ``sampling_rate``, ``pulse_template``,
    ``pulse_time_step``, ``saturation_adc`` and ``enf_sq`` (a ``CameraTruth`` works; only
    these instrument constants are used).  Returns a dict of per-(gain, pixel) arrays and
    the intermediate results (``pedestal``, ``flatfield``, ``timing``, ``ffactor``,
    ``exclusion_bits``, ``baseline``, ``peak_index``).
    """
    from calib.camera.extraction import integration_correction
    from calib.camera.flatfield import event_median

    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config or {})
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
    chunk = int(cfg["chunk_size"])

    baseline = baseline_from_pedestal(ped_wf, n_events=min(200, ped_wf.shape[0]))
    if cfg["extractor"] == "fused":
        def run_extract(wf, method, peak_index=None):
            return extract_fused(wf, baseline, method=method, sampling_rate=rate,
                                 correction=corr, width=width, shift=shift,
                                 peak_index=peak_index, saturation_adc=sat_adc)
    elif cfg["extractor"] == "calib.camera.extraction":
        def run_extract(wf, method, peak_index=None):
            return extract_chunks(wf, baseline, method=method, sampling_rate=rate,
                                  correction=corr, width=width, shift=shift,
                                  peak_index=peak_index, saturation_adc=sat_adc,
                                  chunk_size=chunk)
    else:
        raise CalibrationError(f"unknown extractor {cfg['extractor']!r}: 'fused' or "
                               "'calib.camera.extraction'")
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

    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config or {})
    n_gains, n_pix = flatfield_charge.shape[1:]
    for name, q in (("pedestal", pedestal_charge), ("flat-field", flatfield_charge)):
        for g in range(n_gains):
            if not np.isfinite(q[:, g]).any():
                raise CalibrationError(f"gain channel {g} of the {name} run has no finite "
                                       "charge (missing gain channel?)")
    if cfg["pedestal_module"] == "calib.camera.pedestal":
        # camera-sim's I-DATA-xST-0103 implementation (numpy; slower on large runs)
        from calib.camera.pedestal import FLAGS, pedestal_statistics as ped_stats_0103

        p = ped_stats_0103(pedestal_charge, int(cfg["width"]), sigma=cfg["clip_sigma"],
                           iterations=cfg["clip_iterations"], min_events=1,
                           outlier_k=cfg["pedestal_outlier_k"])
        ped = {"charge_mean": p["mean"], "charge_median": p["median"], "charge_std": p["std"],
               "n_events": p["n_used"],
               "median_outlier": (p["flags"] & FLAGS["median_outlier"]) != 0,
               "std_outlier": (p["flags"] & FLAGS["std_outlier"]) != 0}
    else:
        ped = pedestal_statistics(pedestal_charge, clip_sigma=cfg["clip_sigma"],
                                  clip_iterations=cfg["clip_iterations"],
                                  outlier_cut=cfg["pedestal_outlier_cut"])
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
    if enf_sq is None:
        enf_sq = np.asarray(getattr(camera, "enf_sq", 1.222), float)
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
    """Run :func:`calibrate_runs` on a sample written by :func:`write_waveform_sample`."""
    data = read_waveform_sample(Path(path))
    return calibrate_runs(data["pedestal"].waveforms, data["flatfield"].waveforms,
                          data["camera"], config)


def extract_run(run, camera, config: dict | None = None, baseline=None) -> dict:
    """Baseline-subtracted local-peak charges and peak times of one waveform run.

    ``baseline`` (n_gains, n_pixels) [adc per sample]; default: the camera's truth."""
    from calib.camera.extraction import integration_correction

    cfg = dict(DEFAULT_CONFIG)
    cfg.update(config or {})
    corr = integration_correction(camera.pulse_template, camera.pulse_time_step,
                                  camera.sampling_rate, cfg["width"], cfg["shift"], "peak",
                                  phases=cfg["phases"])
    base = camera.baseline.to_value(ADC) if baseline is None else np.asarray(baseline)
    return extract_chunks(run.waveforms, base, method="local_peak",
                          sampling_rate=camera.sampling_rate, correction=corr,
                          width=cfg["width"], shift=cfg["shift"],
                          saturation_adc=camera.saturation_adc, chunk_size=cfg["chunk_size"])


def write_sample(directory: Path, seed: int = 0) -> Path:
    """Pedestal + flat-field waveforms of the tiny camera (one dead, one noisy pixel)."""
    return write_waveform_sample(Path(directory), seed, "chain_sample.h5")


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """The full chain on a waveform sample; writes the camera calibration table."""
    config = dict(config or {})
    data = read_waveform_sample(Path(input))
    res = calibrate_runs(data["pedestal"].waveforms, data["flatfield"].waveforms,
                         data["camera"], config)
    meta = provenance(__name__, VERSION, data["inputs"], config)
    meta["method"] = "pedestal + flat-field + timing + F-factor chain (lstchain-like)"
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
    truth = true_mean_npe(data)
    rel = npe[good] / truth[good] - 1
    tshift = u.Quantity(result["time_shift"]).to_value(u.ns)[:, 0]
    dt = tshift[good] - cam.time_offset.to_value(u.ns)[good]
    dt -= np.median(dt)
    excluded = ~np.asarray(result["is_valid"])
    m = good.sum()
    metrics = {
        "npe_bias": float(np.mean(rel)), "npe_scatter": float(np.std(rel)),
        "sqrt_2_over_n": float(np.sqrt(2 / n_ff)),
        "time_shift_rms_ns": float(np.sqrt(np.mean(dt**2))),
        "excluded_missed": int((bad & ~excluded).sum()),
        "excluded_false": int((good & excluded).sum()),
    }
    criteria = {
        "npe_bias": "|bias| < 4 x scatter / sqrt(n_pixels) + 1 % (waveform extraction)",
        "npe_scatter": "< 1.5 x sqrt(2/N) (statistics of the variance estimate)",
        "time_shift_rms_ns": "< 0.2 ns",
        "excluded_missed": "== 0", "excluded_false": "== 0",
    }
    passed = (abs(metrics["npe_bias"]) < 4 * metrics["npe_scatter"] / np.sqrt(m) + 0.01
              and metrics["npe_scatter"] < 1.5 * np.sqrt(2 / n_ff)
              and metrics["time_shift_rms_ns"] < 0.2
              and metrics["excluded_missed"] == 0 and metrics["excluded_false"] == 0)
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria,
                    summary="chain recovers n_pe, time offsets and bad pixels" if passed
                    else "chain does NOT recover the simulated truth")


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
    tests=("calib/camera/tests/test_chain.py",),
    version=VERSION,
)
