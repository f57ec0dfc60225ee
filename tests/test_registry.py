"""The registry model and every kind of validation error, with its file:line and wording."""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from registry_sample import CODES, SAMPLE, line_of, write  # noqa: E402

from icd import fastyaml, loader  # noqa: E402
from icd.model import Interface, Task, json_schema  # noqa: E402
from icd.registry import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def problems(text: str, tmp_path: Path) -> list:
    path = write(tmp_path, text)
    return load(path, check_modules=False).diagnostics


def only(diags, needle: str):
    found = [d for d in diags if needle in d.message]
    assert len(found) == 1, f"expected one diagnostic with {needle!r}, got {[str(d) for d in diags]}"
    return found[0]


# -- the bundled registry -----------------------------------------------------------------
ISSUE_CODES = (
    ["I-DATA-COM-0001", "I-DATA-COM-0006", "I-DATA-COM-3001", "I-DATA-COM-3011", "I-DATA-COM-3111",
     "I-DATA-COM-3121", "I-DATA-COM-3141", "I-DATA-COM-3201"]
    + [f"I-DATA-xST-{n:04d}" for n in (1, 2, 3, 4)]
    + [f"I-DATA-xST-{n:04d}" for n in range(101, 113)]
    + [f"I-DATA-xST-{n:04d}" for n in range(1001, 1006)]
)


def test_bundled_registry_is_valid_and_complete():
    loaded = load(ROOT / "interfaces.yaml", check_modules=False)
    assert loaded.diagnostics == []
    codes = {i.code for i in loaded.registry.interfaces}
    assert set(ISSUE_CODES) <= codes
    assert set(loaded.registry.icds) == {"DATA-COM", "DATA-xST", "DATA-ACTL"}
    assert loaded.index.by_icd.get("DATA-ACTL", []) == []
    # the named-but-uncoded atmosphere tasks are provisional, never an invented official code
    provisional = [i for i in loaded.registry.interfaces if i.provisional]
    assert provisional and all(i.display_code.endswith("(provisional)") for i in provisional)
    ctc = loaded.index.tasks_by_id[8546][1]
    assert (ctc.status, ctc.assignee, ctc.estimated_hours, ctc.start, ctc.due) == (
        "Assigned", None, 1267, dt.date(2017, 4, 1), dt.date(2020, 4, 1))
    assert ctc.relations[0].type == "follows" and ctc.relations[0].task == 8529 and ctc.relations[0].delay == 30


def test_sample_registry_loads(tmp_path):
    loaded = load(write(tmp_path), check_modules=False)
    assert loaded.ok, [str(d) for d in loaded.diagnostics]
    assert tuple(i.code for i in loaded.registry.interfaces) == CODES
    index = loaded.index
    assert index.by_code["I-DATA-xST-0106"].level == "per pixel"
    assert {i.code for i in index.by_person["carol"]} >= {"I-DATA-COM-3201", "I-DATA-xST-0106"}
    assert index.person_name("bob") == "B. Bob" and index.person_name(None) == "nobody"


# -- the model ------------------------------------------------------------------------------
def test_task_conventions():
    new_nobody = Task(subject="x", stage="algorithms", status="New")
    assigned_nobody = Task(subject="x", stage="algorithms", status="Assigned")
    assigned_someone = Task(subject="x", stage="algorithms", status="Assigned", assignee="carol")
    assert new_nobody.needs_volunteers and not new_nobody.reserved_for_ccf
    assert assigned_nobody.reserved_for_ccf and not assigned_nobody.needs_volunteers
    assert not assigned_someone.reserved_for_ccf and not assigned_someone.needs_volunteers
    late = Task(subject="x", stage="algorithms", status="In Progress", due=dt.date(2020, 1, 1))
    assert late.is_overdue(dt.date(2020, 1, 2)) and not late.is_overdue(dt.date(2020, 1, 1))
    done = Task(subject="x", stage="algorithms", status="Closed", due=dt.date(2020, 1, 1))
    assert not done.is_overdue(dt.date(2030, 1, 1))


