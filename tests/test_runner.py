"""The runner: registry -> module contract -> sample, run, check -> evidence store."""
import json
import textwrap

import pytest
from typer.testing import CliRunner

from icd import evidence
from icd.registry import load
from icd.runner import (RunError, RunUsageError, binomial_tail, judge, jobs, pull_statistics, run_all,
                        run_file, sample)

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
    with pytest.raises(RunUsageError, match="no interface I-DATA-xST-9999 in .*did you mean"):
        jobs(registry, ["I-DATA-xST-9999"])
    assert [j.codes for j in jobs(registry, ["i-data-xst-0101"])] == [["I-DATA-xST-0101"]]  # case-insensitive


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
    result = CliRunner().invoke(app, ["run", "--all", "--no-real-data", "--registry", str(registry.path),
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


# -- ensemble judging over seeds ------------------------------------------------------------------
def _seeds(n, pulls=None, failed=(), rate=6.3e-5, errors=()):
    """Synthetic per-seed results as the worker returns them."""
    return [dict(seed=s, passed=s not in failed, error="boom" if s in errors else None, summary=f"seed {s}",
                 metrics={"x": s}, criteria={"x": "any"}, pulls={} if pulls is None else {"gain": float(pulls[s])},
                 false_fail_rate=rate, module_version="1", input=None, output=None, duration_s=0.1)
            for s in range(n)]


def test_binomial_tail_is_the_upper_tail():
    from scipy import stats

    assert binomial_tail(0, 40, 0.01) == 1.0
    assert binomial_tail(1, 3, 0.01) == pytest.approx(1 - 0.99 ** 3)
    for k, n, r in [(2, 40, 0.01), (5, 40, 0.01), (1, 40, 6.3e-5), (3, 10, 0.2)]:
        assert binomial_tail(k, n, r) == pytest.approx(stats.binom.sf(k - 1, n, r), rel=1e-9)


def test_judge_counts_failures_against_the_designed_rate():
    # 2 failures of 40 at a designed 1 %: P(X >= 2) = 0.061 -> consistent; 5: 7e-5 -> too many
    ok = judge(_seeds(40, failed={3, 17}, rate=0.01))
    assert ok["passed"] and ok["failures"] == 2 and ok["pass_rate"] == pytest.approx(38 / 40)
    assert ok["binomial_p"] == pytest.approx(0.0607, abs=1e-3)
    bad = judge(_seeds(40, failed={1, 2, 3, 4, 5}, rate=0.01))
    assert not bad["passed"] and bad["binomial_p"] < 1e-3 and "5 of 40 seeds failed" in bad["reasons"][0]
    # a check designed to fail 6.3e-5 of the time: one failure in 40 is rare but allowed (p 0.0025), two are not
    assert judge(_seeds(40, failed={7}))["passed"]
    assert not judge(_seeds(40, failed={7, 9}))["passed"]
    # one seed: the check's own verdict
    assert judge(_seeds(1))["passed"] and not judge(_seeds(1, failed={0}, rate=0.01))["passed"]
    # a pull reported by some seeds only is judged over those (not as a non-finite value)
    partial = _seeds(8, pulls=[0.3, -0.5, 1.1, -0.9, 0.2, 0.0, 0.7, -1.4])
    for r in partial[:3]:
        del r["pulls"]["gain"]
    assert judge(partial)["pulls"]["gain"]["n"] == 5 and judge(partial)["passed"]
    err = judge(_seeds(5, errors={2}))
    assert not err["passed"] and err["errors"] == [2] and "error on seed 2" in err["reasons"]


def test_pull_statistics_judge_mean_and_spread():
    import numpy as np

    rng = np.random.default_rng(1)
    good = pull_statistics({"gain": rng.normal(0, 1, 40)})["gain"]
    assert good["ok"] is True and good["n"] == 40 and abs(good["mean"]) < 0.5
    # alpha 1e-3 over 2 tests: |mean| <= z(2.5e-4)/sqrt(n) and the chi-square band of s at n - 1 dof
    assert good["mean_limit"] == pytest.approx(3.4808 / np.sqrt(40), rel=1e-3)
    lo, hi = good["std_band"]
    assert 0.5 < lo < 0.75 and 1.25 < hi < 1.45
    wide = pull_statistics({"gain": rng.normal(0, 2.2, 40)})["gain"]      # errors 2.2x too small
    assert wide["ok"] is False and wide["std"] > hi
    biased = pull_statistics({"gain": rng.normal(1.0, 1, 40)})["gain"]   # a bias of one error
    assert biased["ok"] is False and biased["mean"] > biased["mean_limit"]
    narrow = pull_statistics({"gain": rng.normal(0, 0.3, 40)})["gain"]   # errors 3x too large
    assert narrow["ok"] is False and narrow["std"] < lo
    assert pull_statistics({"gain": [5.0, 6.0, 7.0, 8.0]})["gain"]["ok"] is None  # < 5 seeds: not judged
    assert pull_statistics({"gain": [0.1, -0.2, float("nan"), 0.3, 0.5, -1]})["gain"]["ok"] is False
    # two pulls share the significance: each test is at 1e-3 / 4
    two = pull_statistics({"a": [0.0] * 3 + [1.0] * 3, "b": [0.0] * 3 + [1.0] * 3})
    assert two["a"]["mean_limit"] > good["mean_limit"] * np.sqrt(40 / 6)


def test_judge_fails_a_module_whose_errors_are_too_small_though_every_seed_passes():
    import numpy as np

    pulls = np.random.default_rng(2).normal(0, 2.2, 40)
    verdict = judge(_seeds(40, pulls=np.clip(pulls, -3.9, 3.9)))
    assert verdict["failures"] == 0 and not verdict["passed"]
    assert verdict["reasons"] == [r for r in verdict["reasons"] if r.startswith("pull gain: mean")]

TOY_MODULE = textwrap.dedent("""\
    # Toy: mean of a Gaussian sample, error sigma/sqrt(N) times ERROR_SCALE.
    from pathlib import Path

    import numpy as np
    from astropy.table import Table

    from calib.contract import CalibrationModule, Evidence, Port

    ERROR_SCALE = {scale}


    def write_sample(directory, seed):
        rng = np.random.default_rng(seed)
        path = Path(directory) / "toy.ecsv"
        Table({{"x": rng.normal(3.0, 1.0, 400)}}, meta={{"true_mean": 3.0}}).write(path, overwrite=True)
        return path


    def run(input_path, output_path, config):
        x = np.asarray(Table.read(input_path)["x"])
        out = Table({{"mean": [x.mean()], "error": [ERROR_SCALE * x.std(ddof=1) / np.sqrt(x.size)]}})
        out.write(output_path, overwrite=True)
        return out


    def check(result, input_path):
        pull = float((result["mean"][0] - Table.read(input_path).meta["true_mean"]) / result["error"][0])
        return Evidence(passed=abs(pull) < 4, metrics={{"pull": pull}}, criteria={{"pull": "|pull| < 4"}},
                        summary=f"pull {{pull:.2f}}", pulls={{"mean": pull}}, false_fail_rate=6.3e-5)


    CONTRACT = CalibrationModule(codes=("{code}",), title="toy", inputs=(Port("x", "", "samples"),),
                                 outputs=(Port("mean", "", "mean"),), sample=write_sample, run=run, check=check,
                                 config={{"clip_sigma": "sigma-clipping threshold (unused by the toy)"}})
""")

TOY_REGISTRY = textwrap.dedent("""\
    icds:
      DATA-xST:
        title: ICD DATA-xST
        version: "0.1"
        date: 2026-11-25
        status: under definition
    interfaces:
      - code: I-DATA-xST-0201
        icd: DATA-xST
        title: Right errors
        category: camera
        level: per pixel
        module: h3toys.right
      - code: I-DATA-xST-0202
        icd: DATA-xST
        title: Errors four times too small
        category: camera
        level: per pixel
        module: h3toys.small_errors
""")


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """A registry of two toy modules written to a package on sys.path (so worker processes import it)."""
    pkg = tmp_path / "h3toys"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "right.py").write_text(TOY_MODULE.format(scale=1.0, code="I-DATA-xST-0201"))
    (pkg / "small_errors.py").write_text(TOY_MODULE.format(scale=0.25, code="I-DATA-xST-0202"))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "interfaces.yaml"
    path.write_text(TOY_REGISTRY)
    loaded = load(path)
    assert loaded.diagnostics == []
    return loaded


def test_run_all_over_seeds_in_processes_judges_each_module(toys, tmp_path):
    seen = []
    records = run_all(toys, tmp_path / "w", seed=10, n_seeds=12, n_jobs=2, on_seed=lambda job, r: seen.append(r["seed"]))
    right, small = records["I-DATA-xST-0201"], records["I-DATA-xST-0202"]
    assert sorted(seen) == sorted(list(range(10, 22)) * 2)
    assert right.seeds == list(range(10, 22)) and [s["seed"] for s in right.per_seed] == right.seeds
    assert right.verdict == "pass" and right.pass_rate == 1.0 and right.false_fail_rate == 6.3e-5
    assert right.binomial_p == 1.0 and right.pull_stats["mean"]["ok"] is True
    assert abs(right.pull_stats["mean"]["mean"]) < right.pull_stats["mean"]["mean_limit"]
    assert right.metrics["seeds passed"] == "12/12" and "seed 10: pull" in right.metrics
    # pulls 4x too wide: most seeds still pass |pull| < 4 or fail it; either way the ensemble fails
    assert small.verdict == "fail" and small.pull_stats["mean"]["std"] > small.pull_stats["mean"]["std_band"][1]
    assert "pull mean" in small.summary
    assert (tmp_path / "w" / "right" / "seed-10" / "toy.ecsv").is_file()
    store = tmp_path / "ev.json"
    evidence.save(records, store)
    back = evidence.load(store)["I-DATA-xST-0201"]
    assert back.seeds == right.seeds and back.pull_stats["mean"]["n"] == 12 and back.binomial_p == 1.0


def test_run_all_one_seed_keeps_the_old_layout_and_verdict(toys, tmp_path):
    records = run_all(toys, tmp_path / "w", codes=["I-DATA-xST-0201"], seed=3)
    rec = records["I-DATA-xST-0201"]
    assert rec.seeds == [3] and rec.verdict == "pass" and set(rec.metrics) == {"pull"}
    assert (tmp_path / "w" / "right" / "toy.ecsv").is_file()


def _cli(*args):
    from icd.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_unknown_code_exits_2_with_a_suggestion(toys, tmp_path):
    for command in (["run", "I-DATA-xST-02O1", "--seeds", "2"], ["sample", "I-DATA-xST-02O1"],
                    ["run", "I-DATA-xST-02O1", "-i", tmp_path / "x.ecsv", "-o", tmp_path / "y.ecsv"]):
        result = _cli(*command, "--registry", toys.path)
        assert result.exit_code == 2, (command, result.output)
        assert "no interface I-DATA-xST-02O1" in result.stderr and "did you mean I-DATA-xST-0201?" in result.stderr
        assert "Traceback" not in result.output


def test_cli_run_without_check_reports_what_it_wrote_not_pass(toys, tmp_path):
    written = sample(toys, ["I-DATA-xST-0201"], tmp_path / "s", seed=1)["I-DATA-xST-0201"]
    out = tmp_path / "mean.ecsv"
    result = _cli("run", "I-DATA-xST-0201", "-i", written, "-o", out, "--registry", toys.path,
                  "--evidence", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert "PASS" not in result.output and f"wrote 1 row to {out}" in result.stdout
    assert out.is_file() and not (tmp_path / "e.json").exists()
    checked = _cli("run", "I-DATA-xST-0201", "-i", written, "-o", out, "--check", "--registry", toys.path,
                   "--evidence", tmp_path / "e.json")
    assert checked.exit_code == 0 and "\tPASS\t" in checked.stdout


@pytest.mark.parametrize("name", ["out.txt", "out.xyz", "out"])
def test_cli_a_wrong_output_extension_is_blamed_on_the_output_before_running(toys, tmp_path, name):
    written = sample(toys, ["I-DATA-xST-0201"], tmp_path / "s", seed=1)["I-DATA-xST-0201"]
    result = _cli("run", "I-DATA-xST-0201", "-i", written, "-o", tmp_path / name, "--registry", toys.path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output {tmp_path / name}: cannot write a table")
    assert ".ecsv, .fits or .h5" in lines[0] and not (tmp_path / name).exists()


def test_cli_unknown_config_keys_are_refused_with_a_suggestion(toys, tmp_path):
    written = sample(toys, ["I-DATA-xST-0201"], tmp_path / "s", seed=1)["I-DATA-xST-0201"]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"clip_sigm": 3}))
    out = tmp_path / "o.ecsv"
    for extra in (["-i", written, "-o", out], ["--seeds", "2", "--workdir", tmp_path / "w"]):
        result = _cli("run", "I-DATA-xST-0201", *extra, "--config", cfg, "--registry", toys.path)
        assert result.exit_code == 2, result.output
        assert ("unknown configuration key 'clip_sigm' (did you mean 'clip_sigma'?) for h3toys.right; "
                "it accepts: clip_sigma") in result.stderr
    assert not out.exists() and not (tmp_path / "w").exists()
    cfg.write_text(json.dumps({"clip_sigma": 3}))
    assert _cli("run", "I-DATA-xST-0201", "-i", written, "-o", out, "--config", cfg,
                "--registry", toys.path).exit_code == 0
    result = _cli("run", "--all", "--config", cfg, "--registry", toys.path)
    assert result.exit_code == 2 and "applies to one module" in result.stderr


