"""Pull / plan / push / conflicts with an in-memory Redmine (fake_redmine.py): fast and exact."""
from __future__ import annotations


import pytest

from icd.redmine.client import Client, RedmineError
from icd.redmine.config import RedmineConfig
from icd.redmine.sync import Sync, SyncError, local_values
from icd.registry import load

from .fake_redmine import FakeRedmine

KEY = "a" * 40
REGISTRY = """\
# test registry
schema_version: 1
people:
  rdelosreyes: {name: R. de los Reyes, wp: DATA}
icds:
  DATA-COM: {title: ICD DATA-COM, version: "0.1", date: 2026-11-25, status: draft}
interfaces:
  - code: I-DATA-COM-3201
    icd: DATA-COM
    title: "CTC implementation"
    category: atmosphere
    level: per telescope
    tasks:
      - subject: Implementation of CTC algorithms   # the umbrella task
        role: parent
        stage: algorithms
        status: Assigned        # reserved for the CCF teams
        estimated_hours: 1267
        start: 2017-04-01
        due: 2020-04-01
      - subject: Integrate algorithms and results in DATA
        stage: integration
        status: Assigned
      - subject: Test algorithms on partial array
        stage: partial_array_test
        status: New
    module: null
    tests: []
"""


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "interfaces.yaml"
    path.write_text(REGISTRY)
    fake = FakeRedmine()
    cfg = RedmineConfig(url="https://redmine.example.org", project="cta-data", interface_code_field=1, retries=1)

    def sync():
        return Sync(path, cfg, Client(cfg, KEY, transport=fake, sleep=lambda s: None))
    return path, fake, sync


def writes(fake):
    return [c for c in fake.calls if c[0] != "GET"]


def test_plan_changes_nothing_and_push_creates_parent_and_subtasks(setup):
    path, fake, sync = setup
    report = sync().push(dry_run=True)
    assert any("create I-DATA-COM-3201 parent 'Implementation of CTC algorithms'" in l for l in report.lines)
    assert "    estimated_hours: 1267" in report.lines and "    category: 'Atmosphere Calibration'" in report.lines
    assert path.read_text() == REGISTRY and writes(fake) == []
    sync().push()
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert [t.id for t in tasks] == [1, 2, 3] and [t.parent for t in tasks] == [None, 1, 1]
    assert fake.issues[2]["parent"]["id"] == 1 and fake.issues[1]["status"]["name"] == "Assigned"
    assert fake.issues[1]["custom_fields"][0]["value"] == "I-DATA-COM-3201"
    assert "I-DATA-COM-3201" in fake.issues[3]["description"]
    text = path.read_text()
    assert "# the umbrella task" in text and "status: Assigned        # reserved for the CCF teams" in text
    fake.calls.clear()
    again = sync().push()
    # a no-op push still checks the key (and so the server): one GET, no write
    assert fake.calls == [("GET", "/users/current.json")] and "nothing to push" in again.lines[0]


def test_status_dropped_by_the_workflow_is_set_after_creation(setup):
    path, fake, sync = setup
    fake.drop_status_on_create = True
    sync().push()
    assert [fake.issues[i]["status"]["name"] for i in (1, 2, 3)] == ["Assigned", "Assigned", "New"]
    assert ("PUT", "/issues/1.json") in fake.calls


def test_unmapped_status_is_an_error_before_anything_is_sent(setup):
    path, fake, sync = setup
    fake.statuses = {n: i for n, i in fake.statuses.items() if n != "Assigned"}
    with pytest.raises(SyncError, match="status 'Assigned' .* is not a status of this Redmine.*nothing was sent"):
        sync().push()
    assert writes(fake) == [] and path.read_text() == REGISTRY


def test_three_way_pull_and_push_with_conflicts(setup):
    path, fake, sync = setup
    sync().push()
    # Redmine: due of #1 and done ratio of #2 change; registry: due of #1 and status of #3 change
    fake.issues[1]["due_date"] = "2021-01-31"
    fake.issues[2]["done_ratio"] = 50
    fake.issues[1]["updated_on"] = fake.issues[2]["updated_on"] = fake.tick()
    text = path.read_text().replace("due: 2020-04-01", "due: 2020-12-31")
    text = text.replace("        status: New\n", "        status: In Progress\n")
    path.write_text(text)
    report = sync().pull()
    assert [(c.task, c.field, c.local, c.remote, c.base) for c in report.conflicts] == \
        [(1, "due", "2020-12-31", "2021-01-31", "2020-04-01")]
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert str(tasks[0].due) == "2020-12-31" and tasks[1].done_ratio == 50 and tasks[2].status == "In Progress"
    fake.calls.clear()
    report = sync().push()
    assert len(report.conflicts) == 1 and fake.issues[1]["due_date"] == "2021-01-31"   # not overwritten
    assert fake.issues[3]["status"]["name"] == "In Progress"                              # the local change went out
    sync().pull(prefer="remote")
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert str(tasks[0].due) == "2021-01-31"
    assert sync().pull().conflicts == [] and "nothing to push" in sync().push().lines[0]


def test_incremental_pull_asks_only_for_changes(setup):
    path, fake, sync = setup
    sync().push()
    sync().pull()
    fake.calls.clear()
    report = sync().pull()
    assert report.changed_in_registry == 0
    listing = [c for c in fake.calls if c[1] == "/issues.json"]
    # one listing of the changes, one read by id of the (3) registry tasks for their relations
    assert len(listing) == 2 and writes(fake) == []
    assert fake.calls == [("GET", "/users/current.json"), ("GET", "/issues.json"), ("GET", "/issues.json")]


