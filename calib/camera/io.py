"""HDF5 files of simulated camera runs: waveforms or window charges with their truth beside.

Layout (h5py), format ``cta-icd-camera-sim`` version 1::

    /            attrs: format, format_version, run_type, seed, n_events, window, nsb,
                        intensity_jitter
    /camera      attrs: scalar truth (name, n_pixels, n_samples, n_gains, sampling_rate_ghz,
                        saturation_adc, ...); datasets: per-pixel truth arrays, each with
                        an attribute ``unit``
    /events      datasets: waveforms (n_events, n_gains, n_pixels, n_samples) float32 [adc]
                           and/or charge (n_events, n_gains, n_pixels) float32 [adc],
                           true_pe, true_charge, true_time, flasher_intensity

``write_run`` writes a ``SimRun``; ``write_run_chunks`` streams ``iter_waveforms`` chunks
into a resizable dataset (bounded memory for long runs); ``read_run`` reads it back
(optionally a slice of events) and raises ``CalibrationError`` with a readable sentence
on a missing, truncated or foreign file.

Bench and spectrum samples (ENF, cross-talk, linearity, PDE) are flat HDF5 files of named
arrays with the truth beside them (``true_*`` datasets) and scalar attributes:
``write_arrays`` / ``read_arrays`` (the latter checks the required datasets are there).

Calibration ``run()`` functions read only evidence: ``read_readout`` (the readout description
of /camera: geometry, sampling, saturation, reference pulse -- no per-pixel truth) and
``read_measured`` (waveforms / charges, no ``true_*``); the products of upstream interfaces
sit under ``/upstream`` (``write_upstream`` / ``read_upstream`` / ``upstream_input``, each
dataset with a ``source`` sentence naming the module and run it was computed from).
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Iterable

import astropy.units as u
import h5py
import numpy as np

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.camera.simulation import CameraTruth, SimRun
from calib.contract import CalibrationError
from calib.realdata import is_real_file  # no ctapipe import: name test only

__all__ = ["write_run", "write_run_chunks", "read_run", "read_camera", "write_arrays", "read_arrays",
           "Readout", "MeasuredRun", "read_readout", "read_measured", "write_upstream", "read_upstream",
           "upstream_input",
           "FORMAT", "FORMAT_VERSION"]

FORMAT = "cta-icd-camera-sim"
FORMAT_VERSION = 1
_EVENT_ARRAYS = ("waveforms", "charge", "true_pe", "true_charge", "true_time", "flasher_intensity")


def _write_camera(grp: h5py.Group, cam: CameraTruth) -> None:
    for f in fields(CameraTruth):
        v = getattr(cam, f.name)
        if f.name == "extra":
            continue
        if isinstance(v, u.Quantity):
            if v.isscalar:
                grp.attrs[f.name] = float(v.value)
                grp.attrs[f.name + "__unit"] = str(v.unit)
            else:
                d = grp.create_dataset(f.name, data=np.asarray(v.value))
                d.attrs["unit"] = str(v.unit)
        elif isinstance(v, np.ndarray):
            grp.create_dataset(f.name, data=v)
        else:
            grp.attrs[f.name] = v


def _read_camera(grp: h5py.Group) -> CameraTruth:
    kw = {}
    for f in fields(CameraTruth):
        if f.name == "extra":
            continue
        if f.name in grp:
            d = grp[f.name]
            data = d[()]
            unit = d.attrs.get("unit")
            kw[f.name] = data * u.Unit(unit) if unit is not None else data
        elif f.name in grp.attrs:
            v = grp.attrs[f.name]
            unit = grp.attrs.get(f.name + "__unit")
            if unit is not None:
                v = float(v) * u.Unit(unit)
            elif isinstance(v, np.generic):
                v = v.item()
            kw[f.name] = v
    missing = [f.name for f in fields(CameraTruth)
               if f.name not in kw and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise CalibrationError(f"the camera truth in the file lacks {', '.join(missing)}")
    return CameraTruth(**kw)


def _write_header(fh: h5py.File, run: SimRun, n_events: int) -> None:
    fh.attrs["format"] = FORMAT
    fh.attrs["format_version"] = FORMAT_VERSION
    fh.attrs["run_type"] = run.run_type
    fh.attrs["seed"] = int(run.seed)
    fh.attrs["n_events"] = int(n_events)
    fh.attrs["window"] = -1 if run.window is None else int(run.window)
    fh.attrs["nsb"] = bool(run.nsb)
    fh.attrs["intensity_jitter"] = float(run.intensity_jitter)
    _write_camera(fh.create_group("camera"), run.camera)


def write_run(path, run: SimRun, compression: str | None = None) -> Path:
    """Write a simulated run (waveforms and/or charges) with its full truth to HDF5.

    ``compression``: an h5py filter for the event arrays (e.g. "lzf", "gzip"), default none.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        _write_header(fh, run, run.n_events)
        ev = fh.create_group("events")
        for name in _EVENT_ARRAYS:
            v = getattr(run, name)
            if v is None:
                continue
            if name == "waveforms":
                chunks = (1,) + v.shape[1:]
                ev.create_dataset(name, data=v, chunks=chunks, compression=compression)
            else:
                ev.create_dataset(name, data=v, compression=compression)
    return path


