"""`icd redmine` against a real Redmine (see conftest.py): round trips, idempotence, an
interrupted push, conflicts, comments, the one-line errors, and the key never leaking."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icd.redmine.cli import app
from icd.redmine.sync import local_values
from icd.registry import load

pytestmark = pytest.mark.redmine
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def icd(*args, ok=(0,)):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code in ok, f"exit {result.exit_code}: {result.output}"
    return result


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "#" in line and line.strip().startswith("#")] + \
        [line.split("#", 1)[1] for line in text.splitlines() if " # " in line or "  #" in line]


def tasks_of(path: Path) -> list:
    loaded = load(path, check_modules=False)
    assert not loaded.diagnostics, loaded.diagnostics
    return [t for i in loaded.registry.interfaces for t in i.tasks]


def test_cta_material_pushed_to_empty_redmine_and_pulled_back_unchanged(env, cta_registry, admin):
    before_text = cta_registry.read_text()
    before = tasks_of(cta_registry)
    refused = icd("push", "-r", cta_registry, ok=(1,))
    assert "--new-server" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert cta_registry.read_text() == before_text
    out = icd("push", "-r", cta_registry, "--new-server").output
    assert "copied #8546" in out
    after_push = cta_registry.read_text()
    after = tasks_of(cta_registry)
    ids = {old.id: new.id for old, new in zip(before, after)}
    assert sorted(ids) == [8529, 8546, 11108, 11109] and len(set(ids.values())) == 4

    # Redmine has the parent, its two subtasks and the follows relation
    issues = {i["id"]: i for i in admin.issues(env["project"], include="relations")}
    assert set(issues) == set(ids.values())
    parent = issues[ids[8546]]
    assert parent["status"]["name"] == "Assigned" and parent["category"]["name"] == "Atmosphere Calibration"
    assert (parent["start_date"], parent["due_date"], parent["estimated_hours"]) == ("2017-04-01", "2020-04-01", 1267.0)
    assert issues[ids[11108]]["parent"]["id"] == ids[8546] == issues[ids[11109]]["parent"]["id"]
    rel = parent["relations"][0]
    assert {rel["issue_id"], rel["issue_to_id"]} == {ids[8529], ids[8546]} and rel["delay"] == 30
    assert any(cf["value"] == "I-DATA-COM-3201" for cf in parent["custom_fields"])

    # every field as in the original registry (ids mapped), comments intact
    for old, new in zip(before, after):
        want = local_values(old)
        want["parent"] = ids.get(want["parent"])
        want["relations"] = [[t, ids[o], d] for t, o, d in want["relations"]]
        assert local_values(new) == want
    assert comments(after_push) == comments(before_text)

    # pull back: nothing changes in the tasks; push again: nothing is sent
    pulled = icd("pull", "-r", cta_registry).output
    assert "pull #" not in pulled
    assert [local_values(t) for t in tasks_of(cta_registry)] == [local_values(t) for t in after]
    second = icd("push", "-r", cta_registry).output
    assert "nothing to push" in second and "0 writes" in second
    full = icd("pull", "-r", cta_registry, "--full").output
    assert "pull #" not in full and "MISSING" not in full


PLANNED = """\
  - code: I-DATA-COM-3141
    icd: DATA-COM
    title: "Illuminator"
    category: array
    level: per telescope
    description: Telescope-to-telescope flat-fielding.
    tasks:
      - subject: Illuminator flat-fielding in DATA   # the umbrella task
        role: parent
        stage: algorithms
        status: Assigned
        estimated_hours: 120
        start: 2027-01-04
        due: 2027-06-30
      - subject: Implement the illuminator algorithms
        stage: algorithms
        status: New
        assignee: redmineadmin
      - subject: Integrate the illuminator results
        stage: integration
        status: Assigned
        due: 2027-09-30
    module: null
    tests: []
