"""The Hipparcos catalogue (real star positions) for the sky code, and the modules run on it.

Reader.  ``hipparcos_star_catalog.fits.gz`` (ESA 1997, The Hipparcos and Tycho Catalogues,
SP-1200; VizieR I/239/hip_main, stars to V = 8, 41,074 entries) as shipped in ctapipe's
resources: ``importlib.resources`` when the ``ctapipe`` extra is installed, else the copy that
``scripts/fetch-real-data.py`` extracts from the ctapipe 0.28.0 sdist (same SHA-256).  ICRS
positions are at the catalogue epoch **J1991.25** (header JEPOCH), proper motions
mu_alpha cos(delta), mu_delta in mas/yr; ``meta["epoch"] = "J1991.25"`` makes
``calib.sky.catalog.skycoord`` propagate from that epoch (8.75 years to J2000: 20 arcsec
for Arcturus).  Columns as the Yale table of ``calib.sky.catalog``: hip, hr (the HR number
of the same star in the bundled Yale BSC, matched within 10 arcsec and 0.5 mag at J2000;
-1 otherwise), name, ra, dec, pm_ra, pm_dec, vmag.

Uses (each returns ``(result, evidence)``; ``evidence`` = the file record of the real file
(name, SHA-256, source) + interfaces + what was compared + ``Evidence.to_dict()``):

* :func:`compare_with_yale`: positions and V magnitudes of the stars common to Hipparcos and
  the bundled Yale BSC (5th rev. ed.; J2000 positions rounded to 0.1 s and 1 arcsec);
* :func:`pointing_model_on_hipparcos` (I-DATA-xST-1002), :func:`camera_alignment_on_hipparcos`
  (I-DATA-xST-1001), :func:`allsky_on_hipparcos` (I-DATA-COM-3011): the module's sample built
  on the real sky of the Hipparcos catalogue (``calib.sky.catalog.use_catalog``), run and
  checked by the module's own ``run``/``check`` (their pulls and false-fail rates).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from calib.contract import CalibrationError, Evidence
from calib.realdata.files import file_record, real_file

__all__ = ["HIPPARCOS", "HIPPARCOS_EPOCH", "hipparcos_path", "hipparcos_catalog", "compare_with_yale",
           "pointing_model_on_hipparcos", "camera_alignment_on_hipparcos", "allsky_on_hipparcos",
           "with_catalogue_positions", "sky_evidence"]

HIPPARCOS = "hipparcos_star_catalog.fits.gz"
HIPPARCOS_EPOCH = "J1991.25"
HIPPARCOS_TITLE = "Hipparcos catalogue (ESA 1997, VizieR I/239) to V = 8, as shipped in ctapipe"
#: positional match radius Hipparcos <-> Yale BSC at J2000 (BSC5 errors are ~1 arcsec; the
#: Hipparcos sky to V = 8 holds ~1 star per square degree: a chance match within 10" has p ~ 1e-5)
MATCH_RADIUS_ARCSEC = 10.0
MATCH_DV = 0.5
#: image size of the Hipparcos all-sky sample: the real sky to V = 8 (41,000 stars) on the
#: 1024-pixel sample camera leaves fewer than ``min_matched`` isolated photometric stars (the
#: fisheye puts 0.18 deg on a pixel); 2048 pixels (0.09 deg, as CTAO's all-sky cameras) leave
#: enough -- crowding of the real sky, which the Yale BSC (complete only to V ~ 6.5) hides
HIPPARCOS_ALLSKY_PIXELS = 2048


def hipparcos_path() -> Path:
    """The Hipparcos FITS file: ctapipe's resource if ctapipe is installed, else the fetched copy."""
    if importlib.util.find_spec("ctapipe") is not None:
        from importlib.resources import files

        res = Path(str(files("ctapipe") / "resources" / HIPPARCOS))
        if res.is_file():
            return res
    fetched = real_file(HIPPARCOS)
    if fetched is not None:
        return fetched
    raise CalibrationError(
        f"the Hipparcos catalogue ({HIPPARCOS}) is not available: install the ctapipe extra "
        "(pip install -e '.[ctapipe]') or fetch it (python scripts/fetch-real-data.py)")