def test_stage_status_and_current_stage():
    iface = Interface(code="I-DATA-xST-0106", icd="DATA-xST", title="t", category="camera", level="per pixel",
                      tasks=[Task(subject="a", stage="feedback", status="Closed"),
                             Task(subject="b", stage="algorithms", status="In Progress"),
                             Task(subject="c", stage="algorithms", status="New")])
    status = iface.stage_status()
    assert status["feedback"] == "Closed" and status["algorithms"] == "New" and status["integration"] is None
    assert iface.current_stage() == "algorithms"


@pytest.mark.parametrize("code", ["I-DATA-COM-12", "I-DATA-XST-0001", "DATA-COM-0001", "I-DATA-COM-0001x"])
def test_code_form(code, tmp_path):
    text = SAMPLE.replace("code: I-DATA-COM-0006", f"code: {code}")
    diag = only(problems(text, tmp_path), "is not an interface code")
    assert diag.line == line_of(text, f"code: {code}")
    assert "expected I-DATA-(COM|xST|ACTL)-NNNN" in diag.message


def test_code_of_another_icd(tmp_path):
    text = SAMPLE.replace("code: I-DATA-COM-0006", "code: I-DATA-xST-0006")
    diag = only(problems(text, tmp_path), "belongs to ICD DATA-xST, but icd is DATA-COM")
    assert diag.line == line_of(text, "code: I-DATA-xST-0006")


# -- every kind of validation error ---------------------------------------------------------------
def test_mistyped_person_key(tmp_path):
    text = SAMPLE.replace("{person: carol, wp: DATA, subproject: PIPE-Cal}\n    related",
                          "{person: carl, wp: DATA, subproject: PIPE-Cal}\n    related")
    diag = only(problems(text, tmp_path), "unknown person 'carl'")
    assert diag.message == "unknown person 'carl' (did you mean 'carol'?); people are defined under 'people:'"
    assert (diag.line, diag.column) == (line_of(text, "person: carl"), 18)
    assert str(diag).startswith(f"{tmp_path / 'interfaces.yaml'}:{diag.line}:18: unknown person")


def test_unknown_assignee(tmp_path):
    text = SAMPLE.replace("assignee: carol\n        estimated_hours: 40", "assignee: karol\n        estimated_hours: 40")
    diag = only(problems(text, tmp_path), "unknown assignee 'karol'")
    assert diag.line == line_of(text, "assignee: karol")


def test_duplicate_code(tmp_path):
    text = SAMPLE.replace("code: I-DATA-COM-3201", "code: I-DATA-COM-0006")
    diag = only(problems(text, tmp_path), "duplicate interface code")
    assert diag.message == f"duplicate interface code I-DATA-COM-0006 (first used at line {line_of(text, 'code: I-DATA-COM-0006')})"
    assert diag.line == line_of(text, "code: I-DATA-COM-0006", occurrence=2)


def test_duplicate_code_is_found_even_when_the_record_has_other_errors(tmp_path):
    text = SAMPLE.replace("code: I-DATA-COM-3201", "code: I-DATA-COM-0006").replace("status: In Progress", "status: Doing")
    diags = problems(text, tmp_path)
    only(diags, "duplicate interface code I-DATA-COM-0006")
    only(diags, "unknown status 'Doing'")


def test_yaml_syntax_error(tmp_path):
    text = SAMPLE.replace("pipeline_levels: [B, C]\n    provided_by:\n      - {person: bob",
                          "pipeline_levels: [B, C\n    provided_by:\n      - {person: bob")
    diags = problems(text, tmp_path)
    assert len(diags) == 1
    diag = diags[0]
    assert diag.message.startswith("YAML syntax error: ")
    assert "flow sequence" in diag.message
    assert line_of(text, "[B, C\n" if False else "pipeline_levels: [B, C") <= diag.line <= line_of(text, "pipeline_levels: [B, C") + 2


def test_yaml_syntax_error_bad_indentation(tmp_path):
    text = SAMPLE.replace("    title: \"CTC implementation\"", "   title: \"CTC implementation\"")
    diags = problems(text, tmp_path)
    assert len(diags) == 1 and diags[0].message.startswith("YAML syntax error")
    assert diags[0].line == line_of(text, 'title: "CTC implementation"')


