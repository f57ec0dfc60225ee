"""Unit tests of icd.redmine with a fake transport: configuration and key handling, timeouts,
retries with back-off, one-line errors, redaction, and the comment-preserving editor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import yaml

from icd.redmine.client import Client, RedmineError
from icd.redmine.config import ConfigError, RedmineConfig, load_api_key, load_config
from icd.redmine.sync import canon_relations, remote_relations
from icd.redmine.yamledit import YamlDoc

KEY = "f" * 40
ROOT = Path(__file__).resolve().parents[2]


class FakeResponse:
    def __init__(self, status=200, body=None, headers=None):
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.history = []

    def json(self):
        return json.loads(self.content)


class FakeTransport:
    def __init__(self, *responses):
        self.responses = list(responses)
        self.calls = []

    def __call__(self, method, url, **kwargs):
        self.calls.append((method, url, kwargs))
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def client(*responses, retries=2):
    cfg = RedmineConfig(url="https://redmine.example.org", retries=retries, backoff=0.5, timeout=7)
    sleeps = []
    transport = FakeTransport(*responses)
    c = Client(cfg, KEY, transport=transport, sleep=sleeps.append)
    return c, transport, sleeps


def test_timeout_and_tls_verification_reach_every_request():
    c, t, _ = client(FakeResponse(200, {"issue_statuses": []}))
    c.statuses()
    method, url, kwargs = t.calls[0]
    assert kwargs["timeout"] == 7 and kwargs["verify"] is True and kwargs["allow_redirects"] is False
    assert kwargs["headers"]["X-Redmine-API-Key"] == KEY and KEY not in url


def test_retries_with_backoff_on_5xx_and_connection_errors():
    c, t, sleeps = client(FakeResponse(503), requests.exceptions.ConnectionError("reset"),
                          FakeResponse(200, {"issues": [], "total_count": 0}))
    assert list(c.paged("/issues.json", "issues")) == []
    assert sleeps == [0.5, 1.0] and c.stats.requests == 3 and c.stats.retries == 2


def test_gives_up_with_one_line_after_the_retries():
    c, _, sleeps = client(*[requests.exceptions.ReadTimeout("read timed out")] * 3)
    with pytest.raises(RedmineError) as err:
        c.get("/issues.json")
    assert str(err.value) == "Redmine at https://redmine.example.org did not answer within 7 s (after 3 attempts)"
    assert sleeps == [0.5, 1.0]


def test_a_create_is_not_resent_after_a_server_error():
    c, t, sleeps = client(FakeResponse(500))
    with pytest.raises(RedmineError, match="HTTP 500"):
        c.post("/issues.json", {"issue": {}})
    assert len(t.calls) == 1 and sleeps == []


@pytest.mark.parametrize("status, body, words", [
    (401, None, ["refused the API key", "401"]),
    (403, None, ["403 Forbidden"]),
    (404, None, ["404"]),
    (422, {"errors": ["Subject cannot be blank", "Due date must be greater than start date"]},
     ["422", "Subject cannot be blank; Due date must be greater than start date"]),
])
def test_http_errors_are_one_clear_line(status, body, words):
    c, _, _ = client(FakeResponse(status, body))
    with pytest.raises(RedmineError) as err:
        c.post("/issues.json", {"issue": {}}, what="creating task 'x'")
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words) and KEY not in text


def test_key_is_redacted_from_network_errors():
    c, _, _ = client(requests.exceptions.ConnectionError(f"boom key={KEY}"), retries=0)
    with pytest.raises(RedmineError) as err:
        c.get("/x.json")
    assert KEY not in str(err.value)


def test_html_answer_means_a_wrong_url():
    resp = FakeResponse(200)
    resp.content, resp.headers = b"<html></html>", {"Content-Type": "text/html"}
    c, _, _ = client(resp)
    with pytest.raises(RedmineError, match="did not answer like a Redmine REST API"):
        c.get("/issues.json")


def test_key_file_must_be_private(tmp_path, monkeypatch):
    monkeypatch.delenv("REDMINE_API_KEY", raising=False)
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o644)
    cfg = RedmineConfig(url="https://x", key_file=str(key))
    with pytest.raises(ConfigError, match="readable by others .*chmod 600") as err:
        load_api_key(cfg)
    assert KEY not in str(err.value)
    key.chmod(0o600)
    assert load_api_key(cfg) == KEY
    key.chmod(0o400)
    assert load_api_key(cfg) == KEY
    monkeypatch.setenv("REDMINE_API_KEY", "k" * 40)
    assert load_api_key(cfg) == "k" * 40


def test_config_refuses_a_key_and_reads_the_project_file(tmp_path, monkeypatch):
    for var in ("REDMINE_URL", "REDMINE_PROJECT", "REDMINE_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[redmine]\nurl = "https://x"\napi_key = "secret"\n')
    with pytest.raises(ConfigError, match="must not be written"):
        load_config(bad)
    cfg = load_config(ROOT / "icd.toml")
    assert cfg.verify_tls and cfg.project == "cta-data" and cfg.categories["atmosphere"] == "Atmosphere Calibration"
    monkeypatch.setenv("REDMINE_URL", "https://other.example.org/")
    assert load_config(ROOT / "icd.toml").url == "https://other.example.org"


def test_relations_are_normalised_from_both_sides():
    # "A (#2) follows B (#1), delay 30" is stored by Redmine as "1 precedes 2"
    stored = {"id": 9, "issue_id": 1, "issue_to_id": 2, "relation_type": "precedes", "delay": 30}
    assert remote_relations({"id": 2, "relations": [stored]}) == [("follows", 1, 30, 9)]
    assert remote_relations({"id": 1, "relations": [stored]}) == [("precedes", 2, 30, 9)]
    assert canon_relations([("relates", 5, 3), ("follows", 1, 30)]) == [["follows", 1, 30], ["relates", 5, None]]


def test_editor_changes_only_the_values_it_sets():
    text = (ROOT / "interfaces.yaml").read_text()
    doc = YamlDoc(text)
    codes = [n.value for k, n in doc.node(("interfaces",)).value[0].value if k.value == "code"]
    assert codes
    i = next(i for i, node in enumerate(doc.node(("interfaces",)).value)
             if doc.node(("interfaces", i, "code")).value == "I-DATA-COM-3201")
    base = ("interfaces", i, "tasks")
    doc.set(base + (1, "status"), "In Progress")
    doc.set(base + (1, "relations"), [{"type": "follows", "task": 8529, "delay": 10}])
    doc.set(base + (1, "synced"), {"status": "Assigned", "relations": [["follows", 8529, 30]]}, flow=True)
    doc.set(base + (2, "synced"), {"status": "New"}, flow=True)
    doc.set(base + (2, "synced"), {"status": "Assigned"}, flow=True)   # the same key twice: one line
    doc.set(("redmine",), {"url": "https://x", "last_pull": "2026-01-01T00:00:00Z"})
    out = doc.render()
    old_lines, new_lines = text.splitlines(), out.splitlines()
    assert "        status: In Progress        # Assigned with nobody: reserved for the CCF teams" in new_lines
    assert "          - {type: follows, task: 8529, delay: 10}" in new_lines
    assert out.count("synced: {status: Assigned}") == 1
    removed = [line for line in old_lines if line not in new_lines]
    assert removed == ["        status: Assigned        # Assigned with nobody: reserved for the CCF teams",
                       "          - {type: follows, task: 8529, delay: 30}"]
    data = yaml.safe_load(out)
    assert data["redmine"]["last_pull"] == "2026-01-01T00:00:00Z"
    assert data["interfaces"][i]["tasks"][1]["synced"]["relations"] == [["follows", 8529, 30]]


def test_editor_inserts_an_id_as_first_key_and_writes_atomically(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("items:\n  # a comment\n  - subject: 'x: y'   # keep me\n    stage: feedback\n")
    doc = YamlDoc.read(path)
    doc.set(("items", 0, "id"), 42, first=True)
    doc.set(("items", 0, "parent"), 7)
    doc.write()
    assert path.read_text() == ("items:\n  # a comment\n  - id: 42\n    subject: 'x: y'   # keep me\n"
                                "    stage: feedback\n    parent: 7\n")
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]


def test_a_hung_server_times_out_for_real():
    """A server that accepts the connection and never answers: the request must give up."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        cfg = RedmineConfig(url=f"http://127.0.0.1:{port}", timeout=0.5, retries=1, backoff=0.05)
        c = Client(cfg, KEY)
        t0 = time.perf_counter()
        with pytest.raises(RedmineError, match=r"did not answer within 0.5 s \(after 2 attempts\)"):
            c.get("/issues.json")
        assert time.perf_counter() - t0 < 3
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
