"""The ``icd`` command line: validate, list, show, doc, report, snapshot, schema.

A thin shell: every command reads its options, calls ``icd.registry``, ``icd.query``,
``icd.publish`` or ``icd.snapshot``, and prints.  A user's mistake (bad registry, unknown
code, unreadable snapshot) is a sentence on stderr and an exit code, never a traceback.

Exit codes: 0 success; 1 the registry (or another input file) has problems;
2 wrong usage (unknown option value, unknown ICD or interface code).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from . import __version__
from . import evidence as evidence_store
from . import publish, query, snapshot
from .diagnostics import printable
from .model import ICD_NAMES, json_schema
from .registry import Loaded, load

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
DEFAULT_REGISTRY = Path("interfaces.yaml")

EPILOG = ("Exit codes: 0 success; 1 the registry or another input file has problems; "
          "2 wrong usage (unknown option value, ICD or code).")

app = typer.Typer(
    name="icd",
    help=("Interface registry of the CTAO DATA work package: validate [bold]interfaces.yaml[/bold], "
          "list and show interfaces, publish the ICD documents and the status report.\n\n"
          "[bold]Examples[/bold]\n\n"
          "  icd validate\n\n"
          "  icd list --icd DATA-COM --status Assigned\n\n"
          "  icd doc --all --out out/\n\n"
          "  icd --registry other.yaml report --since out/snapshot-2026-11-01.json"),
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    md = "md"
    html = "html"
    both = "both"


class TextJson(str, Enum):
    text = "text"
    json = "json"


RegistryOpt = Annotated[Optional[Path], typer.Option(
    "--registry", "-r", help="Registry file (default: the global --registry, $ICD_REGISTRY, or ./interfaces.yaml).",
    show_default=False, dir_okay=False)]
EvidenceOpt = Annotated[Path, typer.Option(
    "--evidence", help="Evidence store written by `icd run`; absent means no evidence yet.", dir_okay=False)]
RedmineOpt = Annotated[Optional[str], typer.Option(
    "--redmine-url", help="Base URL of Redmine for task links (default: redmine.url in the registry, "
    "else https://forge.cta-observatory.org).", show_default=False)]
TodayOpt = Annotated[Optional[dt.datetime], typer.Option(
    "--today", formats=["%Y-%m-%d"], help="Date taken as today, YYYY-MM-DD (which tasks are overdue, and by how many days); "
    "default: today. Gives output that does not change from one day to the next.",
    show_default=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icd {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    registry: Annotated[Optional[Path], typer.Option(
        "--registry", "-r", envvar="ICD_REGISTRY", dir_okay=False,
        help="Registry file for every command (default ./interfaces.yaml).", show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = {"registry": registry}


# -- helpers -------------------------------------------------------------------------------
def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(printable(f"error: {message}"), err=True)
    raise typer.Exit(code)


def registry_path(ctx: typer.Context, local: Optional[Path]) -> Path:
    if local is not None:
        return local
    root = ctx.find_root().obj or {}
    return root.get("registry") or DEFAULT_REGISTRY


def load_valid(ctx: typer.Context, local: Optional[Path], *, check_modules: bool = False) -> Loaded:
    """Load the registry; on any problem print them all and exit 1 (publishing needs a valid registry)."""
    path = registry_path(ctx, local)
    loaded = load(path, check_modules=check_modules)
    if loaded.diagnostics:
        for diag in loaded.diagnostics:
            typer.echo(printable(diag), err=True)
        n = len(loaded.diagnostics)
        fail(f"{path} has {n} problem{'s' if n != 1 else ''}; fix {'them' if n != 1 else 'it'} "
             f"(see `icd validate`) and try again", EXIT_INVALID)
    return loaded


def load_evidence(path: Path) -> dict[str, Any]:
    try:
        return evidence_store.load(path)
    except UnicodeDecodeError:
        fail(f"{path}: not a readable evidence file (not UTF-8 text); `icd run` writes one", EXIT_INVALID)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    except (TypeError, AttributeError, KeyError) as exc:
        fail(f"{path}: not an evidence store written by `icd run` ({type(exc).__name__}: {exc})", EXIT_INVALID)


def to_date(value: Optional[dt.datetime]) -> Optional[dt.date]:
    return value.date() if value is not None else None


def write_guard(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except OSError as exc:
        fail(f"cannot write {getattr(exc, 'filename', '') or 'the output'}: {exc.strerror or exc}", EXIT_INVALID)


def _is_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


# -- commands ------------------------------------------------------------------------------
@app.command(epilog=EPILOG)
def validate(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    format: Annotated[TextJson, typer.Option("--format", "-f", help="text (file:line:col: message) or json.")] = TextJson.text,
    modules: Annotated[bool, typer.Option("--modules/--no-modules",
                                          help="Also check that each linked calibration module and test file exists.")] = True,
) -> None:
    """Check the registry and report [bold]every[/bold] problem at once, as file:line:column: message.

    Only reads: the registry is never rewritten. Exits 1 when there is any problem.

    [bold]Examples[/bold]

      icd validate

      icd validate --registry copy.yaml --format json

      icd validate --no-modules
    """
    path = registry_path(ctx, registry)
    loaded = load(path, check_modules=modules)
    reg = loaded.registry
    n_if, n_icd = len(reg.interfaces), len(reg.icds)
    if format is TextJson.json:
        typer.echo(json.dumps({"file": str(path), "ok": loaded.ok, "interfaces": n_if, "icds": n_icd,
                               "errors": [d.to_dict() for d in loaded.diagnostics]}, indent=2))
    else:
        for diag in loaded.diagnostics:
            typer.echo(printable(diag))
        if loaded.ok:
            typer.echo(printable(f"OK: {n_if} interfaces in {n_icd} ICDs ({path})"))
        else:
            n = len(loaded.diagnostics)
            typer.echo(printable(f"{n} problem{'s' if n != 1 else ''} in {path}"), err=True)
    raise typer.Exit(EXIT_OK if loaded.ok else EXIT_INVALID)


@app.command("list", epilog=EPILOG)
def list_(
    ctx: typer.Context,
    icd: Annotated[Optional[str], typer.Option("--icd", help=f"ICD: {', '.join(ICD_NAMES)} (or COM, xST, ACTL).")] = None,
    category: Annotated[Optional[str], typer.Option("--category", help="camera, pointing, atmosphere, array, data model.")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Current lifecycle stage: " + ", ".join(query.STAGE_CHOICES) + ".")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Some task has this status (New, Assigned, In Progress, ...).")] = None,
    person: Annotated[Optional[str], typer.Option("--person", help="Person key or name: provider, assignee or ICD responsible.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON list instead of a table.")] = False,
    registry: RegistryOpt = None,
    evidence: EvidenceOpt = evidence_store.DEFAULT_PATH,
) -> None:
    """List interfaces, filtered. A table in a terminal, tab-separated text when piped.

    [bold]Examples[/bold]

      icd list

      icd list --icd DATA-xST --category camera

      icd list --status Assigned --person "R. de los Reyes"

      icd list --stage none --json
    """
    loaded = load_valid(ctx, registry)
    try:
        items = query.filter_interfaces(loaded.registry, loaded.index, icd=icd, category=category,
                                        stage=stage, status=status, person=person)
    except query.QueryError as exc:
        fail(str(exc))
    rows = query.rows(items, loaded.registry, load_evidence(evidence))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    headers = ("code", "icd", "title", "category", "level", "stage", "stage_status", "tasks", "evidence")
    if _is_terminal():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        # every column may wrap (a column that may not would squeeze the title out of a narrow
        # terminal); below 110 columns the ICD, category and level are left out (`--json` or a pipe has them)
        shown = [h for h in headers if console.width >= 110 or h not in ("icd", "level", "category")]
        table = Table(title=f"{len(rows)} interfaces", show_lines=False, pad_edge=False)
        for h in shown:
            ratio, min_width = {"title": (3, 14), "code": (2, 15)}.get(h, (1, None))
            table.add_column("status" if h == "stage_status" else h, overflow="fold", ratio=ratio, min_width=min_width)
        for r in rows:
            code = r["code"] + (" (provisional)" if r["provisional"] else "")
            # registry text is plain text, never rich markup: a title with '[/]' or '[bold]' is shown as written
            table.add_row(*(Text(printable(code if h == "code" else r[h], one_line=True)) for h in shown))
        console.print(table)
    else:
        typer.echo("\t".join(headers))
        for r in rows:
            typer.echo("\t".join(printable(r[h], one_line=True) for h in headers))


@app.command(epilog=EPILOG)
def show(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Interface code, e.g. I-DATA-COM-3201 (case-insensitive).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    today: TodayOpt = None,
    registry: RegistryOpt = None,
    evidence: EvidenceOpt = evidence_store.DEFAULT_PATH,
    redmine_url: RedmineOpt = None,
) -> None:
    """Show one interface: description, providers, tasks, lifecycle, module and evidence.

    [bold]Examples[/bold]

      icd show I-DATA-COM-3201

      icd show i-data-xst-0106 --json

      icd show I-DATA-COM-3201 --today 2026-12-01
    """
    loaded = load_valid(ctx, registry)
    from .runner import RunUsageError, resolve_code

    try:
        iface = loaded.index.by_code[resolve_code(loaded, code)]
    except RunUsageError as exc:
        fail(str(exc))
    from .publish.views import build_context, interface_view

    context = build_context(loaded.registry, evidence=load_evidence(evidence), redmine_url=redmine_url,
                            read_modules=bool(iface.module), today=to_date(today))
    view = interface_view(iface, context)
    if as_json:
        payload = iface.model_dump(mode="json")
        payload.update(provisional=iface.provisional, current_stage=view["current_stage"],
                       stage_status={s["key"]: s["status"] for s in view["stages"]},
                       evidence=view["evidence"], method=view["method"] or None)
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(printable(_show_text(view)))


def _show_text(v: dict[str, Any]) -> str:
    lines = [f"{v['display_code']} — {v['title']}", ""]

    def field(label: str, value: str) -> None:
        lines.append(f"{label + ':':<17}{value}")

    field("ICD", v["icd"])
    field("Category", v["category"])
    field("Level", v["level"])
    field("Pipeline levels", ", ".join(v["pipeline_levels"]) or "not stated")
    field("Description", v["description"] or "—")
    field("Provided by", "; ".join(
        f"{p['name']} ({p['wp']}{', ' + p['subproject'] if p['subproject'] else ''})" for p in v["providers"])
        or "to be decided")
    if v["related"]:
        field("Related", ", ".join(r["display"] for r in v["related"]))
    field("Module", v["module"] or "none yet")
    if v["tests"]:
        field("Tests", ", ".join(v["tests"]))
    field("Current stage", v["current_stage"])
    lines.append("Lifecycle:")
    for s in v["stages"]:
        lines.append(f"  {s['short']:<20}{s['status']:<13}{s['tasks']}")
    lines.append("Tasks:" if v["tasks"] else "Tasks:           none yet")
    for t in v["tasks"]:
        who = t["assignee"] + (f" ({t['note']})" if t["note"] else "")
        dates = f"{t['start'] or '?'} → {t['due'] or '?'}" if (t["start"] or t["due"]) else ""
        late = f" OVERDUE by {t['days_late']} days" if t["overdue"] else ""
        lines.append(f"  {t['label']:<8}{t['status']:<12}{t['role']:<9}{t['subject']}")
        lines.append(f"  {'':<8}{who}{'; ' + dates if dates else ''}{late}"
                     f"{'; est. ' + t['estimated'] + ' h' if t['estimated'] else ''}"
                     f"{'; ' + t['url'] if t['url'] else ''}")
    ev = v["evidence"]
    if ev:
        field("Evidence", f"{ev['verdict']} — {ev['summary']} ({ev['timestamp']}, {ev['duration']})")
        for m in ev["metrics"]:
            lines.append(f"  {m['name']} = {m['value']}{'  [' + m['criterion'] + ']' if m['criterion'] else ''}")
    else:
        field("Evidence", "no evidence yet")
    lines.append("")
    lines.append(publish.CONVENTION)
    return "\n".join(lines)


@app.command(epilog=EPILOG)
def doc(
    ctx: typer.Context,
    icd: Annotated[Optional[str], typer.Argument(help="ICD to publish: DATA-COM, DATA-xST, DATA-ACTL (or COM, xST, ACTL).",
                                                 show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Publish every ICD of the registry.")] = False,
    format: Annotated[Format, typer.Option("--format", "-f", help="md, html (one self-contained file) or both.")] = Format.both,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", file_okay=False)] = Path("out"),
    today: TodayOpt = None,
    registry: RegistryOpt = None,
    evidence: EvidenceOpt = evidence_store.DEFAULT_PATH,
    redmine_url: RedmineOpt = None,
) -> None:
    """Write the Interface Control Document of one ICD (or --all) as Markdown and/or HTML.

    Each document has the ICD header, "Table 1: list of interfaces" and one section per
    interface (description, information provided by, tasks with Redmine links, lifecycle,
    calibration method, verification status). Writes out/<ICD>.md and out/<ICD>.html.

    [bold]Examples[/bold]

      icd doc DATA-COM

      icd doc --all --format html --out public/

      icd doc xST --redmine-url https://redmine.example.org
    """
    if not icd and not all_:
        fail("name an ICD (" + ", ".join(ICD_NAMES) + ") or use --all")
    if icd and all_:
        fail("give either an ICD or --all, not both")
    loaded = load_valid(ctx, registry)
    if all_:
        names = publish.icd_names(loaded.registry)
    else:
        try:
            names = [query.resolve_icd(icd)]
        except query.QueryError as exc:
            fail(str(exc))
    written = write_guard(publish.publish_docs, loaded.registry, names, publish.formats_of(format.value), out,
                          evidence=load_evidence(evidence), redmine_url=redmine_url, source=str(loaded.path),
                          today=to_date(today))
    for path in written:
        typer.echo(printable(f"wrote {path}"))


@app.command(epilog=EPILOG)
def report(
    ctx: typer.Context,
    format: Annotated[Format, typer.Option("--format", "-f", help="md, html (self-contained, inline SVG charts) or both.")] = Format.both,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", file_okay=False)] = Path("out"),
    since: Annotated[Optional[Path], typer.Option("--since", help="Snapshot (from `icd snapshot`) to compare with.",
                                                  dir_okay=False, show_default=False)] = None,
    today: TodayOpt = None,
    registry: RegistryOpt = None,
    evidence: EvidenceOpt = evidence_store.DEFAULT_PATH,
    redmine_url: RedmineOpt = None,
) -> None:
    """Write the status report (Markdown and self-contained HTML with inline SVG charts).

    Per ICD and overall: interfaces per lifecycle stage and status, the interface × stage
    matrix, tasks needing volunteers, tasks reserved for the CCF teams, overdue tasks,
    hours estimated vs spent and the evidence of each calibration module.

    Writes out/report.md and out/report.html. With --since, adds what changed since the snapshot.

    [bold]Examples[/bold]

      icd report

      icd snapshot --out out/before.json   # ... edit interfaces.yaml ...
      icd report --since out/before.json

      icd report --format md --today 2026-12-01
    """
    loaded = load_valid(ctx, registry)
    changes = None
    if since is not None:
        try:
            changes = snapshot.since(since, loaded.registry)
        except snapshot.SnapshotError as exc:
            fail(str(exc), EXIT_INVALID)
    written = write_guard(publish.publish_report, loaded.registry, publish.formats_of(format.value), out,
                          evidence=load_evidence(evidence), since=changes, redmine_url=redmine_url,
                          today=to_date(today), source=str(loaded.path))
    for path in written:
        typer.echo(printable(f"wrote {path}"))


@app.command("snapshot", epilog=EPILOG)
def snapshot_(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Snapshot file (default out/snapshot-<today>.json).",
                                                dir_okay=False, show_default=False)] = None,
    registry: RegistryOpt = None,
) -> None:
    """Save the state of the registry (JSON) for a later `icd report --since`.

    [bold]Examples[/bold]

      icd snapshot

      icd snapshot --out out/before-meeting.json
    """
    loaded = load_valid(ctx, registry)
    path = out or snapshot.default_name()
    write_guard(snapshot.save, loaded.registry, path, source=str(loaded.path))
    typer.echo(f"wrote {path}")


@app.command(epilog=EPILOG)
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.",
                                                dir_okay=False, show_default=False)] = None,
) -> None:
    """Print the JSON Schema of the registry, for editors (yaml-language-server) and CI.

    [bold]Examples[/bold]

      icd schema > interfaces.schema.json

      then put this first line in interfaces.yaml:
      # yaml-language-server: $schema=interfaces.schema.json
    """
    text = json.dumps(json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    from .publish.render import write_text

    write_guard(write_text, out, text)
    typer.echo(f"wrote {out}")



from icd.cli_run import register as _register_run; _register_run(app)      # icd sample / icd run (coordinator)
from icd.redmine.cli import app as _redmine_app; app.add_typer(_redmine_app, name="redmine")  # Redmine helper
