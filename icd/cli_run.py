"""CLI commands ``icd sample`` and ``icd run``: a thin shell over ``icd.runner``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import evidence as evidence_store
from .registry import load
from .runner import (DEFAULT_SEEDS, RunError, RunUsageError, jobs, real_data_fetched, real_data_records,
                     run_all, run_file,
                     sample as write_samples, summary_counts)

_REGISTRY_HELP = "Registry file (default: ./interfaces.yaml)."


def _registry_path(ctx: typer.Context, registry: Optional[Path]) -> Path:
    if registry is not None:
        return registry
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    return Path(obj.get("registry") or "interfaces.yaml")


def _load_or_exit(path: Path):
    loaded = load(path)
    # a calib module claiming a code this registry lacks does not stop running the others
    blocking = [d for d in loaded.diagnostics if d.kind != "module"]
    if blocking:
        for diag in blocking:
            typer.echo(str(diag), err=True)
        typer.echo(f"{len(blocking)} problem(s) in {path}; fix them first (icd validate).", err=True)
        raise typer.Exit(1)
    return loaded


def register(app: typer.Typer) -> None:
    """Add the sample/run commands to the main app."""

    @app.command("sample")
    def sample_cmd(
        ctx: typer.Context,
        code: Optional[str] = typer.Argument(None, help="Interface code, e.g. I-DATA-xST-0106."),
        all_: bool = typer.Option(False, "--all", help="Every interface that has a calibration module."),
        out: Path = typer.Option(Path("out/samples"), "--out", help="Folder for the sample files."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same data)."),
        registry: Optional[Path] = typer.Option(None, "--registry", "-r", help=_REGISTRY_HELP),
    ) -> None:
        """Write sample data with known truth for a calibration module.

        Examples:

          icd sample I-DATA-xST-0106 --out samples/

          icd sample --all --seed 3
        """
        if bool(code) == bool(all_):
            typer.echo("give one interface code or --all", err=True)
            raise typer.Exit(2)
        loaded = _load_or_exit(_registry_path(ctx, registry))
        try:
            written = write_samples(loaded, None if all_ else [code], out, seed,
                                    progress=lambda m: typer.echo(f"sampling {m} ...", err=True))
        except RunUsageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except RunError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for c, path in written.items():
            typer.echo(f"{c}\t{path}")

    @app.command("run")
    def run_cmd(
        ctx: typer.Context,
        code: Optional[str] = typer.Argument(None, help="Interface code whose module to run."),
        all_: bool = typer.Option(False, "--all", help="Run every registered module on its own sample data "
                                  "and compare with the truth; records the evidence."),
        input: Optional[Path] = typer.Option(None, "--input", "-i", help="Input file for the module (with CODE)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (.ecsv, .fits or .h5) "
                                              "(with CODE)."),
        config: Optional[Path] = typer.Option(None, "--config", help="JSON file of module configuration; "
                                              "only the keys the module declares (icd show CODE --json)."),
        check: bool = typer.Option(False, "--check", help="With CODE: compare the result with the truth stored "
                                   "in a sample input file and record the evidence."),
        workdir: Path = typer.Option(Path("out/runs"), "--workdir", help="With --all: folder for samples and results."),
        evidence: Path = typer.Option(evidence_store.DEFAULT_PATH, "--evidence", help="Evidence store to update."),
        seed: Optional[int] = typer.Option(None, "--seed", help="First seed of the sample data (alone: only "
                                           "this seed, judged by the check itself)."),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Number of seeds S..S+N-1 over which each "
                                            f"module is judged [default: {DEFAULT_SEEDS}, or 1 with --seed]."),
        n_jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", "-j", help="Processes running seeds "
                                   "in parallel.", show_default="number of CPUs"),
        real_data: Optional[bool] = typer.Option(None, "--real-data/--no-real-data", help="With --all: also run "
                                                 "the modules on the real CTA files (scripts/fetch-real-data.py) "
                                                 "and record which file backs each interface.",
                                                 show_default="when the files are fetched"),
        as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
        registry: Optional[Path] = typer.Option(None, "--registry", "-r", help=_REGISTRY_HELP),
    ) -> None:
        """Run calibration modules; with --all, on sample data with known truth over seeds, recording evidence.

        Each module is judged over an ensemble of seeds: it fails when more seeds fail than
        its check's designed false-fail rate allows (binomial p < 0.001), or when a pull's mean
        or spread over the seeds is not N(0, 1) (from 5 seeds).

        Exit codes: 0 every module ran and recovered its truth; 1 a module failed or could
        not run; 2 a wrong request (unknown code or config key, output format).

        Examples:

          icd run --all

          icd run --all --seeds 40 --jobs 2

          icd run --all --real-data   (after scripts/fetch-real-data.py)

          icd run --all --seed 3

          icd run I-DATA-xST-0106 --seeds 10

          icd sample I-DATA-xST-0106 --out s/ && icd run I-DATA-xST-0106 -i s/ffactor/ffactor_sample.h5 -o gain.ecsv --check
        """
        loaded = _load_or_exit(_registry_path(ctx, registry))
        real_entries: list[dict] = []
        ensemble = all_ or seeds is not None or (seed is not None and input is None and output is None)
        try:
            if seeds is not None and seeds < 1:
                raise RunUsageError(f"--seeds must be at least 1 (got {seeds})")
            if n_jobs < 1:
                raise RunUsageError(f"--jobs must be at least 1 (got {n_jobs})")
            if all_ and code is not None:
                raise RunUsageError("give one interface code or --all, not both")
            if not all_ and code is None:
                raise RunUsageError("give an interface code, or --all")
            if ensemble:
                if input or output:  # --check is implied: every seed is checked against its truth
                    raise RunUsageError("runs over seeds use generated sample data: give no --input or --output "
                                        "with --all, --seed or --seeds")
                if all_ and config:
                    raise RunUsageError("a configuration applies to one module: give one interface code "
                                        "with --config, not --all")
                n_seeds = seeds if seeds is not None else (1 if seed is not None else DEFAULT_SEEDS)
                cfg = _read_config(config)
                if real_data and not all_:
                    raise RunUsageError("--real-data goes with --all")
                records = _run_all_with_progress(loaded, workdir, seed or 0, n_seeds, n_jobs,
                                                 None if all_ else [code], cfg)
                if all_ and (real_data or (real_data is None and real_data_fetched())):
                    real_entries = real_data_records(records, workdir)
            else:
                if input is None or output is None:
                    raise RunUsageError("running one module needs --input FILE and --output FILE "
                                        "(or --seeds N to run it on its own sample data)")
                cfg = _read_config(config)
                rec = run_file(loaded, code, input, output, cfg, check=check)
                records = {rec.code: rec}
        except RunUsageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except RunError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        recorded = ensemble or check
        if recorded:
            evidence_store.save(records, evidence)
        if as_json:
            typer.echo(json.dumps({c: r.__dict__ for c, r in records.items()}, indent=2, default=str))
        else:
            for c, rec in records.items():
                if rec.verdict == "ran":
                    typer.echo(f"{c}\t{rec.summary}\t{rec.duration_s:.2f} s")
                    continue
                seeds_col = f"\t{_seed_count(rec)}" if len(rec.seeds) > 1 else ""
                typer.echo(f"{c}\t{rec.verdict.upper()}{seeds_col}\t{rec.duration_s:.2f} s\t{rec.module}\t"
                           f"{rec.summary}")
            for e in real_entries:
                verdict = {True: "AGREES", False: "DIFFERS", None: "NOT RUN"}[e.get("passed")]
                typer.echo(f"{','.join(e.get('interfaces') or []) or '-'}\treal file {e.get('file')}\t{verdict}\t"
                           f"{e.get('summary') or e.get('compared', '')}")
            counts = summary_counts(records)
            if recorded:
                typer.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
                           f"; evidence written to {evidence}", err=True)
        if any(r.verdict not in ("pass", "ran") for r in records.values()) or \
                any(e.get("passed") is False for e in real_entries):
            raise typer.Exit(1)


def _seed_count(rec) -> str:
    return f"{rec.seeds_passed}/{len(rec.seeds)} seeds"


def _read_config(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: the configuration must be a JSON object")
    return data


def _run_all_with_progress(loaded, workdir: Path, seed: int, n_seeds: int = 1, n_jobs: int = 1,
                           codes=None, config=None):
    todo = jobs(loaded, codes)
    if not todo:
        raise RunError("no interface of the registry has a calibration module yet")
    total = len(todo) * n_seeds
    kwargs = dict(seed=seed, n_seeds=n_seeds, n_jobs=n_jobs, codes=codes, config=config or None)
    what = f"{len(todo)} module{'s' if len(todo) != 1 else ''}" + (f" x {n_seeds} seeds" if n_seeds > 1 else "")
    if sys.stderr.isatty():
        from rich.progress import Progress

        # no refresh thread: the worker processes are forked from this one
        with Progress(transient=True, auto_refresh=False) as bar:
            task = bar.add_task(f"{what} ({n_jobs} process{'es' if n_jobs != 1 else ''})", total=total)
            bar.refresh()

            def seed_done(job, res):
                bar.advance(task)
                bar.refresh()

            def done(job, rec):
                extra = f" {_seed_count(rec)}" if n_seeds > 1 else ""
                bar.console.print(f"{rec.verdict.upper():5} {job.module}{extra} ({rec.duration_s:.1f} s)")

            return run_all(loaded, workdir, on_done=done, on_seed=seed_done, **kwargs)
    state = {"i": 0}

    def seed_plain(job, res):
        state["i"] += 1
        verdict = "error" if res.get("error") else ("pass" if res["passed"] else "fail")
        typer.echo(f"[{state['i']}/{total}] {job.module} seed {res['seed']}: {verdict} "
                   f"({res['duration_s']:.1f} s)", err=True)

    typer.echo(f"running {what} in {n_jobs} process{'es' if n_jobs != 1 else ''}", err=True)
    return run_all(loaded, workdir, on_seed=seed_plain, **kwargs)
