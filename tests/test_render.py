"""ICD documents and status reports: content, escaping, self-containment, counts, --since."""
from __future__ import annotations

import datetime as dt
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from registry_sample import CODES, SAMPLE, write  # noqa: E402

from icd import publish, query, snapshot  # noqa: E402
from icd.evidence import EvidenceRecord  # noqa: E402
from icd.publish.report import report_data  # noqa: E402
from icd.publish.views import CONVENTION, Context, MethodInfo, build_context, interface_views  # noqa: E402
from icd.registry import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2026, 11, 25)


@pytest.fixture()
def registry(tmp_path):
    loaded = load(write(tmp_path), check_modules=False)
    assert loaded.ok
    return loaded.registry


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)


def _check_self_contained(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert not [v for k, v in parser.attrs if k == "src"]
    assert "<style>" in html and "@import" not in html
    return parser


def test_bundled_registry_documents_hold_every_interface(tmp_path):
    loaded = load(ROOT / "interfaces.yaml", check_modules=False)
    assert loaded.ok
    reg = loaded.registry
    paths = publish.publish_docs(reg, publish.icd_names(reg), publish.FORMATS, tmp_path, read_modules=False, today=TODAY)
    assert len(paths) == 6
    for name in ("DATA-COM", "DATA-xST", "DATA-ACTL"):
        md = (tmp_path / f"{name}.md").read_text()
        html = (tmp_path / f"{name}.html").read_text()
        _check_self_contained(html)
        for iface in reg.interfaces:
            inside = iface.icd == name
            assert (f"## {iface.display_code} — " in md) == inside, (name, iface.code)
            assert (f'<section id="{iface.code.lower()}"' in html) == inside, (name, iface.code)
        for text in (md, html):
            assert CONVENTION in text
            assert "Table 1: list of interfaces" in text
    actl = (tmp_path / "DATA-ACTL.md").read_text()
    assert "This ICD has no interfaces yet." in actl
    com = (tmp_path / "DATA-COM.md").read_text()
    assert "## PROV-DATA-COM-ARCADE-LIDAR (provisional) — ARCADE LIDAR" in com
    assert "[#8546](https://forge.cta-observatory.org/issues/8546)" in com
    assert "| Responsibles | N. Serre (Project Office); M. Gaug (COM-CCF); R. de los Reyes (DATA) |" in com
    xst = (tmp_path / "DATA-xST.md").read_text()
    assert "R. de los Reyes (DATA); to be decided — xSTs |" in xst
    assert "G. Maier (DATA) — definition of the interfaces" in xst


def test_interface_section_content(registry):
    ctx = build_context(registry, today=TODAY, read_modules=False)
    views = {v["code"]: v for v in interface_views(ctx)}
    md = publish.render_doc(ctx, "DATA-COM", "md", [views[c] for c in CODES[:3]])
    section = md.split("## I-DATA-COM-0006 — ")[1].split("\n## ")[0]
    for expected in ("### Description of the data interface", "| Operation/information level | per telescope |",
                     "| Pipeline levels | B (next-morning), C (off-site) |", "### Information provided by",
                     "| B. Bob | COM-CCF |  |", "| C. Carol | DATA | PIPE-Cal |", "### Lifecycle",
                     "No calibration module linked yet.", "### Verification status", "no evidence yet",
                     "[I-DATA-COM-3201](#i-data-com-3201)"):
        assert expected in section, expected
    ctc = md.split("## I-DATA-COM-3201 — ")[1].split("\n## ")[0]
    assert "| Implement the algorithms (PIPE-CAL) | Assigned | #8546 |" in ctc
    assert "nobody (reserved for the CCF teams)" in ctc and "2020-04-01 (overdue)" in ctc
    assert "follows #8529 (30 days)" in ctc
    prov = md.split("## PROV-DATA-COM-ATM-SELECTION (provisional) — ")[1]
    assert "(not yet in Redmine)" in prov and "volunteers wanted" in prov
    assert "### Information provided by\n\nto be decided\n" in prov


def test_method_and_evidence_are_shown(registry):
    registry.interfaces[3].module = "calib.camera.ffactor"
    registry.interfaces[3].tests = ["calib/camera/tests/test_ffactor.py"]
    evidence = {"I-DATA-xST-0106": EvidenceRecord(
        code="I-DATA-xST-0106", module="calib.camera.ffactor", passed=False, summary="bias too large",
        metrics={"bias": 0.031, "gain": {"value": 7.95, "unit": "adc"}}, criteria={"bias": "< 0.5 %"},
        duration_s=2.25, timestamp="2026-11-25T10:00:00+00:00")}
    methods = {"calib.camera.ffactor": MethodInfo("calib.camera.ffactor", method="F-factor method.\n\nG = ...",
                                                  title="ADC/p.e. by the F-factor", references=("Mirzoyan 1997",))}
    ctx = Context(registry, evidence, methods, "https://forge.cta-observatory.org", TODAY)
    views = [v for v in interface_views(ctx) if v["icd"] == "DATA-xST"]
    html = publish.render_doc(ctx, "DATA-xST", "html", views)
    assert '<div class="method">F-factor method.\n\nG = ...</div>' in html
    assert "<code>calib.camera.ffactor</code>: ADC/p.e. by the F-factor" in html and "<li>Mirzoyan 1997</li>" in html
    assert "<code>calib/camera/tests/test_ffactor.py</code>" in html
    assert '<span class="v-fail">fail</span> — bias too large' in html
    assert "<td>gain</td><td class=\"num\">7.95 adc</td>" in html and "in 2.25 s" in html
    md = publish.render_doc(ctx, "DATA-xST", "md", views)
    assert "```text\nF-factor method.\n\nG = ...\n```" in md
    # the status report shows, per interface, the method (the docstring's summary), module, tests and result
    report_md = publish.render_report(ctx, "md", interface_views(ctx))
    assert ("| I-DATA-xST-0106 | `calib.camera.ffactor` | F-factor method. | `calib/camera/tests/test_ffactor.py` "
            "| fail | bias too large | bias = 0.031; gain = 7.95 adc | 2026-11-25T10:00:00+00:00 (2.25 s) |") in report_md
    report_html = publish.render_report(ctx, "html", interface_views(ctx))
    assert ('<td class="module"><code>calib.camera.ffactor</code><br>F-factor method.</td>'
            '<td class="tests"><code>calib/<wbr>camera/<wbr>tests/<wbr>test_ffactor.py</code></td>') in report_html
    # a docstring that quotes a fenced block does not close the block it is shown in
    fenced = Context(registry, evidence, {"calib.camera.ffactor": MethodInfo(
        "calib.camera.ffactor", method="Example:\n```python\nx = 1\n```\nEnd.")}, "https://x", TODAY)
    md = publish.render_doc(fenced, "DATA-xST", "md", [v for v in interface_views(fenced) if v["icd"] == "DATA-xST"])
    assert "````text\nExample:\n```python\nx = 1\n```\nEnd.\n````" in md
    broken = Context(registry, {}, {"calib.camera.ffactor": MethodInfo("calib.camera.ffactor", error="no module named calib.camera.ffactor")},
                     "https://x", TODAY)
    assert "The module cannot be read: no module named calib.camera.ffactor" in publish.render_doc(
        broken, "DATA-xST", "md", [v for v in interface_views(broken) if v["icd"] == "DATA-xST"])


def test_html_escapes_registry_text(tmp_path):
    evil = "<script>alert('x')</script> & \"friends\""
    text = (SAMPLE.replace('title: "Optical PSF characterisation"', f"title: '{evil.replace(chr(39), chr(39) * 2)}'")
            .replace("name: C. Carol", "name: C. <b>Carol</b>")
            .replace("subject: Implementation of CTC algorithms", "subject: CTC <img src=x onerror=alert(1)>"))
    loaded = load(write(tmp_path, text), check_modules=False)
    assert loaded.ok, loaded.diagnostics
    reg = loaded.registry
    paths = publish.publish_docs(reg, publish.icd_names(reg), ("html", "md"), tmp_path / "o", read_modules=False)
    paths += publish.publish_report(reg, ("html", "md"), tmp_path / "o", read_modules=False, today=TODAY)
    for path in paths:
        body = path.read_text()
        assert "<script>" not in body and "<b>Carol" not in body and "<img" not in body, path.name
        if path.suffix == ".html":
            _check_self_contained(body)
    xst = (tmp_path / "o" / "DATA-xST.html").read_text()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;friends&#34;" in xst
    com = (tmp_path / "o" / "DATA-COM.html").read_text()
    assert "C. &lt;b&gt;Carol&lt;/b&gt;" in com and "CTC &lt;img src=x onerror=alert(1)&gt;" in com


def test_markdown_table_cells_are_safe(tmp_path):
    text = SAMPLE.replace('title: "CTC implementation"', 'title: "CTC | implementation"')
    reg = load(write(tmp_path, text), check_modules=False).registry
    ctx = build_context(reg, read_modules=False, today=TODAY)
    md = publish.render_doc(ctx, "DATA-COM", "md")
    assert "| CTC \\| implementation |" in md


def test_report_counts(registry):
    ctx = build_context(registry, today=TODAY, read_modules=False)
    data = report_data(ctx, interface_views(ctx))
    com, xst, actl = data["icds"]
    assert (com["name"], com["n"], com["provisional"], com["tasks"]) == ("DATA-COM", 3, 1, 4)
    assert (com["volunteers"], com["ccf"], com["overdue"]) == (2, 1, 2)  # 8529 + the provisional task; 8546; 8529 and 8546
    assert (com["estimated"], com["spent"]) == (1307.0, 12.5)  # the upstream task of COM is not counted
    assert (xst["estimated"], xst["spent"]) == (80.0, 90.0)
    assert actl["n"] == 0 and data["overall"]["n"] == 5
    assert [t["label"] for t in data["volunteers"]] == ["#8529", "(not yet in Redmine)"]
    assert [t["label"] for t in data["ccf"]] == ["#8546"]
    assert [(t["label"], t["days_late"]) for t in data["overdue"]] == [("#8529", 3799), ("#8546", 2429)]
    rows = {r["title"]: r["counts"] for r in com["stage_rows"]}
    columns = list(data["status_columns"])
    assert rows["Algorithms"][columns.index("Assigned")] == 1 and rows["Algorithms"][columns.index("no task")] == 2
    assert rows["Integration"][columns.index("In Progress")] == 1
    current = {c["key"]: c["count"] for c in xst["current"]}
    assert current["done"] == 1 and current["none"] == 1
    # "today" is injectable: in 2016 nothing was overdue yet except nothing
    early = report_data(build_context(registry, today=dt.date(2016, 1, 1), read_modules=False),
                        interface_views(build_context(registry, today=dt.date(2016, 1, 1), read_modules=False)))
    assert early["overdue"] == []


def test_report_documents(registry, tmp_path):
    evidence = {"I-DATA-xST-0106": EvidenceRecord(code="I-DATA-xST-0106", module="m", passed=True, summary="ok",
                                                  metrics={"rms": 0.5}, timestamp="2026-11-25T09:00:00")}
    paths = publish.publish_report(registry, publish.FORMATS, tmp_path, evidence=evidence, today=TODAY, read_modules=False)
    md, html = (p.read_text() for p in paths)
    for text in (md, html):
        assert CONVENTION in text
        for code in CODES:
            assert code in text
        assert "Tasks needing volunteers" in text and "Tasks reserved for the CCF teams" in text
        assert "Overdue tasks" in text and "Hours estimated vs spent" in text
        assert "Matrix interface × stage" in text and "Evidence of the calibration modules" in text
    assert "| I-DATA-xST-0106 | none yet |  |  | pass | ok | rms = 0.5 | 2026-11-25T09:00:00 (0.00 s) |" in md
    assert "| I-DATA-COM-3201 — CTC implementation | no task | no task | Assigned | In Progress | no task | no evidence yet |" in md
    parser = _check_self_contained(html)
    assert parser.tags.count("svg") == 3 + 2  # overall, hours, evidence + one per ICD with interfaces


def test_charts_are_valid_svg(registry):
    from xml.etree import ElementTree

    ctx = build_context(registry, today=TODAY, read_modules=False)
    data = report_data(ctx, interface_views(ctx))
    for key in ("chart_overall", "chart_hours", "chart_evidence"):
        root = ElementTree.fromstring(str(data[key]))
        assert root.tag.endswith("svg") and root.find("{http://www.w3.org/2000/svg}title") is not None
    heights = [float(r.get("height")) for r in ElementTree.fromstring(str(data["chart_overall"])).iter("{http://www.w3.org/2000/svg}rect")
               if r.find("{http://www.w3.org/2000/svg}title") is not None]
    assert heights and all(h > 0 for h in heights)


def test_snapshot_diff(registry, tmp_path):
    path = snapshot.save(registry, tmp_path / "s.json", source="interfaces.yaml")
    assert not snapshot.since(path, registry).any
    registry.interfaces[1].tasks[2].status = "Closed"
    registry.interfaces[1].tasks[2].done_ratio = 100
    registry.interfaces[0].title = "CTC (renamed)"
    removed = registry.interfaces.pop()
    changes = snapshot.since(path, registry)
    assert changes.any and changes.added == []
    assert changes.removed == [{"code": removed.code, "title": removed.title, "icd": removed.icd}]
    assert changes.status_changes == [{"code": "I-DATA-COM-3201", "task": "#11108", "subject": "Integrate algorithms in DATA",
                                       "old": "In Progress", "new": "Closed"}]
    assert {"where": "I-DATA-COM-0006", "field": "title", "old": "CTC, Cherenkov Transparency Coefficient",
            "new": "CTC (renamed)"} in changes.changed
    assert {"where": "I-DATA-COM-3201 task #11108", "field": "done_ratio", "old": "0", "new": "100"} in changes.changed
    with pytest.raises(snapshot.SnapshotError, match="not a readable snapshot"):
        (tmp_path / "bad.json").write_text("{")
        snapshot.load(tmp_path / "bad.json")


def test_query_rows(registry):
    loaded_index = __import__("icd.registry", fromlist=["Index"]).Index(registry)
    items = query.filter_interfaces(registry, loaded_index, person="Carol")
    rows = query.rows(items, registry)
    assert [r["code"] for r in rows] == ["I-DATA-COM-0006", "I-DATA-COM-3201", "I-DATA-xST-0106", "I-DATA-xST-1005"]
    assert rows[0]["provided_by"] == "B. Bob, C. Carol"
    with pytest.raises(query.QueryError, match=re.escape("unknown stage 'algo'")):
        query.filter_interfaces(registry, loaded_index, stage="algo")


def test_only_web_addresses_become_redmine_links(tmp_path):
    text = SAMPLE + "redmine:\n  url: 'javascript:alert(1)//'\n"
    loaded = load(write(tmp_path, text), check_modules=False)
    assert loaded.ok, loaded.diagnostics
    ctx = build_context(loaded.registry, today=TODAY, read_modules=False)
    html = publish.render_doc(ctx, "DATA-COM", "html")
    assert "javascript:" not in html
    assert 'href="https://forge.cta-observatory.org/issues/8546"' in html


def test_wiki_pages_are_named_by_the_icd_and_an_unknown_icd_is_an_error(tmp_path):
    from icd.redmine.config import RedmineConfig
    from icd.redmine.publish import render_pages
    from icd.redmine.sync import SyncError

    path = write(tmp_path)
    pages = render_pages(path, RedmineConfig(url="https://r.example.org"), ["com", "xST"])
    assert list(pages) == ["DATA-COM", "DATA-xST"] and "I-DATA-COM-3201" in pages["DATA-COM"]
    with pytest.raises(SyncError, match="unknown ICD 'FOO'"):
        render_pages(path, RedmineConfig(url="https://r.example.org"), ["FOO"])
