"""Pointing model (I-DATA-xST-1002): recovery of the simulated TPOINT terms and degenerate inputs."""
import astropy.units as u
import numpy as np
import pytest

from calib.contract import CalibrationError
from calib.pointing import pointing_model as pm
from calib.pointing.simulation import DEFAULT_POINTING_MODEL, simulate_pointing_run


@pytest.fixture(scope="module")
def run_north():
    return simulate_pointing_run(n_observations=400, site="north", seed=3, noise_arcsec=5.0)


def _fit(t):
    return pm.fit_pointing_model(t["az_true"], t["el_true"], t["az_encoder"], t["el_encoder"])


@pytest.mark.parametrize("site", ["north", "south"])
def test_recovers_terms_and_noise(site, run_north):
    t = run_north if site == "north" else simulate_pointing_run(n_observations=400, site="south", seed=4)
    result = _fit(t)
    pulls = (result["value"].value - np.array([DEFAULT_POINTING_MODEL[k] for k in result["term"]])) / result["uncertainty"].value
    assert np.all(np.abs(pulls) < 3.0), dict(zip(result["term"], pulls))
    # residual rms per axis equals the simulated 5" noise; its relative scatter is 1/sqrt(2 dof)
    dof = result.meta["dof"]
    assert abs(result.meta["residual_rms_per_axis_arcsec"] / 5.0 - 1) < 3 / np.sqrt(2 * dof)
    assert result["value"].unit == u.arcsec


def test_uncertainties_match_scatter(run_north):
    """Over 40 noise realisations the pulls have unit width: the stated errors are right."""
    t = run_north.copy()
    rng = np.random.default_rng(11)
    truth = np.array(list(DEFAULT_POINTING_MODEL.values()))
    d_az, d_el = pm.pointing_offsets(DEFAULT_POINTING_MODEL, t["az_true"].quantity, t["el_true"].quantity)
    pulls = []
    for _ in range(40):
        noise = rng.normal(0, 5.0, (2, len(t))) * u.arcsec
        az = t["az_true"].quantity + d_az + noise[0] / np.cos(t["el_true"].quantity)
        el = t["el_true"].quantity + d_el + noise[1]
        r = pm.fit_pointing_model(t["az_true"], t["el_true"], az, el)
        pulls.append((r["value"].value - truth) / r["uncertainty"].value)
    pulls = np.array(pulls)
    # std of 40 unit-Gaussian pulls: 1 +- 0.11; mean 0 +- 0.16 (per term)
    assert np.all(np.abs(pulls.std(axis=0) - 1) < 0.35)
    assert np.all(np.abs(pulls.mean(axis=0)) < 0.5)


def test_correction_and_inverse(run_north):
    result = _fit(run_north)
    az, el = run_north["az_true"].quantity, run_north["el_true"].quantity
    az_dem, el_dem = pm.correct_pointing(result, az, el)
    az_back, el_back = pm.sky_position(result, az_dem, el_dem)
    assert np.allclose(((az_back - az + 180 * u.deg) % (360 * u.deg) - 180 * u.deg).to_value(u.arcsec), 0, atol=1e-3)
    assert np.allclose((el_back - el).to_value(u.arcsec), 0, atol=1e-3)
    # true sky position recovered from raw encoders with the fitted model: rms = noise (5")
    az_s, el_s = pm.sky_position(result, run_north["az_encoder"].quantity, run_north["el_encoder"].quantity)
    x, y = pm.pointing_residuals(az, el, az_s, el_s)
    rms = np.sqrt(np.mean(np.concatenate([x.value, y.value]) ** 2))
    assert abs(rms / 5.0 - 1) < 3 / np.sqrt(2 * 2 * len(run_north)) + 0.02
    # before correction the pointing is off by minutes of arc
    x0, y0 = pm.pointing_residuals(az, el, run_north["az_encoder"].quantity, run_north["el_encoder"].quantity)
    assert np.sqrt(np.mean(x0.value**2 + y0.value**2)) > 60


def test_too_few_stars(run_north):
    t = run_north[:3]
    with pytest.raises(CalibrationError, match="too few"):
        _fit(t)


def test_stars_at_one_elevation_are_refused():
    az = np.linspace(0, 350, 60) * u.deg
    el = np.full(60, 45.0) * u.deg
    with pytest.raises(CalibrationError, match="cannot separate.*IA"):
        pm.fit_pointing_model(az, el, az, el)


def test_stars_in_one_azimuth_line_are_refused():
    el = np.linspace(20, 80, 60) * u.deg
    az = np.full(60, 123.0) * u.deg
    with pytest.raises(CalibrationError, match="cannot separate"):
        pm.fit_pointing_model(az, el, az, el)


