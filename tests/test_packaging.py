"""A non-editable install works: the templates are package data, read with importlib.resources,
and only public jinja2/markupsafe APIs are used (MarkupSafe 2.1 and 3.x).

The slow test does what .ci/run does: build the wheel from a copy of the sources, install it
(not editable) into a second venv with MarkupSafe 2.1.5, and from a folder outside the checkout
run `icd validate`, `icd doc --all` and `icd report` on a copy of interfaces.yaml.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_NAMES = ("icd.md.j2", "icd.html.j2", "report.md.j2", "report.html.j2")
# public names of the two libraries (their documented API); anything starting with '_' is private
PUBLIC_MODULES = {"jinja2", "markupsafe", "jinja2.sandbox", "jinja2.ext", "jinja2.nodes", "jinja2.meta"}


def _private_uses(path: Path) -> list[str]:
    """Imports and attribute accesses of private jinja2/markupsafe names in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("jinja2", "markupsafe"):
            if node.module not in PUBLIC_MODULES or any(a.name.startswith("_") for a in node.names):
                found.append(f"{path.name}:{node.lineno}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("jinja2", "markupsafe") and a.name not in PUBLIC_MODULES:
                    found.append(f"{path.name}:{node.lineno}: import {a.name}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in ("jinja2", "markupsafe")
              and (node.attr.startswith("_") or node.attr in ("compiler", "runtime", "lexer", "parser"))):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_private_use_detector_catches_the_old_render(tmp_path):
    """The detector flags what render.py used to do (so the next test can fail)."""
    probe = tmp_path / "probe_private.py"
    probe.write_text("from jinja2.compiler import CodeGenerator\n"
                     "from markupsafe._speedups import _escape_inner\n"
                     "import jinja2\nx = jinja2._identifier\n", encoding="utf-8")
    assert len(_private_uses(probe)) == 3


def test_only_public_jinja_and_markupsafe_apis():
    sources = sorted((ROOT / "icd").rglob("*.py")) + sorted((ROOT / "calib").rglob("*.py"))
    private = [use for src in sources for use in _private_uses(src)]
    assert private == []


def test_templates_are_package_data_of_icd():
    """Every template the publishers render is in the icd package and declared as package data."""
    folder = resources.files("icd") / "templates"
    names = {r.name for r in folder.iterdir()}
    assert set(TEMPLATE_NAMES) <= names
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "templates/*.j2" in config["tool"]["setuptools"]["package-data"]["icd"]
    # the top-level templates/ of the layout is only a link to the package's folder (one copy,
    # and that copy is in the wheel)
    top = ROOT / "templates"
    assert not top.exists() or (top.is_symlink() and top.resolve() == (ROOT / "icd" / "templates").resolve())


def test_templates_load_from_a_zip_import(tmp_path):
    """importlib.resources, not a path beside the source: the publishers work from a zipped package."""
    archive = tmp_path / "icd.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (ROOT / "icd").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(ROOT).as_posix())
    code = ("import importlib; r = importlib.import_module('icd.publish.render'); assert '.zip' in r.__file__, r.__file__;"
            "env = r.environment(); print(sorted(env.loader.list_templates()));"
            "print(env.get_template('icd.html.j2').filename)")
    env = {**os.environ, "PYTHONPATH": str(archive)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in TEMPLATE_NAMES)


def _venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.mark.slow
def test_built_wheel_works_outside_the_checkout(tmp_path):
    """Wheel from a copy of the sources; second venv (the dependencies come from this one through a
    .pth line, the package from the wheel only); validate, doc --all and report from elsewhere."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("icd", "calib"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True)
    if build.returncode != 0 and not os.environ.get("CI") and "No matching distribution" in build.stderr:
        pytest.skip("no package index for the build requirements (setuptools): " + build.stderr[-300:])
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("cta_icd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
    assert {f"icd/templates/{name}" for name in TEMPLATE_NAMES} <= shipped
    assert "calib/data/yale_bright_star_catalog.fits.gz" in shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = _venv_bin(venv, "python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # this venv's packages as a plain path line: its own .pth files (the editable install) are not read
    Path(purelib, "_deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    old_markupsafe = subprocess.run(pip + ["markupsafe==2.1.5"], capture_output=True, text=True)
    if old_markupsafe.returncode != 0:  # no index offering 2.1.5 here: test the wheel with this MarkupSafe
        subprocess.run(pip, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ICD_REGISTRY")}
    where = subprocess.run([str(python), "-c", "import icd; from importlib.metadata import version; print(icd.__file__, version('markupsafe'))"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    assert str(ROOT) not in where and purelib in where  # the wheel's icd, not the checkout's
    if old_markupsafe.returncode == 0:
        assert where.split()[-1] == "2.1.5"

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(ROOT / "interfaces.yaml", work / "interfaces.yaml")
    icd = str(_venv_bin(venv, "icd"))
    for args in (["validate"], ["doc", "--all"], ["report", "--today", "2026-12-01"]):
        run = subprocess.run([icd, *args], cwd=work, env=env, capture_output=True, text=True)
        assert run.returncode == 0, f"icd {' '.join(args)}: {run.stdout}{run.stderr}"
        assert "Traceback" not in run.stderr
    written = sorted(p.name for p in (work / "out").iterdir())
    assert written == ["DATA-ACTL.html", "DATA-ACTL.md", "DATA-COM.html", "DATA-COM.md",
                       "DATA-xST.html", "DATA-xST.md", "report.html", "report.md"]
    assert "<svg" in (work / "out" / "report.html").read_text(encoding="utf-8")