def test_due_date_before_start(tmp_path):
    text = SAMPLE.replace("        due: 2020-04-01", "        due: 2016-04-01")
    diag = only(problems(text, tmp_path), "is before its start date")
    assert diag.message == "task #8546: due date 2016-04-01 is before its start date 2017-04-01"
    assert diag.line == line_of(text, "due: 2016-04-01")


def test_duplicate_yaml_key(tmp_path):
    text = SAMPLE.replace('    title: "Optical PSF characterisation"\n',
                          '    title: "Optical PSF characterisation"\n    title: "PSF"\n')
    diag = only(problems(text, tmp_path), "duplicate key 'title'")
    first = line_of(text, 'title: "Optical PSF characterisation"')
    assert diag.message == (f"duplicate key 'title' (first defined at line {first}); "
                            "YAML would silently keep only the last one")
    assert (diag.line, diag.column) == (first + 1, 5)


def test_wrong_date(tmp_path):
    text = SAMPLE.replace("start: 2017-04-01", "start: 2017-04-31")
    diag = only(problems(text, tmp_path), "is not a valid date")
    assert diag.message == ("interface I-DATA-COM-3201, task #8546: start date '2017-04-31' is not a valid date "
                            "(write YYYY-MM-DD, e.g. 2026-11-25)")
    assert (diag.line, diag.column) == (line_of(text, "start: 2017-04-31"), 16)


def test_unknown_status(tmp_path):
    text = SAMPLE.replace("status: In Progress", "status: In Progres")
    diag = only(problems(text, tmp_path), "unknown status")
    assert diag.message == ("interface I-DATA-COM-3201, task #11108: unknown status 'In Progres' "
                            "(did you mean 'In Progress'?); "
                            "expected one of: New, Assigned, In Progress, Resolved, Feedback, Closed, Rejected")
    assert diag.line == line_of(text, "status: In Progres")


def test_unknown_field_suggests_the_right_one(tmp_path):
    text = SAMPLE.replace("    category: pointing\n", "    categroy: pointing\n")
    diags = problems(text, tmp_path)
    diag = only(diags, "unknown field 'categroy'")
    assert "(did you mean 'category'?)" in diag.message
    assert not any("missing required field 'category'" in d.message for d in diags)  # said once
    assert diag.line == line_of(text, "categroy: pointing")


def test_unknown_parent_and_related(tmp_path):
    text = SAMPLE.replace("parent: 8546", "parent: 8547").replace("related: [I-DATA-COM-3201]", "related: [I-DATA-COM-3202]")
    diags = problems(text, tmp_path)
    assert only(diags, "parent task #8547 is not in the registry").line == line_of(text, "parent: 8547")
    assert "(did you mean 'I-DATA-COM-3201'?)" in only(diags, "related interface I-DATA-COM-3202").message


def test_negative_hours_and_ids(tmp_path):
    text = SAMPLE.replace("estimated_hours: 40", "estimated_hours: -4").replace("id: 20001", "id: -3")
    diags = problems(text, tmp_path)
    assert only(diags, "estimated hours must be at least 0").line == line_of(text, "estimated_hours: -4")
    assert only(diags, "id must be greater than 0").line == line_of(text, "id: -3")


def test_broken_copy_reports_every_error_at_once(tmp_path):
    text = (SAMPLE.replace("{person: bob, wp: COM-CCF}\n      - {person: carol",
                           "{person: bobb, wp: COM-CCF}\n      - {person: carol")
            .replace("code: I-DATA-xST-1005", "code: I-DATA-xST-0106")
            .replace("        due: 2020-04-01", "        due: 2016-04-01")
            .replace("status: In Progress", "status: Started")
            .replace("    status: placeholder", "    status: placeholder\n    status: empty")
            .replace("date: 2026-11-25\n    status: under definition", "date: 2026-02-30\n    status: under definition"))
    path = write(tmp_path, text)
    diags = load(path, check_modules=False).diagnostics
    messages = "\n".join(str(d) for d in diags)
    for needle in ("unknown person 'bobb'", "duplicate interface code I-DATA-xST-0106", "is before its start date",
                   "unknown status 'Started'", "duplicate key 'status'", "'2026-02-30' is not a valid date"):
        assert needle in messages
    assert len(diags) == 6
    assert [d.line for d in diags] == sorted(d.line for d in diags)
    assert all(str(d).startswith(f"{path}:{d.line}:{d.column}: ") for d in diags)


