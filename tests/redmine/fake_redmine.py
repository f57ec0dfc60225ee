"""An in-memory Redmine REST API (the parts `icd redmine` uses), as a transport for unit tests."""
from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import urlsplit

import requests


class Response:
    def __init__(self, status, body=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.headers = {"Content-Type": "application/json"}
        self.history = []

    def json(self):
        return json.loads(self.content)


class FakeRedmine:
    def __init__(self, *, statuses=("New", "Assigned", "In Progress", "Resolved", "Feedback", "Closed", "Rejected"),
                 drop_status_on_create=False, project="cta-data", cf=1):
        self.statuses = {n: i + 1 for i, n in enumerate(statuses)}
        self.trackers = {"Bug": 1, "Task": 4}
        self.priorities = {"Low": 1, "Normal": 2, "High": 3, "Urgent": 4, "Immediate": 5}
        self.categories = {"Atmosphere Calibration": 1, "Array Calibration": 2, "Camera Calibration": 3,
                           "Pointing Calibration": 4}
        self.project, self.cf = project, cf
        self.issues: dict[int, dict] = {}
        self.relations: dict[int, dict] = {}
        self.wiki: dict[str, str] = {}
        self.drop_status_on_create = drop_status_on_create
        self.clock = dt.datetime(2026, 11, 25, 10, 0, 0)
        self.calls: list[tuple[str, str]] = []
        self.fail_after_post: int | None = None   # lose the answer of the n-th POST /issues.json (after creating)
        self._posts = 0

    # -- helpers ---------------------------------------------------------------------------
    def tick(self) -> str:
        self.clock += dt.timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _named(self, table: dict, ident):
        if ident in (None, ""):
            return None
        name = next(n for n, i in table.items() if i == int(ident))
        return {"id": int(ident), "name": name}

    def _apply(self, issue: dict, data: dict) -> None:
        for key, value in data.items():
            if key == "subject":
                issue["subject"] = value
            elif key == "tracker_id":
                issue["tracker"] = self._named(self.trackers, value)
            elif key == "status_id":
                issue["status"] = self._named(self.statuses, value)
            elif key == "priority_id":
                issue["priority"] = self._named(self.priorities, value)
            elif key == "category_id":
                issue["category"] = self._named(self.categories, value)
            elif key == "assigned_to_id":
                issue["assigned_to"] = {"id": int(value), "name": f"User {value}"} if value not in (None, "") else None
            elif key in ("start_date", "due_date", "estimated_hours", "done_ratio", "description"):
                issue[key] = value if value != "" else None
            elif key == "parent_issue_id":
                issue["parent"] = {"id": int(value)} if value not in (None, "") else None
            elif key == "custom_fields":
                issue["custom_fields"] = [{"id": c["id"], "name": "Interface code", "value": c["value"]} for c in value]
        for key in ("category", "assigned_to", "parent"):
            if issue.get(key) is None:
                issue.pop(key, None)
        issue["updated_on"] = self.tick()

    def _view(self, issue: dict, include: str) -> dict:
        out = dict(issue)
        if "relations" in (include or ""):
            out["relations"] = [r for r in self.relations.values() if issue["id"] in (r["issue_id"], r["issue_to_id"])]
        return out

    # -- transport ---------------------------------------------------------------------------
    def __call__(self, method, url, **kw):
        path = urlsplit(url).path
        params = kw.get("params") or {}
        body = json.loads(kw["data"]) if isinstance(kw.get("data"), str) else {}
        method = method.upper()
        self.calls.append((method, path))
        if method == "GET":
            return self._get(path, params)
        if method == "POST" and path == "/issues.json":
            data = body["issue"]
            if not data.get("subject") or len(data["subject"]) > 255:
                return Response(422, {"errors": ["Subject is too long (maximum is 255 characters)"]})
            new_id = max(self.issues, default=0) + 1
            issue = {"id": new_id, "project": {"id": 1, "name": "CTA DATA"}, "status": {"id": 1, "name": "New"},
                     "priority": {"id": 2, "name": "Normal"}, "done_ratio": 0, "start_date": None, "due_date": None,
                     "estimated_hours": None, "spent_hours": 0.0, "custom_fields": []}
            if self.drop_status_on_create:
                data = {k: v for k, v in data.items() if k != "status_id"}
            self._apply(issue, data)
            self.issues[new_id] = issue
            self._posts += 1
            if self.fail_after_post is not None and self._posts == self.fail_after_post:
                raise requests.exceptions.ReadTimeout("the answer was lost")
            return Response(201, {"issue": self._view(issue, "")})
        m = re.fullmatch(r"/issues/(\d+)\.json", path)
        if method == "PUT" and m:
            self._apply(self.issues[int(m.group(1))], body["issue"])
            return Response(204)
        m = re.fullmatch(r"/issues/(\d+)/relations\.json", path)
        if method == "POST" and m:
            rel = body["relation"]
            a, b, t = int(m.group(1)), int(rel["issue_to_id"]), rel["relation_type"]
            if t == "follows":  # Redmine stores one direction
                a, b, t = b, a, "precedes"
            rid = max(self.relations, default=0) + 1
            self.relations[rid] = {"id": rid, "issue_id": a, "issue_to_id": b, "relation_type": t,
                                   "delay": rel.get("delay")}
            # like Redmine: a relation is journalised, but updated_on of neither task moves
            return Response(201, {"relation": self.relations[rid]})
        m = re.fullmatch(r"/relations/(\d+)\.json", path)
        if method == "DELETE" and m:
            self.relations.pop(int(m.group(1)))
            return Response(204)
        m = re.fullmatch(r"/projects/[^/]+/wiki/([^/]+)\.json", path)
        if method == "PUT" and m:
            self.wiki[m.group(1)] = body["wiki_page"]["text"]
            return Response(204)
        return Response(404)

    def _get(self, path, params):
        if path == "/users/current.json":
            return Response(200, {"user": {"id": 1, "login": "admin"}})
        if path == "/issue_statuses.json":
            return Response(200, {"issue_statuses": [{"id": i, "name": n, "is_closed": n in ("Closed", "Rejected")}
                                                     for n, i in self.statuses.items()]})
        if path == "/trackers.json":
            return Response(200, {"trackers": [{"id": i, "name": n} for n, i in self.trackers.items()]})
        if path == "/enumerations/issue_priorities.json":
            return Response(200, {"issue_priorities": [{"id": i, "name": n} for n, i in self.priorities.items()]})
        if path == f"/projects/{self.project}.json":
            return Response(200, {"project": {"id": 1, "identifier": self.project}})
        if path == f"/projects/{self.project}/issue_categories.json":
            return Response(200, {"issue_categories": [{"id": i, "name": n} for n, i in self.categories.items()]})
        m = re.fullmatch(r"/projects/[^/]+/wiki/([^/]+)\.json", path)
        if m:
            if m.group(1) not in self.wiki:
                return Response(404)
            return Response(200, {"wiki_page": {"title": m.group(1), "text": self.wiki[m.group(1)]}})
        if path == "/issues.json":
            found = sorted(self.issues.values(), key=lambda i: i["id"])
            if "issue_id" in params:
                wanted = {int(x) for x in str(params["issue_id"]).split(",")}
                found = [i for i in found if i["id"] in wanted]
            if "updated_on" in params:
                stamp = params["updated_on"][2:]
                found = [i for i in found if i["updated_on"] >= stamp]
            reverse = {"duplicated": "duplicates", "blocked": "blocks", "follows": "precedes", "copied_from": "copied_to"}
            for rtype in ("relates", "duplicates", "duplicated", "blocks", "blocked", "precedes", "follows",
                          "copied_to", "copied_from"):
                if params.get(rtype) == "*":   # Redmine's relation filter: issues with such a relation
                    stored = reverse.get(rtype, rtype)
                    mine = "issue_to_id" if rtype in reverse else "issue_id"
                    found = [i for i in found if any(r["relation_type"] == stored and (
                        r[mine] == i["id"] or (rtype == "relates" and r["issue_to_id"] == i["id"]))
                        for r in self.relations.values())]
            cf = params.get(f"cf_{self.cf}")
            if cf:
                found = [i for i in found if any(c["value"] == cf for c in i.get("custom_fields", []))]
            offset, limit = int(params.get("offset", 0)), int(params.get("limit", 25))
            page = found[offset:offset + limit]
            return Response(200, {"issues": [self._view(i, params.get("include", "")) for i in page],
                                  "total_count": len(found), "offset": offset, "limit": limit})
        return Response(404)
