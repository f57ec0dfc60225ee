"""Benchmark of `icd redmine` against a real local Redmine (Debian's Redmine 5 on thin/SQLite).

A registry of N interfaces (default 1,000) with 5 tasks each (a parent and 4 stage subtasks):
a full push to an empty project, then a no-op pull and a no-op push.  Prints HTTP request
counts and times; targets: no-op pull <= ceil(tasks/100) + 5 requests and < 5 s; no-op push
sends no write.  Starts its own server with scripts/redmine-test-server.py (needs root), or
uses the one in $ICD_REDMINE_STATE.

    .venv/bin/python bench/bench_redmine.py [--interfaces 1000]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icd.redmine.client import Client  # noqa: E402
from icd.redmine.config import RedmineConfig  # noqa: E402
from icd.redmine.sync import Sync  # noqa: E402

STAGES = ("feedback", "data_structure", "algorithms", "integration")
CATS = ("camera", "pointing", "atmosphere", "array")


def make_registry(n: int) -> str:
    out = ["# benchmark registry", "schema_version: 1", "people: {}", "icds:", "  DATA-COM:",
           "    title: ICD DATA-COM", '    version: "0.1"', "    date: 2026-11-25", "    status: draft", "interfaces:"]
    for i in range(n):
        code = f"I-DATA-COM-{i:04d}"
        out += [f"  - code: {code}", "    icd: DATA-COM", f'    title: "Interface {i}"',
                f"    category: {CATS[i % 4]}", "    level: per telescope", "    description: >-",
                f"      Benchmark interface {i}.", "    tasks:",
                f"      - subject: Implementation of interface {i}   # umbrella", "        role: parent",
                "        stage: algorithms", "        status: Assigned", "        estimated_hours: 100",
                "        start: 2027-01-04", "        due: 2027-12-31"]
        for s in STAGES:
            out += [f"      - subject: {s} of interface {i}", f"        stage: {s}", "        status: New"]
        out += ["    module: null", "    tests: []", ""]
    return "\n".join(out) + "\n"


def server():
    external = os.environ.get("ICD_REDMINE_STATE")
    if external:
        return json.loads((Path(external) / "state.json").read_text()), None, None
    spec = importlib.util.spec_from_file_location("rts", ROOT / "scripts" / "redmine-test-server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    state_dir = Path(tempfile.mkdtemp(prefix="icd-bench-redmine-"))
    return mod.start(state_dir), mod, state_dir


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interfaces", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="no-op pull/push repetitions (best is kept)")
    parser.add_argument("--registry", type=Path, help="an already pushed registry: measure only the no-op runs")
    parser.add_argument("--project", help="its Redmine project (with --registry)")
    args = parser.parse_args()
    state, mod, state_dir = server()
    try:
        cf = int(state.get("custom_field_interface_code", 1))
        if args.registry:
            ident, path = args.project, args.registry
        else:
            ident = "bench" + secrets.token_hex(3)
            s = requests.Session()
            s.headers["X-Redmine-API-Key"] = state["api_key"]
            trackers = [t["id"] for t in s.get(state["url"] + "/trackers.json").json()["trackers"]]
            s.post(state["url"] + "/projects.json", json={"project": {
                "name": ident, "identifier": ident, "is_public": True, "tracker_ids": trackers,
                "issue_custom_field_ids": [cf], "enabled_module_names": ["issue_tracking"]}}).raise_for_status()
            for name in ("Atmosphere Calibration", "Array Calibration", "Camera Calibration", "Pointing Calibration"):
                s.post(f"{state['url']}/projects/{ident}/issue_categories.json",
                       json={"issue_category": {"name": name}}).raise_for_status()
            work = Path(tempfile.mkdtemp(prefix="icd-bench-"))
            path = work / "interfaces.yaml"
            path.write_text(make_registry(args.interfaces))
        cfg = RedmineConfig(url=state["url"], project=ident, interface_code_field=cf, timeout=60, retries=2)
        tasks = sum(len(i.tasks) for i in Sync(path, cfg, Client(cfg, state["api_key"])).registry.interfaces)
        print(f"registry: {path} ({path.stat().st_size / 1e6:.1f} MB), {tasks} tasks, project {ident}")
        results = {}
        worst = {}   # the largest request / write counts over the repetitions

        def measure(name, run):
            client = Client(cfg, state["api_key"])
            t0 = time.perf_counter()
            report = run(Sync(path, cfg, client))
            elapsed = time.perf_counter() - t0
            print(f"{name:11s}: {elapsed:8.2f} s, {client.stats.summary()}; created {len(report.created)}", flush=True)
            w = worst.get(name, (0, 0))
            worst[name] = (max(w[0], client.stats.requests), max(w[1], client.stats.writes))
            best = results.get(name)
            if best is None or elapsed < best[1]:
                results[name] = (client.stats, elapsed, report)

        if not args.registry:
            measure("full push", lambda sy: sy.push())
            full_stats, full_s, _ = results["full push"]
            print(f"full push: {full_s / tasks * 1000:.1f} ms per task ({full_stats.by_method})")
        for _ in range(args.repeat):
            measure("no-op pull", lambda sy: sy.pull())
            measure("no-op push", lambda sy: sy.push())
        pull_stats, pull_s, _ = results["no-op pull"]
        push_stats, push_s, _ = results["no-op push"]
        limit = math.ceil(tasks / 100) + 5
        ok1 = worst["no-op pull"][0] <= limit
        ok2 = pull_s < 5
        ok3 = worst["no-op push"][1] == 0
        print(f"best of {args.repeat}: no-op pull {pull_s:.2f} s, {pull_stats.requests} requests; "
              f"no-op push {push_s:.2f} s, {push_stats.requests} requests, {push_stats.writes} writes")
        print(f"target no-op pull requests <= {limit}: {worst['no-op pull'][0]} (most in any run) -> {'MET' if ok1 else 'NOT MET'}")
        print(f"target no-op pull < 5 s: {pull_s:.2f} s -> {'MET' if ok2 else 'NOT MET'}")
        print(f"target no-op push sends no write: {worst['no-op push'][1]} writes (most in any run) -> {'MET' if ok3 else 'NOT MET'}")
        return 0 if ok1 and ok2 and ok3 else 1
    finally:
        if mod is not None:
            mod.stop(state_dir)


if __name__ == "__main__":
    sys.exit(main())
