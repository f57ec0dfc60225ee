"""Load and validate a registry file, reporting every problem at once with file:line:column.

Each record (person, ICD, interface) is validated on its own so that one mistake does not
hide the others; cross-references (people, ICDs, related codes, parent tasks, modules)
are then checked on the records that parsed.  Indices are built once, so the cost is
linear in the size of the registry.
"""
from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from pydantic import ValidationError

from .diagnostics import Diagnostic
from .loader import Positions, YamlError, load_yaml
from .perf import without_gc
from .model import (
    ICD_NAMES, Icd, Interface, Person, Registry, Task,
)

TOP_LEVEL = ("schema_version", "people", "icds", "interfaces", "redmine")


@dataclass
class Loaded:
    """A registry as read from a file: the model, where things are, and what is wrong."""

    path: Path
    registry: Registry
    positions: Positions
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    @cached_property
    def index(self) -> "Index":
        return Index(self.registry)


class Index:
    """Look-ups over a registry, built once (dicts), so nothing searches inside a loop."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.by_code: dict[str, Interface] = {}
        self.by_icd: dict[str, list[Interface]] = defaultdict(list)
        self.tasks_by_id: dict[int, tuple[Interface, Task]] = {}
        self.by_person: dict[str, list[Interface]] = defaultdict(list)
        for iface in registry.interfaces:
            self.by_code.setdefault(iface.code, iface)
            self.by_icd[iface.icd].append(iface)
            people = {p.person for p in iface.provided_by if p.person}
            for task in iface.tasks:
                if task.id is not None:
                    self.tasks_by_id.setdefault(task.id, (iface, task))
                if task.assignee:
                    people.add(task.assignee)
            for key in people:
                self.by_person[key].append(iface)
        for name, icd in registry.icds.items():
            for resp in (*icd.responsibles, *icd.contributors):
                if resp.person:
                    for iface in self.by_icd.get(name, []):
                        if iface not in self.by_person[resp.person]:
                            self.by_person[resp.person].append(iface)

    def person_name(self, key: Optional[str]) -> str:
        if key is None:
            return "nobody"
        person = self.registry.people.get(key)
        return person.name if person else key


@without_gc
def load(path: str | Path, *, check_modules: bool = True, text: str | None = None,
         module_loader: Callable[[str], Any] | None = None) -> Loaded:
    """Read and validate a registry file.  Never raises for a user's mistake; never writes."""
    path = Path(path)
    shown = str(path)
    try:
        data, positions, diags = load_yaml(shown, text=text)
    except YamlError as exc:
        return Loaded(path, Registry(), Positions(shown, {(): (1, 1)}, {}), list(exc.diagnostics))
    checker = _Checker(shown, positions, diags)
    registry = checker.build(data)
    if check_modules and checker.is_mapping:  # a file that is no registry at all has one error, that one
        checker.check_modules(registry, path.parent, module_loader)
    return Loaded(path, registry, positions, sorted(set(checker.diags), key=lambda d: (d.line, d.column, d.message)))


