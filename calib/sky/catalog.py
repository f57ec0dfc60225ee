"""The Yale Bright Star Catalogue (5th rev. ed., Hoffleit & Warren 1991) as an astropy Table."""
from __future__ import annotations

from functools import lru_cache

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Table

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


def skycoord(table: Table) -> SkyCoord:
    """ICRS coordinates of a catalogue table (J2000, proper motion ignored: < 1 arcsec/yr for almost all)."""
    return SkyCoord(ra=table["ra"].quantity, dec=table["dec"].quantity, frame="icrs")
