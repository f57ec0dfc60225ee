"""Tests of the HDF5 run files: round trip, streaming, and readable errors on bad files."""
import h5py
import numpy as np
import pytest

from calib.camera.io import read_camera, read_run, write_run, write_run_chunks
from calib.camera.simulation import iter_waveforms, make_camera, simulate_charges, simulate_waveforms
from calib.contract import CalibrationError


@pytest.fixture(scope="module")
def tiny():
    return make_camera("tiny", seed=3)


def _same_camera(a, b):
    assert a.name == b.name and a.n_pixels == b.n_pixels and a.n_gains == b.n_gains
    for name in ("baseline", "gain", "electronic_noise", "time_offset", "nsb_rate", "pix_x"):
        va, vb = getattr(a, name), getattr(b, name)
        assert va.unit == vb.unit and np.array_equal(va.value, vb.value)
    for name in ("enf_sq", "relative_qe", "dead", "noisy", "pulse_template", "spe_pdf", "nonlinearity"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.flasher_time == b.flasher_time and a.saturation_adc == b.saturation_adc


def test_waveform_round_trip(tmp_path, tiny):
    run = simulate_waveforms(tiny, "flatfield", 12, seed=1)
    path = write_run(tmp_path / "ff.h5", run, compression="lzf")
    back = read_run(path)
    assert np.array_equal(back.waveforms, run.waveforms)
    assert np.array_equal(back.true_pe, run.true_pe)
    assert np.array_equal(back.true_time, run.true_time)
    assert back.run_type == "flatfield" and back.seed == 1 and back.charge is None
    _same_camera(back.camera, tiny)
    part = read_run(path, events=slice(3, 7))
    assert np.array_equal(part.waveforms, run.waveforms[3:7])
    _same_camera(read_camera(path), tiny)


def test_charge_round_trip(tmp_path, tiny):
    run = simulate_charges(tiny, "pedestal", 50, seed=2, window=5)
    back = read_run(write_run(tmp_path / "ped.h5", run))
    assert back.window == 5 and back.waveforms is None
    assert np.array_equal(back.charge, run.charge)


def test_streamed_file_equals_the_whole_run(tmp_path, tiny):
    whole = simulate_waveforms(tiny, "spe", 17, seed=4)
    path = write_run_chunks(tmp_path / "s.h5", iter_waveforms(tiny, "spe", 17, 4, chunk_size=6), 17)
    assert np.array_equal(read_run(path).waveforms, whole.waveforms)
    with pytest.raises(CalibrationError, match="announced"):
        write_run_chunks(tmp_path / "t.h5", iter_waveforms(tiny, "spe", 5, 4, chunk_size=2), 9)


def test_bad_files_raise_readable_errors(tmp_path, tiny):
    with pytest.raises(CalibrationError, match="does not exist"):
        read_run(tmp_path / "nothing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(CalibrationError, match="not a readable HDF5 file"):
        read_run(text)
    good = write_run(tmp_path / "good.h5", simulate_waveforms(tiny, "dark", 5, seed=5))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(CalibrationError, match="truncated"):
        read_run(cut)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["x"] = np.arange(3)
    with pytest.raises(CalibrationError, match="not a camera simulation file"):
        read_run(other)
    # arrays that disagree with the camera truth (a gain channel missing)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes())
    with h5py.File(bad, "r+") as fh:
        wf = fh["events/waveforms"][:, :1]
        del fh["events/waveforms"]
        fh["events/waveforms"] = wf
    with pytest.raises(CalibrationError, match="waveforms has shape"):
        read_run(bad)


def test_missing_truth_raises(tmp_path, tiny):
    path = write_run(tmp_path / "r.h5", simulate_charges(tiny, "dark", 5, seed=6))
    with h5py.File(path, "r+") as fh:
        del fh["events/true_pe"]
    with pytest.raises(CalibrationError, match="lacks the truth arrays true_pe"):
        read_run(path)
    with h5py.File(path, "r+") as fh:
        del fh["events/charge"]
    with pytest.raises(CalibrationError, match="neither waveforms nor charges"):
        read_run(path)


def test_measured_reader_needs_no_truth_and_upstream_inputs_never_fall_back(tmp_path):
    """read_measured / read_readout read a run stripped of all truth (read_run cannot);
    upstream_input takes config first, then /upstream, and raises without either."""
    import pytest

    from calib.camera.io import (read_measured, read_readout, read_run, read_upstream,
                                 upstream_input, write_run, write_upstream)
    from calib.camera.simulation import make_camera, simulate_waveforms
    from calib.camera.tests.truthless import truthless_copy
    from calib.contract import CalibrationError

    cam = make_camera("tiny", seed=3)
    path = write_run(tmp_path / "r.h5", simulate_waveforms(cam, "pedestal", 5, 4))
    bare = truthless_copy(path, tmp_path / "bare")
    with pytest.raises(CalibrationError):
        read_run(bare)
    m = read_measured(bare, events=slice(1, 3))
    assert m.n_events == 2 and m.waveforms.shape == (2, cam.n_gains, cam.n_pixels, cam.n_samples)
    assert not hasattr(read_readout(bare), "baseline")
    with pytest.raises(CalibrationError, match="config\\['gain'\\]"):
        upstream_input("gain", {}, read_upstream(bare), bare, "calib.camera.ffactor")
    write_upstream(bare, {"gain": [[80.0] * cam.n_pixels] * 2}, {"gain": "ffactor, computed from run X"})
    value, source = upstream_input("gain", {}, read_upstream(bare), bare, "calib.camera.ffactor",
                                   (2, cam.n_pixels))
    assert source == "ffactor, computed from run X" and value.shape == (2, cam.n_pixels)
    value, source = upstream_input("gain", {"gain": 70.0}, read_upstream(bare), bare, "x",
                                   (2, cam.n_pixels))
    assert source == "config" and np.all(value == 70.0)
    with pytest.raises(CalibrationError, match="infinite"):
        upstream_input("gain", {"gain": np.inf}, {}, bare, "x")
