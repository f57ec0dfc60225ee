"""The registry model: ICDs, people, interfaces, their lifecycle and Redmine tasks.

Strict pydantic models: unknown fields are errors, enumerations are closed, dates are
ISO dates.  Checks that need more than one record (references, uniqueness, date order)
live in ``icd.registry`` so that every problem is reported at once.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

STAGES: tuple[str, ...] = ("feedback", "data_structure", "algorithms", "integration", "partial_array_test")
STAGE_TITLES: dict[str, str] = {
    "feedback": "Give feedback to DATA about the hardware",
    "data_structure": "Construct the data structure and storage (DM, ARCH)",
    "algorithms": "Implement the algorithms (PIPE-CAL)",
    "integration": "Integrate them into the calibration pipeline (PIPE-CAL)",
    "partial_array_test": "Test on the partial array (PIPE-CAL)",
}
STATUSES: tuple[str, ...] = ("New", "Assigned", "In Progress", "Resolved", "Feedback", "Closed", "Rejected")
DONE_STATUSES = frozenset({"Resolved", "Closed"})
CLOSED_STATUSES = frozenset({"Closed", "Rejected"})
PRIORITIES: tuple[str, ...] = ("Low", "Normal", "High", "Urgent", "Immediate")
CATEGORIES: tuple[str, ...] = ("camera", "pointing", "atmosphere", "array", "data model")
LEVELS: tuple[str, ...] = ("per pixel", "per camera", "per telescope", "per array", "per site")
PIPELINE_LEVELS: dict[str, str] = {"A": "on-line", "B": "next-morning", "C": "off-site"}
ICD_NAMES: tuple[str, ...] = ("DATA-COM", "DATA-xST", "DATA-ACTL")
RELATION_TYPES: tuple[str, ...] = ("follows", "precedes", "blocks", "blocked", "relates",
                                   "duplicates", "duplicated", "copied_to", "copied_from")
ROLES: tuple[str, ...] = ("parent", "stage", "upstream")

OFFICIAL_CODE = re.compile(r"^I-DATA-(COM|xST|ACTL)-\d{4}$")
PROVISIONAL_CODE = re.compile(r"^PROV-DATA-(COM|xST|ACTL)-[A-Z0-9]+(-[A-Z0-9]+)*$")

Status = Literal["New", "Assigned", "In Progress", "Resolved", "Feedback", "Closed", "Rejected"]
Priority = Literal["Low", "Normal", "High", "Urgent", "Immediate"]
Stage = Literal["feedback", "data_structure", "algorithms", "integration", "partial_array_test"]
Category = Literal["camera", "pointing", "atmosphere", "array", "data model"]
Level = Literal["per pixel", "per camera", "per telescope", "per array", "per site"]
PipelineLevel = Literal["A", "B", "C"]
IcdName = Literal["DATA-COM", "DATA-xST", "DATA-ACTL"]
RelationType = Literal["follows", "precedes", "blocks", "blocked", "relates",
                       "duplicates", "duplicated", "copied_to", "copied_from"]
Role = Literal["parent", "stage", "upstream"]

_STRICT = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)


def _not_bool(value: Any) -> Any:
    """pydantic reads true/false as 1/0 where a number is expected; YAML reads yes/no/on/off as
    true/false: so ``id: yes`` would silently become task #1.  Refuse a yes/no value there."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a number is expected, not a yes/no value")
    return value


class Person(BaseModel):
    """Someone who provides information or is responsible; referenced by key."""

    model_config = _STRICT
    name: str = Field(min_length=1)
    wp: str = Field(min_length=1, description="work package: DATA, COM-CCF, Project Office, LST, MST, SST ...")
    affiliation: Optional[str] = None
    email: Optional[str] = None
    redmine_login: Optional[str] = None


class Responsible(BaseModel):
    """A role at ICD level; ``person: null`` means not yet decided."""

    model_config = _STRICT
    person: Optional[str] = None
    role: str = Field(min_length=1)
    note: Optional[str] = None


class Icd(BaseModel):
    model_config = _STRICT
    title: str = Field(min_length=1)
    version: str = Field(min_length=1)
    date: dt.date
    status: str = Field(min_length=1, description="e.g. ready for activation, under definition, placeholder")
    scope: str = ""
    responsibles: list[Responsible] = Field(default_factory=list)
    contributors: list[Responsible] = Field(default_factory=list)


class Provider(BaseModel):
    """Who provides the information of an interface: a person, their WP and sub-project."""

    model_config = _STRICT
    person: Optional[str] = None
    wp: str = Field(min_length=1)
    subproject: Optional[str] = None


class Relation(BaseModel):
    model_config = _STRICT
    type: RelationType
    task: int = Field(gt=0)
    delay: Optional[int] = None

    _numbers = field_validator("task", "delay", mode="before")(_not_bool)


