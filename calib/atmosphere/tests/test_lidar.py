from dataclasses import replace

import numpy as np
import pytest

from calib.atmosphere import arcade, lidar
from calib.atmosphere.lidar import (GENERIC_RAMAN_LIDAR, AerosolProfile, LidarFlag, retrieve,
                                    simulate_lidar, sliding_slope)
from calib.contract import CalibrationError

CFG = GENERIC_RAMAN_LIDAR
CLEAR = AerosolProfile.boundary_layer_and_cloud(cloud_vod=0.0)
CLOUDY = AerosolProfile.boundary_layer_and_cloud()


def _retrieve(sim, cfg=CFG, **kw):
    return retrieve(sim["elastic"], sim["raman"], cfg, pretrigger_elastic=sim["pretrigger_elastic"],
                    pretrigger_raman=sim["pretrigger_raman"], **kw)


@pytest.fixture(scope="module")
def ensemble():
    sim = simulate_lidar(CFG, CLOUDY, 200, np.random.default_rng(11))
    return sim, _retrieve(sim)


def test_extinction_pulls_are_unbiased_with_unit_width(ensemble):
    sim, res = ensemble
    smooth, _ = sliding_slope(sim["tau_aer_slant"][None, :], res.half_width)
    smooth = smooth[0] / CFG.bin_width_m
    pull = (res.alpha_aer - smooth) / res.alpha_aer_err
    n = pull.shape[0]
    for rng_m in (500, 1000, 2500, 5000, 7000, 12000):
        i = np.searchsorted(CFG.ranges_m, rng_m)
        p = pull[:, i]
        assert np.all(np.isfinite(p))
        assert abs(p.mean()) < 4 / np.sqrt(n)               # no bias beyond 4 standard errors
        assert 0.8 < p.std() < 1.2                           # photon-statistics errors are right


def test_boundary_layer_extinction_within_few_percent():
    cfg = replace(CFG, n_shots=3000)
    sim = simulate_lidar(cfg, CLEAR, 1, np.random.default_rng(3))
    res = _retrieve(sim, cfg)
    above = cfg.altitudes_m - cfg.site_altitude_m
    bl = (above > 400) & (above < 1300)
    rel = res.alpha_aer[0, bl] / sim["alpha_aer"][bl] - 1
    expected = res.alpha_aer_err[0, bl] / sim["alpha_aer"][bl]
    assert np.sqrt(np.mean(expected**2)) < 0.03
    assert np.sqrt(np.mean(rel**2)) < 1.5 * np.sqrt(np.mean(expected**2)) + 0.005


def test_vaod_and_transmission(ensemble):
    sim, res = ensemble
    i = np.searchsorted(CFG.altitudes_m - CFG.site_altitude_m, 3000.0)
    pull = (res.vaod[:, i] - sim["vaod"][i]) / res.vaod_err[:, i]
    assert abs(pull.mean()) < 4 / np.sqrt(len(pull)) and 0.8 < pull.std() < 1.2
    t = lidar.transmission_at(res)
    assert np.allclose(t["transmission_3km"], np.exp(-t["vaod_3km"]))
    # transmission above the cloud includes it: T(12 km) ~ exp(-(0.0795 + 0.1))
    assert np.mean(t["transmission_12km"]) == pytest.approx(np.exp(-sim["vaod"][-1]), abs=0.003)


def test_cloud_layer_base_top_and_optical_depth(ensemble):
    sim, res = ensemble
    layers = [c for prof in res.clouds for c in prof]
    assert len(layers) == 200                                # one layer per profile, no false layer
    base = np.array([c.base_m for c in layers])
    top = np.array([c.top_m for c in layers])
    vod = np.array([c.vod for c in layers])
    err = np.array([c.vod_err for c in layers])
    assert np.all(np.abs(base - (CFG.site_altitude_m + 8000)) <= 30)
    assert np.all(np.abs(top - (CFG.site_altitude_m + 8450)) <= 30)
    pull = (vod - 0.10) / err
    assert abs(pull.mean()) < 0.5 and 0.7 < pull.std() < 1.3
    assert np.all(res.flag[:, np.searchsorted(CFG.altitudes_m, CFG.site_altitude_m + 8200)] & LidarFlag.CLOUD)


def test_no_cloud_in_clear_sky():
    sim = simulate_lidar(CFG, CLEAR, 20, np.random.default_rng(5))
    res = _retrieve(sim)
    assert all(len(c) == 0 for c in res.clouds)


