"""`icd redmine ...` commands (thin shell over icd.redmine).

Exit codes: 0 done; 1 an error (one line on stderr: configuration, Redmine, registry);
3 conflicts were found and left untouched (choose with --prefer local|remote).
"""
from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .client import Client, RedmineError, redact
from .config import ConfigError, load_api_key, load_config
from .lock import LockBusy, registry_lock
from .sync import Report, Sync, SyncError, forget as do_forget, scaffold as do_scaffold

EXIT_ERROR, EXIT_CONFLICT = 1, 3

app = typer.Typer(help=("Synchronise the registry with Redmine (pull, plan, push, conflicts, publish).\n\n"
                        "The URL and project come from icd.toml ([redmine]); the API key only from "
                        "$REDMINE_API_KEY or a key file with mode 0600.\n\n"
                        "[bold]Examples[/bold]\n\n"
                        "  icd redmine pull\n\n"
                        "  icd redmine plan && icd redmine push\n\n"
                        "  icd redmine publish --dry-run"),
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
                  epilog="Exit codes: 0 done; 1 an error (one line on stderr); 3 conflicts left untouched.")


class Prefer(str, Enum):
    local = "local"
    remote = "remote"


RegistryOpt = Annotated[Optional[Path], typer.Option("--registry", "-r", dir_okay=False, show_default=False,
                                                     help="Registry file (default: global --registry, $ICD_REGISTRY, ./interfaces.yaml).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", dir_okay=False, show_default=False,
                                                   help="Config file (default: $ICD_CONFIG or the nearest icd.toml).")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", show_default=False, help="Redmine URL (overrides the config).")]
ProjectOpt = Annotated[Optional[str], typer.Option("--project", show_default=False, help="Redmine project identifier.")]
PreferOpt = Annotated[Optional[Prefer], typer.Option("--prefer", show_default=False,
                                                     help="Resolve conflicts: keep the registry's (local) or Redmine's (remote) value.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log each HTTP request (method and path, never the key).")]

# tests may inject a fake transport here: (method, url, **kwargs) -> response
TRANSPORT: Optional[Callable] = None


def _registry(ctx: typer.Context, local: Optional[Path]) -> Path:
    if local is not None:
        return local
    root = ctx.find_root().obj if ctx.find_root() is not None else None
    if isinstance(root, dict) and root.get("registry"):
        return Path(root["registry"])
    return Path(os.environ.get("ICD_REGISTRY") or "interfaces.yaml")


def _locked(path: Path, timeout: float | None = None):
    """The registry's sync lock (see lock.py); waiting is said on stderr."""
    return registry_lock(path, timeout, on_wait=lambda msg: typer.echo(msg, err=True))


def _run(action: Callable[[Client], Report], config: Optional[Path], url: Optional[str], project: Optional[str],
         verbose: bool) -> None:
    key = None
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger("urllib3").setLevel(logging.WARNING)  # it would log query strings, fine, but noisy
    try:
        cfg = load_config(config, url=url, project=project)
        key = load_api_key(cfg)
        client = Client(cfg, key, transport=TRANSPORT)
        try:
            report = action(client)
        finally:
            stats = client.stats
            client.close()
    except (ConfigError, RedmineError, SyncError, LockBusy) as exc:
        typer.echo(f"error: {redact(str(exc), key)}", err=True)
        raise typer.Exit(EXIT_ERROR)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - never a traceback that could carry the key
        if os.environ.get("ICD_DEBUG"):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {redact(str(exc), key)}", err=True)
        raise typer.Exit(EXIT_ERROR)
    for line in report.lines:
        typer.echo(redact(line, key))
    typer.echo(f"({stats.summary()})")
    if report.conflicts:
        typer.echo(f"{len(report.conflicts)} conflict(s) left untouched; resolve with --prefer local|remote "
                   "or by editing the registry", err=True)
        raise typer.Exit(EXIT_CONFLICT)


@app.command()
def pull(ctx: typer.Context, registry: RegistryOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
         project: ProjectOpt = None, prefer: PreferOpt = None,
         full: Annotated[bool, typer.Option("--full", help="Read every task again (also finds deleted ones), not only changes.")] = False,
         verbose: VerboseOpt = False) -> None:
    """Bring Redmine's changes of the registry's tasks into the registry (in place, comments kept).

    Also lists the project's tasks that carry an interface code but are not in the registry.
    Incremental: asks only for what changed since the last pull (--full reads everything).

    [bold]Examples[/bold]

      icd redmine pull

      icd redmine pull --full --verbose

      icd redmine pull --prefer remote
    """
    path = _registry(ctx, registry)

    def action(client: Client) -> Report:
        with _locked(path, client.cfg.lock_timeout):
            return Sync(path, client.cfg, client).pull(full=full, prefer=prefer.value if prefer else None)
    _run(action, config, url, project, verbose)


@app.command()
def plan(ctx: typer.Context, registry: RegistryOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
         project: ProjectOpt = None, prefer: PreferOpt = None,
         new_server: Annotated[bool, typer.Option("--new-server", help="Plan a copy of every task to a Redmine that does not know the ids.")] = False,
         verbose: VerboseOpt = False) -> None:
    """Print, field by field, what `push` would create or change. Changes nothing.

    [bold]Examples[/bold]

      icd redmine plan

      icd redmine plan --url https://redmine.example.org --project cta-data
    """
    path = _registry(ctx, registry)

    def action(client: Client) -> Report:
        return Sync(path, client.cfg, client).push(dry_run=True, prefer=prefer.value if prefer else None,
                                                   new_server=new_server)
    _run(action, config, url, project, verbose)


@app.command()
def push(ctx: typer.Context, registry: RegistryOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
         project: ProjectOpt = None, prefer: PreferOpt = None,
         new_server: Annotated[bool, typer.Option("--new-server", help="Copy every task to a Redmine that does not know the ids, then rewrite the ids in the registry.")] = False,
         recreate_deleted: Annotated[bool, typer.Option("--recreate-deleted", help="Create again, with new ids, the registry's tasks that were deleted in Redmine (see also: icd redmine forget).")] = False,
         verbose: VerboseOpt = False) -> None:
    """Create the planned tasks and send the registry's changes; each new id is written at once.

    An interrupted push can be run again: what was created has its id in the registry already.
    One sync at a time: a second one waits for the first (lock file .interfaces.yaml.lock).

    [bold]Examples[/bold]

      icd redmine push

      icd redmine push --prefer local

      icd redmine push --new-server --url http://127.0.0.1:3000

      icd redmine push --recreate-deleted
    """
    path = _registry(ctx, registry)

    def action(client: Client) -> Report:
        with _locked(path, client.cfg.lock_timeout):
            return Sync(path, client.cfg, client).push(prefer=prefer.value if prefer else None, new_server=new_server,
                                                       recreate_deleted=recreate_deleted)
    _run(action, config, url, project, verbose)


@app.command()
def conflicts(ctx: typer.Context, registry: RegistryOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
              project: ProjectOpt = None, verbose: VerboseOpt = False) -> None:
    """List the fields changed on both sides since the last sync (reads Redmine, writes nothing).

    [bold]Examples[/bold]

      icd redmine conflicts

      icd redmine pull --prefer remote    # then take Redmine's values
    """
    path = _registry(ctx, registry)

    def action(client: Client) -> Report:
        report = Sync(path, client.cfg, client).pull(full=True, write=False)
        report.lines = [c.line() for c in report.conflicts] or ["no conflict"]
        return report
    _run(action, config, url, project, verbose)


@app.command()
def publish(ctx: typer.Context, registry: RegistryOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
            project: ProjectOpt = None,
            icd: Annotated[Optional[list[str]], typer.Option("--icd", help="Only this ICD (repeatable).")] = None,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be written.")] = False,
            verbose: VerboseOpt = False) -> None:
    """Write the ICD documents to the project's Redmine wiki (Markdown; only pages that changed).

    [bold]Examples[/bold]

      icd redmine publish --dry-run

      icd redmine publish --icd DATA-COM
    """
    from .publish import publish as do_publish

    path = _registry(ctx, registry)

    def action(client: Client) -> Report:
        return do_publish(path, client.cfg, client, icd, dry_run=dry_run)
    _run(action, config, url, project, verbose)


@app.command()
def scaffold(ctx: typer.Context, codes: Annotated[list[str], typer.Argument(help="Interface codes.")],
             registry: RegistryOpt = None,
             stage: Annotated[Optional[list[str]], typer.Option("--stage", help="Only these lifecycle stages (repeatable).")] = None) -> None:
    """Add the planned tasks an interface's lifecycle needs (a parent and one subtask per stage) to
    the registry, without ids; `plan` shows them, `push` creates them. Needs no Redmine access.

    [bold]Examples[/bold]

      icd redmine scaffold I-DATA-xST-0106

      icd redmine scaffold I-DATA-COM-3001 --stage algorithms --stage integration
    """
    path = _registry(ctx, registry)
    try:
        with _locked(path):
            report = do_scaffold(path, codes, stage)
    except (SyncError, LockBusy) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR)
    for line in report.lines:
        typer.echo(line)


@app.command()
def forget(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id (11108) or CODE#stage (I-DATA-COM-3201#integration, CODE#parent).")],
           registry: RegistryOpt = None) -> None:
    """Remove a task from the registry (e.g. one deleted in Redmine that should stay deleted);
    parents and relations naming it are cleared. Needs no Redmine access; Redmine is not touched.

    [bold]Examples[/bold]

      icd redmine forget 11108

      icd redmine forget I-DATA-COM-3201#integration

      icd redmine push --recreate-deleted    # the other answer: create it again
    """
    path = _registry(ctx, registry)
    try:
        with _locked(path):
            report = do_forget(path, task)
    except (SyncError, LockBusy) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR)
    for line in report.lines:
        typer.echo(line)
