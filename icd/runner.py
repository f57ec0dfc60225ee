"""Run the calibration modules registered in the registry, and record their evidence.

For each interface with a ``module:``, the module's contract is used as is:
``sample(dir, seed)`` writes sample data with known truth, ``run(input, output, config)``
computes the calibration product, ``check(result, input)`` compares it with the truth.
One evidence record per interface (pass/fail, metrics, duration) goes to the evidence
store, which the ICD documents and the status report show.  Interfaces that share a
module are run once.
"""
from __future__ import annotations

import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import modules as modmod
from .evidence import EvidenceRecord
from .registry import Loaded


class RunError(Exception):
    """A request the runner cannot carry out (unknown code, no module); one sentence."""


@dataclass
class Job:
    module: str
    codes: list[str]
    tests: list[str]


def jobs(loaded: Loaded, codes: Optional[Iterable[str]] = None) -> list[Job]:
    """The modules to run for ``codes`` (all registered ones when None), in registry order."""
    index = loaded.index
    wanted = list(codes) if codes is not None else None
    if wanted is not None:
        for code in wanted:
            if code not in index.by_code:
                raise RunError(f"interface {code} is not in the registry")
            if not index.by_code[code].module:
                raise RunError(f"interface {code} has no calibration module (module: is empty)")
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
    """Run the module of ``code`` on a given input file; with ``check``, compare with the file's truth."""
    (job,) = jobs(loaded, [code])
    contract = modmod.contract_of(job.module)
    if not Path(input_path).is_file():
        raise RunError(f"input file {input_path} does not exist")
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = contract.run(Path(input_path), Path(output_path), dict(config or {}))
    except Exception as exc:  # noqa: BLE001 - a file the module cannot read is the user's input, one line
        raise RunError(f"{job.module} could not process {input_path}: {type(exc).__name__}: {exc}") from None
    duration = time.perf_counter() - t0
    record = EvidenceRecord(code=code, module=job.module, passed=True, summary="ran (no truth check)",
                            duration_s=round(duration, 3), timestamp=_now(), module_version=contract.version,
                            tests=job.tests, input=str(input_path), output=str(output_path))
    if check:
        evidence = contract.check(result, Path(input_path))
        record.passed = bool(evidence.passed)
        record.summary = evidence.summary
        record.metrics = evidence.to_dict()["metrics"]
        record.criteria = dict(evidence.criteria)
    return record


def run_all(loaded: Loaded, workdir: Path, codes: Optional[Iterable[str]] = None, seed: int = 0,
            on_start: Optional[Callable[[Job], None]] = None,
            on_done: Optional[Callable[[Job, EvidenceRecord], None]] = None) -> dict[str, EvidenceRecord]:
    """Sample, run and check every registered module; one evidence record per interface code.

    A module that raises is recorded as an error with its message (and never stops the others).
    """
    records: dict[str, EvidenceRecord] = {}
    for job in jobs(loaded, codes):
        if on_start:
            on_start(job)
        record = _run_job(job, Path(workdir), seed)
        for code in job.codes:
            records[code] = EvidenceRecord(**{**record.__dict__, "code": code})
        if on_done:
            on_done(job, record)
    return records


def _run_job(job: Job, workdir: Path, seed: int) -> EvidenceRecord:
    name = job.module.rsplit(".", 1)[-1]
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(code=job.codes[0], module=job.module, tests=job.tests, timestamp=_now())
    t0 = time.perf_counter()
    try:
        contract = modmod.contract_of(job.module)
        base["module_version"] = contract.version
        input_path = Path(contract.sample(folder, seed))
        output_path = folder / f"{name}_result.ecsv"
        result = contract.run(input_path, output_path, {})
        evidence = contract.check(result, input_path)
    except Exception as exc:  # noqa: BLE001 - recorded as the module's evidence, shown in reports
        return EvidenceRecord(**base, passed=False, duration_s=round(time.perf_counter() - t0, 3),
                              summary=f"{type(exc).__name__}: {exc}", error=_short_trace(exc))
    data = evidence.to_dict()
    return EvidenceRecord(**base, passed=data["passed"], summary=data["summary"], metrics=data["metrics"],
                          criteria=data["criteria"], duration_s=round(time.perf_counter() - t0, 3),
                          input=str(input_path), output=str(output_path))


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
