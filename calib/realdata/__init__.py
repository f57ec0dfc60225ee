"""Real CTA files for the calibration modules: readers through ctapipe (optional extra).

``pip install -e '.[ctapipe]'`` brings ctapipe 0.28 with eventio (sim_telarray files) and
ctapipe-io-lst (LST-1 R0 zfits); ``scripts/fetch-real-data.py`` fetches the pinned files
(``calib.realdata.files``).  ``calib`` imports and works without ctapipe: it is imported
lazily here, and a real file given without it raises ``CalibrationError`` saying to
install the extra.

* ``calib.realdata.camera``: sim_telarray and LST-1 R0 files -> the readout description and
  the R0 waveforms (ADC) the camera modules take, event types, true p.e. where the file
  has them, the file's own pedestal and ADC-to-p.e. factors; the LST-1 calibration
  products (lstchain HDF5).
* ``calib.realdata.evidence``: per real file, the project's kernels run on it and compared
  with the truth in the file (true p.e.), with ctapipe's own extractor on the same events,
  or with the file's own calibration product: a result plus an evidence dict (file name,
  SHA-256, what was compared, numbers).
"""
from __future__ import annotations

from pathlib import Path

from calib.contract import CalibrationError

__all__ = ["REAL_SUFFIXES", "is_real_file", "require_ctapipe"]

#: file names the camera modules read through ctapipe rather than as project HDF5 samples
REAL_SUFFIXES = (".simtel", ".simtel.gz", ".simtel.zst", ".fits.fz")


def is_real_file(path) -> bool:
    """True for a sim_telarray file or a (LST-1) zfits R0 file, by its name."""
    name = Path(path).name.lower()
    return name.endswith(REAL_SUFFIXES)


def require_ctapipe(path=None, what: str = "ctapipe"):
    """Import and return ``what`` (ctapipe, ctapipe_io_lst ...) or raise CalibrationError."""
    import importlib

    try:
        return importlib.import_module(what)
    except ImportError as exc:
        target = f"reading {Path(path).name} " if path is not None else ""
        raise CalibrationError(
            f"{target}needs {what.split('.')[0]}, which is not installed: install the ctapipe "
            f"extra (pip install -e '.[ctapipe]')") from exc
