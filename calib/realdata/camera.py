"""Readers of real camera files (through ctapipe) into what the camera modules take.

* sim_telarray files (``.simtel``, ``.simtel.gz``, ``.simtel.zst``; ctapipe
  ``SimTelEventSource`` with eventio): R0 waveforms in ADC, both gain channels, of one camera
  type (all its telescopes stacked as events), the trigger event type, the true p.e. per
  pixel where the file has them, and the file's own calibration: pedestal per sample
  (camera monitoring ``pedestal / n_ped_slices``) and ADC-to-p.e. factor (laser
  calibration ``calib``, p.e. per ADC of the integrated charge, as ctapipe applies it).
  Calibration events are kept (``skip_calibration_events=False``); the equivalent focal
  length is used (prod5 files carry no effective one).
* LST-1 R0 zfits (``.fits.fz``; ``ctapipe_io_lst.LSTEventSource``): the R0 waveforms in ADC,
  cropped to samples [3, 39) as ctapipe-io-lst's R1 (the first and last DRS4 samples are
  spiky), event types from the TIB with ctapipe-io-lst's flat-field heuristic.  No DRS4
  baseline is applied: the only one shipped (Run 2460, ctapipe-io-lst 0.9.3) is from
  another night; the per-pixel baseline is the median of the samples of the file's
  events (its ``baseline`` with that source sentence).
* LST-1 calibration products (lstchain HDF5, ``/tel_1/{pedestal,flatfield,calibration}``):
  per-pixel charge statistics of the pedestal and flat-field events and the F-factor result.

Everything is returned in the project's terms: a ``calib.camera.io.Readout`` (geometry,
sampling, saturation, reference pulse from ``CameraReadout.reference_pulse_shape``) and
numpy arrays (n_events, n_gains, n_pixels, n_samples).  Saturation: 4095 ADC (12-bit
digitisers of LST, NectarCAM, FlashCam in sim_telarray and of LST-1).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import astropy.units as u
import numpy as np

import calib.camera  # noqa: F401  (enables the adc unit)
from calib.contract import CalibrationError
from calib.realdata import is_real_file, require_ctapipe

__all__ = ["RealRun", "read_simtel", "read_lst_r0", "read_real", "read_lst_calibration",
           "SATURATION_ADC", "LST_R1_SAMPLES"]

SATURATION_ADC = 4095.0
#: ctapipe-io-lst's R1 sample range (r1_sample_start, r1_sample_end)
LST_R1_SAMPLES = (3, 39)


@dataclass
class RealRun:
    """The events of one camera type read from a real file."""

    path: Path
    camera: "calib.camera.io.Readout"
    tel_id: np.ndarray            # (n_events,)
    event_id: np.ndarray          # (n_events,)
    event_type: np.ndarray        # (n_events,) ctapipe EventType names
    waveforms: np.ndarray         # (n_events, n_gains, n_pixels, n_samples) float32 [adc]
    true_pe: np.ndarray | None = None             # (n_events, n_pixels)
    pedestal_per_sample: np.ndarray | None = None  # (n_events, n_gains, n_pixels) [adc], file's own
    dc_to_pe: np.ndarray | None = None            # (n_events, n_gains, n_pixels) [p.e./adc], file's own
    r1_waveforms: np.ndarray | None = None        # ctapipe's R1 (simtel: (R0 - ped) x dc_to_pe)
    baseline_source: str = ""

    @property
    def n_events(self) -> int:
        return int(self.waveforms.shape[0])

    def select(self, mask) -> "RealRun":
        """The events where ``mask`` (bool or index array) holds."""
        def take(a):
            return None if a is None else a[mask]
        return replace(self, tel_id=self.tel_id[mask], event_id=self.event_id[mask],
                       event_type=self.event_type[mask], waveforms=self.waveforms[mask],
                       true_pe=take(self.true_pe), pedestal_per_sample=take(self.pedestal_per_sample),
                       dc_to_pe=take(self.dc_to_pe), r1_waveforms=take(self.r1_waveforms))

    def baseline(self) -> np.ndarray:
        """Per-pixel baseline per sample (n_gains, n_pixels) [adc]: the file's pedestal (median
        over the telescopes) if it has one, else the median of all samples of all events."""
        if self.pedestal_per_sample is not None:
            return np.median(self.pedestal_per_sample, axis=0)
        return np.median(self.waveforms, axis=(0, 3))

    @property
    def run_type(self) -> str:
        kinds = set(self.event_type.tolist())
        if kinds == {"FLATFIELD"}:
            return "flatfield"
        if kinds <= {"SKY_PEDESTAL", "DARK_PEDESTAL"}:
            return "pedestal"
        return "+".join(sorted(k.lower() for k in kinds))


def _readout(cam_desc, n_samples: int, n_gains: int):
    from calib.camera.io import Readout

    ro = cam_desc.readout
    geom = cam_desc.geometry
    tmpl = np.atleast_2d(np.asarray(ro.reference_pulse_shape, float))
    if tmpl.shape[0] < n_gains:  # one reference pulse for all channels
        tmpl = np.repeat(tmpl[:1], n_gains, axis=0)
    return Readout(name=str(cam_desc.name), n_pixels=int(geom.n_pixels), n_samples=int(n_samples),
                   sampling_rate=u.Quantity(ro.sampling_rate).to(u.GHz), n_gains=int(n_gains),
                   pix_x=u.Quantity(geom.pix_x).to(u.m), pix_y=u.Quantity(geom.pix_y).to(u.m),
                   saturation_adc=SATURATION_ADC, pulse_template=tmpl[:n_gains],
                   pulse_time_step=u.Quantity(ro.reference_pulse_sample_width).to(u.ns))


def _open_error(path, exc) -> CalibrationError:
    return CalibrationError(f"{Path(path).name} could not be read as a CTA camera file "
                            f"(damaged, truncated or of another format?): {exc}")


def read_simtel(path, camera: str | None = None, max_events: int | None = None) -> RealRun:
    """All telescope events of one camera type (default: that of the first telescope event)
    of a sim_telarray file, with true p.e., the file's pedestal and dc_to_pe, ctapipe's R1."""
    require_ctapipe(path)
    from ctapipe.io import SimTelEventSource

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"real data file {path} does not exist")
    rows = []
    try:
        with SimTelEventSource(path, skip_calibration_events=False, focal_length_choice="EQUIVALENT",
                               select_gain=False, max_events=max_events) as src:
            for ev in src:
                for tid, r0 in ev.r0.tel.items():
                    desc = src.subarray.tel[tid].camera
                    if camera is None:
                        camera = desc.name
                    if desc.name != camera:
                        continue
                    cm = src.file_.camera_monitorings[tid]
                    lc = src.file_.laser_calibrations[tid]
                    sim = ev.simulation.tel.get(tid) if ev.simulation is not None else None
                    true = None if sim is None or sim.true_image is None else np.asarray(sim.true_image)
                    rows.append(dict(desc=desc, tid=tid, eid=ev.index.event_id,
                                     etype=ev.trigger.event_type.name,
                                     wf=np.asarray(r0.waveform, np.float32),
                                     r1=np.asarray(ev.r1.tel[tid].waveform, np.float32),
                                     true=true, ped=np.asarray(cm["pedestal"] / cm["n_ped_slices"], float),
                                     dc=np.asarray(lc["calib"], float)))
    except CalibrationError:
        raise
    except Exception as exc:  # eventio / ctapipe raise many kinds on a damaged file
        raise _open_error(path, exc) from exc
    if not rows:
        raise CalibrationError(f"{path.name} holds no telescope events"
                               + (f" of camera {camera}" if camera else ""))
    wf = np.stack([r["wf"] for r in rows])
    trues = [r["true"] for r in rows]
    true = None
    if all(t is not None for t in trues):
        true = np.stack(trues).astype(float)
        if np.all(true < 0):  # sim_telarray writes -1 where no true image was stored
            true = None
    return RealRun(path=path, camera=_readout(rows[0]["desc"], wf.shape[-1], wf.shape[1]),
                   tel_id=np.array([r["tid"] for r in rows]), event_id=np.array([r["eid"] for r in rows]),
                   event_type=np.array([r["etype"] for r in rows]), waveforms=wf, true_pe=true,
                   pedestal_per_sample=np.stack([r["ped"] for r in rows]),
                   dc_to_pe=np.stack([r["dc"] for r in rows]),
                   r1_waveforms=np.stack([r["r1"] for r in rows]),
                   baseline_source=f"the sim_telarray camera monitoring of {path.name} "
                                   "(pedestal / n_ped_slices, median over its telescopes)")


def read_lst_r0(path, max_events: int | None = None) -> RealRun:
    """LST-1 R0 events (both gains, samples [3, 39)) with their TIB / heuristic event types."""
    require_ctapipe(path, "ctapipe_io_lst")
    from ctapipe_io_lst import LSTEventSource

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"real data file {path} does not exist")
    lo, hi = LST_R1_SAMPLES
    wfs, eids, types = [], [], []
    try:
        with LSTEventSource(path, apply_drs4_corrections=False, pointing_information=False,
                            use_flatfield_heuristic=True, max_events=max_events) as src:
            tid = src.tel_id
            desc = src.subarray.tel[tid].camera
            for ev in src:
                r0 = ev.r0.tel[tid].waveform
                if r0.ndim != 3 or r0.shape[0] != 2:
                    raise CalibrationError(f"{path.name}: event {ev.index.event_id} is gain-selected "
                                           f"(R0 shape {r0.shape}); both gains are needed")
                wfs.append(np.asarray(r0[..., lo:hi], np.float32))
                eids.append(ev.index.event_id)
                types.append(ev.trigger.event_type.name)
    except CalibrationError:
        raise
    except Exception as exc:
        raise _open_error(path, exc) from exc
    if not wfs:
        raise CalibrationError(f"{path.name} holds no events")
    wf = np.stack(wfs)
    return RealRun(path=path, camera=_readout(desc, wf.shape[-1], 2), tel_id=np.full(len(eids), tid),
                   event_id=np.array(eids), event_type=np.array(types), waveforms=wf,
                   baseline_source=f"median of the R0 samples [{lo}, {hi}) of the {len(eids)} events "
                                   f"of {path.name} (no DRS4 baseline of that night is available)")


@functools.lru_cache(maxsize=4)
def _read_real_cached(path: str, mtime: float) -> RealRun:
    name = Path(path).name.lower()
    if name.endswith(".fits.fz"):
        return read_lst_r0(path)
    return read_simtel(path)


def read_real(path) -> RealRun:
    """A real file by its name (sim_telarray or LST-1 zfits), cached while unchanged."""
    path = Path(path)
    if not is_real_file(path):
        raise CalibrationError(f"{path.name} is not a sim_telarray or zfits file")
    if not path.is_file():
        raise CalibrationError(f"real data file {path} does not exist")
    return _read_real_cached(str(path.resolve()), path.stat().st_mtime)


def read_lst_calibration(path, tel_id: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """An LST-1 calibration product (lstchain HDF5): {"pedestal"|"flatfield"|"calibration"|
    "pixel_status": {column: array}} of its first row (arrays (n_gains, n_pixels))."""
    tables = require_ctapipe(path, "tables")  # PyTables (with ctapipe): blosc-compressed tables

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist")
    out = {}
    try:
        with tables.open_file(str(path), "r") as fh:
            for table in ("pedestal", "flatfield", "calibration", "pixel_status"):
                where = f"/tel_{tel_id}/{table}"
                if where not in fh:
                    raise CalibrationError(f"{path.name} lacks {where}: not an LST calibration product")
                row = fh.get_node(where)[0]
                out[table] = {name: np.asarray(row[name]) for name in row.dtype.names}
    except (OSError, tables.HDF5ExtError) as exc:
        raise CalibrationError(f"{path.name} is not a readable HDF5 file: {exc}") from exc
    return out


# ----------------------------------------------------------------------------- calib.camera.io hooks
def real_readout(path):
    """``calib.camera.io.read_readout`` for a real file: its readout description."""
    return read_real(path).camera


def real_measured(path, events: slice | None = None):
    """``calib.camera.io.read_measured`` for a real file: its R0 waveforms [adc] (a slice of
    its events) as a ``MeasuredRun``; ``run_type`` from the trigger event types."""
    from calib.camera.io import MeasuredRun

    run = read_real(path)
    sel = slice(None) if events is None else events
    return MeasuredRun(camera=run.camera, run_type=run.run_type, waveforms=run.waveforms[sel])


def real_upstream(path) -> dict[str, tuple[np.ndarray, str]]:
    """``calib.camera.io.read_upstream`` for a real file: the products the file itself brings.

    ``baseline`` (n_gains, n_pixels) [adc per sample]: sim_telarray's pedestal, or the median
    of the LST-1 R0 samples; ``gain`` [adc per p.e.] = 1 / the sim_telarray dc_to_pe (median
    over the file's telescopes).  Others (dark noise, F²) must come from the configuration.
    """
    run = read_real(path)
    out = {"baseline": (run.baseline(), run.baseline_source)}
    if run.dc_to_pe is not None:
        with np.errstate(divide="ignore"):
            out["gain"] = (1.0 / np.median(run.dc_to_pe, axis=0),
                           f"1 / the sim_telarray laser calibration (dc_to_pe) of {Path(path).name}")
    return out


def real_charge_data(path, width: int = 7, shift: int = 3) -> dict:
    """``calib.camera.chain.read_charge_data`` for a real file: window charges [adc] of its
    flat-field (FLATFIELD) and pedestal (SKY_/DARK_PEDESTAL) events, baseline included, in one
    fixed window at the median peak sample of the flat-field events (the same window for both,
    as the F-factor needs).  Raises CalibrationError when either kind of event is missing."""
    from calib.camera.extraction import data_peak_index, fixed_window_sum

    run = read_real(path)
    ff = run.select(run.event_type == "FLATFIELD")
    ped = run.select(np.isin(run.event_type, ["SKY_PEDESTAL", "DARK_PEDESTAL"]))
    if ff.n_events == 0 or ped.n_events == 0:
        raise CalibrationError(
            f"{Path(path).name} holds {ff.n_events} flat-field and {ped.n_events} pedestal events "
            f"of {run.camera.name}: the flat-field and F-factor calibrations need both")
    cam = run.camera
    peak = data_peak_index(ff.waveforms, run.baseline())

    def charges(r):
        return np.stack([fixed_window_sum(r.waveforms, peak, width=width, shift=shift, gain=g,
                                          sampling_rate=cam.sampling_rate).charge
                         for g in range(cam.n_gains)], axis=1)

    ffq = charges(ff)
    sat = (ff.waveforms >= cam.saturation_adc).any(-1)
    return {"camera": cam, "flatfield_charge": ffq, "pedestal_charge": charges(ped),
            "flatfield_saturated": sat, "inputs": [Path(path)]}
