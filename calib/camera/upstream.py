"""Upstream calibration products for the sample files, computed from simulated runs.

A calibration module's ``run()`` may use only the measured data of its input and the
products of the interfaces upstream of it (dark baseline and noise from I-DATA-xST-0102,
ADC/p.e. from I-DATA-xST-0106, F² from I-DATA-xST-0107 ...).  The sample writers call the
functions here to compute those products *with the upstream modules' own kernels* on small
simulated runs of the same camera (never copying the simulator truth), and store them under
``/upstream`` of the sample file (``calib.camera.io.write_upstream``) together with a
sentence naming the module and the run they come from; ``run()`` reads them with
``calib.camera.io.upstream_input`` (an explicit ``config`` value takes precedence) and
writes the source of every upstream input into its output meta.
"""
from __future__ import annotations

import numpy as np
import astropy.units as u

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError

__all__ = ["dark_baseline_product", "enf_sq_product", "ffactor_gain_product"]


def dark_baseline_product(camera, seed: int, n_events: int = 100, **sim_kw):
    """Baseline and electronic noise per sample (n_gains, n_pixels) [adc] of a simulated dark
    run, by ``calib.camera.baseline`` (sigma-clipped mean and std); returns (baseline, noise,
    source)."""
    from calib.camera.baseline import dark_baseline
    from calib.camera.simulation import simulate_waveforms

    dark = simulate_waveforms(camera, "dark", n_events, seed, **sim_kw)
    t = dark_baseline(dark.waveforms, saturation_adc=camera.saturation_adc)
    names = ("high", "low") if camera.n_gains == 2 else ("single",)
    base = np.stack([np.asarray(t[f"baseline_{n}"], float) for n in names])
    noise = np.stack([np.asarray(t[f"baseline_std_{n}"], float) for n in names])
    source = (f"calib.camera.baseline (I-DATA-xST-0102): computed from a {n_events}-event "
              f"simulated dark run (seed {seed})")
    return base, noise, source


def enf_sq_product(camera, seed: int, n_pixels: int = 4, n_events: int = 10000):
    """Camera-mean F² of a simulated low-illumination (λ ≈ 1) + pedestal run of the first
    ``n_pixels`` pixels, high gain, fitted by ``calib.camera.enf``; returns (F², error, source)."""
    from calib.camera.crosstalk import _camera_subset
    from calib.camera.enf import fit_spe_spectra
    from calib.camera.simulation import simulate_charges

    # live, quiet pixels (the sample writer may use the truth to choose what to simulate)
    pix = np.flatnonzero(~np.asarray(camera.dead) & ~np.asarray(camera.noisy))[:n_pixels]
    sub = _camera_subset(camera, pix)
    spe = simulate_charges(sub, "spe", n_events, seed, intensity=1.0, nsb=False)
    ped = simulate_charges(sub, "pedestal", n_events, seed + 1, nsb=False)
    t = fit_spe_spectra(spe.charge[:, 0], ped.charge[:, 0], pixel_ids=pix,
                        saturation=camera.saturation_adc * spe.window)
    ok = np.asarray(t["fit_ok"], bool)
    if not ok.any():
        raise CalibrationError("no single-p.e. fit converged: no F² for the sample")
    f2 = float(np.mean(np.asarray(t["enf_sq"], float)[ok]))
    err = float(np.sqrt(np.sum(np.asarray(t["enf_sq_err"], float)[ok] ** 2)) / ok.sum())
    source = (f"calib.camera.enf (I-DATA-xST-0107): computed from a simulated {n_events}-event "
              f"single-p.e. run + pedestal run (seed {seed}) of the same camera, camera mean "
              f"of {int(ok.sum())} fitted pixels")
    return f2, err, source


def ffactor_gain_product(camera, seed: int, enf_sq: float, enf_source: str,
                         n_flatfield: int = 1000, n_pedestal: int = 500):
    """ADC per p.e. (n_gains, n_pixels) [adc] by ``calib.camera.ffactor`` on simulated
    flat-field + pedestal window charges; returns (gain, source)."""
    from calib.camera.ffactor import ffactor
    from calib.camera.simulation import simulate_charges

    ff = simulate_charges(camera, "flatfield", n_flatfield, seed)
    ped = simulate_charges(camera, "pedestal", n_pedestal, seed + 1)
    res = ffactor(ff.charge, ped.charge, enf_sq=enf_sq, n_gains=camera.n_gains,
                  saturated=ff.charge >= ff.window * camera.saturation_adc)
    gain = np.asarray(u.Quantity(res["adc_per_pe"]).value if hasattr(res["adc_per_pe"], "unit")
                      else res["adc_per_pe"], float)
    source = (f"calib.camera.ffactor (I-DATA-xST-0106): computed from a simulated "
              f"{n_flatfield}-event flat-field + {n_pedestal}-event pedestal run (seed {seed}) "
              f"with F² = {enf_sq:.4f} from {enf_source}")
    return gain, source
