#!/usr/bin/env python3
"""A real Redmine on loopback for the tests and the benchmark of `icd redmine`.

Debian's Redmine 5.0 (packages redmine, redmine-sqlite, thin) with SQLite; recipe in
../shared/redmine-local.md.  Must run as root (it installs packages, creates a Redmine
instance under /var/lib/redmine and starts thin as www-data).

    redmine-test-server.py install            # apt-get install redmine if missing
    redmine-test-server.py start --state DIR  # fresh database, free port; writes DIR/state.json (0600)
    redmine-test-server.py stop  --state DIR  # stops that server (by its pid) and removes its instance

A template database (migrated, default data, then scripts/redmine-cta-setup.rb) is built once
and cached under /var/lib/redmine/icd-template-<hash>; each `start` copies it into a new
instance, so every test session gets its own empty database, and gives the admin a new API
key.  The key is written only to DIR/state.json and DIR/api-key, both mode 0600; it is never
printed.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REDMINE = Path("/usr/share/redmine")
INSTANCES = Path("/var/lib/redmine")
DEFAULT_DB = Path("/var/lib/dbconfig-common/sqlite3/redmine/instances/default/redmine_default")
SETUP = Path(__file__).with_name("redmine-cta-setup.rb")
ENV = {"BUNDLER_VERSION": "2.3.15", "RAILS_ENV": "production"}
PROJECT = "cta-data"


def log(msg: str) -> None:
    print(f"[redmine-test-server] {msg}", file=sys.stderr, flush=True)


def installed() -> bool:
    return (REDMINE / "config.ru").is_file() and DEFAULT_DB.is_file() and shutil.which("thin") is not None


def install() -> None:
    """Install Debian's Redmine with SQLite and thin (about a minute), if it is not there."""
    if installed():
        return
    if os.geteuid() != 0:
        raise SystemExit("Redmine is not installed and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", BUNDLER_VERSION="2.3.15")
    log("installing redmine redmine-sqlite thin (apt-get)")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
    result = subprocess.run(["apt-get", "install", "-y", "-q", "redmine", "redmine-sqlite", "thin"],
                            env=env, stdout=sys.stderr)
    if result.returncode != 0:  # a post-install script run with the wrong bundler: finish it
        subprocess.run(["dpkg", "--configure", "-a"], check=True, env=env, stdout=sys.stderr)
    if not installed():
        raise SystemExit("Redmine installation did not produce /usr/share/redmine and its default database")


def _www():
    return pwd.getpwnam("www-data")


def _chown_tree(path: Path) -> None:
    www = _www()
    for root, dirs, files in os.walk(path):
        os.chown(root, www.pw_uid, www.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), www.pw_uid, www.pw_gid, follow_symlinks=False)


def make_instance(name: str, database: Path) -> Path:
    """Create the Redmine instance folder ``name`` (config, log, tmp, files) using ``database``."""
    root = INSTANCES / name
    for sub in ("config", "log", "tmp/cache", "tmp/pids", "tmp/sockets", "files", "public/plugin_assets", "db"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "config" / "database.yml").write_text(
        f"production:\n  adapter: sqlite3\n  database: {database}\n  encoding: utf8\n  timeout: 10000\n")
    secret = root / "config" / "secret_key.txt"
    if not secret.exists():
        secret.write_text(secrets.token_hex(32) + "\n")
    _chown_tree(root)
    os.chmod(root / "config" / "secret_key.txt", 0o600)
    return root


def _as_www(cmd: list[str], instance: str, **kw) -> subprocess.Popen:
    www = _www()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           "REDMINE_INSTANCE": instance, **ENV}
    return subprocess.Popen(cmd, cwd=REDMINE, env=env, user=www.pw_uid, group=www.pw_gid,
                            extra_groups=[], **kw)


