"""Data selection using atmospheric parameters: good-time intervals (GTIs).

Method (PROV-DATA-COM-ATM-DATA-SELECTION).  Each monitoring interval carries the Cherenkov
Transparency Coefficient (``calib.atmosphere.ctc``), the aerosol transmission along the
line of sight from the LIDAR (``calib.atmosphere.lidar``; e.g. the light-weighted T-bar of
``calib.atmosphere.correction`` or T at 9 km) and the cloud fraction in the field of view from
the All-Sky Camera (``calib.atmosphere.allsky``).  An interval is

* ``good``        if CTC >= ctc_min, T_aer >= transmission_good and cloud fraction <= cloud_max;
* ``correctable`` if CTC >= ctc_min, transmission_min <= T_aer < transmission_good and
  cloud fraction <= cloud_max: usable after the atmospheric correction;
* rejected otherwise, with the reasons as bits (``SelectionFlag``).

Defaults (all configurable): ctc_min = 0.8 (the usual cut on the H.E.S.S. transparency
coefficient, Hahn et al. 2014); transmission_good = exp(-0.04) = 0.961, i.e. VAOD < 0.04
(the CTAO calibpipe selection); transmission_min = 0.65, the lowest transmission down to
which the correction of Schmuckermaier et al. (2023, A&A 673, A2) is trusted;
cloud_max = 0.1; a missing measurement rejects the interval unless ``allow_missing`` names
the quantity.  Consecutive accepted intervals of the same quality are merged into GTIs;
GTIs shorter than ``min_duration_s`` are dropped.
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time

from calib.contract import CalibrationError, CalibrationModule, Evidence, Port, provenance, write_table

__all__ = ["SelectionConfig", "SelectionFlag", "Quality", "classify", "good_time_intervals", "CONTRACT"]

VERSION = "0.1.0"


@dataclass(frozen=True)
class SelectionConfig:
    ctc_min: float = 0.8
    transmission_good: float = float(np.exp(-0.04))
    transmission_min: float = 0.65
    cloud_max: float = 0.1
    min_duration_s: float = 60.0
    allow_missing: tuple = ()          # e.g. ("cloud_fraction",) to accept intervals without ASC data


class SelectionFlag(enum.IntFlag):
    LOW_CTC = 1
    LOW_TRANSMISSION = 2          #: below transmission_min: not correctable
    CLOUDY = 4
    MISSING_CTC = 8
    MISSING_TRANSMISSION = 16
    MISSING_CLOUD = 32


class Quality(enum.IntEnum):
    REJECTED = 0
    CORRECTABLE = 1
    GOOD = 2


def classify(ctc, transmission, cloud_fraction, config: SelectionConfig = SelectionConfig()
             ) -> tuple[np.ndarray, np.ndarray]:
    """Quality (Quality) and rejection reasons (SelectionFlag bits) per interval."""
    ctc = np.asarray(ctc, dtype=float)
    tr = np.asarray(transmission, dtype=float)
    cf = np.asarray(cloud_fraction, dtype=float)
    if not (ctc.shape == tr.shape == cf.shape) or ctc.ndim != 1:
        raise CalibrationError(f"ctc, transmission and cloud_fraction must be 1-D of equal length; "
                               f"got {ctc.shape}, {tr.shape}, {cf.shape}")
    if ctc.size == 0:
        raise CalibrationError("no monitoring interval given")
    if np.any(tr[np.isfinite(tr)] < 0) or np.any(tr[np.isfinite(tr)] > 1.05):
        raise CalibrationError("aerosol transmissions must lie between 0 and 1")
    if np.any(cf[np.isfinite(cf)] < -0.2) or np.any(cf[np.isfinite(cf)] > 1.2):
        raise CalibrationError("cloud fractions must lie between 0 and 1")
    flag = np.zeros(ctc.shape, dtype=np.int32)
    miss = {"ctc": ~np.isfinite(ctc), "transmission": ~np.isfinite(tr), "cloud_fraction": ~np.isfinite(cf)}
    bits = {"ctc": SelectionFlag.MISSING_CTC, "transmission": SelectionFlag.MISSING_TRANSMISSION,
            "cloud_fraction": SelectionFlag.MISSING_CLOUD}
    for name, m in miss.items():
        if name not in config.allow_missing:
            flag[m] |= bits[name]
    with np.errstate(invalid="ignore"):
        flag[ctc < config.ctc_min] |= SelectionFlag.LOW_CTC
        flag[tr < config.transmission_min] |= SelectionFlag.LOW_TRANSMISSION
        flag[cf > config.cloud_max] |= SelectionFlag.CLOUDY
        needs_corr = tr < config.transmission_good
    quality = np.where(flag != 0, Quality.REJECTED, np.where(needs_corr, Quality.CORRECTABLE, Quality.GOOD))
    return quality.astype(np.int8), flag


def good_time_intervals(start: Time, stop: Time, quality: np.ndarray,
                        min_duration_s: float = 60.0) -> Table:
    """Merge consecutive accepted intervals of equal quality into GTIs (start, stop, quality)."""
    start, stop = Time(start), Time(stop)
    q = np.asarray(quality)
    if len(start) != len(q) or len(stop) != len(q):
        raise CalibrationError("start, stop and quality must have the same length")
    order = np.argsort(start.mjd)
    s, e, q = start.mjd[order], stop.mjd[order], q[order]
    if np.any(e < s):
        raise CalibrationError("an interval stops before it starts")
    gti = []
    i = 0
    tol = 1e-3 / 86400.0
    while i < len(q):
        if q[i] == Quality.REJECTED:
            i += 1
            continue
        j = i
        while j + 1 < len(q) and q[j + 1] == q[i] and s[j + 1] - e[j] <= tol:
            j += 1
        if (e[j] - s[i]) * 86400.0 >= min_duration_s:
            gti.append((s[i], e[j], int(q[i])))
        i = j + 1
    t = Table(rows=gti, names=("start_mjd", "stop_mjd", "quality"), dtype=(float, float, np.int8)) if gti else \
        Table(names=("start_mjd", "stop_mjd", "quality"), dtype=(float, float, np.int8))
    t["start"] = Time(np.asarray(t["start_mjd"]), format="mjd").isot if len(t) else np.array([], dtype="U23")
    t["stop"] = Time(np.asarray(t["stop_mjd"]), format="mjd").isot if len(t) else np.array([], dtype="U23")
    t["duration"] = (np.asarray(t["stop_mjd"]) - np.asarray(t["start_mjd"])) * 86400.0 * u.s
    t["quality_name"] = [Quality(int(x)).name.lower() for x in t["quality"]]
    return t


# ---------------------------------------------------------------------------------------
# contract
# ---------------------------------------------------------------------------------------

def _sample_night(rng: np.random.Generator, noise: bool = True):
    """Six hours of 1-minute intervals: clear, a dust episode (correctable, then too thick),
    a passing cloud, a CTC drop, and a LIDAR gap. Values are kept away from the thresholds by
    more than 5 sigma of their noise so that the true selection is unambiguous."""
    n = 360
    t0 = Time("2025-03-15T21:00:00")
    start = t0 + np.arange(n) * u.min
    stop = start + 1 * u.min
    tr = np.full(n, 0.985)
    tr[60:120] = 0.85          # dust: correctable
    tr[120:150] = 0.55         # too thick
    tr[150:180] = 0.85
    cf = np.full(n, 0.02)
    cf[200:230] = 0.6          # cloud
    ctc = 0.5 + 0.5 * tr       # consistent with the transmission
    ctc[260:280] = 0.6         # hardware / unexplained drop
    if not noise:
        return start, stop, ctc, tr, cf, None
    tr_meas = tr + rng.normal(0, SAMPLE_NOISE["transmission"], n)
    cf_meas = np.clip(cf + rng.normal(0, SAMPLE_NOISE["cloud_fraction"], n), 0, 1)
    ctc_meas = ctc + rng.normal(0, SAMPLE_NOISE["ctc"], n)
    tr_meas[300:310] = np.nan  # LIDAR gap
    cfg = SelectionConfig()
    q_true, _ = classify(ctc, np.where(np.isnan(tr_meas), np.nan, tr), cf, cfg)
    return start, stop, ctc_meas, tr_meas, cf_meas, q_true


#: noise of the simulated measurements (``_sample_night``): transmission, cloud fraction, CTC
SAMPLE_NOISE = {"transmission": 0.003, "cloud_fraction": 0.01, "ctc": 0.005}


def designed_false_fail_rate() -> float:
    """Upper bound of the probability that one seed misclassifies an interval: the Gaussian tail of
    every noise-free value beyond each threshold, summed over intervals and thresholds."""
    from scipy.stats import norm

    cfg = SelectionConfig()
    _, _, ctc, tr, cf, _ = _sample_night(np.random.default_rng(0), noise=False)
    total = 0.0
    for values, sigma, thresholds in ((tr, SAMPLE_NOISE["transmission"], (cfg.transmission_good, cfg.transmission_min)),
                                      (cf, SAMPLE_NOISE["cloud_fraction"], (cfg.cloud_max,)),
                                      (ctc, SAMPLE_NOISE["ctc"], (cfg.ctc_min,))):
        v = values[np.isfinite(values)]
        for th in thresholds:
            total += float(np.sum(norm.sf(np.abs(v - th) / sigma)))
    return total


def write_sample(directory: Path, seed: int) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start, stop, ctc, tr, cf, q_true = _sample_night(np.random.default_rng(seed))
    t = Table()
    t["start"] = start.isot
    t["stop"] = stop.isot
    t["ctc"] = ctc
    t["transmission"] = tr
    t["cloud_fraction"] = cf
    t["true_quality"] = q_true
    t.meta["description"] = ("monitoring intervals (1 min) with CTC, LIDAR aerosol transmission and ASC cloud "
                             "fraction in the FoV; true_quality from the noise-free values")
    path = directory / "selection_sample.ecsv"
    t.write(path, overwrite=True, format="ascii.ecsv")
    return path


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    config = dict(config or {})
    if "allow_missing" in config:
        config["allow_missing"] = tuple(config["allow_missing"])
    cfg = SelectionConfig(**config)
    t = Table.read(input, format="ascii.ecsv")
    q, flag = classify(t["ctc"], t["transmission"], t["cloud_fraction"], cfg)
    gti = good_time_intervals(Time(list(t["start"])), Time(list(t["stop"])), q, cfg.min_duration_s)
    gti.meta["selection_config"] = json.dumps(asdict(cfg))
    gti.meta["interval_quality"] = json.dumps(q.tolist())
    gti.meta["interval_flags"] = json.dumps(flag.tolist())
    gti.meta["n_good"] = int(np.sum(q == Quality.GOOD))
    gti.meta["n_correctable"] = int(np.sum(q == Quality.CORRECTABLE))
    gti.meta["n_rejected"] = int(np.sum(q == Quality.REJECTED))
    gti.meta.update(provenance(__name__, VERSION, [Path(input)], config))
    write_table(gti, output)
    return gti


def check(result: Table, input: Path) -> Evidence:
    t = Table.read(input, format="ascii.ecsv")
    q_true = np.asarray(t["true_quality"])
    q = np.asarray(json.loads(result.meta["interval_quality"]))
    truth_gti = good_time_intervals(Time(list(t["start"])), Time(list(t["stop"])), q_true)
    same = (len(truth_gti) == len(result)
            and np.allclose(truth_gti["start_mjd"], result["start_mjd"], atol=1e-8)
            and np.allclose(truth_gti["stop_mjd"], result["stop_mjd"], atol=1e-8)
            and np.array_equal(np.asarray(truth_gti["quality"]), np.asarray(result["quality"])))
    metrics = {"n_intervals": int(len(q)), "n_misclassified": int(np.sum(q != q_true)),
               "n_gti": int(len(result)), "n_gti_true": int(len(truth_gti)),
               "good_time_s": float(np.sum(result["duration"])) if len(result) else 0.0}
    passed = metrics["n_misclassified"] == 0 and same
    # no continuous estimate: the classification of noisy inputs is exact unless a measurement crosses a
    # threshold; the designed rate is the sum of those Gaussian tails over intervals (``_sample_night``)
    return Evidence(passed=bool(passed), metrics=metrics, pulls={}, false_fail_rate=designed_false_fail_rate(),
                    criteria={"classification": "every interval classified as from the noise-free values",
                              "gti": "GTIs identical to those of the truth"},
                    summary=f"{metrics['n_gti']} GTIs, {metrics['n_misclassified']} misclassified intervals")


CONTRACT = CalibrationModule(
    codes=("PROV-DATA-COM-ATM-DATA-SELECTION",),
    title="Data selection using atmospheric parameters: good-time intervals",
    inputs=(Port("ctc", "", "Cherenkov transparency coefficient per interval"),
            Port("transmission", "", "aerosol transmission (LIDAR) per interval"),
            Port("cloud_fraction", "", "cloud fraction in the field of view (All-Sky Camera)")),
    outputs=(Port("gti", "", "good-time intervals (start, stop, quality good/correctable)"),),
    sample=write_sample, run=run, check=check,
    references=("Hahn J. et al. 2014, Astropart. Phys. 54, 25",
                "Schmuckermaier F. et al. 2023, A&A 673, A2 (arXiv:2302.12072)",
                "Stefanik S., Nosek D. et al. 2019, Proc. 36th ICRC, PoS(ICRC2019)"),
    tests=("calib/atmosphere/tests/test_selection.py",),
    version=VERSION,
    config={
        "ctc_min": "lowest Cherenkov transparency coefficient of a good interval (default 0.8)",
        "transmission_good": "lowest LIDAR transmission of a good interval (default 0.961)",
        "transmission_min": "lowest transmission of a correctable interval (default 0.65)",
        "cloud_max": "largest all-sky cloud fraction in the field of view (default 0.1)",
        "min_duration_s": "shortest good time interval, s (default 60)",
        "allow_missing": "list of monitors whose missing data do not reject an interval (default none)",
    },
)