def write_run_chunks(path, chunks: Iterable[SimRun], n_events: int) -> Path:
    """Stream waveform chunks (e.g. ``iter_waveforms(...)``) of a run of ``n_events`` to HDF5."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with h5py.File(path, "w") as fh:
        ev = None
        for run in chunks:
            n = run.n_events
            if ev is None:
                _write_header(fh, run, n_events)
                ev = fh.create_group("events")
                for name in _EVENT_ARRAYS:
                    v = getattr(run, name)
                    if v is not None:
                        chunk = (1,) + v.shape[1:] if name == "waveforms" else None
                        ev.create_dataset(name, shape=(n_events,) + v.shape[1:], dtype=v.dtype,
                                          chunks=chunk)
            for name in _EVENT_ARRAYS:
                v = getattr(run, name)
                if v is not None:
                    ev[name][done:done + n] = v
            done += n
        if done != n_events:
            raise CalibrationError(f"the chunks held {done} events, {n_events} were announced")
    return path


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"simulated run file {path} does not exist")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise CalibrationError(
            f"{path} is not a readable HDF5 file (wrong format or truncated): {exc}") from exc
    if fh.attrs.get("format") != FORMAT:
        fh.close()
        raise CalibrationError(f"{path} is not a camera simulation file (format attribute "
                               f"is not {FORMAT!r})")
    if int(fh.attrs.get("format_version", -1)) != FORMAT_VERSION:
        fh.close()
        raise CalibrationError(f"{path} has format version {fh.attrs.get('format_version')}, "
                               f"this reader understands {FORMAT_VERSION}")
    return fh


def read_camera(path) -> CameraTruth:
    """Only the camera truth of a simulated run file."""
    with _open(path) as fh:
        if "camera" not in fh:
            raise CalibrationError(f"{path} holds no camera truth (group /camera missing)")
        return _read_camera(fh["camera"])


def read_run(path, events: slice | None = None) -> SimRun:
    """Read a simulated run (optionally a slice of its events) with its camera truth.

    Raises CalibrationError when the file is missing, not HDF5, truncated, of another
    format, or when its arrays disagree in shape with the camera truth.
    """
    sel = slice(None) if events is None else events
    try:
        with _open(path) as fh:
            if "camera" not in fh or "events" not in fh:
                raise CalibrationError(f"{path} lacks the /camera or /events group: not a complete run")
            cam = _read_camera(fh["camera"])
            ev = fh["events"]
            data = {name: ev[name][sel] for name in _EVENT_ARRAYS if name in ev}
            attrs = dict(fh.attrs)
    except CalibrationError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CalibrationError(f"{path} could not be read completely (truncated or damaged "
                               f"file?): {exc}") from exc
    if "waveforms" not in data and "charge" not in data:
        raise CalibrationError(f"{path} holds neither waveforms nor charges")
    missing = [name for name in ("true_pe", "flasher_intensity") if name not in data]
    if missing:
        raise CalibrationError(f"{path} lacks the truth arrays {', '.join(missing)}")
    n = data["true_pe"].shape[0]
    expect = {"waveforms": (n, cam.n_gains, cam.n_pixels, cam.n_samples),
              "charge": (n, cam.n_gains, cam.n_pixels),
              "true_pe": (n, cam.n_pixels), "flasher_intensity": (n,)}
    for name, shape in expect.items():
        if name in data and data[name].shape != shape:
            raise CalibrationError(f"{path}: {name} has shape {data[name].shape}, the camera "
                                   f"truth implies {shape}")
    window = int(attrs.get("window", -1))
    return SimRun(camera=cam, run_type=str(attrs["run_type"]), seed=int(attrs["seed"]),
                  true_pe=data["true_pe"], flasher_intensity=data["flasher_intensity"],
                  waveforms=data.get("waveforms"), charge=data.get("charge"),
                  true_charge=data.get("true_charge"), true_time=data.get("true_time"),
                  window=None if window < 0 else window, nsb=bool(attrs.get("nsb", True)),
                  intensity_jitter=float(attrs.get("intensity_jitter", 0.0)))


# ----------------------------------------------------------------------------- flat sample files
def write_arrays(path, arrays: dict, attrs: dict | None = None) -> Path:
    """Write named arrays (datasets) and scalar attributes to a flat HDF5 file; returns its path.

    Used by the sample writers of the spectrum and bench modules (ENF, cross-talk,
    linearity, PDE): the measured data and the simulator truth (``true_*``) side by side.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            fh.attrs[key] = value
    return path


