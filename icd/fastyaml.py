"""A fast reader for the plain block-YAML that registries are written in, with positions.

PyYAML composes about 200,000 nodes per second here (a Python object and two marks per
node), which made reading a 5,000-interface registry take seconds.  This module reads
the common subset in one pass over the lines and gives exactly what
``icd.loader.load_yaml`` gives (data, the file:line:column of every value and key,
duplicate-key diagnostics), with the same scalar typing (PyYAML's YAML 1.1 resolver):

* block mappings and block sequences (also a sequence at the indentation of its key);
* plain scalars on one line (``key: value  # comment``), single- and double-quoted
  scalars on one line (double-quoted without backslash escapes);
* one-line flow sequences and mappings of scalars (``[B, C]``, ``{person: x, wp: DATA}``);
* block scalars ``>``, ``>-``, ``|``, ``|-``.

Anything else (anchors, aliases, tags, multi-line plain or quoted scalars, nested flow
collections, tabs, several documents, any syntax error ...) raises ``Unsupported`` and
the caller falls back to libyaml, which stays the authority: the fast reader never
reports a syntax error itself, and a test checks it agrees with libyaml node for node.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .diagnostics import Diagnostic, duplicate_key

_RESOLVERS = yaml.resolver.Resolver.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])
_PLAIN_START_BAD = frozenset("&*!%@`|>'\"{}[],#")
_MERGE = "tag:yaml.org,2002:merge"
_SIMPLE_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*):(?: +|$)")
_FLOW_SIMPLE = re.compile(r"[^'\"#\[\]{}]*")
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*): +([A-Za-z0-9_.~][^:#'\"\[\]{}]*)")
# what libyaml rejects (non-printable characters) or reads as a line break (NEL, LS, PS), and BOMs
_NOT_PLAIN_TEXT = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
_SIMPLE_VALUE = re.compile(r"[A-Za-z0-9_.~][^:#'\"\[\]{}]*")


_ASCII_CONTROL = bytes(range(0, 10)) + bytes(range(11, 32)) + b"\x7f"


def _unusual_characters(text: str) -> bool:
    """Characters libyaml rejects or reads as line breaks (see _NOT_PLAIN_TEXT); fast for ASCII."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw.translate(None, _ASCII_CONTROL)) != len(raw)
    return _NOT_PLAIN_TEXT.search(text) is not None


def _flow_plain_bad(s: str) -> bool:
    """True unless ``s`` is surely one plain scalar inside a flow collection.

    In flow context libyaml reads '?' always as a key indicator and ':' as a value
    indicator far more often than in block context, '- ' is an error and ' #' starts a
    comment that hides the closing bracket: leave all of those to libyaml.
    """
    return (not s or s[0] in _PLAIN_START_BAD or s[0] == "?" or (s[0] == "-" and s[1:2] in ("", " "))
            or ":" in s or " #" in s)


class Unsupported(Exception):
    """The text uses YAML beyond the fast subset (or is invalid): use libyaml."""


class _NeedPositions(Exception):
    """A duplicate key was met while reading without positions: read again with them."""


class _Node:  # what icd.loader._scalar reads
    __slots__ = ("tag", "value", "style")

    def __init__(self, tag: str, value: str):
        self.tag, self.value, self.style = tag, value, ""


def _make_plain():
    from .loader import _scalar

    cache: dict[str, Any] = {}

    def plain(value: str) -> Any:
        try:
            return cache[value]
        except KeyError:
            pass
        tag = "tag:yaml.org,2002:str"
        for t, regexp in _RESOLVERS.get(value[0] if value else "", []) + _WILDCARD:
            if regexp.match(value):
                tag = t
                break
        if tag == _MERGE:
            raise Unsupported("merge key")
        result = _scalar(_Node(tag, value))
        if len(cache) < 100_000:
            cache[value] = result
        return result

    plain.cache = cache  # type: ignore[attr-defined]
    return plain


