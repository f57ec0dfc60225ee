"""Pull, plan, push and conflicts between the registry and Redmine.

Model of a sync (three-way, like a version-control merge):

* every task of the registry that exists in Redmine carries ``synced``: the values of its
  fields at the last sync (the common ancestor).  For each field, ``local`` (registry),
  ``remote`` (Redmine) and ``base`` (synced) decide: only remote changed -> pull takes it;
  only local changed -> push sends it; both changed to different values -> a CONFLICT,
  reported with the three values and left untouched until ``--prefer local|remote`` (or a
  hand edit that makes the two sides equal).  Without ``synced`` (first contact) the
  direction decides: pull takes Redmine's values, push sends the registry's.
* ids: the registry keeps Redmine's ids and records which Redmine they belong to
  (``redmine.url`` in the bookkeeping section).  Tasks without ``id`` are planned and are
  created by push.  A Redmine that does not know the ids (e.g. a fresh one) is refused unless
  ``push --new-server``: it creates every task there and then rewrites all ids, parents and
  relation targets of the registry in one atomic write (old -> new ids are kept under
  ``redmine.migration`` while it runs, so an interrupted copy resumes).
* no duplicates: before each creation the registry records the task as ``redmine.pending``
  (in the same atomic write as the previous task's new id); a re-run first searches Redmine
  for pending tasks (interface code + subject) and adopts what it finds.
* after the writes, push re-reads what it touched and sends the registry's values once more where
  Redmine moved them (a workflow that drops a status given at creation; a "follows" relation that
  reschedules the following task), then stores the result as ``synced``.
  (Test hook: ``ICD_REDMINE_CRASH_AFTER_CREATE=n`` kills the process right after the n-th creation,
  before its id is recorded, to test that a re-run converges.)
* relations are listed on one side in the registry (``follows`` on the DATA task); Redmine
  shows both sides (#8529 "precedes" #8546), so the mirror of a relation listed on the other
  registry task is ignored on pull.
* incremental pull: issues of the project with ``updated_on >= watermark`` (the newest
  ``updated_on`` seen, a server timestamp, so clocks need not agree), plus issues outside
  the project fetched by id, 100 per request.
"""
from __future__ import annotations

import datetime as dt
import os

import yaml
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ..model import Interface, Relation, Task
from ..registry import Loaded, load
from .client import Client
from .config import RedmineConfig
from .yamledit import YamlDoc, _Loader

SYNC_FIELDS = ("subject", "tracker", "category", "status", "priority", "assignee", "start", "due",
               "estimated_hours", "done_ratio", "parent", "relations")
PULL_ONLY = ("spent_hours",)
INVERSE = {"follows": "precedes", "precedes": "follows", "blocks": "blocked", "blocked": "blocks",
           "relates": "relates", "duplicates": "duplicated", "duplicated": "duplicates",
           "copied_to": "copied_from", "copied_from": "copied_to"}
CODE_RE = re.compile(r"\b(I-DATA-(?:COM|xST|ACTL)-\d{4}|PROV-DATA-(?:COM|xST|ACTL)-[A-Z0-9]+(?:-[A-Z0-9]+)*)\b")
BATCH = 100
# the relation filters of Redmine's issue query (each direction of each type)
RELATION_FILTERS = ("relates", "duplicates", "duplicated", "blocks", "blocked", "precedes", "follows",
                    "copied_to", "copied_from")
_MISSING = object()


class SyncError(Exception):
    """A problem that stops a sync before (or instead of) sending anything; one line."""


@dataclass
class Entry:
    """One task of the registry and where it is in the file."""

    iface: Interface
    task: Task
    loc: tuple

    @property
    def label(self) -> str:
        what = f"#{self.task.id}" if self.task.id else "new task"
        return f"{what} '{self.task.subject}' ({self.iface.code})"


