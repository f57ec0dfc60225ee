"""`icd redmine publish`: the ICD documents as Markdown pages of the project's Redmine wiki.

One page per ICD (title ``<wiki_prefix>ICD_<name>``, e.g. ``ICD_DATA-COM``), rendered by the
registry's own publisher (``icd.publish.render_doc``, the same text as ``icd doc``).  A page is
written only when its text changed; the "generated at" time stamp of the document is ignored
in that comparison, so re-publishing an unchanged registry sends no write.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

from ..registry import load
from .client import Client, RedmineError
from .config import RedmineConfig
from .sync import Report, SyncError, require_valid

_STAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})? UTC")


def page_title(cfg: RedmineConfig, icd_name: str) -> str:
    return f"{cfg.wiki_prefix}ICD_{icd_name}".replace(" ", "_")


def render_pages(path: Path, cfg: RedmineConfig, names: Optional[Iterable[str]] = None) -> dict[str, str]:
    """ICD name -> Markdown text."""
    loaded = require_valid(load(path, check_modules=False))
    from ..publish import build_context, icd_names, render_doc
    from .. import evidence as evidence_store

    registry = loaded.registry
    try:
        evidence = evidence_store.load(Path(path).parent / evidence_store.DEFAULT_PATH)
    except (ValueError, TypeError, AttributeError, KeyError):  # no or damaged evidence: publish without it
        evidence = {}
    try:
        ctx = build_context(registry, evidence=evidence, redmine_url=cfg.url or None, read_modules=True)
    except Exception:  # noqa: BLE001 - a broken calibration module must not stop publishing
        ctx = build_context(registry, evidence=evidence, redmine_url=cfg.url or None, read_modules=False)
    from ..query import QueryError, resolve_icd

    try:  # "COM" or "data-com" means DATA-COM; an unknown name is an error, not an empty page
        wanted = [resolve_icd(n) for n in names] if names else icd_names(registry)
    except QueryError as exc:
        raise SyncError(str(exc)) from None
    return {name: render_doc(ctx, name, "md", source=Path(path).name) for name in wanted}


def _same(a: str, b: str) -> bool:
    norm = lambda t: _STAMP.sub("", t.replace("\r\n", "\n")).strip()  # noqa: E731
    return norm(a) == norm(b)


def publish(path: Path, cfg: RedmineConfig, client: Client, names: Optional[Iterable[str]] = None,
            dry_run: bool = False) -> Report:
    report = Report()
    pages = render_pages(path, cfg, names)
    base = f"/projects/{cfg.project}/wiki"
    client.whoami()
    for name, text in pages.items():
        title = page_title(cfg, name)
        try:
            current = client.get(f"{base}/{title}.json", what=f"reading wiki page {title}")["wiki_page"]["text"]
        except RedmineError as exc:
            if exc.status != 404:
                raise
            current = None
        if current is not None and _same(current, text):
            report.add(f"wiki {title}: unchanged")
            continue
        verb = "create" if current is None else "update"
        report.add(f"wiki {title}: {verb} ({len(text.splitlines())} lines)")
        if not dry_run:
            client.put(f"{base}/{title}.json", {"wiki_page": {"text": text, "comments": "icd redmine publish"}},
                       what=f"writing wiki page {title}")
            report.updated.add(len(report.updated))
    return report
