import numpy as np
import pytest

from calib.array import illuminator as I
from calib.contract import CalibrationError


def test_ground_transmission():
    t = I.ground_transmission([0.0, 1000.0, 2000.0], 0.0)
    assert t[0] == 1.0 and t[2] == pytest.approx(t[1] ** 2)
    assert I.ground_transmission(1000.0, 1e-4) == pytest.approx(t[1] * np.exp(-0.1))


def test_flat_field_coefficients():
    rng = np.random.default_rng(1)
    f = 1 + 0.1 * rng.standard_normal((3, 50))
    q = 1000 * f[:, :, None] * np.ones((1, 1, 4))
    ff = I.flat_field_coefficients(q)
    assert np.allclose(ff, f / f.mean(axis=1, keepdims=True))


def test_contract_and_cross_type(tmp_path):
    path = I.CONTRACT.sample(tmp_path, 2)
    table = I.CONTRACT.run(path, tmp_path / "ill.ecsv", {})
    ev = I.CONTRACT.check(table, path)
    assert ev.passed, ev.metrics
    for typ in ("LST", "MST", "SST"):
        assert ev.metrics[f"{typ}_mean_ratio_to_truth"] == pytest.approx(1.0, abs=0.006)
    table["relative_throughput"][10] *= 1.04
    assert not I.CONTRACT.check(table, path).passed


def test_bad_input(tmp_path):
    import h5py
    from calib.array import _common as C
    path = I.CONTRACT.sample(tmp_path, 1, n_flashes=5, n_pixels=16)
    with h5py.File(path) as f:
        arr = C.load_array(f)
        q, unif, src = f["pixel_charges"][()], f["uniformity"][()], f.attrs["source_position"]
    q[0, 3, 1] = np.nan
    q[1] = 0.0
    eff, err, flag, rel, syst = I.throughputs(q, 2e11, src, arr["position"], arr["mirror_area"], unif)
    assert flag[0] == 1 and flag[1] == 1 and np.isnan(eff[:2]).all() and np.isfinite(eff[2:]).all()
    with pytest.raises(CalibrationError):
        I.throughputs(q[:, :, :1], 2e11, src, arr["position"], arr["mirror_area"], unif)
    with pytest.raises(CalibrationError):
        I.throughputs(np.zeros_like(q), 2e11, src, arr["position"], arr["mirror_area"], unif)


def test_aerosol_systematic_is_needed_when_the_truth_differs(tmp_path):
    """True aerosol extinction drawn from its error: the check passes with the correlated systematic
    and the chi^2 grows without it."""
    import h5py
    from calib.array import illuminator as M
    path = M.CONTRACT.sample(tmp_path, 2)
    with h5py.File(path) as f:
        assert float(f["truth"].attrs["aerosol_extinction"]) != float(f.attrs["aerosol_extinction"])
    t = M.CONTRACT.run(path, tmp_path / "i.ecsv", {})
    ev = M.CONTRACT.check(t, path)
    assert ev.passed and 0 < ev.false_fail_rate <= 0.01
    t.remove_column("relative_throughput_syst_shift")
    assert M.CONTRACT.check(t, path).metrics["chi2"] >= ev.metrics["chi2"]
