"""Run the calibration modules registered in the registry, and record their evidence.

For each interface with a ``module:``, the module's contract is used as is:
``sample(dir, seed)`` writes sample data with known truth, ``run(input, output, config)``
computes the calibration product, ``check(result, input)`` compares it with the truth.
One evidence record per interface (pass/fail, metrics, duration) goes to the evidence
store, which the ICD documents and the status report show.  Interfaces that share a
module are run once.

Over an ensemble of seeds (``n_seeds > 1``) each module is judged as a whole
(:func:`judge`): the number of seeds whose check failed against the check's designed
false-fail rate (a binomial test), and each pull's mean and standard deviation over the
seeds against N(0, 1) (a z test and a chi-square band, once there are ``MIN_PULL_SEEDS``).
Seeds run in parallel over processes.
"""
from __future__ import annotations

import difflib
import math
import time
import traceback
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from . import modules as modmod
from .evidence import EvidenceRecord
from .registry import Loaded


class RunError(Exception):
    """A request the runner cannot carry out (unknown code, no module); one sentence."""


class RunUsageError(RunError):
    """A request that is wrong as asked (unknown code, unknown config key, output format): exit 2."""


#: significance of the binomial test of the failures of one module over its seeds
ALPHA = 1e-3
#: significance of all pull tests of one module together (Bonferroni over names and the two tests)
PULL_ALPHA = 1e-3
#: fewest seeds with which the pulls' mean and standard deviation are judged
MIN_PULL_SEEDS = 5
#: seeds of ``icd run --all`` when neither --seed nor --seeds is given: the fewest with which the
#: pulls are judged; measured 115 s CPU for all 26 modules x 5 seeds, about 1 min on 2 idle cores
DEFAULT_SEEDS = 5
#: output formats ``calib.contract.write_table`` writes, by file suffix
OUTPUT_SUFFIXES = (".ecsv", ".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".h5", ".hdf5")


def resolve_code(loaded: Loaded, code: str) -> str:
    """The registry's spelling of ``code`` (case-insensitive); unknown: RunUsageError with a suggestion."""
    by_code = loaded.index.by_code
    if code in by_code:
        return code
    folded = {c.lower(): c for c in by_code}
    if code.lower() in folded:
        return folded[code.lower()]
    match = difflib.get_close_matches(code.upper(), [c.upper() for c in by_code], n=1, cutoff=0.6)
    hint = f" (did you mean {folded[match[0].lower()]}?)" if match else ""
    raise RunUsageError(f"no interface {code} in {loaded.path}{hint}; `icd list` shows the codes")


def check_output_path(path: Path) -> None:
    """Refuse an output file whose suffix names no table format, before anything runs."""
    name = Path(path).name.lower()
    if not any(name.endswith(sfx) for sfx in OUTPUT_SUFFIXES):
        suffix = "".join(Path(path).suffixes[-1:]) or "no suffix"
        raise RunUsageError(f"output {path}: cannot write a table as '{suffix}'; "
                            f"name it .ecsv, .fits or .h5 (also "
                            f"{', '.join(x for x in OUTPUT_SUFFIXES if x not in ('.ecsv', '.fits', '.h5'))})")


def check_config(module: str, contract: Any, config: dict) -> None:
    """Refuse configuration keys the module does not declare in ``CONTRACT.config``, with a suggestion."""
    known = dict(getattr(contract, "config", None) or {})
    unknown = [k for k in config if k not in known]
    if not unknown:
        return
    parts = []
    for key in unknown:
        match = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
        parts.append(f"'{key}'" + (f" (did you mean '{match[0]}'?)" if match else ""))
    accepted = (f"it accepts: {', '.join(sorted(known))}" if known else "it accepts no configuration")
    raise RunUsageError(f"unknown configuration key{'s' if len(unknown) > 1 else ''} {', '.join(parts)} "
                        f"for {module}; {accepted}")


@dataclass
class Job:
    module: str
    codes: list[str]
    tests: list[str]


def jobs(loaded: Loaded, codes: Optional[Iterable[str]] = None) -> list[Job]:
    """The modules to run for ``codes`` (all registered ones when None), in registry order."""
    index = loaded.index
    wanted = [resolve_code(loaded, c) for c in codes] if codes is not None else None
    if wanted is not None:
        for code in wanted:
            if not index.by_code[code].module:
                raise RunUsageError(f"interface {code} has no calibration module yet (its module: is empty)")
    by_module: dict[str, Job] = {}
    for iface in loaded.registry.interfaces:
        if not iface.module or (wanted is not None and iface.code not in wanted):
            continue
        job = by_module.setdefault(iface.module, Job(iface.module, [], []))
        job.codes.append(iface.code)
        job.tests.extend(t for t in iface.tests if t not in job.tests)
    return list(by_module.values())


def sample(loaded: Loaded, codes: Optional[Iterable[str]], outdir: Path, seed: int = 0,
           progress: Optional[Callable[[str], None]] = None) -> dict[str, Path]:
    """Write the sample data of each module; returns {interface code: sample file}."""
    written: dict[str, Path] = {}
    for job in jobs(loaded, codes):
        if progress:
            progress(job.module)
        contract = modmod.contract_of(job.module)
        target = Path(outdir) / job.module.rsplit(".", 1)[-1]
        target.mkdir(parents=True, exist_ok=True)
        path = Path(contract.sample(target, seed))
        for code in job.codes:
            written[code] = path
    return written


def run_file(loaded: Loaded, code: str, input_path: Path, output_path: Path, config: dict | None = None,
             check: bool = False) -> EvidenceRecord:
    """Run the module of ``code`` on a given input file; with ``check``, compare with the file's truth.

    The output format and the configuration keys are checked before the module runs
    (:class:`RunUsageError`); without ``check`` the record's verdict is ``ran``.
    """
    (job,) = jobs(loaded, [code])
    code = job.codes[0]
    contract = modmod.contract_of(job.module)
    config = dict(config or {})
    check_output_path(Path(output_path))
    check_config(job.module, contract, config)
    if not Path(input_path).is_file():
        raise RunError(f"input file {input_path} does not exist")
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = contract.run(Path(input_path), Path(output_path), config)
    except Exception as exc:  # noqa: BLE001 - a file the module cannot read is the user's input, one line
        raise RunError(f"{job.module} could not process {input_path}: {type(exc).__name__}: {exc}") from None
    duration = time.perf_counter() - t0
    rows = len(result) if hasattr(result, "__len__") else 0
    record = EvidenceRecord(code=code, module=job.module, passed=True, checked=False,
                            summary=f"wrote {rows} row{'s' if rows != 1 else ''} to {output_path} (no truth check)",
                            duration_s=round(duration, 3), timestamp=_now(), module_version=contract.version,
                            tests=job.tests, input=str(input_path), output=str(output_path))
    if check:
        evidence = contract.check(result, Path(input_path))
        data = evidence.to_dict()
        record.checked = True
        record.passed = bool(data["passed"])
        record.summary = data["summary"]
        record.metrics = data["metrics"]
        record.criteria = dict(data["criteria"])
        record.false_fail_rate = data.get("false_fail_rate")
        record.pull_stats = {k: {"n": 1, "mean": v, "std": None, "ok": None}
                             for k, v in data.get("pulls", {}).items()}
    return record


# -- one seed of one module, in a worker process ---------------------------------------------------
def _seed_task(module: str, folder: str, seed: int, config: Optional[dict] = None) -> dict[str, Any]:
    """sample -> run -> check of ``module`` for ``seed`` in ``folder``; a plain dict, never raises."""
    folder_path = Path(folder)
    name = module.rsplit(".", 1)[-1]
    out: dict[str, Any] = dict(seed=seed, passed=False, error=None, summary="", metrics={}, criteria={},
                               pulls={}, false_fail_rate=None, module_version="", input=None, output=None)
    t0 = time.perf_counter()
    try:
        contract = modmod.contract_of(module)
        out["module_version"] = contract.version
        folder_path.mkdir(parents=True, exist_ok=True)
        input_path = Path(contract.sample(folder_path, seed))
        output_path = folder_path / f"{name}_result.ecsv"
        out["input"] = str(input_path)
        result = contract.run(input_path, output_path, dict(config or {}))
        out["output"] = str(output_path)
        data = contract.check(result, input_path).to_dict()
    except Exception as exc:  # noqa: BLE001 - recorded as the module's evidence, shown in reports
        out.update(summary=f"{type(exc).__name__}: {exc}", error=_short_trace(exc))
    else:
        out.update(passed=bool(data["passed"]), summary=data["summary"], metrics=data["metrics"],
                   criteria=dict(data["criteria"]), pulls=dict(data.get("pulls") or {}),
                   false_fail_rate=data.get("false_fail_rate"))
    out["duration_s"] = round(time.perf_counter() - t0, 3)
    return out


# -- judging an ensemble of seeds ------------------------------------------------------------------
def binomial_tail(failures: int, n: int, rate: float) -> float:
    """P(X >= failures) for X ~ Binomial(n, rate): how likely that many failures are from a correct module."""
    from scipy import stats

    if failures <= 0:
        return 1.0
    return float(stats.binom.sf(failures - 1, n, min(max(float(rate), 0.0), 1.0)))


def pull_statistics(pulls: dict[str, list[float]], alpha: float = PULL_ALPHA,
                    min_n: int = MIN_PULL_SEEDS) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation of each pull over seeds, judged against N(0, 1).

    With n >= ``min_n`` finite values: the mean must satisfy |mean| <= z / sqrt(n) and the
    sample standard deviation s must lie in the band sqrt(chi2_{n-1}(q) / (n-1)) for
    q = a/2 and 1 - a/2, where a = alpha / (2 * number of pulls) (Bonferroni: every test of
    the module together fails a correct module with probability <= alpha) and z is the
    two-sided normal quantile of a.  A non-finite pull always fails.  Fewer seeds: not judged
    (``ok`` is None).
    """
    import numpy as np
    from scipy import stats

    each = alpha / (2 * max(len(pulls), 1))
    z = float(stats.norm.isf(each / 2))
    out: dict[str, dict[str, Any]] = {}
    for name, values in pulls.items():
        v = np.asarray(values, float)
        finite = v[np.isfinite(v)]
        n = int(finite.size)
        row: dict[str, Any] = {"n": n, "mean": float(finite.mean()) if n else None,
                               "std": float(finite.std(ddof=1)) if n > 1 else None,
                               "n_nonfinite": int(v.size - n), "mean_limit": None, "std_band": None, "ok": None}
        if n >= min_n:
            lo = math.sqrt(float(stats.chi2.ppf(each / 2, n - 1)) / (n - 1))
            hi = math.sqrt(float(stats.chi2.isf(each / 2, n - 1)) / (n - 1))
            row["mean_limit"], row["std_band"] = z / math.sqrt(n), [lo, hi]
            row["ok"] = bool(abs(row["mean"]) <= row["mean_limit"] and lo <= row["std"] <= hi)
        if row["n_nonfinite"]:
            row["ok"] = False
        out[name] = row
    return out


def judge(results: list[dict[str, Any]], alpha: float = ALPHA, pull_alpha: float = PULL_ALPHA,
          min_pull_n: int = MIN_PULL_SEEDS) -> dict[str, Any]:
    """The verdict of one module over seeds (``results`` of :func:`_seed_task`).

    One seed: the check's own verdict.  Several: fail when the failures are too many for the
    check's designed false-fail rate r (binomial P(X >= k | N, r) < ``alpha``) or a pull's
    mean or spread is off (:func:`pull_statistics`); an error on any seed is an error.
    """
    n = len(results)
    errors = [r["seed"] for r in results if r.get("error")]
    checked = [r for r in results if not r.get("error")]
    failed = [r["seed"] for r in checked if not r["passed"]]
    rates = [r["false_fail_rate"] for r in checked if r.get("false_fail_rate") is not None]
    rate = max(rates) if rates else None
    k = len(failed)
    p = binomial_tail(k, len(checked), rate) if rate is not None and checked else None
    names: list[str] = []
    for r in checked:
        names.extend(k_ for k_ in r["pulls"] if k_ not in names)
    # a pull some seeds do not report (a quantity measured only when present) counts over the others
    pulls = pull_statistics({name: [r["pulls"][name] for r in checked if name in r["pulls"]] for name in names},
                            pull_alpha, min_pull_n)
    reasons = []
    if errors:
        reasons.append(f"error on seed{'s' if len(errors) > 1 else ''} {', '.join(map(str, errors))}")
    if n == 1:
        passed = not errors and k == 0
        if k:
            reasons.append(f"the check failed on seed {failed[0]}")
    else:
        binomial_ok = p is None and k == 0 or p is not None and p >= alpha
        if not binomial_ok:
            reasons.append(f"{k} of {len(checked)} seeds failed (seeds {', '.join(map(str, failed))}): "
                           f"P(≥ {k} | designed false-fail rate {rate:.2g}) = {p:.2g} < {alpha:g}")
        for name, row in pulls.items():
            if row["ok"] is False:
                if row["n_nonfinite"]:
                    reasons.append(f"pull {name} is not finite on {row['n_nonfinite']} seed(s)")
                else:
                    reasons.append(f"pull {name}: mean {row['mean']:+.2f} (limit {row['mean_limit']:.2f}), "
                                   f"std {row['std']:.2f} (band {row['std_band'][0]:.2f}-{row['std_band'][1]:.2f})")
        passed = not reasons
    return {"n": n, "seeds": [r["seed"] for r in results], "failures": k, "errors": errors,
            "pass_rate": (n - k - len(errors)) / n if n else None, "false_fail_rate": rate, "binomial_p": p,
            "pulls": pulls, "passed": passed, "reasons": reasons,
            "rules": {"alpha": alpha, "pull_alpha": pull_alpha, "min_pull_seeds": min_pull_n}}


def _record(job: Job, results: list[dict[str, Any]], verdict: dict[str, Any], timestamp: str) -> EvidenceRecord:
    """One evidence record from a module's seeds: the first seed's metrics, the ensemble's verdict."""
    first = results[0]
    n = len(results)
    metrics = dict(first["metrics"])
    criteria = dict(first["criteria"])
    summary = first["summary"]
    if n > 1:
        passes = n - verdict["failures"] - len(verdict["errors"])
        rate, p = verdict["false_fail_rate"], verdict["binomial_p"]
        ens_metrics: dict[str, Any] = {"seeds passed": f"{passes}/{n}"}
        ens_criteria = {"seeds passed": (f"P(≥ {verdict['failures']} failures | {n} seeds, designed "
                                         f"false-fail rate {rate:.2g}) = {p:.3g} ≥ {ALPHA:g}")
                        if rate is not None and p is not None else "no seed checked"}
        for name, row in verdict["pulls"].items():
            key = f"pull {name} over seeds"
            std = "n/a" if row["std"] is None else f"{row['std']:.2f}"
            mean = "n/a" if row["mean"] is None else f"{row['mean']:+.2f}"
            ens_metrics[key] = f"mean {mean}, std {std} (n {row['n']})"
            ens_criteria[key] = (f"|mean| ≤ {row['mean_limit']:.2f}, std in [{row['std_band'][0]:.2f}, "
                                 f"{row['std_band'][1]:.2f}]" if row["mean_limit"] is not None
                                 else f"judged from {MIN_PULL_SEEDS} seeds")
        metrics = {**ens_metrics, **{f"seed {first['seed']}: {k}": v for k, v in metrics.items()}}
        criteria = {**ens_criteria, **{f"seed {first['seed']}: {k}": v for k, v in criteria.items()}}
        head = f"{passes}/{n} seeds pass"
        if rate is not None:
            head += f" (designed false-fail rate {rate:.2g}, binomial p {p:.2g})"
        summary = (f"{head}; " + ("; ".join(verdict["reasons"]) + "; " if verdict["reasons"] else "")
                   + f"seed {first['seed']}: {summary}")
    error = next((r["error"] for r in results if r.get("error")), None)
    if error and n > 1:
        error = f"seeds {', '.join(map(str, verdict['errors']))}: {error}"
    return EvidenceRecord(
        code=job.codes[0], module=job.module, passed=bool(verdict["passed"]), summary=summary,
        metrics=metrics, criteria=criteria, duration_s=round(sum(r["duration_s"] for r in results), 3),
        timestamp=timestamp, module_version=first.get("module_version", ""), tests=job.tests,
        input=first.get("input"), output=first.get("output"), error=error,
        seeds=verdict["seeds"],
        per_seed=[{"seed": r["seed"], "verdict": "error" if r.get("error") else ("pass" if r["passed"] else "fail"),
                   "summary": r["summary"], "duration_s": r["duration_s"]} for r in results],
        pass_rate=verdict["pass_rate"], false_fail_rate=verdict["false_fail_rate"],
        binomial_p=verdict["binomial_p"], pull_stats=verdict["pulls"],
        ensemble={**verdict["rules"], "verdict": "pass" if verdict["passed"] else ("error" if error else "fail"),
                  "reasons": verdict["reasons"]})


def run_all(loaded: Loaded, workdir: Path, codes: Optional[Iterable[str]] = None, seed: int = 0,
            on_start: Optional[Callable[[Job], None]] = None,
            on_done: Optional[Callable[[Job, EvidenceRecord], None]] = None, *, n_seeds: int = 1,
            n_jobs: int = 1, config: Optional[dict] = None,
            on_seed: Optional[Callable[[Job, dict[str, Any]], None]] = None) -> dict[str, EvidenceRecord]:
    """Sample, run and check every registered module for seeds ``seed .. seed + n_seeds - 1``;
    one evidence record per interface code, judged over the seeds by :func:`judge`.

    ``n_jobs`` > 1 runs the (module, seed) pairs in that many processes.  A module that raises
    is recorded as an error with its message (and never stops the others).  ``config`` (only
    with one module) is checked against its ``CONTRACT.config`` first.
    """
    if n_seeds < 1:
        raise RunUsageError(f"--seeds must be at least 1 (got {n_seeds})")
    todo = jobs(loaded, codes)
    if config:
        if len(todo) != 1:
            raise RunUsageError("a configuration applies to one module: give one interface code with --config")
        check_config(todo[0].module, modmod.contract_of(todo[0].module), config)
    seeds = list(range(seed, seed + n_seeds))
    workdir = Path(workdir)

    def folder(job: Job, s: int) -> str:
        base = workdir / job.module.rsplit(".", 1)[-1]
        return str(base if n_seeds == 1 else base / f"seed-{s}")

    tasks = [(job, s) for job in todo for s in seeds]
    results: dict[str, list[dict[str, Any]]] = {job.module: [] for job in todo}
    records: dict[str, EvidenceRecord] = {}
    started: set[str] = set()

    def finish(job: Job, res: dict[str, Any]) -> None:
        results[job.module].append(res)
        if on_seed:
            on_seed(job, res)
        if len(results[job.module]) == n_seeds:
            ordered = sorted(results[job.module], key=lambda r: r["seed"])
            record = _record(job, ordered, judge(ordered), _now())
            for code in job.codes:
                records[code] = EvidenceRecord(**{**record.__dict__, "code": code})
            if on_done:
                on_done(job, record)

    def start(job: Job) -> None:
        if job.module not in started:
            started.add(job.module)
            if on_start:
                on_start(job)

    if n_jobs <= 1 or len(tasks) <= 1:
        for job, s in tasks:
            start(job)
            finish(job, _seed_task(job.module, folder(job, s), s, config))
    else:
        pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(tasks)), mp_context=_mp_context())
        try:
            futures = {}
            for job, s in tasks:
                start(job)
                futures[pool.submit(_seed_task, job.module, folder(job, s), s, config)] = (job, s)
            for fut in as_completed(futures):
                job, s = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (memory, signal)
                    res = dict(seed=s, passed=False, error=f"worker process died: {type(exc).__name__}: {exc}",
                               summary=f"worker process died: {exc}", metrics={}, criteria={}, pulls={},
                               false_fail_rate=None, module_version="", input=None, output=None, duration_s=0.0)
                finish(job, res)
        except BaseException:  # Ctrl-C or a failing callback: drop the queued seeds, do not wait for them
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return {code: records[code] for job in todo for code in job.codes}


def real_data_records(records: dict[str, EvidenceRecord], workdir: Path) -> list[dict[str, Any]]:
    """Run the calibration modules on the fetched real CTA files (``calib.contract.real_data_evidence``)
    and attach to each record the comparisons that name its interface; returns every comparison.
    A comparison that cannot run says why (``passed`` None), it is never counted as agreement."""
    from calib.contract import real_data_evidence

    entries = real_data_evidence(Path(workdir) / "real-data")
    for code, rec in records.items():
        rec.real_data = [e for e in entries if code in (e.get("interfaces") or [])]
    return entries


def real_data_fetched() -> bool:
    """True when scripts/fetch-real-data.py has fetched at least one real file."""
    from calib.contract import real_data_available

    return real_data_available()


def _mp_context():
    """fork where it is safe (POSIX, no other Python thread): the workers inherit the modules the
    registry check already imported; otherwise spawn (each worker imports them once)."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _short_trace(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
    return f"{type(exc).__name__}: {exc} (at {where})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summary_counts(records: dict[str, EvidenceRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for rec in records.values():
        counts[rec.verdict] += 1
    return dict(counts)
