"""Shared by the real-data tests: a missing file or extra skips on a developer machine and
fails with ``CI=true`` (where .ci/run installs the extra and fetches the files)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from calib.realdata.files import real_file

CI = os.environ.get("CI", "").lower() == "true"
HAVE_CTAPIPE = all(importlib.util.find_spec(m) is not None for m in ("ctapipe", "ctapipe_io_lst"))


def absent(msg: str) -> None:
    """Skip the test (developer machine) or fail it (CI) because ``msg`` is missing."""
    pytest.fail(msg) if CI else pytest.skip(msg)


def need_file(name: str, ctapipe: bool = False) -> Path:
    """The fetched real file ``name`` (and the ctapipe extra when ``ctapipe``), else :func:`absent`."""
    if ctapipe and not HAVE_CTAPIPE:
        absent("ctapipe extra not installed (pip install -e '.[ctapipe]')")
    path = real_file(name)
    if path is None:
        absent(f"{name} not fetched (python scripts/fetch-real-data.py)")
    return path
