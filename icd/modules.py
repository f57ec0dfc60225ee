"""Calibration modules as seen from the registry: found and read only through the contract.

``icd`` never reaches inside a module: it imports it, reads ``CONTRACT`` (a
``calib.contract.CalibrationModule``) and the module docstring (the method), and calls
the contract's ``sample``, ``run`` and ``check``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any


def _ensure_path(root: Path | None) -> None:
    if root is not None and (root / "calib").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


@lru_cache(maxsize=None)
def contract_of(module_path: str) -> Any:
    """The CONTRACT of ``module_path``; raises with a readable reason if it has none."""
    from calib.contract import load_contract

    return load_contract(module_path)[0]


@lru_cache(maxsize=None)
def method_of(module_path: str) -> str:
    """The module docstring: the method, as stated by the module's authors."""
    from calib.contract import load_contract

    return load_contract(module_path)[1]


def discover(root: Path | None = None, package: str = "calib") -> dict[str, Any]:
    """Every module of ``package`` that declares a CONTRACT, by dotted name."""
    _ensure_path(root)
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        return {}
    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        name = info.name
        if ".tests" in name or name.endswith(".conftest") or name.split(".")[-1].startswith("test_"):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken module is reported where the registry uses it
            continue
        contract = getattr(module, "CONTRACT", None)
        if contract is not None and hasattr(contract, "codes"):
            found[name] = contract
    return found


def reason(exc: BaseException) -> str:
    """One line saying why a module could not be loaded."""
    if isinstance(exc, ModuleNotFoundError):
        return f"no module named {exc.name}"
    if type(exc) is LookupError:  # calib.contract's own sentence ("module X defines no CONTRACT ...")
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