def _read(path: Path) -> Table:
    raw = Table.read(path)
    for col in ("RAICRS", "DEICRS", "pmRA", "pmDE", "Vmag", "HIP"):
        if col not in raw.colnames:
            raise CalibrationError(f"{Path(path).name} is not a Hipparcos catalogue: no column {col!r}")

    def plain(col):
        c = raw[col]
        return np.asarray(c.filled(np.nan) if hasattr(c, "filled") else c, dtype=float)

    ra, dec, pmra, pmde, vmag = (plain(c) for c in ("RAICRS", "DEICRS", "pmRA", "pmDE", "Vmag"))
    ok = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(pmra) & np.isfinite(pmde) & np.isfinite(vmag)
    name = raw["name"] if "name" in raw.colnames else np.full(len(raw), "")
    name = np.asarray(name.filled("") if hasattr(name, "filled") else name, dtype=str)
    t = Table()
    t["hip"] = np.asarray(raw["HIP"], dtype=np.int64)[ok]
    t["hr"] = np.full(int(ok.sum()), -1, dtype=np.int32)
    t["name"] = name[ok]
    t["ra"] = ra[ok] * u.deg
    t["dec"] = dec[ok] * u.deg
    t["pm_ra"] = pmra[ok] * u.mas / u.yr
    t["pm_dec"] = pmde[ok] * u.mas / u.yr
    t["vmag"] = vmag[ok] * u.mag
    t.meta.update({"catalog": HIPPARCOS_TITLE, "epoch": HIPPARCOS_EPOCH, "frame": "ICRS",
                   "file": Path(path).name, "n_dropped_incomplete": int((~ok).sum())})
    return t


def _match_yale(hip: Table):
    """Index into ``hip`` and separation (arcsec) at J2000 of every Yale BSC star, and |dV|."""
    from calib.sky.catalog import bright_stars, skycoord

    yale = bright_stars(8.0, catalog="yale")
    idx, sep, _ = skycoord(yale).match_to_catalog_sky(skycoord(hip))
    dv = np.asarray(yale["vmag"].value) - np.asarray(hip["vmag"].value)[idx]
    return yale, idx, sep.to_value(u.arcsec), dv


@lru_cache(maxsize=2)
def _catalog(path: str) -> Table:
    t = _read(Path(path))
    yale, idx, sep, dv = _match_yale(t)
    same = (sep < MATCH_RADIUS_ARCSEC) & (np.abs(dv) < MATCH_DV)
    t["hr"][idx[same]] = np.asarray(yale["hr"])[same]
    return t


def hipparcos_catalog(path=None) -> Table:
    """The Hipparcos catalogue as a star table of ``calib.sky.catalog`` (positions at J1991.25)."""
    return _catalog(str(Path(path) if path is not None else hipparcos_path()))


def _evidence(path, interfaces, compared, ev: Evidence) -> dict:
    return {**file_record(Path(path)), "interfaces": list(interfaces), "compared": compared, **ev.to_dict()}


