import numpy as np
import pytest
from astropy.time import Time
import astropy.units as u

from calib.atmosphere import selection as S
from calib.contract import CalibrationError


def test_classification_thresholds():
    q, f = S.classify([0.95, 0.95, 0.7, 0.95, 0.95, np.nan],
                      [0.99, 0.80, 0.99, 0.50, 0.99, 0.99],
                      [0.0, 0.0, 0.0, 0.0, 0.5, 0.0])
    assert q.tolist() == [S.Quality.GOOD, S.Quality.CORRECTABLE, 0, 0, 0, 0]
    assert f[2] == S.SelectionFlag.LOW_CTC and f[3] == S.SelectionFlag.LOW_TRANSMISSION
    assert f[4] == S.SelectionFlag.CLOUDY and f[5] == S.SelectionFlag.MISSING_CTC
    # VAOD 0.04 is the boundary between good and correctable
    q, _ = S.classify([1, 1], [np.exp(-0.039), np.exp(-0.041)], [0, 0])
    assert q.tolist() == [S.Quality.GOOD, S.Quality.CORRECTABLE]
    # a missing cloud fraction can be allowed explicitly
    q, _ = S.classify([1.0], [0.99], [np.nan], S.SelectionConfig(allow_missing=("cloud_fraction",)))
    assert q[0] == S.Quality.GOOD


def test_gti_merging_and_min_duration():
    start = Time("2025-01-01T00:00:00") + np.arange(10) * u.min
    stop = start + 1 * u.min
    q = np.array([2, 2, 2, 1, 1, 0, 2, 0, 2, 2])
    gti = S.good_time_intervals(start, stop, q, min_duration_s=90)
    assert list(gti["quality"]) == [2, 1, 2]
    assert np.allclose(gti["duration"].value, [180, 120, 120])


def test_bad_input():
    with pytest.raises(CalibrationError):
        S.classify([1, 1], [1], [0, 0])
    with pytest.raises(CalibrationError):
        S.classify([], [], [])
    with pytest.raises(CalibrationError):
        S.classify([1], [1.5], [0])


def test_contract(tmp_path):
    path = S.CONTRACT.sample(tmp_path, 3)
    gti = S.CONTRACT.run(path, tmp_path / "gti.ecsv", {})
    ev = S.CONTRACT.check(gti, path)
    assert ev.passed, ev.metrics
    assert ev.metrics["n_gti"] >= 5
    # a stricter configuration changes the GTIs and the check notices
    strict = S.CONTRACT.run(path, tmp_path / "gti2.ecsv", {"transmission_min": 0.9})
    assert not S.CONTRACT.check(strict, path).passed


def test_designed_false_fail_rate(tmp_path):
    from calib.atmosphere import selection as S
    rate = S.designed_false_fail_rate()
    assert 0 < rate < 1e-4            # the closest values (CTC of the thick dust) sit 5 sigma from a cut
    path = S.CONTRACT.sample(tmp_path, 0)
    assert S.CONTRACT.check(S.CONTRACT.run(path, tmp_path / "g.ecsv", {}), path).false_fail_rate == rate
