"""Benchmark of the waveform-integration kernels (I-DATA-xST-0101).

1,000 LST events (1855 pixels x 40 samples, float32, 297 MB, pedestal-subtracted high-gain
flat-field waveforms from calib.camera.simulation).  Targets: local-peak extraction
<= 0.1 s and within 4x of reading the array once from memory.  Every figure is the best
of several repeats, measured in the same run.  Run: .venv/bin/python bench/bench_extraction.py
``--simulation`` instead times the simulator on 10,000 LST events per run type.
"""
import os
import time

import numba
import numpy as np

from calib._jit import njit
from calib.camera import extraction as X
from calib.camera.simulation import make_camera, simulate_waveforms


def best(fn, repeat=7, clock=time.perf_counter):
    ts = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return min(ts)


@njit(parallel=True, fastmath=True)
def _read_once(wf):
    """Touch every sample once (parallel vectorised sum): the memory-bandwidth floor."""
    flat = wf.reshape(-1)
    n = flat.shape[0]
    chunk = 1 << 16
    n_chunks = (n + chunk - 1) // chunk
    parts = np.zeros(n_chunks, np.float32)
    for c in numba.prange(n_chunks):
        acc = np.float32(0.0)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            acc += flat[i]
        parts[c] = acc
    return parts.sum()


def main():
    cam = make_camera("lst", seed=0)
    t0 = time.perf_counter()
    run = simulate_waveforms(cam, "flatfield", 1000, seed=1)
    t_sim = time.perf_counter() - t0
    raw = np.ascontiguousarray(run.waveforms[:, 0])  # high gain, baseline included
    base = cam.baseline.value[0]
    wf = raw - base[None, :, None].astype(np.float32)
    del run
    print(f"waveforms {wf.shape} {wf.dtype}, {wf.nbytes / 1e6:.0f} MB (simulated in {t_sim:.2f} s), "
          f"numba threads {numba.get_num_threads()}")

    small = wf[:2, :10]
    t0 = time.perf_counter()
    X.local_peak_window_sum(small)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _read_once(np.ascontiguousarray(small))
    t_first_read = time.perf_counter() - t0
    print(f"first call (JIT compile, or load from the numba cache): local peak {t_first:.2f} s, "
          f"read kernel {t_first_read:.2f} s")
    fresh = numba.njit(parallel=True, fastmath=X._FAST)(X._local_peak_kernel.py_func)
    q = np.empty(small.shape[:2], np.float32)
    t0 = time.perf_counter()
    fresh(np.ascontiguousarray(small)[:, None], 0, np.zeros(small.shape[1], np.float32), np.inf,
          7, 3, 0, 1.0, np.ones(small.shape[1]), q, q.copy(), np.empty(q.shape, bool))
    print(f"JIT compile time of the local-peak kernel without cache: {time.perf_counter() - t0:.2f} s")

    t_read = best(lambda: _read_once(wf))
    t_sum = best(lambda: wf.sum(-1))
    res = {}
    for name, fn in [
        ("local_peak", lambda: X.local_peak_window_sum(wf)),
        ("local_peak+base", lambda: X.local_peak_window_sum(raw, baseline=base, saturation_adc=4095)),
        ("global_peak", lambda: X.global_peak_window_sum(wf)),
        ("neighbor_peak", lambda: X.neighbor_peak_window_sum(wf, cam.neighbors())),
        ("sliding", lambda: X.sliding_window_max_sum(wf)),
        ("fixed", lambda: X.fixed_window_sum(wf, 18)),
        ("full", lambda: X.full_waveform_sum(wf)),
    ]:
        res[name] = best(fn)
    t_ref = best(lambda: X.reference_local_peak(wf[:100]), repeat=2) * 10

    print(f"read the array once (parallel sum)  {t_read:.4f} s")
    print(f"numpy wf.sum(-1)                    {t_sum:.4f} s")
    for name, t in res.items():
        print(f"{name:<15s} extractor           {t:.4f} s   ratio to wf.sum(-1) {t / t_sum:5.2f}   "
              f"to one read {t / t_read:5.2f}")
    print("  (local_peak+base: raw waveforms, per-pixel baseline subtracted on the fly and "
          "saturation flagged, as the calibration chain calls it)")
    print(f"plain-numpy reference local peak    {t_ref:.2f} s (100 events x 10)")
    # load-independent figure: CPU time with one thread (the machine is shared)
    n_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    cpu_lp = best(lambda: X.local_peak_window_sum(wf), clock=time.process_time)
    cpu_sum = best(lambda: wf.sum(-1), clock=time.process_time)
    cpu_read = best(lambda: _read_once(wf), clock=time.process_time)
    numba.set_num_threads(n_threads)
    print(f"one thread, CPU time: local peak {cpu_lp:.4f} s, wf.sum(-1) {cpu_sum:.4f} s "
          f"(ratio {cpu_lp / cpu_sum:.2f}), one read {cpu_read:.4f} s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    lp = res["local_peak"]
    ok1 = lp <= 0.1
    ok2 = lp <= 4 * t_read
    print(f"target local peak <= 0.1 s: {lp:.4f} s -> {'MET' if ok1 else 'NOT MET'}")
    print(f"target local peak <= 4 x one read ({4 * t_read:.4f} s): {lp / t_read:.2f}x -> "
          f"{'MET' if ok2 else 'NOT MET'}")
    print(f"speed-up over the plain-numpy reference: {t_ref / lp:.0f}x")


def bench_simulation(n_events=10_000, chunk=500):
    """Time the simulator: 10,000 LST events (2 gains) per run type, streamed in chunks."""
    from calib.camera.simulation import iter_waveforms

    cam = make_camera("lst", seed=0)
    simulate_waveforms(cam, "flatfield", 4, seed=0)  # JIT / cache load
    for run_type in ("dark", "pedestal", "flatfield"):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in iter_waveforms(cam, run_type, n_events, seed=1, chunk_size=chunk, reuse_buffer=True):
            pass
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_samp = n_events * cam.n_gains * cam.n_pixels * cam.n_samples
        print(f"simulate {n_events} LST {run_type:<9s} events: wall {wall:5.1f} s, CPU {cpu:5.1f} s "
              f"({1e9 * cpu / n_samp:.2f} ns CPU per sample, {n_samp * 4 / 1e9:.1f} GB of waveforms)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    import sys

    if "--simulation" in sys.argv:
        bench_simulation()
    else:
        main()
