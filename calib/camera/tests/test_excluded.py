"""Tests of the excluded-pixel flags (I-DATA-xST-0112)."""
import numpy as np
import pytest

from calib.camera.chain import calibrate_runs
from calib.camera.excluded import (
    CONTRACT,
    ExclusionReason,
    exclusion_bits,
    excluded_pixels_table,
    reasons_of,
)
from calib.camera.simulation import make_camera, simulate_waveforms
from calib.contract import CalibrationError


def test_bits_combine_masks_per_gain():
    a = np.array([True, False, False, False])
    b = np.array([[False, True, False, False], [False, False, True, False]])
    bits = exclusion_bits(4, 2, pedestal_std=a, time=b, gain=None)
    assert bits.shape == (2, 4)
    assert bits[0].tolist() == [2, 32, 0, 0] and bits[1].tolist() == [2, 0, 32, 0]
    t = excluded_pixels_table(bits)
    assert t["exclusion_bits"].tolist() == [2, 32, 32, 0]
    assert t["excluded"].tolist() == [True, True, True, False]
    assert t["outlier_mask"].shape == (4, 2)
    assert reasons_of(34) == ["PEDESTAL_STD", "TIME"]
    assert t.meta["exclusion_bits"] and "FLATFIELD_MEDIAN" in t.meta["exclusion_bits"]


def test_validity_threshold_at_ten_percent():
    bits = np.zeros((1, 100), np.uint16)
    bits[0, :9] = ExclusionReason.GAIN
    assert excluded_pixels_table(bits).meta["is_valid"] is True
    bits[0, 9] = ExclusionReason.TIME  # 10 % faulty: invalid
    t = excluded_pixels_table(bits)
    assert t.meta["is_valid"] is False and t.meta["faulty_fraction"] == pytest.approx(0.1)


def test_bad_masks_raise():
    with pytest.raises(CalibrationError, match="shape"):
        exclusion_bits(4, 1, time=np.zeros(5, bool))
    with pytest.raises(CalibrationError, match="unknown exclusion reason"):
        exclusion_bits(4, 1, cosmic_ray=np.zeros(4, bool))


@pytest.fixture(scope="module")
def lst_chain():
    cam = make_camera("lst", seed=0)
    ff = simulate_waveforms(cam, "flatfield", 400, seed=1)
    ped = simulate_waveforms(cam, "pedestal", 300, seed=2)
    return cam, calibrate_runs(ped.waveforms, ff.waveforms, cam)


def test_flagged_pixels_are_exactly_dead_and_noisy(lst_chain):
    """LST camera from waveforms: 7 dead + 7 noisy pixels among 1,855, no more, no less."""
    cam, res = lst_chain
    union = np.bitwise_or.reduce(res["exclusion_bits"], axis=0)
    truth = cam.dead | cam.noisy
    assert truth.sum() == 14
    np.testing.assert_array_equal(union != 0, truth)
    # the reasons make sense: a dead pixel has no flat-field signal, a noisy one a wide pedestal
    assert np.all(union[cam.dead] & ExclusionReason.FLATFIELD_MEDIAN)
    assert np.all(union[cam.dead] & ExclusionReason.GAIN)
    assert np.all(union[cam.noisy] & ExclusionReason.PEDESTAL_STD)
    t = excluded_pixels_table(res["exclusion_bits"])
    assert t.meta["is_valid"] is True and t.meta["n_excluded"] == 14


def test_contract_sample_run_check(tmp_path):
    path = CONTRACT.sample(tmp_path, 0)
    table = CONTRACT.run(path, tmp_path / "excluded.ecsv", {})
    assert table.meta["module"] == "calib.camera.excluded"
    ev = CONTRACT.check(table, path)
    assert ev.passed, ev.to_dict()


def test_run_does_not_read_the_truth_excluded(tmp_path):
    """run() rests on evidence: the same result on a copy of the sample without any truth;
    its upstream input enf_sq comes from the sample's /upstream group (computed by the upstream
    module) or from config -- without either, run() refuses instead of using the truth."""
    import h5py
    import pytest

    from calib.camera.tests.truthless import assert_run_ignores_truth, truthless_copy
    from calib.contract import CalibrationError, load_contract

    ref, path = assert_run_ignores_truth("calib.camera.excluded", tmp_path)
    assert "computed from" in ref.meta["upstream_inputs"]
    bare = truthless_copy(path, tmp_path / "no_upstream")
    with h5py.File(bare, "a") as fh:
        del fh["upstream"]
    contract, _ = load_contract("calib.camera.excluded")
    with pytest.raises(CalibrationError, match="enf_sq"):
        contract.run(bare, tmp_path / "none.ecsv", {})


def test_true_response_outliers_are_expected_exclusions(tmp_path):
    """Camera seed 52 has a pixel whose TRUE response (relative_qe x gain) is > 30 % off the
    camera median: the flat-field excludes it by design, and the check expects it (the former
    check counted it as a false positive; 12 of 400 cameras have such a pixel)."""
    path = CONTRACT.sample(tmp_path, 52)
    ev = CONTRACT.check(CONTRACT.run(path, tmp_path / "excluded.ecsv", {}), path)
    assert ev.metrics["n_true_response_outliers"] == 1
    assert ev.passed, ev.to_dict()
    assert ev.metrics["n_excluded"] == ev.metrics["n_true_bad"] + 1
    assert ev.false_fail_rate <= 0.01
