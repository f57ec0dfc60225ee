"""Structure of the published HTML a person reads and prints: contents and links that resolve,
charts with a title/legend/axis, the folded evidence table, print CSS, clean Markdown."""
from __future__ import annotations

import datetime as dt
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from registry_sample import CODES, SAMPLE, write  # noqa: E402

from icd import publish  # noqa: E402
from icd.evidence import EvidenceRecord  # noqa: E402
from icd.publish import charts  # noqa: E402
from icd.publish.report import report_data  # noqa: E402
from icd.publish.views import Context, MethodInfo, build_context, interface_views  # noqa: E402
from icd.registry import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2026, 11, 25)
SVG = "{http://www.w3.org/2000/svg}"

EVIDENCE = {
    "I-DATA-xST-0106": EvidenceRecord(code="I-DATA-xST-0106", module="calib.camera.ffactor", passed=False,
                                      summary="bias too large", metrics={"bias": 0.031, "gain": 7.9},
                                      criteria={"bias": "< 0.5 %"}, duration_s=2.25,
                                      timestamp="2026-11-25T10:00:00+00:00"),
    "I-DATA-COM-0006": EvidenceRecord(code="I-DATA-COM-0006", module="calib.atmosphere.ctc", passed=True,
                                      summary="ok", metrics={"pull_rms": 1.01}, timestamp="2026-11-25T09:00:00+00:00"),
}
LONG_METHOD = "Cherenkov transparency " * 20 + "\n\nDetails."


