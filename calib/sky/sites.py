"""CTAO sites as astropy EarthLocations."""
import astropy.units as u
from astropy.coordinates import EarthLocation

#: CTAO-North, Roque de los Muchachos, La Palma
CTAO_NORTH = EarthLocation.from_geodetic(lon=-17.8920 * u.deg, lat=28.7616 * u.deg, height=2200 * u.m)
#: CTAO-South, near Paranal, Chile
CTAO_SOUTH = EarthLocation.from_geodetic(lon=-70.3167 * u.deg, lat=-24.6833 * u.deg, height=2150 * u.m)

SITES = {"north": CTAO_NORTH, "south": CTAO_SOUTH}
