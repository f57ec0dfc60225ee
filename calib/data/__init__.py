"""Reference data files shipped with calib (see README.md here for their origin)."""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """Path of a shipped reference file; a clear error if it is missing."""
    p = DATA_DIR / name
    if not p.is_file():
        raise FileNotFoundError(f"reference data file {name} is missing from {DATA_DIR}")
    return p