def test_cli_run_over_seeds_records_the_ensemble(toys, tmp_path):
    ev = tmp_path / "e.json"
    result = _cli("run", "--all", "--seeds", "6", "--jobs", "1", "--no-real-data", "--registry", toys.path,
                  "--workdir", tmp_path / "w", "--evidence", ev)
    assert result.exit_code == 1  # the module with too small errors fails
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert rows["I-DATA-xST-0201"][1:3] == ["PASS", "6/6 seeds"] and rows["I-DATA-xST-0202"][1] == "FAIL"
    stored = json.loads(ev.read_text())["results"]["I-DATA-xST-0201"]
    assert stored["seeds"] == [0, 1, 2, 3, 4, 5] and stored["pass_rate"] == 1.0
    assert stored["false_fail_rate"] == 6.3e-5 and stored["binomial_p"] == 1.0
    assert stored["pull_stats"]["mean"]["n"] == 6 and stored["ensemble"]["verdict"] == "pass"
    for bad in (["--seeds", "0"], ["--jobs", "0"]):
        refused = _cli("run", "--all", *bad, "--registry", toys.path, "--workdir", tmp_path / "w2")
        assert refused.exit_code == 2 and "must be at least 1" in refused.stderr
    one = _cli("run", "I-DATA-xST-0201", "--seed", "4", "--registry", toys.path, "--workdir", tmp_path / "w1",
               "--evidence", ev, "--json")
    assert one.exit_code == 0 and json.loads(one.stdout)["I-DATA-xST-0201"]["seeds"] == [4]