class Task(BaseModel):
    """A Redmine task of an interface.

    ``role``: ``parent`` is the interface's umbrella task in DATA (like #8546),
    ``stage`` a subtask for one lifecycle stage, ``upstream`` a task of the providing
    team that the DATA work follows (like COM #8529).  ``id`` is empty for a task
    planned in the registry and not yet created in Redmine.
    """

    model_config = _STRICT
    id: Optional[int] = Field(default=None, gt=0)
    subject: str = Field(min_length=1)
    role: Role = "stage"
    stage: Optional[Stage] = None
    parent: Optional[int] = Field(default=None, gt=0)
    tracker: str = "Task"
    project: Optional[str] = None
    category: Optional[str] = None
    status: Status = "New"
    priority: Priority = "Normal"
    assignee: Optional[str] = None
    start: Optional[dt.date] = None
    due: Optional[dt.date] = None
    estimated_hours: Optional[float] = Field(default=None, ge=0)
    spent_hours: Optional[float] = Field(default=None, ge=0)
    done_ratio: int = Field(default=0, ge=0, le=100)
    relations: list[Relation] = Field(default_factory=list)
    updated_on: Optional[dt.datetime] = None
    synced: Optional[dict[str, Any]] = Field(
        default=None, description="values at the last Redmine sync (written by `icd redmine`)")

    _numbers = field_validator("id", "parent", "estimated_hours", "spent_hours", "done_ratio", mode="before")(_not_bool)

    @model_validator(mode="after")
    def _stage_role(self) -> "Task":
        if self.role == "stage" and self.stage is None:
            raise ValueError("a task with role 'stage' needs a 'stage' (one of: " + ", ".join(STAGES) + ")")
        return self

    @property
    def needs_volunteers(self) -> bool:
        """CTA convention: New with nobody assigned = Expression of Interest wanted."""
        return self.status == "New" and self.assignee is None

    @property
    def reserved_for_ccf(self) -> bool:
        """CTA convention: Assigned with nobody = reserved for the CCF teams."""
        return self.status == "Assigned" and self.assignee is None

    def is_overdue(self, today: dt.date) -> bool:
        return self.due is not None and self.due < today and self.status not in DONE_STATUSES | CLOSED_STATUSES


class Interface(BaseModel):
    """One data interface of an ICD."""

    model_config = _STRICT
    code: str
    icd: IcdName
    title: str = Field(min_length=1)
    description: str = ""
    category: Category
    level: Level
    pipeline_levels: list[PipelineLevel] = Field(default_factory=list)
    provided_by: list[Provider] = Field(default_factory=list)
    related: list[str] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    module: Optional[str] = Field(default=None, pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
    tests: list[str] = Field(default_factory=list)
    notes: Optional[str] = None

    @field_validator("code")
    @classmethod
    def _code_form(cls, value: str) -> str:
        if not (OFFICIAL_CODE.match(value) or PROVISIONAL_CODE.match(value)):
            raise ValueError(
                f"'{value}' is not an interface code: expected I-DATA-(COM|xST|ACTL)-NNNN "
                "(four digits), or PROV-DATA-<ICD>-<NAME> for a provisional entry")
        return value

    @model_validator(mode="after")
    def _code_matches_icd(self) -> "Interface":
        icd_in_code = self.code.split("-")[2] if self.code.startswith("I-") else self.code.split("-")[2]
        if f"DATA-{icd_in_code}" != self.icd:
            raise ValueError(f"code {self.code} belongs to ICD DATA-{icd_in_code}, but icd is {self.icd}")
        return self

    @property
    def provisional(self) -> bool:
        return self.code.startswith("PROV-")

    @property
    def display_code(self) -> str:
        return f"{self.code} (provisional)" if self.provisional else self.code

    def stage_tasks(self) -> dict[str, list[Task]]:
        out: dict[str, list[Task]] = {s: [] for s in STAGES}
        for task in self.tasks:
            if task.stage is not None and task.role != "upstream":
                out[task.stage].append(task)
        return out

    def stage_status(self) -> dict[str, Optional[str]]:
        """Status per lifecycle stage: the least advanced of its tasks' statuses, None if no task."""
        order = {s: i for i, s in enumerate(("New", "Feedback", "Assigned", "In Progress", "Resolved", "Closed", "Rejected"))}
        result: dict[str, Optional[str]] = {}
        for stage, tasks in self.stage_tasks().items():
            live = [t.status for t in tasks if t.status != "Rejected"] or [t.status for t in tasks]
            result[stage] = min(live, key=order.__getitem__) if live else None
        return result

    def current_stage(self) -> Optional[str]:
        """First lifecycle stage not yet Resolved/Closed that has a task, or None when all planned stages are done."""
        for stage, status in self.stage_status().items():
            if status is not None and status not in DONE_STATUSES | {"Rejected"}:
                return stage
        return None


class Registry(BaseModel):
    """The whole registry file."""

    model_config = _STRICT
    schema_version: Literal[1] = 1
    people: dict[str, Person] = Field(default_factory=dict)
    icds: dict[IcdName, Icd] = Field(default_factory=dict)
    interfaces: list[Interface] = Field(default_factory=list)
    redmine: Optional[dict[str, Any]] = Field(
        default=None, description="sync bookkeeping written by `icd redmine` (never a key)")


def json_schema() -> dict[str, Any]:
    """JSON Schema of the registry file, for editors (yaml-language-server) and CI."""
    schema = Registry.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cta-icd interface registry (interfaces.yaml)"
    return schema