def test_missing_catalogue_entry(run_north):
    t = run_north.copy()
    t["az_true"][5] = np.nan
    with pytest.raises(CalibrationError, match="NaN.*rows \\[5\\]"):
        _fit(t)


def test_zenith_is_refused():
    with pytest.raises(CalibrationError, match="89"):
        pm.fit_pointing_model([10, 20, 30] * u.deg, [30, 89.5, 40] * u.deg, [10, 20, 30] * u.deg, [30, 89.5, 40] * u.deg)


def test_contract_sample_run_check(tmp_path):
    path = pm.CONTRACT.sample(tmp_path, 1)
    result = pm.CONTRACT.run(path, tmp_path / "out.ecsv", {})
    assert (tmp_path / "out.ecsv").is_file()
    assert result.meta["module"] == "calib.pointing.pointing_model"
    evidence = pm.CONTRACT.check(result, path)
    assert evidence.passed, evidence.metrics


@pytest.mark.filterwarnings("ignore:ERFA function")
def test_no_iers_download_at_run_time(monkeypatch):
    """Star positions are computed from the bundled IERS-B table; any download attempt fails the test."""
    import astropy.utils.data as aud
    from astropy.time import Time
    from astropy.utils import iers
    from astropy.utils.iers import iers as iers_module

    from calib.sky.altaz import star_altaz
    from calib.sky.catalog import bright_stars, skycoord
    from calib.sky.sites import CTAO_SOUTH

    def forbidden(*args, **kwargs):
        raise AssertionError("an IERS / leap-second download was attempted")

    monkeypatch.setattr(aud, "download_file", forbidden)
    monkeypatch.setattr(iers_module, "download_file", forbidden, raising=False)
    monkeypatch.setattr(iers.IERS_Auto, "iers_table", None)  # force a fresh table lookup
    alt, az = star_altaz(skycoord(bright_stars(2.0)), CTAO_SOUTH, Time("2025-03-16T03:00:00") + [0, 1] * u.hour)
    assert alt.shape[0] == 2 and np.all(np.isfinite(alt))
    from calib.sky.altaz import iers_time_range
    # beyond the end of whatever IERS-B table is installed (not a fixed date: no time bomb)
    with pytest.raises(CalibrationError, match="IERS"):
        star_altaz(skycoord(bright_stars(2.0)), CTAO_SOUTH, iers_time_range()[1] + 30 * u.day)


def test_catalogue_positions_move_by_their_proper_motion():
    """alpha Cen (HR 5459, 3.7 arcsec/yr) moves 93 arcsec from J2000 to 2025.2: it must not be ignored."""
    from astropy.time import Time

    from calib.sky.catalog import bright_stars, skycoord

    stars = bright_stars(1.0)
    epoch = Time("2025-03-15T00:00:00")
    moved = skycoord(stars, epoch).separation(skycoord(stars)).to_value(u.arcsec)
    years = epoch.tdb.jyear - 2000.0
    expected = years * np.hypot(stars["pm_ra"].quantity, stars["pm_dec"].quantity).to_value(u.arcsec / u.yr)
    assert np.allclose(moved, expected, rtol=2e-3, atol=0.05)
    assert moved[stars["hr"] == 5459][0] > 90


@pytest.mark.filterwarnings("ignore:ERFA function")
def test_true_positions_are_refracted_for_the_site_pressure():
    """Apparent elevation = geometric + R cot(E), R ~ 58.3" (p/1010 hPa)(283 K/T), ~45" at 2200 m."""
    from astropy.time import Time

    from calib.pointing.simulation import site_pressure
    from calib.sky.altaz import star_altaz
    from calib.sky.catalog import bright_stars, skycoord
    from calib.sky.sites import CTAO_NORTH

    stars, t = skycoord(bright_stars(2.5)), Time("2025-03-15T23:00:00")
    p = site_pressure("north")
    assert 770 < p.to_value(u.hPa) < 790
    alt0, az0 = star_altaz(stars, CTAO_NORTH, t)
    alt1, az1 = star_altaz(stars, CTAO_NORTH, t, pressure=p, temperature=10 * u.deg_C)
    sel = (alt0[0] > 25 * u.deg) & (alt0[0] < 80 * u.deg)
    r0 = ((alt1 - alt0)[0, sel] * np.tan(alt0[0, sel])).to_value(u.arcsec)
    expected = 58.3 * p.to_value(u.hPa) / 1010.0 * 283.0 / 283.15      # Meeus / Saemundsson at 10 C
    assert np.all(np.abs(r0 / expected - 1) < 0.04)
    assert np.max(np.abs((az1 - az0)[0, sel]).to_value(u.arcsec)) < 0.5
