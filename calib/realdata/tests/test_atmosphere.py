"""Real meteorological profiles (GDAS, ERA5 of ctao-calibpipe 0.8.0) -> our molecular profile,
against calibpipe's own products; the LIDAR module run through the real sounding.

The files come from ``scripts/fetch-real-data.py`` (no ctapipe needed); the tests skip when
they are absent, and fail with ``CI=true``.
"""
from __future__ import annotations


import astropy.units as u
import numpy as np
import pytest

from calib.contract import CalibrationError
from calib.realdata.files import real_file

from calib.realdata.tests import need_file as _need


def test_geometric_altitude():
    """Where normal gravity equals g0 (45.543 deg) the conversion is US76's z = r0 h / (r0 - h)
    (r0 = 6356.766 km): 10 km geopotential -> 10015.757 m; lower gravity (equator) -> higher."""
    from calib.realdata.atmosphere import geometric_altitude

    z = geometric_altitude([0.0, 10000.0] * u.m, 45.543 * u.deg)
    assert z[0].value == 0.0 and z[1].to_value(u.m) == pytest.approx(6356766 * 1e4 / (6356766 - 1e4), abs=0.05)
    assert geometric_altitude(10000 * u.m, 0 * u.deg) > geometric_altitude(10000 * u.m, 90 * u.deg) + 40 * u.m


def test_gdas_profile_and_calibpipe_mdp():
    """GDAS 2023-07-10 00 UTC at (29 N, 18 W): 23 levels, 0.18-26.9 km.  Altitudes agree with the
    file's own to 0.3 m, densities to 7e-6; calibpipe's MDP of the same data to 0.06 % at
    1-11 km, 1.2 % to 21 km and 5.6 % at 25 km, where the file has no level between 20.9 and
    26.9 km (our interpolation and a linear-in-n one differ by 9 % there)."""
    from calib.realdata.atmosphere import GDAS, MDP, meteo_evidence

    _need(MDP)
    res, ev = meteo_evidence(GDAS, _need(GDAS))
    m = ev["metrics"]
    assert ev["passed"] and ev["file"] == GDAS and ev["sha256_matches_pin"], ev["summary"]
    assert m["n_levels"] == 23 and m["grid_point"] == [29.0, -18.0]
    assert m["max_altitude_diff_vs_file_m"] < 1.0 and m["max_density_rel_diff_vs_file"] < 1e-4
    # below 11 km the levels are <= 600 m apart: interpolations agree to < 5e-4
    assert m["mdp_max_abs_rel_diff_1_11km"] < 1e-3
    assert m["mdp_worst_diff_over_tolerance"] < 1
    cmp = res["mdp_comparison"]
    assert np.all(np.abs(cmp["ours_over_mdp_minus_1"][cmp["inside_sounding"]]) < 0.06)
    # the criterion can fail: US76 instead of the sounding is 4-8 % off the MDP
    from calib.atmosphere.molecular import MolecularProfile
    from calib.realdata.atmosphere import read_mdp
    mdp = read_mdp(real_file(MDP))
    us76 = MolecularProfile.us76().number_density(mdp["altitude"]).value / mdp["number_density"].value - 1
    inside = np.asarray(cmp["inside_sounding"])
    assert np.max(np.abs(us76[inside]) / np.asarray(cmp["tolerance"])[inside]) > 1
    # Rayleigh transmission at 355 nm from the site to the top: 0.629 (tau 0.464)
    assert m["rayleigh_tau_355nm_site_to_top"] == pytest.approx(0.4643, abs=5e-4)


def test_era5_profile():
    """ERA5: 4 grid points x 7 hours x 37 levels; the point nearest CTAO-North, averaged over
    the night; altitudes within 1.5 m of the file's own."""
    from calib.realdata.atmosphere import ERA5, meteo_evidence, read_meteo

    path = _need(ERA5)
    _, ev = meteo_evidence(ERA5, path)
    m = ev["metrics"]
    assert ev["passed"] and m["n_levels"] == 37 and len(m["times"]) == 7
    assert m["grid_point"] == [28.75, -18.0] and m["max_altitude_diff_vs_file_m"] < 5
    one = read_meteo(path, time="2023-07-10T00:00:00")
    assert one.meta["times"] == ["2023-07-10T00:00:00"] and np.all(one["temperature_spread"].value == 0)
    with pytest.raises(CalibrationError, match="no profile at"):
        read_meteo(path, time="2024-01-01T00:00:00")


