"""Camera simulator: R1 waveforms and window charges with per-pixel truth.

Sample data with known truth for the camera calibration modules (I-DATA-xST-0101 ... 0112).
Three cameras (``make_camera``):

* ``"lst"``  -- LST-like: the real 1,855-pixel geometry (``LSTCam.camgeom.fits.gz``),
  40 samples at 1.024 GHz, high and low gain (LG gain = HG gain / 17), the real
  oversampled pulse shape (``lst_pulse_shape.dat``) and the single-p.e. (SPE) spectrum of
  lstchain (``lst_single_pe_spectrum.dat``, F^2 = 1 + Var/Mean^2 = 1.222);
* ``"sipm"`` -- SiPM-like: 2,048 pixels on a square grid, 64 samples at 1 GHz, one gain,
  a narrow per-avalanche SPE (sigma/mean = 0.1), optical cross-talk as a Borel branching
  process (each avalanche fires Poisson(lambda) more; P(cross-talk) = 1 - exp(-lambda)),
  dark counts;
* ``"tiny"`` -- 64 pixels (8 x 8 square grid), 40 samples, two gains, LST pulse and SPE:
  for fast tests.

Conventions (the truth the calibration modules must recover)
-------------------------------------------------------------
* **gain** [adc] is ADC counts per photo-electron defined as the integral of the 1-p.e.
  pulse over the *full* pulse, expressed as a sum over samples (ADC x samples, the unit
  of a window charge).  A window shorter than the pulse therefore recovers only a
  fraction of it: the extractor's *integration correction* matters.  For the SiPM
  camera a "p.e." is one fired cell (one avalanche); a primary p.e. yields on average
  1/(1 - lambda) avalanches.
* **enf_sq** is F^2 = 1 + Var(R)/E(R)^2 of the charge response R to one *primary* p.e.,
  including cross-talk (1.222 for the LST SPE spectrum without cross-talk).
* **time_offset** [ns] is the delay of each pixel's pulse maximum (camera mean 0).
  The simulated pulse maximum of a flasher event is at
  ``flasher_time + event jitter + time_offset + tts/sqrt(n_pe) * N(0,1)``.
* **baseline** [adc per sample] is the mean of a sample without light; NSB adds
  ``nsb_rate * gain / sampling_rate`` per sample on top (no AC coupling).
* **nonlinearity** [p.e.] is the scale s of the smooth compression
  ``q_out = s * tanh(q / s)`` of the signal charge per gain channel.
* **relative_qe** is the flat-field truth (camera median 1); the mean number of flasher
  p.e. in pixel i is ``flasher_intensity * relative_qe[i]``; dead pixels see no light.
* Waveforms are float32 (no ADC quantisation), clipped to [0, saturation_adc].

Method (vectorised and reproducible)
------------------------------------
Per event and pixel: Poisson number of flasher p.e.; their summed SPE charge (exact sum
of SPE draws up to 30 p.e., a Gamma distribution with the same mean and variance above);
the signal is the oversampled pulse template (linearly interpolated) pre-sampled at 64
sub-sample phases, placed at the phase nearest to the arrival time (within 1/128
sample, 8 ps at 1 GHz) and scaled by gain x compressed charge.  NSB (and SiPM dark
counts): Poisson counts of p.e. per sample (each with its own SPE/cross-talk charge)
convolved with the unit-area pulse sampled at the p.e.'s arrival phase (8 sub-sample
phases), starting one pulse length before the readout so the pedestal is stationary; ``pedestal_truth`` gives the
exact mean and width of a window sum for this model.
Electronic noise: white Gaussian noise per sample; each 1-pixel trace is a random
window into a standardised pool of 2^22 Gaussian numbers drawn once per run (all samples
within a trace are independent draws; two traces share a number with probability
~2e-5), which makes noise generation a memory copy.  The event loop is compiled with
numba (parallel over events); each event reseeds its own generators from the run seed,
so a run is identical for any number of threads and any chunking.  ``simulate_charges``
draws the same statistics directly for a window charge (no waveform).

References: ctapipe_io_lst pulse shape and lstchain SPE spectrum (BSD-3-Clause);
Vinogradov 2012 (NIM A 695, 247), Borel-distributed SiPM optical cross-talk;
Mirzoyan & Lorenz 1997 (excess noise factor).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import astropy.units as u
import numpy as np
from calib._jit import njit, prange

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError
from calib.data import path as data_path

__all__ = [
    "CameraTruth",
    "SimRun",
    "RUN_TYPES",
    "make_camera",
    "simulate_waveforms",
    "iter_waveforms",
    "simulate_charges",
    "nonlinear_response",
    "compressed_moments",
    "response_moments",
    "pedestal_truth",
    "charge_pedestal_truth",
    "nsb_variance_factor",
    "square_grid_neighbors",
    "neighbors_from_positions",
]

RUN_TYPES = ("dark", "pedestal", "flatfield", "spe", "intensity_scan")
ADC = u.Unit("adc")
NOISE_POOL_SIZE = 1 << 22
EXACT_SPE_MAX = 30  # exact SPE sums up to this many p.e., Gamma approximation above


# ----------------------------------------------------------------------------- truth
@dataclass
class CameraTruth:
    """Per-pixel truth of a simulated camera (see the module docstring for conventions)."""

    name: str
    n_pixels: int
    n_samples: int
    sampling_rate: u.Quantity  # GHz
    n_gains: int
    pix_x: u.Quantity  # m
    pix_y: u.Quantity  # m
    baseline: u.Quantity  # (n_gains, n_pixels) adc per sample
    gain: u.Quantity  # (n_gains, n_pixels) adc per p.e. (full-pulse integral, sum over samples)
    electronic_noise: u.Quantity  # (n_gains, n_pixels) adc per sample, rms
    enf_sq: np.ndarray  # (n_pixels,) F^2 of the response to one primary p.e.
    time_offset: u.Quantity  # (n_pixels,) ns
    nsb_rate: u.Quantity  # (n_pixels,) GHz (p.e. per ns)
    dark_count_rate: u.Quantity  # (n_pixels,) GHz (SiPM dark counts, 0 for PMT)
    relative_qe: np.ndarray  # (n_pixels,) camera median 1
    crosstalk: np.ndarray  # (n_pixels,) probability that an avalanche triggers cross-talk
    nonlinearity: np.ndarray  # (n_gains, n_pixels) p.e., scale of q_out = s tanh(q/s)
    dead: np.ndarray  # (n_pixels,) bool
    noisy: np.ndarray  # (n_pixels,) bool
    saturation_adc: float
    pulse_template: np.ndarray  # (n_gains, n_oversampled), peak-normalised amplitude
    pulse_time_step: u.Quantity  # ns, step of pulse_template
    pde_wavelength: u.Quantity  # nm
    pde: np.ndarray  # camera-average PDE curve on pde_wavelength
    spe_charge: np.ndarray  # p.e. (bin centres of the single-avalanche charge pdf, mean 1)
    spe_pdf: np.ndarray  # probability density on spe_charge
    flasher_time: u.Quantity = 18.0 * u.ns  # mean time of the flasher pulse maximum
    flasher_time_jitter: u.Quantity = 0.2 * u.ns  # event-to-event jitter of the flasher
    tts: u.Quantity = 1.0 * u.ns  # single-p.e. arrival-time spread
    seed: int = 0
    extra: dict = field(default_factory=dict)

    # -- derived quantities
    @property
    def sampling_interval(self) -> u.Quantity:
        """Time per readout sample [ns]."""
        return (1 / self.sampling_rate).to(u.ns)

    @property
    def gain_names(self) -> tuple[str, ...]:
        return ("high", "low")[: self.n_gains] if self.n_gains == 2 else ("single",)

    def pulse_area(self) -> np.ndarray:
        """Full integral of the peak-normalised template in samples, per gain (n_gains,)."""
        step = (self.pulse_time_step * self.sampling_rate).to_value(u.one)
        return self.pulse_template.sum(axis=1) * step

    def unit_pulse(self) -> np.ndarray:
        """Oversampled template scaled so that its integral is one sample (1 p.e. = gain)."""
        return self.pulse_template / self.pulse_area()[:, None]

    def pulse_peak_time(self) -> u.Quantity:
        """Time of the template maximum from the template start [ns], per gain."""
        return np.argmax(self.pulse_template, axis=1) * self.pulse_time_step

    def sampled_pulse(self, gain: int = 0, phase: float = 0.0) -> np.ndarray:
        """The unit pulse sampled at the camera rate, starting ``phase`` samples into it."""
        step = (self.pulse_time_step * self.sampling_rate).to_value(u.one)
        tmpl = self.unit_pulse()[gain]
        n = int(np.floor((len(tmpl) - 1) * step - phase)) + 1
        x = (phase + np.arange(n)) / step
        return np.interp(x, np.arange(len(tmpl)), tmpl, left=0.0, right=0.0)

    def response_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (in single-avalanche p.e.) of the charge of one primary p.e."""
        return response_moments(self.spe_charge, self.spe_pdf, self.crosstalk)

    def mean_pe_charge(self) -> np.ndarray:
        """Mean charge of one primary p.e. in units of ``gain`` (1/(1-lambda) with cross-talk)."""
        return self.response_moments()[0]

    def neighbors(self) -> np.ndarray:
        """Neighbour list (n_pixels, max_neighbors) padded with -1, from the pixel positions."""
        if "neighbors" not in self.extra:
            self.extra["neighbors"] = neighbors_from_positions(
                self.pix_x.to_value(u.m), self.pix_y.to_value(u.m))
        return self.extra["neighbors"]

    def pixel_pde(self, wavelength: u.Quantity) -> np.ndarray:
        """PDE of every pixel at ``wavelength`` (n_pixels, ...): camera curve x relative_qe."""
        curve = np.interp(wavelength.to_value(u.nm), self.pde_wavelength.to_value(u.nm), self.pde)
        return np.multiply.outer(self.relative_qe, curve)