def test_validation_never_writes(tmp_path):
    text = SAMPLE.replace("person: carol, wp: DATA, subproject: PIPE-Cal}\n    related", "person: x, wp: DATA}\n    related")
    path = write(tmp_path, text)
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    assert load(path, check_modules=False).diagnostics
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before


def test_missing_and_empty_files(tmp_path):
    diags = load(tmp_path / "absent.yaml", check_modules=False).diagnostics
    assert [d.message for d in diags] == ["file not found"]
    diags = problems("# only a comment\n", tmp_path)
    assert "the registry is empty" in diags[0].message


def test_json_schema():
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"people", "icds", "interfaces"} <= set(schema["properties"])
    task = schema["$defs"]["Task"]["properties"]["status"]
    assert "In Progress" in str(task)


# -- the fast YAML reader agrees with libyaml -------------------------------------------------------
def _libyaml(text: str):
    node = yaml.compose(text, Loader=loader._Loader)
    values, keys, diags = {}, {}, []
    data = loader._convert(node, (), values, keys, diags, "f")
    return data, values, keys, diags


EDGE = """\
a:
b: 1
c:
  - x: 1
    y: >-
      hello
      world
  -
    z: [p, 'q']
d:
- 1
- yes
e: {k: v, m: 'it''s'}
f: |
  l1

  l2

g: >
  a

  b
  c
h: 'x' # comment
i: "y"
j: 1_000
k: 0x1f
l: 2020-01-01
m: ~
n: -1.5
o: a#b
p: x # y: z
'quoted key': 3
q: [ ]
r: {}
s: null
t: 'a'   # c
"""


@pytest.mark.parametrize("name", ["bundled", "sample", "edge", "duplicates"])
def test_fast_reader_matches_libyaml(name):
    text = {"bundled": (ROOT / "interfaces.yaml").read_text(encoding="utf-8"), "sample": SAMPLE, "edge": EDGE,
            "duplicates": SAMPLE.replace("    level: per pixel\n", "    level: per pixel\n    level: per camera\n")
            .replace("{person: bob, wp: COM-CCF}", "{person: bob, wp: COM-CCF, person: carol}")}[name]
    fast = fastyaml.parse(text, "f")
    slow = _libyaml(text)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    assert fast[3] == slow[3]


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: one\n  two\n", "a: [1, [2]]\n", "---\na: 1\n", "a:\n\t- 1\n",
    "a: 'multi\n  line'\n", "- 1\n- 2\n", "a: b: c\n", "<<: {a: 1}\n",
])
def test_fast_reader_hands_over_to_libyaml(text):
    with pytest.raises(fastyaml.Unsupported):
        fastyaml.parse(text, "f")
    try:
        expected = _libyaml(text)[0]
    except yaml.YAMLError:
        expected = None
    if expected is not None:  # what the loader returns is libyaml's reading
        assert loader.load_yaml("f", text=text)[0] == expected


def test_errors_in_the_same_task_do_not_hide_each_other(tmp_path):
    text = SAMPLE.replace("        status: Assigned\n        start: 2017-04-01\n        due: 2020-04-01",
                          "        status: Asigned\n        start: 2017-04-01\n        due: 2016-04-01")
    diags = problems(text, tmp_path)
    assert "(did you mean 'Assigned'?)" in only(diags, "unknown status 'Asigned'").message
    assert only(diags, "due date 2016-04-01 is before its start date 2017-04-01").line == line_of(text, "due: 2016-04-01")


