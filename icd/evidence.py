"""Evidence store: the latest result of running each interface's calibration module.

One JSON file (default ``out/evidence.json``) maps an interface code to its latest
record; ``icd run`` writes it (atomically), ``icd report`` and ``icd doc`` read it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .fileio import atomic_write_text

DEFAULT_PATH = Path("out") / "evidence.json"


@dataclass
class EvidenceRecord:
    code: str
    module: str
    passed: bool
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    criteria: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    timestamp: str = ""
    module_version: str = ""
    tests: list[str] = field(default_factory=list)
    input: Optional[str] = None
    output: Optional[str] = None
    error: Optional[str] = None
    #: False for ``icd run CODE -i -o`` without ``--check``: the module ran, nothing was compared
    checked: bool = True
    # -- ensemble over seeds (``icd run --seeds N``); one seed: seeds == [S] and the check's own verdict
    seeds: list[int] = field(default_factory=list)
    #: per seed: {"seed", "verdict", "summary", "duration_s"}
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    pass_rate: Optional[float] = None
    #: designed probability that a correct module fails the check on one seed (Evidence.false_fail_rate)
    false_fail_rate: Optional[float] = None
    #: P(X >= failures) for X ~ Binomial(len(seeds), false_fail_rate)
    binomial_p: Optional[float] = None
    #: per pull name: {"n", "mean", "std", "mean_limit", "std_band", "ok"} over the seeds
    pull_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: how the ensemble was judged: significances, the rules, and why it failed ("reasons")
    ensemble: dict[str, Any] = field(default_factory=dict)
    #: the real CTA files that back this interface (``icd run --all`` once they are fetched): per
    #: comparison {"file", "sha256", "source", "compared", "passed", "metrics", "criteria", ...}
    real_data: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seeds_passed(self) -> int:
        """How many of ``seeds`` passed their check."""
        return sum(1 for s in self.per_seed if s.get("verdict") == "pass")

    @property
    def verdict(self) -> str:
        if self.error:
            return "error"
        if not self.checked:
            return "ran"
        return "pass" if self.passed else "fail"


def load(path: str | Path = DEFAULT_PATH) -> dict[str, EvidenceRecord]:
    """Read the evidence store; an absent file is an empty store."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable evidence file ({exc})") from None
    known = set(EvidenceRecord.__dataclass_fields__)
    return {code: EvidenceRecord(**{k: v for k, v in rec.items() if k in known})
            for code, rec in raw.get("results", {}).items()}


def save(records: dict[str, EvidenceRecord], path: str | Path = DEFAULT_PATH) -> Path:
    """Merge ``records`` into the store at ``path`` and write it atomically."""
    path = Path(path)
    current = load(path) if path.is_file() else {}
    current.update(records)
    payload = {"schema": 1, "results": {c: asdict(r) for c, r in sorted(current.items())}}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path
