import numpy as np
import pytest

from calib.array import _common as C
from calib.array import octocopter as O
from calib.contract import CalibrationError


def _sim(seed, n_flashes=200):
    rng = np.random.default_rng(seed)
    arr = C.simulated_array(rng)
    n = len(arr["type"])
    src = arr["position"] + np.column_stack([rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), np.full(n, 600.0)])
    mean_pe = arr["throughput"] * arr["mirror_area"] * O.photon_density(3.5e8, src, arr["position"])
    q = C.flash_charges(rng, mean_pe, arr["enf_sq"], n_flashes, 0.02)
    return arr, src, q


def test_photon_density_geometry():
    tel = np.zeros((2, 3))
    src = np.array([[0, 0, 500.0], [0, 0, 1000.0]])
    rho = O.photon_density(1e9, src, tel)
    # inverse square law (slightly more extinction on the longer path)
    assert rho[0] / rho[1] == pytest.approx(4.0, rel=0.02) and rho[0] / rho[1] > 4.0
    assert O.beam_profile(20.0, 20.0) == pytest.approx(np.exp(-0.5))


def test_relative_throughputs_recover_truth_across_types():
    pulls = []
    for seed in range(4):
        arr, src, q = _sim(seed)
        eff, err, flag = O.throughputs(q, 3.5e8, src, arr["position"], arr["mirror_area"], position_error_m=0.0,
                                       source_stability=0.0)
        r, r_err = C.relative_throughputs(eff, err)
        r_true = arr["throughput"] / arr["throughput"].mean()
        pulls.append((r - r_true) / r_err)
        # absolute throughput per unit area: LST, MST and SST on one scale
        assert np.allclose(eff / arr["throughput"], 1, atol=5 * np.max(err / eff))
    pulls = np.concatenate(pulls)
    assert 0.8 < pulls.std() < 1.25 and abs(pulls.mean()) < 0.35


def test_flags_and_bad_input():
    arr, src, q = _sim(1, 20)
    q[3] = 0.0
    q[5, 2] = np.nan
    eff, err, flag = O.throughputs(q, 3.5e8, src, arr["position"], arr["mirror_area"])
    assert flag[3] == 1 and flag[5] == 1 and np.isnan(eff[3]) and np.isnan(eff[5])
    assert np.sum(flag) == 2
    with pytest.raises(CalibrationError):
        O.throughputs(q[:, :1], 3.5e8, src, arr["position"], arr["mirror_area"])
    with pytest.raises(CalibrationError):
        O.throughputs(q[:5], 3.5e8, src, arr["position"], arr["mirror_area"])
    with pytest.raises(CalibrationError):
        C.relative_throughputs(np.array([1.0, np.nan]), np.array([0.1, 0.1]))


def test_contract(tmp_path):
    path = O.CONTRACT.sample(tmp_path, 3)
    table = O.CONTRACT.run(path, tmp_path / "octo.ecsv", {})
    ev = O.CONTRACT.check(table, path)
    assert ev.passed, ev.metrics
    table["relative_throughput"][0] *= 1.05
    assert not O.CONTRACT.check(table, path).passed


def test_bad_source_and_geometry_raise():
    arr, src, q = _sim(2, 10)
    for intensity in (0.0, np.nan, -1.0):
        with pytest.raises(CalibrationError, match="intensity"):
            O.throughputs(q, intensity, src, arr["position"], arr["mirror_area"])
    bad_src = src.copy()
    bad_src[4, 2] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        O.throughputs(q, 3.5e8, bad_src, arr["position"], arr["mirror_area"])
    with pytest.raises(CalibrationError, match="distances"):
        O.throughputs(q, 3.5e8, arr["position"], arr["position"], arr["mirror_area"])


def test_beam_width_truth_is_drawn_and_propagated(tmp_path):
    import h5py
    path = O.CONTRACT.sample(tmp_path, 3)
    with h5py.File(path) as f:
        assert float(f["truth"].attrs["beam_sigma_deg"]) != float(f.attrs["beam_sigma_deg"])
    t = O.CONTRACT.run(path, tmp_path / "o.ecsv", {})
    ev = O.CONTRACT.check(t, path)
    assert ev.passed and "relative_throughput_syst_shift" in t.colnames and 0 < ev.false_fail_rate <= 0.01
