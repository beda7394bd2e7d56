"""Data-parallel training under ``torchrun``: nothing to configure, nothing launched here.

``torchrun --nproc-per-node N --no-python bipo-lens train ...`` (or a Python script calling
:func:`bipo_lens.train_bipo`) starts N processes with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in their
environment; :func:`init_from_env` joins them into one process group (NCCL on GPUs, gloo on CPUs),
and each rank puts its model on ``cuda:LOCAL_RANK``. A single process without those variables is
world size 1 and every function here is a no-op. Multi-node runs use torchrun's own rendezvous
(``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint HOST:PORT``): bipo-lens has no launcher.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the same variables) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device | None = None) -> None:
    """Join the process group torchrun describes, once; a no-op in a single process."""
    if not launched() or dist.is_initialized():
        return
    use_nccl = torch.cuda.is_available() and (device is None or device.type == "cuda")
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    atexit.register(_leave)


def _leave() -> None:
    """Destroy the process group while the interpreter is still whole. Why: a gloo rank that exits
    with its group alive can abort in finalisation ("terminate called without an active exception",
    SIGABRT; pytorch/pytorch#190489), failing a run whose work was done; seen once in a test run."""
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under a launcher, so ranks do not share one GPU."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, output files and progress."""
    return rank() == 0


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the tensor summed over every rank (gradients, loss sums)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
