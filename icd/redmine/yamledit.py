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

A person may save the file while a sync runs.  Every ``set`` is therefore also kept as an
operation in the coordinates of the first read; before each write the file is read again, and
if it is not what this document last wrote, the operations are replayed on the new text
(``relocator`` maps a location of the first read to where that item is now, e.g. a task found
by its interface code and id) instead of overwriting the hand edit.  A field the person changed
keeps the person's value unless ``owned`` says the sync owns it (ids, bookkeeping).
"""
from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any, Callable, Optional

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
    return _string_text(str(value))


@functools.lru_cache(maxsize=65536)
def _string_text(value: str) -> str:
    """A string as a YAML scalar that reads back as the same string wherever the sync puts it:
    a block value (``key: text``), a block item (``- text``) and inside flow collections
    (``{subject: text}``, ``[text]``), where ``,[]{}`` end a plain scalar.

    PyYAML's emitter chooses the style for a flow context (it quotes flow indicators, ``: ``,
    `` #``, leading indicators, surrounding spaces, and words its resolver would type, such as
    ``yes``, ``null``, ``0o7``); the choice is then checked by parsing it back in those three
    contexts, and anything that does not come back identical is written double-quoted, with
    escapes, on one line."""
    # a line break (or a character YAML may read as one) would spread the value over lines at
    # the wrong indentation: write such a value double-quoted, with escapes, on one line
    if any(c in value for c in "\n\r\x85\u2028\u2029") or not value.isprintable():
        return _double_quoted(value)
    text = yaml.safe_dump([value], default_flow_style=True, width=10**9, allow_unicode=True).rstrip("\n")
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else _double_quoted(value)
    if _reads_back(text, value):
        return text
    return _double_quoted(value)


def _double_quoted(value: str) -> str:
    text = yaml.safe_dump(value, default_style='"', width=10**9, allow_unicode=True).rstrip("\n")
    if text.endswith("\n..."):
        text = text[:-4].rstrip("\n")
    return text


def _reads_back(text: str, value: str) -> bool:
    probe = f"a: {text}\nb: [{text}]\nc: {{k: {text}}}\nd:\n- {text}\n"
    try:
        return yaml.load(probe, Loader=_Loader) == {"a": value, "b": [value], "c": {"k": value}, "d": [value]}
    except yaml.YAMLError:
        return False


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
        # merge support: the operations in the coordinates of the first read, and what is on disk
        self.first_text = text
        self.ops: dict[tuple, tuple[Any, bool, bool]] = {}
        self.written = text                 # the text this document expects on disk (LF form)
        self.relocator: Optional[Callable[["YamlDoc"], Callable[[tuple], Optional[tuple]]]] = None
        self.owned: Callable[[tuple], bool] = lambda loc: True
        self._locate: Callable[[tuple], Optional[tuple]] = lambda loc: loc
        self.merged = 0                     # how many times a hand edit was merged
        self.appended = False
        self.dropped: list[tuple] = []      # operations whose place a hand edit removed
        self.kept: list[tuple] = []         # fields a hand edit changed (the person's value kept)

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
        here = self._locate(tuple(loc))
        return here is not None and self.node(here) is not None

    # -- edits ---------------------------------------------------------------------------
    def set(self, loc: tuple, value: Any, *, first: bool = False, flow: bool = False) -> None:
        """Set ``loc`` to ``value``: replace the existing value, or add the key to its mapping.

        ``flow``: write a new mapping or list on one line (``{a: 1, b: [x]}``)."""
        loc = tuple(loc)
        self.ops.pop(loc, None)
        self.ops[loc] = (value, first, flow)
        here = self._locate(loc)
        if here is not None:
            self._set(here, value, first=first, flow=flow)

    def _set(self, loc: tuple, value: Any, *, first: bool = False, flow: bool = False) -> None:
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
        """Append a mapping to a block sequence (or create the key with a one-item list).

        Appends are not replayed by ``rebase``: a document with appends refuses to merge."""
        self.appended = True
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

    def delete_item(self, seq_loc: tuple, index: int) -> None:
        """Remove item ``index`` of a block sequence, with its lines (comments on them too).

        Not replayed by ``rebase`` (like ``append_item``)."""
        self.appended = True
        seq = self.node(tuple(seq_loc))
        if not isinstance(seq, yaml.SequenceNode) or index >= len(seq.value):
            raise KeyError(f"no item {index} at {seq_loc}")
        if seq.flow_style:
            raise KeyError(f"the list at {seq_loc} is written in flow style ([...]): edit it by hand")
        if len(seq.value) == 1:
            self._replace(seq, [])
            return
        item = seq.value[index]
        first = _start(item)[0]
        if index + 1 < len(seq.value):
            last = _start(seq.value[index + 1])[0]   # up to the next item's dash line
        else:
            last = self._end(item)[0] + 1
        self.edits[(first, 0)] = (last, 0, "")

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
        """Write the edited text; if the file changed since this document last read or wrote it
        (a hand edit saved meanwhile), first replay the edits on the file's new text."""
        target = Path(path or self.path)
        if self.path is not None and target == Path(self.path) and target.exists():
            with open(target, encoding="utf-8", newline="") as fh:
                disk = fh.read().replace("\r\n", "\n")
            if disk != self.written:
                if self.appended:
                    raise ValueError(f"{target} changed while it was being edited; nothing was written: run again")
                self.rebase(disk)
        text = self.render()
        out = text.replace("\n", self.newline) if self.newline != "\n" else text
        atomic_write_text(target, out)
        self.written = text

    def rebase(self, text: str) -> None:
        """Take ``text`` (the file as a person saved it) as the new base and replay every operation."""
        new = YamlDoc(text.replace("\r\n", "\n"), self.path)
        new.newline = "\r\n" if "\r\n" in text else self.newline
        locate = self.relocator(new) if self.relocator else (lambda loc: loc)
        first = YamlDoc(self.first_text)
        dropped, kept = [], []
        for loc, (value, first_flag, flow) in self.ops.items():
            here = locate(loc)
            if here is None or (len(here) > 1 and new.node(here[:-1]) is None):
                dropped.append(loc)
                continue
            if not self.owned(loc):
                before, now = _value_at(first, loc), _value_at(new, here)
                if now != before and now != value:
                    kept.append(loc)
                    continue
            new._set(here, value, first=first_flag, flow=flow)
        for name in ("newline", "original", "lines", "_root", "edits", "inserts", "tail", "_index", "_new_lists"):
            setattr(self, name, getattr(new, name))
        self._locate = locate
        self.written = text.replace("\r\n", "\n")
        self.merged += 1
        self.dropped, self.kept = dropped, kept


_ABSENT = object()


def _value_at(doc: "YamlDoc", loc: tuple) -> Any:
    node = doc.node(loc)
    if node is None:
        return _ABSENT
    return yaml.constructor.SafeConstructor().construct_document(node)


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
