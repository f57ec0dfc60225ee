"""Diagnostics: one problem in a registry file, located and worded for a person."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    column: int
    message: str
    kind: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def duplicate_key(file: str, line: int, column: int, key: object, first_line: int) -> Diagnostic:
    """A key given twice in one mapping (the same words from the fast reader and from libyaml's)."""
    return Diagnostic(file, line, column, f"duplicate key '{key}' (first defined at line {first_line}); "
                      "YAML would silently keep only the last one", "duplicate-key")


# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidirectional overrides/isolates
# (which reorder what a terminal or an editor shows): printed as visible escapes, never as they are
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = str.maketrans({"\t": " ", "\n": " "})


def _visible(match: re.Match) -> str:
    c = ord(match.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object, *, one_line: bool = False) -> str:
    """``text`` safe to print on a terminal or to write into a document: control characters (ESC
    sequences that recolour, clear or retitle a terminal, bell, carriage return, bidi overrides)
    become visible escapes such as ``\\x1b``; with ``one_line`` tabs and newlines become spaces
    (a table cell, a TSV field)."""
    text = str(text)
    if one_line:
        text = text.translate(_LINE_BREAKS)
    return _CONTROL.sub(_visible, text)
