"""Every calibration module over an ensemble of seeds (issue 9): does its evidence hold on every seed?

For each module of the registry: sample -> run -> check for seeds S0 .. S0+N-1 (default 40),
in parallel over processes, then the runner's ensemble judgement (``icd.runner.judge``):
failures k of N against the check's designed false-fail rate r (binomial P(X >= k) must be
>= 1e-3) and each pull's mean and standard deviation over the seeds against N(0, 1).
Prints the pass table (module x passes/N, designed rate, binomial p, pull mean/std, verdict)
and the total time; ``--json FILE`` keeps the full records.

usage: .venv/bin/python bench/bench_seeds.py [--seeds 40] [--start 0] [--jobs 2] [--only ffactor,enf]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icd.registry import load  # noqa: E402
from icd.runner import ALPHA, PULL_ALPHA, jobs, run_all  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40, help="number of seeds N (default 40)")
    ap.add_argument("--start", type=int, default=0, help="first seed S0 (default 0)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: CPUs)")
    ap.add_argument("--only", default="", help="comma-separated parts of module names to run (default all)")
    ap.add_argument("--registry", type=Path, default=ROOT / "interfaces.yaml")
    ap.add_argument("--json", type=Path, help="write the evidence records here")
    args = ap.parse_args(argv)

    loaded = load(args.registry)
    todo = jobs(loaded)
    if args.only:
        parts = [p.strip() for p in args.only.split(",") if p.strip()]
        todo = [j for j in todo if any(p in j.module for p in parts)]
    if not todo:
        print("no module to run", file=sys.stderr)
        return 2
    codes = [j.codes[0] for j in todo]
    print(f"{len(todo)} modules x {args.seeds} seeds from {args.start}, {args.jobs} processes "
          f"(binomial alpha {ALPHA:g}, pull alpha {PULL_ALPHA:g})", flush=True)
    done = {"n": 0}

    def progress(job, res):
        done["n"] += 1
        if not res["passed"] or res.get("error"):
            what = "ERROR" if res.get("error") else "fail"
            print(f"  {what} {job.module} seed {res['seed']}: {res['summary'][:150]}", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench_seeds_") as tmp:
        records = run_all(loaded, Path(tmp), codes=codes, seed=args.start, n_seeds=args.seeds,
                          n_jobs=args.jobs, on_seed=progress)
    wall = time.perf_counter() - t0

    by_module = {}
    for rec in records.values():
        by_module.setdefault(rec.module, rec)
    width = max(len(m) for m in by_module)
    print()
    print(f"{'module':{width}}  {'passes':>7}  {'rate':>8}  {'binom p':>8}  {'verdict':7}  {'s/seed':>6}  pulls (mean, std)")
    n_ok = 0
    for module, rec in by_module.items():
        passes = sum(1 for s in rec.per_seed if s["verdict"] == "pass")
        rate = "n/a" if rec.false_fail_rate is None else f"{rec.false_fail_rate:.2g}"
        p = "n/a" if rec.binomial_p is None else f"{rec.binomial_p:.2g}"
        pulls = ", ".join(
            f"{name} {row['mean']:+.2f}/{row['std']:.2f}{'' if row['ok'] is not False else '!'}"
            for name, row in rec.pull_stats.items() if row.get("mean") is not None and row.get("std") is not None)
        n_ok += rec.verdict == "pass"
        per_seed = rec.duration_s / max(len(rec.seeds), 1)
        print(f"{module:{width}}  {passes:>3}/{len(rec.seeds):<3}  {rate:>8}  {p:>8}  {rec.verdict.upper():7}  "
              f"{per_seed:6.1f}  {pulls or '-'}")
        for reason in rec.ensemble.get("reasons", []):
            print(f"{'':{width}}    -> {reason}")
    print()
    print(f"{n_ok}/{len(by_module)} modules pass over {args.seeds} seeds; total {wall:.0f} s wall, "
          f"{sum(r.duration_s for r in by_module.values()):.0f} s summed over seeds "
          f"(this process {time.process_time() - c0:.0f} s CPU)")
    if args.json:
        args.json.write_text(json.dumps({c: r.__dict__ for c, r in records.items()}, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if n_ok == len(by_module) else 1


if __name__ == "__main__":
    sys.exit(main())
