"""Read a YAML file into plain Python data plus the source position of every node.

Uses libyaml (PyYAML's C parser) to compose the node tree, then converts it by hand so
that (a) every value keeps its file:line:column, (b) duplicate keys are reported
instead of silently overwritten, and (c) dates stay strings for the model to parse
with a readable error.  Reading never writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # the C parser is ~10x faster; fall back to pure Python if libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader

from .diagnostics import Diagnostic, duplicate_key

Loc = tuple  # a path into the data: ("interfaces", 3, "tasks", 0, "due")

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_BOOL_VALUES = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


@dataclass
class Positions:
    """Where each value (and each mapping key) of the data stands in the file."""

    file: str
    values: dict[Loc, tuple[int, int]]
    keys: dict[Loc, tuple[int, int]]

    def of(self, loc: Loc, key: bool = False) -> tuple[int, int]:
        """Best position for ``loc``: the exact node, else its nearest known parent."""
        table = self.keys if key else self.values
        loc = tuple(loc)
        while loc:
            if loc in table:
                return table[loc]
            if loc in self.values:
                return self.values[loc]
            loc = loc[:-1]
        return self.values.get((), (1, 1))


class YamlError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics


def load_yaml(path: str | Path, text: str | None = None) -> tuple[Any, Positions, list[Diagnostic]]:
    """Parse ``path`` and return (data, positions, diagnostics).

    Syntax errors raise ``YamlError`` (parsing cannot go on past one); duplicate keys
    and unsupported YAML features are returned as diagnostics and parsing continues.
    """
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise YamlError([Diagnostic(path, 1, 1, "file not found", "io")]) from None
        except UnicodeDecodeError as exc:
            raise YamlError([Diagnostic(path, 1, 1, f"the file is not UTF-8 text ({exc.reason})", "io")]) from None
        except OSError as exc:  # a folder, no permission ...
            raise YamlError([Diagnostic(path, 1, 1, f"cannot read the file ({exc.strerror or exc})", "io")]) from None
    from . import fastyaml  # fast path for plain block YAML; libyaml stays the authority otherwise

    try:
        return fastyaml.parse_lazy(text, path)  # positions are computed when a diagnostic needs them
    except fastyaml.Unsupported:
        pass
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise YamlError([syntax_error(path, text, exc)]) from None
    except yaml.YAMLError as exc:
        raise YamlError([Diagnostic(path, 1, 1, f"YAML error: {exc}", "yaml-syntax")]) from None
    values: dict[Loc, tuple[int, int]] = {}
    keys: dict[Loc, tuple[int, int]] = {}
    diags: list[Diagnostic] = []
    if node is None:
        return None, Positions(path, {(): (1, 1)}, {}), diags
    data = _convert(node, (), values, keys, diags, path)
    return data, Positions(path, values, keys), diags


def syntax_error(path: str, text: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    """libyaml's syntax error as a sentence, placed where the mistake most likely is.

    libyaml stops where the text stops making sense, often lines after the mistake (an
    unclosed quote or bracket swallows what follows): point at the quote, bracket or key
    that started it and keep libyaml's own words in brackets.
    """
    pm, cm = exc.problem_mark, exc.context_mark
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    # libyaml words a few errors as context + problem ("expected a single document ..., but found another")
    said = f"{problem} {context}".strip() if not context or context.startswith("while") else f"{context}, {problem}"
    mark = pm or cm
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    fails_at = f"line {line}, column {col}"
    hint = ""
    quote, after_quote = _quotes_near(text, mark) if mark is not None else (None, False)
    lines = text.split("\n")
    at = lines[mark.line][mark.column:mark.column + 1] if mark is not None and mark.line < len(lines) else ""
    if "tab character" in problem or at == "\t":
        hint = "a tab character: indent with spaces only"
    elif context == "while scanning a quoted scalar" and cm is not None:
        line, col = cm.line + 1, cm.column + 1
        hint = f"the quote opened here is never closed (the file ends at {fails_at})"
    elif quote is not None:
        line, col = quote
        hint = ("this quoted value runs over several lines: is its closing quote missing? "
                f"(YAML fails at {fails_at})")
    elif after_quote:
        hint = ("text after the closing quote of a value: to put a quote inside a quoted value, double it "
                "('it''s') or use the other kind of quotes (\"it's\")")
    elif context.startswith("while parsing a flow ") and cm is not None:
        opening, closing = ("{", "}") if "mapping" in context else ("[", "]")
        moved = (cm.line + 1, cm.column + 1) != (line, col)
        line, col = cm.line + 1, cm.column + 1
        hint = (f"the '{opening}' here is not closed by '{closing}', or a ',' is missing between its items"
                + (f" (YAML fails at {fails_at})" if moved else ""))
    elif problem == "could not find expected ':'" and cm is not None:
        line, col = cm.line + 1, cm.column + 1
        hint = "this line has no ':' after its key (write 'key: value')"
    elif problem == "mapping values are not allowed in this context":
        hint = ("a ':' where YAML does not expect one: check that this line is indented like the lines "
                "above it, or put a value that contains ': ' in quotes")
    elif "found another document" in problem:
        hint = "a second YAML document ('---'): the registry is one document; remove the '---' line"
    elif problem.startswith(("did not find expected key", "did not find expected '-'")):
        hint = "this line is not aligned with the lines above it: check its indentation"
    elif problem == "found undefined alias":
        hint = "'*' starts a YAML alias: put a value that starts with '*' in quotes"
    elif problem == "found character that cannot start any token" and at.strip():
        hint = f"'{at}' cannot start a value: put the value in quotes"
    msg = f"YAML syntax error: {hint} [YAML: {said}]" if hint else f"YAML syntax error: {said}"
    return Diagnostic(path, line, col, msg, "yaml-syntax")


def _quotes_near(text: str, mark) -> tuple[tuple[int, int] | None, bool]:
    """What quoted values say about an error at ``mark``: the (line, column) of one that spans
    several lines and ends near the error (the usual sign of a missing closing quote), or
    None; and whether a one-line quoted value ends on the error's line just before it (a
    quote inside quotes)."""
    multi = last = None
    try:
        for token in yaml.scan(text, Loader=_Loader):
            if (token.start_mark.line, token.start_mark.column) >= (mark.line, mark.column):
                break  # the scanner reads on past the parser's error; what follows is not evidence
            if isinstance(token, yaml.ScalarToken) and token.style in ("'", '"'):
                last = token
                if token.end_mark.line > token.start_mark.line:
                    multi = token
    except yaml.YAMLError:
        pass
    where = None
    if multi is not None and multi.end_mark.line >= mark.line - 1:
        where = (multi.start_mark.line + 1, multi.start_mark.column + 1)
    after = (last is not None and last is not multi and last.end_mark.line == mark.line
             and last.end_mark.column <= mark.column)
    return where, after


def _convert(node, loc, values, keys, diags, path):
    values[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, loc + (i,), values, keys, diags, path) for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                diags.append(Diagnostic(path, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                        "a mapping key must be a plain value", "yaml-structure"))
                continue
            key = _scalar(knode)
            if knode.tag == "tag:yaml.org,2002:merge":
                diags.append(Diagnostic(path, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                        "YAML merge keys (<<) are not supported in the registry", "yaml-structure"))
                continue
            kpos = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            if key in out:
                first = keys[loc + (key,)]
                diags.append(duplicate_key(path, kpos[0], kpos[1], key, first[0]))
                continue
            keys[loc + (key,)] = kpos
            out[key] = _convert(vnode, loc + (key,), values, keys, diags, path)
        return out
    return None  # pragma: no cover


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if node.style:  # quoted or block scalar: always a string
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return _BOOL_VALUES.get(value.lower(), value)
    if tag == _INT:
        digits = value.replace("_", "")
        for base in (10, 0):
            try:
                return int(digits, base)
            except ValueError:
                pass
        return value
    if tag == _FLOAT:
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value  # str, timestamp (parsed by the model), anything else
