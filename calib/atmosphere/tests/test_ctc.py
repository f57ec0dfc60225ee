import numpy as np
import pytest

from calib.atmosphere import ctc
from calib.contract import CalibrationError


def test_rate_scaling_with_transmission():
    # a 10 % transmission loss lowers the rate by 1 - 0.9^1.7 = 16.4 %
    r1 = 1000.0
    r09 = r1 * 0.9 ** (ctc.GAMMA_CR - 1)
    assert 1 - r09 / r1 == pytest.approx(0.164, abs=0.001)
    t = ctc.telescope_coefficients([r1, r09], [0.2, 0.2], [1.0, 1.0])
    assert t[1] / t[0] == pytest.approx(0.9)


@pytest.fixture(scope="module")
def runs():
    sim = ctc.simulate_runs(n_runs=60, n_reference=10, rng=np.random.default_rng(4))
    res = ctc.cherenkov_transparency(sim["counts"], sim["duration_s"], sim["zenith_deg"],
                                     sim["muon_efficiency"], sim["gain"], sim["reference"])
    return sim, res


def test_ctc_recovers_transmission_within_errors(runs):
    sim, res = runs
    truth = sim["transmission_true"] / sim["transmission_true"][sim["reference"]].mean()
    pull = (res["ctc"] - truth) / res["ctc_err"]
    assert 0.7 < np.sqrt(np.mean(pull**2)) < 1.35 and np.max(np.abs(pull)) < 4
    # reference runs average to exactly 1 by construction of k_i
    assert np.mean(res["t"][sim["reference"]]) == pytest.approx(1.0, abs=1e-12)
    # each telescope type on its own also measures the transmission (cross-check between types)
    for typ in ("LST", "MST", "SST"):
        cols = sim["types"] == typ
        ratio = np.mean(res["t"][:, cols], axis=1) / truth
        assert abs(np.mean(ratio) - 1) < 0.005 and np.std(ratio) < 0.02


def test_lidar_cross_check(runs):
    sim, res = runs
    cc = ctc.lidar_cross_check(res["ctc"], res["ctc_err"], sim["lidar_transmission"], sim["reference"])
    assert abs(cc["ratio_mean"] - 1) < 4 * cc["ratio_mean_err"] + 0.005
    assert cc["pearson_r"] > 0.99


def test_lidar_transmission_weighting():
    alt = 2200 + np.arange(0, 20000, 50.0)
    vaod = 0.1 * np.clip((alt - 2200) / 1500, 0, 1)
    t0 = ctc.lidar_transmission_at_shower_max(alt, vaod, 0.0)
    assert t0 == pytest.approx(np.exp(-0.1), rel=1e-3)      # light comes from above the layer
    t40 = ctc.lidar_transmission_at_shower_max(alt, vaod, 40.0)
    assert t40 == pytest.approx(np.exp(-0.1 / np.cos(np.radians(40))), rel=1e-3)
    with pytest.raises(CalibrationError):
        ctc.lidar_transmission_at_shower_max(alt, np.full_like(alt, np.nan), 0.0)


def test_telescope_without_rate_is_flagged_and_excluded(runs):
    sim, _ = runs
    counts = sim["counts"].copy()
    counts[:, 3] = 0.0
    counts[5, 7] = np.nan
    mu = sim["muon_efficiency"].copy()
    mu[2, 1] = np.nan
    res = ctc.cherenkov_transparency(counts, sim["duration_s"], sim["zenith_deg"], mu, sim["gain"],
                                     sim["reference"])
    assert np.all(res["flag"][:, 3] & ctc.CTCFlag.NO_RATE)
    assert res["flag"][5, 7] & ctc.CTCFlag.NO_RATE and res["flag"][2, 1] & ctc.CTCFlag.NO_EFFICIENCY
    assert np.all(np.isnan(res["t"][:, 3])) and res["n_telescopes"][5] == 14
    # a telescope dead in every reference run cannot be normalised: flagged, excluded everywhere
    counts[sim["reference"], 9] = 0.0
    res = ctc.cherenkov_transparency(counts, sim["duration_s"], sim["zenith_deg"], mu, sim["gain"],
                                     sim["reference"])
    assert np.all(res["flag"][:, 9] & ctc.CTCFlag.NO_REFERENCE) and np.all(np.isnan(res["t"][:, 9]))
    assert np.all(np.isfinite(res["ctc"]))


def test_bad_input():
    sim = ctc.simulate_runs(n_runs=10, n_reference=3, rng=np.random.default_rng(1))
    args = (sim["duration_s"], sim["zenith_deg"], sim["muon_efficiency"], sim["gain"])
    with pytest.raises(CalibrationError, match="no telescope"):
        ctc.cherenkov_transparency(np.zeros_like(sim["counts"]), *args, sim["reference"])
    with pytest.raises(CalibrationError, match="reference"):
        ctc.cherenkov_transparency(sim["counts"], *args, np.zeros(10, bool))
    with pytest.raises(CalibrationError, match="shape"):
        ctc.cherenkov_transparency(sim["counts"][0], *args, sim["reference"])
    with pytest.raises(CalibrationError, match="duration"):
        ctc.cherenkov_transparency(sim["counts"], np.zeros(10), *args[1:], sim["reference"])
    # a run with a single usable telescope is flagged
    counts = sim["counts"].copy()
    counts[4, 1:] = 0
    res = ctc.cherenkov_transparency(counts, *args, sim["reference"])
    assert res["run_flag"][4] & ctc.CTCFlag.FEW_TELESCOPES


def test_contract(tmp_path):
    path = ctc.CONTRACT.sample(tmp_path, 2)
    table = ctc.CONTRACT.run(path, tmp_path / "ctc.ecsv", {})
    ev = ctc.CONTRACT.check(table, path)
    assert ev.passed, ev.metrics
    table["ctc"] = table["ctc"] * 1.03
    assert not ctc.CONTRACT.check(table, path).passed


def test_evidence_pulls_and_lidar_ratio_error_include_the_normalisation(tmp_path):
    """The CTC/LIDAR ratio error includes the common reference normalisation (pull std was 1.6)."""
    from calib.atmosphere import ctc as M
    pulls = []
    for seed in range(12):
        path = M.CONTRACT.sample(tmp_path / str(seed), seed)
        ev = M.CONTRACT.check(M.CONTRACT.run(path, tmp_path / f"{seed}.ecsv", {}), path)
        assert ev.passed and 0 < ev.false_fail_rate <= 0.01
        pulls.append(ev.pulls["lidar_ratio_mean"])
    assert 0.5 < np.std(pulls, ddof=1) < 1.5
