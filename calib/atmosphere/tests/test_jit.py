"""The numba kernels compile also where no cache directory can be written (read-only install)."""
import numba
import numba.core.caching as caching
import pytest

from calib.atmosphere._jit import njit


def test_falls_back_to_no_cache_without_a_writable_location(monkeypatch):
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")   # renamed in numba 0.6x
    monkeypatch.setattr(impl, "_locator_classes", [])     # no writable cache location anywhere

    def add_one(x):
        return x + 1

    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(add_one)                   # what plain numba would do at import time
    assert njit()(add_one)(41) == 42