def test_lazy_positions_equal_eager_ones():
    text = (ROOT / "interfaces.yaml").read_text(encoding="utf-8")
    data, positions, diags = fastyaml.parse_lazy(text, "f")
    eager = fastyaml.parse(text, "f")
    assert data == eager[0] and diags == []
    assert positions.values == eager[1] and positions.keys == eager[2]
    assert positions.of(("interfaces", 7, "tasks", 1, "due")) == eager[1][("interfaces", 7, "tasks", 1, "due")]
    # a duplicate key makes the reader keep exact positions from the start
    dup = SAMPLE.replace("    level: per pixel\n", "    level: per pixel\n    level: per camera\n")
    data, positions, diags = fastyaml.parse_lazy(dup, "f")
    assert len(diags) == 1 and positions.keys == fastyaml.parse(dup, "f")[2]


def test_wrong_types_are_sentences_not_tracebacks(tmp_path):
    text = (SAMPLE.replace("  - code: I-DATA-xST-1005", "  - code: [I-DATA-xST-1005]")
            .replace("      - id: 20001", "      - id: [20001]")
            .replace("    related: [I-DATA-COM-3201]", "    related: [I-DATA-COM-3201]\n    tasks: 5"))
    diags = problems(text, tmp_path)
    assert only(diags, "code must be text, not list").line == line_of(text, "code: [I-DATA-xST-1005]")
    assert only(diags, "id must be a whole number, not list").line == line_of(text, "id: [20001]")
    assert only(diags, "tasks must be a list, not 5").line == line_of(text, "tasks: 5")


# inputs on which the fast reader once disagreed with libyaml (review of the fast reader)
@pytest.mark.parametrize("text", [
    "a: [x: y]\n",                                  # a one-pair mapping inside a flow sequence
    "a: #\n", "a:    # c\n", "'a': # c\n", "a :  # c\n",  # an empty value stands right after the colon
    "a: \u2028\n", "a: x\x85y\n", "a: x\x01\n", "a: x\x7f\n", "a: x\ufeffy\n",  # line breaks, control characters
    "p:\n  - {:person: x, wp: D}\n", "p:\n  - {person: @x, wp: D}\n", "p:\n  - {person: x, wp: D: E}\n",
    "p:\n  - {person: x role: D}\n", "p:\n  - {person: x #y, wp: D}\n", "p:\n  - {|person: x}\n",
    "p: [B,* C]\n", "p: [`]\n", "p: {a: >D}\n", "p: [?x]\n", "p: [- x]\n",
    "a: |\n  x",                                   # block scalar on the last line, no final line break
])
def test_fast_reader_agrees_with_libyaml_or_hands_over(text):
    try:
        expected = _libyaml(text)
    except yaml.YAMLError:
        expected = None
    try:
        fast = fastyaml.parse(text, "f")
    except fastyaml.Unsupported:
        return
    assert expected is not None, "the fast reader accepted text that libyaml rejects"
    assert fast == expected
    assert fastyaml.parse(text, "f", record=False)[0] == expected[0]


# -- no error hides another, and none is invented (review) ----------------------------------------
def test_people_of_an_icd_with_an_error_are_still_checked(tmp_path):
    text = (SAMPLE.replace("    date: 2026-11-25\n    status: ready", "    date: 2020-13-01\n    status: ready", 1)
            .replace("      - {person: bob, role: COM-CCF}", "      - {person: bobb, role: COM-CCF}", 1))
    diags = problems(text, tmp_path)
    assert only(diags, "date '2020-13-01' is not a valid date").line == line_of(text, "date: 2020-13-01")
    assert only(diags, "unknown person 'bobb' (did you mean 'bob'?)").line == line_of(text, "person: bobb")


def test_providers_and_related_of_an_interface_with_an_error_are_still_checked(tmp_path):
    text = (SAMPLE.replace("      - {person: carol, wp: DATA, subproject: PIPE-Cal}\n    tasks:",
                           "      - {person: carl, wp: DATA, subproject: PIPE-Cal}\n    related: [I-DATA-COM-0060]\n"
                           "    tasks:", 1)
            .replace("        status: Assigned\n", "        status: Asigned\n", 1))
    diags = problems(text, tmp_path)
    assert len(diags) == 3, [str(d) for d in diags]
    assert only(diags, "unknown person 'carl'").line == line_of(text, "person: carl")
    assert only(diags, "related interface I-DATA-COM-0060 is not in the registry").line == line_of(text, "I-DATA-COM-0060")
    assert only(diags, "task #8546: unknown status 'Asigned'").line == line_of(text, "status: Asigned")


