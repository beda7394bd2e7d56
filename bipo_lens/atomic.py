"""Write files so that a crash never leaves a half-written one where a good one was."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_finished(path: str | Path) -> dict | list | None:
    """A JSON result that :func:`atomic_write` finished, or None where there is none (missing, or
    unreadable after a crash): the caller recomputes it. Resumable runs (sweeps, studies) read back
    their finished parts with this."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
