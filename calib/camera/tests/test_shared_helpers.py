"""Shared helpers: calib._jit (numba cache fallback), calib._stats, flat HDF5 sample files,
calib.camera.stats (one sigma-clipping implementation)."""
import pathlib
import subprocess
import sys

import numba
import numba.core.caching as caching
import numpy as np
import pytest

from calib._jit import njit
from calib._stats import numerical_hessian
from calib.camera.io import read_arrays, write_arrays
from calib.camera.stats import outlier_mask, sigma_clipped_pixel_stats
from calib.contract import CalibrationError

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _no_cache_locator(monkeypatch):
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    monkeypatch.setattr(impl, "_locator_classes", [])


def test_njit_falls_back_to_memory_without_a_writable_cache(monkeypatch):
    _no_cache_locator(monkeypatch)

    def add_one(x):
        return x + 1

    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(add_one)       # what plain numba does at import time
    assert njit(add_one)(41) == 42            # bare decorator
    assert njit(parallel=False)(add_one)(1) == 2
    with pytest.raises(TypeError, match="cache"):
        njit(cache=False)


def test_camera_modules_import_and_run_without_a_writable_cache():
    """A read-only install: every calib.camera kernel module imports and computes."""
    code = (
        "import numba.core.caching as c\n"
        "impl = getattr(c, 'CacheImpl', None) or getattr(c, '_CacheImpl')\n"
        "impl._locator_classes = []\n"
        "import numpy as np\n"
        "from calib.camera import extraction, simulation, ffactor, flatfield, stats, chain, "
        "pedestal, timing, excluded\n"
        "import calib.atmosphere.lidar, calib.atmosphere.allsky\n"
        "w = np.zeros((1, 2, 10), np.float32); w[0, :, 5] = 2.0; w[0, :, 6] = 1.0\n"
        "d = extraction.local_peak_window_sum(w, 3, 1)\n"
        "assert d.charge[0, 0] == 3 and d.charge[0, 1] == 3\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_no_plain_numba_njit_left_in_calib_camera():
    for path in (ROOT / "calib" / "camera").glob("*.py"):
        text = path.read_text()
        assert "numba.njit" not in text and "from numba import" not in text, path.name


def test_numerical_hessian_is_exact_for_a_quadratic():
    a = np.array([[2.0, 0.3, -0.1], [0.3, 1.0, 0.2], [-0.1, 0.2, 4.0]])
    f = lambda v: 0.5 * v @ a @ v + v.sum()  # noqa: E731
    np.testing.assert_allclose(numerical_hessian(f, np.array([0.1, -0.2, 0.3]), [1e-3] * 3), a,
                               atol=1e-6)
    with pytest.raises(ValueError):
        numerical_hessian(f, np.zeros(3), [0.0, 1e-3, 1e-3])


def test_flat_sample_files_round_trip_and_fail_clearly(tmp_path):
    p = write_arrays(tmp_path / "sub" / "s.h5", {"q": np.arange(3.0), "true_gain": np.ones(2)},
                     {"seed": 4})
    d, attrs = read_arrays(p, ("q", "true_gain"))
    assert d["q"].tolist() == [0, 1, 2] and attrs["seed"] == 4
    with pytest.raises(CalibrationError, match="lacks the datasets"):
        read_arrays(p, ("pedestal_charge",))
    with pytest.raises(CalibrationError, match="cannot read"):
        read_arrays(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CalibrationError, match="cannot read"):
        read_arrays(tmp_path / "text.h5")


def test_clipping_centres_and_plain_statistics():
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, (4000, 3)).astype(np.float32)
    x[:40, 1] = 1e4  # 1 % far outliers in column 1
    x[5, 2] = np.nan
    for center in ("mean", "median"):
        st = sigma_clipped_pixel_stats(x, 4.0, 5, center=center)
        assert st["n_used"][1] <= 3960 and abs(st["mean"][1] - 10) < 4 * 2 / np.sqrt(3960)
        assert abs(st["std"][1] / 2 - 1) < 4 / np.sqrt(2 * 3960)
    plain = sigma_clipped_pixel_stats(x, clip_iterations=0)
    np.testing.assert_allclose(plain["mean"][2], np.nanmean(x[:, 2].astype(float)), rtol=1e-12)
    np.testing.assert_allclose(plain["std"][2], np.nanstd(x[:, 2].astype(float), ddof=1), rtol=1e-9)
    assert plain["n_used"][2] == 3999
    with pytest.raises(CalibrationError, match="center"):
        sigma_clipped_pixel_stats(x, center="mode")
    with pytest.raises(CalibrationError, match="clip_sigma"):
        sigma_clipped_pixel_stats(x, clip_sigma=0)


def test_robust_outlier_mask_is_not_widened_by_the_outliers():
    v = np.random.default_rng(1).normal(0, 1, 1000)
    v[:100] = 20.0  # 10 % outliers at 20 sigma inflate the plain std to ~6
    m = outlier_mask(v, 5.0)
    assert m[:100].all() and m[100:].sum() == 0
    assert not (np.abs(v - np.median(v)) > 5 * v.std())[:100].any()  # the plain rule misses them
    v[140] = np.nan
    assert outlier_mask(v, 5.0)[140]
