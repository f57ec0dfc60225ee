"""View data for the publishers: one plain dict per interface, computed once.

Templates stay simple (loops over ready-made strings); everything that needs a
look-up (person names, evidence, module docstrings, Redmine links) is resolved here
through dictionaries built once, so the cost is linear in the size of the registry.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from ..model import (
    CLOSED_STATUSES, DONE_STATUSES, PIPELINE_LEVELS, STAGE_TITLES, STAGES, Interface, Registry, Task,
)

DEFAULT_REDMINE_URL = "https://forge.cta-observatory.org"
CONVENTION = ("Assigned with nobody means reserved for the CCF teams; New with nobody means it needs "
              "an Expression of Interest (volunteers wanted).")
STAGE_SHORT = {"feedback": "Feedback to DATA", "data_structure": "Data structure",
               "algorithms": "Algorithms", "integration": "Integration",
               "partial_array_test": "Partial-array test"}
NO_TASK = "no task"
_ANCHOR = re.compile(r"[^a-z0-9]+")
_PAGE = re.compile(r"[A-Za-z0-9-]+")  # an ICD name usable as a relative file name in a link


class View(dict):
    """A dict whose keys are also attributes: Jinja finds ``v.title`` at C speed."""

    __slots__ = ("__dict__",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def css(status: str) -> str:
    return _CSS.get(status) or status.lower().replace(" ", "-")


_STAGE_DONE = DONE_STATUSES | {"Rejected"}
_FINISHED = DONE_STATUSES | CLOSED_STATUSES
_CSS = {"In Progress": "in-progress", NO_TASK: "no-task"}


def anchor(code: str) -> str:
    return _ANCHOR.sub("-", code.lower()).strip("-")


def redmine_base(registry: Registry, override: Optional[str] = None) -> str:
    """Base URL of the Redmine server: option, else ``redmine: {url: ...}`` in the registry, else CTA's forge."""
    if override:
        return override.rstrip("/")
    conf = registry.redmine or {}
    url = conf.get("url") if isinstance(conf, dict) else None
    if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
        url = None  # only web addresses become links (never javascript: or data: in a document's href)
    return (url or DEFAULT_REDMINE_URL).rstrip("/")


@dataclass
class MethodInfo:
    """What the registry tool can read from a calibration module (its docstring and CONTRACT)."""

    module: str
    method: str = ""
    title: str = ""
    references: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    error: Optional[str] = None


def read_methods(modules: Iterable[str]) -> dict[str, MethodInfo]:
    """Import each distinct module once and read its method; a broken module becomes an error line."""
    from .. import modules as modmod

    out: dict[str, MethodInfo] = {}
    for name in sorted(set(m for m in modules if m)):
        info = MethodInfo(name)
        try:
            contract = modmod.contract_of(name)
            info.method = modmod.method_of(name)
            info.title = getattr(contract, "title", "") or ""
            info.references = tuple(getattr(contract, "references", ()) or ())
            info.tests = tuple(getattr(contract, "tests", ()) or ())
        except Exception as exc:  # noqa: BLE001 - shown in the document, never raised
            info.error = modmod.reason(exc)
        out[name] = info
    return out


