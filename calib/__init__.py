"""calib: calibration kernels of the CTAO DATA work package.

Small pure functions on numpy arrays and astropy Quantities/Tables, one concept per
module, grouped by domain (``camera``, ``pointing``, ``atmosphere``, ``array``).  Each
runnable module declares a ``CONTRACT`` (see ``calib.contract``).  This package never
imports the registry tool ``icd``.
"""
__version__ = "0.1.0"
