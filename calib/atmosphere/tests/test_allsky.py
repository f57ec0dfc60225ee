from dataclasses import replace

import astropy.units as u
import numpy as np
import pytest

from calib.atmosphere import allsky as A
from calib.contract import CalibrationError

CAM = replace(A.SAMPLE_CAMERA, n_pixels=768, psf_sigma_px=0.9)


@pytest.fixture(scope="module")
def clear_result():
    img = A.simulate_image(A.DEFAULT_TIME, "north", CAM, (), np.random.default_rng(21))
    return img, A.analyse_image(img, A.DEFAULT_TIME, "north", CAM)


def test_projection_roundtrip():
    alt = np.array([90.0, 60.0, 30.0, 20.0, 45.0])
    az = np.array([0.0, 90.0, 180.0, 270.0, 33.0])
    x, y = A.project(alt, az, CAM)
    alt2, az2 = A.unproject(x, y, CAM)
    assert np.allclose(alt2, alt) and np.allclose(az2[1:], az[1:])
    # north is up (smaller row), east is left (smaller column)
    xn, yn = A.project(45.0, 0.0, CAM)
    xe, ye = A.project(45.0, 90.0, CAM)
    assert yn < CAM.centre and xe < CAM.centre


def test_airmass():
    assert A.airmass(90.0) == pytest.approx(1.0, abs=1e-3)
    assert A.airmass(30.0) == pytest.approx(1.995, abs=0.01)


def test_clear_sky_stars_matched_and_extinction_recovered(clear_result):
    img, res = clear_result
    s = res.stars
    assert res.n_matched > 150          # photometric (isolated, sigma_m < 0.05) matched stars
    frac_det = np.sum(s["expected"] & s["detected"]) / np.sum(s["expected"])
    assert frac_det > 0.985
    assert abs(res.extinction - CAM.extinction) < 3 * res.extinction_err + 0.005
    assert res.extinction_err < 0.02
    f = np.asarray(res.cells["cloud_fraction"])
    assert np.all(f[np.isfinite(f)] < 0.05)


def test_cloud_fraction_per_cell_and_fov(tmp_path):
    path = A.CONTRACT.sample(tmp_path, 5)
    table = A.CONTRACT.run(path, tmp_path / "cells.ecsv", {})
    ev = A.CONTRACT.check(table, path)
    assert ev.passed, ev.metrics
    # the check can fail: a wrong cloud fraction in one cell
    table["cloud_fraction"][0] = table["cloud_fraction"][0] + 0.1
    assert not A.CONTRACT.check(table, path).passed


def test_thin_cloud_magnitude_deficit():
    clouds = (A.CloudPatch(70.0, 100.0, 15.0, 0.5),)
    img = A.simulate_image(A.DEFAULT_TIME, "north", CAM, clouds, np.random.default_rng(8))
    res = A.analyse_image(img, A.DEFAULT_TIME, "north", CAM)
    fov = A.cloud_fraction_in_fov(res, 70.0, 100.0, 10.0)
    assert fov["cloud_fraction"] < 0.1
    assert abs(fov["delta_mag"] - 0.5) < 3 * fov["delta_mag_err"] + 0.03
    clear = A.cloud_fraction_in_fov(res, 40.0, 280.0, 10.0)
    assert abs(clear["delta_mag"]) < 3 * clear["delta_mag_err"] + 0.03


def test_overcast_image_raises_or_flags():
    overcast = (A.CloudPatch(90.0, 0.0, 89.0, 10.0),)
    img = A.simulate_image(A.DEFAULT_TIME, "north", CAM, overcast, np.random.default_rng(3))
    with pytest.raises(CalibrationError, match="overcast"):
        A.analyse_image(img, A.DEFAULT_TIME, "north", CAM)
    res = A.analyse_image(img, A.DEFAULT_TIME, "north", CAM, nominal_calibration=True)
    f = np.asarray(res.cells["cloud_fraction"])
    assert np.all(f[np.isfinite(f)] > 0.95)
    assert np.all(np.asarray(res.cells["flag"]) & A.CellFlag.NOMINAL_PHOTOMETRY)


@pytest.mark.filterwarnings("ignore::erfa.ErfaWarning")
def test_bad_images():
    img = np.zeros((CAM.n_pixels, CAM.n_pixels), np.float32)
    img[5, 5] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        A.analyse_image(img, A.DEFAULT_TIME, "north", CAM)
    with pytest.raises(CalibrationError, match="square"):
        A.analyse_image(np.zeros((10, 20)), A.DEFAULT_TIME, "north", CAM)
    with pytest.raises(CalibrationError, match="pixels per side"):
        A.analyse_image(np.zeros((100, 100)), A.DEFAULT_TIME, "north", CAM)
    from calib.sky.altaz import iers_time_range
    with pytest.raises(CalibrationError, match="IERS"):       # after the installed IERS-B table
        A.predict_stars(iers_time_range()[1] + 30 * u.day, "north", CAM)
    with pytest.raises(CalibrationError, match="site"):
        A.predict_stars(A.DEFAULT_TIME, "moon", CAM)


def test_too_few_stars_in_small_cells_are_flagged(clear_result):
    img, _ = clear_result
    cam = replace(CAM, alt_edges_deg=(20.0, 90.0), az_sectors=(200,), min_stars_per_cell=10)
    res = A.analyse_image(img, A.DEFAULT_TIME, "north", cam)
    few = (np.asarray(res.cells["flag"]) & A.CellFlag.TOO_FEW_STARS) > 0
    assert few.sum() > 100 and np.all(np.isnan(res.cells["cloud_fraction"][few]))
    assert np.all(np.isfinite(res.cells["cloud_fraction"][~few]))
