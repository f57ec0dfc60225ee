"""Camera calibration: waveform integration, pedestals, gains, flat-fielding, bad pixels.

Importing this package enables two astropy units used throughout ``calib.camera``:
``adc`` (one count of the camera digitiser, also reachable as ``astropy.units.adc``)
and ``pe`` (one photo-electron), so that tables written with these units (ECSV/FITS)
read back with them.
"""
import astropy.units as u

#: one count of the camera digitiser (charges are sums of samples, in adc)
adc = u.def_unit("adc", doc="ADC count of the camera digitiser")
#: one photo-electron
pe = u.def_unit("pe", doc="photo-electron")
u.add_enabled_units([adc, pe])
# make ``u.adc`` / ``u.pe`` usable by the camera modules
if not hasattr(u, "adc"):
    u.adc = adc
if not hasattr(u, "pe"):
    u.pe = pe

__all__ = ["adc", "pe"]
