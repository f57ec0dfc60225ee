"""Jinja2 environment and file output of the publishers."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from ..diagnostics import printable
from ..fileio import atomic_write_text
from ..model import PIPELINE_LEVELS

# the templates are package data of ``icd`` (icd/templates/*.j2): the same files in a checkout, an
# editable install and a wheel, read through importlib.resources (a zip import works too)
TEMPLATES = resources.files("icd") / "templates"
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


class ResourceLoader(jinja2.BaseLoader):
    """Jinja loader of the templates shipped in the ``icd`` package, through importlib.resources
    (public APIs only: ``jinja2.BaseLoader.get_source`` and ``importlib.resources.files``)."""

    def __init__(self, root=TEMPLATES):
        self.root = root

    def get_source(self, environment, template):
        resource = self.root.joinpath(*template.split("/"))
        if not resource.is_file():
            raise jinja2.TemplateNotFound(template)
        return resource.read_text(encoding="utf-8"), str(resource), lambda: True

    def list_templates(self):
        return sorted(r.name for r in self.root.iterdir() if r.name.endswith(".j2"))


@lru_cache(maxsize=4)
def environment(directory: str | None = None) -> jinja2.Environment:
    """The Jinja environment of the publishers: the packaged templates, or those of ``directory``."""
    env = jinja2.Environment(
        loader=ResourceLoader() if directory is None else jinja2.FileSystemLoader(directory),
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
    """Render a packaged template; control characters of registry text (an ESC sequence in a title)
    come out as visible escapes (``\\x1b``), never as bytes a terminal showing the file would obey."""
    return printable(environment().get_template(template).render(**data))
