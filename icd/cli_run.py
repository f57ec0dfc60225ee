"""CLI commands ``icd sample`` and ``icd run``: a thin shell over ``icd.runner``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import evidence as evidence_store
from .registry import load
from .runner import RunError, jobs, run_all, run_file, sample as write_samples, summary_counts

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
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (ECSV or FITS) (with CODE)."),
        config: Optional[Path] = typer.Option(None, "--config", help="JSON file of module configuration."),
        check: bool = typer.Option(False, "--check", help="With CODE: compare the result with the truth stored "
                                   "in a sample input file and record the evidence."),
        workdir: Path = typer.Option(Path("out/runs"), "--workdir", help="With --all: folder for samples and results."),
        evidence: Path = typer.Option(evidence_store.DEFAULT_PATH, "--evidence", help="Evidence store to update."),
        seed: int = typer.Option(0, "--seed", help="With --all: random seed of the sample data."),
        as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
        registry: Optional[Path] = typer.Option(None, "--registry", "-r", help=_REGISTRY_HELP),
    ) -> None:
        """Run calibration modules; with --all, on sample data with known truth, recording evidence.

        Exit code 0 when every module ran and recovered its truth, 1 otherwise.

        Examples:

          icd run --all

          icd sample I-DATA-xST-0106 --out s/ && icd run I-DATA-xST-0106 -i s/ffactor/ffactor_sample.h5 -o gain.ecsv --check
        """
        loaded = _load_or_exit(_registry_path(ctx, registry))
        try:
            if all_ or (code is None):
                if code is not None or input or output:
                    typer.echo("--all runs on generated sample data: give no CODE, --input or --output with it", err=True)
                    raise typer.Exit(2)
                if not all_:
                    typer.echo("give an interface code, or --all", err=True)
                    raise typer.Exit(2)
                records = _run_all_with_progress(loaded, workdir, seed)
            else:
                if input is None or output is None:
                    typer.echo("running one module needs --input FILE and --output FILE", err=True)
                    raise typer.Exit(2)
                cfg = _read_config(config)
                records = {code: run_file(loaded, code, input, output, cfg, check=check)}
        except RunError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        if all_ or check:
            evidence_store.save(records, evidence)
        if as_json:
            typer.echo(json.dumps({c: r.__dict__ for c, r in records.items()}, indent=2, default=str))
        else:
            for c, rec in records.items():
                typer.echo(f"{c}\t{rec.verdict.upper()}\t{rec.duration_s:.2f} s\t{rec.module}\t{rec.summary}")
            counts = summary_counts(records)
            typer.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
                       (f"; evidence written to {evidence}" if (all_ or check) else ""), err=True)
        if any(r.verdict != "pass" for r in records.values()):
            raise typer.Exit(1)


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


def _run_all_with_progress(loaded, workdir: Path, seed: int):
    todo = jobs(loaded)
    if not todo:
        raise RunError("no interface of the registry has a calibration module yet")
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("calibration modules", total=len(todo))

            def start(job):
                bar.update(task, description=f"running {job.module}")

            def done(job, rec):
                bar.advance(task)
                bar.console.print(f"{rec.verdict.upper():5} {job.module} ({rec.duration_s:.1f} s)")

            return run_all(loaded, workdir, seed=seed, on_start=start, on_done=done)
    count = len(todo)
    state = {"i": 0}

    def start_plain(job):
        state["i"] += 1
        typer.echo(f"[{state['i']}/{count}] {job.module} ...", err=True)

    return run_all(loaded, workdir, seed=seed, on_start=start_plain)
