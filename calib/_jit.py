"""numba compilation with an on-disk cache only where one can be written (shared by ``calib``).

``numba.njit(cache=True)`` raises at import time ("cannot cache function ...: no locator
available") when neither the package directory nor a user cache directory is writable (a
read-only install, a CI sandbox without a home).  :func:`njit` here asks for the cache and,
when numba refuses, compiles in memory instead (slower first call, same results).

Use it exactly like ``numba.njit``: ``@njit``, ``@njit(parallel=True, fastmath=...)``.
``prange`` is re-exported so that a kernel module needs no other numba import.
"""
from __future__ import annotations

import numba
from numba import prange

__all__ = ["njit", "prange"]


def njit(func=None, **options):
    """``numba.njit(cache=True, **options)``, falling back to ``cache=False`` without a writable cache.

    Works bare (``@njit``) or with options (``@njit(parallel=True)``); ``cache`` must not be given.
    """
    if "cache" in options:
        raise TypeError("calib._jit.njit always asks for the cache; do not pass cache=")

    def decorate(f):
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError:        # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(f)

    return decorate(func) if callable(func) else decorate
