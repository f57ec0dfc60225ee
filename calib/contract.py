"""The module contract: how a calibration module declares what it implements.

A calibration module is a plain Python module of small pure functions (numpy arrays,
astropy Quantities and Tables).  To be runnable from an interface registry it also
defines, at module level, one object::

    CONTRACT = CalibrationModule(
        codes=("I-DATA-xST-0106",),
        title="ADC/p.e. ratio by the F-factor method",
        inputs=(Port("flatfield_charge", "adc", "flat-field charges, (n_events, n_pixels)"), ...),
        outputs=(Port("gain", "adc", "ADC counts per photo-electron, per pixel"), ...),
        references=("Mirzoyan & Lorenz 1997", ...),
        sample=write_sample,    # (directory, seed) -> Path of a sample-data file with truth
        run=run,                # (input Path, output Path, config dict) -> astropy Table
        check=check,            # (result Table, input Path) -> Evidence
        tests=("calib/camera/tests/test_ffactor.py",),
    )

The *method* shown in ICD documents is the module docstring.  Nothing here imports
the registry tool: ``calib`` stands alone, and a pipeline can call the kernels
directly without any of this.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "Port",
    "CalibrationModule",
    "Evidence",
    "CalibrationError",
    "provenance",
    "load_contract",
    "write_table",
    "real_data_evidence",
]

CODE_PATTERN = r"^(I-DATA-(COM|xST|ACTL)-\d{4}|PROV-DATA-(COM|xST|ACTL)-[A-Z0-9-]+)$"


class CalibrationError(ValueError):
    """Bad input to a calibration kernel (NaN, wrong shape, saturation, too few events ...).

    The message is a sentence for a person; kernels raise this instead of returning
    a number computed from data they cannot trust.
    """


@dataclass(frozen=True)
class Port:
    """One input or output of a module: name, unit (astropy string, '' if dimensionless), meaning."""

    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class Evidence:
    """The result of checking a module's output against the truth of its sample data.

    ``metrics`` maps a metric name to a plain float (or str); ``criteria`` states, per
    metric, the acceptance rule in words (e.g. ``"|bias| < 0.5 %"``).

    ``pulls`` maps a name to this seed's standardised residual (estimate - truth) / sigma
    of one headline quantity (e.g. the camera-mean gain bias over its standard error).  If
    the module's errors are right, each pull is N(0, 1) over seeds: an ensemble of seeds
    tests that, where one seed cannot.  ``false_fail_rate`` is the designed probability that
    a correct module fails this check on one seed (the tail probabilities of its criteria,
    summed); an ensemble of seeds is judged against it.
    """

    passed: bool
    metrics: dict[str, Any]
    criteria: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    pulls: dict[str, float] = field(default_factory=dict)
    false_fail_rate: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": bool(self.passed),
            "metrics": {k: _plain(v) for k, v in self.metrics.items()},
            "criteria": dict(self.criteria),
            "summary": self.summary,
            "pulls": {k: float(v) for k, v in self.pulls.items()},
            "false_fail_rate": float(self.false_fail_rate),
        }


@dataclass(frozen=True)
class CalibrationModule:
    """Declaration of a calibration module, read by tools that run it."""

    codes: tuple[str, ...]
    title: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    sample: Callable[[Path, int], Path]
    run: Callable[[Path, Path, dict], Any]
    check: Callable[[Any, Path], Evidence]
    references: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    version: str = "0.1.0"
    #: configuration keys ``run()`` accepts, name -> meaning; any other key is refused
    config: dict[str, str] = field(default_factory=dict)


def load_contract(module_path: str) -> tuple[CalibrationModule, str]:
    """Import ``module_path`` (e.g. ``calib.camera.ffactor``) and return its CONTRACT and docstring.

    Raises ImportError or LookupError with a sentence a person understands.
    """
    module = importlib.import_module(module_path)
    contract = getattr(module, "CONTRACT", None)
    if not isinstance(contract, CalibrationModule):
        raise LookupError(f"module {module_path} defines no CONTRACT = CalibrationModule(...)")
    return contract, inspect.getdoc(module) or ""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance(module: str, version: str, inputs: list[Path] | tuple[Path, ...] = (),
               config: dict | None = None) -> dict[str, str]:
    """Provenance metadata for an output table: module, version, input hashes, configuration, time."""
    import numpy

    return {
        "module": module,
        "module_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": json.dumps({str(Path(p).name): file_sha256(Path(p)) for p in inputs}),
        "config": json.dumps(config or {}, sort_keys=True, default=str),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }


def write_table(table, path: Path) -> None:
    """Write a module's output table, overwriting: ECSV for ``.ecsv``, HDF5 (table at ``data``,
    metadata kept) for ``.h5``/``.hdf5``, otherwise astropy's format for the suffix (e.g. FITS)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ecsv":
        table.write(path, format="ascii.ecsv", overwrite=True)
    elif path.suffix in (".h5", ".hdf5"):
        table.write(path, path="data", serialize_meta=True, overwrite=True)
    else:
        table.write(path, overwrite=True)


def real_data_available() -> bool:
    """True when real CTA files have been fetched (``scripts/fetch-real-data.py``)."""
    from calib.realdata.files import FILES, real_file

    return any(real_file(name) is not None for name in FILES)


def real_data_evidence(workdir: Path) -> list[dict[str, Any]]:
    """The calibration modules run on the real CTA files fetched by ``scripts/fetch-real-data.py``
    (sim_telarray, LST-1 R0 and calibration files; Hipparcos; GDAS/ERA5 and calibpipe profiles).
    One dict per comparison: ``file``, ``sha256``, ``interfaces`` it backs, ``compared``,
    ``passed`` (None: not fetched, or the ctapipe extra missing, with ``summary`` saying so),
    ``metrics``, ``criteria``.  ``workdir`` takes the samples some comparisons write."""
    from calib.realdata.evidence import all_evidence

    return [_plain(rec) for rec in all_evidence(Path(workdir))]


def _plain(value: Any) -> Any:
    """Convert numpy / astropy scalars to JSON-friendly Python values."""
    if hasattr(value, "unit") and hasattr(value, "value"):
        return {"value": _plain(value.value), "unit": str(value.unit)}
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class Timer:
    """Context manager measuring wall time in seconds (``.seconds``)."""

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