class _Checker:
    def __init__(self, file: str, positions: Positions, diags: list[Diagnostic]):
        self.file = file
        self.pos = positions
        self.diags = list(diags)
        self._locs_of_interfaces: list[int] = []
        self.person_keys: Optional[set] = None  # the keys under 'people:', valid records or not
        # what the file holds, also records with errors; empty until build() has read a mapping
        self.raw_code_list: list[tuple[int, Any]] = []
        self.raw_codes: set = set()
        self.raw_task_ids: set = set()
        self.raw_icd_names: set = set()
        self.people: dict = {}
        self.is_mapping = False  # False: the file is not a registry at all (empty, a list, a value)

    # -- reporting -------------------------------------------------------------------
    def error(self, loc: tuple, message: str, kind: str = "error", key: bool = False) -> None:
        line, col = self.pos.of(loc, key=key)
        self.diags.append(Diagnostic(self.file, line, col, message, kind))

    def pydantic_errors(self, base: tuple, exc: ValidationError, record: str, root=None, raw: Any = None) -> None:
        errors = exc.errors(include_url=False)
        # a misspelt field shows up twice (unknown 'categroy', missing 'category'): say it once
        extra = {(tuple(e["loc"][:-1]), e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"}
        errors = [e for e in errors if not (e["type"] == "missing" and any(
            parent == tuple(e["loc"][:-1]) and difflib.get_close_matches(str(e["loc"][-1]), [str(name)], cutoff=0.6)
            for parent, name in extra))]
        for err in errors:
            loc = tuple(err["loc"])
            self.error(base + tuple(p for p in loc if p != "[key]"), _human(err, _task_label(record, loc, raw), root),
                       "schema", key=err["type"] == "extra_forbidden")

    # -- records ---------------------------------------------------------------------
    def build(self, data: Any) -> Registry:
        if data is None:
            self.error((), "the registry is empty (no YAML data, only blank lines or comments): "
                       "expected the sections people, icds and interfaces", "yaml-structure")
            return Registry()
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"the single value {str(data)[:40]!r}"
            self.error((), f"the registry must be a mapping with the sections people, icds and interfaces "
                       f"(key: value lines), not {kind}", "yaml-structure")
            return Registry()
        self.is_mapping = True
        for key in data:
            if key not in TOP_LEVEL:
                self.error((key,), f"unknown section '{key}'{_did_you_mean(key, TOP_LEVEL)}; "
                           f"the registry has: {', '.join(TOP_LEVEL)}", "schema", key=True)
        if data.get("schema_version", 1) != 1:
            self.error(("schema_version",), f"schema_version {data.get('schema_version')!r} is not supported; this tool reads version 1")
        people = self._section(data, "people", Person, "person")
        raw_people = data.get("people")
        # a person whose record has an error is still defined: references to it are not 'unknown'
        self.person_keys = set(raw_people) if isinstance(raw_people, dict) else set()
        icds = self._section(data, "icds", Icd, "ICD")
        raw_icds = data.get("icds")
        self.raw_icd_names = set(raw_icds) if isinstance(raw_icds, dict) else set()
        for name in self.raw_icd_names - set(icds):  # an ICD that failed its schema: still check its people
            self._salvage_people(("icds", name), raw_icds[name], people)
        for name in (raw_icds if isinstance(raw_icds, dict) else {}):  # also one with an error in its record
            if name not in ICD_NAMES:
                self.error(("icds", name), f"unknown ICD '{name}'{_did_you_mean(name, ICD_NAMES)}; "
                           f"the ICDs are {', '.join(ICD_NAMES)}", "schema", key=True)
                icds.pop(name, None)
        interfaces: list[Interface] = []
        raw = data.get("interfaces") or []
        if not isinstance(raw, list):
            self.error(("interfaces",), "'interfaces' must be a list of interfaces (each item starting with '- code: ...')")
            raw = []
        validate = Interface.model_validate
        self.raw_code_list = [(i, item.get("code")) for i, item in enumerate(raw) if isinstance(item, dict)]
        self.raw_codes = {code for _, code in self.raw_code_list if isinstance(code, str)}
        self.raw_task_ids = {t.get("id") for item in raw if isinstance(item, dict)
                             for t in (item.get("tasks") if isinstance(item.get("tasks"), list) else [])
                             if isinstance(t, dict) and isinstance(t.get("id"), (int, str, type(None)))}
        self.people = people
        for i, item in enumerate(raw):
            try:
                interfaces.append(validate(item))
                self._locs_of_interfaces.append(i)
            except ValidationError as exc:
                code = item.get("code") if isinstance(item, dict) else None
                self.pydantic_errors(("interfaces", i), exc, f"interface {code}" if code else f"interface #{i + 1}",
                                     Interface, raw=item)
                self._salvage_tasks(("interfaces", i), item)
        redmine = data.get("redmine")
        if redmine is not None and not isinstance(redmine, dict):
            self.error(("redmine",), "'redmine' (written by `icd redmine`) must be a mapping (key: value), "
                       f"not {type(redmine).__name__}; remove it to start the sync afresh")
            redmine = None
        registry = Registry.model_construct(schema_version=1, people=people, icds=icds, interfaces=interfaces,
                                            redmine=redmine)
        self.cross_check(registry)
        return registry

    def _section(self, data: dict, name: str, model, what: str) -> dict:
        raw = data.get(name) or {}
        if not isinstance(raw, dict):
            self.error((name,), f"'{name}' must be a mapping of key: {what}")
            return {}
        out = {}
        validate = model.model_validate
        for key, item in raw.items():
            try:
                out[key] = validate(item)
            except ValidationError as exc:
                self.pydantic_errors((name, key), exc, f"{what} '{key}'", model)
        return out

    # -- cross references ------------------------------------------------------------
    def cross_check(self, reg: Registry) -> None:
        people = reg.people
        for name, icd in reg.icds.items():
            for section in ("responsibles", "contributors"):
                for j, resp in enumerate(getattr(icd, section)):
                    self._person(("icds", name, section, j, "person"), resp.person, people)
        # duplicate codes, over every record (also those that failed their schema: no error hides another)
        seen_codes: dict[str, int] = {}
        for pos, code in self.raw_code_list:
            if not isinstance(code, str):
                continue
            if code in seen_codes:
                first = self.pos.of(("interfaces", seen_codes[code], "code"))[0]
                self.error(("interfaces", pos, "code"), f"duplicate interface code {code} (first used at line {first})")
            else:
                seen_codes[code] = pos
        seen_tasks: dict[int, str] = {}
        for pos, iface in zip(self._locs_of_interfaces, reg.interfaces):
            base = ("interfaces", pos)
            if self.raw_icd_names and iface.icd not in self.raw_icd_names:  # an invalid ICD is reported once, as itself
                self.error(base + ("icd",), f"interface {iface.code} belongs to ICD {iface.icd}, which is not defined under 'icds'")
            self._check_refs(base, iface.code, [p.person for p in iface.provided_by], iface.related)
            parents = [t for t in iface.tasks if t.role == "parent"]
            if len(parents) > 1:
                self.error(base + ("tasks",), f"interface {iface.code} has {len(parents)} parent tasks; it may have one")
            for k, task in enumerate(iface.tasks):
                tloc = base + ("tasks", k)
                if task.id is not None:
                    if task.id in seen_tasks:
                        self.error(tloc + ("id",), f"Redmine task #{task.id} is listed twice (also under {seen_tasks[task.id]})")
                    else:
                        seen_tasks[task.id] = iface.code
                self._check_task(tloc, task)

    def _check_refs(self, base: tuple, code: Any, persons: list, related: list) -> None:
        """The people who provide an interface and its related codes exist."""
        for j, person in enumerate(persons):
            if isinstance(person, str):
                self._person(base + ("provided_by", j, "person"), person, self.people)
        all_codes = self.raw_codes
        for j, other in enumerate(related):
            if not isinstance(other, str):
                continue
            if other == code:
                self.error(base + ("related", j), f"interface {code} lists itself as related")
            elif other not in all_codes:
                self.error(base + ("related", j), f"related interface {other} is not in the registry"
                           f"{_did_you_mean(other, all_codes)}")

    def _check_task(self, tloc: tuple, task: Task) -> None:
        """Checks of one task against the rest of the registry."""
        label = f"task #{task.id}" if task.id else f"task '{task.subject}'"
        self._person(tloc + ("assignee",), task.assignee, self.people, what="assignee")
        if task.start and task.due and task.due < task.start:
            self.error(tloc + ("due",), f"{label}: due date {task.due} is before its start date {task.start}")
        if task.parent is not None and task.parent not in self.raw_task_ids:
            self.error(tloc + ("parent",), f"{label}: parent task #{task.parent} is not in the registry")
        if task.parent is not None and task.parent == task.id:
            self.error(tloc + ("parent",), f"{label} is its own parent")
        for r, rel in enumerate(task.relations):
            if rel.task == task.id:
                self.error(tloc + ("relations", r, "task"), f"{label} is related to itself")

    def _salvage_tasks(self, base: tuple, item: Any) -> None:
        """An interface failed its schema: still check its references and the tasks that parse,
        so no error hides another."""
        if isinstance(item, dict):
            providers = item.get("provided_by")
            related = item.get("related")
            self._check_refs(base, item.get("code"),
                             [p.get("person") if isinstance(p, dict) else None
                              for p in (providers if isinstance(providers, list) else [])],
                             related if isinstance(related, list) else [])
        tasks = item.get("tasks") if isinstance(item, dict) else None
        for k, raw_task in enumerate(tasks if isinstance(tasks, list) else []):
            try:
                task = Task.model_validate(raw_task)
            except ValidationError as exc:
                # already reported through the interface; drop the faulty fields and check the rest
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
                if not isinstance(raw_task, dict) or not bad:
                    continue
                try:
                    task = Task.model_validate({f: v for f, v in raw_task.items() if f not in bad})
                except ValidationError:
                    continue
            self._check_task(base + ("tasks", k), task)

    def _salvage_people(self, base: tuple, item: Any, people: dict) -> None:
        """The people named by the responsibles and contributors of an ICD that failed its schema."""
        for section in ("responsibles", "contributors"):
            entries = item.get(section) if isinstance(item, dict) else None
            for j, entry in enumerate(entries if isinstance(entries, list) else []):
                key = entry.get("person") if isinstance(entry, dict) else None
                if isinstance(key, str):
                    self._person(base + (section, j, "person"), key, people)

    def _person(self, loc: tuple, key: Optional[str], people: dict, what: str = "person") -> None:
        known = people if self.person_keys is None else self.person_keys
        if key is not None and key not in known:
            self.error(loc, f"unknown {what} '{key}'{_did_you_mean(key, known)}; people are defined under 'people:'")

    # -- calibration modules -----------------------------------------------------------
    def check_modules(self, reg: Registry, root: Path, module_loader) -> None:
        from . import modules as modmod

        loader = module_loader or modmod.contract_of
        claimed: dict[str, str] = {}
        codes = self.raw_codes  # every interface written in the file, also one with another error
        test_roots = _test_roots(root)
        for pos, iface in zip(self._locs_of_interfaces, reg.interfaces):
            base = ("interfaces", pos)
            for j, test in enumerate(iface.tests):
                if not any((folder / test.split("::")[0]).exists() for folder in test_roots):
                    self.error(base + ("tests", j), f"test file {test} of {iface.code} does not exist "
                               f"(looked in {', '.join(str(folder) for folder in test_roots)})")
            if not iface.module:
                continue
            try:
                contract = loader(iface.module)
            except Exception as exc:  # noqa: BLE001 - reported to the user, never raised
                self.error(base + ("module",), f"module {iface.module} of {iface.code} cannot be used: {modmod.reason(exc)}")
                continue
            if iface.code not in contract.codes:
                self.error(base + ("module",), f"module {iface.module} does not declare {iface.code} "
                           f"(its CONTRACT lists {', '.join(contract.codes) or 'no code'})")
        # the other direction (a module claiming a code the registry lacks) concerns the project's
        # own registry only: the one that sits beside the calib/ package
        if module_loader is None and (root / "calib").is_dir():
            for module_name, contract in modmod.discover(root).items():
                for code in contract.codes:
                    if code not in codes:  # placed at the 'interfaces:' key, where it would be added
                        self.error(("interfaces",), f"calibration module {module_name} claims interface {code}, "
                                   "which is not in the registry", "module", key=True)
                    claimed.setdefault(code, module_name)


def _test_roots(root: Path) -> list[Path]:
    """Where test paths (relative to the project's root) may be: beside the registry, in the
    current folder, or beside the ``calib`` package in use (a copy of the registry elsewhere)."""
    import importlib.util

    folders = [root, Path.cwd()]
    try:
        spec = importlib.util.find_spec("calib")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).resolve().parent.parent)
    out: list[Path] = []
    for folder in folders:
        if all(folder.resolve() != seen.resolve() for seen in out):
            out.append(folder)
    return out