def test_klett_fernald_backscatter_and_lidar_ratio_dependence():
    sim = simulate_lidar(CFG, CLEAR, 4, np.random.default_rng(7))
    above = CFG.altitudes_m - CFG.site_altitude_m
    bl = (above > 400) & (above < 1300)
    res = _retrieve(sim, lidar_ratio=50.0)
    beta = np.mean(res.beta_aer_klett[:, bl], axis=0)
    assert np.mean(beta / sim["beta_aer"][bl]) == pytest.approx(1.0, abs=0.03)
    # wrong lidar ratios bias the extinction in opposite directions (Fernald 1984)
    low = _retrieve(sim, lidar_ratio=30.0).alpha_aer_klett[:, bl].mean()
    high = _retrieve(sim, lidar_ratio=70.0).alpha_aer_klett[:, bl].mean()
    truth = sim["alpha_aer"][bl].mean()
    assert low < 0.9 * truth and high > 1.05 * truth


def test_angstrom_exponent_conversion():
    sim = simulate_lidar(CFG, CLEAR, 1, np.random.default_rng(9))
    i = np.searchsorted(CFG.altitudes_m - CFG.site_altitude_m, 3000.0)
    v = {a: _retrieve(sim, angstrom=a).vaod[0, i] for a in (0.0, 1.0, 2.0)}
    ratio = CFG.wavelength_nm / CFG.raman_wavelength_nm
    assert v[0.0] / v[1.0] == pytest.approx((1 + ratio) / 2, rel=1e-6)
    assert v[2.0] / v[1.0] == pytest.approx((1 + ratio) / (1 + ratio**2), rel=1e-6)
    assert abs(v[0.0] - v[1.0]) < 0.005 and abs(v[2.0] - v[1.0]) < 0.005   # weak dependence


def test_inclined_line_of_sight_gives_vertical_aod():
    cfg = replace(CFG, zenith_deg=40.0, n_shots=3000)
    sim = simulate_lidar(cfg, CLEAR, 1, np.random.default_rng(2))
    res = _retrieve(sim, cfg)
    i = np.searchsorted(cfg.altitudes_m - cfg.site_altitude_m, 3000.0)
    assert abs(res.vaod[0, i] - sim["vaod"][i]) < 3 * res.vaod_err[0, i]
    assert res.transmission_los[0, i] == pytest.approx(np.exp(-res.vaod[0, i] / np.cos(np.radians(40))))


def test_bad_input_raises_or_flags():
    sim = simulate_lidar(CFG, CLEAR, 1, np.random.default_rng(1))
    bad = sim["raman"].copy()
    bad[0, 100] = -3
    with pytest.raises(CalibrationError, match="negative"):
        retrieve(sim["elastic"], bad, CFG)
    bad[0, 100] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        retrieve(sim["elastic"], bad, CFG)
    with pytest.raises(CalibrationError, match="range bins"):
        retrieve(sim["elastic"][:, :1000], sim["raman"][:, :1000], CFG)
    short = replace(CFG, n_bins=1000)
    with pytest.raises(CalibrationError, match="too short"):
        retrieve(sim["elastic"][:, :1000], sim["raman"][:, :1000], short)
    with pytest.raises(CalibrationError, match="no signal"):
        retrieve(sim["elastic"], np.zeros_like(sim["raman"]), CFG)
    # a weak Raman channel: far bins are flagged LOW_SIGNAL and NaN, never silently filled
    weak = replace(CFG, efficiency_raman=0.001)
    sim_w = simulate_lidar(weak, CLEAR, 1, np.random.default_rng(1))
    res = _retrieve(sim_w, weak)
    far = res.flag[0] & LidarFlag.LOW_SIGNAL > 0
    assert far.any() and np.all(np.isnan(res.alpha_aer[0, far])) and np.all(np.isnan(res.vaod[0, far]))


@pytest.mark.parametrize("module", [lidar, arcade])
def test_contract_sample_run_check(tmp_path, module):
    path = module.CONTRACT.sample(tmp_path, 4)
    table = module.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    evidence = module.CONTRACT.check(table, path)
    assert evidence.passed, evidence.metrics
    assert "module" in table.meta and table["alpha_aer"].unit == "1 / m"
    # a biased retrieval must fail the check
    table["alpha_aer"] = table["alpha_aer"] * 1.1
    assert not module.CONTRACT.check(table, path).passed


