"""Jinja2 environment and file output of the publishers."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.compiler import CodeGenerator

try:
    from markupsafe._speedups import _escape_inner
except ImportError:  # pragma: no cover - pure-Python markupsafe
    from markupsafe._native import _escape_inner

from ..fileio import atomic_write_text
from ..model import PIPELINE_LEVELS

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_MD_CELL = str.maketrans({"|": "\\|", "\n": " ", "\r": " ", "<": "&lt;", ">": "&gt;"})


def md_cell(value) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return "" if value is None else str(value).translate(_MD_CELL)


def md_text(value) -> str:
    """Free text for a Markdown paragraph: HTML-ish angle brackets neutralised."""
    return "" if value is None else str(value).replace("<", "&lt;").replace(">", "&gt;")


def md_fence(value) -> str:
    """A code fence longer than any run of backticks in ``value`` (a docstring that quotes
    a fenced block must not close the block it is shown in)."""
    longest = run = 0
    for ch in "" if value is None else str(value):
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def fast_escape(value) -> str:
    """HTML-escape an output value to a plain ``str`` (markupsafe's ``escape`` wraps each
    result in a new ``Markup`` object, which was half the time of rendering a document)."""
    kind = type(value)
    if kind is str:
        return _escape_inner(value)
    if kind is int or kind is float:
        return str(value)
    html = getattr(value, "__html__", None)
    if html is not None:
        return html()
    return _escape_inner(str(value))


class _FastEscapeCodeGenerator(CodeGenerator):
    """Same code as Jinja's, but autoescaped output goes through ``fast_escape`` and
    ``a.b`` is a plain Python attribute access (the publishers pass only objects with
    attributes: ``views.View`` dicts, dataclasses, Jinja's loop)."""

    def visit_Getattr(self, node, frame) -> None:
        if self.environment.is_async or not node.attr.isidentifier():  # pragma: no cover
            return super().visit_Getattr(node, frame)
        self.write("(")
        self.visit(node.node, frame)
        self.write(f").{node.attr}")

    def _output_child_pre(self, node, frame, finalize) -> None:
        if frame.eval_ctx.autoescape and not frame.eval_ctx.volatile:
            self.write("environment.fast_escape(")
            if finalize.src is not None:
                self.write(finalize.src)
            return
        super()._output_child_pre(node, frame, finalize)


class _Environment(jinja2.Environment):
    code_generator_class = _FastEscapeCodeGenerator
    fast_escape = staticmethod(fast_escape)


@lru_cache(maxsize=4)
def environment(directory: str = str(TEMPLATES)) -> jinja2.Environment:
    env = _Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "svg.j2"),
                                            default_for_string=True, default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = md_cell
    env.filters["mdtext"] = md_text
    env.filters["fence"] = md_fence
    env.globals["pipeline_legend"] = ", ".join(f"{k} {v}" for k, v in PIPELINE_LEVELS.items())
    return env


def write_text(path: Path, text: str) -> Path:
    """Write a generated document atomically (no fsync: it is cheap to write again)."""
    atomic_write_text(path, text, fsync=False)
    return Path(path)


def render(template: str, **data) -> str:
    return environment().get_template(template).render(**data)
