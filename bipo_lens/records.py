"""Run records: what a number was measured with, so anyone can re-run it.

Every command that measures (``train``, ``eval``, ``sweep``, ``compose``, ``transfer``,
``figures``, ``bench``) stores a record beside its results: the exact command, the git commit (and
whether the tree had uncommitted changes), library versions, device and dtype, seeds, the data
files with their hashes, and the wall time. README text that quotes a result names the record.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

PACKAGES = ("bipo-lens", "torch", "transformers", "transformer-lens", "tokenizers", "numpy", "safetensors")
_REPO = Path(__file__).resolve().parents[1]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state(repo: Path | str | None = None) -> dict:
    """The checkout's commit, whether its files differ from it (None outside a checkout), and which
    (``changed``, the first 20: tracked files changed since the commit, then files git does not
    ignore but does not track, such as a new module): a reader can tell a code change from, say, a
    rewritten output."""
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo or _REPO), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    top = (run("rev-parse", "--show-toplevel") or "").strip()
    if top:
        repo = top  # paths from the top, wherever in the checkout ``repo`` points
    commit = (run("rev-parse", "HEAD") or "").strip() or None
    tracked = run("diff", "--name-only", "HEAD") if commit else None
    untracked = run("ls-files", "--others", "--exclude-standard") if commit else None
    if tracked is None or untracked is None:
        return {"commit": commit, "dirty": None, "changed": []}
    changed = [line for line in (tracked + untracked).splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:20]}


def device_description(model=None) -> dict:
    """The device a model runs on, in words a reader can compare: GPU name, or CPU and its cores."""
    import torch

    placed = None
    if model is not None:
        parameter = next(model.lens_raw.parameters())
        device, dtype = model.lens_info.device, str(parameter.dtype).removeprefix("torch.")
        placed = model.lens_info.device_map
    else:
        device, dtype = torch.device("cpu"), None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores, " \
               f"{torch.get_num_threads()} torch threads"
    found = {"type": device.type, "name": name, "dtype": dtype}
    if placed:  # --device-map: which devices hold how many modules
        where = [str(d) for d in placed.values()]
        found["device_map"] = {d: where.count(d) for d in sorted(set(where))}
    return found


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_record(command: str | None = None, model=None, data: Iterable[str | Path] = (), seeds: dict | None = None,
                 **extra) -> dict:
    """A record opened at the start of a run; :func:`finish_record` adds the wall time.

    ``data``: files (hashed) or built-in set names (kept as names: they are versioned with the code)."""
    return {
        "command": command or "bipo-lens " + shlex.join(sys.argv[1:]),
        "git": git_state(),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "device": device_description(model),
        "model": getattr(getattr(model, "lens_info", None), "model_id", None),
        "seeds": seeds or {},
        "data": [{"path": str(d), "sha256": file_hash(d)} if Path(d).is_file() else {"builtin": str(d)} for d in data],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "_t0": time.perf_counter(),
        **extra,
    }


def finish_record(record: dict) -> dict:
    """The record with the wall time since it was opened (and without its private clock)."""
    done = {k: v for k, v in record.items() if k != "_t0"}
    done["wall_seconds"] = round(time.perf_counter() - record["_t0"], 1)
    return done


def describe(record: dict) -> str:
    """One line for READMEs: device, dtype, versions and commit."""
    git = record.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if git.get("dirty") else "")
    versions = record.get("versions", {})
    device = record.get("device", {})
    return (f"{device.get('name', '?')}, {device.get('dtype') or '?'}; torch {versions.get('torch')}, "
            f"transformers {versions.get('transformers')}, transformer-lens {versions.get('transformer-lens')}; "
            f"commit {commit}")
