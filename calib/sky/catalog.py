"""The Yale Bright Star Catalogue (5th rev. ed., Hoffleit & Warren 1991) as an astropy Table."""
from __future__ import annotations

from functools import lru_cache

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


def bright_stars(vmax: float = 8.0) -> Table:
    """Stars brighter than ``vmax`` (V mag): columns hr, name, ra, dec (deg), pm_ra, pm_dec, vmag."""
    table = _catalog()
    return table[np.asarray(table["vmag"].value) <= vmax].copy()


def skycoord(table: Table, epoch=None) -> SkyCoord:
    """ICRS coordinates of a catalogue table, at J2000 or, with ``epoch`` (a Time), moved by the
    catalogue proper motion (pm_ra = mu_alpha cos(delta)), linearly from J2000.

    Proper motions of bright stars reach 3.7 arcsec/yr (alpha Cen): 1.5 arcmin over 25 years, far
    above the arcsecond precision of a pointing model, so epochs other than J2000 need them.
    """
    ra, dec = table["ra"].quantity.to(u.deg), table["dec"].quantity.to(u.deg)
    if epoch is not None:
        years = (Time(epoch).tdb.jyear - 2000.0) * u.yr
        years = np.atleast_1d(years)[0] if np.ndim(years) else years     # one epoch per call
        cos_dec = np.maximum(np.cos(dec), 1e-6)
        dec = dec + (table["pm_dec"].quantity * years).to(u.deg)
        ra = ra + (table["pm_ra"].quantity * years / cos_dec).to(u.deg)
        dec = np.clip(dec, -90 * u.deg, 90 * u.deg)
    return SkyCoord(ra=ra % (360 * u.deg), dec=dec, frame="icrs")