def parse(text: str, path: str, record: bool = True) -> tuple[Any, dict, dict, list[Diagnostic]]:
    """(data, value positions, key positions, diagnostics) or ``Unsupported``.

    With ``record=False`` the positions of the common one-line values are not kept (the
    dictionaries are partial): use it through ``LazyPositions``, which reads them again
    when a diagnostic needs them.
    """
    if "\t" in text or "\r" in text or text.startswith("\ufeff") or _unusual_characters(text):
        raise Unsupported("tabs, carriage returns, BOM, control characters or other line breaks")
    if not record:
        try:
            return _Reader(text, path, record=False).run()
        except _NeedPositions:
            pass
    return _Reader(text, path).run()


def parse_lazy(text: str, path: str):
    """(data, positions, diagnostics); the positions are computed only if something asks for them."""
    from .loader import Positions

    data, values, keys, diags = parse(text, path, record=False)
    if diags:  # positions of duplicates are known; keep it simple and exact
        data, values, keys, diags = parse(text, path)
        return data, Positions(path, values, keys), diags
    return data, LazyPositions(path, text), diags


def _lazy_positions_class():
    from .loader import Positions

    class LazyPositions(Positions):
        """``Positions`` whose tables are built on first use (most registries are valid)."""

        def __init__(self, file: str, text: str):  # noqa: D107 - no dataclass __init__ on purpose
            self.file = file
            self._text = text
            self._tables = None

        def _load(self):
            if self._tables is None:
                _, values, keys, _ = parse(self._text, self.file)
                self._tables = (values, keys)
                self._text = None
            return self._tables

        @property
        def values(self):
            return self._load()[0]

        @property
        def keys(self):
            return self._load()[1]

    return LazyPositions