def compare_with_yale(path=None, high_pm_mas_yr: float = 200.0):
    """Hipparcos vs the bundled Yale BSC for their common stars (nearest Hipparcos star at J2000).

    Criteria (deterministic on these two files; false-fail rate 0):
    * >= 99 % of the 9,096 Yale stars have a Hipparcos counterpart within 10 arcsec (the BSC
      holds a few non-stellar objects and blended doubles);
    * median separation < 1 arcsec after propagating Hipparcos from J1991.25 to J2000: the
      BSC5 positions are rounded to 0.1 s in RA and 1 arcsec in Dec (rms 0.46 arcsec) on top of
      their own pre-Hipparcos astrometry (~0.5 arcsec);
    * the epoch matters: for stars with proper motion > ``high_pm_mas_yr`` the median separation
      is < 1 arcsec with the propagation and > 1.75 arcsec (8.75 yr x 200 mas/yr) without;
    * V magnitudes: median difference within 0.02 mag and robust (1.4826 MAD) spread < 0.05 mag
      (both Johnson V; the Hipparcos V are ground-based photometry to ~0.01 mag).
    """
    from astropy.coordinates import SkyCoord

    from calib.sky.catalog import skycoord

    path = Path(path) if path is not None else hipparcos_path()
    hip = hipparcos_catalog(path)
    yale, idx, sep, dv = _match_yale(hip)
    m = sep < MATCH_RADIUS_ARCSEC
    # the same match with Hipparcos positions taken as J2000 (the epoch ignored)
    naive = SkyCoord(hip["ra"].quantity[idx], hip["dec"].quantity[idx], frame="icrs")
    sep_naive = skycoord(yale).separation(naive).to_value(u.arcsec)
    pm = np.hypot(hip["pm_ra"].quantity.value, hip["pm_dec"].quantity.value)[idx]
    fast = m & (pm > high_pm_mas_yr)
    dvm = dv[m]
    med_dv = float(np.median(dvm))
    metrics = {
        "n_hipparcos": len(hip), "n_yale": len(yale), "n_matched": int(m.sum()),
        "matched_fraction": float(m.mean()),
        "median_separation_arcsec": float(np.median(sep[m])),
        "p90_separation_arcsec": float(np.percentile(sep[m], 90)),
        "fraction_within_1_arcsec": float(np.mean(sep[m] < 1.0)),
        "n_high_pm": int(fast.sum()),
        "high_pm_median_separation_arcsec": float(np.median(sep[fast])),
        "high_pm_median_separation_no_epoch_propagation_arcsec": float(np.median(sep_naive[fast])),
        "median_dV_mag": med_dv,
        "robust_sigma_dV_mag": float(1.4826 * np.median(np.abs(dvm - med_dv))),
        "fraction_abs_dV_below_0.1": float(np.mean(np.abs(dvm) < 0.1)),
    }
    criteria = {
        "matched_fraction": ">= 0.99 (Yale stars with a Hipparcos star within 10 arcsec at J2000)",
        "median_separation_arcsec": "< 1 after J1991.25 -> J2000 propagation (BSC5 rounding 0.46\" rms "
                                    "+ its own astrometry)",
        "high_pm_median_separation_arcsec": f"< 1 with, > 1.75 without propagation (pm > {high_pm_mas_yr:g} mas/yr)",
        "median_dV_mag": "|median| < 0.02 mag, robust sigma < 0.05 mag",
    }
    passed = (metrics["matched_fraction"] >= 0.99 and metrics["median_separation_arcsec"] < 1.0
              and metrics["high_pm_median_separation_arcsec"] < 1.0
              and metrics["high_pm_median_separation_no_epoch_propagation_arcsec"] > 1.75
              and abs(med_dv) < 0.02 and metrics["robust_sigma_dV_mag"] < 0.05)
    result = Table({"hr": yale["hr"][m], "hip": hip["hip"][idx[m]], "separation": sep[m] * u.arcsec,
                    "separation_no_propagation": sep_naive[m] * u.arcsec, "vmag_yale": yale["vmag"][m],
                    "dV": dvm * u.mag})
    ev = Evidence(passed=bool(passed), metrics=metrics, criteria=criteria, pulls={}, false_fail_rate=0.0,
                  summary=f"{metrics['n_matched']} Yale stars in Hipparcos: median separation "
                          f"{metrics['median_separation_arcsec']:.2f}\" at J2000 (high proper motion: "
                          f"{metrics['high_pm_median_separation_arcsec']:.2f}\" vs "
                          f"{metrics['high_pm_median_separation_no_epoch_propagation_arcsec']:.2f}\" without "
                          f"epoch propagation); V: median {med_dv:+.3f}, "
                          f"sigma {metrics['robust_sigma_dV_mag']:.3f} mag")
    return result, _evidence(path, ["I-DATA-xST-1001", "I-DATA-xST-1002", "I-DATA-COM-3011"],
                             "Hipparcos (J1991.25 -> J2000) vs the bundled Yale Bright Star Catalogue: "
                             "positions and V magnitudes of the common stars", ev)


def with_catalogue_positions(table: Table, site: str | None = None) -> Table:
    """``table`` with az_true, el_true: the apparent (refracted, site pressure of US76) place of
    the star named in each row -- column ``hip`` (Hipparcos) or ``hr`` (Yale BSC) -- at its
    ``time``, proper motion to the first time of the table (within one night the motion is
    < 0.01 arcsec).  How a real pointing run is stored: star identifier, time, encoders."""
    from astropy.time import Time

    from calib.pointing.simulation import _site, site_pressure
    from calib.sky.altaz import star_altaz
    from calib.sky.catalog import bright_stars, skycoord

    site = site or table.meta.get("site", "north")
    if "time" not in table.colnames:
        raise CalibrationError("star observations without az_true/el_true need a 'time' column")
    if "hip" in table.colnames:
        cat, key = hipparcos_catalog(), "hip"
    elif "hr" in table.colnames:
        cat, key = bright_stars(8.0, catalog="yale"), "hr"
    else:
        raise CalibrationError("star observations need az_true/el_true or a star identifier column "
                               "'hip' (Hipparcos) or 'hr' (Yale BSC)")
    ids = np.asarray(table[key], dtype=np.int64)
    index = {int(v): i for i, v in enumerate(np.asarray(cat[key]))}
    unknown = sorted({int(i) for i in ids if int(i) not in index})
    if unknown:
        raise CalibrationError(f"{len(unknown)} star(s) not in the {key.upper()} catalogue to V = 8: "
                               f"{unknown[:10]}")
    stars = cat[[index[int(i)] for i in ids]]
    times = Time(table["time"])
    unique, inverse = np.unique(times.jd, return_inverse=True)
    alt, az = star_altaz(skycoord(stars, times[0]), _site(site), Time(unique, format="jd", scale=times.scale),
                         pressure=site_pressure(site))
    out = table.copy()
    rows = np.arange(len(table))
    out["az_true"] = az[inverse, rows].to(u.deg)
    out["el_true"] = alt[inverse, rows].to(u.deg)
    return out


