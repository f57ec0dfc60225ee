"""Real meteorological profiles (GDAS, ERA5) -> the molecular atmosphere, against calibpipe.

Readers (astropy ECSV files of ctao-calibpipe 0.8.0; ``scripts/fetch-real-data.py``):

* :func:`read_meteo`: a GDAS (``Geopotential Height``, gpm) or ERA5/Copernicus
  (``Geopotential``, m^2/s^2) file on pressure levels -> altitude, temperature, pressure,
  number density n = p / (k_B T) per level, at the grid point nearest the site, averaged per
  level over the file's times (or at one time).  Geometric altitude from geopotential height
  h with the latitude-dependent normal gravity and effective Earth radius (List 1968,
  Smithsonian Meteorological Tables; Mahoney 2008):
  g(phi) = 9.80616 (1 - 0.002637 cos 2phi + 0.0000059 cos^2 2phi) m/s^2,
  R(phi) = 6378.137 km / (1.006803 - 0.006706 sin^2 phi), z = R h / (g(phi)/g0 R - h).
* :func:`meteo_profile`: the same as a ``calib.atmosphere.molecular.MolecularProfile``
  (Rayleigh extinction, transmission, optical depth from it; US76 shape above the top level).
* :func:`reference_atmosphere`, :func:`read_rayleigh_extinction_profile`, :func:`read_mdp`:
  calibpipe's own products (seasonal reference atmospheres; the Rayleigh optical depth from
  the site vs altitude and 200-1000 nm computed from them; its molecular density profile).

Comparisons (each ``(result, evidence)``, the evidence = file record + interfaces + what was
compared + ``Evidence.to_dict()``; deterministic on the files: false-fail rate 0):

* :func:`meteo_evidence`: our altitudes and densities vs the file's own columns; for GDAS our
  profile vs calibpipe's MDP of the same data;
* :func:`gdas_vs_era5`: two reanalyses of the same night at La Palma;
* :func:`rayleigh_evidence`: our Rayleigh optical depth on calibpipe's reference atmosphere vs
  calibpipe's reference Rayleigh extinction profile (the same atmosphere);
* :func:`lidar_on_gdas` (I-DATA-COM-3001, and the shower-maximum altitude that the CTC
  cross-check I-DATA-COM-0006/3201 weights with): the LIDAR sample simulated through, and
  retrieved with, the real GDAS sounding.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table

from calib.atmosphere.molecular import K_B, MolecularProfile
from calib.contract import CalibrationError, Evidence
from calib.realdata.files import file_record, real_file

__all__ = ["GDAS", "ERA5", "MDP", "SEASONS", "geometric_altitude", "read_meteo", "meteo_profile",
           "reference_atmosphere", "read_rayleigh_extinction_profile", "read_mdp", "meteo_evidence",
           "gdas_vs_era5", "rayleigh_evidence", "lidar_on_gdas", "need", "atmosphere_evidence"]

GDAS = "meteo_data_gdas.ecsv"
ERA5 = "meteo_data_copernicus.ecsv"
MDP = "contemporary_MDP.ecsv"
SEASONS = ("ctao-north_intermediate", "ctao-north_summer", "ctao-north_winter",
           "ctao-south_summer", "ctao-south_winter")
G0 = 9.80665
#: two implementations of the geopotential -> geometric conversion (gravity models differ by
#: ~1e-4 relative): accepted altitude difference, m (5 m at 50 km)
ALTITUDE_TOLERANCE_M = 5.0
#: the same p / (k_B T) with Boltzmann constants of different CODATA releases: relative
DENSITY_IDENTITY = 1e-4
#: our Rayleigh optical depth vs calibpipe's on the same atmosphere: the cross-sections differ by
#: their conventions -- CO2 360 (ours, Bodhaine et al. 1999) vs ~400 ppmv (+0.02 %), water vapour
#: (up to 2 % of the molecules at the site in summer, 15 % less polarisable than dry air: 0.3 %)
#: and the King factor parametrisations (0.1 %)
RAYLEIGH_TOLERANCE = 5e-3
#: two reanalyses (GDAS, ERA5) of the same night: temperature differences of 1-3 K at 200-290 K
#: give up to ~1.5 % in the number density of a level
REANALYSIS_TOLERANCE = 0.015


def need(name: str) -> Path:
    """The fetched real file ``name`` or CalibrationError saying how to fetch it."""
    path = real_file(name)
    if path is None:
        raise CalibrationError(f"{name} is not fetched: run python scripts/fetch-real-data.py")
    return path


def geometric_altitude(geopotential_height, latitude) -> u.Quantity:
    """Geometric altitude (m) of a geopotential height (gpm) at ``latitude`` (List 1968)."""
    h = u.Quantity(geopotential_height, u.m).value
    phi = u.Quantity(latitude, u.deg).to_value(u.rad)
    g = 9.80616 * (1 - 0.002637 * np.cos(2 * phi) + 0.0000059 * np.cos(2 * phi) ** 2)
    r = 6378137.0 / (1.006803 - 0.006706 * np.sin(phi) ** 2)
    return r * h / (g / G0 * r - h) * u.m


def _column(t: Table, *names):
    for n in names:
        if n in t.colnames:
            return t[n]
    raise CalibrationError(f"the meteorological file has none of the columns {names}")


def read_meteo(path, latitude=None, longitude=None, time=None) -> QTable:
    """Pressure-level profile of a GDAS or ERA5 ECSV file at the grid point nearest
    (``latitude``, ``longitude``) (default CTAO-North), per level averaged over the file's
    times (``time``: only that one).  Columns altitude (m), temperature (K), pressure (Pa),
    number_density (1/m^3), relative_humidity (%), temperature_spread (K, rms over the times),
    altitude_file (m, the file's own Altitude column), number_density_file (its Density)."""
    from astropy.time import Time

    from calib.sky.sites import CTAO_NORTH

    path = Path(path)
    t = Table.read(path, format="ascii.ecsv")
    for col in ("Latitude", "Longitude", "Timestamp", "Pressure", "Temperature"):
        if col not in t.colnames:
            raise CalibrationError(f"{path.name} is not a GDAS/ERA5 meteorological profile: no column {col!r}")
    if "Geopotential Height" in t.colnames:
        source, gph = "GDAS", u.Quantity(t["Geopotential Height"]).value * u.m      # gpm
    elif "Geopotential" in t.colnames:
        source, gph = "ERA5", (u.Quantity(t["Geopotential"]).to_value(u.m**2 / u.s**2) / G0) * u.m
    else:
        raise CalibrationError(f"{path.name} has neither 'Geopotential Height' (GDAS) nor 'Geopotential' (ERA5)")
    lat0 = u.Quantity(latitude if latitude is not None else CTAO_NORTH.lat, u.deg).value
    lon0 = u.Quantity(longitude if longitude is not None else CTAO_NORTH.lon, u.deg).value
    lat, lon = np.asarray(t["Latitude"], float), np.asarray(t["Longitude"], float)
    d2 = (lat - lat0) ** 2 + ((lon - lon0 + 180) % 360 - 180) ** 2 * np.cos(np.radians(lat0)) ** 2
    at = np.isclose(d2, d2.min())
    at &= (lat == lat[at][0]) & (lon == lon[at][0])
    times = t["Timestamp"] if isinstance(t["Timestamp"], Time) else Time(t["Timestamp"])
    if time is not None:
        at &= np.abs((times - Time(time)).to_value(u.s)) < 1.0
        if not at.any():
            raise CalibrationError(f"{path.name} has no profile at {Time(time).iso} for the nearest grid point")
    p_all = u.Quantity(t["Pressure"]).to_value(u.Pa)[at]
    levels = np.unique(p_all)[::-1]                     # surface first
    k = np.searchsorted(-levels, -p_all)                # level index of each row
    n_per = np.bincount(k, minlength=levels.size)

    def mean(values):
        return np.bincount(k, weights=np.asarray(values, float)[at], minlength=levels.size) / n_per

    temp = mean(u.Quantity(t["Temperature"]).to_value(u.K))
    temp_sq = mean(u.Quantity(t["Temperature"]).to_value(u.K) ** 2)
    z = geometric_altitude(mean(gph.value), lat[at][0]).value
    out = QTable()
    out["altitude"] = z * u.m
    out["temperature"] = temp * u.K
    out["pressure"] = levels * u.Pa
    out["number_density"] = levels / (K_B * temp) / u.m**3
    out["relative_humidity"] = mean(_column(t, "Relative humidity")) * u.percent
    out["temperature_spread"] = np.sqrt(np.maximum(temp_sq - temp**2, 0.0)) * u.K
    if "Altitude" in t.colnames:
        out["altitude_file"] = mean(u.Quantity(t["Altitude"]).to_value(u.m)) * u.m
    if "Density" in t.colnames:
        out["number_density_file"] = mean(u.Quantity(t["Density"]).to_value(u.m**-3)) / u.m**3
    out.sort("altitude")
    out.meta.update({"source": source, "file": path.name, "latitude_deg": float(lat[at][0]),
                     "longitude_deg": float(lon[at][0]),
                     "times": sorted({s[:19] for s in np.atleast_1d(times[at].isot)}),
                     "n_levels": int(levels.size)})
    if np.any(np.diff(out["altitude"].value) <= 0):
        raise CalibrationError(f"{path.name}: the altitudes of the pressure levels are not increasing")
    return out


def meteo_profile(path, **kwargs) -> MolecularProfile:
    """``read_meteo`` as a MolecularProfile (name: source, date, grid point)."""
    t = read_meteo(path, **kwargs)
    m = t.meta
    name = f"{m['source']} {m['times'][0][:13]}h ({m['latitude_deg']:g}, {m['longitude_deg']:g})"
    return MolecularProfile.from_table(t["altitude", "temperature", "pressure"], name=name)


def reference_atmosphere(path) -> MolecularProfile:
    """calibpipe's seasonal reference atmosphere (altitude km, temperature K, pressure hPa)."""
    t = Table.read(Path(path), format="ascii.ecsv")
    for col in ("altitude", "temperature", "pressure"):
        if col not in t.colnames:
            raise CalibrationError(f"{Path(path).name} is not a calibpipe reference atmosphere: no {col!r}")
    return MolecularProfile.from_table(t["altitude", "temperature", "pressure"], name=Path(path).stem)


def read_rayleigh_extinction_profile(path) -> dict:
    """calibpipe's Rayleigh extinction profile: optical depth from the site (altitude_min of the
    first row) up to each altitude_max, per wavelength column ('200.0 nm' ...)."""
    t = Table.read(Path(path), format="ascii.ecsv")
    if "altitude_max" not in t.colnames or "altitude_min" not in t.colnames:
        raise CalibrationError(f"{Path(path).name} is not a Rayleigh extinction profile (altitude_max/min)")
    wl = [c for c in t.colnames if c.endswith(" nm")]
    return {"altitude_min": u.Quantity(t["altitude_min"], u.km).to(u.m),
            "altitude_max": u.Quantity(t["altitude_max"], u.km).to(u.m),
            "wavelength": np.array([float(c.split()[0]) for c in wl]) * u.nm,
            "optical_depth": np.column_stack([np.asarray(t[c], float) for c in wl])}


def read_mdp(path) -> QTable:
    """calibpipe's molecular density profile: height (m a.s.l.), number density (1/m^3)."""
    t = Table.read(Path(path), format="ascii.ecsv")
    out = QTable()
    out["altitude"] = u.Quantity(_column(t, "height", "altitude"), u.m)
    out["number_density"] = u.Quantity(_column(t, "number density", "number_density")).to(u.m**-3)
    return out


def _evidence(path, interfaces, compared, ev: Evidence) -> dict:
    return {**file_record(Path(path)), "interfaces": list(interfaces), "compared": compared, **ev.to_dict()}


def _n_linear(t: Table, z) -> np.ndarray:
    """Number density interpolated linearly in n between the levels (the other bracketing
    scheme of the log-pressure/linear-temperature interpolation of MolecularProfile)."""
    return np.interp(z, t["altitude"].value, t["number_density"].value)


def meteo_evidence(name: str = GDAS, path=None):
    """Our molecular profile from a real GDAS/ERA5 file, checked against the file's own columns
    and (GDAS) calibpipe's molecular density profile of the same data.

    Criteria: |altitude - file's Altitude| < 5 m; |n / file's Density - 1| < 1e-4; (GDAS) at
    each MDP height inside the sounding, |n_ours / n_MDP - 1| < |n_ours - n_lin| / n_ours +
    1e-3, the interpolation uncertainty (our log-p/linear-T interpolation vs linear-in-n:
    where the levels are 6 km apart, 21-27 km, the two differ by ~9 %)."""
    path = Path(path) if path is not None else need(name)
    t = read_meteo(path)
    prof = MolecularProfile.from_table(t["altitude", "temperature", "pressure"], name=t.meta["source"])
    dz = np.abs(t["altitude"].value - t["altitude_file"].value) if "altitude_file" in t.colnames else np.array([np.nan])
    dn = (np.abs(t["number_density"].value / t["number_density_file"].value - 1)
          if "number_density_file" in t.colnames else np.array([np.nan]))
    site = 2200.0
    metrics = {"source": t.meta["source"], "grid_point": [t.meta["latitude_deg"], t.meta["longitude_deg"]],
               "times": t.meta["times"], "n_levels": len(t),
               "altitude_range_m": [float(t["altitude"][0].value), float(t["altitude"][-1].value)],
               "max_altitude_diff_vs_file_m": float(np.nanmax(dz)),
               "max_density_rel_diff_vs_file": float(np.nanmax(dn)),
               "n_at_site_per_cm3": float(prof.number_density(site * u.m).to_value(u.cm**-3)),
               **{f"rayleigh_tau_{w}nm_site_to_top": float(prof.optical_depth(w * u.nm, site * u.m))
                  for w in (355, 387, 532)},
               "rayleigh_transmission_355nm_site_to_top": float(np.exp(-prof.optical_depth(355 * u.nm, site * u.m)))}
    criteria = {"max_altitude_diff_vs_file_m": f"< {ALTITUDE_TOLERANCE_M:g} m (geopotential -> geometric, "
                                               "two gravity models)",
                "max_density_rel_diff_vs_file": f"< {DENSITY_IDENTITY:g} (p / k_B T)"}
    passed = bool(np.nanmax(dz) < ALTITUDE_TOLERANCE_M and np.nanmax(dn) < DENSITY_IDENTITY)
    result = {"profile": prof, "levels": t}
    files = [path.name]
    if t.meta["source"] == "GDAS" and real_file(MDP) is not None:
        mdp = read_mdp(real_file(MDP))
        z = mdp["altitude"].value
        inside = (z >= t["altitude"][0].value) & (z <= t["altitude"][-1].value)
        ours = prof.number_density(z * u.m).value
        rel = ours / mdp["number_density"].value - 1
        tol = np.abs(ours - _n_linear(t, z)) / ours + 1e-3
        result["mdp_comparison"] = Table({"altitude": z * u.m, "ours_over_mdp_minus_1": rel, "tolerance": tol,
                                          "inside_sounding": inside})
        lo = inside & (z <= 11000)
        metrics.update({
            "mdp_max_abs_rel_diff_1_11km": float(np.max(np.abs(rel[lo]))),
            "mdp_max_abs_rel_diff_inside": float(np.max(np.abs(rel[inside]))),
            "mdp_altitude_of_max_diff_m": float(z[inside][np.argmax(np.abs(rel[inside]))]),
            "mdp_worst_diff_over_tolerance": float(np.max(np.abs(rel[inside]) / tol[inside])),
            "mdp_rel_diff_at_0m_extrapolated": float(rel[0])})
        criteria["mdp_worst_diff_over_tolerance"] = ("< 1: |n_ours/n_MDP - 1| within the interpolation uncertainty "
                                                     "(+ 1e-3) at every MDP height inside the sounding")
        passed &= metrics["mdp_worst_diff_over_tolerance"] < 1
        files.append(MDP)
    ev = Evidence(passed=passed, metrics=metrics, criteria=criteria, pulls={}, false_fail_rate=0.0,
                  summary=f"{t.meta['source']} {t.meta['times'][0][:13]}h: {len(t)} levels to "
                          f"{t['altitude'][-1].value / 1000:.1f} km; tau_R(355 nm, 2.2 km -> top) = "
                          f"{metrics['rayleigh_tau_355nm_site_to_top']:.4f}"
                          + (f"; vs calibpipe MDP: {100 * metrics['mdp_max_abs_rel_diff_1_11km']:.2f} % (1-11 km), "
                             f"{100 * metrics['mdp_max_abs_rel_diff_inside']:.1f} % max (at "
                             f"{metrics['mdp_altitude_of_max_diff_m'] / 1000:.0f} km)" if "mdp_max_abs_rel_diff_inside"
                             in metrics else ""))
    return result, _evidence(path, ["I-DATA-COM-3001", "I-DATA-COM-0006"],
                             f"molecular profile (number density, Rayleigh optical depth) from {' + '.join(files)}", ev)


def gdas_vs_era5(gdas=None, era5=None):
    """GDAS vs ERA5 at La Palma, 2023-07-10 00 UTC (ERA5: the grid point nearest CTAO-North at
    that hour): number density at 1-26 km every km and the Rayleigh optical depth from the site.
    Criterion: every |dn/n| < 1.5 % (reanalysis temperature differences of 1-3 K)."""
    g_path, e_path = Path(gdas) if gdas else need(GDAS), Path(era5) if era5 else need(ERA5)
    g = meteo_profile(g_path)
    tg = read_meteo(g_path)
    e = meteo_profile(e_path, time=tg.meta["times"][0])
    z = np.arange(1000.0, 26001.0, 1000.0) * u.m
    rel = e.number_density(z).value / g.number_density(z).value - 1
    tau = {w: (float(g.optical_depth(w * u.nm, 2200 * u.m)), float(e.optical_depth(w * u.nm, 2200 * u.m)))
           for w in (355, 532)}
    metrics = {"max_abs_rel_density_diff": float(np.max(np.abs(rel))),
               "altitude_of_max_diff_m": float(z[np.argmax(np.abs(rel))].value),
               "rms_rel_density_diff": float(np.sqrt(np.mean(rel**2))),
               **{f"tau_{w}nm_gdas": v[0] for w, v in tau.items()},
               **{f"tau_{w}nm_era5_over_gdas_minus_1": v[1] / v[0] - 1 for w, v in tau.items()}}
    ev = Evidence(passed=bool(metrics["max_abs_rel_density_diff"] < REANALYSIS_TOLERANCE), metrics=metrics,
                  criteria={"max_abs_rel_density_diff": f"< {REANALYSIS_TOLERANCE:g} at 1-26 km"},
                  pulls={}, false_fail_rate=0.0,
                  summary=f"ERA5 / GDAS number density within {100 * metrics['max_abs_rel_density_diff']:.2f} % "
                          f"(1-26 km); tau_R(355 nm) differs by "
                          f"{100 * metrics['tau_355nm_era5_over_gdas_minus_1']:+.3f} %")
    return {"altitude": z, "era5_over_gdas_minus_1": rel}, _evidence(
        e_path, ["I-DATA-COM-3001"], f"ERA5 ({e_path.name}) vs GDAS ({g_path.name}) molecular profile, same night", ev)


def rayleigh_evidence(season: str = "ctao-north_summer", wavelengths=(300, 355, 387, 400, 450, 532, 600, 800)):
    """Our Rayleigh optical depth (Bucholtz 1995 cross-section, exponential column between levels)
    on calibpipe's reference atmosphere vs calibpipe's own reference Rayleigh extinction profile
    of the same season, from the site to every altitude_max.  Criterion: max |dtau/tau| < 0.5 %."""
    if season not in SEASONS:
        raise CalibrationError(f"unknown season {season!r}; use one of {', '.join(SEASONS)}")
    atm_path = need(f"reference_atmo_model_v0_{season}.ecsv")
    ray_path = need(f"reference_rayleigh_extinction_profile_v0_{season}.ecsv")
    prof = reference_atmosphere(atm_path)
    ref = read_rayleigh_extinction_profile(ray_path)
    ground = ref["altitude_min"][0]
    cols = [int(np.argmin(np.abs(ref["wavelength"].value - w))) for w in wavelengths]
    ours = np.column_stack([prof.cumulative_optical_depth(ref["altitude_max"], ref["wavelength"][c], ground)
                            for c in cols])
    theirs = ref["optical_depth"][:, cols]
    rel = ours / theirs - 1
    metrics = {"season": season, "ground_m": float(ground.value), "n_altitudes": int(rel.shape[0]),
               "wavelengths_nm": [float(ref["wavelength"][c].value) for c in cols],
               "max_abs_rel_diff": float(np.max(np.abs(rel))), "mean_rel_diff": float(np.mean(rel)),
               **{f"tau_top_{int(ref['wavelength'][c].value)}nm_ours": float(ours[-1, i]) for i, c in enumerate(cols)},
               **{f"tau_top_{int(ref['wavelength'][c].value)}nm_calibpipe": float(theirs[-1, i])
                  for i, c in enumerate(cols)}}
    ev = Evidence(passed=bool(metrics["max_abs_rel_diff"] < RAYLEIGH_TOLERANCE), metrics=metrics,
                  criteria={"max_abs_rel_diff": f"< {RAYLEIGH_TOLERANCE:g}: cross-section conventions "
                                                "(CO2, water vapour, King factor)"},
                  pulls={}, false_fail_rate=0.0,
                  summary=f"{season}: Rayleigh optical depth from {ground.value / 1000:.3f} km agrees with "
                          f"calibpipe's to {100 * metrics['max_abs_rel_diff']:.2f} % (mean "
                          f"{100 * metrics['mean_rel_diff']:+.2f} %) at {len(cols)} wavelengths x "
                          f"{rel.shape[0]} altitudes")
    return {"relative_difference": rel, "altitude_max": ref["altitude_max"],
            "wavelength": ref["wavelength"][cols]}, _evidence(
        ray_path, ["I-DATA-COM-3001", "I-DATA-COM-0006"],
        f"Rayleigh optical depth on {atm_path.name} vs {ray_path.name}", ev)


def _on_grid(prof: MolecularProfile, site_altitude_m: float, top_m: float = 30000.0,
             step_m: float = 25.0) -> MolecularProfile:
    z = np.arange(site_altitude_m - 500.0, top_m + step_m, step_m)
    return MolecularProfile(z, prof.temperature_at(z * u.m).value, prof.pressure_at(z * u.m).value, prof.name)


def lidar_on_gdas(directory, seed: int = 0, path=None):
    """I-DATA-COM-3001 with the real molecular atmosphere: the module's LIDAR sample simulated
    through the GDAS atmosphere of La Palma (2023-07-10 00 UTC) -- instead of the module's
    synthetic sounding -- and retrieved with that sounding as the molecular profile; checked by
    the module (pulls, false-fail rate).  Also the shower-maximum altitude of a 100 GeV shower
    (the CTC-LIDAR cross-check weights the LIDAR transmission around it) from the GDAS profile
    against US76 -- 0.6 km higher -- and that weighted transmission with either (0.7 % apart
    here: the sample's cloud lies at the US76 shower maximum)."""
    from unittest import mock

    from calib.atmosphere import lidar
    from calib.atmosphere.shower import altitude_at_depth, cherenkov_emission_profile, shower_max_depth

    path = Path(path) if path is not None else need(GDAS)
    gdas = meteo_profile(path)
    site = lidar.GENERIC_RAMAN_LIDAR.site_altitude_m
    sounding = _on_grid(gdas, site)
    # the sample's atmosphere is the real sounding (write_sample draws a synthetic one otherwise)
    with mock.patch.object(lidar, "site_atmosphere", lambda rng, site_altitude_m=site, **kw: sounding):
        sample = lidar.write_sample(Path(directory), seed, name=f"lidar_gdas_seed{seed}.h5")
    result = lidar.CONTRACT.run(sample, Path(directory) / f"lidar_gdas_seed{seed}_result.ecsv", {})
    ev = lidar.CONTRACT.check(result, sample)
    x_max = float(shower_max_depth(100.0))
    h_gdas = float(altitude_at_depth(x_max, sounding))
    h_us76 = float(altitude_at_depth(x_max))
    # the CTC cross-check's LIDAR transmission (calib.atmosphere.ctc.lidar_transmission_at_shower_max):
    # the retrieved VAOD weighted with the 100 GeV Cherenkov emission profile, from GDAS or US76
    grid = np.arange(site, 30000.0, 25.0)
    z_l, vaod = np.asarray(result["altitude"].quantity.to_value(u.m)), np.asarray(result["vaod"], float)
    ok = np.isfinite(vaod)
    t_aer = np.exp(-np.interp(grid, z_l[ok], vaod[ok]))
    t_shower = {name: float(np.sum(cherenkov_emission_profile(grid, 100.0, 0.0, site, molecular=mol) * t_aer))
                for name, mol in (("gdas", sounding), ("us76", None))}
    metrics = dict(ev.metrics)
    metrics.update({f"lidar_transmission_at_shower_max_{k}": v for k, v in t_shower.items()})
    metrics.update({"molecular_profile": gdas.name, "shower_max_depth_100GeV_g_cm2": x_max,
                       "shower_max_altitude_gdas_m": h_gdas, "shower_max_altitude_us76_m": h_us76,
                       "rayleigh_tau_355nm_site_to_top_gdas": float(gdas.optical_depth(355 * u.nm, site * u.m)),
                       "rayleigh_tau_355nm_site_to_top_us76": float(
                           MolecularProfile.us76().optical_depth(355 * u.nm, site * u.m))})
    ev = replace(ev, metrics=metrics, summary=ev.summary + f"; molecular profile {gdas.name}; 100 GeV shower "
                 f"maximum at {h_gdas / 1000:.2f} km (US76 {h_us76 / 1000:.2f} km)")
    return result, _evidence(path, ["I-DATA-COM-3001", "I-DATA-COM-0006", "I-DATA-COM-3201"],
                             f"Raman LIDAR retrieval (seed {seed}) through and with the GDAS sounding "
                             f"{path.name} vs the simulated aerosol truth", ev)


def atmosphere_evidence(directory, seed: int = 0) -> list[dict]:
    """The evidence dicts of every comparison above whose files have been fetched (the others
    listed with ``passed: None`` and the reason)."""
    from calib.realdata.files import FILES

    checks = [((GDAS, MDP), meteo_evidence, (GDAS,)), ((ERA5,), meteo_evidence, (ERA5,)),
              ((GDAS, ERA5), gdas_vs_era5, ()),
              *[((f"reference_atmo_model_v0_{s}.ecsv", f"reference_rayleigh_extinction_profile_v0_{s}.ecsv"),
                 rayleigh_evidence, (s,)) for s in SEASONS],
              ((GDAS,), lidar_on_gdas, (directory, seed))]
    out = []
    for names, func, args in checks:
        missing = [n for n in names if real_file(n) is None]
        if missing:
            out.append({"file": missing[0], "sha256": FILES[missing[0]].sha256, "passed": None,
                        "summary": "not fetched (python scripts/fetch-real-data.py)"})
            continue
        out.append(func(*args)[1])
    return out
