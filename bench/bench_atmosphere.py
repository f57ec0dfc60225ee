"""Benchmark of the atmosphere modules (issue 5).

* LIDAR: Raman + Klett-Fernald + cloud retrieval of 1,000 profiles of 3,000 range bins
  (vectorised over profiles).
* All-Sky Camera: analysis of one 2,048 x 2,048 image (background, matched filter, detection,
  photometry, one vectorised catalogue transformation to AltAz, matching, extinction fit,
  cloud fraction per cell).

Run: .venv/bin/python bench/bench_atmosphere.py   (prints times; target < 1 s each, warm).
The first call in a process also loads numba's cached machine code and the catalogue/IERS
tables; it is printed separately as "cold".
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calib.atmosphere import allsky, lidar  # noqa: E402

TARGET_S = 1.0


def bench_lidar(repeats: int = 3) -> tuple[float, float]:
    cfg = lidar.GENERIC_RAMAN_LIDAR
    aerosol = lidar.AerosolProfile.boundary_layer_and_cloud()
    sim = lidar.simulate_lidar(cfg, aerosol, 1000, np.random.default_rng(1))
    kw = dict(pretrigger_elastic=sim["pretrigger_elastic"], pretrigger_raman=sim["pretrigger_raman"])
    t0 = time.perf_counter()
    lidar.retrieve(sim["elastic"], sim["raman"], cfg, **kw)
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = lidar.retrieve(sim["elastic"], sim["raman"], cfg, **kw)
        times.append(time.perf_counter() - t0)
    i3 = np.searchsorted(cfg.altitudes_m - cfg.site_altitude_m, 3000.0)
    print(f"  LIDAR: {sim['elastic'].shape[0]} profiles x {sim['elastic'].shape[1]} bins; "
          f"VAOD(3 km) mean {np.nanmean(res.vaod[:, i3]):.4f} (true {sim['vaod'][i3]:.4f}); "
          f"clouds found in {sum(1 for c in res.clouds if c)} profiles")
    return cold, min(times)


def bench_allsky(repeats: int = 3) -> tuple[float, float]:
    cam = allsky.AllSkyCamera(n_pixels=2048)
    img = allsky.simulate_image(allsky.DEFAULT_TIME, "north", cam, allsky.SAMPLE_CLOUDS, np.random.default_rng(1))
    t0 = time.perf_counter()
    allsky.analyse_image(img, allsky.DEFAULT_TIME, "north", cam)
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = allsky.analyse_image(img, allsky.DEFAULT_TIME, "north", cam)
        times.append(time.perf_counter() - t0)
    print(f"  All-sky: {img.shape[0]}x{img.shape[1]} image, {res.n_detections} detections, "
          f"{res.n_matched} matched stars, k = {res.extinction:.3f} +- {res.extinction_err:.3f} (true {cam.extinction})")
    return cold, min(times)


def main() -> int:
    print("bench_atmosphere")
    ok = True
    for name, fn in (("lidar_1000x3000", bench_lidar), ("allsky_2048x2048", bench_allsky)):
        cold, warm = fn()
        met = warm < TARGET_S
        ok &= met
        print(f"{name}: warm best-of-3 {warm:.3f} s (cold first call {cold:.3f} s); target < {TARGET_S:.1f} s: "
              f"{'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
