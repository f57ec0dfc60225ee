"""The README tour is true: every command of its ```console blocks is run and its output compared.

Each block is a shell session: ``$ command`` lines, each followed by the output it shows. The
commands run in order, in a temporary folder holding a copy of the bundled ``interfaces.yaml``
(and the ``calib`` package beside it, as in the checkout): ``icd`` commands in-process through
typer's runner (stdout and stderr interleaved, as a terminal shows them), anything else (``sed``,
``printf``, ``echo $?``) with bash. A command commented ``# in a terminal N columns wide`` runs as in
a terminal of that width (the rich table); otherwise output is piped. A line ``...`` in the shown
output stands for lines left out. Nothing is normalised but trailing blanks of a line; commands
whose output depends on the date carry ``--today``.

``icd run`` is deliberately not in these blocks (its output carries timings and seed ensembles);
the ```sh blocks that mention it are not compared.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import icd.cli as cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def console_blocks(text: str) -> list[list[tuple[str, list[str]]]]:
    """The ```console blocks of a Markdown text, each as [(command, shown output lines)]."""
    blocks = []
    for body in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M):
        steps: list[tuple[str, list[str]]] = []
        continued = False
        for line in body.splitlines():
            if continued:  # a command continued with a trailing backslash
                steps[-1] = (steps[-1][0] + "\n" + line, steps[-1][1])
            elif line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
            else:
                raise AssertionError(f"output before any command in a console block: {line!r}")
            continued = bool(steps) and not steps[-1][1] and line.endswith("\\")
        blocks.append(steps)
    return blocks


def matches(shown: list[str], actual: list[str]) -> bool:
    """``actual`` is what ``shown`` says: the same lines, where a line '...' stands for any lines."""
    shown = [s.rstrip() for s in shown]
    actual = [a.rstrip() for a in actual]
    while shown and not shown[-1]:
        shown.pop()
    while actual and not actual[-1]:
        actual.pop()
    chunks, chunk = [], []
    for line in shown:
        if line == "...":
            chunks.append(chunk)
            chunk = []
        else:
            chunk.append(line)
    chunks.append(chunk)
    if len(chunks) == 1:
        return shown == actual
    first, *middle, last = chunks
    if actual[:len(first)] != first or (last and actual[len(actual) - len(last):] != last):
        return False
    at, end = len(first), len(actual) - len(last)
    for chunk in middle:
        for start in range(at, end - len(chunk) + 1):
            if actual[start:start + len(chunk)] == chunk:
                at = start + len(chunk)
                break
        else:
            return False
    return at <= end


def test_matches_honours_ellipsis_and_order():
    assert matches(["a", "...", "c"], ["a", "b", "c"])
    assert matches(["a", "...", "c", "..."], ["a", "b", "c", "d"])
    assert not matches(["a", "...", "c"], ["a", "b", "c", "d"])  # the shown end must be the end
    assert not matches(["a", "b"], ["a", "b", "c"])
    assert not matches(["...", "c", "...", "b", "..."], ["b", "c"])  # order counts
    assert not matches(["a"], ["A"])


def test_console_blocks_are_parsed():
    blocks = console_blocks(README.read_text(encoding="utf-8"))
    commands = [cmd for block in blocks for cmd, _ in block]
    assert len(blocks) >= 3
    assert any(c.startswith("icd validate") for c in commands)
    assert any(c.startswith("icd show") and "--today" in c for c in commands)
    assert not any(shlex.split(c, comments=True)[:2] == ["icd", "run"] for c in commands if shlex.split(c, comments=True))


@pytest.fixture()
def tour_dir(tmp_path, monkeypatch):
    shutil.copy2(ROOT / "interfaces.yaml", tmp_path / "interfaces.yaml")
    try:
        (tmp_path / "calib").symlink_to(ROOT / "calib", target_is_directory=True)
    except OSError:  # pragma: no cover - no symlinks on this file system
        shutil.copytree(ROOT / "calib", tmp_path / "calib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICD_REGISTRY", raising=False)
    return tmp_path


def run_step(command: str, last_rc: int, folder: Path, monkeypatch) -> tuple[list[str], int]:
    """Run one shown command; return its output lines and exit code."""
    words = shlex.split(command, comments=True)
    comment = command.split("#", 1)[1] if "#" in command and command.lstrip()[0] != "#" else ""
    if words and words[0] == "icd":
        width = re.search(r"in a terminal (\d+) columns wide", comment)
        monkeypatch.setattr(cli, "_is_terminal", lambda: width is not None)
        env = {"COLUMNS": width.group(1) if width else "80", "TERM": "xterm", "NO_COLOR": None}
        result = CliRunner().invoke(cli.app, words[1:], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        return result.output.splitlines(), result.exit_code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", "-c", f"(exit {last_rc}); {command}"], cwd=folder, env=env,
                          capture_output=True, text=True)
    return (done.stdout + done.stderr).splitlines(), done.returncode


def test_readme_tour_is_true(tour_dir, monkeypatch):
    blocks = console_blocks(README.read_text(encoding="utf-8"))
    wrong = []
    for block in blocks:
        last_rc = 0
        for command, shown in block:
            if not shlex.split(command, comments=True):  # '$ # ... edit interfaces.yaml ...'
                continue
            actual, last_rc = run_step(command, last_rc, tour_dir, monkeypatch)
            if not matches(shown, actual):
                wrong.append(f"$ {command}\n--- README shows\n" + "\n".join(shown)
                             + "\n--- real output\n" + "\n".join(actual))
    assert not wrong, "\n\n".join(wrong)