def test_a_real_module_over_three_seeds_in_two_processes(tmp_path):
    """calib.pointing.dual_mirror through the bundled registry, end to end."""
    from pathlib import Path

    registry = Path(__file__).resolve().parents[1] / "interfaces.yaml"
    ev = tmp_path / "e.json"
    result = _cli("run", "I-DATA-xST-1003", "--seeds", "3", "--jobs", "2", "--registry", registry,
                  "--workdir", tmp_path / "w", "--evidence", ev)
    stored = json.loads(ev.read_text())["results"]["I-DATA-xST-1003"]
    assert stored["seeds"] == [0, 1, 2] and len(stored["per_seed"]) == 3
    assert stored["module"] == "calib.pointing.dual_mirror" and stored["false_fail_rate"] is not None
    assert result.exit_code == (0 if stored["passed"] else 1)
    assert {s["seed"] for s in stored["per_seed"]} == {0, 1, 2}
    assert all((tmp_path / "w" / "dual_mirror" / f"seed-{s}").is_dir() for s in (0, 1, 2))


def test_every_module_declares_the_config_keys_its_run_reads():
    """CONTRACT.config lists every key run() reads (config.get / config[...] / a DEFAULT_CONFIG it
    merges), so that the runner's refusal of unknown keys never refuses a real one."""
    import importlib
    import inspect
    import re
    from pathlib import Path

    from icd.modules import discover

    root = Path(__file__).resolve().parents[1]
    found = discover(root)
    assert len(found) >= 27
    read = re.compile(r"\b(?:config|cfg)(?:\.get\(|\[)\s*[\"'](\w+)[\"']")
    for name, contract in found.items():
        source = inspect.getsource(contract.run)
        keys = set(read.findall(source))
        module = importlib.import_module(contract.run.__module__)
        for default in ("_DEFAULT_CONFIG", "DEFAULT_CONFIG"):
            if re.search(rf"\b{default}\b", source):
                keys |= set(getattr(module, default))
        missing = keys - set(contract.config)
        assert not missing, f"{name}: run() reads config keys {sorted(missing)} that CONTRACT.config does not declare"
        assert all(isinstance(v, str) and v for v in contract.config.values()), name


