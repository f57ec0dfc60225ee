"""Hand-written inline SVG charts (no JavaScript, no external files).

Each function returns a ``markupsafe.Markup`` string ready to be placed in an HTML
page; every label is escaped.
"""
from __future__ import annotations

from typing import Sequence

from markupsafe import Markup, escape

STATUS_COLOURS = {
    "New": "#9bb3d1", "Feedback": "#b48ad0", "Assigned": "#f0b84a", "In Progress": "#3f87d6",
    "Resolved": "#66b866", "Closed": "#2e7d32", "Rejected": "#c9463d", "no task": "#e4e4e4",
}
VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c9463d", "error": "#8b1a1a", "none": "#d0d0d0"}
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out, cx = [], x
    for name, colour in items:
        out.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{cx + 14:.1f}" y="{y:.1f}">{escape(name)}</text>')
        cx += 22 + 6.5 * len(name)
    return out


def stacked_columns(categories: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
                    title: str, width: int = 640, height: int = 260, unit: str = "") -> Markup:
    """Vertical stacked columns: one column per category, one coloured segment per series."""
    n = max(len(categories), 1)
    left, right, top, bottom = 40, 10, 34, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[2][i] for s in series) for i in range(len(categories))]
    vmax = max(totals + [1])
    scale = plot_h / vmax
    step = plot_w / n
    bar_w = step * 0.6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {_FONT}>',
             f'<title>{escape(title)}</title>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{vmax:g}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>']
    for i, cat in enumerate(categories):
        x = left + i * step + (step - bar_w) / 2
        y = top + plot_h
        for name, colour, values in series:
            v = values[i]
            if v <= 0:
                continue
            h = v * scale
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                         f'<title>{escape(cat)}: {escape(name)} {v:g}{escape(unit)}</title></rect>')
        if totals[i]:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{totals[i]:g}</text>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{escape(cat)}</text>')
    parts += _legend([(s[0], s[1]) for s in series if any(s[2])], left, 14)
    parts.append("</svg>")
    return Markup("".join(parts))


def paired_bars(labels: Sequence[str], first: Sequence[float], second: Sequence[float], title: str,
                names: tuple[str, str] = ("estimated", "spent"), colours: tuple[str, str] = ("#9bb3d1", "#3f87d6"),
                unit: str = " h", width: int = 640) -> Markup:
    """Horizontal bars, two per label (e.g. hours estimated vs spent)."""
    row = 34
    left, right, top = 170, 70, 28
    height = top + row * max(len(labels), 1) + 10
    vmax = max(list(first) + list(second) + [1])
    scale = (width - left - right) / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {_FONT}>',
             f'<title>{escape(title)}</title>']
    for i, label in enumerate(labels):
        y = top + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 17}" text-anchor="end">{escape(label)}</text>')
        for j, (values, colour, name) in enumerate(((first, colours[0], names[0]), (second, colours[1], names[1]))):
            v = values[i]
            w = v * scale
            yy = y + 3 + j * 13
            parts.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="12" fill="{colour}">'
                         f'<title>{escape(label)}: {escape(name)} {v:g}{escape(unit)}</title></rect>'
                         f'<text x="{left + w + 4:.1f}" y="{yy + 10}">{v:g}{escape(unit)}</text>')
    parts += _legend(list(zip(names, colours)), left, 14)
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_rows(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], title: str,
                 width: int = 640) -> Markup:
    """Horizontal 100 % stacked bars, one per label (e.g. evidence pass/fail/none per ICD)."""
    row = 24
    left, right, top = 110, 50, 26
    height = top + row * max(len(labels), 1) + 6
    plot_w = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {_FONT}>',
             f'<title>{escape(title)}</title>']
    for i, label in enumerate(labels):
        y = top + i * row
        total = sum(s[2][i] for s in series)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        x = float(left)
        for name, colour, values in series:
            v = values[i]
            if not v or not total:
                continue
            w = plot_w * v / total
            parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="16" fill="{colour}">'
                         f'<title>{escape(label)}: {escape(name)} {v:g}</title></rect>')
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 14}" text-anchor="middle" fill="#fff">{v:g}</text>')
            x += w
        parts.append(f'<text x="{left + plot_w + 4}" y="{y + 13}">{total:g}</text>')
    parts += _legend([(s[0], s[1]) for s in series], left, 12)
    parts.append("</svg>")
    return Markup("".join(parts))