@dataclass
class Conflict:
    task: int
    code: str
    field: str
    local: Any
    remote: Any
    base: Any

    def line(self) -> str:
        return (f"CONFLICT #{self.task} ({self.code}) {self.field}: registry {_show(self.local)}, "
                f"Redmine {_show(self.remote)} (both changed since the last sync, which had {_show(self.base)}); "
                "left untouched: choose with --prefer local|remote or edit the registry")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    updated: set[int] = field(default_factory=set)
    changed_in_registry: int = 0
    unknown: dict[str, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


def _show(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, list):
        return "[" + ", ".join(_rel_text(r) for r in value) + "]" if value and isinstance(value[0], list) else str(value)
    return repr(value) if isinstance(value, str) else str(value)


def _rel_text(rel: list) -> str:
    t, other, delay = rel
    return f"{t} #{other}" + (f" (delay {delay})" if delay else "")


# -- canonical values ------------------------------------------------------------------------
def canon_relations(items: Iterable[tuple[str, int, Optional[int]]]) -> list[list]:
    out = set()
    for t, other, delay in items:
        if t not in ("follows", "precedes"):
            delay = None
        out.add((t, int(other), int(delay) if delay is not None else None))
    return [list(r) for r in sorted(out, key=lambda r: (r[1], r[0], r[2] or 0))]


def local_values(task: Task) -> dict[str, Any]:
    return {
        "subject": task.subject, "tracker": task.tracker, "category": task.category, "status": task.status,
        "priority": task.priority, "assignee": task.assignee,
        "start": task.start.isoformat() if task.start else None,
        "due": task.due.isoformat() if task.due else None,
        "estimated_hours": _num(task.estimated_hours), "done_ratio": task.done_ratio, "parent": task.parent,
        "relations": canon_relations((r.type, r.task, r.delay) for r in task.relations),
    }


def _num(x: Any) -> Any:
    if x is None:
        return None
    x = round(float(x), 2)
    return int(x) if x.is_integer() else x


def remote_relations(issue: dict) -> list[tuple[str, int, Optional[int], int]]:
    """Relations of ``issue`` seen from it: (type, other id, delay, relation id)."""
    out = []
    me = issue["id"]
    for rel in issue.get("relations") or []:
        if rel["issue_id"] == me:
            out.append((rel["relation_type"], rel["issue_to_id"], rel.get("delay"), rel["id"]))
        else:
            out.append((INVERSE.get(rel["relation_type"], rel["relation_type"]), rel["issue_id"], rel.get("delay"), rel["id"]))
    return out


# -- the sync session ------------------------------------------------------------------------
def require_valid(loaded: Loaded) -> Loaded:
    """``loaded`` if the registry has no problem; else SyncError naming the count and the first
    (file:line): a sync never writes into a registry it cannot fully read."""
    if loaded.diagnostics:
        d = loaded.diagnostics[0]
        raise SyncError(f"the registry has {len(loaded.diagnostics)} problem(s); fix them first "
                        f"(icd validate). First: {d.file}:{d.line}: {d.message}")
    return loaded


class Sync:
    BY_ID_MAX = BATCH   # incremental pull: up to this many unchanged tasks are read by id for their relations

    def __init__(self, path: Path, cfg: RedmineConfig, client: Client, *, loaded: Optional[Loaded] = None):
        self.path = Path(path)
        self.cfg = cfg
        self.client = client
        self.loaded = require_valid(loaded or load(self.path, check_modules=False))
        self.doc = YamlDoc.read(self.path)
        self.doc.relocator = self._relocator
        self.doc.owned = _sync_owned
        self.registry = self.loaded.registry
        self.book: dict[str, Any] = dict(self.registry.redmine or {})
        self.entries: list[Entry] = []
        for i, iface in enumerate(self.registry.interfaces):
            for k, task in enumerate(iface.tasks):
                self.entries.append(Entry(iface, task, ("interfaces", i, "tasks", k)))
        self.by_id = {e.task.id: e for e in self.entries if e.task.id}
        self.first_ids = {e.loc: e.task.id for e in self.entries}
        self.notes: list[str] = []   # lines about merged hand edits, added to the report
        self._owned_elsewhere()
        self._dirty = False

    # -- bookkeeping -------------------------------------------------------------------
    def _owned_elsewhere(self) -> None:
        """(task, type, other) mirrors of relations listed on the other registry task."""
        self.mirrors: set[tuple[int, str, int]] = set()
        for e in self.entries:
            for r in e.task.relations:
                if e.task.id and r.task in self.by_id:
                    self.mirrors.add((r.task, INVERSE[r.type], e.task.id))

    def check_server(self, new_server: bool = False, *, pulling: bool = False) -> None:
        """Refuse a Redmine other than the one the registry's bookkeeping belongs to."""
        recorded = self.book.get("url")
        if not recorded or recorded.rstrip("/") == self.cfg.url or new_server:
            return
        if self.by_id:
            raise SyncError(f"the registry's task ids belong to {recorded}, but the configured Redmine is "
                            f"{self.cfg.url}; to copy the tasks there (ids are rewritten) run: icd redmine push --new-server")
        if pulling:
            raise SyncError(f"the registry's Redmine bookkeeping (redmine: in the registry) belongs to {recorded}, "
                            f"but the configured Redmine is {self.cfg.url}; nothing was read or recorded: fix the URL, "
                            "or delete the redmine: section to start over with the new Redmine")

    def save(self) -> None:
        self.doc.set(("redmine",), _clean(self.book) or {"url": self.cfg.url})
        merged = self.doc.merged
        self.doc.write(self.path)
        self._dirty = False
        if self.doc.merged != merged:
            self._merge_notes()

    def _relocator(self, new: YamlDoc):
        """Where each task of the first read is in ``new`` (a hand edit may have moved it):
        found by interface code and id, or, for a task without id at the first read, by code,
        subject and stage."""
        data = yaml.load(new.original, Loader=_Loader) or {}
        first_ids = {e.task.id for e in self.entries if e.task.id}
        by_id: dict[tuple, tuple[int, int]] = {}
        by_subject: dict[tuple, list[tuple[int, int, Any]]] = {}
        for i, iface in enumerate(data.get("interfaces") or [] if isinstance(data, dict) else []):
            if not isinstance(iface, dict):
                continue
            for k, task in enumerate(iface.get("tasks") or []):
                if not isinstance(task, dict):
                    continue
                code = iface.get("code")
                if task.get("id") is not None:
                    by_id[(code, task["id"])] = (i, k)
                by_subject.setdefault((code, task.get("subject"), task.get("stage")), []).append((i, k, task.get("id")))
        where: dict[tuple[int, int], tuple[int, int]] = {}
        for e in self.entries:
            first_id = self.first_ids.get(e.loc)
            if first_id is not None:
                found = by_id.get((e.iface.code, first_id))
            else:
                found = next(((i, k) for i, k, tid in by_subject.get((e.iface.code, e.task.subject, e.task.stage), [])
                              if tid is None or (tid == e.task.id and tid not in first_ids)), None)
            if found is not None:
                where[(e.loc[1], e.loc[3])] = found

        def locate(loc: tuple) -> Optional[tuple]:
            if len(loc) >= 4 and loc[0] == "interfaces" and loc[2] == "tasks":
                found = where.get((loc[1], loc[3]))
                return None if found is None else ("interfaces", found[0], "tasks", found[1], *loc[4:])
            return loc
        return locate

    def _merge_notes(self) -> None:
        """Say what merging a hand edit saved during the sync did (lines for the report)."""
        self.notes.append(f"the registry was edited by hand during this sync: the sync's changes were merged "
                          f"into the edited file ({self.path}), the hand edit kept")
        for loc in self.doc.dropped:
            e = next((x for x in self.entries if x.loc == loc[:4]), None)
            if e is not None and loc[4:] == ("id",) and e.task.id:
                self.notes.append(f"WARNING: {e.iface.code} task '{e.task.subject}' was renamed or removed by the "
                                  f"hand edit, so its Redmine id #{e.task.id} is not recorded: add `id: {e.task.id}` "
                                  "to it (or delete the Redmine task)")
        for loc in self.doc.kept:
            e = next((x for x in self.entries if x.loc == loc[:4]), None)
            if e is not None:
                self.notes.append(f"kept the hand edit of {'.'.join(map(str, loc[4:]))} of {e.label}; "
                                  "the next push sends it")

    def set_field(self, e: Entry, name: str, value: Any) -> None:
        """Change one field of a task in the model and in the file."""
        yaml_value: Any = value
        if name in ("start", "due"):
            yaml_value = dt.date.fromisoformat(value) if value else None
        if name == "relations":
            yaml_value = [{"type": t, "task": o, **({"delay": d} if d is not None else {})} for t, o, d in value]
            e.task.relations = [Relation(type=t, task=o, delay=d) for t, o, d in value]
            # a relation between two registry tasks is listed on one of them: the other ignores its mirror
            self.mirrors.update((o, INVERSE.get(t, t), e.task.id) for t, o, _ in value if o in self.by_id)
            if not value and not self.doc.has(e.loc + ("relations",)):
                return
        else:
            setattr(e.task, name if name not in ("start", "due") else name, yaml_value)
        self.doc.set(e.loc + (name,), yaml_value, first=(name == "id"))
        self._dirty = True

    def set_synced(self, e: Entry, values: dict[str, Any], issue: dict) -> None:
        synced = {k: values[k] for k in SYNC_FIELDS}
        synced["_project"] = issue["project"]["id"]
        synced["_assignee_id"] = (issue.get("assigned_to") or {}).get("id")
        if e.task.synced != synced:
            e.task.synced = synced
            self.doc.set(e.loc + ("synced",), synced, flow=True)
            self._dirty = True
        updated = _parse_time(issue.get("updated_on"))
        if updated and e.task.updated_on != updated:
            e.task.updated_on = updated
            self.doc.set(e.loc + ("updated_on",), updated)
            self._dirty = True

    # -- assignees -------------------------------------------------------------------------
    def person_of(self, issue: dict, e: Optional[Entry]) -> Any:
        user = issue.get("assigned_to")
        if not user:
            return None
        uid = user["id"]
        if e is not None and e.task.synced and e.task.synced.get("_assignee_id") == uid:
            return e.task.synced.get("assignee")
        for key, mapped in self.cfg.users.items():
            if int(mapped) == uid:
                return key
        for key, person in self.registry.people.items():
            if person.name == user.get("name"):
                return key
        for key, person in self.registry.people.items():
            if person.redmine_login and self.client.user_id(person.redmine_login) == uid:
                return key
        return _MISSING

    def user_id_of(self, person: Optional[str]) -> Optional[int]:
        if person is None:
            return None
        if person in self.cfg.users:
            return int(self.cfg.users[person])
        who = self.registry.people.get(person)
        if who is not None and who.redmine_login:
            uid = self.client.user_id(who.redmine_login)
            if uid is not None:
                return uid
        raise SyncError(f"person '{person}' has no Redmine account: give them redmine_login in people: "
                        "or an id under [redmine.users] in icd.toml")

    def remote_values(self, issue: dict, e: Optional[Entry]) -> dict[str, Any]:
        me = issue["id"]
        rels = [(t, o, d) for t, o, d, _ in remote_relations(issue) if (me, t, o) not in self.mirrors
                or (e is not None and any(r.type == t and r.task == o for r in e.task.relations))]
        return {
            "subject": issue.get("subject"), "tracker": (issue.get("tracker") or {}).get("name"),
            "category": (issue.get("category") or {}).get("name"), "status": (issue.get("status") or {}).get("name"),
            "priority": (issue.get("priority") or {}).get("name"), "assignee": self.person_of(issue, e),
            "start": issue.get("start_date"), "due": issue.get("due_date"),
            "estimated_hours": _num(issue.get("estimated_hours")), "done_ratio": issue.get("done_ratio", 0),
            "parent": (issue.get("parent") or {}).get("id"), "relations": canon_relations(rels),
        }

    # -- fetching --------------------------------------------------------------------------
    def fetch_ids(self, ids: Iterable[int], since: Optional[str] = None, what: str = "reading tasks") -> dict[int, dict]:
        ids = sorted(set(ids))
        out: dict[int, dict] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            params: dict[str, Any] = {"issue_id": ",".join(map(str, chunk)), "status_id": "*", "include": "relations"}
            if since:
                params["updated_on"] = ">=" + since
            for issue in self.client.paged("/issues.json", "issues", what=what, **params):
                out[issue["id"]] = issue
        return out

    def project_id(self) -> int:
        cached = self.book.get("project_id")
        if cached and self.book.get("project") == self.cfg.project:
            return int(cached)
        pid = self.client.project(self.cfg.project)["id"]
        self.book["project"], self.book["project_id"] = self.cfg.project, pid
        return pid

    # -- pull ------------------------------------------------------------------------------
    def pull(self, *, full: bool = False, prefer: Optional[str] = None, write: bool = True) -> Report:
        self.check_server(pulling=True)
        report = Report()
        self.client.whoami()
        since = None if full else self.book.get("last_pull")
        pid = self.project_id()
        params: dict[str, Any] = {"project_id": pid, "status_id": "*", "include": "relations"}
        if since:
            params["updated_on"] = ">=" + since
        seen: dict[int, dict] = {}
        for issue in self.client.paged("/issues.json", "issues", what=f"listing the tasks of project '{self.cfg.project}'",
                                       **params):
            seen[issue["id"]] = issue
        rest = [tid for tid in self.by_id if tid not in seen]
        read = rest if full or len(rest) <= self.BY_ID_MAX else self._relation_changes(rest, pid, seen)
        seen.update(self.fetch_ids(read, what="reading the relations of the registry's tasks"))
        report.missing = sorted(t for t in read if t not in seen)
        if report.missing and len(report.missing) == len(self.by_id) and not self.book.get("url"):
            raise SyncError(f"none of the registry's {len(self.by_id)} task ids is in {self.cfg.url}: it is not the "
                            "Redmine they come from; nothing was recorded. Check the URL, or copy the tasks "
                            "there with: icd redmine push --new-server")
        for tid in report.missing:
            report.add(self.missing_line(self.by_id[tid]))
        newest = since
        for issue in seen.values():
            stamp = issue.get("updated_on")
            if stamp and (newest is None or stamp > newest):
                newest = stamp
            e = self.by_id.get(issue["id"])
            if e is None:
                code = self.code_of(issue)
                if code:
                    report.unknown[str(issue["id"])] = f"{code}: {issue.get('subject', '')}"
                continue
            self._merge_into_registry(e, issue, prefer, report)
        unknown = {k: v for k, v in {**(self.book.get("unknown") or {}), **report.unknown}.items()
                   if int(k) not in self.by_id}
        for key, text in sorted(report.unknown.items(), key=lambda kv: int(kv[0])):
            report.add(f"UNKNOWN #{key} carries {text!r} but is not in the registry")
        self.book["unknown"] = unknown
        self.book["url"] = self.cfg.url
        if not report.conflicts and newest:
            # (with a conflict the watermark stays, so the next pull reports it again; a deleted task
            # is found again by the read by id)
            self.book["last_pull"] = newest
        if write and (self._dirty or _clean(self.book) != _clean(self.registry.redmine or {})):
            self.save()
        report.lines.extend(self.notes)
        return report

    def _relation_changes(self, rest: list[int], pid: int, seen: dict[int, dict]) -> list[int]:
        """Redmine does not move updated_on when a relation is added or removed.  With few tasks
        left, they are simply read by id (100 per request); with many, the project's issues that
        have a relation of each type are listed (9 requests, about the tasks with relations, not
        all tasks), and only the tasks that lost every relation, or live in another project, are
        read by id.  (A task deleted in Redmine is found by a full pull, or by push.)"""
        related: dict[int, dict] = {}
        for rtype in RELATION_FILTERS:
            for issue in self.client.paged("/issues.json", "issues", what=f"listing the tasks with '{rtype}' relations",
                                           project_id=pid, status_id="*", include="relations", **{rtype: "*"}):
                related[issue["id"]] = issue
        read = []
        for tid in rest:
            e = self.by_id[tid]
            if tid in related:
                seen[tid] = related[tid]
            elif (e.task.synced or {}).get("_project") != pid or (e.task.synced or {}).get("relations") \
                    or e.task.relations:
                read.append(tid)   # outside the project, or its relations were all removed
        return read

    def missing_line(self, e: Entry) -> str:
        return (f"MISSING #{e.task.id} ({e.iface.code} '{e.task.subject}'): not in {self.cfg.url} (deleted there, or "
                f"not visible to this key); to create it again run: icd redmine push --recreate-deleted; "
                f"to drop it from the registry run: icd redmine forget {e.task.id}")

    def code_of(self, issue: dict) -> Optional[str]:
        for cf in issue.get("custom_fields") or []:
            if (self.cfg.interface_code_field and cf.get("id") == self.cfg.interface_code_field) and cf.get("value"):
                return str(cf["value"])
        m = CODE_RE.search(issue.get("description") or "")
        return m.group(1) if m else None

    def _merge_into_registry(self, e: Entry, issue: dict, prefer: Optional[str], report: Report) -> None:
        local = local_values(e.task)
        remote = self.remote_values(issue, e)
        base = e.task.synced or {}
        new_synced = dict(base) if base else {}
        for name in SYNC_FIELDS:
            lv, rv = local[name], remote[name]
            if rv is _MISSING:
                who = (issue.get("assigned_to") or {}).get("name")
                report.add(f"WARNING #{e.task.id} is assigned in Redmine to '{who}', who is not in people: "
                           "(add them, with redmine_login); assignee left as is")
                new_synced[name] = base.get(name, lv)
                continue
            bv = base.get(name, _MISSING) if base else _MISSING
            if lv == rv:
                new_synced[name] = rv
            elif bv is _MISSING or lv == bv:
                report.add(f"pull #{e.task.id} {name}: {_show(lv)} -> {_show(rv)}")
                self.set_field(e, name, rv)
                report.changed_in_registry += 1
                new_synced[name] = rv
            elif rv == bv:
                new_synced[name] = bv  # a local change waiting for push
            elif prefer == "remote":
                report.add(f"pull #{e.task.id} {name}: {_show(lv)} -> {_show(rv)} (conflict resolved: remote)")
                self.set_field(e, name, rv)
                report.changed_in_registry += 1
                new_synced[name] = rv
            elif prefer == "local":
                new_synced[name] = rv  # keep ours; the next push sends it
            else:
                report.conflicts.append(Conflict(e.task.id, e.iface.code, name, lv, rv, bv))
                new_synced[name] = bv
        for name in PULL_ONLY:
            rv = _num(issue.get(name))
            if rv is not None and rv != _num(getattr(e.task, name)) and (rv or getattr(e.task, name) is not None):
                self.set_field(e, name, rv)
        values = {k: new_synced.get(k) for k in SYNC_FIELDS}
        self.set_synced(e, values, issue)
        for c in report.conflicts:
            if c.task == e.task.id:
                report.add(c.line())

    # -- plan / push ---------------------------------------------------------------------
    def lookups(self, entries: list[Entry]) -> None:
        """Resolve every name the writes need; an unknown name stops everything before a write."""
        statuses, trackers, priorities = self.client.statuses(), self.client.trackers(), self.client.priorities()
        problems = []
        for e in entries:
            t = e.task
            if t.status not in statuses:
                problems.append(f"status '{t.status}' of {e.label} is not a status of this Redmine "
                                f"(it has: {', '.join(statuses)})")
            if t.tracker not in trackers:
                problems.append(f"tracker '{t.tracker}' of {e.label} is not a tracker of this Redmine "
                                f"(it has: {', '.join(trackers)})")
            if t.priority not in priorities:
                problems.append(f"priority '{t.priority}' of {e.label} is unknown to this Redmine")
            category = t.category or (self.cfg.category_name(e.iface.category) if t.role != "upstream" else None)
            if category:
                cats = self.client.categories(t.project or self.cfg.project)
                if category not in cats:
                    problems.append(f"category '{category}' of {e.label} is not a category of project "
                                    f"'{t.project or self.cfg.project}' (it has: {', '.join(cats) or 'none'})")
            if t.assignee:
                try:
                    self.user_id_of(t.assignee)
                except SyncError as exc:
                    problems.append(str(exc))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SyncError(problems[0] + more + "; nothing was sent")

    def payload(self, e: Entry, fields: Iterable[str], values: dict[str, Any], *, create: bool) -> dict:
        t = e.task
        out: dict[str, Any] = {}
        for name in fields:
            v = values[name]
            if name == "subject":
                out["subject"] = v
            elif name == "tracker":
                out["tracker_id"] = self.client.trackers()[v]
            elif name == "status":
                out["status_id"] = self.client.statuses()[v]["id"]
            elif name == "priority":
                out["priority_id"] = self.client.priorities()[v]
            elif name == "category":
                out["category_id"] = self.client.categories(t.project or self.cfg.project)[v] if v else ""
            elif name == "assignee":
                out["assigned_to_id"] = self.user_id_of(v) if v else ""
            elif name == "start":
                out["start_date"] = v or ""
            elif name == "due":
                out["due_date"] = v or ""
            elif name == "estimated_hours":
                out["estimated_hours"] = v if v is not None else ""
            elif name == "done_ratio":
                out["done_ratio"] = v
            elif name == "parent":
                out["parent_issue_id"] = v or ""
        if create:
            out["project_id"] = t.project or self.cfg.project
            out["description"] = self.description(e)
            if self.cfg.interface_code_field:
                out["custom_fields"] = [{"id": self.cfg.interface_code_field, "value": e.iface.code}]
            out = {k: v for k, v in out.items() if v != ""}
        return out

    def description(self, e: Entry) -> str:
        iface, t = e.iface, e.task
        if t.role == "parent":
            head = f"Interface {iface.code}: {iface.title}"
        elif t.role == "upstream":
            head = f"Upstream task of interface {iface.code}: {iface.title}"
        else:
            head = f"Interface {iface.code}, lifecycle stage: {t.stage}"
        return f"{head}\n\n{iface.description}".strip() + "\n\n(managed by icd redmine; registry interfaces.yaml)"

    def desired(self, e: Entry) -> dict[str, Any]:
        values = local_values(e.task)
        if values["category"] is None and e.task.role != "upstream":
            values["category"] = self.cfg.category_name(e.iface.category)
        if values["parent"] is None and e.task.role == "stage":
            parent = next((x.task.id for x in self.entries if x.iface is e.iface and x.task.role == "parent"), None)
            values["parent"] = parent
        return values

    def _to_create(self) -> list[Entry]:
        order = {"upstream": 0, "parent": 1, "stage": 2}
        return sorted((e for e in self.entries if not e.task.id), key=lambda e: order[e.task.role])

    def _locally_changed(self) -> list[Entry]:
        out = []
        for e in self.entries:
            if not e.task.id:
                continue
            if not e.task.synced:
                out.append(e)
                continue
            local = local_values(e.task)
            if any(local[k] != e.task.synced.get(k, _MISSING) for k in SYNC_FIELDS):
                out.append(e)
        return out

    def push(self, *, dry_run: bool = False, prefer: Optional[str] = None, new_server: bool = False,
             recreate_deleted: bool = False) -> Report:
        report = self._push(dry_run=dry_run, prefer=prefer, new_server=new_server, recreate_deleted=recreate_deleted)
        report.lines.extend(self.notes)
        return report

    def _push(self, *, dry_run: bool, prefer: Optional[str], new_server: bool, recreate_deleted: bool) -> Report:
        report = Report()
        if new_server and self.book.get("url") == self.cfg.url and not self.book.get("migration"):
            report.add(f"the registry's ids already belong to {self.cfg.url}: pushing normally")
            new_server = False
        self.check_server(new_server)
        if new_server and not dry_run and self.by_id:
            self.migrate(report)
        elif new_server and dry_run:
            for e in self.entries:
                report.add(f"create (copy of {e.label}) in {self.cfg.url}; its id will be rewritten")
            return report
        # even with nothing to send: a wrong key or an unreachable server is said now, not at the next change
        self.client.whoami()
        self.resolve_pending(report)
        creates, changed = self._to_create(), self._locally_changed()
        deleted: list[Entry] = []
        if recreate_deleted:
            everything = self.fetch_ids(list(self.by_id), what="looking for tasks deleted in Redmine")
            self._new_server_check([e.task.id for e in self.entries if e.task.id and e.task.id not in everything],
                                   everything)
            deleted = [e for e in self.entries if e.task.id and e.task.id not in everything]
            gone = {id(e) for e in deleted}
            changed = [e for e in changed if id(e) not in gone]
        if not creates and not changed and not deleted:
            report.add("nothing to push: the registry has no change since the last sync")
            if self._dirty and not dry_run:
                self.save()
            return report
        self.lookups(creates + changed + deleted)
        remote = self.fetch_ids([e.task.id for e in changed], what="reading the tasks to update")
        missing = [e.task.id for e in changed if e.task.id not in remote]
        if missing:
            self._new_server_check(missing, remote)
            for tid in missing:
                report.add(self.missing_line(self.by_id[tid]) + "; its changes were not sent")
            changed = [e for e in changed if e.task.id not in missing]
        for e in deleted:
            report.add(f"recreate #{e.task.id} ({e.iface.code} '{e.task.subject}'), deleted in Redmine: "
                       "a new task with a new id")
        # field-by-field decisions for existing tasks
        updates: list[tuple[Entry, dict[str, Any], dict]] = []
        for e in changed:
            issue = remote[e.task.id]
            local, rv = local_values(e.task), self.remote_values(issue, e)
            base = e.task.synced or {}
            send: dict[str, Any] = {}
            theirs: set[str] = set()   # fields where Redmine's value stands (remote change, conflict)
            for name in SYNC_FIELDS:
                lv, r, b = local[name], rv[name], base.get(name, _MISSING) if base else _MISSING
                if r is _MISSING:
                    r = b
                if lv == r:
                    continue
                if b is _MISSING or r == b or prefer == "local":
                    send[name] = lv
                    report.add(f"update #{e.task.id} {name}: {_show(r)} -> {_show(lv)}")
                elif lv == b:
                    theirs.add(name)
                    continue  # a remote change: pull brings it
                elif prefer == "remote":
                    report.add(f"registry #{e.task.id} {name}: {_show(lv)} -> {_show(r)} (conflict resolved: remote)")
                    if not dry_run:
                        self.set_field(e, name, r)
                else:
                    theirs.add(name)
                    c = Conflict(e.task.id, e.iface.code, name, lv, r, b)
                    report.conflicts.append(c)
                    report.add(c.line())
            updates.append((e, send, theirs))
        if dry_run:
            creates = creates + deleted
        for e in creates:
            d = self.desired(e)
            report.add(f"create {e.iface.code} {e.task.role} '{e.task.subject}'")
            for k, v in d.items():
                if k != "subject" and (v not in (None, []) or k == "done_ratio"):
                    report.add(f"    {k}: {_show(v)}")
        if dry_run:
            return report
        created_issues: dict[int, dict] = {}
        renamed = self._forget_ids(deleted)
        order = {"upstream": 0, "parent": 1, "stage": 2}
        for e in sorted(creates + deleted, key=lambda x: order[x.task.role]):
            new_id = self.create(e, report)
            created_issues[new_id] = {}
            if id(e) in renamed:
                self._rewrite_references(renamed[id(e)], new_id)
        touched = set(created_issues)
        for e, send, issue in updates:
            fields = [k for k in send if k != "relations"]
            if fields:
                payload = self.payload(e, fields, send, create=False)
                self.client.put(f"/issues/{e.task.id}.json", {"issue": payload}, what=f"updating {e.label}")
                report.updated.add(e.task.id)
            touched.add(e.task.id)
        # relations: add what the registry lists and Redmine lacks; remove what was removed locally
        done_pairs: set[tuple[int, int]] = set()
        for e in self.entries:
            if not e.task.id:
                continue
            if e.task.id in created_issues:
                current = []
            elif e.task.id in remote:
                current = remote_relations(remote[e.task.id])
            else:
                continue
            want = {(r.type, r.task, r.delay if r.type in ("follows", "precedes") else None) for r in e.task.relations}
            have = {(t, o, d if t in ("follows", "precedes") else None): rid for t, o, d, rid in current}
            base_rel = {tuple(r) for r in ((e.task.synced or {}).get("relations") or [])}
            for rel in sorted(want - set(have), key=lambda r: (r[1], r[0])):
                if rel[1] in missing:
                    continue  # its target was deleted in Redmine (said above)
                pair = tuple(sorted((e.task.id, rel[1])))
                if pair in done_pairs or (list(rel) in [list(x) for x in base_rel] and prefer != "local"):
                    continue  # done already, or removed in Redmine since the last sync (pull brings that)
                body = {"issue_to_id": rel[1], "relation_type": rel[0]}
                if rel[2] is not None:
                    body["delay"] = rel[2]
                self.client.post(f"/issues/{e.task.id}/relations.json", {"relation": body},
                                 what=f"relating {e.label} ({rel[0]} #{rel[1]})")
                done_pairs.add(pair)
                touched.update({e.task.id, rel[1]})
                report.add(f"relation #{e.task.id} {_rel_text(list(rel))}")
            for rel, rid in have.items():
                if rel not in want and rel in base_rel:
                    self.client.delete(f"/relations/{rid}.json", what=f"removing relation {rid} of {e.label}")
                    touched.update({e.task.id, rel[1]})
                    report.add(f"relation removed #{e.task.id} {_rel_text(list(rel))}")
        # settle: Redmine may have moved what we set (a "follows" relation reschedules the following
        # task; a workflow may drop a status): send the registry's values once more, then re-read
        intended = {i: set(SYNC_FIELDS) for i in created_issues}
        for e, send, theirs in updates:
            intended.setdefault(e.task.id, set()).update(set(SYNC_FIELDS) - theirs)
        fresh = self.fetch_ids([i for i in touched if i in self.by_id], what="re-reading the pushed tasks")
        again = []
        for tid, names in intended.items():
            e, issue = self.by_id[tid], fresh.get(tid)
            if issue is None:
                continue
            rv, lv = self.remote_values(issue, e), local_values(e.task)
            wrong = [k for k in names if k not in ("relations", "assignee") and rv[k] != lv[k]]
            if wrong:
                self.client.put(f"/issues/{tid}.json", {"issue": self.payload(e, wrong, lv, create=False)},
                                what=f"setting {', '.join(wrong)} of {e.label} again")
                again.append(tid)
        if again:
            fresh.update(self.fetch_ids(again, what="re-reading the pushed tasks"))
        self.record(fresh, report, intended)
        return report

    def _new_server_check(self, missing: list[int], found: dict) -> None:
        """Tasks not found: deleted ones (said per task), unless the server knows none of the ids."""
        if not missing or found:
            return
        probe = self.fetch_ids(sorted(self.by_id)[:BATCH], what="checking that this Redmine knows the registry's ids")
        if probe:
            return
        shown = ", ".join(f"#{i}" for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise SyncError(f"{len(missing)} task(s) of the registry are not in {self.cfg.url} ({shown}), nor any other "
                        "of its tasks; if this is a new Redmine, run: icd redmine push --new-server (creates them and "
                        "rewrites the ids); nothing was sent")

    def _forget_ids(self, entries: list[Entry]) -> dict[int, Optional[int]]:
        """Tasks deleted in Redmine become planned tasks again (the model only; create() writes the new id)."""
        old = {}
        for e in entries:
            old[id(e)] = e.task.id
            self.by_id.pop(e.task.id, None)
            e.task.id = None
            e.task.synced = None
        return old

    def _rewrite_references(self, old: int, new: int) -> None:
        """Parents and relation targets that named a recreated task name its new id."""
        for x in self.entries:
            if x.task.parent == old:
                self.set_field(x, "parent", new)
            if any(r.task == old for r in x.task.relations):
                self.set_field(x, "relations", [(r.type, new if r.task == old else r.task, r.delay)
                                                for r in x.task.relations])

    def record(self, fresh: dict[int, dict], report: Report, intended: Optional[dict] = None) -> None:
        """Store what Redmine now has for the tasks this push touched as their synced state."""
        newest = None
        for tid, issue in fresh.items():
            e = self.by_id[tid]
            remote = self.remote_values(issue, e)
            local = local_values(e.task)
            if "status" in (intended or {}).get(tid, ()) and remote["status"] != local["status"] and not any(c.task == tid and c.field == "status" for c in report.conflicts):
                report.add(f"WARNING #{tid}: Redmine kept status {remote['status']!r} instead of {local['status']!r} "
                           "(its workflow does not allow that change for this user)")
            # fields this push did not decide (remote-only changes, conflicts) keep their old base
            base = e.task.synced or {}
            values = {}
            for name in SYNC_FIELDS:
                if remote[name] is _MISSING:
                    values[name] = base.get(name, local[name])
                elif remote[name] == local[name] or not base:
                    values[name] = remote[name]
                else:
                    values[name] = base.get(name, remote[name])
            self.set_synced(e, values, issue)
            stamp = issue.get("updated_on")
            if stamp and (newest is None or stamp > newest):
                newest = stamp
        self.book["url"] = self.cfg.url
        self.book.pop("pending", None)
        if newest and len(fresh) == len(self.by_id):
            # every task was just read: changes older than the newest stamp are all in the registry
            self.book["last_pull"] = max(newest, self.book.get("last_pull") or newest)
        self.save()

    def create(self, e: Entry, report: Report) -> int:
        """Create one task; its id is in the registry before the next creation starts."""
        values = self.desired(e)
        self.book["pending"] = [{"code": e.iface.code, "subject": e.task.subject}]
        self.save()  # also persists the previous task's id
        fields = [k for k in SYNC_FIELDS if k != "relations" and values[k] is not None]
        payload = self.payload(e, fields, values, create=True)
        issue = self.client.post("/issues.json", {"issue": payload}, what=f"creating {e.label}")["issue"]
        new_id = issue["id"]
        if os.environ.get("ICD_REDMINE_CRASH_AFTER_CREATE"):  # test hook: die in the create->write window
            n = int(os.environ["ICD_REDMINE_CRASH_AFTER_CREATE"])
            self._crash_count = getattr(self, "_crash_count", 0) + 1
            if self._crash_count >= n:
                os._exit(75)
        self.adopt(e, new_id, values)
        report.created.append(new_id)
        report.add(f"created #{new_id} for {e.iface.code} '{e.task.subject}'")
        self.fix_dropped(e, issue, values, report)
        return new_id

    def adopt(self, e: Entry, new_id: int, values: dict[str, Any]) -> None:
        self.set_field(e, "id", new_id)
        self.by_id[new_id] = e
        if e.task.parent is None and values.get("parent"):
            self.set_field(e, "parent", values["parent"])
        if e.task.category is None and values.get("category"):
            self.set_field(e, "category", values["category"])
        self.book.pop("pending", None)

    def fix_dropped(self, e: Entry, issue: dict, values: dict[str, Any], report: Report) -> None:
        """Redmine may drop a status (workflow) or default a start date: set them again, then re-read."""
        got = self.remote_values(issue, e)
        wrong = [k for k in SYNC_FIELDS if k not in ("relations", "assignee") and got[k] != values[k]]
        if not wrong:
            return
        self.client.put(f"/issues/{e.task.id}.json", {"issue": self.payload(e, wrong, values, create=False)},
                        what=f"setting {', '.join(wrong)} of {e.label}")
        report.updated.add(e.task.id)

    def resolve_pending(self, report: Report) -> None:
        """A previous push died between creating a task and recording its id: find and adopt it."""
        pending = self.book.get("pending") or []
        if not pending:
            return
        for item in pending:
            e = next((x for x in self.entries if not x.task.id and x.iface.code == item.get("code")
                      and x.task.subject == item.get("subject")), None)
            if e is None:
                continue
            found = self.search(e.iface.code, e.task.subject)
            if found:
                new_id = min(found)
                self.adopt(e, new_id, self.desired(e))
                report.add(f"adopted #{new_id} for {e.iface.code} '{e.task.subject}' (created by an interrupted push)")
                if len(found) > 1:
                    report.add(f"WARNING duplicates in Redmine for {e.iface.code} '{e.task.subject}': "
                               + ", ".join(f"#{i}" for i in sorted(found)))
        self.book.pop("pending", None)
        self._dirty = True

    def search(self, code: str, subject: str) -> list[int]:
        params: dict[str, Any] = {"project_id": self.cfg.project, "status_id": "*"}
        if self.cfg.interface_code_field:
            params[f"cf_{self.cfg.interface_code_field}"] = code
        else:
            params["description"] = "~" + code
        return [i["id"] for i in self.client.paged("/issues.json", "issues", what=f"searching tasks of {code}", **params)
                if i.get("subject") == subject and self.code_of(i) == code]

    # -- copy to a new Redmine -------------------------------------------------------------
    def migrate(self, report: Report) -> None:
        """Create every task in a Redmine that does not know the ids, then rewrite the ids."""
        mig = self.book.get("migration") or {}
        if mig.get("url") != self.cfg.url:
            mig = {"url": self.cfg.url, "ids": {}}
        ids: dict[str, int] = mig["ids"]
        self.client.whoami()
        order = {"upstream": 0, "parent": 1, "stage": 2}
        todo = sorted((e for e in self.entries if e.task.id), key=lambda e: order[e.task.role])
        self.lookups(todo)
        for e in todo:
            old = e.task.id
            if str(old) in ids:
                continue
            values = self.desired(e)
            values["parent"] = ids.get(str(values["parent"])) if values["parent"] else None
            if values["parent"] is None and e.task.parent:
                raise SyncError(f"parent #{e.task.parent} of {e.label} was not copied")
            found = self.search(e.iface.code, e.task.subject) if mig.get("pending") == [e.iface.code, e.task.subject] else []
            if found:
                ids[str(old)] = min(found)
            else:
                mig["pending"] = [e.iface.code, e.task.subject]
                self.book["migration"] = mig
                self.save()
                fields = [k for k in SYNC_FIELDS if k != "relations" and values[k] is not None]
                issue = self.client.post("/issues.json", {"issue": self.payload(e, fields, values, create=True)},
                                         what=f"copying {e.label}")["issue"]
                ids[str(old)] = issue["id"]
                tmp = Entry(e.iface, e.task.model_copy(update={"id": issue["id"]}), e.loc)
                self.fix_dropped(tmp, issue, values, report)
            report.add(f"copied #{old} -> #{ids[str(old)]} ({e.iface.code} '{e.task.subject}')")
        mig.pop("pending", None)
        # one write rewrites every id, parent and relation target
        for e in self.entries:
            if e.task.id:
                self.set_field(e, "id", ids[str(e.task.id)])
            if e.task.parent and str(e.task.parent) in ids:
                self.set_field(e, "parent", ids[str(e.task.parent)])
            if e.task.relations:
                rels = [(r.type, ids.get(str(r.task), r.task), r.delay) for r in e.task.relations]
                self.set_field(e, "relations", rels)
            if e.task.synced:
                e.task.synced = None
                self.doc.set(e.loc + ("synced",), None)
        self.book = {"url": self.cfg.url, "previous_ids": {k: v for k, v in ids.items()}}
        self.save()
        # start over from the rewritten file
        fresh = Sync(self.path, self.cfg, self.client)
        self.__dict__.update(fresh.__dict__)


def _sync_owned(loc: tuple) -> bool:
    """Fields only the sync writes: its value always replaces the file's when a hand edit is merged."""
    return loc[:1] == ("redmine",) or (len(loc) == 5 and loc[-1] in ("id", "synced", "updated_on"))


def _clean(book: dict) -> dict:
    return {k: v for k, v in book.items() if v not in (None, {}, [])}


def _parse_time(value: Optional[str]) -> Optional[dt.datetime]:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def scaffold(path: Path, codes: Iterable[str], stages: Optional[Iterable[str]] = None) -> Report:
    """Add to the registry the planned tasks an interface's lifecycle needs (no Redmine access):
    a parent task if it has none, and one subtask per lifecycle stage that has no task yet.
    `plan` then shows them and `push` creates them."""
    from ..model import STAGE_TITLES, STAGES

    path = Path(path)
    loaded = require_valid(load(path, check_modules=False))
    wanted = list(stages) if stages else list(STAGES)
    for s in wanted:
        if s not in STAGES:
            raise SyncError(f"unknown stage '{s}'; the stages are: {', '.join(STAGES)}")
    doc = YamlDoc.read(path)
    report = Report()
    positions = {iface.code: i for i, iface in enumerate(loaded.registry.interfaces)}
    for code in codes:
        if code not in positions:
            raise SyncError(f"interface {code} is not in the registry")
        i = positions[code]
        iface = loaded.registry.interfaces[i]
        new: list[dict] = []
        if not any(t.role == "parent" for t in iface.tasks):
            new.append({"subject": f"Implementation of {iface.title} ({code})", "role": "parent",
                        "stage": "algorithms", "status": "New"})
        have = {t.stage for t in iface.tasks if t.role == "stage"}
        for s in wanted:
            if s not in have:
                new.append({"subject": STAGE_TITLES[s], "role": "stage", "stage": s, "status": "New"})
        for item in new:
            doc.append_item(("interfaces", i, "tasks"), item)
            report.add(f"planned {code} {item['role']} '{item['subject']}'")
        if not new:
            report.add(f"{code}: every stage already has a task")
    if any(l.startswith("planned") for l in report.lines):
        doc.write(path)
    return report


def forget(path: Path, target: str) -> Report:
    """Remove one task from the registry (no Redmine access): the answer to a task deleted in
    Redmine that should stay deleted.  ``target`` is its id (``11108`` or ``#11108``) or
    ``CODE#stage`` (the interface's only task of that stage; ``CODE#parent`` for its parent).
    Other tasks' parent and relations that named it are cleared."""
    path = Path(path)
    loaded = require_valid(load(path, check_modules=False))
    entries = [Entry(iface, task, ("interfaces", i, "tasks", k))
               for i, iface in enumerate(loaded.registry.interfaces) for k, task in enumerate(iface.tasks)]
    text = target.strip().lstrip("#")
    if text.isdigit():
        found = [e for e in entries if e.task.id == int(text)]
    elif "#" in text:
        code, what = text.split("#", 1)
        found = [e for e in entries if e.iface.code == code and (e.task.stage == what if what != "parent"
                                                                 else e.task.role == "parent")]
    else:
        raise SyncError(f"'{target}' names no task: give its id (e.g. 11108) or CODE#stage (e.g. I-DATA-COM-3201#integration)")
    if not found:
        raise SyncError(f"no task {target} in {path}")
    if len(found) > 1:
        raise SyncError(f"{target} names {len(found)} tasks ({', '.join(e.label for e in found)}): give the id instead")
    e = found[0]
    doc = YamlDoc.read(path)
    report = Report()
    tid = e.task.id
    if tid:
        for x in entries:
            if x is e:
                continue
            if x.task.parent == tid:
                doc.set(x.loc + ("parent",), None)
                report.add(f"cleared the parent of {x.label} (it was #{tid})")
            kept = [r for r in x.task.relations if r.task != tid]
            if len(kept) != len(x.task.relations):
                doc.set(x.loc + ("relations",), [{"type": r.type, "task": r.task, **({"delay": r.delay} if r.delay is not None else {})}
                                                 for r in kept])
                report.add(f"removed the relations of {x.label} to #{tid}")
    doc.delete_item(e.loc[:3], e.loc[3])
    doc.write(path)
    report.lines.insert(0, f"forgot {e.label}: removed from the registry (Redmine is not touched)")
    return report
