"""Hand-written inline SVG charts (no JavaScript, no external files).

Each function returns a ``markupsafe.Markup`` string ready to be placed in an HTML
page; every label is escaped.  Every chart carries a visible title (and the same text
as its SVG ``<title>`` for screen readers), a legend naming each colour, and an axis
with ticks for the quantity drawn; each coloured segment has its own ``<title>``
tooltip with its exact value.
"""
from __future__ import annotations

import math
from typing import Sequence

from markupsafe import Markup, escape

STATUS_COLOURS = {
    "New": "#9bb3d1", "Feedback": "#b48ad0", "Assigned": "#f0b84a", "In Progress": "#2f6fb8",
    "Resolved": "#7cc47c", "Closed": "#2e7d32", "Rejected": "#c9463d", "no task": "#e4e4e4",
}
VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c9463d", "error": "#7a1f5c", "none": "#d0d0d0"}
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12" fill="#1d2430"'
_CHAR_W = 6.6  # mean advance of a 12 px sans-serif character, for laying out labels without a font engine
_AXIS = "#7a8494"
_GRID = "#e3e7ee"


def _text_colour(colour: str) -> str:
    """Dark or white text, whichever reads better on ``colour`` (#rrggbb)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#1d2430" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def nice_ticks(vmax: float, most: int = 6) -> list[float]:
    """0, step, 2 step, ... up to at least ``vmax``; step 1, 2 or 5 x 10^k, at most ``most`` intervals."""
    if vmax <= 0:
        return [0.0, 1.0]
    raw = vmax / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if vmax >= 1 and step < 1:
        step = 1.0  # counts: no fractional ticks
    n = math.ceil(vmax / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def _open(width: float, height: float, title: str) -> list[str]:
    t = escape(title)
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{t}" {_FONT}>',
            f'<title>{t}</title>',
            f'<text class="chart-title" x="0" y="15" font-size="14" font-weight="600">{t}</text>']


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float) -> tuple[list[str], float]:
    """Legend entries laid out left to right, wrapping at ``width``; returns the parts and the y below it."""
    out, cx, line = [], x, 0
    for name, colour in items:
        w = 22 + _CHAR_W * len(name)
        if cx > x and cx + w > width:
            cx, line = x, line + 1
        yy = y + 18 * line
        out.append(f'<rect x="{cx:.1f}" y="{yy - 10:.1f}" width="12" height="12" fill="{colour}" stroke="#000" stroke-opacity=".25"/>'
                   f'<text x="{cx + 16:.1f}" y="{yy:.1f}">{escape(name)}</text>')
        cx += w + 10
    return out, y + 18 * line + (8 if items else -10)


def _wrap(label: str, room: float) -> list[str]:
    """At most two lines of a category label that fit ``room`` pixels where possible."""
    if _CHAR_W * len(label) <= room or " " not in label:
        return [label]
    words = label.split(" ")
    best = min(range(1, len(words)), key=lambda k: max(len(" ".join(words[:k])), len(" ".join(words[k:]))))
    return [" ".join(words[:best]), " ".join(words[best:])]


def stacked_columns(categories: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
                    title: str, width: int = 640, height: int = 300, unit: str = "",
                    y_label: str = "", notes: Sequence[str] = (), empty: str = "nothing to show") -> Markup:
    """Vertical stacked columns: one column per category, one coloured segment per series.

    ``notes`` (one per category) is printed under each category label (e.g. "+10 without task");
    when every value is zero the plot shows ``empty`` instead of columns.
    """
    n = max(len(categories), 1)
    shown = [s for s in series if any(v > 0 for v in s[2])]
    parts = _open(width, height, title)
    legend, legend_bottom = _legend([(s[0], s[1]) for s in shown], 0, 36, width)
    parts += legend
    left, right, top = 46, 10, legend_bottom + 18
    bottom = 34 + (14 if notes else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[2][i] for s in series) for i in range(len(categories))]
    ticks = nice_ticks(max(totals + [0]))
    scale = plot_h / ticks[-1]
    base = top + plot_h
    for t in ticks:
        y = base - t * scale
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     f'stroke="{_AXIS if t == 0 else _GRID}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_AXIS}"/>')
    if y_label:
        parts.append(f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
                     f'fill="#5b6576">{escape(y_label)}</text>')
    step = plot_w / n
    bar_w = min(step * 0.6, 90)
    for i, cat in enumerate(categories):
        cx = left + i * step + step / 2
        x = cx - bar_w / 2
        y = base
        for name, colour, values in series:
            v = values[i]
            if v <= 0:
                continue
            h = v * scale
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                         f'<title>{escape(cat)}: {escape(name)} {_fmt(v)}{escape(unit)}</title></rect>')
            if h >= 15 and len(shown) > 1:
                parts.append(f'<text x="{cx:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" '
                             f'fill="{_text_colour(colour)}">{_fmt(v)}</text>')
        if totals[i]:
            parts.append(f'<text x="{cx:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-weight="600">{_fmt(totals[i])}</text>')
        lines = _wrap(cat, step - 4)
        for k, line in enumerate(lines):
            parts.append(f'<text x="{cx:.1f}" y="{base + 16 + 13 * k}" text-anchor="middle">{escape(line)}</text>')
        if i < len(notes) and notes[i]:
            parts.append(f'<text x="{cx:.1f}" y="{base + 16 + 13 * len(lines)}" text-anchor="middle" font-size="11" '
                         f'fill="#5b6576">{escape(notes[i])}</text>')
    if not any(totals):
        parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                     f'fill="#5b6576">{escape(empty)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def paired_bars(labels: Sequence[str], first: Sequence[float], second: Sequence[float], title: str,
                names: tuple[str, str] = ("estimated", "spent"), colours: tuple[str, str] = ("#9bb3d1", "#2f6fb8"),
                unit: str = " h", width: int = 640, empty: str = "none recorded") -> Markup:
    """Horizontal bars, two per label (e.g. hours estimated vs spent), with a value axis below;
    a label whose two values are zero shows ``empty`` instead of two empty bars."""
    row = 36
    label_w = max([len(str(label)) for label in labels] + [6]) * _CHAR_W + 12
    left, right = min(max(label_w, 80), 220), 70
    legend, top = _legend(list(zip(names, colours)), left, 36, width)
    top += 8
    plot_w = width - left - right
    ticks = nice_ticks(max(list(first) + list(second) + [0]))
    scale = plot_w / ticks[-1]
    base = top + row * max(len(labels), 1)
    parts = _open(width, base + 34, title) + legend
    for t in ticks:
        x = left + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{base}" stroke="{_AXIS if t == 0 else _GRID}"/>'
                     f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="{_AXIS}"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{base + 30}" text-anchor="middle" fill="#5b6576">'
                 f'{escape(unit.strip() or "value")}</text>')
    for i, label in enumerate(labels):
        y = top + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 19}" text-anchor="end">{escape(label)}</text>')
        if not first[i] and not second[i]:
            parts.append(f'<text x="{left + 6}" y="{y + 19}" fill="#5b6576" font-style="italic">{escape(empty)}</text>')
            continue
        for j, (values, colour, name) in enumerate(((first, colours[0], names[0]), (second, colours[1], names[1]))):
            v = values[i]
            w = v * scale
            yy = y + 4 + j * 14
            parts.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="13" fill="{colour}">'
                         f'<title>{escape(label)}: {escape(name)} {_fmt(v)}{escape(unit)}</title></rect>'
                         f'<text x="{left + w + 4:.1f}" y="{yy + 11}" font-size="11">{_fmt(v)}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_rows(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], title: str,
                 width: int = 640, empty: str = "no interfaces") -> Markup:
    """Horizontal 100 % stacked bars, one per label (e.g. evidence pass/fail/none per ICD); count at the right."""
    row = 26
    label_w = max([len(str(label)) for label in labels] + [6]) * _CHAR_W + 12
    left, right = min(max(label_w, 80), 220), 80
    plot_w = width - left - right
    legend, top = _legend([(s[0], s[1]) for s in series], left, 36, width)
    top += 6
    parts = _open(width, top + row * max(len(labels), 1) + 22, title) + legend
    for frac in (0, 0.25, 0.5, 0.75, 1):
        x = left + frac * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{top + row * len(labels)}" stroke="{_GRID}"/>'
                     f'<text x="{x:.1f}" y="{top + row * len(labels) + 14}" text-anchor="middle" font-size="11" '
                     f'fill="#5b6576">{frac * 100:g} %</text>')
    for i, label in enumerate(labels):
        y = top + i * row
        total = sum(s[2][i] for s in series)
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        x = float(left)
        for name, colour, values in series:
            v = values[i]
            if not v or not total:
                continue
            w = plot_w * v / total
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="18" fill="{colour}">'
                         f'<title>{escape(label)}: {escape(name)} {_fmt(v)}</title></rect>')
            if w > 8 * len(_fmt(v)) + 4:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 16}" text-anchor="middle" '
                             f'fill="{_text_colour(colour)}">{_fmt(v)}</text>')
            x += w
        if total:
            parts.append(f'<text x="{left + plot_w + 6}" y="{y + 16}">{_fmt(total)}</text>')
        else:
            parts.append(f'<text x="{left + 4}" y="{y + 16}" fill="#5b6576" font-style="italic">{escape(empty)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