def _first_sentence(docstring: str) -> str:
    """The summary line of a module docstring (its first paragraph, on one line)."""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _num(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric(value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        return f"{_metric(value['value'])} {value.get('unit', '')}".strip()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Context:
    """Everything the views need, built once."""

    registry: Registry
    evidence: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, MethodInfo] = field(default_factory=dict)
    redmine_url: str = DEFAULT_REDMINE_URL
    today: dt.date = field(default_factory=dt.date.today)

    def __post_init__(self) -> None:
        people = self.registry.people
        self.names = {key: p.name for key, p in people.items()}
        self.wps = {key: p.wp for key, p in people.items()}
        self.codes = {i.code for i in self.registry.interfaces}
        self.display = {i.code: i.display_code for i in self.registry.interfaces}
        self.icd_of = {i.code: i.icd for i in self.registry.interfaces}
        self.anchors = {i.code: anchor(i.code) for i in self.registry.interfaces}

    def anchor(self, code: str) -> str:
        a = self.anchors.get(code)
        return a if a is not None else anchor(code)

    def name(self, key: Optional[str]) -> str:
        if key is None:
            return "nobody"
        return self.names.get(key, key)


def task_view(task: Task, ctx: Context, iface: Interface) -> dict[str, Any]:
    url = f"{ctx.redmine_url}/issues/{task.id}" if task.id is not None else ""
    note = ""
    if task.assignee is None:
        if task.status == "Assigned":
            note = "reserved for the CCF teams"
        elif task.status == "New":
            note = "volunteers wanted: Expression of Interest"
    due = task.due
    overdue = due is not None and due < ctx.today and task.status not in _FINISHED  # = Task.is_overdue
    rels = ", ".join(f"{r.type} #{r.task}" + (f" ({r.delay} days)" if r.delay else "") for r in task.relations)
    return View({
        "id": task.id, "cls": css(task.status), "label": f"#{task.id}" if task.id is not None else "(not yet in Redmine)", "url": url,
        "subject": task.subject, "role": task.role,
        "stage": STAGE_SHORT.get(task.stage, "") if task.stage else "",
        "stage_key": task.stage or "", "status": task.status, "priority": task.priority,
        "assignee": ctx.name(task.assignee), "nobody": task.assignee is None, "note": note,
        "start": str(task.start) if task.start else "", "due": str(due) if due else "",
        "estimated": _num(task.estimated_hours), "spent": _num(task.spent_hours),
        "estimated_h": task.estimated_hours or 0.0, "spent_h": task.spent_hours or 0.0,
        "done": task.done_ratio, "relations": rels, "category": task.category or "",
        "overdue": overdue, "days_late": (ctx.today - due).days if overdue else 0,
        "volunteers": task.needs_volunteers, "ccf": task.reserved_for_ccf,
        "code": iface.code, "display_code": iface.display_code, "icd": iface.icd,
        "anchor": ctx.anchor(iface.code), "title": iface.title,
    })


def evidence_view(record: Any) -> Optional[dict[str, Any]]:
    if record is None:
        return None
    criteria = record.criteria or {}
    metrics = [View(name=k, value=_metric(v), criterion=criteria.get(k, "")) for k, v in (record.metrics or {}).items()]
    return View({
        "verdict": record.verdict, "summary": record.summary or (record.error or ""), "metrics": metrics,
        "timestamp": record.timestamp or "", "duration": f"{record.duration_s:.2f} s",
        "when": (record.timestamp or "").replace("+00:00", " UTC").split("T"),
        "module": record.module, "module_version": record.module_version, "error": record.error or "",
        **_ensemble_view(record), "real_data": _real_data_view(record),
    })


def _real_data_view(record: Any) -> list[View]:
    """The real CTA files behind this interface: file, sha256 (short), what was compared, verdict."""
    out = []
    for e in getattr(record, "real_data", None) or []:
        verdict = {True: "agrees", False: "differs", None: "not run"}[e.get("passed")]
        out.append(View(file=str(e.get("file", "")), sha=str(e.get("sha256") or "")[:12],
                        source=str(e.get("source") or ""), compared=str(e.get("compared") or ""),
                        verdict=verdict, summary=str(e.get("summary") or "")))
    return out


def _ensemble_view(record: Any) -> dict[str, str]:
    """Pass rate over seeds and pull statistics, as short texts ('' for a single-seed record)."""
    seeds = list(getattr(record, "seeds", None) or [])
    if len(seeds) < 2:
        return {"pass_rate": "", "pulls": "", "ensemble": ""}
    passed = record.seeds_passed
    rate, p = getattr(record, "false_fail_rate", None), getattr(record, "binomial_p", None)
    pulls = []
    for name, row in (getattr(record, "pull_stats", None) or {}).items():
        if row.get("mean") is None:
            continue
        std = "" if row.get("std") is None else f", std {row['std']:.2f}"
        flag = " (off)" if row.get("ok") is False else ""
        pulls.append(f"pull {name}: mean {row['mean']:+.2f}{std}{flag}")
    ensemble = f"seeds {seeds[0]}-{seeds[-1]}" + (f", designed false-fail rate {rate:.2g} per seed, binomial p {p:.2g}"
                                                 if rate is not None and p is not None else "")
    return {"pass_rate": f"{passed}/{len(seeds)} seeds pass", "pulls": "; ".join(pulls), "ensemble": ensemble}


def _related(code: str, icd: str, ctx: Context) -> View:
    """A related interface: a link inside this ICD's document, into the sibling document of
    another ICD (``DATA-COM.html#...``, written beside it by ``icd doc``), or plain text."""
    other = ctx.icd_of.get(code)
    a = ctx.anchor(code)
    page = "" if other == icd else (other if other and _PAGE.fullmatch(other) else None)
    return View(code=code, display=ctx.display.get(code, code), anchor=a, page=page)


def interface_view(iface: Interface, ctx: Context) -> dict[str, Any]:
    tasks = [task_view(t, ctx, iface) for t in iface.tasks]
    stage_status = iface.stage_status()
    by_stage: dict[str, list[str]] = {s: [] for s in STAGES}
    for t in tasks:
        if t["stage_key"] and t["role"] != "upstream":
            by_stage[t["stage_key"]].append(t["label"])
    stages = []
    for s in STAGES:
        st = stage_status[s] or NO_TASK
        stages.append(View(key=s, title=STAGE_TITLES[s], short=STAGE_SHORT[s], status=st, cls=css(st),
                           tasks=", ".join(by_stage[s])))
    current = next((s for s in STAGES if stage_status[s] is not None
                    and stage_status[s] not in _STAGE_DONE), None)  # = Interface.current_stage()
    planned = any(stage_status[s] is not None for s in STAGES)
    info = ctx.methods.get(iface.module) if iface.module else None
    ev = evidence_view(ctx.evidence.get(iface.code))
    data_tasks = [t for t in tasks if t["role"] != "upstream"]
    pipeline = [f"{p} ({PIPELINE_LEVELS[p]})" for p in iface.pipeline_levels]
    return View({
        "code": iface.code, "display_code": iface.display_code, "provisional": iface.provisional,
        "anchor": ctx.anchor(iface.code), "icd": iface.icd, "title": iface.title,
        "description": iface.description, "category": iface.category, "level": iface.level,
        "pipeline_levels": pipeline, "pipeline": ", ".join(pipeline), "pipeline_short": ", ".join(iface.pipeline_levels),
        "related": [_related(c, iface.icd, ctx) for c in iface.related],
        "providers": [View(name=ctx.name(p.person) if p.person else "to be decided", wp=p.wp,
                           subproject=p.subproject or "") for p in iface.provided_by],
        "tasks": tasks, "stages": stages,
        "current_stage": STAGE_SHORT[current] if current else ("all stages done" if planned else "not planned"),
        "current_stage_key": current or ("done" if planned else "none"),
        "module": iface.module or "", "tests": list(iface.tests or (info.tests if info else ())),
        "method": info.method if info else "", "method_title": info.title if info else "",
        "method_summary": _first_sentence(info.method) if info else "",
        "references": list(info.references) if info else [], "method_error": info.error if info else None,
        "notes": iface.notes or "",
        "evidence": ev, "verdict": ev["verdict"] if ev else "none",
        "verdict_label": ev["verdict"] if ev else "no evidence yet",
        "estimated_h": sum(t["estimated_h"] for t in data_tasks),
        "spent_h": sum(t["spent_h"] for t in data_tasks),
    })


def build_context(registry: Registry, *, evidence: Mapping[str, Any] | None = None,
                  redmine_url: Optional[str] = None, today: Optional[dt.date] = None,
                  read_modules: bool = True, icds: Optional[Iterable[str]] = None) -> Context:
    """Look-ups for the views; ``icds`` limits the calibration modules read to those ICDs."""
    wanted = set(icds) if icds is not None else None
    methods = read_methods(i.module for i in registry.interfaces
                           if i.module and (wanted is None or i.icd in wanted)) if read_modules else {}
    return Context(registry, evidence or {}, methods, redmine_base(registry, redmine_url), today or dt.date.today())


def interface_views(ctx: Context, interfaces: Optional[Iterable[Interface]] = None) -> list[dict[str, Any]]:
    """Views of ``interfaces`` (default: all of the registry), in order."""
    return [interface_view(i, ctx) for i in (ctx.registry.interfaces if interfaces is None else interfaces)]


def is_done(status: str) -> bool:
    return status in DONE_STATUSES or status in CLOSED_STATUSES
