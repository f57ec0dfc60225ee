"""Diagnostics: one problem in a registry file, located and worded for a person."""
from __future__ import annotations

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