"""


def planned_registry(dirpath: Path) -> Path:
    text = (ROOT / "interfaces.yaml").read_text()
    # replace the Illuminator interface by one with planned tasks
    start = text.index("  - code: I-DATA-COM-3141")
    end = text.index("  - code: I-DATA-COM-3201")
    path = dirpath / "interfaces.yaml"
    text = text[:start] + PLANNED + "\n" + text[end:]
    # without the CTA tasks (their ids belong to CTA's Redmine, not to this test project)
    a = text.index("    tasks:\n      - id: 8529")
    b = text.index("    module: null", a)
    text = text[:a] + text[b:]
    text = text.replace("people:\n", "people:\n  redmineadmin: {name: Redmine Admin, wp: DATA, redmine_login: admin}\n", 1)
    path.write_text(text)
    return path


def test_plan_changes_nothing_then_interrupted_push_converges(env, admin):
    path = planned_registry(env["dir"])
    original = path.read_text()
    plan = icd("plan", "-r", path).output
    assert "create I-DATA-COM-3141 parent 'Illuminator flat-fielding in DATA'" in plan
    assert "    status: 'Assigned'" in plan and "    category: 'Array Calibration'" in plan and "POST" not in plan
    assert path.read_text() == original and admin.issues(env["project"]) == []

    # kill the push right after Redmine created the 2nd task, before its id reached the registry
    envvars = {**os.environ, "ICD_REDMINE_CRASH_AFTER_CREATE": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", "from icd.redmine.cli import app; app()", "push", "-r", str(path)],
                          env=envvars, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 75, proc.stderr
    assert len(admin.issues(env["project"])) == 2
    assert len(re.findall(r"^\s+- id: \d+", path.read_text(), re.M)) - len(re.findall(r"^\s+- id: \d+", original, re.M)) == 1
    assert "pending:" in path.read_text()

    out = icd("push", "-r", path).output
    assert "adopted #" in out
    issues = admin.issues(env["project"])
    assert len(issues) == 3 and len({i["subject"] for i in issues}) == 3   # no duplicate
    tasks = [t for t in tasks_of(path) if t.subject.startswith(("Illuminator", "Implement the illu", "Integrate the illu"))]
    assert sorted(t.id for t in tasks) == sorted(i["id"] for i in issues)
    parent = next(t for t in tasks if t.role == "parent")
    assert all(t.parent == parent.id for t in tasks if t.role == "stage")
    assert "pending:" not in path.read_text()
    assigned = [i for i in issues if i.get("assigned_to")]
    assert [(i["subject"], i["assigned_to"]["id"]) for i in assigned] == [("Implement the illuminator algorithms", 1)]
    text = path.read_text()
    assert "# the umbrella task" in text and "# to be decided with the xST teams" in text
    again = icd("push", "-r", path).output
    assert "nothing to push" in again


def test_conflict_detected_and_nothing_overwritten(env, cta_registry, admin):
    icd("push", "-r", cta_registry, "--new-server")
    tasks = tasks_of(cta_registry)
    parent = next(t for t in tasks if t.role == "parent")
    # Redmine side: someone changes the due date and the status
    admin.put(f"/issues/{parent.id}.json", {"issue": {"due_date": "2021-01-31", "done_ratio": 20}})
    # registry side: someone else changes the same due date by hand (a one-line edit)
    text = cta_registry.read_text()
    cta_registry.write_text(text.replace("due: 2020-04-01", "due: 2020-12-31", 1))
    edited = cta_registry.read_text()
    res = icd("pull", "-r", cta_registry, ok=(3,))
    assert "CONFLICT" in res.output and "2020-12-31" in res.output and "2021-01-31" in res.output
    after = cta_registry.read_text()
    assert "due: 2020-12-31" in after and "done_ratio: 20" in after        # due untouched, done ratio pulled
    res = icd("push", "-r", cta_registry, ok=(3,))
    assert admin.get(f"/issues/{parent.id}.json")["issue"]["due_date"] == "2021-01-31"   # Redmine untouched
    icd("push", "-r", cta_registry, "--prefer", "local")
    assert admin.get(f"/issues/{parent.id}.json")["issue"]["due_date"] == "2020-12-31"
    assert "CONFLICT" not in icd("pull", "-r", cta_registry).output
    del edited


def test_remote_change_pulled_in_place_and_incremental(env, cta_registry, admin):
    icd("push", "-r", cta_registry, "--new-server")
    before = cta_registry.read_text()
    stage = next(t for t in tasks_of(cta_registry) if t.stage == "integration")
    admin.put(f"/issues/{stage.id}.json", {"issue": {"status_id": 2, "estimated_hours": 40}})
    out = icd("pull", "-r", cta_registry).output
    assert "status: 'Assigned' -> 'In Progress'" in out
    # key check, project, one listing of changes, one read by id of the registry's tasks (their relations)
    assert int(re.search(r"\((\d+) HTTP requests", out).group(1)) <= 4
    after = cta_registry.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert any("status: In Progress" in b for a, b in changed)
    assert comments(after) == comments(before)
    # an unknown task carrying an interface code is listed
    admin.post("/issues.json", {"issue": {"project_id": env["project"], "tracker_id": 4, "subject": "stray",
                                          "custom_fields": [{"id": env["cf"], "value": "I-DATA-COM-3001"}]}})
    out = icd("pull", "-r", cta_registry).output
    assert "UNKNOWN #" in out and "I-DATA-COM-3001" in out


def test_one_line_errors_and_the_key_never_leaks(env, cta_registry, redmine_server, tmp_path):
    key = env["key"]
    outputs = []

    def run(*args, config_extra="", ok=(1,)):
        cfg = env["config"].read_text() + config_extra
        path = tmp_path / "err.toml"
        path.write_text(cfg)
        result = runner.invoke(app, [*map(str, args), "--config", str(path), "-v"])
        outputs.append(result.output)
        assert result.exit_code in ok, result.output
        lines = [l for l in result.output.splitlines() if l.startswith("error:")]
        assert len(lines) == 1, result.output
        return lines[0]

    # wrong key
    bad = tmp_path / "bad-key"
    bad.write_text("0" * 40)
    bad.chmod(0o600)
    line = run("pull", "-r", cta_registry, config_extra=f'\n', ok=(1,)) if False else None
    os.environ["REDMINE_API_KEY"] = "0" * 40
    try:
        line = run("pull", "-r", cta_registry)
    finally:
        del os.environ["REDMINE_API_KEY"]
    assert "401" in line and "API key" in line
    # wrong URL (a path that is no Redmine)
    line = run("pull", "-r", cta_registry, "--url", env["url"] + "/nowhere")
    assert "no Redmine REST API" in line and "check the URL" in line
    # server down (a free port nobody listens on)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = run("pull", "-r", cta_registry, "--url", f"http://127.0.0.1:{port}")
    assert "connection refused" in line
    # a 422 with Redmine's own message: a subject longer than Redmine allows
    long_path = tmp_path / "long.yaml"
    long_path.write_text(planned_registry(tmp_path).read_text().replace(
        "Implement the illuminator algorithms", "Implement " + "x" * 300))
    line = run("push", "-r", long_path)
    assert "422" in line and "Subject" in line
    # a key file readable by others is refused
    loose = tmp_path / "loose-key"
    loose.write_text(key)
    loose.chmod(0o644)
    line = run("pull", "-r", cta_registry, config_extra="").replace("", "") if False else None
    os.environ["REDMINE_KEY_FILE"] = str(loose)
    try:
        line = run("pull", "-r", cta_registry)
    finally:
        del os.environ["REDMINE_KEY_FILE"]
    assert "chmod 600" in line
    # and a good run with -v logging: the key is nowhere
    outputs.append(icd("push", "-r", cta_registry, "--new-server", "-v").output)
    for text in outputs:
        assert key not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("redmine-key", "loose-key"):
            assert key not in path.read_text(errors="replace"), path


def test_publish_wiki_only_when_changed(env, cta_registry, admin):
    out = icd("publish", "-r", cta_registry, "--icd", "DATA-COM").output
    assert "wiki ICD_DATA-COM: create" in out
    page = admin.get(f"/projects/{env['project']}/wiki/ICD_DATA-COM.json")["wiki_page"]
    assert "I-DATA-COM-3201" in page["text"]
    again = icd("publish", "-r", cta_registry, "--icd", "DATA-COM").output
    assert "unchanged" in again and "PUT" not in again