class _Page(HTMLParser):
    """Ids, fragment links, the tags and the text inside <nav class="toc"> of an HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.fragments: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.toc_links: list[str] = []
        self._in_toc = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "nav" and "toc" in (a.get("class") or ""):
            self._in_toc += 1
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
            if a["href"].startswith("#"):
                self.fragments.append(a["href"][1:])
                if self._in_toc:
                    self.toc_links.append(a["href"][1:])

    def handle_endtag(self, tag):
        if tag == "nav" and self._in_toc:
            self._in_toc -= 1


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _assert_links_resolve(html: str, name: str) -> _Page:
    page = _parse(html)
    dupes = {i for i in page.ids if page.ids.count(i) > 1}
    assert not dupes, f"{name}: duplicate ids {sorted(dupes)}"
    missing = sorted(set(page.fragments) - set(page.ids))
    assert not missing, f"{name}: links to ids that are not in the page: {missing}"
    for href in page.hrefs:  # self-contained: in-page links, sibling ICD documents, Redmine
        assert (href.startswith("#") or re.fullmatch(r"DATA-[A-Za-z]+\.html#[a-z0-9-]+", href)
                or href.startswith("https://forge.cta-observatory.org/issues/")), (name, href)
    return page


@pytest.fixture()
def registry(tmp_path):
    loaded = load(write(tmp_path), check_modules=False)
    assert loaded.ok
    return loaded.registry


def _ctx(registry, evidence=EVIDENCE, methods=None):
    return Context(registry, evidence, methods or {}, "https://forge.cta-observatory.org", TODAY)


def test_bundled_documents_have_contents_and_every_link_resolves(tmp_path):
    loaded = load(ROOT / "interfaces.yaml", check_modules=False)
    assert loaded.ok
    reg = loaded.registry
    publish.publish_docs(reg, publish.icd_names(reg), ("html",), tmp_path, read_modules=False, today=TODAY)
    publish.publish_report(reg, ("html",), tmp_path, read_modules=False, today=TODAY)
    for name in ("DATA-COM", "DATA-xST", "DATA-ACTL"):
        page = _assert_links_resolve((tmp_path / f"{name}.html").read_text(), name)
        codes = [i.code.lower() for i in reg.interfaces if i.icd == name]
        # the table of contents links Table 1 and every interface section, in order
        assert page.toc_links[0] == "table-1"
        assert [t for t in page.toc_links if t not in ("table-1", "interfaces")] == codes
        assert "contents" in page.ids
    page = _assert_links_resolve((tmp_path / "report.html").read_text(), "report")
    for section in ("overview", "current", "icd-data-com", "icd-data-xst", "icd-data-actl", "volunteers", "ccf",
                    "overdue", "hours", "evidence"):
        assert section in page.toc_links, section
    # every interface link of the report (task lists, hours, evidence) lands on its row of the matrix
    assert {i.code.lower() for i in reg.interfaces} <= set(page.ids)


def test_sample_documents_links_resolve_with_since_and_evidence(registry, tmp_path):
    from icd import snapshot

    snap = snapshot.save(registry, tmp_path / "s.json", source="interfaces.yaml")
    registry.interfaces[1].tasks[2].status = "Closed"
    ctx = _ctx(registry)
    html = publish.render_report(ctx, "html", interface_views(ctx), since=snapshot.since(snap, registry))
    page = _assert_links_resolve(html, "report")
    assert "since" in page.toc_links and "since" in page.ids
    for name in ("DATA-COM", "DATA-xST", "DATA-ACTL"):
        _assert_links_resolve(publish.render_doc(ctx, name, "html"), name)


def test_related_interface_in_another_icd_links_to_its_document(tmp_path):
    text = SAMPLE.replace('    title: "Optical PSF characterisation"\n',
                          '    title: "Optical PSF characterisation"\n    related: [I-DATA-COM-0006, I-DATA-xST-0106]\n')
    loaded = load(write(tmp_path, text), check_modules=False)
    assert loaded.ok, loaded.diagnostics
    ctx = _ctx(loaded.registry)
    html = publish.render_doc(ctx, "DATA-xST", "html")
    assert '<a href="DATA-COM.html#i-data-com-0006">I-DATA-COM-0006</a> (DATA-COM)' in html
    assert '<a href="#i-data-xst-0106">I-DATA-xST-0106</a>' in html
    _assert_links_resolve(html, "DATA-xST")
    md = publish.render_doc(ctx, "DATA-xST", "md")
    assert "[I-DATA-COM-0006](DATA-COM.md#i-data-com-0006) (DATA-COM), [I-DATA-xST-0106](#i-data-xst-0106)" in md


def test_every_chart_has_a_title_legend_and_axis(registry):
    ctx = _ctx(registry)
    data = report_data(ctx, interface_views(ctx))
    svgs = [data["chart_overall"], data["chart_hours"], data["chart_evidence"]] + [s["chart"] for s in data["icds"]]
    for svg in svgs:
        root = ElementTree.fromstring(str(svg))
        title = root.find(f"{SVG}title")
        assert title is not None and title.text and list(root)[0] is title  # first child: read by screen readers
        visible = [t for t in root.iter(f"{SVG}text") if t.get("class") == "chart-title"]
        assert [t.text for t in visible] == [title.text]  # and shown on the page and on paper
        assert root.get("aria-label") == title.text and root.get("viewBox")
        assert float(root.get("height")) > 0
        # each coloured mark has its own tooltip
        marks = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
        assert all(float(r.get("width")) >= 0 and float(r.get("height")) > 0 for r in marks)
    # the stage chart of DATA-COM: a legend entry per status drawn, a tick "0" on the y axis, the notes
    com = ElementTree.fromstring(str(data["icds"][0]["chart"]))
    texts = [t.text for t in com.iter(f"{SVG}text")]
    assert "Assigned" in texts and "In Progress" in texts and "0" in texts
    assert "interfaces with a task" in texts and "2 without task" in texts
    assert "DATA-COM: interfaces per lifecycle stage and task status" in texts
    # the evidence chart names "no evidence yet" in its legend, and an ICD without interfaces says so
    ev_texts = [t.text for t in ElementTree.fromstring(str(data["chart_evidence"])).iter(f"{SVG}text")]
    assert {"pass", "fail", "error", "no evidence yet", "no interfaces"} <= set(ev_texts)
    hours = [t.text for t in ElementTree.fromstring(str(data["chart_hours"])).iter(f"{SVG}text")]
    assert "no hours recorded" in hours and "estimated" in hours and "spent" in hours


def test_chart_labels_are_escaped_and_empty_charts_say_so():
    svg = charts.stacked_columns(["<b>x</b>"], [("A&B", "#123456", [0])], "t <i>", empty="nothing & none")
    root = ElementTree.fromstring(str(svg))  # well-formed XML: every label escaped
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "t <i>" in texts and "<b>x</b>" in texts and "nothing & none" in texts
    assert "<b>" not in str(svg)
    rows = charts.stacked_rows(["a"], [("p", "#2e7d32", [3]), ("n", "#d0d0d0", [1])], "r")
    fills = {t.text: t.get("fill") for t in ElementTree.fromstring(str(rows)).iter(f"{SVG}text") if t.text in ("3", "1")}
    assert fills == {"3": "#ffffff", "1": "#1d2430"}  # readable on dark and on light segments


@pytest.mark.parametrize("vmax, ticks", [(0, [0, 1]), (1, [0, 1]), (3, [0, 1, 2, 3]), (32, [0, 10, 20, 30, 40]),
                                         (1267, [0, 500, 1000, 1500]), (0.3, [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])])
def test_nice_ticks(vmax, ticks):
    got = charts.nice_ticks(vmax)
    assert got == pytest.approx(ticks) and got[-1] >= vmax


def test_evidence_table_folds_metrics_and_long_methods(registry):
    methods = {"calib.camera.ffactor": MethodInfo("calib.camera.ffactor", method=LONG_METHOD)}
    registry.interfaces[3].module = "calib.camera.ffactor"
    ctx = _ctx(registry, methods=methods)
    html = publish.render_report(ctx, "html", interface_views(ctx))
    table = html[html.index('<table class="evidence">'):]
    table = table[:table.index("</table></div>")]
    # a failing interface: a red badge and a tinted row; a passing one: a green badge
    assert '<tr class="ev has-metrics v-row-fail"><td class="ifc"><a href="#i-data-xst-0106">' in table
    # the metrics row under it spans the columns right of the interface code
    assert '<tr class="ev-metrics"><td></td><td colspan="4"><details class="metrics">' in table
    assert '<span class="v-fail">fail</span>' in table and '<span class="v-pass">pass</span>' in table
    # metrics folded with their count (singular for one), each in its own row with its criterion
    assert '<details class="metrics"><summary>2 metrics</summary>' in table
    assert '<details class="metrics"><summary>1 metric</summary>' in table
    assert '<tr><td>bias</td><td class="num">0.031</td><td>&lt; 0.5 %</td></tr>' in table
    # a long method summary is folded behind its beginning; the whole text stays in the page
    summary = " ".join(LONG_METHOD.split("\n\n")[0].split())
    assert f'<details class="text"><summary>{summary[:110]}…</summary>{summary}</details>' in table
    assert "2026-11-25<br>2.25 s" in table


def test_css_for_screen_and_print(registry):
    ctx = _ctx(registry)
    for html in (publish.render_doc(ctx, "DATA-COM", "html"), publish.render_report(ctx, "html")):
        css = html[html.index("<style>"):html.index("</style>")]
        printing = css[css.index("@media print"):]
        assert "section.interface, section.icd { break-before: page; }" in printing
        assert "thead { display: table-header-group; }" in printing and "@page" in printing
        assert ".tw { overflow-x: auto;" in css  # wide tables scroll on a narrow screen
        assert "http" not in css and "url(" not in css and "@import" not in css
    doc = publish.render_doc(ctx, "DATA-COM", "html")
    # every interface is a section the print CSS starts on a new page; wide tables are wrapped
    assert doc.count('<section id="') == 3 and doc.count('class="interface') == 3
    assert '<div class="tw"><table class="tasks">' in doc and "<thead>" in doc


def test_markdown_stays_clean(registry):
    ctx = _ctx(registry)
    texts = [publish.render_doc(ctx, n, "md") for n in ("DATA-COM", "DATA-xST", "DATA-ACTL")]
    texts.append(publish.render_report(ctx, "md"))
    for text in texts:
        assert "\n\n\n" not in text
        assert "<div" not in text and "<details" not in text and "<svg" not in text and "<nav" not in text
        for line in text.splitlines():
            if line.startswith("|"):
                assert line.rstrip().endswith("|"), line
    for code in CODES:
        assert code in texts[-1]