def test_a_person_with_an_error_is_not_unknown_where_referenced(tmp_path):
    text = SAMPLE.replace("  bob:\n    name: B. Bob\n    wp: COM-CCF", "  bob:\n    name: B. Bob\n    wpp: COM-CCF", 1)
    diags = problems(text, tmp_path)
    assert [d.message for d in diags] == ["person 'bob': unknown field 'wpp' (did you mean 'wp'?)"]


def test_a_negative_task_id_names_the_task(tmp_path):
    text = SAMPLE.replace("      - id: 8546", "      - id: -8546", 1)
    diag = only(problems(text, tmp_path), "id must be greater than 0")
    assert diag.message == "interface I-DATA-COM-3201, task 2: id must be greater than 0, not -8546"
    assert diag.line == line_of(text, "id: -8546")


def test_test_files_of_a_copy_elsewhere_are_found_from_the_project(tmp_path, monkeypatch):
    """A copy of the registry in another folder: test paths (relative to the project) still resolve."""
    text = SAMPLE.replace("    level: per telescope\n    pipeline_levels: [B, C]\n    provided_by:\n"
                          "      - {person: carol",
                          "    level: per telescope\n    tests: [tests/test_registry.py, tests/test_nothing.py]\n"
                          "    pipeline_levels: [B, C]\n    provided_by:\n      - {person: carol", 1)
    monkeypatch.chdir(ROOT)
    diags = load(write(tmp_path, text), check_modules=True, module_loader=lambda name: None).diagnostics
    assert [d.message.split(" (looked in")[0] for d in diags] == [
        "test file tests/test_nothing.py of I-DATA-COM-3201 does not exist"]


@pytest.mark.parametrize("old, new, where, words", [
    ('title: "CTC implementation"', 'title: "CTC implementation', 'title: "CTC implementation',
     "this quoted value runs over several lines: is its closing quote missing?"),
    ("level: per site\n", "level: 'per site\n", "level: 'per site", "the quote opened here is never closed"),
    ("    title: \"CTC implementation\"", "\ttitle: \"CTC implementation\"", "\ttitle", "a tab character: indent with spaces only"),
    ("    category: atmosphere\n    level: per site", "    category atmosphere\n    level: per site", "category atmosphere",
     "this line has no ':' after its key"),
    ("    title: \"CTC implementation\"", "     title: \"CTC implementation\"", "     title: \"CTC",
     "a ':' where YAML does not expect one"),
    ("    title: \"CTC implementation\"", "   title: \"CTC implementation\"", "   title: \"CTC implementation",
     "this line is not aligned with the lines above it"),
    ("{person: bob, wp: COM-CCF}", "{person: bob, wp: COM-CCF", "{person: bob, wp: COM-CCF",
     "the '{' here is not closed by '}'"),
    ('title: "CTC implementation"', "title: 'CTC's implementation'", "CTC's",
     "to put a quote inside a quoted value, double it"),
    ("    category: atmosphere\n    level: per site", "    category: @atmosphere\n    level: per site", "@atmosphere",
     "'@' cannot start a value: put the value in quotes"),
    ("interfaces:\n", "---\ninterfaces:\n", "---", "a second YAML document ('---')"),
])
def test_yaml_syntax_errors_are_sentences_at_the_mistake(tmp_path, old, new, where, words):
    assert SAMPLE.count(old) >= 1
    text = SAMPLE.replace(old, new, 1)
    (diag,) = problems(text, tmp_path)
    assert diag.message.startswith("YAML syntax error: ") and words in diag.message, diag.message
    assert "[YAML: " in diag.message  # libyaml's own words stay, for those who know them
    assert diag.line == line_of(text, where)


