"""Where and how `icd redmine` reaches Redmine: the `[redmine]` table of ``icd.toml``.

The file holds no secret.  The API key comes only from the environment variable
``REDMINE_API_KEY`` or from a key file (``key_file`` in the config, or ``REDMINE_KEY_FILE``)
that nobody but its owner can read (mode 0600 or 0400); a group- or world-readable key
file is refused.  The key is never printed, logged or written anywhere by `icd`.
"""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CONFIG_NAME = "icd.toml"
DEFAULT_CATEGORIES = {
    "atmosphere": "Atmosphere Calibration",
    "array": "Array Calibration",
    "camera": "Camera Calibration",
    "pointing": "Pointing Calibration",
}


class ConfigError(Exception):
    """A configuration problem, explained in one line."""


@dataclass
class RedmineConfig:
    url: str = ""
    project: str = "cta-data"
    tracker: str = "Task"
    interface_code_field: Optional[int] = None   # id of the "Interface code" issue custom field
    categories: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CATEGORIES))
    users: dict[str, int] = field(default_factory=dict)   # person key -> Redmine user id
    verify_tls: bool = True
    timeout: float = 20.0          # seconds, per request (connect and read)
    retries: int = 3               # extra attempts on connection errors and 5xx
    backoff: float = 0.5           # seconds, doubled after each failed attempt
    key_file: Optional[str] = None
    wiki_prefix: str = ""          # wiki page title = prefix + ICD name (e.g. "ICD_DATA-COM")
    lock_timeout: float = 120.0    # seconds a sync waits while another sync of the same registry runs
    source: Optional[Path] = None  # the file this came from (for messages)

    def category_name(self, registry_category: str) -> Optional[str]:
        return self.categories.get(registry_category)


def find_config(start: Path | None = None) -> Optional[Path]:
    """``$ICD_CONFIG``, else the first icd.toml from ``start`` (cwd) upwards."""
    env = os.environ.get("ICD_CONFIG")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None, **overrides: Any) -> RedmineConfig:
    """Read the `[redmine]` table; environment (REDMINE_URL, REDMINE_PROJECT) and ``overrides`` win."""
    path = path or find_config()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("redmine", {})
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if "api_key" in data or "key" in data:
        raise ConfigError(f"{path}: an API key must not be written in the config file; "
                          "use REDMINE_API_KEY or a key file with mode 0600 (key_file = ...)")
    cfg = RedmineConfig(source=Path(path) if path else None)
    known = set(RedmineConfig.__dataclass_fields__) - {"source"}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting redmine.{key}; known: {', '.join(sorted(known))}")
        if key == "categories":
            value = {**DEFAULT_CATEGORIES, **value}
        setattr(cfg, key, value)
    env = {"url": os.environ.get("REDMINE_URL"), "project": os.environ.get("REDMINE_PROJECT"),
           "key_file": os.environ.get("REDMINE_KEY_FILE")}
    for key, value in {**{k: v for k, v in env.items() if v}, **{k: v for k, v in overrides.items() if v is not None}}.items():
        setattr(cfg, key, value)
    if cfg.interface_code_field is not None:
        cfg.interface_code_field = int(cfg.interface_code_field)
    cfg.url = (cfg.url or "").rstrip("/")
    return cfg


def load_api_key(cfg: RedmineConfig) -> str:
    """The API key from REDMINE_API_KEY, else from the key file (which must be private)."""
    key = os.environ.get("REDMINE_API_KEY", "").strip()
    if key:
        return key
    if not cfg.key_file:
        raise ConfigError("no Redmine API key: set REDMINE_API_KEY, or key_file in icd.toml "
                          "(or REDMINE_KEY_FILE) to a file with mode 0600")
    path = Path(os.path.expanduser(cfg.key_file))
    if cfg.source is not None and not path.is_absolute():
        path = cfg.source.parent / path
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"the Redmine key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"the Redmine key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"refusing the Redmine key file {path}: it is readable by others "
                          f"(mode {mode:04o}); run: chmod 600 {path}")
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ConfigError(f"the Redmine key file {path} is empty")
    return key