def template() -> Path:
    """The cached, migrated and CTA-configured template database (built on first use).

    Several test sessions may start at once: the build runs under an exclusive flock on
    /var/lib/redmine/.icd-template.lock, so one session builds and the others wait and reuse it
    (and no session deletes a template another one is building)."""
    digest = hashlib.sha256(SETUP.read_bytes()).hexdigest()[:10]
    name = f"icd-template-{digest}"
    db = INSTANCES / name / "db" / "redmine.sqlite3"
    done = INSTANCES / name / "db" / "ready"
    if done.exists():
        return db
    INSTANCES.mkdir(parents=True, exist_ok=True)
    with open(INSTANCES / ".icd-template.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another session is building the template database; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():   # built while we waited
            return db
        return _build_template(name, db, done)


def _build_template(name: str, db: Path, done: Path) -> Path:
    log("building the template database (once; about a minute)")
    for stale in INSTANCES.glob("icd-template-*"):  # built from an older setup script
        if stale.name != name:
            shutil.rmtree(stale, ignore_errors=True)
    root = make_instance(name, db)
    shutil.copyfile(DEFAULT_DB, db)
    setup = root / "config" / "cta-setup.rb"
    shutil.copyfile(SETUP, setup)
    _chown_tree(root)
    proc = _as_www(["bundle", "exec", "rails", "runner", "-e", "production", str(setup)], name,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the CTA setup failed in the template instance:\n{err[-2000:]}")
    ids = dict(part.split("=", 1) for part in out.split() if "=" in part)
    ids.pop("api_key", None)  # never kept: each session gets its own key
    (root / "db" / "ids.json").write_text(json.dumps(ids))
    done.write_text("ok\n")
    return db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _new_api_key(db: Path) -> str:
    key = secrets.token_hex(20)
    con = sqlite3.connect(db)
    try:
        admin = con.execute("SELECT id FROM users WHERE login='admin'").fetchone()[0]
        con.execute("DELETE FROM tokens WHERE user_id=? AND action='api'", (admin,))
        con.execute("INSERT INTO tokens (user_id, action, value, created_on, updated_on) "
                    "VALUES (?, 'api', ?, datetime('now'), datetime('now'))", (admin, key))
        con.commit()
    finally:
        con.close()
    return key


def wait_until_up(url: str, key: str, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/projects/{PROJECT}.json", headers={"X-Redmine-API-Key": key})
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"thin exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"Redmine did not answer on {url} within {timeout:.0f} s")


def start(state_dir: Path) -> dict:
    install()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    tmpl = template()
    name = f"icdtest-{secrets.token_hex(4)}"
    db = INSTANCES / name / "db" / "redmine.sqlite3"
    root = make_instance(name, db)
    shutil.copyfile(tmpl, db)
    key = _new_api_key(db)
    _chown_tree(root)
    os.chmod(db, 0o600)
    for attempt in range(5):
        port = free_port()
        logf = open(root / "log" / "thin.out", "ab")
        proc = _as_www(["bundle", "exec", "thin", "start", "-R", "config.ru", "-e", "production",
                        "-a", "127.0.0.1", "-p", str(port)], name,
                       stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, key, proc=proc)
            break
        except SystemExit as exc:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            if attempt == 4:
                raise
            log(f"{exc}; retrying on another port")
    ids = json.loads((tmpl.parent / "ids.json").read_text())
    state = {"url": url, "api_key": key, "pid": proc.pid, "instance": name, "root": str(root),
             "project": PROJECT, **{k: v for k, v in ids.items() if k != "project"}}
    _write_private(state_dir / "state.json", json.dumps(state, indent=1))
    _write_private(state_dir / "api-key", key + "\n")
    (state_dir / "url").write_text(url + "\n")
    log(f"Redmine up at {url} (instance {name}, pid {proc.pid}); key in {state_dir / 'api-key'}")
    return state


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def stop(state_dir: Path) -> None:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        log(f"no server recorded in {state_file}")
        return
    state = json.loads(state_file.read_text())
    pid = int(state["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)  # the process group that start() created for thin
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    root = Path(state["root"])
    if root.parent == INSTANCES and root.name.startswith("icdtest-"):
        shutil.rmtree(root, ignore_errors=True)
    for name in ("state.json", "api-key", "url"):
        (state_dir / name).unlink(missing_ok=True)
    log(f"stopped pid {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("install", "start", "stop", "template"))
    parser.add_argument("--state", type=Path, default=Path("/tmp/icd-redmine"),
                        help="folder for state.json / api-key (mode 0600)")
    args = parser.parse_args(argv)
    if args.action == "install":
        install()
    elif args.action == "template":
        install()
        print(template())
    elif args.action == "start":
        state = start(args.state)
        print(state["url"])
    else:
        stop(args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
