"""Waveform integration (I-DATA-xST-0101): charge and peak time per pixel from R1 waveforms.

Method: window-sum charge extractors as in ctapipe ``image/extractor.py`` (Kosack et al.,
ctapipe, Zenodo 10.5281/zenodo.3372210), applied to pedestal-subtracted waveforms
(n_events, n_pixels, n_samples):

* ``full_waveform_sum``      -- all samples;
* ``fixed_window_sum``       -- samples [peak_index - shift, peak_index - shift + width);
* ``local_peak_window_sum``  -- window placed at each pixel's own maximum (argmax) - shift;
* ``global_peak_window_sum`` -- window at the maximum of the camera-average waveform
  (all pixels, i.e. ctapipe's ``pixel_fraction = 1``);
* ``neighbor_peak_window_sum`` -- window at the maximum of the sum of the neighbours'
  waveforms (plus ``local_weight`` x the pixel's own);
* ``sliding_window_max_sum`` -- the ``width`` consecutive samples with the largest sum.

Peak time = sum(w_i * i) / sum(w_i) over the *positive* samples w_i of the window, divided
by the sampling rate (ns from the first sample); when no sample is positive, the window's
peak index is returned.

Integration correction (``integration_correction``): ctapipe histograms the reference
single-p.e. pulse into bins of one sample (starting at the template start), places the
window at the maximum bin minus ``shift`` and takes 1 / (fraction of the pulse area
inside the window); for the sliding window, the largest fraction over positions.  That
single histogram is one arrival phase: for the LST pulse (width 7, shift 3) it misses the
mean fraction kept by pulses arriving at random times by 1.2 % (high gain) and 2.5 %
(low gain).  ``phases=N`` averages the fraction over N sub-sample phases of the sampled
pulse instead (default 1024 in ``extract_run`` and ``run``; 32 phases still miss the
continuous average by 1.7e-4 in high gain), which removes that bias: a
noise-free pulse then integrates on average to its full-pulse charge, i.e. charge / gain
= p.e. with the gain convention of ``calib.camera.simulation`` (ADC per p.e. = full-pulse
integral).

Readout edges: by default (``edge="truncate"``) the window is *truncated* at the edges of
the readout, exactly like ctapipe: samples max(0, p - shift) .. min(n, p - shift + width).
With ``edge="shift"`` the window is instead shifted back inside the readout (always
``width`` samples).  Truncation loses charge for pulses at the edge; shifting keeps the
width but moves the window off the pulse.

Bad data: a NaN sample anywhere in a pixel's trace gives NaN charge and peak time for that
pixel and event (flagged, never a silent number); wrong shapes or parameters raise
``CalibrationError``.  The kernels are numba-compiled, one pass per trace, parallel over
events x pixels; ``reference_*`` functions are plain numpy implementations used by the
tests.

Raw R1 waveforms need no pre-processing copy: every extractor takes ``gain=`` to read one
channel of (n_events, n_gains, n_pixels, n_samples) waveforms in place, ``baseline=`` (per
pixel, adc per sample) subtracted on the fly inside the window (the peak searches are
invariant to a constant per trace), and ``saturation_adc=`` to flag traces reaching the
digitiser's maximum (``DL1.saturated``) in the same pass.

The baseline subtracted by ``run()`` is an upstream product (I-DATA-xST-0102): from
``config["baseline"]`` or the sample's ``/upstream`` group (``calib.camera.baseline`` on a short
dark run); the fixed window sits at the camera median peak sample of the data unless
``config["peak_index"]`` is given.  Nothing is read from the simulator truth.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import astropy.units as u
import numpy as np
from astropy.table import Table
from calib._jit import njit, prange

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = [
    "DL1",
    "EXTRACTORS",
    "integration_correction",
    "centroid_phase_map",
    "peak_time_at_maximum",
    "full_waveform_sum",
    "fixed_window_sum",
    "local_peak_window_sum",
    "global_peak_window_sum",
    "neighbor_peak_window_sum",
    "sliding_window_max_sum",
    "extract",
    "reference_window_sum",
    "reference_local_peak",
    "CONTRACT",
]

_FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}  # fastmath without nnan/ninf: NaN survives
_EDGES = {"truncate": 0, "shift": 1}


class DL1(NamedTuple):
    """Extracted image: charge [adc, sum of samples x correction] and peak time [ns].

    ``saturated`` (bool, same shape) is set when the extractor was given ``saturation_adc``:
    the trace has a sample >= that value (raw ADC, baseline included); otherwise None.
    """

    charge: np.ndarray
    peak_time: np.ndarray
    saturated: np.ndarray | None = None


# ----------------------------------------------------------------------------- checks
def _check_waveforms(waveforms, gain=None) -> tuple[np.ndarray, int]:
    """(C-contiguous 4-d view (n_events, n_gains, n_pixels, n_samples), gain index).

    3-d input (n_events, n_pixels, n_samples) is one gain channel (viewed, not copied);
    4-d input needs ``gain`` and is read in place (no per-gain copy).
    """
    wf = np.asarray(waveforms)
    if wf.ndim == 4:
        if gain is None:
            raise CalibrationError(
                f"waveforms of shape {wf.shape} have {wf.shape[1]} gain channels: pass gain= "
                "(the channel to integrate)")
        gain = int(gain)
        if not 0 <= gain < wf.shape[1]:
            raise CalibrationError(f"gain channel {gain} does not exist (the waveforms have "
                                   f"{wf.shape[1]})")
    elif wf.ndim == 3:
        if gain not in (None, 0):
            raise CalibrationError("3-d waveforms are one gain channel; gain= must be 0 or None")
        gain = 0
        wf = wf[:, np.newaxis]
    else:
        raise CalibrationError(
            f"waveforms must be (n_events, n_pixels, n_samples), or (n_events, n_gains, "
            f"n_pixels, n_samples) with gain=, got an array of shape {wf.shape}")
    if wf.size == 0:
        raise CalibrationError(f"waveforms are empty (shape {wf.shape})")
    if wf.dtype not in (np.float32, np.float64):
        wf = wf.astype(np.float32)
    return np.ascontiguousarray(wf), gain


def _check_window(width: int, shift: int, n_samples: int, edge: str) -> tuple[int, int, int]:
    width, shift = int(width), int(shift)
    if not 1 <= width <= n_samples:
        raise CalibrationError(f"window width must be between 1 and {n_samples} samples, got {width}")
    if edge not in _EDGES:
        raise CalibrationError(f"edge must be 'truncate' or 'shift', got {edge!r}")
    return width, shift, _EDGES[edge]


def _rate(sampling_rate) -> float:
    if isinstance(sampling_rate, u.Quantity):
        return float(sampling_rate.to_value(u.GHz))
    return float(sampling_rate)


def _correction(correction, n_pixels):
    c = np.asarray(correction, dtype=np.float64)
    if c.ndim == 0:
        c = np.full(n_pixels, float(c))
    if c.shape != (n_pixels,) or not np.all(np.isfinite(c)):
        raise CalibrationError(f"correction must be a finite scalar or one value per pixel ({n_pixels})")
    return c


def _baseline(baseline, wf) -> np.ndarray:
    """Per-pixel baseline per sample in the waveform dtype (zeros when None)."""
    n_pix = wf.shape[2]
    if baseline is None:
        return np.zeros(n_pix, wf.dtype)
    b = np.asarray(u.Quantity(baseline, u.adc).value if isinstance(baseline, u.Quantity)
                   else baseline, dtype=np.float64)
    if b.ndim == 0:
        b = np.full(n_pix, float(b))
    if b.shape != (n_pix,):
        raise CalibrationError(f"baseline must be a scalar or one value per pixel ({n_pix}) of "
                               f"the gain channel, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise CalibrationError(f"the baseline has {int((~np.isfinite(b)).sum())} non-finite "
                               "values: refusing to subtract them")
    # subtracted in the waveform dtype: the same rounding as subtracting it from a copy
    return b.astype(wf.dtype)


def _saturation(saturation_adc) -> float:
    if saturation_adc is None:
        return np.inf
    if isinstance(saturation_adc, u.Quantity):
        saturation_adc = saturation_adc.to_value(u.adc)
    s = float(saturation_adc)
    if np.isnan(s):
        raise CalibrationError("saturation_adc is NaN")
    return s


# ----------------------------------------------------------------------------- kernels
# All kernels read one gain channel g of C-contiguous (n_events, n_gains, n_pixels, n_samples)
# waveforms in place; the per-pixel baseline b is subtracted on the fly inside the window
# (the peak search is invariant to a constant per trace), the saturation flag is the raw
# trace maximum >= sat.
@njit(fastmath=_FAST, inline="always")
def _window_bounds(start, width, n_s, mode):
    stop = start + width
    if mode == 0:  # truncate
        if start < 0:
            start = 0
        if stop > n_s:
            stop = n_s
    else:  # shift back inside
        if start < 0:
            start = 0
            stop = width
        if stop > n_s:
            stop = n_s
            start = n_s - width
    return start, stop


@njit(fastmath=_FAST, inline="always")
def _sum_window(trace, b, start, stop, peak, inv_rate):
    q = np.float32(0.0)
    tw = np.float32(0.0)
    w = np.float32(0.0)
    for i in range(start, stop):  # branch-free so that it vectorises
        v = trace[i] - b
        q += v
        vp = max(v, np.float32(0.0))
        tw += vp * np.float32(i)
        w += vp
    t = tw / w if w > 0 else np.float32(peak)
    return q, t * inv_rate


@njit(fastmath=True)
def _trace_max(trace):
    """Largest sample (vectorised reduction; NaN traces are caught by the caller's sum)."""
    m = trace[0]
    for i in range(1, trace.shape[0]):
        m = max(m, trace[i])
    return m


@njit(fastmath=_FAST, inline="always")
def _sum_and_max(trace):
    """NaN-propagating sum and the largest sample, one branch-free pass."""
    total = np.float32(0.0)
    m = trace[0]
    for i in range(trace.shape[0]):
        v = trace[i]
        total += v
        m = max(m, v)
    return total, m


@njit(parallel=True, fastmath=_FAST)
def _local_peak_kernel(wf, g, base, sat, width, shift, mode, inv_rate, corr, out_q, out_t, out_sat):
    """One pass per trace: NaN-propagating sum, max, first argmax, window sum + time."""
    n_ev, _, n_pix, n_s = wf.shape
    for e in prange(n_ev):
        for p in range(n_pix):
            trace = wf[e, g, p]
            total = np.float32(0.0)
            for i in range(n_s):
                total += trace[i]
            best = _trace_max(trace)
            imax = 0
            for i in range(n_s):
                if trace[i] == best:
                    imax = i
                    break
            start, stop = _window_bounds(imax - shift, width, n_s, mode)
            q, t = _sum_window(trace, base[p], start, stop, imax, inv_rate)
            if np.isnan(total):
                q = np.nan
                t = np.nan
            out_q[e, p] = q * corr[p]
            out_t[e, p] = t
            out_sat[e, p] = best >= sat


@njit(parallel=True, fastmath=_FAST)
def _peak_index_kernel(wf, g, base, sat, peaks, width, shift, mode, inv_rate, corr, out_q, out_t,
                       out_sat):
    """Window at a given peak index per (event, pixel)."""
    n_ev, _, n_pix, n_s = wf.shape
    for idx in prange(n_ev * n_pix):
        e = idx // n_pix
        p = idx - e * n_pix
        trace = wf[e, g, p]
        total, best = _sum_and_max(trace)
        pk = peaks[e, p]
        start, stop = _window_bounds(pk - shift, width, n_s, mode)
        q, t = _sum_window(trace, base[p], start, stop, pk, inv_rate)
        if np.isnan(total):
            q = np.nan
            t = np.nan
        out_q[e, p] = q * corr[p]
        out_t[e, p] = t
        out_sat[e, p] = best >= sat


@njit(parallel=True, fastmath=_FAST)
def _neighbor_peaks(wf, g, neighbors, local_weight):
    n_ev, _, n_pix, n_s = wf.shape
    peaks = np.empty((n_ev, n_pix), np.int64)
    n_nb = neighbors.shape[1]
    for e in prange(n_ev):
        acc = np.empty(n_s, np.float32)
        for p in range(n_pix):
            for i in range(n_s):
                acc[i] = local_weight * wf[e, g, p, i]
            for k in range(n_nb):
                nb = neighbors[p, k]
                if nb >= 0:
                    row = wf[e, g, nb]
                    for i in range(n_s):
                        acc[i] += row[i]
            best = acc[0]
            imax = 0
            for i in range(1, n_s):
                if acc[i] > best:
                    best = acc[i]
                    imax = i
            peaks[e, p] = imax
    return peaks


@njit(parallel=True, fastmath=_FAST)
def _global_peaks(wf, g):
    n_ev, _, n_pix, n_s = wf.shape
    peaks = np.empty(n_ev, np.int64)
    for e in prange(n_ev):
        avg = np.zeros(n_s)
        for p in range(n_pix):
            v = wf[e, g, p]
            if not np.isnan(v[0]):
                for i in range(n_s):
                    avg[i] += v[i]
        best = -np.inf
        imax = 0
        for i in range(n_s):
            if avg[i] > best:
                best = avg[i]
                imax = i
        peaks[e] = imax
    return peaks


@njit(parallel=True, fastmath=_FAST)
def _sliding_kernel(wf, g, base, sat, width, inv_rate, corr, out_q, out_t, out_sat):
    n_ev, _, n_pix, n_s = wf.shape
    for idx in prange(n_ev * n_pix):
        e = idx // n_pix
        p = idx - e * n_pix
        trace = wf[e, g, p]
        acc = 0.0
        for i in range(width):
            acc += trace[i]
        best = acc
        start = 0
        total, mx = _sum_and_max(trace)
        for i in range(width, n_s):
            acc += trace[i] - trace[i - width]
            if acc > best:
                best = acc
                start = i - width + 1
        q, t = _sum_window(trace, base[p], start, start + width, start + width // 2, inv_rate)
        if np.isnan(total):
            q = np.nan
            t = np.nan
        out_q[e, p] = q * corr[p]
        out_t[e, p] = t
        out_sat[e, p] = mx >= sat


def _alloc(wf):
    n_ev, _, n_pix, _ = wf.shape
    return (np.empty((n_ev, n_pix), np.float32), np.empty((n_ev, n_pix), np.float32),
            np.empty((n_ev, n_pix), np.bool_))


def _dl1(q, t, s, saturation_adc) -> DL1:
    return DL1(q, t, s if saturation_adc is not None else None)


# ----------------------------------------------------------------------------- extractors
# Common keyword arguments of every extractor:
#   gain=           with 4-d waveforms (n_events, n_gains, n_pixels, n_samples): the channel
#                   to integrate, read in place (no copy);
#   baseline=       per-pixel baseline per sample [adc] of that channel, subtracted inside the
#                   window on the fly (no extra pass, no copy); None: waveforms already
#                   pedestal-subtracted;
#   saturation_adc= raw-ADC saturation level: DL1.saturated flags traces reaching it.
def local_peak_window_sum(waveforms, width: int = 7, shift: int = 3, sampling_rate=1.024,
                          correction=1.0, edge: str = "truncate", *, gain=None, baseline=None,
                          saturation_adc=None) -> DL1:
    """Window of ``width`` samples starting ``shift`` before each pixel's maximum."""
    wf, g = _check_waveforms(waveforms, gain)
    width, shift, mode = _check_window(width, shift, wf.shape[3], edge)
    q, t, s = _alloc(wf)
    _local_peak_kernel(wf, g, _baseline(baseline, wf), _saturation(saturation_adc), width, shift,
                       mode, 1.0 / _rate(sampling_rate), _correction(correction, wf.shape[2]),
                       q, t, s)
    return _dl1(q, t, s, saturation_adc)


def _at_peaks(wf, g, peaks, width, shift, mode, sampling_rate, correction, baseline,
              saturation_adc):
    q, t, s = _alloc(wf)
    _peak_index_kernel(wf, g, _baseline(baseline, wf), _saturation(saturation_adc),
                       np.ascontiguousarray(peaks, dtype=np.int64), width, shift, mode,
                       1.0 / _rate(sampling_rate), _correction(correction, wf.shape[2]), q, t, s)
    return _dl1(q, t, s, saturation_adc)


def fixed_window_sum(waveforms, peak_index: int, width: int = 7, shift: int = 3,
                     sampling_rate=1.024, correction=1.0, edge: str = "truncate", *, gain=None,
                     baseline=None, saturation_adc=None) -> DL1:
    """Window [peak_index - shift, peak_index - shift + width) for every pixel and event."""
    wf, g = _check_waveforms(waveforms, gain)
    width, shift, mode = _check_window(width, shift, wf.shape[3], edge)
    peaks = np.broadcast_to(np.asarray(peak_index, dtype=np.int64), (wf.shape[0], wf.shape[2]))
    return _at_peaks(wf, g, peaks, width, shift, mode, sampling_rate, correction, baseline,
                     saturation_adc)


def full_waveform_sum(waveforms, sampling_rate=1.024, correction=1.0, *, gain=None,
                      baseline=None, saturation_adc=None) -> DL1:
    """Sum of all samples (peak time over all positive samples)."""
    wf, g = _check_waveforms(waveforms, gain)
    n_s = wf.shape[3]
    return fixed_window_sum(wf, 0, width=n_s, shift=0, sampling_rate=sampling_rate,
                            correction=correction, gain=g, baseline=baseline,
                            saturation_adc=saturation_adc)


def global_peak_window_sum(waveforms, width: int = 7, shift: int = 3, sampling_rate=1.024,
                           correction=1.0, edge: str = "truncate", *, gain=None, baseline=None,
                           saturation_adc=None) -> DL1:
    """Window at the maximum of the camera-average waveform of each event (NaN pixels skipped).

    The average is of the raw traces: a per-pixel baseline only shifts it by a constant.
    """
    wf, g = _check_waveforms(waveforms, gain)
    width, shift, mode = _check_window(width, shift, wf.shape[3], edge)
    peaks = np.broadcast_to(_global_peaks(wf, g)[:, None], (wf.shape[0], wf.shape[2]))
    return _at_peaks(wf, g, peaks, width, shift, mode, sampling_rate, correction, baseline,
                     saturation_adc)


def neighbor_peak_window_sum(waveforms, neighbors, width: int = 7, shift: int = 3,
                             sampling_rate=1.024, correction=1.0, local_weight: float = 0.0,
                             edge: str = "truncate", *, gain=None, baseline=None,
                             saturation_adc=None) -> DL1:
    """Window at the maximum of the summed neighbour waveforms (+ local_weight x own).

    ``neighbors`` is an (n_pixels, max_neighbors) integer array padded with -1, e.g.
    ``CameraTruth.neighbors()`` (hexagonal geometry: the 6 touching pixels, square grid: 4).
    """
    wf, g = _check_waveforms(waveforms, gain)
    width, shift, mode = _check_window(width, shift, wf.shape[3], edge)
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or nb.shape[0] != wf.shape[2]:
        raise CalibrationError(f"neighbors must be (n_pixels={wf.shape[2]}, max_neighbors), got {nb.shape}")
    if nb.size and (nb.max() >= wf.shape[2] or nb.min() < -1):
        raise CalibrationError("neighbors holds pixel indices outside the camera")
    peaks = _neighbor_peaks(wf, g, np.ascontiguousarray(nb, dtype=np.int64), float(local_weight))
    return _at_peaks(wf, g, peaks, width, shift, mode, sampling_rate, correction, baseline,
                     saturation_adc)


def sliding_window_max_sum(waveforms, width: int = 7, sampling_rate=1.024, correction=1.0, *,
                           gain=None, baseline=None, saturation_adc=None) -> DL1:
    """The ``width`` consecutive samples with the largest sum (never leaves the readout)."""
    wf, g = _check_waveforms(waveforms, gain)
    width, _, _ = _check_window(width, 0, wf.shape[3], "truncate")
    q, t, s = _alloc(wf)
    _sliding_kernel(wf, g, _baseline(baseline, wf), _saturation(saturation_adc), width,
                    1.0 / _rate(sampling_rate), _correction(correction, wf.shape[2]), q, t, s)
    return _dl1(q, t, s, saturation_adc)


EXTRACTORS = {
    "full": full_waveform_sum,
    "fixed": fixed_window_sum,
    "local_peak": local_peak_window_sum,
    "global_peak": global_peak_window_sum,
    "neighbor_peak": neighbor_peak_window_sum,
    "sliding": sliding_window_max_sum,
}


# ----------------------------------------------------------------------------- correction
def integration_correction(pulse_template, pulse_time_step, sampling_rate, width: int = 7,
                           shift: int = 3, method: str = "peak", phases: int | None = None) -> np.ndarray:
    """1 / fraction of the reference pulse area inside the window, per gain channel.

    ``pulse_template``: (n_gains, n_oversampled) or (n_oversampled,) amplitudes at step
    ``pulse_time_step`` [ns].  ``method="peak"``: window at the maximum minus ``shift``
    (local/global/neighbour/fixed-at-peak extractors); ``"sliding"``: the largest window
    fraction; ``"full"``: 1.

    ``phases=None`` (ctapipe): the pulse is histogrammed into bins of one sample starting
    at the template start and the fraction is taken from that one histogram.
    ``phases=N``: the pulse is *sampled* at N sub-sample phases, the window placed at the
    largest sample of each, and the fraction averaged over phases -- the mean fraction a
    pulse arriving at a random time actually keeps.  For the LST pulse (width 7, shift 3)
    the two differ by 1.2 % (high gain) and 2.5 % (low gain); the phase average removes
    that bias (see tests).
    """
    tmpl = np.atleast_2d(np.asarray(pulse_template, dtype=float))
    step = float(u.Quantity(pulse_time_step, u.ns).value)
    period = 1.0 / _rate(sampling_rate)
    t = np.arange(tmpl.shape[1]) * step
    if method not in ("peak", "sliding", "full"):
        raise CalibrationError(f"unknown correction method {method!r}")
    out = np.empty(tmpl.shape[0])
    for g, a in enumerate(tmpl):
        if a.sum() <= 0:
            raise CalibrationError("the reference pulse has no positive area")
        if method == "full":
            out[g] = 1.0
            continue
        if phases is None:
            n_bins = int(np.ceil(t[-1] / period)) + 1
            hists = [np.histogram(t, bins=np.arange(n_bins + 1) * period, weights=a)[0]]
        else:
            hists = []
            for ph in np.arange(int(phases)) / int(phases):
                ts = np.arange((ph - 1) * period, t[-1] + period, period)
                hists.append(np.interp(ts, t, a, left=0.0, right=0.0))
        fracs = []
        for h in hists:
            if method == "sliding":
                fracs.append(np.convolve(h, np.ones(width), mode="valid").max() / h.sum())
            else:
                start = int(np.argmax(h)) - int(shift)
                fracs.append(h[max(start, 0): max(start + int(width), 0)].sum() / h.sum())
        frac = float(np.mean(fracs))
        if frac <= 0:
            raise CalibrationError(f"a window of {width} samples (shift {shift}) misses the reference pulse")
        out[g] = 1.0 / frac
    return out


def centroid_phase_map(pulse_template, pulse_time_step, sampling_rate, width: int = 7,
                       shift: int = 3, n_phases: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free local-peak centroid of the reference pulse against the time of its maximum.

    The pulse maximum is placed ``phase`` samples after a sample boundary (``phase`` on
    ``n_phases`` points of [0, 1)); the reference pulse (linearly interpolated, as sampled by
    the camera) is sampled, the window put at its largest sample minus ``shift`` and the
    centroid of the positive samples taken, as :func:`local_peak_window_sum` does.  Returns
    (phase, centroid - boundary), both in samples, per gain: (n_gains, n_phases) each.  The
    centroid is biased towards the window centre by a phase-dependent amount (LST high
    gain, width 7, shift 3: a saw-tooth of 0.24 ns peak to peak, rms 0.07 ns), which does
    not average out over events when the flasher jitter is small against a sample.
    """
    tmpl = np.atleast_2d(np.asarray(pulse_template, float))
    step = float(u.Quantity(pulse_time_step, u.ns).value) * _rate(sampling_rate)  # samples
    width, shift = int(width), int(shift)
    phase = np.arange(int(n_phases)) / int(n_phases)
    out = np.empty((tmpl.shape[0], phase.size))
    for g, a in enumerate(tmpl):
        grid = np.arange(a.size) * step
        peak = grid[int(np.argmax(a))]
        m = int(np.ceil(peak)) + shift + 2  # the window never reaches the readout start
        n_s = m + int(np.ceil(grid[-1])) + width + 2
        x = np.arange(n_s)[None, :] - (m + phase[:, None]) + peak
        w = np.interp(x, grid, a, left=0.0, right=0.0)
        imax = np.argmax(w, axis=1)
        idx = imax[:, None] - shift + np.arange(width)[None, :]
        v = np.clip(np.take_along_axis(w, np.clip(idx, 0, n_s - 1), axis=1), 0.0, None)
        out[g] = (v * idx).sum(1) / v.sum(1) - m
    return np.broadcast_to(phase, out.shape).copy(), out


def peak_time_at_maximum(peak_time, pulse_template, pulse_time_step, sampling_rate,
                         width: int = 7, shift: int = 3) -> np.ndarray:
    """Local-peak centroid times [ns] -> times of the pulse maximum [ns], per gain channel.

    Inverts the noise-free centroid-versus-phase relation of the reference pulse
    (:func:`centroid_phase_map`): a centroid c (in samples) is k + c0(T) for a pulse maximum
    at k + T (k integer, T in [0, 1)), c0 increasing with one jump where the largest sample
    changes; c - c0(0) gives k and, by linear interpolation of the inverse of c0, T (a
    centroid inside the jump maps to the jump).  ``peak_time``: (..., n_gains, n_pixels)
    with the gain axis second to last (as from ``extract_run``), or (..., n_pixels) for a
    one-gain template.  Removes the sub-sample phase bias of the centroid, which is per
    pixel a systematic error of a timing flat-field of sub-sample jitter.
    """
    rate = _rate(sampling_rate)
    phase, c0 = centroid_phase_map(pulse_template, pulse_time_step, sampling_rate, width, shift)
    t = np.asarray(u.Quantity(peak_time, u.ns).value if isinstance(peak_time, u.Quantity)
                   else peak_time, dtype=np.float64)
    one_gain = c0.shape[0] == 1 and (t.ndim < 2 or t.shape[-2] != 1)
    tg = t[..., np.newaxis, :] if one_gain else t
    if tg.shape[-2] != c0.shape[0]:
        raise CalibrationError(f"peak times have {tg.shape[-2]} gain channels, the reference pulse "
                               f"{c0.shape[0]}")
    out = np.empty_like(tg)
    for g in range(c0.shape[0]):
        c = np.maximum.accumulate(c0[g])  # a centroid that is monotonic in the phase
        xs = np.append(c - c[0], 1.0)
        ys = np.append(phase[g], 1.0)
        r = tg[..., g, :] * rate - c[0]
        k = np.floor(r)
        out[..., g, :] = (k + np.interp(r - k, xs, ys)) / rate
    return out[..., 0, :] if one_gain else out


def extract(waveforms, method: str = "local_peak", *, width: int = 7, shift: int = 3,
            sampling_rate=1.024, correction=1.0, neighbors=None, peak_index=None,
            edge: str = "truncate", local_weight: float = 0.0, gain=None, baseline=None,
            saturation_adc=None) -> DL1:
    """Dispatch to one extractor by name (see ``EXTRACTORS``).

    ``gain`` / ``baseline`` / ``saturation_adc``: see the extractors (4-d waveforms read in
    place, per-pixel baseline subtracted on the fly, saturation flag).
    """
    if method not in EXTRACTORS:
        raise CalibrationError(f"unknown extractor {method!r}: choose one of {', '.join(EXTRACTORS)}")
    kw = dict(sampling_rate=sampling_rate, correction=correction, gain=gain, baseline=baseline,
              saturation_adc=saturation_adc)
    if method == "full":
        return full_waveform_sum(waveforms, **kw)
    if method == "sliding":
        return sliding_window_max_sum(waveforms, width=width, **kw)
    kw.update(width=width, shift=shift, edge=edge)
    if method == "fixed":
        if peak_index is None:
            raise CalibrationError("the fixed-window extractor needs peak_index")
        return fixed_window_sum(waveforms, peak_index, **kw)
    if method == "neighbor_peak":
        if neighbors is None:
            raise CalibrationError("the neighbour-peak extractor needs a neighbour list")
        return neighbor_peak_window_sum(waveforms, neighbors, local_weight=local_weight, **kw)
    return EXTRACTORS[method](waveforms, **kw)


# ----------------------------------------------------------------------------- reference (numpy)
def reference_window_sum(waveforms, start, width: int, edge: str = "truncate",
                         sampling_rate=1.024, peak=None) -> DL1:
    """Plain-numpy window sum at window start ``start`` (n_events, n_pixels), for tests."""
    wf = np.asarray(waveforms, dtype=np.float64)
    n_s = wf.shape[-1]
    start = np.broadcast_to(np.asarray(start), wf.shape[:2]).astype(np.int64)
    stop = start + width
    if edge == "truncate":
        lo, hi = np.clip(start, 0, n_s), np.clip(stop, 0, n_s)
    else:
        lo = np.where(start < 0, 0, np.where(stop > n_s, n_s - width, start))
        hi = lo + width
    i = np.arange(n_s)
    inside = (i >= lo[..., None]) & (i < hi[..., None])
    q = np.where(inside, wf, 0.0).sum(-1)
    pos = np.where(inside & (wf > 0), wf, 0.0)
    w = pos.sum(-1)
    pk = start if peak is None else np.broadcast_to(peak, wf.shape[:2])
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(w > 0, (pos * i).sum(-1) / w, pk)
    nan = np.isnan(wf).any(-1)
    q = np.where(nan, np.nan, q)
    t = np.where(nan, np.nan, t / _rate(sampling_rate))
    return DL1(q, t)


def reference_local_peak(waveforms, width=7, shift=3, edge="truncate", sampling_rate=1.024) -> DL1:
    """Plain-numpy local-peak extractor (argmax, then ``reference_window_sum``)."""
    wf = np.asarray(waveforms, dtype=np.float64)
    peak = np.nanargmax(np.where(np.isnan(wf), -np.inf, wf), axis=-1)
    return reference_window_sum(wf, peak - shift, width, edge, sampling_rate, peak=peak)


# ----------------------------------------------------------------------------- contract
_DEFAULT_CONFIG = {"method": "local_peak", "width": 7, "shift": 3, "edge": "truncate", "phases": 1024,
                   "chunk_size": 200}


def extract_run(run, method="local_peak", width=7, shift=3, edge="truncate", baseline=None,
                phases: int | None = 1024, peak_index: int | None = None) -> DL1:
    """Extract (n_events, n_gains, n_pixels) charges [adc, corrected] and peak times [ns] of a run.

    ``run``: a ``SimRun`` or ``calib.camera.io.MeasuredRun`` (waveforms + readout description).
    ``baseline`` (n_gains, n_pixels) [adc per sample] is subtracted on the fly; ``None`` is
    allowed only for a simulated run in tests (its true baseline) -- ``run()`` always passes
    the measured one.  ``saturated`` flags traces with a sample >= the camera's
    saturation_adc; the integration correction comes from the camera's reference pulse,
    averaged over ``phases`` sub-sample phases (None: ctapipe's single histogram).
    ``peak_index`` (fixed window only): default the camera median of the peak sample of the
    baseline-subtracted high-gain waveforms (from the data).
    """
    cam = run.camera
    if run.waveforms is None:
        raise CalibrationError("the run holds no waveforms (charges only): nothing to integrate")
    if run.waveforms.shape[1] != cam.n_gains:
        raise CalibrationError(f"the run has {run.waveforms.shape[1]} gain channels, the camera "
                               f"{cam.n_gains}: a gain channel is missing")
    if baseline is None:
        if not hasattr(cam, "baseline"):
            raise CalibrationError("no baseline given: integrate with a measured baseline "
                                   "(calib.camera.baseline, I-DATA-xST-0102)")
        baseline = cam.baseline
    base = np.asarray(u.Quantity(baseline, u.adc).value, dtype=float)
    if base.shape != (cam.n_gains, cam.n_pixels):
        raise CalibrationError(f"baseline must be (n_gains, n_pixels) = {(cam.n_gains, cam.n_pixels)}"
                               f", got {base.shape}")
    cmethod = {"full": "full", "sliding": "sliding"}.get(method, "peak")
    corr = integration_correction(cam.pulse_template, cam.pulse_time_step, cam.sampling_rate,
                                  width, shift, cmethod, phases=phases)
    nb = cam.neighbors() if method == "neighbor_peak" else None
    if method == "fixed" and peak_index is None:
        peak_index = data_peak_index(run.waveforms, base)
    qs, ts, ss = [], [], []
    for g in range(cam.n_gains):  # each channel read in place, baseline subtracted on the fly
        d = extract(run.waveforms, method, width=width, shift=shift, sampling_rate=cam.sampling_rate,
                    correction=corr[g], neighbors=nb, edge=edge, peak_index=peak_index, gain=g,
                    baseline=base[g], saturation_adc=cam.saturation_adc)
        qs.append(d.charge)
        ts.append(d.peak_time)
        ss.append(d.saturated)
    return DL1(np.stack(qs, axis=1), np.stack(ts, axis=1), np.stack(ss, axis=1))


def data_peak_index(waveforms, baseline) -> int:
    """Camera median over events and pixels of the peak sample of the baseline-subtracted
    high-gain waveforms (n_events, n_gains, n_pixels, n_samples): where the pulses are."""
    wf = np.asarray(waveforms[:, 0], dtype=np.float64) - np.asarray(baseline)[0][None, :, None]
    peak = np.nanargmax(np.where(np.isnan(wf), -np.inf, wf), axis=-1)
    return int(np.round(np.median(peak)))


def write_sample(directory: Path, seed: int = 0) -> Path:
    """Noise-free flasher waveforms (tiny camera, no NSB, no electronic noise) + a noisy
    flat-field run, with the camera truth, in one HDF5 file each; returns the noise-free one."""
    from dataclasses import replace

    from calib.camera.io import write_run
    from calib.camera.simulation import make_camera, simulate_waveforms

    directory = Path(directory)
    cam = make_camera("tiny", seed=seed)
    quiet = replace(cam, electronic_noise=cam.electronic_noise * 0.0, tts=0.0 * u.ns)
    run = simulate_waveforms(quiet, "flatfield", 300, seed + 1, nsb=False)
    path = write_run(directory / "extraction_flatfield_noisefree.h5", run, compression="lzf")
    # upstream: the baseline of the same (noise-free) readout from a short dark run, by 0102
    from calib.camera.io import write_upstream
    from calib.camera.upstream import dark_baseline_product

    base, _, source = dark_baseline_product(quiet, seed + 11, 20)
    write_upstream(path, {"baseline": base}, {"baseline": source})
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Integrate the waveforms of a simulated run; per-pixel table of mean charge and time."""
    from calib.camera.io import read_measured, read_readout, read_upstream, upstream_input

    cfg = {**_DEFAULT_CONFIG, **(config or {})}
    chunk = int(cfg.get("chunk_size", 200))
    cam = read_readout(input)
    base, base_src = upstream_input("baseline", cfg, read_upstream(input), input,
                                    "calib.camera.baseline", (cam.n_gains, cam.n_pixels))
    peak_index = cfg.get("peak_index")
    sums = None
    n_events = 0
    while True:  # stream the run in chunks of events
        sim = read_measured(input, events=slice(n_events, n_events + chunk))
        if sim.n_events == 0:
            break
        if cfg["method"] == "fixed" and peak_index is None:  # from the first chunk's pulses
            peak_index = data_peak_index(sim.waveforms, base)
        d = extract_run(sim, cfg["method"], cfg["width"], cfg["shift"], cfg["edge"],
                        baseline=base, phases=cfg["phases"], peak_index=peak_index)
        sat = d.saturated  # (n_events, n_gains, n_pixels): a sample >= saturation_adc
        valid = np.isfinite(d.charge) & ~sat
        part = np.stack([np.where(valid, d.charge, 0).sum(0), np.where(valid, d.peak_time, 0).sum(0),
                         valid.sum(0), sat.sum(0)])
        sums = part if sums is None else sums + part
        n_events += sim.n_events
    if sums is None:
        raise CalibrationError(f"{input} holds no events")
    t = Table()
    t["pixel_id"] = np.arange(cam.n_pixels)
    for g, name in enumerate(("high", "low") if cam.n_gains == 2 else ("single",)):
        n_valid = sums[2, g].astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            t[f"charge_mean_{name}"] = sums[0, g] / n_valid * u.adc
            t[f"peak_time_mean_{name}"] = sums[1, g] / n_valid * u.ns
        t[f"n_valid_{name}"] = n_valid
        t[f"n_saturated_{name}"] = sums[3, g].astype(np.int64)
    t.meta.update(provenance(__name__, CONTRACT.version, [Path(input)],
                             {k: v for k, v in cfg.items() if k != "baseline"}))
    t.meta["upstream_inputs"] = json.dumps({"baseline": base_src})
    t.meta["n_events"] = n_events
    if peak_index is not None:
        t.meta["peak_index"] = int(peak_index)
    t.meta["integration_correction"] = json.dumps(list(integration_correction(
        cam.pulse_template, cam.pulse_time_step, cam.sampling_rate, cfg["width"], cfg["shift"],
        phases=cfg["phases"])))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table(t, output)
    return t


def check(result: Table, input: Path) -> Evidence:
    """Compare the per-pixel result with the truth: mean charge / (gain x mean true charge)
    and mean peak time (relative to the camera) against the true time offsets."""
    from calib.camera.io import read_run
    from calib.camera.simulation import nonlinear_response

    sim = read_run(input)
    cam = sim.camera
    ok = ~cam.dead
    gain = cam.gain.to_value(u.adc)
    from calib.camera.simulation import N_PHASES

    metrics, criteria, pulls, passed = {}, {}, {}, True
    names = ("high", "low") if cam.n_gains == 2 else ("single",)
    # expected camera-mean ratio: the simulator places pulses at N_PHASES discrete sub-sample
    # phases, so the mean window fraction of the data is the N_PHASES-phase average; the
    # correction applied (meta) is that of the run's configuration
    cfg = json.loads(result.meta.get("config", "{}"))
    used = np.asarray(json.loads(result.meta["integration_correction"]), float)
    sim_corr = integration_correction(cam.pulse_template, cam.pulse_time_step, cam.sampling_rate,
                                      cfg.get("width", 7), cfg.get("shift", 3), phases=N_PHASES)
    for g, name in enumerate(names):
        sat = (sim.waveforms[:, g] >= cam.saturation_adc).any(-1)
        true_q = np.where(sat, np.nan, nonlinear_response(sim.true_charge, cam.nonlinearity[g]))
        with np.errstate(invalid="ignore", divide="ignore"):
            expect = gain[g] * np.nanmean(true_q, axis=0)
            ratio = (np.asarray(result[f"charge_mean_{name}"], float) / expect)[ok]
        # np.mean, not nanmean: a NaN charge of a live pixel fails the check, not skipped
        bias = float(np.mean(ratio) - 1)
        spread = float(np.std(ratio))
        metrics[f"charge_bias_{name}"] = bias
        metrics[f"charge_pixel_rms_{name}"] = spread
        # the pixels' sub-sample phases are random: the camera mean has the standard error
        # pixel rms / sqrt(n) around its expectation used / simulated-phase correction
        expected = float(used[g] / sim_corr[g] - 1)
        z = (bias - expected) / (spread / np.sqrt(ratio.size))
        pulls[f"charge_bias_z_{name}"] = float(z)
        metrics[f"charge_bias_expected_{name}"] = expected
        metrics[f"charge_bias_z_{name}"] = float(z)
        criteria[f"charge_bias_z_{name}"] = ("|camera-mean bias - expected| < 4 standard errors "
                                             "(pixel rms / sqrt(n))")
        passed &= abs(z) < 4
        criteria[f"charge_bias_{name}"] = ("|camera mean of charge / (gain x true charge) - 1| < 0.5 % "
                                           "(integration correction; ctapipe's single-phase "
                                           "correction misses by 1.2-2.5 % on this pulse)")
        criteria[f"charge_pixel_rms_{name}"] = "pixel-to-pixel rms of that ratio < 1 % (pulse phase)"
        passed &= abs(bias) < 0.005 and spread < 0.01
    t = np.asarray(result[f"peak_time_mean_{names[0]}"], float)
    truth = cam.time_offset.to_value(u.ns)
    resid = (t - truth)[ok]
    resid = resid - resid.mean()
    metrics["time_offset_rms_ns"] = float(np.std(resid))
    criteria["time_offset_rms_ns"] = ("rms over pixels of (mean peak time - true time_offset), "
                                      "camera mean removed, < 0.1 ns (0.1 sample)")
    passed &= metrics["time_offset_rms_ns"] < 0.1
    # designed false-fail rate: 6.3e-5 per gain (|z| < 4); the 0.5 %, 1 % and 0.1 ns limits are
    # requirements, 10x and 4x the measured values
    return Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls=pulls,
                    false_fail_rate=len(names) * 6.3e-5,
                    summary=f"{result.meta.get('config', '')}: mean charges of {sim.n_events} "
                            "noise-free flasher events recover gain x true charge; mean peak "
                            "times recover the time offsets")


CONTRACT = CalibrationModule(
    codes=("I-DATA-xST-0101",),
    title="Waveform integration: charge and peak time per pixel",
    inputs=(Port("waveforms", "adc", "R1 waveforms (n_events, n_gains, n_pixels, n_samples)"),
            Port("baseline", "adc", "per-pixel baseline per sample, subtracted before integration"),
            Port("pulse_template", "", "reference single-p.e. pulse for the integration correction")),
    outputs=(Port("charge", "adc", "integrated charge x integration correction, per event and pixel"),
             Port("peak_time", "ns", "charge-weighted time of the positive samples in the window")),
    sample=write_sample,
    run=run,
    check=check,
    references=("ctapipe image/extractor.py (Kosack et al., ctapipe, doi:10.5281/zenodo.3372210)",
                "LST pulse shape from ctapipe_io_lst"),
    tests=("calib/camera/tests/test_extraction.py",),
    version="0.2.0",
    config={
        "method": "charge extractor: local_peak, fixed, ... (default local_peak)",
        "width": "integration window, samples (default 7)",
        "shift": "window start before the peak, samples (default 3)",
        "edge": "window at the readout edge: truncate or shift (default truncate)",
        "phases": "sub-sample phases of the integration correction (default 1024)",
        "chunk_size": "events read at a time (default 200)",
        "baseline": "baseline per gain and pixel, adc per sample (default: the sample's /upstream group)",
        "peak_index": "fixed window peak sample for method fixed (default: from the first chunk)",
    },
)
