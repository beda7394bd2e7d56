"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the vector, the optimiser and schedule state, the random state, the position in
the epoch and the history, written atomically after every epoch (and on Ctrl-C). Resuming from it
gives the same vector, bit for bit on the CPU, as a run that was never interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bipo_lens.atomic import atomic_write
from bipo_lens.errors import BipoLensError

FILENAME = "checkpoint.pt"


@dataclass
class TrainingState:
    vector: torch.Tensor
    optimizer: dict
    scheduler: dict
    random_state: tuple
    epoch: int  # the epoch in progress (0-based)
    step_in_epoch: int  # steps of that epoch already taken
    order: list[int]  # that epoch's pair order
    losses: list[float]  # that epoch's losses so far
    history: list[dict]
    identity: dict  # config + data fingerprint: a checkpoint only resumes the same run
    best: dict | None = None  # early stopping: the best epoch's vector, held-out loss and number


def save_checkpoint(directory: str | Path, state: TrainingState) -> Path:
    payload = {name: getattr(state, name) for name in TrainingState.__dataclass_fields__}
    return atomic_write(Path(directory) / FILENAME, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(directory: str | Path, identity: dict) -> TrainingState | None:
    """The saved state, or None where there is none; a checkpoint of another run is an error."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = TrainingState(**payload)
    except Exception as e:  # junk, truncation or tampering: torch's unpickler fails in many ways
        raise BipoLensError(f"{path}: unreadable checkpoint ({type(e).__name__}); remove it to start afresh") from None
    if state.identity != identity:
        changed = sorted(k for k in set(identity) | set(state.identity) if identity.get(k) != state.identity.get(k))
        raise BipoLensError(f"{path} belongs to another run (differs in: {', '.join(changed)}); use another --checkpoint-dir")
    return state