@pytest.mark.parametrize("by_id_max", [100, 0], ids=["read-by-id", "relation-filters"])
def test_incremental_pull_sees_a_relation_added_or_removed_in_redmine(setup, monkeypatch, by_id_max):
    """Redmine does not move updated_on when a relation changes: an incremental pull still sees it
    (few tasks: read by id; many: the project's issues with relations, listed per relation type)."""
    path, fake, sync = setup
    monkeypatch.setattr(Sync, "BY_ID_MAX", by_id_max)
    sync().push()
    sync().pull()
    fake.relations[1] = {"id": 1, "issue_id": 2, "issue_to_id": 3, "relation_type": "precedes", "delay": 5}
    report = sync().pull()
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert local_values(tasks[2])["relations"] == [["follows", 2, 5]], report.lines
    assert local_values(tasks[1])["relations"] == []      # the mirror stays on one side
    assert "nothing to push" in sync().push().lines[0]
    del fake.relations[1]
    sync().pull()
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert local_values(tasks[2])["relations"] == []


def test_interrupted_create_is_adopted_not_duplicated(setup):
    path, fake, sync = setup
    fake.fail_after_post = 2      # the 2nd task is created but its answer never arrives
    with pytest.raises(RedmineError, match="did not answer"):
        sync().push()
    assert len(fake.issues) == 2 and "pending:" in path.read_text()
    fake.fail_after_post = None
    report = sync().push()
    assert any(l.startswith("adopted #2") for l in report.lines)
    assert len(fake.issues) == 3
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert [t.id for t in tasks] == [1, 2, 3] and "pending:" not in path.read_text()


def test_relations_follow_and_mirror(setup, tmp_path):
    path, fake, sync = setup
    text = REGISTRY.replace("      - subject: Implementation of CTC algorithms   # the umbrella task\n",
                            "      - subject: Develop CTC algorithms\n        role: upstream\n"
                            "      - subject: Implementation of CTC algorithms   # the umbrella task\n")
    path.write_text(text)
    sync().push()
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    upstream, parent = tasks[0], tasks[1]
    p = path.read_text().replace("        due: 2020-04-01\n",
                                 f"        due: 2020-04-01\n        relations:\n          - {{type: follows, task: {upstream.id}, delay: 30}}\n")
    path.write_text(p)
    sync().push()
    rel = next(iter(fake.relations.values()))
    assert (rel["issue_id"], rel["issue_to_id"], rel["relation_type"], rel["delay"]) == (upstream.id, parent.id, "precedes", 30)
    before = path.read_text()
    report = sync().pull(full=True)
    assert report.changed_in_registry == 0   # the mirror "precedes" is not added to the upstream task
    tasks = load(path, check_modules=False).registry.interfaces[0].tasks
    assert tasks[0].relations == [] and local_values(tasks[1])["relations"] == [["follows", upstream.id, 30]]
    del before


def test_cli_conflicts_plan_and_errors_with_the_fake(setup, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from icd.redmine import cli

    path, fake, sync = setup
    monkeypatch.setattr(cli, "TRANSPORT", fake)
    for var in ("REDMINE_URL", "REDMINE_PROJECT", "REDMINE_KEY_FILE", "ICD_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REDMINE_API_KEY", KEY)
    monkeypatch.setenv("ICD_CONFIG", str(tmp_path / "icd.toml"))
    (tmp_path / "icd.toml").write_text('[redmine]\nurl = "https://redmine.example.org"\ninterface_code_field = 1\n')
    runner = CliRunner()
    res = runner.invoke(cli.app, ["push", "-r", str(path)])
    assert res.exit_code == 0 and "created #1" in res.output and KEY not in res.output
    fake.issues[1]["status"] = {"id": 3, "name": "In Progress"}
    path.write_text(path.read_text().replace("status: Assigned        #", "status: Resolved        #"))
    res = runner.invoke(cli.app, ["conflicts", "-r", str(path)])
    assert res.exit_code == 3 and "CONFLICT #1 (I-DATA-COM-3201) status: registry 'Resolved', Redmine 'In Progress'" in res.output
    res = runner.invoke(cli.app, ["plan", "-r", str(path)])
    assert res.exit_code == 3 and "CONFLICT" in res.output
    long = path.read_text().replace("Test algorithms on partial array", "x" * 300)
    path.write_text(long.replace("      - id: 3\n        subject:", "      - subject:"))
    res = runner.invoke(cli.app, ["push", "-r", str(path), "--prefer", "local"])
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert res.exit_code == 1 and len(lines) == 1 and "422" in lines[0] and "Subject is too long" in lines[0]
    assert KEY not in res.output


def test_scaffold_plans_the_lifecycle_tasks_then_push_creates_them(setup):
    from icd.redmine.sync import scaffold

    path, fake, sync = setup
    text = REGISTRY.replace("    module: null\n    tests: []\n", "    module: null\n    tests: []\n"
                            "  - code: I-DATA-COM-3001\n    icd: DATA-COM\n    title: Raman LIDARs\n"
                            "    category: atmosphere\n    level: per site   # keep me\n")
    path.write_text(text)
    report = scaffold(path, ["I-DATA-COM-3001"], ["algorithms", "integration"])
    assert [l.split("'")[1] for l in report.lines] == [
        "Implementation of Raman LIDARs (I-DATA-COM-3001)", "Implement the algorithms (PIPE-CAL)",
        "Integrate them into the calibration pipeline (PIPE-CAL)"]
    assert "level: per site   # keep me" in path.read_text()
    sync().push()
    iface = load(path, check_modules=False).registry.interfaces[1]
    parent = iface.tasks[0]
    assert parent.id and all(t.parent == parent.id for t in iface.tasks[1:])
    assert fake.issues[parent.id]["category"]["name"] == "Atmosphere Calibration"
    assert "every stage already has a task" in scaffold(path, ["I-DATA-COM-3001"], ["algorithms"]).lines[0]
