"""Issue 9 (items 1-3) against a real Redmine: subjects YAML would misread, a killed push,
two pushes at once, a hand edit saved mid-push, relation changes, deleted tasks, a wrong server."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from icd.redmine.client import Client
from icd.redmine.lock import LockBusy, registry_lock
from icd.redmine.sync import Sync
from icd.registry import load

from .test_integration import ROOT, icd, planned_registry, tasks_of

pytestmark = pytest.mark.redmine
DM_ARCH = "Construct the data structure and storage (DM, ARCH)"


def requests_of(output: str) -> int:
    return int(re.search(r"\((\d+) HTTP requests", output).group(1))


def gets_of(output: str) -> int:
    m = re.search(r"GET (\d+)", output)
    return int(m.group(1)) if m else 0


def push_process(path: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from icd.redmine.cli import app; app()", "push", "-r", str(path)],
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def coma_registry(dirpath: Path) -> Path:
    """The illuminator interface with a parent called 'Coma model [v2]' and, from scaffold, the
    data-structure stage task whose subject has ', ' and '(' ... ')'."""
    path = planned_registry(dirpath)
    text = path.read_text()
    a = text.index("      - subject: Implement the illuminator algorithms")
    b = text.index("      - subject: Integrate the illuminator results", a)
    text = text[:a] + text[b:]
    path.write_text(text.replace("Illuminator flat-fielding in DATA", "Coma model [v2]"))
    icd("scaffold", "I-DATA-COM-3141", "--stage", "data_structure", "-r", path)
    assert DM_ARCH in path.read_text()
    return path


def test_killed_push_with_flow_indicators_in_subjects_converges_without_duplicates(env, admin):
    path = coma_registry(env["dir"])
    # killed right after Redmine created the 3rd task ("... (DM, ARCH)"), before its id was recorded
    proc = push_process(path, ICD_REDMINE_CRASH_AFTER_CREATE="3")
    proc.communicate(timeout=120)
    assert proc.returncode == 75
    text = path.read_text()
    assert load(path, check_modules=False).registry.redmine["pending"] == [{"code": "I-DATA-COM-3141", "subject": DM_ARCH}]
    out = icd("push", "-r", path).output
    assert "adopted #" in out and "WARNING duplicates" not in out
    issues = admin.issues(env["project"])
    subjects = sorted(i["subject"] for i in issues)
    assert subjects == sorted(["Coma model [v2]", DM_ARCH, "Integrate the illuminator results"])   # each once
    tasks = [t for t in tasks_of(path) if t.id]
    assert sorted(t.id for t in tasks) == sorted(i["id"] for i in issues)
    assert next(t for t in tasks if t.role == "parent").synced["subject"] == "Coma model [v2]"
    # settled: a no-op push only checks the key; a no-op pull finds no conflict and changes nothing
    again = icd("push", "-r", path).output
    assert "nothing to push" in again and requests_of(again) == 1, again
    text = path.read_text()
    pulled = icd("pull", "-r", path).output
    assert "CONFLICT" not in pulled and "pull #" not in pulled and gets_of(pulled) <= 4, pulled
    pulled = icd("pull", "-r", path).output
    assert "CONFLICT" not in pulled and requests_of(pulled) <= 3, pulled   # project id cached
    bookkeeping = ("last_pull", "updated_on", "project:", "project_id:")   # the pull's own notes
    assert [l for l in path.read_text().splitlines() if not any(b in l for b in bookkeeping)] == \
        [l for l in text.splitlines() if not any(b in l for b in bookkeeping)]


def test_two_concurrent_pushes_create_each_task_once(env, admin):
    path = coma_registry(env["dir"])
    first, second = push_process(path), push_process(path)
    out1, err1 = first.communicate(timeout=180)
    out2, err2 = second.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    issues = admin.issues(env["project"])
    assert len(issues) == 3 and len({i["subject"] for i in issues}) == 3, [i["subject"] for i in issues]
    assert sorted(t.id for t in tasks_of(path) if t.subject in {i["subject"] for i in issues}) == \
        sorted(i["id"] for i in issues)
    assert sum("created #" in o for o in (out1, out2)) == 1     # one created them, the other had nothing to do
    assert any("nothing to push" in o for o in (out1, out2))


def test_a_sync_waits_for_the_lock_then_says_who_holds_it(env, tmp_path):
    path = planned_registry(env["dir"])
    env["config"].write_text(env["config"].read_text() + "lock_timeout = 0.5\n")
    with registry_lock(path):
        res = icd("push", "-r", path, ok=(1,))
    line = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "another `icd redmine` sync" in line[0] and f"pid {os.getpid()}" in line[0]
    assert "nothing was done" in line[0]
    with registry_lock(path):
        with pytest.raises(LockBusy):
            with registry_lock(path, timeout=0.2):
                pass
    icd("push", "-r", path)   # free again


def test_a_hand_edit_saved_during_a_push_survives(env, admin, monkeypatch):
    path = coma_registry(env["dir"])
    original_post = Client.post
    done = threading.Event()
    buffer = path.read_text()   # an editor opened the file before the push

    def post(self, url, payload, what=""):
        answer = original_post(self, url, payload, what)
        if url == "/issues.json" and not done.is_set():
            done.set()   # the person saves that buffer, with edits, after the first task was created
            text = buffer.replace("# cta-icd interface registry", "# registry (edited during the push)", 1)
            text = text.replace("        due: 2027-09-30\n", "        due: 2027-10-31   # moved by hand\n", 1)
            text = text.replace("status: Assigned\n        due: 2027-10-31", "status: In Progress\n        due: 2027-10-31", 1)
            path.write_text(text)
        return answer
    monkeypatch.setattr(Client, "post", post)
    assert "# cta-icd interface registry" in buffer and "due: 2027-09-30" in buffer
    out = icd("push", "-r", path).output
    assert "edited by hand during this sync" in out
    text = path.read_text()
    assert "# registry (edited during the push)" in text and "due: 2027-10-31   # moved by hand" in text
    tasks = [t for t in tasks_of(path) if t.subject in ("Coma model [v2]", DM_ARCH, "Integrate the illuminator results")]
    issues = admin.issues(env["project"])
    assert len(issues) == 3 and sorted(t.id for t in tasks) == sorted(i["id"] for i in issues)   # every id recorded
    integ = next(t for t in tasks if t.stage == "integration")
    assert str(integ.due) == "2027-10-31" and integ.status == "In Progress"
    # the hand edit is a local change the next push sends
    monkeypatch.setattr(Client, "post", original_post)
    out = icd("push", "-r", path).output
    issue = admin.get(f"/issues/{integ.id}.json")["issue"]
    assert issue["due_date"] == "2027-10-31" and issue["status"]["name"] == "In Progress", out
    assert "nothing to push" in icd("push", "-r", path).output


@pytest.mark.parametrize("by_id_max", [100, 0], ids=["read-by-id", "relation-filters"])
def test_incremental_pull_sees_relations_changed_in_redmine(env, cta_registry, admin, monkeypatch, by_id_max):
    monkeypatch.setattr(Sync, "BY_ID_MAX", by_id_max)
    icd("push", "-r", cta_registry, "--new-server")
    icd("pull", "-r", cta_registry)
    tasks = tasks_of(cta_registry)
    integ = next(t for t in tasks if t.stage == "integration")
    test = next(t for t in tasks if t.stage == "partial_array_test")
    before = admin.get(f"/issues/{test.id}.json")["issue"]["updated_on"]
    rel = admin.post(f"/issues/{integ.id}/relations.json",
                     {"relation": {"issue_to_id": test.id, "relation_type": "blocks"}})["relation"]
    assert admin.get(f"/issues/{test.id}.json")["issue"]["updated_on"] == before   # Redmine's behaviour
    out = icd("pull", "-r", cta_registry).output
    assert f"pull #{integ.id} relations" in out or f"pull #{test.id} relations" in out, out
    rels = {t.id: [(r.type, r.task) for r in t.relations] for t in tasks_of(cta_registry)}
    assert (("blocks", test.id) in rels[integ.id]) != (("blocked", integ.id) in rels[test.id])   # one side only
    assert "nothing to push" in icd("push", "-r", cta_registry).output
    admin.delete(f"/relations/{rel['id']}.json")
    icd("pull", "-r", cta_registry)
    rels = {t.id: [(r.type, r.task) for r in t.relations] for t in tasks_of(cta_registry)}
    assert ("blocks", test.id) not in rels[integ.id] and ("blocked", integ.id) not in rels[test.id]


def test_a_task_deleted_in_redmine_is_said_and_can_be_recreated_or_forgotten(env, cta_registry, admin):
    icd("push", "-r", cta_registry, "--new-server")
    tasks = tasks_of(cta_registry)
    integ = next(t for t in tasks if t.stage == "integration")
    test = next(t for t in tasks if t.stage == "partial_array_test")
    admin.delete(f"/issues/{integ.id}.json")
    # a local change to the deleted task and one to another task: the other still goes out
    text = cta_registry.read_text()
    cta_registry.write_text(text.replace("subject: Test algorithms on partial array", "subject: Test algorithms on the partial array", 1))
    text = cta_registry.read_text()
    a = text.index(f"- id: {integ.id}")
    cta_registry.write_text(text[:a] + text[a:].replace("status: Assigned", "status: In Progress", 1))
    out = icd("push", "-r", cta_registry).output
    missing = [l for l in out.splitlines() if l.startswith("MISSING")]
    assert len(missing) == 1 and f"#{integ.id}" in missing[0] and "--recreate-deleted" in missing[0] \
        and f"icd redmine forget {integ.id}" in missing[0], out
    assert admin.get(f"/issues/{test.id}.json")["issue"]["subject"] == "Test algorithms on the partial array", out
    assert any(l.startswith("MISSING") for l in icd("pull", "-r", cta_registry).output.splitlines())
    # answer 1: create it again (new id; the registry follows)
    out = icd("push", "-r", cta_registry, "--recreate-deleted").output
    new_id = int(re.search(r"created #(\d+)", out).group(1))
    again = next(t for t in tasks_of(cta_registry) if t.stage == "integration")
    assert again.id == new_id != integ.id and again.parent == integ.parent
    issue = admin.get(f"/issues/{new_id}.json")["issue"]
    assert issue["status"]["name"] == "In Progress" and issue["parent"]["id"] == integ.parent
    assert "MISSING" not in icd("pull", "-r", cta_registry).output
    assert "nothing to push" in icd("push", "-r", cta_registry).output
    # answer 2: forget it (the registry drops it; Redmine is untouched)
    admin.delete(f"/issues/{new_id}.json")
    out = icd("forget", f"I-DATA-COM-3201#integration", "-r", cta_registry).output
    assert f"forgot #{new_id}" in out
    assert all(t.id != new_id for t in tasks_of(cta_registry)) and len(tasks_of(cta_registry)) == 3
    assert "MISSING" not in icd("pull", "-r", cta_registry).output
    assert "nothing to push" in icd("push", "-r", cta_registry).output


def test_a_pull_from_another_server_records_nothing(env, cta_registry, admin):
    # the CTA registry: ids of forge.cta-observatory.org, no server recorded yet
    before = cta_registry.read_text()
    res = icd("pull", "-r", cta_registry, ok=(1,))
    assert "none of the registry's 4 task ids" in res.output and "nothing was recorded" in res.output
    assert cta_registry.read_text() == before
    # a registry whose bookkeeping names another server (no ids yet): refused, unchanged
    path = planned_registry(env["dir"])
    path.write_text(path.read_text() + "redmine:\n  url: https://forge.cta-observatory.org\n  last_pull: '2026-01-01T00:00:00Z'\n")
    before = path.read_text()
    res = icd("pull", "-r", path, ok=(1,))
    assert "belongs to https://forge.cta-observatory.org" in res.output and "nothing was read or recorded" in res.output
    assert path.read_text() == before
