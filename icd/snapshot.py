"""Snapshots of the registry and what changed since one (``icd snapshot``, ``icd report --since``).

A snapshot is the JSON dump of the registry model (``Registry.model_dump(mode="json")``)
with the time it was taken.  The comparison works on plain data, so a snapshot taken
by an older version of the tool (fields added or removed since) still compares.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .model import Registry

SCHEMA = 1
_TASK_FIELDS_SHOWN = ("subject", "stage", "role", "priority", "assignee", "start", "due", "estimated_hours",
                      "spent_hours", "done_ratio", "parent", "category")


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message is for a person."""


def take(registry: Registry, source: str = "") -> dict[str, Any]:
    return {"schema": SCHEMA, "kind": "cta-icd snapshot",
            "taken": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source": source, "registry": registry.model_dump(mode="json")}


def save(registry: Registry, path: str | Path, source: str = "") -> Path:
    path = Path(path)
    from .publish.render import write_text

    write_text(path, json.dumps(take(registry, source), indent=1, ensure_ascii=False) + "\n")
    return path


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{path}: snapshot file not found (make one with `icd snapshot --out {path}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{path}: not a readable snapshot ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("registry"), dict):
        raise SnapshotError(f"{path}: not a cta-icd snapshot (no 'registry' in it); make one with `icd snapshot`")
    data.setdefault("source", str(path))
    data["file"] = str(path)
    return data


def _short(value: Any, limit: int = 90) -> str:
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Rows(list):
    """A list that stores each appended row as a ``View`` (a dict with attribute access)."""

    def __init__(self, view, rows=()):
        super().__init__(view(r) for r in rows)
        self._view = view

    def append(self, row) -> None:
        super().append(self._view(row))


@dataclass
class Changes:
    taken: str
    source: str
    added: list[dict[str, str]] = field(default_factory=list)
    removed: list[dict[str, str]] = field(default_factory=list)
    changed: list[dict[str, str]] = field(default_factory=list)        # where, field, old, new
    status_changes: list[dict[str, str]] = field(default_factory=list)  # code, task, subject, old, new

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.status_changes)

    def __post_init__(self) -> None:
        from .publish.views import View  # rows read by the templates as attributes

        for name in ("added", "removed", "changed", "status_changes"):
            setattr(self, name, _Rows(View, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return {"taken": self.taken, "source": self.source, "added": self.added, "removed": self.removed,
                "changed": self.changed, "status_changes": self.status_changes}


def _task_key(task: dict[str, Any]) -> Any:
    return ("id", task["id"]) if task.get("id") is not None else ("subject", task.get("subject"))


def _task_label(task: dict[str, Any]) -> str:
    return f"#{task['id']}" if task.get("id") is not None else f"'{task.get('subject')}'"


def diff(snapshot: dict[str, Any], registry: Registry) -> Changes:
    """What changed from ``snapshot`` (as read by ``load``) to ``registry``."""
    old = snapshot["registry"]
    new = registry.model_dump(mode="json")
    ch = Changes(taken=str(snapshot.get("taken", "?")), source=str(snapshot.get("file") or snapshot.get("source", "")))
    # ICDs and people
    for section, label in (("icds", "ICD"), ("people", "person")):
        o, n = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(o) | set(n), key=str):
            if key not in o:
                ch.changed.append({"where": f"{label} {key}", "field": "(record)", "old": "—", "new": "added"})
            elif key not in n:
                ch.changed.append({"where": f"{label} {key}", "field": "(record)", "old": "present", "new": "removed"})
            else:
                for f in sorted(set(o[key]) | set(n[key])):
                    if o[key].get(f) != n[key].get(f):
                        ch.changed.append({"where": f"{label} {key}", "field": f,
                                           "old": _short(o[key].get(f)), "new": _short(n[key].get(f))})
    old_ifaces = {i.get("code"): i for i in old.get("interfaces") or [] if isinstance(i, dict)}
    new_ifaces = {i["code"]: i for i in new["interfaces"]}
    for code, iface in new_ifaces.items():
        before = old_ifaces.get(code)
        if before is None:
            ch.added.append({"code": code, "title": iface.get("title", ""), "icd": iface.get("icd", "")})
            continue
        for f in sorted(iface.keys() | before.keys()):
            if f == "tasks":
                continue
            if iface.get(f) != before.get(f):
                ch.changed.append({"where": code, "field": f, "old": _short(before.get(f)), "new": _short(iface.get(f))})
        old_tasks = {_task_key(t): t for t in before.get("tasks") or []}
        new_tasks = {_task_key(t): t for t in iface.get("tasks") or []}
        for key, task in new_tasks.items():
            prev = old_tasks.get(key)
            label = _task_label(task)
            if prev is None:
                ch.changed.append({"where": f"{code} task {label}", "field": "(task)", "old": "—",
                                   "new": f"added ({task.get('status')})"})
                continue
            if prev.get("status") != task.get("status"):
                ch.status_changes.append({"code": code, "task": label, "subject": task.get("subject", ""),
                                          "old": str(prev.get("status")), "new": str(task.get("status"))})
            for f in _TASK_FIELDS_SHOWN:
                if prev.get(f) != task.get(f):
                    ch.changed.append({"where": f"{code} task {label}", "field": f,
                                       "old": _short(prev.get(f)), "new": _short(task.get(f))})
        for key, task in old_tasks.items():
            if key not in new_tasks:
                ch.changed.append({"where": f"{code} task {_task_label(task)}", "field": "(task)",
                                   "old": str(task.get("status")), "new": "removed"})
    for code, iface in old_ifaces.items():
        if code not in new_ifaces:
            ch.removed.append({"code": str(code), "title": iface.get("title", ""), "icd": iface.get("icd", "")})
    return ch


def since(path: str | Path, registry: Registry) -> Changes:
    """Load the snapshot at ``path`` and compare it with ``registry``."""
    snapshot = load(path)
    try:
        return diff(snapshot, registry)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a damaged or hand-edited snapshot
        raise SnapshotError(f"{path}: not a snapshot written by `icd snapshot` (its contents do not have "
                            f"the expected shape: {type(exc).__name__}: {exc}); make one with `icd snapshot`") from None


def default_name(today: Optional[dt.date] = None) -> Path:
    return Path("out") / f"snapshot-{(today or dt.date.today()).isoformat()}.json"