def test_gdas_and_era5_agree():
    """Two reanalyses of the same night: number densities within 0.96 % (1-26 km), Rayleigh
    optical depth from the site within 0.04 %."""
    from calib.realdata.atmosphere import ERA5, GDAS, gdas_vs_era5

    _, ev = gdas_vs_era5(_need(GDAS), _need(ERA5))
    m = ev["metrics"]
    assert ev["passed"] and m["max_abs_rel_density_diff"] < 0.015
    assert abs(m["tau_355nm_era5_over_gdas_minus_1"]) < 2e-3


@pytest.mark.parametrize("season", ["ctao-north_intermediate", "ctao-north_summer", "ctao-north_winter",
                                    "ctao-south_summer", "ctao-south_winter"])
def test_rayleigh_optical_depth_matches_calibpipe(season):
    """Our Rayleigh optical depth on calibpipe's reference atmosphere vs calibpipe's own
    reference Rayleigh extinction profile: 0.12-0.22 % (ours higher by ~0.1 %) at 300-800 nm
    and 50 altitudes; tolerance 0.5 % = known cross-section convention differences.  US76
    instead of the season's atmosphere misses by > 0.5 % (the comparison can fail)."""
    from calib.realdata.atmosphere import rayleigh_evidence, read_rayleigh_extinction_profile
    from calib.atmosphere.molecular import MolecularProfile

    _need(f"reference_atmo_model_v0_{season}.ecsv")
    path = _need(f"reference_rayleigh_extinction_profile_v0_{season}.ecsv")
    res, ev = rayleigh_evidence(season)
    m = ev["metrics"]
    assert ev["passed"] and m["max_abs_rel_diff"] < 5e-3 and m["n_altitudes"] == 50
    assert 0 < m["mean_rel_diff"] < 2e-3
    ref = read_rayleigh_extinction_profile(path)
    tau_us76 = MolecularProfile.us76().cumulative_optical_depth(ref["altitude_max"], 355 * u.nm,
                                                                 ref["altitude_min"][0])
    col = int(np.argmin(np.abs(ref["wavelength"].value - 355)))
    assert np.max(np.abs(tau_us76 / ref["optical_depth"][:, col] - 1)) > 5e-3


def test_molecular_profile_from_meteo_file():
    from calib.atmosphere.molecular import MolecularProfile
    from calib.realdata.atmosphere import GDAS

    gdas = MolecularProfile.from_meteo_file(_need(GDAS))
    assert gdas.name.startswith("GDAS 2023-07-10")
    ref = MolecularProfile.from_meteo_file(_need("reference_atmo_model_v0_ctao-north_summer.ecsv"))
    # summer night at La Palma vs the summer reference: number density at 2.2-20 km within 2 %
    z = np.arange(2200.0, 20001.0, 500.0) * u.m
    assert np.max(np.abs(gdas.number_density(z) / ref.number_density(z) - 1)) < 0.02
    with pytest.raises(CalibrationError, match="not a GDAS/ERA5"):
        MolecularProfile.from_meteo_file(_need("contemporary_MDP.ecsv"))


def test_lidar_retrieval_through_the_gdas_sounding(tmp_path):
    """I-DATA-COM-3001 simulated through and retrieved with the real GDAS sounding: the module's
    check passes (seeds 0-2 measured: pull rms 1.12, 1.05, 1.01); the 100 GeV shower maximum
    (260 g/cm^2) sits 0.6 km higher in the July subtropical atmosphere than in US76, which moves
    the CTC cross-check's LIDAR transmission at shower maximum by 0.7 % (a cloud near it)."""
    from calib.realdata.atmosphere import GDAS, lidar_on_gdas

    res, ev = lidar_on_gdas(tmp_path, seed=0, path=_need(GDAS))
    m = ev["metrics"]
    assert ev["passed"] and ev["file"] == GDAS and "I-DATA-COM-3001" in ev["interfaces"], ev["summary"]
    assert all(abs(p) < 4 for p in ev["pulls"].values()) and ev["false_fail_rate"] < 0.01
    assert m["molecular_profile"].startswith("GDAS")
    assert m["shower_max_altitude_gdas_m"] - m["shower_max_altitude_us76_m"] == pytest.approx(610, abs=60)
    # the CTC cross-check weighting: the sample's cloud (VOD 0.10 at 10.2-10.65 km a.s.l.) sits at the
    # US76 shower maximum; with the real profile more light is emitted above it: the weighted LIDAR
    # transmission drops from 0.892 to 0.885 (the retrieval's VAOD error is 3e-4)
    t_g, t_u = m["lidar_transmission_at_shower_max_gdas"], m["lidar_transmission_at_shower_max_us76"]
    assert 0.8 < t_g < t_u - 0.003