def test_klett_numpy_reference_matches_vectorised_kernel():
    sim = simulate_lidar(CFG, CLEAR, 2, np.random.default_rng(4))
    res = _retrieve(sim, lidar_ratio=45.0)
    import astropy.units as u
    from calib.atmosphere.molecular import MolecularProfile, molecular_lidar_ratio
    s_m = molecular_lidar_ratio(CFG.wavelength_nm * u.nm).value
    b_mol = MolecularProfile.us76().extinction(CFG.altitudes_m * u.m, CFG.wavelength_nm * u.nm).value / s_m
    bg = sim["pretrigger_elastic"].mean(axis=1)
    x = (sim["elastic"] - bg[:, None]) * CFG.ranges_m**2
    r = CFG.ranges_m
    ref = (r >= 13000.0) & (r <= 15000.0)
    ref_np = lidar.klett_fernald(x, b_mol, CFG.bin_width_m, 45.0, s_m, int(np.flatnonzero(ref).mean()),
                                 int(ref.sum() // 2))
    sel = r > CFG.full_overlap_m
    assert np.allclose(ref_np[:, sel], res.beta_aer_klett[:, sel], rtol=1e-9, atol=1e-14, equal_nan=True)


def test_raman_backscatter_and_lidar_ratio():
    cfg = replace(CFG, n_shots=3000)
    sim = simulate_lidar(cfg, CLEAR, 3, np.random.default_rng(12))
    res = _retrieve(sim, cfg)
    above = cfg.altitudes_m - cfg.site_altitude_m
    bl = (above > 400) & (above < 1300)
    beta = np.mean(res.beta_aer_raman[:, bl], axis=0)
    # boundary-layer backscatter within 3 % on average (lidar ratio 50 sr in the simulation)
    assert np.mean(beta) / np.mean(sim["beta_aer"][bl]) == pytest.approx(1.0, abs=0.03)
    s_a = np.nanmean(res.alpha_aer[:, bl]) / np.mean(beta)
    assert s_a == pytest.approx(50.0, rel=0.05)


def test_dead_elastic_channel_is_flagged_not_inverted():
    """No elastic light at the reference range: Klett-Fernald is NaN and flagged; Raman still works."""
    sim = simulate_lidar(CFG, CLEAR, 2, np.random.default_rng(6))
    dead = np.random.default_rng(7).poisson(CFG.n_shots * CFG.background_elastic, sim["elastic"].shape)
    res = retrieve(dead.astype(float), sim["raman"], CFG, pretrigger_elastic=sim["pretrigger_elastic"],
                   pretrigger_raman=sim["pretrigger_raman"])
    assert np.all(np.isnan(res.beta_aer_klett))
    assert np.all(res.flag & LidarFlag.NO_ELASTIC_REFERENCE)
    i = np.searchsorted(CFG.ranges_m, 2500.0)
    assert np.all(np.isfinite(res.alpha_aer[:, i]))
    # a normal elastic channel is not flagged
    assert not np.any(_retrieve(sim).flag & LidarFlag.NO_ELASTIC_REFERENCE)


def test_sample_nuisance_parameters_are_not_the_retrieval_defaults(tmp_path):
    """The simulation draws the Angstrom exponent, lidar ratios, overlap and atmosphere per seed;
    the check judges VAOD with the Angstrom systematic the retrieval propagates."""
    import h5py
    values = []
    for seed in (0, 1, 2):
        path = lidar.CONTRACT.sample(tmp_path / str(seed), seed)
        with h5py.File(path) as f:
            t = f["truth"].attrs
            values.append((float(t["angstrom"]), float(t["lidar_ratio"]), float(t["full_overlap_m"])))
            assert "molecular_profile" in f
        table = lidar.CONTRACT.run(path, tmp_path / f"{seed}.ecsv", {})
        ev = lidar.CONTRACT.check(table, path)
        assert ev.passed, ev.metrics
        assert set(ev.pulls) == {"vaod_3km", "vaod_3km_stat", "cloud_vod"} and ev.false_fail_rate <= 0.01
        # the systematic is what makes the total pull honest: the statistical error alone is 4x smaller
        assert ev.metrics["vaod_3km_syst"] > 2 * ev.metrics["vaod_3km_err"]
    a, s, o = np.array(values).T
    assert np.all(a != 1.0) and np.ptp(a) > 0 and np.all(s != 50.0) and np.all(o < CFG.full_overlap_m)


def test_site_atmosphere_is_hydrostatic_and_not_us76():
    from calib.atmosphere.molecular import G0, M0, R_STAR, MolecularProfile
    atm = lidar.site_atmosphere(np.random.default_rng(1))
    us = MolecularProfile.us76()
    z = atm.altitude
    lnp = np.log(atm.pressure)
    slope = np.diff(lnp) / np.diff(z)
    expect = -G0 * M0 / (R_STAR * 0.5 * (atm.temperature[1:] + atm.temperature[:-1]))
    assert np.allclose(slope, expect, rtol=1e-9)
    import astropy.units as u
    assert np.max(np.abs(atm.temperature - us.temperature_at(z * u.m).value)) > 0.5
