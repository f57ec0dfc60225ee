"""Every command of the `icd` CLI through typer's runner, on a small registry in tmp_path."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from registry_sample import CODES, SAMPLE, line_of, write  # noqa: E402

from icd.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture()
def reg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write(tmp_path)


def icd(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


# -- validate -------------------------------------------------------------------------------------
def test_validate_ok(reg):
    result = icd("validate", "--no-modules")
    assert result.exit_code == 0
    assert result.stdout.strip() == "OK: 5 interfaces in 3 ICDs (interfaces.yaml)"


def test_validate_reports_every_error_and_exits_1(reg, tmp_path):
    text = (SAMPLE.replace("{person: bob, wp: COM-CCF}\n      - {person: carol", "{person: bobb, wp: COM-CCF}\n      - {person: carol")
            .replace("code: I-DATA-xST-1005", "code: I-DATA-xST-0106")
            .replace("        due: 2020-04-01", "        due: 2016-04-01"))
    broken = write(tmp_path, text, "broken.yaml")
    before = broken.read_bytes()
    result = icd("validate", "--no-modules", "--registry", "broken.yaml")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"broken.yaml:{line_of(text, 'person: bobb')}:18: unknown person 'bobb' (did you mean 'bob'?); "
        "people are defined under 'people:'",
        f"broken.yaml:{line_of(text, 'due: 2016-04-01')}:14: task #8546: due date 2016-04-01 is before its start date 2017-04-01",
        f"broken.yaml:{line_of(text, 'code: I-DATA-xST-0106', 2)}:11: duplicate interface code I-DATA-xST-0106 "
        f"(first used at line {line_of(text, 'code: I-DATA-xST-0106')})",
    ]
    assert "3 problems in broken.yaml" in result.stderr
    assert broken.read_bytes() == before  # validation only reads


def test_validate_json(reg, tmp_path):
    write(tmp_path, SAMPLE.replace("status: In Progress", "status: Doing"), "bad.yaml")
    result = icd("validate", "--no-modules", "-r", "bad.yaml", "--format", "json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["file"] == "bad.yaml"
    (err,) = payload["errors"]
    assert set(err) == {"file", "line", "column", "message", "kind"}
    assert "unknown status 'Doing'" in err["message"]
    ok = json.loads(icd("validate", "--no-modules", "--format", "json").stdout)
    assert ok == {"file": "interfaces.yaml", "ok": True, "interfaces": 5, "icds": 3, "errors": []}


def test_validate_syntax_error_is_a_sentence_not_a_traceback(reg, tmp_path):
    write(tmp_path, "people:\n  a: [1, 2\nicds: {}\n", "syntax.yaml")
    result = icd("validate", "-r", "syntax.yaml")
    assert result.exit_code == 1
    assert result.stdout.startswith("syntax.yaml:2:6: YAML syntax error: the '[' here is not closed by ']'")
    assert "Traceback" not in result.output
    missing = icd("validate", "-r", "absent.yaml")
    assert missing.exit_code == 1 and missing.stdout.startswith("absent.yaml:1:1: file not found")


def test_global_registry_option_and_env(reg, tmp_path, monkeypatch):
    other = tmp_path / "sub"
    other.mkdir()
    write(other, SAMPLE.replace("  - code: I-DATA-xST-1005\n", "  - code: I-DATA-xST-1004\n"), "other.yaml")
    assert "OK: 5 interfaces" in icd("--registry", "sub/other.yaml", "validate", "--no-modules").stdout
    assert "I-DATA-xST-1004" in icd("--registry", "sub/other.yaml", "list").stdout
    # the command's own --registry wins over the global one
    assert "I-DATA-xST-1005" in icd("--registry", "sub/other.yaml", "list", "--registry", "interfaces.yaml").stdout
    monkeypatch.setenv("ICD_REGISTRY", "sub/other.yaml")
    assert "I-DATA-xST-1004" in icd("list").stdout


# -- list and show -----------------------------------------------------------------------------
def test_list_plain_when_piped(reg):
    result = icd("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["code", "icd", "title", "category", "level", "stage", "stage_status", "tasks", "evidence"]
    assert [line.split("\t")[0] for line in lines[1:]] == list(CODES)
    row = dict(zip(lines[0].split("\t"), lines[2].split("\t")))
    assert row == {"code": "I-DATA-COM-3201", "icd": "DATA-COM", "title": "CTC implementation", "category": "atmosphere",
                   "level": "per telescope", "stage": "algorithms", "stage_status": "Assigned", "tasks": "3",
                   "evidence": "none"}


@pytest.mark.parametrize("args, expected", [
    (["--icd", "DATA-xST"], ["I-DATA-xST-0106", "I-DATA-xST-1005"]),
    (["--icd", "xst"], ["I-DATA-xST-0106", "I-DATA-xST-1005"]),
    (["--icd", "DATA-ACTL"], []),
    (["--category", "pointing"], ["I-DATA-xST-1005"]),
    (["--stage", "algorithms"], ["I-DATA-COM-3201"]),
    (["--stage", "none"], ["I-DATA-COM-0006", "I-DATA-xST-1005"]),
    (["--stage", "done"], ["I-DATA-xST-0106"]),
    (["--stage", "feedback"], ["PROV-DATA-COM-ATM-SELECTION"]),
    (["--status", "in progress"], ["I-DATA-COM-3201"]),
    (["--status", "New"], ["I-DATA-COM-3201", "PROV-DATA-COM-ATM-SELECTION"]),
    (["--person", "carol"], ["I-DATA-COM-0006", "I-DATA-COM-3201", "I-DATA-xST-0106", "I-DATA-xST-1005"]),
    (["--person", "B. Bob"], ["I-DATA-COM-0006", "I-DATA-COM-3201", "PROV-DATA-COM-ATM-SELECTION"]),
    (["--icd", "COM", "--status", "Assigned", "--person", "carol"], ["I-DATA-COM-3201"]),
])
def test_list_filters_json(reg, args, expected):
    result = icd("list", "--json", *args)
    assert result.exit_code == 0, result.output
    assert [r["code"] for r in json.loads(result.stdout)] == expected


@pytest.mark.parametrize("args, message", [
    (["--icd", "DATA-COMM"], "unknown ICD 'DATA-COMM' (did you mean 'DATA-COM'?)"),
    (["--category", "camra"], "unknown category 'camra' (did you mean 'camera'?)"),
    (["--stage", "testing"], "unknown stage 'testing'"),
    (["--status", "Done"], "unknown status 'Done'"),
    (["--person", "zoe"], "unknown person 'zoe'"),
])
def test_list_unknown_filter_value_exits_2(reg, args, message):
    result = icd("list", *args)
    assert result.exit_code == 2
    assert message in result.stderr and "choose one of:" in result.stderr


def test_list_refuses_an_invalid_registry(reg, tmp_path):
    write(tmp_path, SAMPLE.replace("status: In Progress", "status: Doing"), "bad.yaml")
    result = icd("list", "-r", "bad.yaml")
    assert result.exit_code == 1
    assert "unknown status 'Doing'" in result.stderr and "has 1 problem" in result.stderr


def test_show(reg):
    result = icd("show", "I-DATA-COM-3201")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("I-DATA-COM-3201 — CTC implementation")
    assert "Provided by:     C. Carol (DATA, PIPE-Cal)" in out
    assert "#8546   Assigned" in out and "nobody (reserved for the CCF teams)" in out
    assert "https://forge.cta-observatory.org/issues/8546" in out
    assert "Evidence:        no evidence yet" in out
    assert "Assigned with nobody means reserved for the CCF teams" in out
    prov = icd("show", "prov-data-com-atm-selection").stdout
    assert prov.startswith("PROV-DATA-COM-ATM-SELECTION (provisional) — ")
    assert "(not yet in Redmine)" in prov and "volunteers wanted" in prov


def test_show_json_and_unknown_code(reg):
    payload = json.loads(icd("show", "I-DATA-xST-0106", "--json").stdout)
    assert payload["code"] == "I-DATA-xST-0106" and payload["current_stage"] == "all stages done"
    assert payload["stage_status"]["algorithms"] == "Resolved" and payload["evidence"] is None
    result = icd("show", "I-DATA-COM-3202")
    assert result.exit_code == 2
    assert "no interface I-DATA-COM-3202 in interfaces.yaml (did you mean I-DATA-COM-3201?)" in result.stderr


# -- doc, report, snapshot, schema ------------------------------------------------------------------
def test_doc_one_icd(reg, tmp_path):
    result = icd("doc", "DATA-COM", "--out", "docs")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["wrote docs/DATA-COM.md", "wrote docs/DATA-COM.html"]
    md = (tmp_path / "docs" / "DATA-COM.md").read_text()
    assert md.startswith("# ICD DATA-COM") and "## Table 1: list of interfaces" in md
    only_html = icd("doc", "xst", "--format", "html", "--out", "docs")
    assert only_html.stdout.splitlines() == ["wrote docs/DATA-xST.html"]


def test_doc_all_and_usage_errors(reg, tmp_path):
    result = icd("doc", "--all")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.{e}" for n in ("DATA-COM", "DATA-xST", "DATA-ACTL") for e in ("md", "html"))
    assert icd("doc").exit_code == 2
    assert icd("doc", "DATA-COM", "--all").exit_code == 2
    bad = icd("doc", "DATA-XYZ")
    assert bad.exit_code == 2 and "unknown ICD 'DATA-XYZ'" in bad.stderr
    assert icd("doc", "--all", "--format", "pdf").exit_code == 2


def test_doc_with_evidence_and_redmine_url(reg, tmp_path):
    (tmp_path / "ev.json").write_text(json.dumps({"schema": 1, "results": {"I-DATA-xST-0106": {
        "code": "I-DATA-xST-0106", "module": "calib.camera.ffactor", "passed": True, "summary": "gain recovered",
        "metrics": {"gain_bias_percent": 0.12}, "criteria": {"gain_bias_percent": "|bias| < 0.5 %"},
        "duration_s": 1.5, "timestamp": "2026-11-25T10:00:00+00:00"}}}))
    result = icd("doc", "DATA-xST", "--format", "md", "--evidence", "ev.json", "--redmine-url", "https://rm.example.org/")
    assert result.exit_code == 0
    md = (tmp_path / "out" / "DATA-xST.md").read_text()
    assert "**pass** — gain recovered" in md and "| gain_bias_percent | 0.12 | \\|bias\\| &lt; 0.5 % |" in md
    assert "(https://rm.example.org/issues/20002)" in md
    (tmp_path / "broken.json").write_text("{not json")
    bad = icd("doc", "DATA-xST", "--evidence", "broken.json")
    assert bad.exit_code == 1 and "not a readable evidence file" in bad.stderr


def test_report_and_since(reg, tmp_path):
    snap = icd("snapshot", "--out", "snap.json")
    assert snap.exit_code == 0 and snap.stdout.strip() == "wrote snap.json"
    data = json.loads((tmp_path / "snap.json").read_text())
    assert data["registry"]["interfaces"][0]["code"] == "I-DATA-COM-0006"
    # edit the registry: one task changes status, one interface goes, one comes
    text = (SAMPLE.replace("status: In Progress", "status: Resolved")
            .replace("  - code: I-DATA-xST-1005\n", "  - code: I-DATA-xST-1004\n"))
    write(tmp_path, text)
    result = icd("report", "--since", "snap.json", "--today", "2026-11-25", "--out", "rep")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["wrote rep/report.md", "wrote rep/report.html"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Changes since the snapshot of" in md
    assert "| I-DATA-COM-3201 | #11108 | Integrate algorithms in DATA | In Progress | Resolved |" in md
    assert "- I-DATA-xST-1004 — Optical PSF characterisation (DATA-xST)" in md.split("### Added interfaces")[1]
    assert "- I-DATA-xST-1005 — Optical PSF characterisation (DATA-xST)" in md.split("### Removed interfaces")[1]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<svg" in html and "Changes since the snapshot" in html


def test_report_errors(reg, tmp_path):
    result = icd("report", "--since", "absent.json")
    assert result.exit_code == 1 and "snapshot file not found" in result.stderr
    (tmp_path / "x.json").write_text("[1, 2]")
    assert "not a cta-icd snapshot" in icd("report", "--since", "x.json").stderr
    assert icd("report", "--today", "25/11/2026").exit_code == 2
    # a damaged snapshot is one line, not a traceback
    for damaged in ('{"registry": {"interfaces": 5}}', '{"registry": {"interfaces": [{"code": "I-DATA-COM-3201", "tasks": [1]}]}}'):
        (tmp_path / "d.json").write_text(damaged)
        result = icd("report", "--since", "d.json")
        assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
        assert result.stderr.startswith("error: d.json: not a snapshot written by `icd snapshot`")


def test_snapshot_default_name(reg, tmp_path):
    result = icd("snapshot")
    assert result.exit_code == 0
    (path,) = (tmp_path / "out").glob("snapshot-*.json")
    assert result.stdout.strip() == f"wrote out/{path.name}"


def test_schema(reg, tmp_path):
    result = icd("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"].startswith("cta-icd") and "interfaces" in schema["properties"]
    assert icd("schema", "--out", "s.json").exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


# -- help ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["validate", "list", "show", "doc", "report", "snapshot", "schema"])
def test_help_has_examples_and_exit_codes(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.stdout and f"icd {command}" in result.stdout
    assert "Exit codes" in result.stdout or command == "schema" and "Exit" in result.stdout


def test_main_help_and_version():
    result = runner.invoke(app, [])
    assert "validate" in result.output and "report" in result.output
    assert runner.invoke(app, ["--version"]).stdout.startswith("icd ")


@pytest.mark.parametrize("command", [["redmine"], ["redmine", "pull"], ["redmine", "plan"], ["redmine", "push"],
                                     ["redmine", "conflicts"], ["redmine", "publish"], ["redmine", "scaffold"],
                                     ["run"], ["sample"]])
def test_every_other_command_has_examples_in_its_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.stdout and f"icd {' '.join(command)}" in result.stdout


def test_an_unreadable_evidence_file_is_named_in_one_line(reg, tmp_path):
    (tmp_path / "bin.json").write_bytes(bytes(range(256)))
    result = icd("report", "--evidence", "bin.json")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: bin.json: not a readable evidence file (not UTF-8 text); `icd run` writes one"


@pytest.mark.parametrize("width", [80, 150])
def test_the_terminal_table_keeps_the_title_and_fits(reg, monkeypatch, width):
    import icd.cli as cli

    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", str(width))
    result = icd("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= width for line in lines), max(map(len, lines))
    header = next(line for line in lines if "code" in line)
    assert "title" in header and "evidence" in header and ("level" in header) == (width >= 110)
    assert "Optical PSF" in result.stdout


# -- a file that is no registry; registry text that is not plain -----------------------------------
@pytest.mark.parametrize("text, line, message", [
    ("", 1, "the registry is empty (no YAML data, only blank lines or comments): expected the sections "
            "people, icds and interfaces"),
    ("# only a comment\n\n# and another\n", 1, "the registry is empty (no YAML data, only blank lines or "
                                              "comments): expected the sections people, icds and interfaces"),
    ("- people\n- icds\n", 1, "the registry must be a mapping with the sections people, icds and interfaces "
                              "(key: value lines), not a list"),
    ("# a comment first\n\n[1, 2]\n", 3, "the registry must be a mapping with the sections people, icds and "
                                          "interfaces (key: value lines), not a list"),
    ("just some text\n", 1, "the registry must be a mapping with the sections people, icds and interfaces "
                            "(key: value lines), not the single value 'just some text'"),
    ("42\n", 1, "the registry must be a mapping with the sections people, icds and interfaces "
                "(key: value lines), not the single value '42'"),
])
def test_a_file_that_is_no_registry_is_one_located_error(reg, tmp_path, text, line, message):
    """Empty, comments only, a list, a scalar: one file:line error and exit 1 (it was a traceback:
    the module check ran on a registry that had never been read)."""
    write(tmp_path, text, "odd.yaml")
    result = icd("validate", "-r", "odd.yaml")  # with the module check, which crashed
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"odd.yaml:{line}:1: {message}"]
    assert result.stderr.strip() == "1 problem in odd.yaml"
    for command in (["list"], ["show", "I-DATA-COM-0006"], ["doc", "--all"], ["report"]):
        other = icd(*command, "-r", "odd.yaml")
        assert other.exit_code == 1, command
        assert other.stderr.splitlines()[0] == f"odd.yaml:{line}:1: {message}"


def test_a_redmine_section_that_is_not_a_mapping_is_an_error(reg, tmp_path):
    write(tmp_path, SAMPLE + "redmine: 5\n", "odd.yaml")
    result = icd("validate", "--no-modules", "-r", "odd.yaml")
    assert result.exit_code == 1
    assert f"odd.yaml:{line_of(SAMPLE + 'redmine: 5', 'redmine: 5')}:10: 'redmine'" in result.stdout


# a title with rich markup and terminal escapes (clear screen, window title, bell), a person with a
# colour code, a task subject with a blink code, and a right-to-left override
EVIL = (SAMPLE.replace('title: "CTC implementation"', 'title: "CTC [/] impl [bold]x\\e[2J\\e]0;pwned\\a end"')
        .replace("name: C. Carol", 'name: "C. [red]Carol\\e[31m"')
        .replace("subject: Integrate algorithms in DATA", 'subject: "Integrate [/b] \\e[5m in DATA \\u202Eevil"'))
SHOWN_TITLE = "CTC [/] impl [bold]x\\x1b[2J\\x1b]0;pwned\\x07 end"


def _no_control_characters(text: str) -> None:
    bad = [c for c in text if (ord(c) < 32 and c not in "\t\n") or 0x7f <= ord(c) < 0xa0 or c == "\u202e"]
    assert not bad, bad


@pytest.mark.parametrize("width", [80, 150])
def test_terminal_table_shows_markup_and_escapes_as_written(reg, tmp_path, monkeypatch, width):
    """'[/]' in a title crashed rich ('closing tag has nothing to close'); '[bold]' was eaten;
    ESC sequences reached the terminal."""
    import icd.cli as cli

    write(tmp_path, EVIL)
    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", str(width))
    result = icd("list", "--icd", "COM")
    assert result.exit_code == 0, result.output
    _no_control_characters(result.output)
    title_column = 3 if width >= 110 else 2  # below 110 columns the ICD, category and level are left out
    titles = "".join(line.split("│")[title_column].strip() for line in result.stdout.splitlines()
                     if line.count("│") > 3)  # the title cells, wrapped over several lines, joined
    assert SHOWN_TITLE.replace(" ", "") in titles.replace(" ", "")


def test_piped_list_show_and_validate_strip_control_characters(reg, tmp_path):
    write(tmp_path, EVIL)
    listed = icd("list")
    assert listed.exit_code == 0
    _no_control_characters(listed.stdout)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("I-DATA-COM-3201"))
    assert row.split("\t")[2] == SHOWN_TITLE
    shown = icd("show", "I-DATA-COM-3201")
    _no_control_characters(shown.stdout)
    assert shown.stdout.splitlines()[0] == f"I-DATA-COM-3201 — {SHOWN_TITLE}"
    assert "C. [red]Carol\\x1b[31m (DATA, PIPE-Cal)" in shown.stdout
    assert "Integrate [/b] \\x1b[5m in DATA \\u202eevil" in shown.stdout
    write(tmp_path, EVIL.replace("{person: carol", '{person: "car\\e[2Jol"', 1), "bad.yaml")
    checked = icd("validate", "--no-modules", "-r", "bad.yaml")
    assert checked.exit_code == 1
    _no_control_characters(checked.output)
    assert "unknown person 'car\\x1b[2Jol'" in checked.stdout


def test_documents_and_report_carry_no_control_characters(reg, tmp_path):
    write(tmp_path, EVIL)
    assert icd("doc", "--all").exit_code == 0
    assert icd("report", "--today", "2026-12-01").exit_code == 0
    for name in ("DATA-COM.md", "DATA-COM.html", "report.md", "report.html"):
        text = (tmp_path / "out" / name).read_text(encoding="utf-8")
        _no_control_characters(text)
    assert SHOWN_TITLE in (tmp_path / "out" / "DATA-COM.md").read_text(encoding="utf-8")


def test_show_and_doc_take_today(reg, tmp_path):
    """Days overdue are counted from --today (the README tour relies on it)."""
    shown = icd("show", "I-DATA-COM-3201", "--today", "2026-12-01")
    assert "2015-06-01 → 2016-07-01 OVERDUE by 3805 days" in shown.stdout
    earlier = icd("show", "I-DATA-COM-3201", "--today", "2016-07-11")
    assert "OVERDUE by 10 days" in earlier.stdout
    assert icd("doc", "DATA-COM", "--format", "md", "--today", "2026-12-01").exit_code == 0
