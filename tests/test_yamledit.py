"""Edits of the registry by `icd redmine` keep what a person wrote (review of icd.redmine.yamledit)."""
from __future__ import annotations

import yaml

from icd.redmine.yamledit import YamlDoc

TEXT = """\
# registry
interfaces:
  - code: I-DATA-COM-3201   # the CTC
    tasks:
      - id: 8546
        subject: Implementation   # keep me
        status: Assigned        # Assigned with nobody: reserved
        relations:
          - {type: follows, task: 8529, delay: 30}
      - {id: 11108, subject: Integrate, stage: integration, status: New}  # a task in flow style
  - code: I-DATA-COM-0006
    tasks: [{id: 1, subject: a, stage: feedback}]   # a flow list
"""


def _edit(doc: YamlDoc) -> None:
    doc.set(("interfaces", 0, "tasks", 0, "status"), "In Progress")
    doc.set(("interfaces", 0, "tasks", 0, "done_ratio"), 10)
    doc.set(("interfaces", 0, "tasks", 1, "status"), "Assigned")
    doc.set(("interfaces", 0, "tasks", 1, "synced"), {"status": "Assigned", "_project": 1}, flow=True)
    doc.append_item(("interfaces", 1, "tasks"), {"subject": "new", "role": "stage", "stage": "algorithms"})


EXPECTED = {"interfaces": [
    {"code": "I-DATA-COM-3201", "tasks": [
        {"id": 8546, "subject": "Implementation", "status": "In Progress", "done_ratio": 10,
         "relations": [{"type": "follows", "task": 8529, "delay": 30}]},
        {"id": 11108, "subject": "Integrate", "stage": "integration", "status": "Assigned",
         "synced": {"status": "Assigned", "_project": 1}}]},
    {"code": "I-DATA-COM-0006", "tasks": [
        {"id": 1, "subject": "a", "stage": "feedback"},
        {"subject": "new", "role": "stage", "stage": "algorithms"}]}]}


def test_comments_values_and_flow_styles_survive_edits():
    doc = YamlDoc(TEXT)
    _edit(doc)
    out = doc.render()
    assert yaml.safe_load(out) == EXPECTED
    for kept in ("# registry", "# the CTC", "subject: Implementation   # keep me",
                 "status: In Progress        # Assigned with nobody: reserved",
                 "- {type: follows, task: 8529, delay: 30}", "# a task in flow style", "# a flow list"):
        assert kept in out, kept


def test_appending_to_a_flow_list_keeps_its_items():
    doc = YamlDoc(TEXT)
    doc.append_item(("interfaces", 1, "tasks"), {"subject": "b", "stage": "integration"})
    doc.append_item(("interfaces", 1, "tasks"), {"subject": "c", "stage": "algorithms"})
    tasks = yaml.safe_load(doc.render())["interfaces"][1]["tasks"]
    assert [t["subject"] for t in tasks] == ["a", "b", "c"]


def test_crlf_line_endings_are_kept(tmp_path):
    path = tmp_path / "interfaces.yaml"
    path.write_bytes(TEXT.replace("\n", "\r\n").encode())
    doc = YamlDoc.read(path)
    _edit(doc)
    doc.write(path)
    raw = path.read_bytes().decode()
    assert "\n" not in raw.replace("\r\n", ""), "every line still ends with CRLF"
    assert yaml.safe_load(raw) == EXPECTED
    untouched = [line for line in TEXT.split("\n") if "status" not in line and "tasks: [" not in line
                 and "flow style" not in line and line]
    for line in untouched:
        assert line + "\r\n" in raw


def test_an_empty_value_is_filled_as_key_space_value():
    text = "t:\n  assignee:\n  note: # nobody yet\n  due:"
    doc = YamlDoc(text)
    doc.set(("t", "assignee"), "carol")
    doc.set(("t", "note"), "x")
    doc.set(("t", "due"), "2026-01-01")
    out = doc.render()
    assert out == "t:\n  assignee: carol\n  note: x # nobody yet\n  due: '2026-01-01'\n"
    assert yaml.safe_load(out) == {"t": {"assignee": "carol", "note": "x", "due": "2026-01-01"}}


def test_a_value_from_redmine_stays_on_its_line():
    """Subjects and names come from Redmine: a line break in one must not spread over lines."""
    text = "interfaces:\n  - tasks:\n      - subject: old   # from Redmine\n        status: New\n"
    for value in ("line1\nline2", "crlf\r\nx", "a\x85b", "a\u2028b", "bell\x07", "a: b # c", "yes", "'q'", ""):
        doc = YamlDoc(text)
        doc.set(("interfaces", 0, "tasks", 0, "subject"), value)
        out = doc.render()
        assert out.count("\n") == text.count("\n") and "# from Redmine" in out
        assert yaml.safe_load(out)["interfaces"][0]["tasks"][0]["subject"] == value
