"""The Hipparcos catalogue (ctapipe's resource or the fetched copy) in the sky code: reader,
epoch J1991.25, agreement with the bundled Yale BSC, and modules 1001/1002/3011 run on it.

Skips when the catalogue is not available (neither the ctapipe extra nor the fetched file);
with ``CI=true`` its absence is a failure.
"""
from __future__ import annotations


import numpy as np
import pytest
from astropy.table import Table

from calib.contract import CalibrationError, write_table
from calib.realdata.files import FILES

from calib.realdata.tests import absent


@pytest.fixture(scope="module")
def hip():
    from calib.realdata.sky import hipparcos_catalog, hipparcos_path

    try:
        hipparcos_path()
    except CalibrationError as exc:
        absent(str(exc))
    return hipparcos_catalog()


def test_hipparcos_reader(hip):
    from calib.realdata.files import file_record
    from calib.realdata.sky import hipparcos_path

    assert file_record(hipparcos_path())["sha256"] == FILES["hipparcos_star_catalog.fits.gz"].sha256
    assert hip.meta["epoch"] == "J1991.25" and hip.meta["frame"] == "ICRS"
    # 41,074 entries to V = 8; the 17 without complete astrometry/photometry are dropped
    assert len(hip) + hip.meta["n_dropped_incomplete"] == 41074 and hip.meta["n_dropped_incomplete"] < 50
    assert np.all(hip["vmag"].value <= 8.0)
    arcturus = hip[hip["hip"] == 69673][0]        # alpha Boo = HR 5340
    assert arcturus["hr"] == 5340
    assert arcturus["pm_ra"] == pytest.approx(-1093.45, abs=0.01)
    assert arcturus["pm_dec"] == pytest.approx(-1999.40, abs=0.01)
    assert arcturus["vmag"] == pytest.approx(-0.05, abs=0.01)
    # nearly every Yale star has its HR number on its Hipparcos row
    assert 8900 < int(np.sum(hip["hr"] > 0)) <= 9096


def test_epoch_propagation_from_j1991_25(hip):
    """skycoord moves Hipparcos positions from J1991.25 (not from J2000): Arcturus by 19.9"."""
    from calib.sky.catalog import skycoord

    star = hip[hip["hip"] == 69673]
    at_2000 = skycoord(star)[0]
    raw = skycoord(Table(star, meta={**star.meta, "epoch": "J2000"}))[0]    # the epoch ignored
    years = 8.75
    expected = np.hypot(star["pm_ra"][0], star["pm_dec"][0]) * years / 1000.0
    assert at_2000.separation(raw).arcsec == pytest.approx(expected, abs=0.01)
    assert expected == pytest.approx(19.9, abs=0.1)
    # and to the epoch of an observation (2025.2): 33.95 years of motion
    from astropy.time import Time
    later = skycoord(star, Time("2025-03-15T00:00:00"))[0]
    assert later.separation(raw).arcsec == pytest.approx(expected / years * (Time("2025-03-15").jyear - 1991.25),
                                                         rel=1e-4)


def test_hipparcos_agrees_with_yale_bsc(hip):
    """Common stars: median 0.65" at J2000 (BSC5 rounding + its astrometry), high proper
    motion stars 0.59" with the J1991.25 -> J2000 propagation and 2.9" without; V within 0.015 mag."""
    from calib.realdata.sky import compare_with_yale

    res, ev = compare_with_yale()
    m = ev["metrics"]
    assert ev["passed"] and ev["file"] == "hipparcos_star_catalog.fits.gz" and ev["sha256_matches_pin"]
    assert ev["false_fail_rate"] == 0.0 and "I-DATA-COM-3011" in ev["interfaces"]
    assert m["n_yale"] == 9096 and m["matched_fraction"] > 0.99
    assert m["median_separation_arcsec"] < 1.0
    assert m["n_high_pm"] > 500
    assert m["high_pm_median_separation_arcsec"] < 1.0
    assert m["high_pm_median_separation_no_epoch_propagation_arcsec"] > 2.5     # the epoch matters
    assert abs(m["median_dV_mag"]) < 0.02 and m["robust_sigma_dV_mag"] < 0.05
    assert len(res) == m["n_matched"]


