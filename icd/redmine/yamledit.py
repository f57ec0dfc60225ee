"""Surgical, comment-preserving edits of the registry file.

Why not ruamel.yaml round-trip: it re-emits the whole file, so untouched parts can change
(folded ``>-`` descriptions re-wrapped, flow mappings ``{person: x, wp: y}`` re-spaced, sequence
indentation normalised), and a dump of a 5,000-task registry after every created task would
take minutes.  Here the file is parsed once (libyaml, which gives the start and end mark of every
node), and each edit replaces only the characters of the value it changes, or inserts a key
line; every other byte — comments, blank lines, order, quoting, flow or block style — stays as
written.  Edits are kept in the coordinates of the original parse, so any number of edits costs
one parse, and ``write`` renders and replaces the file atomically (temporary file + fsync +
rename), which makes it safe to call after every task Redmine creates.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Optional

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader

from ..fileio import atomic_write_text


def scalar_text(value: Any) -> str:
    """One value as YAML text on one line (flow style for mappings and lists)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo is None or value.utcoffset() == dt.timedelta(0) \
            else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar_text(str(k))}: {scalar_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(scalar_text(v) for v in value) + "]"
    value = str(value)
    # a line break (or a character YAML may read as one) would spread the value over lines at
    # the wrong indentation: write such a value double-quoted, with escapes, on one line
    style = '"' if any(c in value for c in "\n\r\x85\u2028\u2029") or not value.isprintable() else None
    text = yaml.safe_dump(value, default_flow_style=True, default_style=style, width=10**9, allow_unicode=True)
    if text.endswith("\n...\n"):
        text = text[:-5]
    return text.rstrip("\n")


def block_text(value: Any, indent: int) -> str:
    """A mapping or list as block YAML whose first line starts at column ``indent`` (not indented itself)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{scalar_text(str(k))}:\n{pad}  " + block_text(v, indent + 2))
            elif isinstance(v, list) and v and any(isinstance(x, dict) for x in v):
                lines.append(f"{scalar_text(str(k))}:\n{pad}  " + block_text(v, indent + 2))
            else:
                lines.append(f"{scalar_text(str(k))}: {scalar_text(v)}")
    elif isinstance(value, list):
        for v in value:
            lines.append(f"- {scalar_text(v)}")
    else:
        return scalar_text(value)
    return f"\n{pad}".join(lines)


class YamlDoc:
    """A YAML file with pending edits; ``loc`` is a path of keys and indices, like the loader's."""

    def __init__(self, text: str, path: Optional[Path] = None):
        self.path = path
        # CRLF files are edited as LF and written back with CRLF: every untouched line keeps its bytes
        self.newline = "\r\n" if "\r\n" in text else "\n"
        if self.newline != "\n":
            text = text.replace("\r\n", "\n")
        self.original = text
        self.lines = text.splitlines(keepends=True)
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"
        self._root: Any = None   # parsed on the first edit: a sync that changes nothing never parses twice
        # (line, col) of the original text -> (end_line, end_col, new text)
        self.edits: dict[tuple[int, int], tuple[int, int, str]] = {}
        self.inserts: dict[tuple[int, int], dict[Any, str]] = {}
        self.tail: dict[Any, str] = {}   # top-level keys appended at the end of the file
        self._index: dict[tuple, Any] = {}
        self._new_lists: dict[tuple, list] = {}

    @property
    def root(self) -> yaml.Node:
        if self._root is None:
            self._root = yaml.compose(self.original, Loader=_Loader)
        return self._root

    @classmethod
    def read(cls, path: Path) -> "YamlDoc":
        """The file as it is on disk (``newline=""``: CRLF line endings are kept, not translated)."""
        with open(path, encoding="utf-8", newline="") as fh:
            return cls(fh.read(), Path(path))

    # -- navigation ----------------------------------------------------------------------
    def node(self, loc: tuple) -> Optional[yaml.Node]:
        loc = tuple(loc)
        if loc in self._index:
            return self._index[loc]
        if not loc:
            return self.root
        parent = self.node(loc[:-1])
        found = None
        if isinstance(parent, yaml.MappingNode):
            if len(loc) >= 2 and loc[:-1] not in self._index:
                self._index[loc[:-1]] = parent
            for knode, vnode in parent.value:
                self._index[loc[:-1] + (_key(knode),)] = vnode
            found = self._index.get(loc)
        elif isinstance(parent, yaml.SequenceNode) and isinstance(loc[-1], int) and loc[-1] < len(parent.value):
            found = parent.value[loc[-1]]
        self._index[loc] = found
        return found

    def key_node(self, loc: tuple) -> Optional[yaml.Node]:
        parent = self.node(loc[:-1])
        if isinstance(parent, yaml.MappingNode):
            for knode, _ in parent.value:
                if _key(knode) == loc[-1]:
                    return knode
        return None

    def has(self, loc: tuple) -> bool:
        return self.node(loc) is not None

    # -- edits ---------------------------------------------------------------------------
    def set(self, loc: tuple, value: Any, *, first: bool = False, flow: bool = False) -> None:
        """Set ``loc`` to ``value``: replace the existing value, or add the key to its mapping.

        ``flow``: write a new mapping or list on one line (``{a: 1, b: [x]}``)."""
        node = self.node(loc)
        if node is not None:
            self._replace(node, value, flow)
        else:
            self._insert_key(loc[:-1], loc[-1], value, first=first, flow=flow)

    def _replace(self, node: yaml.Node, value: Any, flow: bool = False) -> None:
        (l0, c0), (l1, c1) = _start(node), self._end(node)
        block = isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style
        if block and isinstance(value, (dict, list)) and value and not flow:
            text = block_text(value, c0)
        elif block:
            # an empty or scalar value replacing a block collection: put it after the key
            text = scalar_text(value)
        else:
            text = scalar_text(value)
        if (l0, c0) == (l1, c1) and c0 > 0 and self.lines[l0][c0 - 1] not in " \t":
            text = " " + text  # an empty value ("assignee:") stands right after the colon: keep 'key: value'
        self.edits[(l0, c0)] = (l1, c1, text)

    def _insert_key(self, mloc: tuple, key: str, value: Any, *, first: bool, flow: bool = False) -> None:
        mapping = self.node(mloc)
        if mapping is None:
            if not mloc:  # empty document
                self.tail[key] = f"{key}: {scalar_text(value)}\n"
                return
            raise KeyError(f"cannot add '{key}': {mloc} is not in the file")
        if not isinstance(mapping, yaml.MappingNode):
            raise KeyError(f"cannot add '{key}': {mloc} is not a mapping")
        if not mapping.value:
            raise KeyError(f"cannot add '{key}' to the empty mapping at {mloc}")
        if mapping.flow_style:
            kline, kcol = _start(mapping.value[0][0])
            if first:
                self._add_at(kline, kcol, f"{scalar_text(key)}: {scalar_text(value)}, ", key)
            else:
                l1, c1 = self._end(mapping.value[-1][1])
                self._add_at(l1, c1, f", {scalar_text(key)}: {scalar_text(value)}", key)
            return
        kline, kcol = _start(mapping.value[0][0])
        entry = f"{scalar_text(key)}: {scalar_text(value)}" if flow else self._entry(key, value, kcol)
        if first:
            self._add_at(kline, kcol, entry + "\n" + " " * kcol, key)
        elif not mloc:
            self.tail[key] = entry + "\n"
        else:
            last_line = self._end(mapping.value[-1][1])[0]
            # after the end of the last value's line (keeps a trailing comment on that line)
            self._add_at(last_line, len(self.lines[last_line].rstrip("\n")), "\n" + " " * kcol + entry, key)

    @staticmethod
    def _entry(key: str, value: Any, col: int) -> str:
        if isinstance(value, dict) and value and not _flat(value):
            return f"{scalar_text(key)}:\n{' ' * (col + 2)}" + block_text(value, col + 2)
        if isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
            return f"{scalar_text(key)}:\n{' ' * (col + 2)}" + block_text(value, col + 2)
        return f"{scalar_text(key)}: {scalar_text(value)}"

    def _add_at(self, line: int, col: int, text: str, token: Any = None) -> None:
        """Insert ``text`` at (line, col) of the original text; a later insert with the same
        ``token`` (e.g. the same key) replaces the earlier one instead of adding a second copy."""
        point = self.inserts.setdefault((line, col), {})
        point[token if token is not None else object()] = text

    def append_item(self, seq_loc: tuple, item: dict) -> None:
        """Append a mapping to a block sequence (or create the key with a one-item list)."""
        seq = self.node(seq_loc)
        if isinstance(seq, yaml.SequenceNode) and seq.flow_style and seq.value:
            # a list written in flow style ([{...}, {...}]): add the item after the last one, keep the others
            self._add_at(*self._end(seq.value[-1]), ", " + scalar_text(item))
            return
        if seq is None or not isinstance(seq, yaml.SequenceNode) or not seq.value or seq.flow_style:
            items = self._new_lists.setdefault(tuple(seq_loc), [])
            items.append(item)
            mapping = self.node(seq_loc[:-1])
            if seq is not None or not isinstance(mapping, yaml.MappingNode) or mapping.flow_style or not mapping.value:
                self.set(seq_loc, items)
                return
            col = _start(mapping.value[0][0])[1]
            pad = " " * (col + 2)
            entry = f"{scalar_text(seq_loc[-1])}:" + "".join(
                f"\n{pad}- " + block_text(x, col + 4) for x in items)
            last_line = self._end(mapping.value[-1][1])[0]
            self._add_at(last_line, len(self.lines[last_line].rstrip("\n")), "\n" + " " * col + entry, seq_loc[-1])
            return
        first_line, dash_col = _start(seq.value[0])
        dash_col = self.lines[first_line].rfind("-", 0, dash_col + 1)
        last_line = self._end(seq.value[-1])[0]
        text = "\n" + " " * dash_col + "- " + block_text(item, dash_col + 2)
        self._add_at(last_line, len(self.lines[last_line].rstrip("\n")), text)  # each append is a new item

    # -- rendering -----------------------------------------------------------------------
    def _end(self, node: yaml.Node) -> tuple[int, int]:
        """End of a node's own text (block scalars and block collections end before trailing blank lines)."""
        if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
            return self._end(node.value[-1][1])
        if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
            return self._end(node.value[-1])
        line, col = node.end_mark.line, node.end_mark.column
        if col == 0 and line > 0:
            line -= 1
            while line > 0 and not self.lines[line].strip():
                line -= 1
            col = len(self.lines[line].rstrip("\n"))
        return line, col

    def render(self) -> str:
        if not self.edits and not self.inserts and not self.tail:
            return "".join(self.lines)
        events: dict[int, list[tuple[int, int, int, int, str]]] = {}
        for (l0, c0), (l1, c1, text) in self.edits.items():
            events.setdefault(l0, []).append((c0, 1, l1, c1, text))
        for (line, col), texts in self.inserts.items():
            events.setdefault(line, []).append((col, 0, line, col, "".join(texts.values())))
        for items in events.values():
            items.sort(key=lambda ev: (ev[0], ev[1]))
        out: list[str] = []
        i, pos, n = 0, 0, len(self.lines)
        while i < n:
            line = self.lines[i]
            items = events.get(i)
            if not items:
                out.append(line[pos:])
                i, pos = i + 1, 0
                continue
            jumped = False
            for c0, kind, l1, c1, text in items:
                if c0 < pos:
                    continue  # inside an earlier replacement
                out.append(line[pos:c0])
                out.append(text)
                pos = c1 if kind else c0
                if kind and l1 != i:
                    i, pos, jumped = l1, c1, True
                    break
            if not jumped:
                out.append(line[pos:])
                i, pos = i + 1, 0
        out.extend(self.tail.values())
        return "".join(out)

    def write(self, path: Optional[Path] = None) -> None:
        text = self.render()
        if self.newline != "\n":
            text = text.replace("\n", self.newline)
        atomic_write_text(path or self.path, text)


def _flat(value: dict) -> bool:
    return all(not isinstance(v, (dict, list)) or not v for v in value.values())


def _key(knode: yaml.Node) -> Any:
    value = knode.value
    if knode.tag == "tag:yaml.org,2002:int" and not knode.style:
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _start(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line, node.start_mark.column