def test_a_yes_no_value_is_not_taken_for_a_number(tmp_path):
    text = (SAMPLE.replace("      - id: 8546", "      - id: yes", 1)
            .replace("          - {type: follows, task: 8529, delay: 30}", "          - {type: follows, task: on, delay: 30}"))
    diags = problems(text, tmp_path)
    assert only(diags, "task 2: id must be a number, not True").line == line_of(text, "id: yes")
    assert only(diags, "task must be a number, not True").line == line_of(text, "task: on")


def test_an_empty_choice_says_it_has_no_value(tmp_path):
    text = SAMPLE.replace("    category: pointing\n", "    category:\n", 1)
    diag = only(problems(text, tmp_path), "category has no value")
    assert diag.message == ("interface I-DATA-xST-1005: category has no value; "
                            "expected one of: camera, pointing, atmosphere, array, data model")


def test_an_interface_with_an_error_is_not_reported_missing_by_its_module(tmp_path):
    """A module claiming a code whose interface has a typo elsewhere: one error, the typo."""
    (tmp_path / "calib").symlink_to(ROOT / "calib")
    text = (ROOT / "interfaces.yaml").read_text(encoding="utf-8")
    start = text.index("  - code: I-DATA-xST-0106")
    level = text.index("    level: per pixel\n", start)
    text = text[:level] + "    level: per pixl\n" + text[level + len("    level: per pixel\n"):]
    diags = load(write(tmp_path, text)).diagnostics
    assert [d.message.split(":")[1].strip() for d in diags] == ["unknown level 'per pixl' (did you mean 'per pixel'?)"
                                                               "; expected one of"], [str(d) for d in diags]


def test_an_unknown_icd_name_is_reported_even_when_its_record_has_an_error(tmp_path):
    text = SAMPLE.replace("  DATA-ACTL:\n    title: ICD DATA-ACTL\n    version: \"0.1\"\n    date: 2026-11-25",
                          "  DATA-ACTLL:\n    title: ICD DATA-ACTL\n    version: \"0.1\"\n    date: 2026-11-32", 1)
    diags = problems(text, tmp_path)
    assert only(diags, "unknown ICD 'DATA-ACTLL' (did you mean 'DATA-ACTL'?)").line == line_of(text, "DATA-ACTLL:")
    assert only(diags, "date '2026-11-32' is not a valid date").line == line_of(text, "date: 2026-11-32")


def test_a_record_or_list_item_of_the_wrong_kind_is_named(tmp_path):
    text = (SAMPLE.replace("  - code: I-DATA-xST-1005\n", "  - just a string\n  - code: I-DATA-xST-1005\n", 1)
            .replace("      - id: 20001\n", "      - 7\n      - id: 20001\n", 1))
    diags = problems(text, tmp_path)
    assert only(diags, "interface #5 must be a mapping (key: value), not 'just a string'").line == line_of(
        text, "- just a string")
    assert only(diags, "interface I-DATA-xST-0106: item 1 of tasks must be a mapping (key: value), not 7").line == \
        line_of(text, "      - 7")


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "- a\n- b\n", "a scalar\n", "[1, 2]\n", "---\n...\n"])
def test_no_registry_at_all_is_one_error_even_beside_calib(text):
    """Beside the project's calib/ (module check in both directions) a file that is not a mapping
    gives its one error: no crash, and no 'module claims interface ...' for every module."""
    loaded = load(ROOT / "not-a-registry.yaml", text=text, check_modules=True)
    assert len(loaded.diagnostics) == 1, [str(d) for d in loaded.diagnostics]
    (diag,) = loaded.diagnostics
    assert diag.kind == "yaml-structure" and diag.column == 1
    assert diag.message.startswith(("the registry is empty", "the registry must be a mapping"))
    assert loaded.registry.interfaces == [] and not loaded.ok


def test_a_module_claiming_an_unknown_code_is_placed_at_interfaces(tmp_path):
    text = (ROOT / "interfaces.yaml").read_text(encoding="utf-8").replace(
        "code: I-DATA-COM-3011", "code: I-DATA-COM-3001")
    loaded = load(ROOT / "copy.yaml", text=text, check_modules=True)
    diag = only(loaded.diagnostics, "claims interface I-DATA-COM-3011")
    assert diag.line == line_of(text, "interfaces:") and diag.column == 1
