"""Publishers: ICD documents and status reports (Markdown and self-contained HTML) from the registry.

``publish_docs`` and ``publish_report`` are what ``icd doc`` and ``icd report`` call;
``render_doc`` and ``render_report`` return the text without writing.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..model import ICD_NAMES, Registry
from ..perf import without_gc
from .render import render, write_text
from .report import report_data
from .views import CONVENTION, Context, View, build_context, interface_views

__all__ = ["FORMATS", "CONVENTION", "build_context", "render_doc", "render_report", "publish_docs",
           "publish_report", "formats_of"]

FORMATS = ("md", "html")
_EXT = {"md": "md", "html": "html"}


def formats_of(choice: str) -> tuple[str, ...]:
    """'md' | 'html' | 'both' -> the formats to write."""
    return FORMATS if choice == "both" else (choice,)


def _group(views: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for v in views:
        out.setdefault(v["icd"], []).append(v)
    return out


def _icd_header(ctx: Context, name: str) -> dict[str, Any]:
    icd = ctx.registry.icds.get(name)
    if icd is None:
        return View({"name": name, "title": f"ICD {name}", "version": "", "date": "",
                     "status": "not defined in the registry", "scope": "", "responsibles": [], "contributors": []})

    def people(items):
        out = []
        for r in items:
            name = ctx.name(r.person) if r.person else "to be decided"
            wp = ctx.wps.get(r.person, "") if r.person else ""
            label = name + (f" ({wp})" if wp else "") + (f" — {r.role}" if r.role != wp else "")
            if r.note and r.note != name:
                label += f" ({r.note})"
            out.append(View({"name": name, "wp": wp, "role": r.role, "note": r.note or "", "label": label}))
        return out

    return View({"name": name, "title": icd.title, "version": icd.version, "date": str(icd.date), "status": icd.status,
                 "scope": icd.scope, "responsibles": people(icd.responsibles), "contributors": people(icd.contributors)})


def render_doc(ctx: Context, name: str, fmt: str, views: Optional[Sequence[dict[str, Any]]] = None,
               source: str = "") -> str:
    """The ICD document of ``name`` ('DATA-COM' ...) as Markdown ('md') or HTML ('html')."""
    if views is None:
        views = [v for v in interface_views(ctx) if v["icd"] == name]
    return render(f"icd.{_EXT[fmt]}.j2", icd=_icd_header(ctx, name), interfaces=list(views),
                  convention=CONVENTION, today=str(ctx.today), source=source,
                  generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def render_report(ctx: Context, fmt: str, views: Optional[list[dict[str, Any]]] = None, *,
                  since: Any = None, source: str = "") -> str:
    """The status report as Markdown or HTML (with inline SVG charts)."""
    if views is None:
        views = interface_views(ctx)
    data = report_data(ctx, views, since=since, source=source, charts_wanted=fmt == "html")
    return render(f"report.{_EXT[fmt]}.j2", convention=CONVENTION,
                  generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **data)


def icd_names(registry: Registry) -> list[str]:
    """ICDs to publish for ``--all``: those defined in the registry (in canonical order)."""
    names = [n for n in ICD_NAMES if n in registry.icds]
    extra = sorted({i.icd for i in registry.interfaces} - set(names))
    return names + extra


@without_gc
def publish_docs(registry: Registry, names: Iterable[str], formats: Iterable[str], out: Path, *,
                 evidence: Mapping[str, Any] | None = None, redmine_url: Optional[str] = None,
                 today: Optional[dt.date] = None, read_modules: bool = True, source: str = "",
                 ctx: Optional[Context] = None) -> list[Path]:
    """Write one document per ICD and format into ``out``; returns the paths written."""
    names = list(names)
    ctx = ctx or build_context(registry, evidence=evidence, redmine_url=redmine_url, today=today,
                               read_modules=read_modules, icds=names)
    wanted = set(names)
    groups = _group(interface_views(ctx, [i for i in registry.interfaces if i.icd in wanted]))
    written = []
    for name in names:
        for fmt in formats:
            path = Path(out) / f"{name}.{_EXT[fmt]}"
            write_text(path, render_doc(ctx, name, fmt, groups.get(name, []), source=source))
            written.append(path)
    return written


@without_gc
def publish_report(registry: Registry, formats: Iterable[str], out: Path, *,
                   evidence: Mapping[str, Any] | None = None, since: Any = None,
                   redmine_url: Optional[str] = None, today: Optional[dt.date] = None,
                   read_modules: bool = True, source: str = "", ctx: Optional[Context] = None,
                   basename: str = "report") -> list[Path]:
    """Write the status report in each format into ``out``; returns the paths written."""
    ctx = ctx or build_context(registry, evidence=evidence, redmine_url=redmine_url, today=today,
                               read_modules=read_modules)
    views = interface_views(ctx)
    written = []
    for fmt in formats:
        path = Path(out) / f"{basename}.{_EXT[fmt]}"
        write_text(path, render_report(ctx, fmt, views, since=since, source=source))
        written.append(path)
    return written
