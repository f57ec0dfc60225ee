"""Data of the status report: counts per ICD and overall, task lists, hours, evidence.

One pass over the per-interface views; the templates only lay the numbers out.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Optional

from ..model import ICD_NAMES, STATUSES
from . import charts
from .views import NO_TASK, STAGE_SHORT, Context, View, anchor

STATUS_COLUMNS: tuple[str, ...] = (*STATUSES, NO_TASK)
VERDICTS: tuple[str, ...] = ("pass", "fail", "error", "none")
VERDICT_LABELS = {"pass": "pass", "fail": "fail", "error": "error", "none": "no evidence yet"}
CURRENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("none", "not planned"), *((k, v) for k, v in STAGE_SHORT.items()), ("done", "all stages done"))


def _summary(name: str, title: str, views: list[dict[str, Any]]) -> dict[str, Any]:
    stage_counts = {s: Counter() for s in STAGE_SHORT}
    current = Counter()
    verdicts = Counter()
    n_tasks = volunteers = ccf = overdue = provisional = 0
    est = spent = 0.0
    for v in views:
        for st in v["stages"]:
            stage_counts[st["key"]][st["status"]] += 1
        current[v["current_stage_key"]] += 1
        verdicts[v["verdict"]] += 1
        provisional += v["provisional"]
        est += v["estimated_h"]
        spent += v["spent_h"]
        for t in v["tasks"]:
            n_tasks += 1
            volunteers += t["volunteers"]
            ccf += t["ccf"]
            overdue += t["overdue"]
    stage_rows = [View(key=s, title=STAGE_SHORT[s], counts=[stage_counts[s][c] for c in STATUS_COLUMNS])
                  for s in STAGE_SHORT]
    return View({
        "name": name, "title": title, "version": "", "status": "", "date": "",
        "n": len(views), "provisional": provisional, "tasks": n_tasks,
        "volunteers": volunteers, "ccf": ccf, "overdue": overdue,
        "estimated": round(est, 1), "spent": round(spent, 1),
        "verdicts": [verdicts[k] for k in VERDICTS], "verdict_counts": dict(verdicts),
        "stage_rows": stage_rows,
        "current": [View(key=k, title=t, count=current[k]) for k, t in CURRENT_COLUMNS],
    })


def _stage_chart(summary: dict[str, Any]) -> Any:
    """Columns of the interfaces that have a task at each stage, stacked by status; the interfaces
    without a task are written under each column (drawn, they would flatten everything else)."""
    rows = summary["stage_rows"]
    series = [(status, charts.STATUS_COLOURS[status], [row["counts"][i] for row in rows])
              for i, status in enumerate(STATUS_COLUMNS) if status != NO_TASK]
    without = STATUS_COLUMNS.index(NO_TASK)
    notes = [f"{row['counts'][without]} without task" if row["counts"][without] else "" for row in rows]
    return charts.stacked_columns([r["title"] for r in rows], series,
                                  f"{summary['name']}: interfaces per lifecycle stage and task status",
                                  y_label="interfaces with a task", notes=notes,
                                  empty=f"no Redmine task at any stage yet ({summary['n']} interfaces)")


def report_data(ctx: Context, views: list[dict[str, Any]], *, since: Optional[Any] = None,
                source: str = "", icd_names: Iterable[str] | None = None, charts_wanted: bool = True) -> dict[str, Any]:
    """Everything the report templates show."""
    registry = ctx.registry
    names = list(icd_names) if icd_names is not None else [n for n in ICD_NAMES if n in registry.icds] or list(ICD_NAMES)
    by_icd: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for v in views:
        by_icd.setdefault(v["icd"], []).append(v)
    icds = []
    for name, members in by_icd.items():
        icd = registry.icds.get(name)
        s = _summary(name, icd.title if icd else name, members)
        s.update(version=icd.version if icd else "", status=icd.status if icd else "",
                 date=str(icd.date) if icd else "", views=members, anchor=f"icd-{anchor(name)}")
        if charts_wanted:
            s["chart"] = _stage_chart(s)
        icds.append(s)
    overall = _summary("All ICDs", "All ICDs", views)
    overall["anchor"] = "overview"
    volunteers, ccf, overdue, hours = [], [], [], []
    for v in views:
        for t in v["tasks"]:
            if t["volunteers"]:
                volunteers.append(t)
            if t["ccf"]:
                ccf.append(t)
            if t["overdue"]:
                overdue.append(t)
        if v["estimated_h"] or v["spent_h"]:
            hours.append(v)
    overdue.sort(key=lambda t: -t["days_late"])
    data = {
        "today": str(ctx.today), "source": source, "icds": icds, "overall": overall,
        "status_columns": STATUS_COLUMNS, "verdict_columns": VERDICTS, "stage_columns": list(STAGE_SHORT.values()),
        "volunteers": volunteers, "ccf": ccf, "overdue": overdue, "hours": hours, "views": views,
        "since": since,
    }
    if charts_wanted:
        data["chart_overall"] = _stage_chart(overall)
        data["chart_hours"] = charts.paired_bars([s["name"] for s in icds], [s["estimated"] for s in icds],
                                                 [s["spent"] for s in icds], "Hours estimated vs spent per ICD",
                                                 empty="no hours recorded")
        data["chart_evidence"] = charts.stacked_rows(
            [s["name"] for s in icds] + ["All ICDs"],
            [(VERDICT_LABELS[k], charts.VERDICT_COLOURS[k],
              [s["verdict_counts"].get(k, 0) for s in icds] + [overall["verdict_counts"].get(k, 0)])
             for k in VERDICTS],
            "Verification evidence of the calibration modules")
    return data