def test_documents_show_the_pass_rate_and_pulls_over_seeds():
    from icd.publish.views import evidence_view

    results = _seeds(6, pulls=[0.1, -0.4, 0.9, -1.2, 0.3, 0.2], failed={4}, rate=0.01)
    from icd.runner import Job, _record

    record = _record(Job("m.toy", ["I-DATA-xST-0201"], []), results, judge(results), "2026-12-03T00:00:00+00:00")
    view = evidence_view(record)
    assert view["pass_rate"] == "5/6 seeds pass"
    assert view["ensemble"] == "seeds 0-5, designed false-fail rate 0.01 per seed, binomial p 0.059"
    assert view["pulls"] == "pull gain: mean -0.02, std 0.71"
    assert record.summary.startswith("5/6 seeds pass (designed false-fail rate 0.01, binomial p 0.059); seed 0: ")
    single = _record(Job("m.toy", ["I-DATA-xST-0201"], []), results[:1], judge(results[:1]), "")
    assert evidence_view(single)["pass_rate"] == "" and single.metrics == {"x": 0}


def test_cli_real_data_entries_are_attached_to_the_interfaces_they_name(toys, tmp_path, monkeypatch):
    import calib.contract

    entries = [
        {"file": "a.simtel.zst", "sha256": "ab" * 32, "interfaces": ["I-DATA-xST-0201"], "passed": True,
         "compared": "extracted vs true charge", "summary": "ratio 0.98"},
        {"file": "b.ecsv", "sha256": "cd" * 32, "interfaces": ["I-DATA-xST-0202", "I-DATA-xST-0201"],
         "passed": False, "compared": "profile vs reference", "summary": "off by 9 %"},
        {"file": "c.fits", "interfaces": ["I-DATA-COM-9999"], "passed": None, "summary": "not fetched"},
    ]
    monkeypatch.setattr(calib.contract, "real_data_evidence", lambda workdir: [dict(e) for e in entries])
    ev = tmp_path / "e.json"
    result = _cli("run", "--all", "--seeds", "1", "--jobs", "1", "--real-data", "--registry", toys.path,
                  "--workdir", tmp_path / "w", "--evidence", ev)
    assert result.exit_code == 1  # b.ecsv differs: the run is not all good
    lines = [ln for ln in result.stdout.splitlines() if "\treal file " in ln]
    assert [ln.split("\t")[1:3] for ln in lines] == [["real file a.simtel.zst", "AGREES"],
                                                     ["real file b.ecsv", "DIFFERS"], ["real file c.fits", "NOT RUN"]]
    stored = json.loads(ev.read_text())["results"]
    assert [e["file"] for e in stored["I-DATA-xST-0201"]["real_data"]] == ["a.simtel.zst", "b.ecsv"]
    assert [e["file"] for e in stored["I-DATA-xST-0202"]["real_data"]] == ["b.ecsv"]
    from icd.publish.views import evidence_view

    view = evidence_view(evidence.load(ev)["I-DATA-xST-0201"])
    assert [(r["file"], r["verdict"], r["sha"]) for r in view["real_data"]] == [
        ("a.simtel.zst", "agrees", "ab" * 6), ("b.ecsv", "differs", "cd" * 6)]
    refused = _cli("run", "I-DATA-xST-0201", "--seeds", "2", "--real-data", "--registry", toys.path)
    assert refused.exit_code == 2 and "--real-data goes with --all" in refused.stderr


