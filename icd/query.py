"""Filters of ``icd list`` and the rows it prints.

Filter values are checked against the registry's vocabularies; a value that is not
one of them raises ``QueryError`` with the choices (and a close match) in words.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Optional

from .model import CATEGORIES, ICD_NAMES, STAGES, STATUSES, Interface, Registry
from .publish.views import STAGE_SHORT

STAGE_CHOICES = (*STAGES, "none", "done")
COLUMNS = ("code", "icd", "title", "category", "level", "stage", "stage_status", "tasks", "provided_by",
           "module", "evidence")


class QueryError(ValueError):
    """A filter value that is not in the registry's vocabulary."""


def _pick(value: str, choices: Iterable[str], what: str, aliases: Mapping[str, str] | None = None) -> str:
    choices = list(choices)
    folded = {c.lower(): c for c in choices}
    for alias, target in (aliases or {}).items():
        folded.setdefault(alias.lower(), target)
    key = value.strip().lower()
    if key in folded:
        return folded[key]
    match = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.5)
    hint = f" (did you mean '{folded[match[0]]}'?)" if match else ""
    raise QueryError(f"unknown {what} '{value}'{hint}; choose one of: {', '.join(choices)}")


def resolve_icd(value: str) -> str:
    return _pick(value, ICD_NAMES, "ICD", {n.split("-", 1)[1]: n for n in ICD_NAMES})


def resolve_person(value: str, registry: Registry) -> str:
    """A person key, given the key or the name (case-insensitive)."""
    names = {p.name: key for key, p in registry.people.items()}
    needle = value.strip().lower()
    partial = {key for name, key in names.items() if needle and needle in name.lower()}
    if value not in registry.people and len(partial) == 1:
        return partial.pop()
    aliases = {**names, **{name.replace(".", "").replace(" ", ""): key for name, key in names.items()}}
    return _pick(value, list(registry.people), "person", aliases)


def filter_interfaces(registry: Registry, index: Any, *, icd: Optional[str] = None, category: Optional[str] = None,
                      stage: Optional[str] = None, status: Optional[str] = None,
                      person: Optional[str] = None) -> list[Interface]:
    """Interfaces matching every filter given.

    ``stage``: the interface's current lifecycle stage (first stage with a task not yet
    Resolved/Closed), ``none`` for interfaces with no stage task, ``done`` when all are done.
    ``status``: some task of the interface has this status.  ``person``: key or name of
    someone who provides the information, is assigned a task, or is responsible for the ICD.
    """
    items: list[Interface] = list(registry.interfaces)
    if icd:
        name = resolve_icd(icd)
        items = [i for i in items if i.icd == name]
    if category:
        cat = _pick(category, CATEGORIES, "category")
        items = [i for i in items if i.category == cat]
    if stage:
        wanted = _pick(stage, STAGE_CHOICES, "stage", {v: k for k, v in STAGE_SHORT.items()})
        items = [i for i in items if current_stage_key(i) == wanted]
    if status:
        st = _pick(status, STATUSES, "status", {"in-progress": "In Progress", "inprogress": "In Progress"})
        items = [i for i in items if any(t.status == st for t in i.tasks)]
    if person:
        key = resolve_person(person, registry)
        members = {id(i) for i in index.by_person.get(key, [])}
        items = [i for i in items if id(i) in members]
    return items


def current_stage_key(iface: Interface) -> str:
    current = iface.current_stage()
    if current:
        return current
    return "done" if any(t.stage for t in iface.tasks if t.role != "upstream") else "none"


def rows(items: Iterable[Interface], registry: Registry, evidence: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One flat dict per interface for tables, TSV and JSON."""
    evidence = evidence or {}
    names = {k: p.name for k, p in registry.people.items()}
    out = []
    for i in items:
        key = current_stage_key(i)
        stage_status = i.stage_status().get(key) if key in STAGES else None
        providers = []
        for p in i.provided_by:
            label = names.get(p.person, p.person) if p.person else "to be decided"
            if label not in providers:
                providers.append(label)
        ev = evidence.get(i.code)
        out.append({
            "code": i.code, "provisional": i.provisional, "icd": i.icd, "title": i.title,
            "category": i.category, "level": i.level, "stage": key, "stage_status": stage_status or "",
            "tasks": len(i.tasks), "provided_by": ", ".join(providers) or "to be decided",
            "module": i.module or "", "evidence": ev.verdict if ev is not None else "none",
        })
    return out
