"""Star catalogues as astropy Tables: the Yale Bright Star Catalogue (5th rev. ed., Hoffleit &
Warren 1991; bundled, the default) or the Hipparcos catalogue (ESA 1997, to V = 8, as shipped
in ctapipe's resources; ``calib.realdata.sky``), chosen per call (``catalog=``) or for a block
of code (``use_catalog``).  Each table carries its position epoch in ``meta["epoch"]``
(J2000 for the Yale BSC, J1991.25 for Hipparcos); ``skycoord`` propagates from it."""
from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterator

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Table
from astropy.time import Time

from calib.data import path


@lru_cache(maxsize=1)
def _catalog() -> Table:
    raw = Table.read(path("yale_bright_star_catalog.fits.gz"))
    ra = Angle(np.asarray(raw["RAJ2000"], dtype=str), unit=u.hourangle).to(u.deg)
    dec = Angle(np.asarray(raw["DEJ2000"], dtype=str), unit=u.deg)
    table = Table()
    table["hr"] = np.asarray(raw["HR"], dtype=np.int32)
    table["name"] = np.asarray(raw["Name"].filled("") if hasattr(raw["Name"], "filled") else raw["Name"], dtype=str)
    table["ra"] = ra
    table["dec"] = dec
    table["pm_ra"] = u.Quantity(raw["pmRA"]).to(u.mas / u.yr)
    table["pm_dec"] = u.Quantity(raw["pmDE"]).to(u.mas / u.yr)
    table["vmag"] = np.asarray(raw["Vmag"], dtype=np.float64) * u.mag
    table.meta.update({"catalog": "Yale Bright Star Catalogue, 5th revised edition (VizieR V/50)",
                       "epoch": "J2000", "frame": "ICRS"})
    return table


#: catalogue names accepted by ``bright_stars`` / ``use_catalog``
CATALOGS = ("yale", "hipparcos")
_default = ["yale"]


def _load(name: str) -> Table:
    if name == "yale":
        return _catalog()
    if name == "hipparcos":
        from calib.realdata.sky import hipparcos_catalog   # lazy: needs the file (ctapipe or fetched)

        return hipparcos_catalog()
    from calib.contract import CalibrationError
    raise CalibrationError(f"unknown star catalogue {name!r}; use one of {', '.join(CATALOGS)}")


@contextlib.contextmanager
def use_catalog(name: str) -> Iterator[None]:
    """Within the block, ``bright_stars()`` without ``catalog=`` reads catalogue ``name``."""
    _load(name)                       # fail early, with the reason, on an unknown or missing one
    _default.append(name)
    try:
        yield
    finally:
        _default.pop()


def bright_stars(vmax: float = 8.0, catalog: str | None = None) -> Table:
    """Stars brighter than ``vmax`` (V mag) of ``catalog`` (default: "yale", or the one of the
    enclosing ``use_catalog``): columns hr, name, ra, dec (deg), pm_ra, pm_dec, vmag (+ hip)."""
    table = _load(catalog or _default[-1])
    return table[np.asarray(table["vmag"].value) <= vmax].copy()


def skycoord(table: Table, epoch=None) -> SkyCoord:
    """ICRS coordinates of a catalogue table, at J2000 or, with ``epoch`` (a Time), moved by the
    catalogue proper motion (pm_ra = mu_alpha cos(delta)), linearly from the catalogue's own
    position epoch ``table.meta["epoch"]`` (J2000 if absent; Hipparcos: J1991.25).  The neglected
    second-order term, ~ (mu t)^2 tan(delta) / 2, stays below 0.1 arcsec for 35 years at 3.7"/yr
    and |delta| < 65 deg.

    Proper motions of bright stars reach 3.7 arcsec/yr (alpha Cen): 1.5 arcmin over 25 years, far
    above the arcsecond precision of a pointing model, so epochs other than J2000 need them.
    """
    ra, dec = table["ra"].quantity.to(u.deg), table["dec"].quantity.to(u.deg)
    reference = Time(table.meta.get("epoch", "J2000")).tdb.jyear
    if epoch is not None or reference != 2000.0:
        years = (Time(epoch if epoch is not None else "J2000").tdb.jyear - reference) * u.yr
        years = np.atleast_1d(years)[0] if np.ndim(years) else years     # one epoch per call
        cos_dec = np.maximum(np.cos(dec), 1e-6)
        dec = dec + (table["pm_dec"].quantity * years).to(u.deg)
        ra = ra + (table["pm_ra"].quantity * years / cos_dec).to(u.deg)
        dec = np.clip(dec, -90 * u.deg, 90 * u.deg)
    return SkyCoord(ra=ra % (360 * u.deg), dec=dec, frame="icrs")
