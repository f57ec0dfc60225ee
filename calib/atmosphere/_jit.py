"""Moved to :mod:`calib._jit` (shared by all ``calib`` packages); re-exported here."""
from calib._jit import njit

__all__ = ["njit"]