@dataclass
class SimRun:
    """A simulated run: waveforms (or window charges) plus the truth of every event."""

    camera: CameraTruth
    run_type: str
    seed: int
    true_pe: np.ndarray  # (n_events, n_pixels) int32, flasher p.e. (no NSB)
    flasher_intensity: np.ndarray  # (n_events,) mean p.e. per pixel before relative_qe
    waveforms: np.ndarray | None = None  # (n_events, n_gains, n_pixels, n_samples) float32 adc
    charge: np.ndarray | None = None  # (n_events, n_gains, n_pixels) float32 adc (window sum)
    true_charge: np.ndarray | None = None  # (n_events, n_pixels) float32, signal charge [p.e.]
    true_time: np.ndarray | None = None  # (n_events, n_pixels) float32, pulse maximum [ns]
    window: int | None = None  # window width of ``charge`` [samples]
    nsb: bool = True
    intensity_jitter: float = 0.0

    @property
    def n_events(self) -> int:
        return int(self.true_pe.shape[0])


# ----------------------------------------------------------------------------- models
def nonlinear_response(q, scale):
    """Smooth compression of a charge ``q`` [p.e.]: ``scale * tanh(q / scale)`` (inf: linear)."""
    q = np.asarray(q, dtype=float)
    scale = np.asarray(scale, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = scale * np.tanh(q / scale)
    return np.where(np.isfinite(scale), out, q)


def compressed_moments(mean, var, scale, n_nodes: int = 48):
    """Mean and variance of the compressed charge ``scale * tanh(q / scale)`` for a charge q
    [p.e.] of the given mean and variance, q taken as Gaussian (Gauss-Hermite quadrature with
    ``n_nodes`` nodes; arrays broadcast; ``scale`` inf: no compression).

    The truth of what a moment-based method (F-factor, photon statistics) measures on the
    simulated, compressed charges.  Neglected: the skewness of q, which shifts the mean by
    -k3 / (3 scale^2), relative k3 / (3 mean scale^2) (< 1e-6 for the simulated cameras).
    """
    x, w = np.polynomial.hermite_e.hermegauss(int(n_nodes))
    w = w / w.sum()
    mean = np.asarray(mean, float)[..., None]
    sd = np.sqrt(np.asarray(var, float))[..., None]
    sc = np.asarray(scale, float)[..., None]
    q = mean + sd * x
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        y = np.where(np.isfinite(sc), sc * np.tanh(q / sc), q)
    m = np.sum(w * y, axis=-1)
    v = np.sum(w * (y - m[..., None]) ** 2, axis=-1)
    return m, v


def _spe_bins(spe_charge, spe_pdf):
    """Bin edges and cumulative probabilities of a piecewise-uniform SPE pdf."""
    c = np.asarray(spe_charge, float)
    w = np.gradient(c)
    edges = np.concatenate([[c[0] - w[0] / 2], (c[1:] + c[:-1]) / 2, [c[-1] + w[-1] / 2]])
    p = np.asarray(spe_pdf, float) * np.diff(edges)
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    cdf /= cdf[-1]
    return edges, cdf


def _spe_moments(spe_charge, spe_pdf) -> tuple[float, float]:
    """Mean and variance of the piecewise-uniform SPE distribution that is sampled."""
    edges, cdf = _spe_bins(spe_charge, spe_pdf)
    p = np.diff(cdf)
    lo, hi = edges[:-1], edges[1:]
    m1 = np.sum(p * (lo + hi) / 2)
    m2 = np.sum(p * (lo**2 + lo * hi + hi**2) / 3)
    return float(m1), float(m2 - m1**2)


def response_moments(spe_charge, spe_pdf, crosstalk) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the charge of one primary p.e. (Borel cross-talk x SPE).

    With branching parameter lambda = -ln(1 - p_xt) the number of avalanches N is
    Borel(lambda): E N = 1/(1-lambda), Var N = lambda/(1-lambda)^3.  Then
    E R = E N * mu_c and Var R = E N * var_c + Var N * mu_c^2.
    """
    mu_c, var_c = _spe_moments(spe_charge, spe_pdf)
    lam = -np.log1p(-np.asarray(crosstalk, float))
    mean_n = 1 / (1 - lam)
    var_n = lam / (1 - lam) ** 3
    return mean_n * mu_c, mean_n * var_c + var_n * mu_c**2


def square_grid_neighbors(n_x: int, n_y: int) -> np.ndarray:
    """4-neighbour list of an n_x x n_y grid (pixel id = iy * n_x + ix), padded with -1."""
    ids = np.arange(n_x * n_y).reshape(n_y, n_x)
    out = np.full((n_x * n_y, 4), -1, dtype=np.int32)
    for k, (dy, dx) in enumerate(((0, -1), (0, 1), (-1, 0), (1, 0))):
        for iy in range(n_y):
            for ix in range(n_x):
                jy, jx = iy + dy, ix + dx
                if 0 <= jy < n_y and 0 <= jx < n_x:
                    out[ids[iy, ix], k] = ids[jy, jx]
    # compact: valid neighbours first
    order = np.argsort(out < 0, axis=1, kind="stable")
    return np.take_along_axis(out, order, axis=1)


def neighbors_from_positions(x, y, factor: float = 1.2) -> np.ndarray:
    """Neighbours = pixels closer than ``factor`` x the smallest pixel distance, padded with -1.

    For hexagonal pixels this gives the 6 touching pixels, for a square grid the 4.
    """
    from scipy.spatial import cKDTree

    pts = np.column_stack([x, y])
    tree = cKDTree(pts)
    d, _ = tree.query(pts, k=2)
    pitch = np.min(d[:, 1])
    pairs = tree.query_pairs(factor * pitch, output_type="ndarray")
    n = len(pts)
    counts = np.bincount(pairs.ravel(), minlength=n)
    out = np.full((n, max(int(counts.max()), 1)), -1, dtype=np.int32)
    fill = np.zeros(n, dtype=int)
    for a, b in pairs:
        out[a, fill[a]] = b
        fill[a] += 1
        out[b, fill[b]] = a
        fill[b] += 1
    return out


def _read_lst_pulse() -> tuple[np.ndarray, float]:
    """LST oversampled pulse (2, n) peak-normalised, with the pre-rise noise floor zeroed."""
    fname = data_path("lst_pulse_shape.dat")
    with open(fname) as fh:
        _, step = (float(v) for v in fh.readline().split())
    tmpl = np.loadtxt(fname, skiprows=1).T.copy()
    for g in range(2):
        a = tmpl[g]
        peak = int(np.argmax(a))
        below = np.nonzero(a[:peak] < 1e-3 * a[peak])[0]
        if below.size:
            a[: below[-1] + 1] = 0.0
        tmpl[g] = a / a.max()
    return tmpl, step


def _sipm_pulse(step: float = 0.025, length: float = 50.0) -> np.ndarray:
    """SiPM-like pulse (t/tau)^2 exp(-t/tau), tau = 2 ns, peak-normalised (1, n)."""
    t = np.arange(0, length, step)
    a = (t / 2.0) ** 2 * np.exp(-t / 2.0)
    return (a / a.max())[None, :]


def _pde_curve(kind: str) -> tuple[u.Quantity, np.ndarray]:
    """Smooth camera-average PDE curves: bialkali PMT (peak 0.42 near 380 nm), SiPM (0.5 near 470 nm)."""
    wl = np.arange(250.0, 705.0, 5.0)
    if kind == "sipm":
        pde = 0.5 * np.exp(-0.5 * (np.log(wl / 470.0) / 0.22) ** 2)
    else:
        pde = 0.42 * np.exp(-0.5 * (np.log(wl / 380.0) / 0.25) ** 2)
        pde *= 1 / (1 + np.exp(-(wl - 295.0) / 8.0))  # window cut-off
    return wl * u.nm, pde


def make_camera(kind: str = "lst", seed: int = 0) -> CameraTruth:
    """A camera with per-pixel truth drawn from ``seed``: kind in {"lst", "sipm", "tiny"}."""
    rng = np.random.default_rng(seed)
    if kind == "lst":
        from astropy.table import Table

        geom = Table.read(data_path("LSTCam.camgeom.fits.gz"))
        px, py = np.asarray(geom["pix_x"], float) * u.m, np.asarray(geom["pix_y"], float) * u.m
        n_pix, n_samples, rate, n_gains = len(geom), 40, 1.024 * u.GHz, 2
    elif kind == "tiny":
        n_x = 8
        ix, iy = np.meshgrid(np.arange(n_x), np.arange(n_x))
        px, py = (ix.ravel() - 3.5) * 0.05 * u.m, (iy.ravel() - 3.5) * 0.05 * u.m
        n_pix, n_samples, rate, n_gains = 64, 40, 1.024 * u.GHz, 2
    elif kind == "sipm":
        n_x, n_y = 64, 32
        ix, iy = np.meshgrid(np.arange(n_x), np.arange(n_y))
        px, py = (ix.ravel() - 31.5) * 0.0062 * u.m, (iy.ravel() - 15.5) * 0.0062 * u.m
        n_pix, n_samples, rate, n_gains = 2048, 64, 1.0 * u.GHz, 1
    else:
        raise CalibrationError(f"unknown camera kind {kind!r}: choose 'lst', 'sipm' or 'tiny'")

    if kind in ("lst", "tiny"):
        tmpl, step = _read_lst_pulse()
        spe = np.loadtxt(data_path("lst_single_pe_spectrum.dat"))
        spe_charge, spe_pdf = spe[:, 0].copy(), spe[:, 1].copy()
        hg_gain = rng.normal(80.0, 4.0, n_pix)
        gain = np.stack([hg_gain, hg_gain / 17.0 * rng.normal(1.0, 0.01, n_pix)])
        baseline = rng.normal(400.0, 10.0, (2, n_pix))
        noise = np.stack([rng.normal(5.0, 0.3, n_pix), rng.normal(1.5, 0.1, n_pix)])
        nsb = rng.lognormal(np.log(0.2), 0.2, n_pix)
        dcr = np.zeros(n_pix)
        xt = np.zeros(n_pix)
        nonlin = np.stack([rng.normal(2000.0, 100.0, n_pix), rng.normal(8000.0, 400.0, n_pix)])
        saturation = 4095.0
        flasher_time = 18.0 * u.ns
    else:
        tmpl, step = _sipm_pulse(), 0.025
        c = np.linspace(0.0, 2.0, 401)
        spe_charge, spe_pdf = c, np.exp(-0.5 * ((c - 1.0) / 0.1) ** 2)
        gain = rng.normal(25.0, 1.5, (1, n_pix))
        baseline = rng.normal(200.0, 5.0, (1, n_pix))
        noise = rng.normal(1.0, 0.05, (1, n_pix))
        nsb = rng.lognormal(np.log(0.05), 0.2, n_pix)
        dcr = rng.lognormal(np.log(0.005), 0.2, n_pix)
        xt = np.clip(rng.normal(0.15, 0.02, n_pix), 0.01, 0.4)
        nonlin = rng.normal(3000.0, 150.0, (1, n_pix))
        saturation = 4095.0
        flasher_time = 25.0 * u.ns
    spe_pdf = spe_pdf / np.trapezoid(spe_pdf, spe_charge)

    relqe = rng.lognormal(0.0, 0.06, n_pix)
    relqe /= np.median(relqe)
    toff = rng.normal(0.0, 0.7, n_pix)
    toff -= toff.mean()
    n_bad = max(1, round(0.004 * n_pix))
    bad = rng.choice(n_pix, 2 * n_bad, replace=False)
    dead = np.zeros(n_pix, bool)
    noisy = np.zeros(n_pix, bool)
    dead[bad[:n_bad]] = True
    noisy[bad[n_bad:]] = True
    noise = noise * np.where(noisy, 4.0, 1.0)

    mean_r, var_r = response_moments(spe_charge, spe_pdf, xt)
    wl, pde = _pde_curve(kind)
    return CameraTruth(
        name=kind, n_pixels=n_pix, n_samples=n_samples, sampling_rate=rate, n_gains=n_gains,
        pix_x=px, pix_y=py,
        baseline=baseline * ADC, gain=gain * ADC, electronic_noise=noise * ADC,
        enf_sq=1 + var_r / mean_r**2, time_offset=toff * u.ns,
        nsb_rate=nsb * u.GHz, dark_count_rate=dcr * u.GHz,
        relative_qe=relqe, crosstalk=xt, nonlinearity=nonlin, dead=dead, noisy=noisy,
        saturation_adc=saturation, pulse_template=tmpl, pulse_time_step=step * u.ns,
        pde_wavelength=wl, pde=pde, spe_charge=spe_charge, spe_pdf=spe_pdf,
        flasher_time=flasher_time, seed=seed,
    )


# ----------------------------------------------------------------------------- run setup
_DEFAULT_INTENSITY = {
    "flatfield": {"lst": 80.0, "tiny": 80.0, "sipm": 50.0},
    "spe": {"lst": 1.0, "tiny": 1.0, "sipm": 1.0},
    "intensity_scan": {"lst": np.geomspace(5.0, 3000.0, 8), "tiny": np.geomspace(5.0, 3000.0, 8),
                       "sipm": np.geomspace(2.0, 1000.0, 8)},
}


def _check_run_args(camera, run_type, n_events):
    if not isinstance(camera, CameraTruth):
        raise CalibrationError("the camera must be a CameraTruth made by make_camera()")
    if run_type not in RUN_TYPES:
        raise CalibrationError(f"unknown run type {run_type!r}: choose one of {', '.join(RUN_TYPES)}")
    if int(n_events) < 1:
        raise CalibrationError(f"a run needs at least one event, got n_events={n_events}")


def _event_intensity(camera, run_type, n_events, rng, intensity, jitter):
    """Mean flasher p.e. per pixel (before relative_qe) of every event."""
    if run_type in ("dark", "pedestal"):
        return np.zeros(n_events)
    if intensity is None:
        intensity = _DEFAULT_INTENSITY[run_type][camera.name]
    levels = np.atleast_1d(np.asarray(intensity, float))
    if np.any(~np.isfinite(levels)) or np.any(levels < 0):
        raise CalibrationError("flasher intensities must be finite and non-negative")
    # intensity scan: events split in equal consecutive blocks, one per level
    idx = (np.arange(n_events) * len(levels)) // n_events
    mu = levels[idx]
    if jitter:
        mu = mu * np.clip(1 + jitter * rng.standard_normal(n_events), 0, None)
    return mu


def _photon_rates(camera, run_type, nsb):
    """Random (non-flasher) p.e. rate per pixel [GHz]: NSB and SiPM dark counts."""
    if nsb is None:
        nsb = run_type != "dark"
    rate = camera.dark_count_rate.to_value(u.GHz).copy()
    if nsb:
        rate = rate + camera.nsb_rate.to_value(u.GHz)
    return np.where(camera.dead, 0.0, rate), bool(nsb)


# ----------------------------------------------------------------------------- numba kernel
@njit(inline="always")
def _xorshift(x):
    """xorshift64 step: (new state, uniform in [0, 1)); the state stays in a register."""
    x ^= (x << np.uint64(13))
    x ^= (x >> np.uint64(7))
    x ^= (x << np.uint64(17))
    return x, (x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _spe_draw(state, edges, cdf, guide):
    """Exact draw from the piecewise-uniform SPE pdf: guide table + short linear search."""
    state, uu = _xorshift(state)
    lo = guide[int(uu * (guide.shape[0] - 1))]
    while lo < cdf.shape[0] - 2 and cdf[lo + 1] <= uu:
        lo += 1
    p0, p1 = cdf[lo], cdf[lo + 1]
    f = (uu - p0) / (p1 - p0) if p1 > p0 else 0.5
    return state, edges[lo] + f * (edges[lo + 1] - edges[lo])


def _spe_guide(cdf, size: int = 4096) -> np.ndarray:
    """guide[j] = last bin whose lower cdf is <= j / (size - 1)."""
    levels = np.arange(size) / (size - 1)
    return np.clip(np.searchsorted(cdf, levels, side="right") - 1, 0, len(cdf) - 2).astype(np.int64)


@njit
def _primary_charge(state, n, lam, edges, cdf, guide, mean_r, var_r):
    """Summed charge of n primary p.e. (exact up to EXACT_SPE_MAX, Gamma above)."""
    if n <= 0:
        return state, 0.0
    if n > 30:
        k = n * mean_r * mean_r / var_r
        return state, np.random.gamma(k, var_r / mean_r)
    q = 0.0
    for _ in range(n):
        n_av = 1
        if lam > 0.0:
            pend = 1
            while pend > 0:
                kids = np.random.poisson(lam * pend)
                n_av += kids
                pend = kids
        for _a in range(n_av):
            state, c = _spe_draw(state, edges, cdf, guide)
            q += c
    return state, q


@njit
def _add_scaled(row, pulse, amp, i0):
    """row[i0 + j] += amp * pulse[j] where inside row (a separate function: keeps the
    compiler's treatment of the NSB loop unchanged)."""
    s_lo = max(0, i0)
    s_hi = min(row.shape[0], i0 + pulse.shape[0])
    for s in range(s_lo, s_hi):
        row[s] += amp * pulse[s - i0]


@njit(parallel=True)
def _simulate_events(out, true_pe, true_q, true_t, seeds, mu, t_event,
                     relqe, dead, toff, tts, lam_s, xt_lam, edges, cdf, guide, mean_r, var_r,
                     gain, baseline, sigma, nl_scale, ptab, peak_off,
                     kernel, pool, sat, rate_ghz):
    n_ev, n_g, n_pix, n_s = out.shape
    n_kph = kernel.shape[1]
    n_k = kernel.shape[2]
    n_ph = ptab.shape[1]
    n_pool = pool.shape[0] - n_s
    for e in prange(n_ev):
        np.random.seed(seeds[e])
        state = np.uint64(seeds[e]) * np.uint64(0x9E3779B97F4A7C15) | np.uint64(1)
        for _w in range(4):
            state, _u = _xorshift(state)
        n_ext = n_s + n_k - 1
        wf = np.empty((n_g, n_s), np.float32)
        for p in range(n_pix):
            # --- flasher signal
            n = 0
            if mu[e] > 0.0 and not dead[p]:
                n = np.random.poisson(mu[e] * relqe[p])
            state, q = _primary_charge(state, n, xt_lam[p], edges, cdf, guide, mean_r[p], var_r[p])
            t = t_event[e] + toff[p]
            if n > 0:
                t += tts * np.random.standard_normal() / np.sqrt(n)
            true_pe[e, p] = n
            true_q[e, p] = q
            true_t[e, p] = t
            # --- random p.e. (NSB, dark counts): Poisson counts per sample, drawn as a
            # Poisson total over the extended window placed uniformly in its bins
            for g in range(n_g):
                for s in range(n_s):
                    wf[g, s] = baseline[g, p]
            if lam_s[p] > 0.0:
                n_rand = np.random.poisson(lam_s[p] * n_ext)
                for _i in range(n_rand):
                    state, uk = _xorshift(state)
                    xk = uk * n_ext
                    k = int(xk)
                    ph = int((xk - k) * n_kph)  # arrival phase within the bin
                    if xt_lam[p] > 0.0:
                        state, c = _primary_charge(state, 1, xt_lam[p], edges, cdf, guide,
                                                   mean_r[p], var_r[p])
                    else:
                        state, c = _spe_draw(state, edges, cdf, guide)
                    s0 = k - (n_k - 1)  # the pulse of bin k starts at sample s0
                    j0 = 0 if s0 >= 0 else -s0
                    j1 = n_k if s0 + n_k <= n_s else n_s - s0
                    for g in range(n_g):
                        a = np.float32(gain[g, p] * c)
                        row = wf[g, s0 + j0: s0 + j1]
                        krow = kernel[g, ph, j0:j1]
                        for j in range(j1 - j0):
                            row[j] += a * krow[j]
            for g in range(n_g):
                # signal: the unit pulse pre-sampled at N_PHASES sub-sample phases
                if q > 0.0:
                    sc = nl_scale[g, p]  # finite (inf replaced by 1e30 = linear)
                    amp = np.float32(gain[g, p] * sc * np.tanh(q / sc))
                    start = t * rate_ghz - peak_off[g]  # template start in samples
                    i0 = int(np.floor(start))
                    k = int((start - i0) * n_ph + 0.5)
                    if k == n_ph:
                        k = 0
                        i0 += 1
                    _add_scaled(wf[g], ptab[g, k], amp, i0)
                # electronic noise: random window into the Gaussian pool
                state, uo = _xorshift(state)
                off = int(uo * n_pool)
                sg = sigma[g, p]
                for s in range(n_s):
                    v = wf[g, s] + sg * pool[off + s]
                    if v > sat:
                        v = sat
                    elif v < 0.0:
                        v = 0.0
                    out[e, g, p, s] = v


N_PHASES = 64  # sub-sample phases of the pre-sampled signal pulse (15 ps steps at 1 GHz)


def _phase_table(camera) -> np.ndarray:
    """Unit pulse sampled at N_PHASES phases: table[g, k, j] = pulse at j - k/N_PHASES samples
    after the template start (n_gains, N_PHASES, n_len), float32."""
    step = (camera.pulse_time_step * camera.sampling_rate).to_value(u.one)
    tmpl = camera.unit_pulse()
    n_len = int(np.ceil((tmpl.shape[1] - 1) * step)) + 2
    grid = np.arange(tmpl.shape[1]) * step
    out = np.zeros((camera.n_gains, N_PHASES, n_len), np.float32)
    for g in range(camera.n_gains):
        for k in range(N_PHASES):
            x = np.arange(n_len) - k / N_PHASES
            out[g, k] = np.interp(x, grid, tmpl[g], left=0.0, right=0.0)
    return out


def _noise_pool(rng) -> np.ndarray:
    pool = rng.standard_normal(NOISE_POOL_SIZE)
    pool = (pool - pool.mean()) / pool.std()
    return pool.astype(np.float32)


NSB_PHASES = 8  # sub-sample arrival phases of NSB p.e.


def _nsb_kernel(camera) -> np.ndarray:
    """Unit-area pulse sampled at NSB_PHASES arrival phases (n_gains, NSB_PHASES, n_k):
    kernel[g, m, j] = pulse (j - (m + 0.5) / NSB_PHASES) samples after its start, for a
    p.e. arriving (m + 0.5) / NSB_PHASES into bin 0.  The average over phases of the sum
    over samples is the pulse area (1 sample) to < 1e-3."""
    step = (camera.pulse_time_step * camera.sampling_rate).to_value(u.one)
    tmpl = camera.unit_pulse()
    grid = np.arange(tmpl.shape[1]) * step
    n_k = int(np.ceil(grid[-1])) + 2
    out = np.zeros((camera.n_gains, NSB_PHASES, n_k))
    for g in range(camera.n_gains):
        for m in range(NSB_PHASES):
            x = np.arange(n_k) - (m + 0.5) / NSB_PHASES
            out[g, m] = np.interp(x, grid, tmpl[g], left=0.0, right=0.0)
    nz = np.nonzero(np.any(out != 0.0, axis=(0, 1)))[0]
    return np.ascontiguousarray(out[:, :, nz[0]: nz[-1] + 1])


def _window_sums(camera, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase averages of sum_k W_k and sum_k W_k^2 per gain for a ``width``-sample window."""
    kern = _nsb_kernel(camera)
    s1 = np.zeros(camera.n_gains)
    s2 = np.zeros(camera.n_gains)
    for g in range(camera.n_gains):
        for m in range(kern.shape[1]):
            w = np.convolve(kern[g, m], np.ones(int(width)))  # W_k for every k hitting the window
            s1[g] += w.sum() / kern.shape[1]
            s2[g] += np.sum(w**2) / kern.shape[1]
    return s1, s2


@dataclass
class _RunPlan:
    seeds: np.ndarray
    mu: np.ndarray
    t_event: np.ndarray
    pool: np.ndarray
    rate: np.ndarray
    nsb: bool


def _plan(camera, run_type, n_events, seed, intensity, intensity_jitter, nsb):
    _check_run_args(camera, run_type, n_events)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(1, 2**32 - 1, n_events, dtype=np.uint64).astype(np.uint32)
    mu = _event_intensity(camera, run_type, n_events, rng, intensity, intensity_jitter)
    t_event = camera.flasher_time.to_value(u.ns) + camera.flasher_time_jitter.to_value(
        u.ns) * rng.standard_normal(n_events)
    pool = _noise_pool(rng)
    rate, nsb = _photon_rates(camera, run_type, nsb)
    return _RunPlan(seeds, mu, t_event, pool, rate, nsb)


def _kernel_args(camera, plan):
    edges, cdf = _spe_bins(camera.spe_charge, camera.spe_pdf)
    mean_r, var_r = camera.response_moments()
    rate_ghz = camera.sampling_rate.to_value(u.GHz)
    step_samples = (camera.pulse_time_step * camera.sampling_rate).to_value(u.one)
    nl = np.asarray(camera.nonlinearity, float)
    return dict(
        relqe=np.asarray(camera.relative_qe, float), dead=np.asarray(camera.dead, bool),
        toff=camera.time_offset.to_value(u.ns), tts=float(camera.tts.to_value(u.ns)),
        lam_s=plan.rate / rate_ghz, xt_lam=-np.log1p(-np.asarray(camera.crosstalk, float)),
        edges=edges, cdf=cdf, guide=_spe_guide(cdf), mean_r=np.broadcast_to(mean_r, camera.n_pixels).astype(float),
        var_r=np.broadcast_to(var_r, camera.n_pixels).astype(float),
        gain=camera.gain.to_value(ADC).astype(float),
        baseline=camera.baseline.to_value(ADC).astype(float),
        sigma=camera.electronic_noise.to_value(ADC).astype(float),
        nl_scale=np.where(np.isfinite(nl), nl, 1e30), ptab=_phase_table(camera),
        peak_off=np.argmax(camera.pulse_template, axis=1) * float(step_samples),
        kernel=_nsb_kernel(camera).astype(np.float32), pool=plan.pool, sat=float(camera.saturation_adc),
        rate_ghz=float(rate_ghz),
    )


def iter_waveforms(camera: CameraTruth, run_type: str, n_events: int, seed: int, *,
                   intensity=None, intensity_jitter: float = 0.0, nsb: bool | None = None,
                   chunk_size: int = 500, reuse_buffer: bool = False) -> Iterator[SimRun]:
    """Simulate a run chunk by chunk (same events as ``simulate_waveforms``, bounded memory).

    ``reuse_buffer=True`` writes every chunk into the same waveform array (no new memory
    per chunk): the consumer must use or copy a chunk before asking for the next.
    """
    plan = _plan(camera, run_type, n_events, seed, intensity, intensity_jitter, nsb)
    args = _kernel_args(camera, plan)
    buf = None
    for start in range(0, n_events, chunk_size):
        stop = min(n_events, start + chunk_size)
        out = None
        if reuse_buffer:
            if buf is None:
                buf = np.empty((chunk_size, camera.n_gains, camera.n_pixels, camera.n_samples), np.float32)
            out = buf[: stop - start]
        yield _simulate_slice(camera, run_type, seed, plan, args, start, stop, intensity_jitter, out=out)


def _simulate_slice(camera, run_type, seed, plan, args, start, stop, jitter, out=None):
    n = stop - start
    if out is None:
        out = np.empty((n, camera.n_gains, camera.n_pixels, camera.n_samples), np.float32)
    true_pe = np.empty((n, camera.n_pixels), np.int32)
    true_q = np.empty((n, camera.n_pixels), np.float32)
    true_t = np.empty((n, camera.n_pixels), np.float32)
    _simulate_events(out, true_pe, true_q, true_t, plan.seeds[start:stop], plan.mu[start:stop],
                     plan.t_event[start:stop], **args)
    return SimRun(camera=camera, run_type=run_type, seed=seed, true_pe=true_pe,
                  flasher_intensity=plan.mu[start:stop].copy(), waveforms=out,
                  true_charge=true_q, true_time=true_t, nsb=plan.nsb, intensity_jitter=jitter)


def simulate_waveforms(camera: CameraTruth, run_type: str, n_events: int, seed: int, *,
                       intensity=None, intensity_jitter: float = 0.0,
                       nsb: bool | None = None) -> SimRun:
    """Simulate ``n_events`` R1 waveforms (n_events, n_gains, n_pixels, n_samples) [adc].

    run_type: "dark" (no light: electronic noise, SiPM dark counts), "pedestal" (NSB),
    "flatfield" (flasher, default 80 p.e. for LST), "spe" (flasher at ~1 p.e.) or
    "intensity_scan" (``intensity`` a sequence of levels; events split in equal blocks).
    ``intensity`` is the mean flasher p.e. per pixel before relative_qe;
    ``intensity_jitter`` the relative rms of the flasher intensity from event to event;
    ``nsb`` switches NSB on/off (default: on except for dark runs).
    """
    plan = _plan(camera, run_type, n_events, seed, intensity, intensity_jitter, nsb)
    args = _kernel_args(camera, plan)
    return _simulate_slice(camera, run_type, seed, plan, args, 0, int(n_events), intensity_jitter)


# ----------------------------------------------------------------------------- charges
def _draw_response(rng, counts, edges, cdf, lam, mean_r, var_r):
    """Summed charge [single-avalanche p.e.] of ``counts`` primary p.e. per entry (numpy)."""
    counts = np.asarray(counts)
    flat = counts.ravel()
    lam = np.broadcast_to(lam, counts.shape).ravel()
    mean_r = np.broadcast_to(mean_r, counts.shape).ravel()
    var_r = np.broadcast_to(var_r, counts.shape).ravel()
    out = np.zeros(flat.shape)
    big = flat > EXACT_SPE_MAX
    if big.any():
        k = flat[big] * mean_r[big] ** 2 / var_r[big]
        out[big] = rng.gamma(k, var_r[big] / mean_r[big])
    small = np.nonzero((flat > 0) & ~big)[0]
    if small.size:
        owner = np.repeat(small, flat[small])  # one entry per primary p.e.
        n_av = np.ones(owner.size, dtype=np.int64)
        lam_o = lam[owner]
        if np.any(lam_o > 0):
            pend = n_av.copy()
            while np.any(pend > 0):
                kids = rng.poisson(lam_o * pend)
                n_av += kids
                pend = kids
        owner = np.repeat(owner, n_av)
        uu = rng.random(owner.size)
        b = np.clip(np.searchsorted(cdf, uu, side="right") - 1, 0, len(cdf) - 2)
        f = (uu - cdf[b]) / np.maximum(cdf[b + 1] - cdf[b], 1e-300)
        charges = edges[b] + f * (edges[b + 1] - edges[b])
        out += np.bincount(owner, weights=charges, minlength=flat.size)
    return out.reshape(counts.shape)


def simulate_charges(camera: CameraTruth, run_type: str, n_events: int, seed: int, *,
                     intensity=None, intensity_jitter: float = 0.0, window: int = 7,
                     nsb: bool | None = None) -> SimRun:
    """Simulate window charges (n_events, n_gains, n_pixels) [adc] without waveforms.

    Model of an ideal extractor whose ``window`` contains the whole pulse: the charge is
    ``window * baseline + gain * compressed signal charge + gain * random-p.e. charge +
    sqrt(window) * electronic_noise * N(0, 1)``, with the random (NSB, dark-count) p.e.
    Poisson with mean ``rate * window / sampling_rate``.  Pedestal truth:
    ``charge_pedestal_truth``.  Charges are clipped to [0, window * saturation_adc].
    """
    _check_run_args(camera, run_type, n_events)
    if int(window) < 1 or int(window) > camera.n_samples:
        raise CalibrationError(f"window must be between 1 and {camera.n_samples} samples, got {window}")
    rng = np.random.default_rng(seed)
    n_events = int(n_events)
    mu = _event_intensity(camera, run_type, n_events, rng, intensity, intensity_jitter)
    rate, nsb = _photon_rates(camera, run_type, nsb)
    edges, cdf = _spe_bins(camera.spe_charge, camera.spe_pdf)
    mean_r, var_r = camera.response_moments()
    lam = -np.log1p(-np.asarray(camera.crosstalk, float))
    lam_pe = np.where(camera.dead, 0.0, np.multiply.outer(mu, camera.relative_qe))
    true_pe = rng.poisson(lam_pe).astype(np.int32)
    q = _draw_response(rng, true_pe, edges, cdf, lam, mean_r, var_r)
    dt = camera.sampling_interval.to_value(u.ns)
    n_rand = rng.poisson(np.broadcast_to(rate * window * dt, (n_events, camera.n_pixels)))
    q_rand = _draw_response(rng, n_rand, edges, cdf, lam, mean_r, var_r)
    gain = camera.gain.to_value(ADC)
    charge = np.empty((n_events, camera.n_gains, camera.n_pixels), np.float32)
    for g in range(camera.n_gains):
        sig = nonlinear_response(q, camera.nonlinearity[g])
        noise = np.sqrt(window) * camera.electronic_noise[g].to_value(ADC)
        c = (window * camera.baseline[g].to_value(ADC) + gain[g] * (sig + q_rand)
             + noise * rng.standard_normal((n_events, camera.n_pixels)))
        charge[:, g] = np.clip(c, 0.0, window * camera.saturation_adc)
    return SimRun(camera=camera, run_type=run_type, seed=seed, true_pe=true_pe,
                  flasher_intensity=mu, charge=charge, true_charge=q.astype(np.float32),
                  window=int(window), nsb=nsb, intensity_jitter=intensity_jitter)


# ----------------------------------------------------------------------------- truth helpers
def charge_pedestal_truth(camera: CameraTruth, window: int = 7, nsb: bool = True,
                          run_type: str = "pedestal") -> tuple[np.ndarray, np.ndarray]:
    """Mean and rms (n_gains, n_pixels) [adc] of the ``simulate_charges`` pedestal charge."""
    rate, _ = _photon_rates(camera, run_type, nsb)
    dt = camera.sampling_interval.to_value(u.ns)
    mean_r, var_r = camera.response_moments()
    lam = rate * window * dt
    g = camera.gain.to_value(ADC)
    mean = window * camera.baseline.to_value(ADC) + g * lam * mean_r
    var = window * camera.electronic_noise.to_value(ADC) ** 2 + g**2 * lam * (var_r + mean_r**2)
    return mean, np.sqrt(var)


def pedestal_truth(camera: CameraTruth, width: int, nsb: bool = True,
                   run_type: str = "pedestal") -> tuple[np.ndarray, np.ndarray]:
    """Mean and rms (n_gains, n_pixels) [adc] of a ``width``-sample window sum of a waveform
    run without flasher light (window away from the readout start, NSB stationary).

    NSB p.e. arrive as Poisson counts per sample, lambda = rate / sampling_rate, each with
    a charge of mean m and second moment m2 = var_r + m^2 (single-avalanche p.e.), and
    the unit-area pulse h sampled at its arrival phase.  The window sum of one p.e. in
    bin k is W_k = sum_{s in window} h[s - k]; so, averaged over the arrival phases,
    mean = width * baseline + lambda * gain * m * <sum_k W_k> (= width * (baseline +
    lambda * gain * m) up to < 1e-3) and
    var = width * sigma_el^2 + lambda * gain^2 * m2 * <sum_k W_k^2>.
    For a window much longer than the pulse sum_k W_k^2 -> width, i.e.
    var_NSB = rate * window_ns * F^2 * (gain * m)^2 with F^2 = m2 / m^2.
    """
    rate, _ = _photon_rates(camera, run_type, nsb)
    lam = rate / camera.sampling_rate.to_value(u.GHz)
    s1, s2 = _window_sums(camera, width)
    mean_r, var_r = camera.response_moments()
    m2 = var_r + mean_r**2
    g = camera.gain.to_value(ADC)
    mean = np.empty((camera.n_gains, camera.n_pixels))
    var = np.empty_like(mean)
    for gi in range(camera.n_gains):
        mean[gi] = width * camera.baseline[gi].to_value(ADC) + lam * g[gi] * mean_r * s1[gi]
        var[gi] = (width * camera.electronic_noise[gi].to_value(ADC) ** 2
                   + lam * g[gi] ** 2 * m2 * s2[gi])
    return mean, np.sqrt(var)


def nsb_variance_factor(camera: CameraTruth, width: int) -> np.ndarray:
    """sum_k W_k^2 (n_gains,), phase-averaged, of a ``width``-sample window:
    var_NSB = lambda g^2 m2 * this."""
    return _window_sums(camera, width)[1]
