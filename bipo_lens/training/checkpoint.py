"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the vector, the optimiser and schedule state, the random state, the position in
the epoch and the history, written atomically after every epoch (and on Ctrl-C). Resuming from it
gives the same vector, bit for bit on the CPU, as a run that was never interrupted.

Ctrl-C is held to the next step boundary (:class:`HeldInterrupts`): a checkpoint taken in the middle of a
step, after the optimiser moved the vector but before the step was counted, would resume to another vector.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from bipo_lens import distributed
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) taken at a step boundary; ``checkpoint`` is the file written on it, if any."""

    def __init__(self, checkpoint: Path | None):
        super().__init__(f"checkpoint saved in {checkpoint}" if checkpoint else "interrupted")
        self.checkpoint = checkpoint


class HeldInterrupts:
    """Hold Ctrl-C to the next step boundary while a checkpointing run trains.

    A signal that some Python handler already turns into ``KeyboardInterrupt`` (SIGINT always; SIGTERM
    where the CLI asks for it) only sets ``requested`` here; the loop asks :meth:`stop_here` before each
    step and writes a checkpoint of a whole step there. A second signal stops at once, keeping the last
    checkpoint. Under ``torchrun`` every rank stops at the same step (the request is summed over ranks).
    Signal handlers belong to the main thread: elsewhere (or when ``active`` is false) nothing is held.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, active: bool = True, device: torch.device | None = None):
        self.active, self.device, self.requested = active, device, False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> HeldInterrupts:
        if self.active and threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                previous = signal.getsignal(number)
                if callable(previous):  # SIG_DFL and SIG_IGN are left alone
                    self._previous[number] = previous
                    signal.signal(number, self._hold)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _hold(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def stop_here(self) -> bool:
        """Whether this rank, or any other, was interrupted since the run started."""
        if not self.active or distributed.world_size() == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=self.device)
        return bool(distributed.sum_over_ranks(flag).item() > 0)
