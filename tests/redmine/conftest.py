"""Fixtures for the Redmine tests: a real Redmine server per test session, a fresh project per test.

The server comes from scripts/redmine-test-server.py (Debian's Redmine 5 on loopback, SQLite,
fresh database).  If $ICD_REDMINE_STATE names the folder of a server started by `.ci/run`,
that one is used; otherwise the fixture starts its own and stops it at the end.  Without a
server the integration tests are skipped locally but FAIL when CI=true.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "redmine-test-server.py"
CATEGORIES = ["Atmosphere Calibration", "Array Calibration", "Camera Calibration", "Pointing Calibration"]


def _server_module():
    spec = importlib.util.spec_from_file_location("redmine_test_server", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unavailable(message: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: the integration tests need a real Redmine: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redmine_server(tmp_path_factory):
    external = os.environ.get("ICD_REDMINE_STATE")
    if external:
        state_file = Path(external) / "state.json"
        if not state_file.is_file():
            _unavailable(f"$ICD_REDMINE_STATE={external} has no state.json (server not started?)")
        state = json.loads(state_file.read_text())
        try:
            requests.get(state["url"] + "/projects.json", timeout=10,
                         headers={"X-Redmine-API-Key": state["api_key"]}).raise_for_status()
        except requests.RequestException as exc:
            _unavailable(f"the Redmine of {state_file} does not answer ({type(exc).__name__})")
        yield state
        return
    mod = _server_module()
    if os.geteuid() != 0:
        _unavailable("starting a Redmine needs root (or set ICD_REDMINE_STATE)")
    if not mod.installed():
        _unavailable("Debian's redmine is not installed (run scripts/redmine-test-server.py install)")
    state_dir = tmp_path_factory.mktemp("redmine-state")
    try:
        state = mod.start(state_dir)
    except (SystemExit, Exception) as exc:  # noqa: BLE001
        _unavailable(f"could not start Redmine: {exc}")
    try:
        yield state
    finally:
        mod.stop(state_dir)


class Admin:
    """Direct REST calls for test set-up and inspection (not the code under test)."""

    def __init__(self, state: dict):
        self.url, self.key = state["url"], state["api_key"]
        self.s = requests.Session()
        self.s.headers["X-Redmine-API-Key"] = self.key

    def get(self, path, **params):
        r = self.s.get(self.url + path, params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def put(self, path, payload):
        r = self.s.put(self.url + path, json=payload, timeout=30)
        r.raise_for_status()

    def post(self, path, payload):
        r = self.s.post(self.url + path, json=payload, timeout=30)
        r.raise_for_status()
        return r.json() if r.content.strip() else {}

    def delete(self, path):
        r = self.s.delete(self.url + path, timeout=30)
        r.raise_for_status()

    def issues(self, project, **params):
        return self.get("/issues.json", project_id=project, status_id="*", limit=100, **params)["issues"]


@pytest.fixture(scope="session")
def admin(redmine_server):
    return Admin(redmine_server)


@pytest.fixture
def project(redmine_server, admin):
    """A fresh Redmine project (like cta-data: Task tracker, categories, interface-code field, wiki)."""
    ident = "t" + secrets.token_hex(4)
    cf = int(redmine_server.get("custom_field_interface_code", 1))
    trackers = [t["id"] for t in admin.get("/trackers.json")["trackers"]]
    admin.post("/projects.json", {"project": {
        "name": f"test {ident}", "identifier": ident, "is_public": True, "tracker_ids": trackers,
        "issue_custom_field_ids": [cf], "enabled_module_names": ["issue_tracking", "wiki"]}})
    for name in CATEGORIES:
        admin.post(f"/projects/{ident}/issue_categories.json", {"issue_category": {"name": name}})
    return ident


@pytest.fixture
def env(redmine_server, project, tmp_path, monkeypatch):
    """A working folder with icd.toml and a private key file pointing at the fresh project."""
    key_file = tmp_path / "redmine-key"
    key_file.write_text(redmine_server["api_key"] + "\n")
    key_file.chmod(0o600)
    cf = int(redmine_server.get("custom_field_interface_code", 1))
    (tmp_path / "icd.toml").write_text(
        f'[redmine]\nurl = "{redmine_server["url"]}"\nproject = "{project}"\n'
        f'interface_code_field = {cf}\nkey_file = "{key_file}"\ntimeout = 30\nretries = 1\nbackoff = 0.1\n')
    for var in ("REDMINE_API_KEY", "REDMINE_URL", "REDMINE_PROJECT", "REDMINE_KEY_FILE", "ICD_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ICD_CONFIG", str(tmp_path / "icd.toml"))
    monkeypatch.chdir(tmp_path)
    return {"dir": tmp_path, "key": redmine_server["api_key"], "url": redmine_server["url"], "project": project,
            "cf": cf, "config": tmp_path / "icd.toml"}


@pytest.fixture
def cta_registry(tmp_path):
    path = tmp_path / "interfaces.yaml"
    shutil.copyfile(ROOT / "interfaces.yaml", path)
    return path
