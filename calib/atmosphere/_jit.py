"""numba compilation with an on-disk cache only where one can be written.

``numba.njit(cache=True)`` raises at import time when neither the package directory nor a
user cache directory is writable (a read-only install, a CI sandbox without a home).  The
kernels then compile in memory instead (slower first call, same results).
"""
from __future__ import annotations

import numba

__all__ = ["njit"]


def njit(**options):
    """``numba.njit(cache=True, **options)``, falling back to ``cache=False`` without a writable cache."""
    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError:        # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(func)
    return decorate
