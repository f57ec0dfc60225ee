"""Pointing and optics calibration: camera alignment, pointing model, dual-mirror plate scale,
coma of single-mirror optics and the optical PSF (interfaces I-DATA-xST-1001 ... 1005).

``simulation`` builds sample data with known truth from real star positions (Yale Bright
Star Catalogue, astropy AltAz at the CTAO sites); each concept has its own module.
"""
