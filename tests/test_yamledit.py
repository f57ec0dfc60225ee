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


# -- every text the sync writes reads back as the same text (issue 9, item 1) --------------------
from hypothesis import HealthCheck, example, given, settings, strategies as st  # noqa: E402

from icd.loader import load_yaml  # noqa: E402
from icd.redmine.yamledit import scalar_text  # noqa: E402

SYNC_TEXT = """\
# registry   (comments must survive)
schema_version: 1
interfaces:
  - code: I-DATA-COM-3201   # the CTC
    tasks:
      - subject: old   # from Redmine
        status: New
        synced: {subject: old}
"""
NASTY = ["Coma model [v2]", "Construct the data structure and storage (DM, ARCH)", ",[]{}:#&*!|>'\"%@`",
         " lead", "trail ", "", "yes", "no", "null", "~", "1e3", "0x1", "0o7", "1_000", ".inf", "2020-04-01",
         "a: b", "a #b", "- a", "? a", "{a}", "[v2]", "x\ty", "line\nbreak", "é ü ∑ 🚀", "'", '"', "\\", "...", "---"]
texts = st.one_of(st.sampled_from(NASTY), st.text(),
                  st.text(alphabet=st.sampled_from(list(",[]{}:#&*!|>'\"%@` -?.\\\t\nab01")), max_size=12))
keys = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
values = st.recursive(st.one_of(texts, st.integers(), st.booleans(), st.none()),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def _read_both(text: str):
    """What the registry loader (fast reader, libyaml fallback) and plain libyaml read."""
    data, _, diags = load_yaml("t.yaml", text)
    assert not diags, diags
    assert data == yaml.safe_load(text)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
@example("Coma model [v2]")
@example("Construct the data structure and storage (DM, ARCH)")
def test_any_text_survives_every_place_the_sync_writes_it(text):
    doc = YamlDoc(SYNC_TEXT)
    task = ("interfaces", 0, "tasks", 0)
    doc.set(task + ("subject",), text)
    doc.set(task + ("synced",), {"subject": text, "relations": [["follows", 1, None]], text: [text]}, flow=True)
    doc.set(("redmine",), {"url": "http://127.0.0.1:3000", "pending": [{"code": "I-DATA-COM-3201", "subject": text}],
                           "migration": {"url": "u", "ids": {"8546": 7}, "pending": ["I-DATA-COM-3201", text]},
                           "unknown": {"12": f"I-DATA-COM-0001: {text}"}})
    out = doc.render()
    data = _read_both(out)
    t = data["interfaces"][0]["tasks"][0]
    assert t["subject"] == text and t["synced"] == {"subject": text, "relations": [["follows", 1, None]], text: [text]}
    assert data["redmine"]["pending"] == [{"code": "I-DATA-COM-3201", "subject": text}]
    assert data["redmine"]["migration"]["pending"] == ["I-DATA-COM-3201", text]
    assert data["redmine"]["migration"]["ids"] == {"8546": 7}
    assert data["redmine"]["unknown"] == {"12": f"I-DATA-COM-0001: {text}"}
    assert "# the CTC" in out and "# from Redmine" in out
    # and again on the written text (a replaced, not an inserted, bookkeeping section)
    doc2 = YamlDoc(out)
    doc2.set(("redmine", "pending"), [{"code": "X", "subject": text}])
    assert _read_both(doc2.render())["redmine"]["pending"] == [{"code": "X", "subject": text}]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_nested_values_survive_block_and_flow(value):
    for flow in (False, True):
        doc = YamlDoc(SYNC_TEXT)
        doc.set(("interfaces", 0, "tasks", 0, "note"), value, flow=flow)
        doc.set(("interfaces", 0, "tasks", 0, "synced"), {"v": value}, flow=True)
        doc.set(("redmine",), {"v": value, "w": [value]})
        data = _read_both(doc.render())
        assert data["interfaces"][0]["tasks"][0]["note"] == value
        assert data["interfaces"][0]["tasks"][0]["synced"] == {"v": value}
        assert data["redmine"] == {"v": value, "w": [value]}


def test_subjects_with_flow_indicators_are_quoted_in_flow_context():
    """The regression of issue 9: '[', ',' in a subject broke the synced: and pending: flow mappings."""
    assert scalar_text({"subject": "Coma model [v2]"}) == "{subject: 'Coma model [v2]'}"
    assert scalar_text(["Construct the data structure and storage (DM, ARCH)"]) == \
        "['Construct the data structure and storage (DM, ARCH)']"
    assert scalar_text("plain words") == "plain words"   # no needless quotes
