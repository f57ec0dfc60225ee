"""Camera modules on real CTA files (calib.realdata): readers, kernels vs the files' truth,
vs ctapipe, vs the LST-1 calibration product; the calib.camera.io hook.

The files come from ``scripts/fetch-real-data.py``; ctapipe from the ``ctapipe`` extra.  On a
developer machine without them the tests skip; with ``CI=true`` their absence is a failure.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calib.contract import CalibrationError
from calib.realdata import is_real_file, require_ctapipe
from calib.realdata.files import FILES, file_record, real_file

from calib.realdata.tests import absent, need_file


def _need(name: str) -> Path:
    """The fetched file ``name`` with ctapipe installed; skip (fail in CI) otherwise."""
    return need_file(name, ctapipe=True)


# ------------------------------------------------------------------ without ctapipe or files
def test_real_file_names():
    assert is_real_file("a/LST-1.1.Run02008.0000_first50.fits.fz")
    assert is_real_file("x.simtel.zst") and is_real_file("x.simtel.gz") and is_real_file("x.simtel")
    assert not is_real_file("pedestal_nsb.h5") and not is_real_file("x.fits")


def test_missing_ctapipe_is_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ctapipe", None)  # import ctapipe -> ImportError
    with pytest.raises(CalibrationError, match=r"install the ctapipe extra"):
        require_ctapipe("x.simtel.zst")
    from calib.camera.io import read_readout
    from calib.realdata.camera import _read_real_cached

    _read_real_cached.cache_clear()
    path = tmp_path / "x.simtel.zst"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(CalibrationError, match=r"reading x\.simtel\.zst needs ctapipe.*install the ctapipe extra"):
        read_readout(path)


def test_fetch_script_lists_every_pinned_file():
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, str(root / "scripts/fetch-real-data.py"), "--list"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split("\t")[0] for line in out] == list(FILES)
    assert all(len(line.split("\t")[2]) == 64 for line in out)


@pytest.mark.parametrize("name", list(FILES))
def test_fetched_files_match_their_pins(name):
    path = real_file(name)
    if path is None:
        absent(f"{name} not fetched")
    rec = file_record(path)
    assert rec["sha256"] == FILES[name].sha256 and rec["sha256_matches_pin"]


# ------------------------------------------------------------------ sim_telarray, true p.e.
def test_lst_simtel_extracted_over_true_and_ctapipe():
    from calib.realdata.evidence import simtel_extraction

    res, ev = simtel_extraction(_need("history_meta_75.simtel.zst"), camera="LSTCam")
    m = ev["metrics"]
    assert ev["file"] == "history_meta_75.simtel.zst" and ev["sha256_matches_pin"]
    assert ev["interfaces"] == ["I-DATA-xST-0101"] and ev["passed"], ev
    # 4 LSTCam images; 130 pixels > 50 p.e. (41 of them read in low gain: high gain saturated)
    assert m["n_pixels_above_threshold"] == 130 and m["n_low_gain"] == 41
    # same algorithm as ctapipe: equal to float32 rounding with ctapipe's correction
    assert m["identity_max_rel_dev"] < 1e-6 and m["identity_n_pixels"] > 500
    # extracted / true within 4 sigma_stat + 5 %: measured 0.976 +- 0.006 (ctapipe 0.976)
    assert abs(m["mean_extracted_over_true"] - 1) < 4 * m["mean_extracted_over_true_err"] + 0.05
    assert m["mean_extracted_over_true_err"] < 0.01
    # the only difference from ctapipe is the phase-averaged integration correction
    assert m["ours_over_ctapipe_median"] == pytest.approx(m["correction_ratio_phases32_over_ctapipe"][0],
                                                          rel=1e-5)
    # resolution for > 50 p.e. is a few per cent (ENF and NSB), not tens
    assert 0.02 < m["rms_extracted_over_true"] < 0.12


def test_nectarcam_phase_average_moves_towards_truth():
    """NectarCAM (60 samples of 1 ns): ctapipe's one-histogram correction is 3.3 % low; the
    phase-averaged one brings extracted/true from 0.929 to 0.960 (+- 0.009)."""
    from calib.realdata.evidence import simtel_extraction

    _, ev = simtel_extraction(_need("history_meta_75.simtel.zst"), camera="NectarCam")
    m = ev["metrics"]
    assert ev["passed"] and m["n_pixels_above_threshold"] == 34
    assert abs(m["mean_extracted_over_true"] - 1) < abs(m["ctapipe_mean_extracted_over_true"] - 1)
    assert m["correction_ratio_phases32_over_ctapipe"][0] == pytest.approx(1.0335, abs=5e-4)


def test_flashcam_flasher_events_with_true_pe():
    """FlashCam flasher events (~19 p.e. per pixel): 1722 pixels above 10 p.e."""
    from calib.realdata.evidence import simtel_extraction

    _, ev = simtel_extraction(_need("calib_true_pe.simtel.zst"), threshold_pe=10)
    m = ev["metrics"]
    assert ev["passed"] and m["camera"] == "FlashCam" and m["n_pixels_above_threshold"] > 1500
    assert m["identity_max_rel_dev"] < 1e-6
    assert abs(m["mean_extracted_over_true"] - 1) < 4 * m["mean_extracted_over_true_err"] + 0.05


def test_simtel_pedestal_events_match_the_file_pedestal():
    from calib.realdata.evidence import simtel_pedestal

    _, ev = simtel_pedestal(_need("calib_events.simtel.gz"))
    m = ev["metrics"]
    assert ev["passed"] and ev["interfaces"] == ["I-DATA-xST-0103"]
    assert abs(m["pull_high"]) < 4 and abs(m["pull_low"]) < 4


def test_damaged_simtel_file_is_a_sentence(tmp_path):
    from calib.realdata.camera import read_simtel

    src = _need("lst_with_photons.simtel.zst")
    cut = tmp_path / "cut.simtel.zst"
    cut.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(CalibrationError, match="truncated"):
        read_simtel(cut)


# ------------------------------------------------------------------ observed LST-1 R0
def test_lst1_r0_run2008_reads_and_extracts_like_ctapipe():
    from calib.realdata.evidence import lst_r0_extraction

    res, ev = lst_r0_extraction(_need("LST-1.1.Run02008.0000_first50.fits.fz"))
    m = ev["metrics"]
    assert ev["passed"] and ev["sha256_matches_pin"]
    assert m["n_events"] == 50 and m["n_samples"] == 36
    assert 380 < m["baseline_median_high_adc"] < 420 and 380 < m["baseline_median_low_adc"] < 420
    assert m["identity_max_rel_dev"] < 1e-6 and m["identity_n_pixels"] > 10_000
    assert res["charge_adc"].shape == (50, 2, 1855)


# ------------------------------------------------------------------ LST-1 calibration product
def test_lst_calibration_product_ffactor_and_flatfield():
    from calib.realdata.evidence import lst_calibration_product

    res, ev = lst_calibration_product(_need("calibration.Run2462.0000.hdf5"))
    m = ev["metrics"]
    assert ev["passed"] and set(ev["interfaces"]) == {"I-DATA-xST-0106", "I-DATA-xST-0110"}
    for g in ("high", "low"):
        # lstchain's median-signal F-factor reproduced on every usable pixel
        assert m[f"npe_median_over_file_maxdev_{g}"] < 1e-3
        assert m[f"dc_to_pe_median_over_file_maxdev_{g}"] < 1e-3
        # the mean signal is above the median of the skewed charge: n_pe higher by < 1 %
        assert 1 < m[f"npe_mean_over_file_median_{g}"] < 1.01
    assert m["relative_gain_rms_diff_high"] < m["relative_gain_stat_err_high"]
    assert np.nanmedian(res["n_pe_median"][0]) == pytest.approx(79.3, abs=0.5)


# ------------------------------------------------------------------ the calib.camera.io hook
def test_extraction_run_accepts_a_simtel_file(tmp_path):
    from calib.camera import extraction

    t = extraction.run(_need("history_meta_75.simtel.zst"), tmp_path / "q.ecsv", {})
    assert len(t) == 1855 and t.meta["n_events"] == 4
    assert np.isfinite(np.asarray(t["charge_mean_high"])).all()
    assert "sim_telarray camera monitoring" in t.meta["upstream_inputs"]


def test_pedestal_run_on_simtel_pedestal_event(tmp_path):
    from calib.camera import pedestal

    path = _need("calib_events.simtel.gz")
    with pytest.raises(CalibrationError, match="dark_noise"):
        pedestal.run(path, tmp_path / "p.ecsv", {})
    t = pedestal.run(path, tmp_path / "p.ecsv", {"dark_noise": 5.0, "enf_sq": 1.2,
                                                  "window_start": 6})
    # one pedestal event: every pixel is flagged "too few events" (bit 1), not silently averaged
    assert (np.asarray(t["flags_high"]) & 1).all()
    assert "laser calibration" in t.meta["upstream_inputs"]


def test_charge_data_of_a_file_without_pedestal_events():
    from calib.realdata.camera import real_charge_data

    with pytest.raises(CalibrationError, match="1 flat-field and 0 pedestal events"):
        real_charge_data(_need("calib_true_pe.simtel.zst"))


def test_camera_evidence_names_the_file_behind_each_interface():
    from calib.realdata.evidence import CHECKS, camera_evidence

    for name, _, _ in CHECKS:
        _need(name)
    evs = camera_evidence()
    assert len(evs) == len(CHECKS) and all(e["passed"] is True for e in evs)
    backed = {code for e in evs for code in e["interfaces"]}
    assert backed == {"I-DATA-xST-0101", "I-DATA-xST-0103", "I-DATA-xST-0106", "I-DATA-xST-0110"}
    assert all(e["sha256_matches_pin"] and 0 <= e["false_fail_rate"] <= 0.01 for e in evs)
