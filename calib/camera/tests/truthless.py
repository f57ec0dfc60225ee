"""Test helper: a copy of a sample file (and its companion run files) with the truth removed.

``run()`` of a calibration module may use only measured data and upstream products; running
it on such a copy proves it (a truth read then fails with a missing dataset).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

from calib.camera.io import FORMAT, READOUT_FIELDS

COMPANION_ATTRS = ("pedestal_run", "dark_run")


def _strip(path: Path) -> None:
    with h5py.File(path, "a") as fh:
        if fh.attrs.get("format") == FORMAT:  # a simulated run: keep readout + measured data
            cam = fh["camera"]
            for key in list(cam.keys()):
                if key not in READOUT_FIELDS:
                    del cam[key]
            for key in list(cam.attrs.keys()):
                if key.split("__")[0] not in READOUT_FIELDS:
                    del cam.attrs[key]
            ev = fh["events"]
            for key in list(ev.keys()):
                if key not in ("waveforms", "charge"):
                    del ev[key]
            for key in ("seed", "nsb", "intensity_jitter"):
                if key in fh.attrs:
                    del fh.attrs[key]
        else:  # a flat file of arrays: drop the true_* datasets
            for key in list(fh.keys()):
                if key.startswith("true_"):
                    del fh[key]


def truthless_copy(path: Path, directory: Path) -> Path:
    """Copy ``path`` (plus the run files it names) into ``directory`` without any truth."""
    path, directory = Path(path), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / path.name
    shutil.copy(path, out)
    with h5py.File(path, "r") as fh:
        companions = [str(fh.attrs[a]) for a in COMPANION_ATTRS if a in fh.attrs]
    for name in companions:
        shutil.copy(path.parent / name, directory / name)
        _strip(directory / name)
    _strip(out)
    return out


def assert_same_table(a, b) -> None:
    """Same columns and values (NaN == NaN) in two result tables."""
    assert a.colnames == b.colnames
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind in "fc":
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
            np.testing.assert_array_equal(np.nan_to_num(x), np.nan_to_num(y), err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def assert_run_ignores_truth(module: str, tmp_path: Path, seed: int = 0):
    """The CONTRACT of ``module``: run() on a truthless copy of the sample gives the same table
    as on the sample, whose check passes; every upstream input names its source."""
    import json

    from calib.contract import load_contract

    contract, _ = load_contract(module)
    path = contract.sample(Path(tmp_path) / "sample", seed)
    bare = truthless_copy(path, Path(tmp_path) / "bare")
    ref = contract.run(path, Path(tmp_path) / "ref.ecsv", {})
    got = contract.run(bare, Path(tmp_path) / "bare.ecsv", {})
    assert_same_table(ref, got)
    assert contract.check(got, path).passed
    upstream = ref.meta.get("upstream_inputs")
    if upstream is not None:
        sources = json.loads(upstream)
        assert sources and all(sources.values())
    return ref, path
