"""Atomic file writes shared by the evidence store, the publishers and the Redmine sync."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically: temporary file in the same folder, rename.

    A reader never sees half a file, and the file keeps its permissions (a new one gets the
    usual ones).  ``fsync`` also survives a power cut; generated documents, cheap to write
    again, skip it (fsync of tens of megabytes dominated publishing a large registry).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:  # mkstemp makes 0600; a new file gets the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