class _Reader:
    def __init__(self, text: str, path: str, record: bool = True):
        self.record = record
        self.raw = text.split("\n")
        self.path = path
        self.values: dict[tuple, tuple[int, int]] = {}
        self.keys: dict[tuple, tuple[int, int]] = {}
        self.diags: list[Diagnostic] = []
        self.plain = _make_plain()
        # significant lines: (line index, indent, content)
        self.sig = [(i, len(line) - len(c), c.rstrip(" ") if c[-1] == " " else c)
                    for i, line in enumerate(self.raw) if (c := line.lstrip(" ")) and c[0] != "#"]
        self.pos = 0

    # -- driver ------------------------------------------------------------------------
    def run(self):
        if not self.sig:
            raise Unsupported("empty document")
        i, indent, content = self.sig[0]
        if indent != 0 or content.startswith(("---", "%", "- ", "...")) or content == "-":
            raise Unsupported("document markers or top-level sequence")
        data = self.node(0, ())
        if self.pos != len(self.sig):
            raise Unsupported("text after the top-level mapping")
        return data, self.values, self.keys, self.diags

    def node(self, indent: int, loc: tuple) -> Any:
        """The block node whose first line is the current significant line, at ``indent``."""
        i, ind, content = self.sig[self.pos]
        if ind != indent:
            raise Unsupported("indentation")
        if content == "-" or content.startswith("- "):
            return self.sequence(indent, loc)
        split = self.key_split(content)
        if split is not None:
            return self.mapping(indent, loc)
        # a scalar alone on its line
        self.pos += 1
        value = self.inline(content, i, indent, loc)
        self.after_scalar(indent)
        return value

    def after_scalar(self, indent: int) -> None:
        if self.pos < len(self.sig) and self.sig[self.pos][1] > indent:
            raise Unsupported("continuation line")

    # -- block collections ---------------------------------------------------------------
    def mapping(self, indent: int, loc: tuple, first: tuple | None = None) -> dict:
        out: dict[Any, Any] = {}
        sig = self.sig
        values, keys = self.values, self.keys
        plain = self.plain
        cache = plain.cache
        pair = _PAIR.fullmatch
        record = self.record
        nsig = len(sig)
        start = True
        while self.pos < nsig:
            i, ind, content = sig[self.pos]
            if first is not None and start:
                ind, content = first  # a mapping that starts after "- " on a sequence line
            if ind < indent:
                break
            if ind > indent:
                raise Unsupported("indentation")
            m = pair(content)
            if m is not None and not start:
                # the common case, "key: plain value" with nothing below: straight through
                nxt = self.pos + 1
                if nxt == nsig or sig[nxt][1] <= indent:
                    key, value = m.groups()
                    key = cache[key] if key in cache else plain(key)
                    if key not in out:
                        self.pos = nxt
                        if record:
                            kloc = loc + (key,)
                            line = i + 1
                            keys[kloc] = (line, indent + 1)
                            values[kloc] = (line, indent + m.start(2) + 1)
                        out[key] = cache[value] if value in cache else plain(value)
                        continue
                    if not record:
                        raise _NeedPositions()
            m = _SIMPLE_KEY.match(content)
            if m is not None:
                key = m.group(1)
                kcol = 0
                rcol = m.end()
                rest = content[rcol:]
                if rest and rest[0] == "#":
                    rest = ""
                if not rest:  # an empty value stands right after the colon (as libyaml places it)
                    rcol = m.end(1) + 1
                if key == "<<":
                    raise Unsupported("merge key")
                key = self.plain(key)
            else:
                split = self.key_split(content)
                if split is None:
                    raise Unsupported("not a key")
                key, kcol, rest, rcol = split
            if start:
                values[loc] = (i + 1, indent + 1)
                start = False
            self.pos += 1
            kpos = (i + 1, indent + 1 + kcol)
            kloc = loc + (key,)
            duplicate = key in out
            if duplicate and not self.record:
                raise _NeedPositions()
            if duplicate:
                first_line = keys[kloc][0]
                self.diags.append(duplicate_key(self.path, kpos[0], kpos[1], key, first_line))
                # parse the value anyway (to advance) but keep the first one
                saved_v, saved_k, n_diags = self.values, self.keys, len(self.diags)
                self.values, self.keys = {}, {}
                try:
                    self.value_of(rest, i, indent + rcol, indent, kloc)
                finally:
                    self.values, self.keys = saved_v, saved_k
                    del self.diags[n_diags:]
                values, keys = self.values, self.keys
                continue
            keys[kloc] = kpos
            first = None
            if rest and _SIMPLE_VALUE.fullmatch(rest) is not None and (
                    self.pos == len(sig) or sig[self.pos][1] <= indent):
                # the common case: a plain one-line value without indicators
                values[kloc] = (i + 1, indent + rcol + 1)
                out[key] = self.plain(rest)
                continue
            out[key] = self.value_of(rest, i, indent + rcol, indent, kloc)
        if start:
            raise Unsupported("empty mapping")
        return out

    def value_of(self, rest: str, i: int, col: int, indent: int, loc: tuple) -> Any:
        """Value of a mapping key at ``indent`` whose text after ': ' is ``rest`` (at column ``col``)."""
        if rest:
            if rest[0] in ">|":
                return self.block_scalar(rest, i, col, indent, loc)
            value = self.inline(rest, i, col, loc)
            self.after_scalar(indent)
            return value
        # nothing on the line: nested node below, a sequence at the same indentation, or null
        if self.pos < len(self.sig):
            _, ind, content = self.sig[self.pos]
            if ind > indent:
                return self.node(ind, loc)
            if ind == indent and (content == "-" or content.startswith("- ")):
                return self.sequence(indent, loc)
        self.values[loc] = (i + 1, col + 1)
        return None

    def sequence(self, indent: int, loc: tuple) -> list:
        out: list[Any] = []
        sig = self.sig
        while self.pos < len(sig):
            i, ind, content = sig[self.pos]
            if ind < indent:
                break
            if ind > indent or not (content == "-" or content.startswith("- ")):
                if ind == indent:
                    break  # a key of the enclosing mapping (sequence at the key's indentation)
                raise Unsupported("indentation")
            if not out:
                self.values[loc] = (i + 1, indent + 1)
            iloc = loc + (len(out),)
            rest = content[1:].lstrip(" ")
            if not rest:
                self.pos += 1
                if self.pos < len(sig) and sig[self.pos][1] > indent:
                    out.append(self.node(sig[self.pos][1], iloc))
                else:
                    self.values[iloc] = (i + 1, indent + 2)
                    out.append(None)
                continue
            col = indent + len(content) - len(rest)
            if rest.startswith("- ") or rest == "-":
                raise Unsupported("nested sequence on one line")
            if self.key_split(rest) is not None:
                out.append(self.mapping(col, iloc, first=(col, rest)))
                continue
            self.pos += 1
            if rest[0] in ">|":
                out.append(self.block_scalar(rest, i, col, indent, iloc))
            else:
                out.append(self.inline(rest, i, col, iloc))
                self.after_scalar(indent)
        return out

    # -- scalars -----------------------------------------------------------------------
    def key_split(self, content: str):
        """(key, key column offset, rest of line, rest column offset) if ``content`` is 'key: ...'."""
        c0 = content[0]
        if c0 in "'\"":
            text, end = self.quoted(content, 0)
            if end < len(content) and content[end] == ":" and (end + 1 == len(content) or content[end + 1] == " "):
                rest = content[end + 1:].lstrip(" ")
                if rest.startswith("#"):
                    rest = ""
                return text, 0, rest, len(content) - len(rest) if rest else end + 1
            return None
        if c0 in "[{?":
            return None
        k = content.find(": ")
        hash_at = content.find(" #")
        if hash_at != -1 and (k == -1 or hash_at < k):
            body = content[:hash_at].rstrip(" ")
            if body.endswith(":") and ": " not in body:
                k = len(body) - 1
            else:
                return None
        if k == -1:
            if content.endswith(":"):
                k = len(content) - 1
            else:
                return None
        raw_key = content[:k].rstrip(" ")
        if not raw_key or raw_key[0] in _PLAIN_START_BAD or raw_key[0] == "-" and raw_key[1:2] in ("", " "):
            raise Unsupported("unusual key")
        if raw_key == "<<":
            raise Unsupported("merge key")
        rest = content[k + 1:].lstrip(" ")
        if rest.startswith("#"):
            rest = ""
        return self.plain(raw_key), 0, rest, len(content) - len(rest) if rest else k + 1

    def quoted(self, text: str, start: int) -> tuple[str, int]:
        """A quoted scalar starting at ``text[start]``: (value, index after the closing quote)."""
        q = text[start]
        if q == "'":
            j = start + 1
            parts = []
            while True:
                k = text.find("'", j)
                if k == -1:
                    raise Unsupported("multi-line quoted scalar")
                parts.append(text[j:k])
                if text[k + 1:k + 2] == "'":
                    parts.append("'")
                    j = k + 2
                    continue
                return "".join(parts), k + 1
        k = text.find('"', start + 1)
        if k == -1:
            raise Unsupported("multi-line quoted scalar")
        value = text[start + 1:k]
        if "\\" in value:
            raise Unsupported("escapes")
        return value, k + 1

    def inline(self, text: str, i: int, col: int, loc: tuple) -> Any:
        """A scalar or flow collection that fits on the rest of line ``i`` from column ``col``."""
        c0 = text[0]
        if c0 in "'\"":
            value, end = self.quoted(text, 0)
            tail = text[end:].lstrip(" ")
            if tail and not (tail[0] == "#" and end < len(text) and text[end] == " "):
                raise Unsupported("text after a quoted scalar")
            self.values[loc] = (i + 1, col + 1)
            return value
        if c0 == "[" or c0 == "{":
            return self.flow(text, i, col, loc)
        value = text
        hash_at = value.find(" #")
        if hash_at != -1:
            value = value[:hash_at].rstrip(" ")
        if c0 in _PLAIN_START_BAD or (c0 in "-?:" and value[1:2] in ("", " ")):
            raise Unsupported("indicator")
        if ": " in value or value.endswith(":"):
            raise Unsupported("colon in a plain scalar")
        self.values[loc] = (i + 1, col + 1)
        return self.plain(value)

    def flow(self, text: str, i: int, col: int, loc: tuple) -> Any:
        close = "]" if text[0] == "[" else "}"
        if text[-1] == close and _FLOW_SIMPLE.fullmatch(text, 1, len(text) - 1):
            return self.simple_flow(text, i, col, loc, close)
        items: list[tuple[str, int]] = []  # (item text, offset in text)
        j, n = 1, len(text)
        start = 1
        while j < n:
            ch = text[j]
            if ch in "'\"":
                _, j = self.quoted(text, j)
                continue
            if ch in "[{":
                raise Unsupported("nested flow collection")
            if ch == "," or ch == close:
                items.append((text[start:j], start))
                if ch == close:
                    break
                start = j + 1
            elif ch in "]}":
                raise Unsupported("mismatched bracket")
            j += 1
        else:
            raise Unsupported("multi-line flow collection")
        tail = text[j + 1:].lstrip(" ")
        if tail and not (tail[0] == "#" and text[j + 1:j + 2] == " "):
            raise Unsupported("text after a flow collection")
        self.values[loc] = (i + 1, col + 1)
        cleaned = []
        for item, off in items:
            stripped = item.lstrip(" ")
            off += len(item) - len(stripped)
            stripped = stripped.rstrip(" ")
            cleaned.append((stripped, off))
        if len(cleaned) == 1 and not cleaned[0][0]:
            return [] if close == "]" else {}
        if any(not s for s, _ in cleaned):
            raise Unsupported("empty flow item")
        if close == "]":
            out = []
            for idx, (s, off) in enumerate(cleaned):
                if s[0] not in "'\"" and (": " in s or s.endswith(":")):
                    raise Unsupported("mapping in a flow sequence")
                out.append(self.flow_scalar(s, i, col + off, loc + (idx,)))
            return out
        mapping: dict[Any, Any] = {}
        for s, off in cleaned:
            if s[0] in "'\"":
                key, end = self.quoted(s, 0)
                after = s[end:]
                if not after.startswith(":"):
                    raise Unsupported("flow key")
                vtext = after[1:]
            else:
                k = s.find(": ")
                if k == -1:
                    raise Unsupported("flow mapping item without ': '")
                key = None if _flow_plain_bad(s[:k].rstrip(" ")) else self.plain(s[:k].rstrip(" "))
                if key is None:
                    raise Unsupported("flow key")
                vtext = s[k + 1:]
            vs = vtext.lstrip(" ")
            if not vs:
                raise Unsupported("empty flow value")
            voff = off + len(s) - len(vs)
            kloc = loc + (key,)
            kpos = (i + 1, col + off + 1)
            if key in mapping:
                first = self.keys[kloc]
                self.diags.append(duplicate_key(self.path, kpos[0], kpos[1], key, first[0]))
                continue
            self.keys[kloc] = kpos
            mapping[key] = self.flow_scalar(vs, i, col + voff, kloc)
        return mapping

    def simple_flow(self, text: str, i: int, col: int, loc: tuple, close: str) -> Any:
        """A one-line flow collection of plain scalars (no quotes, comments or nesting)."""
        self.values[loc] = (i + 1, col + 1)
        inner = text[1:-1]
        if not inner.strip(" "):
            return [] if close == "]" else {}
        values, plain = self.values, self.plain
        if not self.record:
            return self._flow_data(inner, close)
        line = i + 1
        off = col + 2  # 1-based column of inner[0]
        if close == "]":
            out = []
            for idx, item in enumerate(inner.split(",")):
                s = item.strip(" ")
                if _flow_plain_bad(s):  # (also "a: b", which in a flow sequence is a one-pair mapping)
                    raise Unsupported("flow item")
                values[loc + (idx,)] = (line, off + len(item) - len(item.lstrip(" ")))
                out.append(plain(s))
                off += len(item) + 1
            return out
        mapping: dict[Any, Any] = {}
        keys = self.keys
        for item in inner.split(","):
            s = item.strip(" ")
            k = s.find(": ")
            if k <= 0 or _flow_plain_bad(s[:k].rstrip(" ")):
                raise Unsupported("flow mapping item")
            kcol = off + len(item) - len(item.lstrip(" "))
            key = plain(s[:k].rstrip(" "))
            v = s[k + 1:].lstrip(" ")
            if _flow_plain_bad(v):
                raise Unsupported("flow value")
            kloc = loc + (key,)
            if key in mapping:
                first = keys[kloc]
                self.diags.append(duplicate_key(self.path, line, kcol, key, first[0]))
                off += len(item) + 1
                continue
            keys[kloc] = (line, kcol)
            values[kloc] = (line, kcol + len(s) - len(v))
            mapping[key] = plain(v)
            off += len(item) + 1
        return mapping

    def _flow_data(self, inner: str, close: str) -> Any:
        """``simple_flow`` without positions (same checks, same values)."""
        plain = self.plain
        cache = plain.cache
        if close == "]":
            out = []
            for item in inner.split(","):
                s = item.strip(" ")
                if _flow_plain_bad(s):  # (also "a: b", which in a flow sequence is a one-pair mapping)
                    raise Unsupported("flow item")
                out.append(cache[s] if s in cache else plain(s))
            return out
        mapping: dict[Any, Any] = {}
        for item in inner.split(","):
            s = item.strip(" ")
            k = s.find(": ")
            if k <= 0 or _flow_plain_bad(s[:k].rstrip(" ")):
                raise Unsupported("flow mapping item")
            key = s[:k].rstrip(" ")
            key = cache[key] if key in cache else plain(key)
            v = s[k + 1:].lstrip(" ")
            if _flow_plain_bad(v):
                raise Unsupported("flow value")
            if key in mapping:
                raise _NeedPositions()
            mapping[key] = cache[v] if v in cache else plain(v)
        return mapping

    def flow_scalar(self, s: str, i: int, col: int, loc: tuple) -> Any:
        if s[0] in "'\"":
            value, end = self.quoted(s, 0)
            if s[end:].strip(" "):
                raise Unsupported("text after a quoted scalar")
            self.values[loc] = (i + 1, col + 1)
            return value
        if _flow_plain_bad(s):
            raise Unsupported("indicator in flow")
        self.values[loc] = (i + 1, col + 1)
        return self.plain(s)

    def block_scalar(self, header: str, i: int, col: int, indent: int, loc: tuple) -> str:
        h = header.split(" #", 1)[0].rstrip(" ")
        if h not in (">", ">-", "|", "|-"):
            raise Unsupported("block scalar header")
        folded, strip = h[0] == ">", h.endswith("-")
        raw = self.raw
        j = i + 1
        # content indentation: first non-blank line
        lines: list[str] = []
        content_indent = None
        while j < len(raw):
            line = raw[j]
            body = line.lstrip(" ")
            ind = len(line) - len(body)
            if not body:
                if content_indent is not None and ind > content_indent:
                    raise Unsupported("spaces in a blank line of a block scalar")
                lines.append("")
                j += 1
                continue
            if content_indent is None:
                if ind <= indent:
                    break
                content_indent = ind
            if ind < content_indent:
                break
            if ind > content_indent and folded:
                raise Unsupported("more-indented line in a folded scalar")
            lines.append(line[content_indent:])
            j += 1
            if j == len(raw):  # the text ends without a line break: chomping differs, leave it to libyaml
                raise Unsupported("block scalar on the last line without a line break")
        if content_indent is None or not lines or lines[0] == "":
            raise Unsupported("empty block scalar or leading blank line")
        while lines and lines[-1] == "":
            lines.pop()
        # skip the significant lines consumed
        sig = self.sig
        while self.pos < len(sig) and sig[self.pos][0] < j:
            self.pos += 1
        if folded:
            parts, pending_blank = [lines[0]], 0
            for line in lines[1:]:
                if line == "":
                    pending_blank += 1
                    continue
                parts.append("\n" * pending_blank if pending_blank else " ")
                parts.append(line)
                pending_blank = 0
            value = "".join(parts)
        else:
            value = "\n".join(lines)
        if not strip:
            value += "\n"
        self.values[loc] = (i + 1, col + 1)
        self.after_scalar(indent)
        return value


LazyPositions = _lazy_positions_class()
