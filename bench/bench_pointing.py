"""Benchmark of the pointing and optics kernels (issue 6).

1. Fit a TPOINT pointing model to 10,000 star observations (real catalogue stars, AltAz at
   CTAO-North; one vectorised coordinate transform for all time batches).
2. Compute r80 for 1,000 CCD star images (96 x 96 stamps): screening, background, r80, moments.
Target: each under 1 s.  Setup (simulation) times are printed separately.  Best of 3 runs.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import astropy.units as u  # noqa: E402
import numpy as np  # noqa: E402

from calib.pointing.pointing_model import fit_pointing_model  # noqa: E402
from calib.pointing.psf import containment_radius, measure_psf  # noqa: E402
from calib.pointing.simulation import simulate_pointing_run, simulate_star_images  # noqa: E402
from calib.pointing.star_images import subtract_background  # noqa: E402

TARGET_S = 1.0


CPU = {}


def best_of(fn, repeat=3):
    """Best wall time of ``repeat`` runs (CPU time of that run kept in CPU[fn]: the machine is shared)."""
    best, out = None, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best:
            best, CPU[fn] = wall, cpu
    return best, out


def expected_rms(obs, model) -> float:
    """Residual rms per axis a correct fit should leave: the simulated centring noise plus the part of
    the simulated mount geometry the fitted terms cannot represent (as in the module's check)."""
    from calib.pointing.pointing_model import design_matrix
    from calib.pointing.simulation import mount_encoder_offsets

    truth = json.loads(obs.meta["truth"])
    az, el = obs["az_true"].quantity, obs["el_true"].quantity
    d_az, d_el = mount_encoder_offsets(truth["mount"], az, el)
    true_offsets = np.concatenate([(d_az * np.cos(el)).to_value(u.arcsec), d_el.to_value(u.arcsec)])
    design = design_matrix(az, el, tuple(model["term"]))
    expected, *_ = np.linalg.lstsq(design, true_offsets, rcond=None)
    rss_unmodelled = float(np.sum((true_offsets - design @ expected) ** 2))
    return float(np.sqrt(truth["noise_arcsec_per_axis"] ** 2 + rss_unmodelled / int(model.meta["dof"])))


def main() -> int:
    t0 = time.perf_counter()
    obs = simulate_pointing_run(n_observations=10_000, site="north", seed=42, n_times=400)
    t_sim = time.perf_counter() - t0
    args = [obs[c].quantity for c in ("az_true", "el_true", "az_encoder", "el_encoder")]
    fit = lambda: fit_pointing_model(*args)  # noqa: E731
    t_fit, model = best_of(fit)
    print(f"simulate 10,000 star observations (400 time batches, one AltAz transform): {t_sim:.2f} s (setup)")
    print(f"pointing-model fit, 10,000 observations, 7 TPOINT terms: {t_fit * 1e3:.1f} ms "
          f"(CPU {CPU[fit] * 1e3:.1f} ms) "
          f"(residual rms {model.meta['residual_rms_per_axis_arcsec']:.2f}\" per axis, expected "
          f"{expected_rms(obs, model):.2f}\" = simulated noise + mount terms the model lacks; "
          f"condition number {model.meta['condition_number']:.0f})  target < {TARGET_S:.0f} s: "
          f"{'MET' if t_fit < TARGET_S else 'NOT MET'}")

    t0 = time.perf_counter()
    stars = simulate_star_images(n_images=1000, seed=42, site="north")
    t_sim = time.perf_counter() - t0
    images = np.asarray(stars["image"], dtype=np.float64)
    print(f"simulate 1,000 star images (96 x 96, ~{int(np.mean(stars['n_photons']))} photons each): {t_sim:.2f} s (setup)")
    sub, _ = subtract_background(images)
    kernel = lambda: containment_radius(sub, 2.5)  # noqa: E731
    full = lambda: measure_psf(images, stars["theta"], 2.5 * u.mm, 4095)  # noqa: E731
    t_r80, r80 = best_of(kernel)
    t_all, table = best_of(full)
    print(f"r80 kernel, 1,000 background-subtracted images: {t_r80 * 1e3:.1f} ms (CPU {CPU[kernel] * 1e3:.1f} ms)  "
          f"target < {TARGET_S:.0f} s: "
          f"{'MET' if t_r80 < TARGET_S else 'NOT MET'}")
    print(f"full PSF measurement (screen + background + r80 + moments), 1,000 images: {t_all * 1e3:.1f} ms "
          f"(CPU {CPU[full] * 1e3:.1f} ms)  "
          f"target < {TARGET_S:.0f} s: {'MET' if t_all < TARGET_S else 'NOT MET'}")
    r80_true = json.loads(stars.meta["truth"])["r80_mm_on_grid"][0]      # truth of the simulated sample
    print(f"  r80 on axis (median of {int(np.sum(stars['theta'] == 0))} images): "
          f"{np.median(table['r80'].value[np.asarray(stars['theta']) == 0]):.2f} mm (truth {r80_true:.2f} mm)")
    return 0 if (t_fit < TARGET_S and t_r80 < TARGET_S and t_all < TARGET_S) else 1


if __name__ == "__main__":
    raise SystemExit(main())