def read_arrays(path, required: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """All top-level datasets and the attributes of a file written by :func:`write_arrays`.

    Raises ``CalibrationError`` when the file is missing or not HDF5, or lacks one of the
    ``required`` datasets.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in required if k not in fh]
            if missing:
                raise CalibrationError(f"{path.name} lacks the datasets {missing}")
            return ({k: fh[k][()] for k in fh.keys() if isinstance(fh[k], h5py.Dataset)},
                    dict(fh.attrs))
    except OSError as err:
        raise CalibrationError(f"cannot read {path.name} as HDF5: {err}") from err


# ----------------------------------------------------------------------------- measured data only
#: fields of /camera that describe the readout (design constants and reference products that a
#: real camera ships with its data), as opposed to the per-pixel simulator truth
READOUT_FIELDS = ("name", "n_pixels", "n_samples", "sampling_rate", "n_gains", "pix_x", "pix_y",
                  "saturation_adc", "pulse_template", "pulse_time_step")


@dataclass(frozen=True)
class Readout:
    """Readout description of a camera: geometry, sampling, saturation, reference pulse.

    What a calibration ``run()`` may know about the camera besides its measured data; it
    carries none of the per-pixel truth (baseline, gain, noise, F², time offsets ...).
    """

    name: str
    n_pixels: int
    n_samples: int
    sampling_rate: u.Quantity
    n_gains: int
    pix_x: u.Quantity
    pix_y: u.Quantity
    saturation_adc: float
    pulse_template: np.ndarray
    pulse_time_step: u.Quantity

    @property
    def gain_names(self) -> tuple[str, ...]:
        return ("high", "low") if self.n_gains == 2 else ("single",)

    def neighbors(self) -> np.ndarray:
        """Neighbour list (n_pixels, max_neighbors) padded with -1, from the pixel positions."""
        from calib.camera.simulation import neighbors_from_positions

        return neighbors_from_positions(self.pix_x.to_value(u.m), self.pix_y.to_value(u.m))


@dataclass
class MeasuredRun:
    """The measured part of a run file: waveforms and/or window charges, no truth."""

    camera: Readout
    run_type: str
    waveforms: np.ndarray | None = None
    charge: np.ndarray | None = None
    window: int | None = None

    @property
    def n_events(self) -> int:
        arr = self.waveforms if self.waveforms is not None else self.charge
        return int(arr.shape[0])


def _read_readout(grp: h5py.Group, path) -> Readout:
    kw = {}
    for name in READOUT_FIELDS:
        if name in grp:
            d = grp[name]
            unit = d.attrs.get("unit")
            kw[name] = d[()] * u.Unit(unit) if unit is not None else d[()]
        elif name in grp.attrs:
            v = grp.attrs[name]
            unit = grp.attrs.get(name + "__unit")
            kw[name] = float(v) * u.Unit(unit) if unit is not None else (
                v.item() if isinstance(v, np.generic) else v)
        else:
            raise CalibrationError(f"{path}: the readout description lacks {name!r}")
    return Readout(**kw)


def read_readout(path) -> Readout:
    """The readout description of a run file (no per-pixel truth is read)."""
    if is_real_file(path):  # sim_telarray / zfits: through ctapipe (calib.realdata)
        from calib.realdata.camera import real_readout
        return real_readout(path)
    with _open(path) as fh:
        if "camera" not in fh:
            raise CalibrationError(f"{path} holds no readout description (group /camera missing)")
        return _read_readout(fh["camera"], path)


def read_measured(path, events: slice | None = None) -> MeasuredRun:
    """The measured data of a run file (optionally a slice of events): waveforms and/or
    charges with the readout description; the truth datasets are neither read nor required."""
    if is_real_file(path):  # sim_telarray / zfits: R0 waveforms through ctapipe
        from calib.realdata.camera import real_measured
        return real_measured(path, events)
    sel = slice(None) if events is None else events
    try:
        with _open(path) as fh:
            if "camera" not in fh or "events" not in fh:
                raise CalibrationError(f"{path} lacks the /camera or /events group: not a complete run")
            cam = _read_readout(fh["camera"], path)
            ev = fh["events"]
            data = {name: ev[name][sel] for name in ("waveforms", "charge") if name in ev}
            attrs = dict(fh.attrs)
    except CalibrationError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CalibrationError(f"{path} could not be read completely (truncated or damaged "
                               f"file?): {exc}") from exc
    if not data:
        raise CalibrationError(f"{path} holds neither waveforms nor charges")
    expect = {"waveforms": (cam.n_gains, cam.n_pixels, cam.n_samples),
              "charge": (cam.n_gains, cam.n_pixels)}
    for name, arr in data.items():
        if arr.shape[1:] != expect[name]:
            raise CalibrationError(f"{path}: {name} has shape {arr.shape}, the readout implies "
                                   f"(n_events, {', '.join(map(str, expect[name]))})")
    window = int(attrs.get("window", -1))
    return MeasuredRun(camera=cam, run_type=str(attrs.get("run_type", "")),
                       waveforms=data.get("waveforms"), charge=data.get("charge"),
                       window=None if window < 0 else window)


# ----------------------------------------------------------------------------- upstream products
def write_upstream(path, products: dict, sources: dict) -> None:
    """Store calibration products of other interfaces under ``/upstream`` of a sample file.

    ``products``: name -> array; ``sources``: name -> sentence saying which module computed
    it from which run (stored as the dataset attribute ``source``).
    """
    with h5py.File(path, "a") as fh:
        grp = fh.require_group("upstream")
        for name, value in products.items():
            if name in grp:
                del grp[name]
            d = grp.create_dataset(name, data=np.asarray(value))
            d.attrs["source"] = sources[name]


def read_upstream(path) -> dict[str, tuple[np.ndarray, str]]:
    """The ``/upstream`` products of a sample file: name -> (value, source sentence)."""
    if is_real_file(path):  # a real file brings its own pedestal (and sim_telarray dc_to_pe)
        from calib.realdata.camera import real_upstream
        return real_upstream(path)
    try:
        with h5py.File(path, "r") as fh:
            if "upstream" not in fh:
                return {}
            return {k: (d[()], str(d.attrs.get("source", "unknown")))
                    for k, d in fh["upstream"].items()}
    except OSError as err:
        raise CalibrationError(f"cannot read {Path(path).name} as HDF5: {err}") from err


def upstream_input(name: str, config: dict, upstream: dict, path, module: str,
                   shape: tuple | None = None) -> tuple[np.ndarray, str]:
    """An upstream calibration input: ``config[name]`` if given, else the sample file's
    ``/upstream/<name>``; returns (value, source sentence for the output meta).

    NaN marks a pixel without that product (its results are NaN then).  Raises
    ``CalibrationError`` when neither is there (never falls back to a truth).
    """
    if config.get(name) is not None:
        value, source = np.asarray(config[name], float), "config"
    elif name in upstream:
        value, source = np.asarray(upstream[name][0], float), upstream[name][1]
    else:
        raise CalibrationError(f"{Path(path).name} brings no {name} (from {module}) and the "
                               f"configuration gives none: pass config[{name!r}]")
    if shape is not None:
        try:
            value = np.broadcast_to(value, shape).copy()
        except ValueError as err:
            raise CalibrationError(f"{name} has shape {value.shape}, expected {shape}") from err
    if np.isinf(value).any() or not np.isfinite(value).any():
        raise CalibrationError(f"{name} (from {source}) holds infinite values or no finite value")
    return value, source
