import numpy as np
import pytest

from calib.array import _common as C
from calib.array import clf
from calib.contract import CalibrationError


def test_side_scattered_photons_physics():
    tel = np.array([[3000.0, 0, 0], [6000.0, 0, 0]])
    n = clf.photons_at_telescopes(5e-3, 355.0, (0.0, 0.0), tel, [1.0, 1.0], h_range=(2990, 3010))
    assert n[0] / n[1] > 3.0                                  # ~ 1/R^2 and a larger scattering angle
    n2 = clf.photons_at_telescopes(1e-2, 355.0, (0.0, 0.0), tel, [1.0, 1.0], h_range=(2990, 3010))
    assert np.allclose(n2 / n, 2.0)                           # linear in pulse energy
    aer = clf.photons_at_telescopes(5e-3, 355.0, (0.0, 0.0), tel, [1.0, 1.0], h_range=(2990, 3010), vaod_top=0.2)
    assert np.all(aer != n)
    # Henyey-Greenstein normalisation
    th = np.linspace(0, np.pi, 4001)
    assert np.trapezoid(clf.henyey_greenstein(th) * 2 * np.pi * np.sin(th), th) == pytest.approx(4 * np.pi, rel=1e-3)


def test_relative_throughputs_over_seeds(tmp_path):
    pulls = []
    for seed in range(4):
        path = clf.CONTRACT.sample(tmp_path, seed)
        t = clf.CONTRACT.run(path, tmp_path / "c.ecsv", {})
        import h5py
        with h5py.File(path) as f:
            truth = f["truth"]["throughput"][()]
        r_true = truth / truth.mean()
        pulls.append((np.asarray(t["relative_throughput"]) - r_true) / np.asarray(t["relative_throughput_err"]))
        # cross-calibration between types: each type's mean relative throughput is right
        for typ in ("LST", "MST", "SST"):
            sel = np.asarray(t["type"]) == typ
            assert np.mean(np.asarray(t["relative_throughput"])[sel] / r_true[sel]) == pytest.approx(1, abs=0.01)
        assert np.all(np.asarray(t["relative_throughput_syst"]) < 0.01)
    pulls = np.concatenate(pulls)
    assert 0.8 < pulls.std() < 1.25 and abs(pulls.mean()) < 0.35


def test_bad_input():
    rng = np.random.default_rng(0)
    arr = C.simulated_array(rng)
    q = rng.normal(1000, 30, (20, 10))
    e = np.full(10, 5e-3)
    q[2] = np.nan
    eff, err, flag, rel, syst = clf.throughputs(q, e, (2500.0, 0.0), arr["position"], arr["mirror_area"])
    assert flag[2] == 1 and np.isnan(rel[0][2])
    with pytest.raises(CalibrationError, match="energy"):
        clf.throughputs(q, np.zeros(10), (2500.0, 0.0), arr["position"], arr["mirror_area"])
    with pytest.raises(CalibrationError):
        clf.throughputs(q[:, :5], e, (2500.0, 0.0), arr["position"], arr["mirror_area"])


def test_contract(tmp_path):
    path = clf.CONTRACT.sample(tmp_path, 7)
    table = clf.CONTRACT.run(path, tmp_path / "clf.ecsv", {})
    assert clf.CONTRACT.check(table, path).passed
    table["relative_throughput"][4] *= 1.05
    assert not clf.CONTRACT.check(table, path).passed


def test_true_vaod_is_drawn_from_its_error_and_the_check_uses_the_full_covariance(tmp_path):
    """The sample no longer uses the retrieval's own VAOD: the truth is drawn from the LIDAR error,
    and the check's chi^2 includes that correlated systematic."""
    import h5py
    from calib.array import clf as M
    vaods = []
    for seed in range(4):
        path = M.CONTRACT.sample(tmp_path / str(seed), seed)
        with h5py.File(path) as f:
            vaods.append(float(f["truth"].attrs["vaod"]))
            assert float(f.attrs["vaod"]) == 0.05
        t = M.CONTRACT.run(path, tmp_path / f"{seed}.ecsv", {})
        assert "relative_throughput_syst_shift" in t.colnames
        ev = M.CONTRACT.check(t, path)
        assert ev.passed and "chi2" in ev.pulls and 0 < ev.false_fail_rate <= 0.01
    assert all(v != 0.05 for v in vaods)