def test_use_catalog_and_unknown_catalogue(hip):
    from calib.sky.catalog import bright_stars, use_catalog

    assert "hip" not in bright_stars(4.0).colnames                # the default stays the Yale BSC
    with use_catalog("hipparcos"):
        inner = bright_stars(4.0)
        assert "hip" in inner.colnames and inner.meta["epoch"] == "J1991.25"
    assert "hip" not in bright_stars(4.0).colnames
    with pytest.raises(CalibrationError, match="unknown star catalogue 'tycho'"):
        bright_stars(4.0, catalog="tycho")


def test_missing_catalogue_is_a_sentence(monkeypatch):
    import calib.realdata.sky as sky

    monkeypatch.setattr(sky.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sky, "real_file", lambda name: None)
    with pytest.raises(CalibrationError, match=r"install the ctapipe extra.*fetch-real-data"):
        sky.hipparcos_path()


def test_pointing_model_on_hipparcos(hip, tmp_path):
    """I-DATA-xST-1002 on 300 observations of Hipparcos stars; and the real-run input (star
    HIP number + time + encoders, no positions): the module computes the apparent places from
    the catalogue and gives the same fit (to 0.01", the ECSV time rounding; errors 0.4-7")."""
    from calib.pointing.pointing_model import CONTRACT
    from calib.realdata.sky import pointing_model_on_hipparcos

    res, ev = pointing_model_on_hipparcos(tmp_path, seed=0)
    assert ev["passed"] and ev["interfaces"] == ["I-DATA-xST-1002"] and ev["sha256_matches_pin"]
    assert all(abs(p) < 4 for p in ev["pulls"].values()) and ev["false_fail_rate"] < 0.01
    sample = Table.read(tmp_path / "pointing_model_hipparcos_seed0.ecsv")
    assert "hip" in sample.colnames and sample.meta["catalog"].startswith("Hipparcos")
    real = sample.copy()
    real.remove_columns(["az_true", "el_true"])
    write_table(real, tmp_path / "real_run.ecsv")
    again = CONTRACT.run(tmp_path / "real_run.ecsv", tmp_path / "real_result.ecsv", {})
    assert np.max(np.abs(np.asarray(again["value"]) - np.asarray(res["value"]))) < 0.01
    real.remove_column("hip")
    real["hr"] = -1
    write_table(real, tmp_path / "bad.ecsv")
    with pytest.raises(CalibrationError, match="not in the HR catalogue"):
        CONTRACT.run(tmp_path / "bad.ecsv", tmp_path / "bad_result.ecsv", {})


def test_camera_alignment_on_hipparcos(hip, tmp_path):
    from calib.realdata.sky import camera_alignment_on_hipparcos

    res, ev = camera_alignment_on_hipparcos(tmp_path, seed=0)
    assert ev["passed"] and ev["interfaces"] == ["I-DATA-xST-1001"]
    assert all(abs(p) < 4 for p in ev["pulls"].values())
    assert ev["metrics"]["n_stars"] >= 5          # 9 Hipparcos stars (V < 7) within 2 deg at seed 0


@pytest.mark.slow
def test_allsky_on_hipparcos(hip, tmp_path):
    """I-DATA-COM-3011: image of the Hipparcos sky (2048 pixels), stars identified with the
    Hipparcos catalogue; 9 seeds (0-8) measured: all pass, |k - 0.15| <= 0.003 (sigma 0.002)."""
    from calib.realdata.sky import allsky_on_hipparcos

    res, ev = allsky_on_hipparcos(tmp_path, seed=0)
    m = ev["metrics"]
    assert ev["passed"] and ev["interfaces"] == ["I-DATA-COM-3011"], ev["summary"]
    assert abs(ev["pulls"]["extinction"]) < 4 and m["n_cells"] >= 8
    assert m["cloud_fraction_max_switched_stars"] <= 4


def test_fetched_copy_without_ctapipe(monkeypatch):
    """Without ctapipe the fetched copy (the same file, pinned SHA-256) is used."""
    import calib.realdata.sky as sky
    from calib.realdata.files import real_file

    if real_file(sky.HIPPARCOS) is None:
        absent("hipparcos_star_catalog.fits.gz not fetched")
    monkeypatch.setattr(sky.importlib.util, "find_spec", lambda name: None)
    assert sky.hipparcos_path() == real_file(sky.HIPPARCOS)