def _task_label(record: str, loc: tuple, raw: Any) -> str:
    """'interface X' for an error in the interface itself, 'interface X, task #N' inside one of its tasks."""
    if len(loc) < 3 or loc[0] != "tasks" or not isinstance(loc[1], int) or not isinstance(raw, dict):
        return record
    tasks = raw.get("tasks")
    task = tasks[loc[1]] if isinstance(tasks, list) and loc[1] < len(tasks) else None
    task_id = task.get("id") if isinstance(task, dict) else None
    if isinstance(task_id, int) and not isinstance(task_id, bool) and task_id > 0 and loc[2] != "id":
        return f"{record}, task #{task_id}"
    return f"{record}, task {loc[1] + 1}"


# -- wording ------------------------------------------------------------------------------
_FIELD_WORDS = {"due": "due date", "start": "start date", "done_ratio": "done ratio",
                "estimated_hours": "estimated hours", "spent_hours": "spent hours"}


def _did_you_mean(value: Any, choices: Iterable[str]) -> str:
    if not isinstance(value, str):
        return ""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _human(err: dict, record: str, root=None) -> str:
    """Turn one pydantic error into a sentence."""
    loc = [p for p in err["loc"] if p != "[key]"]
    fields = [p for p in loc if isinstance(p, str)]
    name = fields[-1] if fields else "value"
    what = _FIELD_WORDS.get(name, name.replace("_", " "))
    value = err.get("input")
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if loc and isinstance(loc[-1], int) and kind != "literal_error":  # an item of a list: "item 2 of tasks"
        what = f"item {loc[-1] + 1} of {what}"
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):  # the record itself
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        return f"{record} must be a mapping (key: value), not {shown}"
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if kind == "missing":
        return f"{record}: missing required field '{name}'"
    if kind == "extra_forbidden":
        from . import model

        known = _known_fields(model, root or model.Registry, loc)
        return f"{record}: unknown field '{name}'{_did_you_mean(name, known)}"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        if value is None:
            return f"{record}: {what} has no value; expected one of: {', '.join(options)}"
        return f"{record}: unknown {what} {shown}{_did_you_mean(value, options)}; expected one of: {', '.join(options)}"
    if kind.startswith("date") or kind.startswith("datetime"):
        return f"{record}: {what} {shown} is not a valid date (write YYYY-MM-DD, e.g. 2026-11-25)"
    if kind == "value_error":
        return f"{record}: {str(ctx.get('error', err['msg']))}"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        bound = {"greater_than": "greater than", "greater_than_equal": "at least",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "")
        return f"{record}: {what} must be {bound} {limit}, not {shown}"
    if kind == "bool_not_number":
        return (f"{record}: {what} must be a number, not {shown} "
                "(YAML reads yes, no, true, false, on and off as a yes/no value)")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{record}: {what} must be a whole number, not {shown}"
    if kind in ("float_parsing", "float_type"):
        return f"{record}: {what} must be a number, not {shown}"
    if kind in ("string_type",):
        return f"{record}: {what} must be text, not {shown}"
    if kind in ("list_type",):
        return f"{record}: {what} must be a list, not {shown}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{record}: {what} must be a mapping (key: value), not {shown}"
    if kind == "string_too_short":
        return f"{record}: {what} must not be empty"
    if kind == "string_pattern_mismatch":
        return f"{record}: {what} {shown} is not a valid Python module path (e.g. calib.camera.ffactor)"
    return f"{record}: {what}: {err['msg']} (got {shown})"


def _known_fields(model_module, cls, loc: list) -> list[str]:
    """Field names of the record that ``loc`` (relative to model ``cls``) points into."""
    m = model_module
    nested = {m.Registry: {"people": m.Person, "icds": m.Icd, "interfaces": m.Interface},
              m.Icd: {"responsibles": m.Responsible, "contributors": m.Responsible},
              m.Interface: {"tasks": m.Task, "provided_by": m.Provider},
              m.Task: {"relations": m.Relation}}
    for part in loc[:-1]:
        cls = nested.get(cls, {}).get(part, cls) if isinstance(part, str) else cls
    return sorted(cls.model_fields)