def _run_module(contract, sample: Path, directory: Path, config: dict | None = None):
    out = Path(directory) / f"{sample.stem}_result.ecsv"
    result = contract.run(sample, out, dict(config or {}))
    return result, contract.check(result, sample)


def _pointing_sample(directory: Path, seed: int, which: str) -> Path:
    from calib.contract import write_table
    from calib.pointing import simulation
    from calib.sky.catalog import use_catalog

    with use_catalog("hipparcos"):
        if which == "pointing_model":
            table = simulation.simulate_pointing_run(n_observations=300, site="north", seed=seed)
        else:
            table = simulation.simulate_camera_alignment(site="north", seed=seed)
    table.meta["catalog"] = HIPPARCOS_TITLE
    if "ra" in table.colnames:                 # the HIP number of each observed star (same catalogue row)
        hip = hipparcos_catalog()
        key = {(float(r), float(d)): int(h) for r, d, h in zip(hip["ra"].value, hip["dec"].value, hip["hip"])}
        table["hip"] = [key[(float(r), float(d))] for r, d in zip(table["ra"].value, table["dec"].value)]
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / f"{which}_hipparcos_seed{seed}.ecsv"
    write_table(table, path)
    return path


def pointing_model_on_hipparcos(directory, seed: int = 0):
    """I-DATA-xST-1002: the pointing-model sample (300 star observations, CTAO-North) built on the
    Hipparcos stars to V = 4 at the night's epoch, run and checked by the module."""
    from calib.pointing.pointing_model import CONTRACT

    sample = _pointing_sample(Path(directory), seed, "pointing_model")
    result, ev = _run_module(CONTRACT, sample, directory)
    return result, _evidence(hipparcos_path(), CONTRACT.codes,
                             f"pointing model fitted on 300 observations of Hipparcos stars (seed {seed}) "
                             "vs the simulated mount", ev)


def camera_alignment_on_hipparcos(directory, seed: int = 0):
    """I-DATA-xST-1001: star images on the lid from the richest Hipparcos field (V < 7) plus the
    reference LEDs, run and checked by the module."""
    from calib.pointing.camera_alignment import CONTRACT

    sample = _pointing_sample(Path(directory), seed, "camera_alignment")
    result, ev = _run_module(CONTRACT, sample, directory)
    return result, _evidence(hipparcos_path(), CONTRACT.codes,
                             f"camera displacement/rotation from Hipparcos star images on the lid (seed {seed}) "
                             "vs the simulated truth", ev)


def allsky_on_hipparcos(directory, seed: int = 0):
    """I-DATA-COM-3011: the all-sky sample image rendered from the Hipparcos sky to V = 8 (4.5 x
    the Yale stars: the real crowding of the sky) on a 2048-pixel camera and analysed with the
    Hipparcos catalogue (star identification, extinction fit, cloud fraction), checked by the
    module (config ``catalogue: hipparcos``, as ``icd run`` would pass it)."""
    from dataclasses import replace

    from calib.atmosphere.allsky import CONTRACT, SAMPLE_CAMERA, write_sample

    cam = replace(SAMPLE_CAMERA, catalogue="hipparcos", n_pixels=HIPPARCOS_ALLSKY_PIXELS)
    sample = write_sample(Path(directory), seed, cam)
    sample = sample.rename(sample.with_name(f"allsky_hipparcos_seed{seed}.h5"))
    result, ev = _run_module(CONTRACT, sample, directory)
    return result, _evidence(hipparcos_path(), CONTRACT.codes,
                             f"all-sky image of the Hipparcos sky (seed {seed}): cloud fraction per cell and "
                             "zenith extinction vs the simulated truth", ev)


def sky_evidence(directory, seed: int = 0, allsky: bool = True) -> list[dict]:
    """The evidence dicts of the Hipparcos comparisons and of 1001/1002/3011 run on it (the
    all-sky one takes ~15 s; ``allsky=False`` leaves it out); without the catalogue one entry
    with ``passed: None`` and the reason."""
    try:
        hipparcos_path()
    except CalibrationError as exc:
        return [{"file": HIPPARCOS, "passed": None, "summary": str(exc)}]
    out = [compare_with_yale()[1], pointing_model_on_hipparcos(directory, seed)[1],
           camera_alignment_on_hipparcos(directory, seed)[1]]
    if allsky:
        out.append(allsky_on_hipparcos(directory, seed)[1])
    return out
