"""The runner: registry -> module contract -> sample, run, check -> evidence store."""
import json
import textwrap

import pytest
from typer.testing import CliRunner

from icd import evidence
from icd.registry import load
from icd.runner import RunError, jobs, run_all, run_file, sample

REGISTRY = textwrap.dedent("""\
    people:
      kk: {name: K. Kosack, wp: DATA}
    icds:
      DATA-xST:
        title: ICD DATA-xST
        version: "0.1"
        date: 2026-11-25
        status: under definition
    interfaces:
      - code: I-DATA-xST-0101
        icd: DATA-xST
        title: Toy
        category: camera
        level: per pixel
        module: tests.fixtures.fake_calibration
        tests: [tests/test_runner.py]
      - code: I-DATA-xST-0102
        icd: DATA-xST
        title: Broken
        category: camera
        level: per pixel
        module: tests.fixtures.broken_calibration
      - code: I-DATA-xST-0103
        icd: DATA-xST
        title: No module yet
        category: camera
        level: per pixel
""")


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "interfaces.yaml"
    path.write_text(REGISTRY)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_runner.py").write_text("")
    loaded = load(path, module_loader=lambda name: __import__("icd.modules").modules.contract_of(name))
    assert loaded.diagnostics == []
    return loaded


def test_jobs_only_registered_modules(registry):
    assert [j.module for j in jobs(registry)] == ["tests.fixtures.fake_calibration", "tests.fixtures.broken_calibration"]
    with pytest.raises(RunError, match="has no calibration module"):
        jobs(registry, ["I-DATA-xST-0103"])
    with pytest.raises(RunError, match="not in the registry"):
        jobs(registry, ["I-DATA-xST-9999"])


def test_run_all_records_pass_and_error(registry, tmp_path):
    records = run_all(registry, tmp_path / "work")
    ok, broken = records["I-DATA-xST-0101"], records["I-DATA-xST-0102"]
    assert ok.verdict == "pass" and abs(ok.metrics["pull"]) < 4
    assert ok.criteria == {"pull": "|pull| < 4"} and ok.tests == ["tests/test_runner.py"]
    assert broken.verdict == "error" and "division by zero" in broken.summary
    assert "I-DATA-xST-0103" not in records
    store = tmp_path / "ev.json"
    evidence.save(records, store)
    back = evidence.load(store)
    assert back["I-DATA-xST-0101"].passed is True and back["I-DATA-xST-0102"].error


def test_sample_then_run_file_with_check(registry, tmp_path):
    written = sample(registry, ["I-DATA-xST-0101"], tmp_path / "s", seed=1)
    out = tmp_path / "mean.ecsv"
    rec = run_file(registry, "I-DATA-xST-0101", written["I-DATA-xST-0101"], out, check=True)
    assert out.is_file() and rec.passed and rec.verdict == "pass"


def test_evidence_merge_is_atomic_and_keeps_others(tmp_path):
    path = tmp_path / "ev.json"
    evidence.save({"A": evidence.EvidenceRecord(code="A", module="m", passed=True)}, path)
    evidence.save({"B": evidence.EvidenceRecord(code="B", module="m", passed=False)}, path)
    assert set(evidence.load(path)) == {"A", "B"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable evidence file"):
        evidence.load(path)


def test_cli_run_all_and_exit_code(registry, tmp_path, monkeypatch):
    from icd.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--all", "--registry", str(registry.path),
                                      "--workdir", str(tmp_path / "w"), "--evidence", str(tmp_path / "e.json"), "--json"])
    assert result.exit_code == 1, result.output  # the broken module fails the run
    data = json.loads(result.stdout)
    assert data["I-DATA-xST-0101"]["passed"] is True
    assert json.loads((tmp_path / "e.json").read_text())["results"]["I-DATA-xST-0102"]["error"]


def test_cli_run_needs_input_and_output(registry):
    from icd.cli import app

    result = CliRunner().invoke(app, ["run", "I-DATA-xST-0101", "--registry", str(registry.path)])
    assert result.exit_code == 2 and "--input FILE and --output FILE" in result.output


def test_cli_run_on_an_unreadable_input_is_one_line(registry, tmp_path):
    from icd.cli import app

    bad = tmp_path / "junk.ecsv"
    bad.write_text("not a table at all\n\x00")
    result = CliRunner().invoke(app, ["run", "I-DATA-xST-0101", "--registry", str(registry.path),
                                      "-i", str(bad), "-o", str(tmp_path / "o.ecsv")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"tests.fixtures.fake_calibration could not process {bad}" in result.output