def test_the_fetched_real_files_back_the_interfaces(tmp_path):
    """The real CTA files (scripts/fetch-real-data.py) run through the modules and agree; each
    comparison names its file and sha256.  Skipped on a machine without them, required in CI."""
    import os

    from icd.runner import real_data_fetched, real_data_records

    if not real_data_fetched():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but the real CTA files are not fetched: run scripts/fetch-real-data.py")
        pytest.skip("real CTA files not fetched (python scripts/fetch-real-data.py)")
    codes = ["I-DATA-xST-0101", "I-DATA-xST-0103", "I-DATA-xST-0106", "I-DATA-xST-0110", "I-DATA-xST-1001",
             "I-DATA-xST-1002", "I-DATA-COM-3011", "I-DATA-COM-3001"]
    records = {c: evidence.EvidenceRecord(code=c, module="m", passed=True) for c in codes}
    entries = real_data_records(records, tmp_path)
    assert entries and all(e["passed"] is True for e in entries), [
        (e.get("file"), e.get("summary")) for e in entries if e.get("passed") is not True]
    for code, rec in records.items():
        assert rec.real_data, f"no real file backs {code}"
        for e in rec.real_data:
            assert len(e["sha256"]) == 64 and e["sha256_matches_pin"] is True and e["compared"]
    files = {c: {e["file"] for e in rec.real_data} for c, rec in records.items()}
    assert {"history_meta_75.simtel.zst", "LST-1.1.Run02008.0000_first50.fits.fz"} <= files["I-DATA-xST-0101"]
    assert "calibration.Run2462.0000.hdf5" in files["I-DATA-xST-0106"] & files["I-DATA-xST-0110"]
    assert "hipparcos_star_catalog.fits.gz" in files["I-DATA-xST-1002"]
    assert "meteo_data_gdas.ecsv" in files["I-DATA-COM-3001"]
