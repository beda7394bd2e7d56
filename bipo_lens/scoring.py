"""Log-probabilities of both responses of many pairs under a vector at one layer, computed fast.

The trainer's objective and the evaluation's margins both need, for pair i and side s,
``log p(response_s | prompt_i)`` summed over response tokens with ``m * v`` added at layer L. The
fast path (all switches of :class:`FastPath` on) computes exactly what the naive path computes:
a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from bipo_lens.models import info, packing_allowed, run_from_layer, unembed
from bipo_lens.steering import add_steering, steer_tensors
from bipo_lens.activations import MAX_ROW_TOKENS, device_of, pair_residuals
from bipo_lens.tokens import Sequence, TokenBatch, make_batch, make_packed_batch, to_device


@dataclass(frozen=True)
class FastPath:
    """Switches for the savings over the naive loop; all on by default, all off is the naive path."""

    reference_once: bool = True  # reference log-probs never change: compute them once
    prefix_cache: bool = True  # blocks 0..L do not see the vector: run them once per pair
    response_logits_only: bool = True  # unembed only where a response token is predicted
    share_prompt: bool = True  # one row per pair: the prompt once, both responses after it
    compile: bool = False  # the blocks after L through torch.compile (GPU: fused elementwise kernels)
    graphs: bool = False  # compiled blocks replayed as CUDA graphs, over shapes rounded up to buckets

    @classmethod
    def naive(cls) -> "FastPath":
        return cls(False, False, False, False, False, False)

    @classmethod
    def compiled(cls, how: str | None) -> "FastPath":
        """All savings, with the blocks after L as ``--compile`` says: None (eager), ``"fused"``, ``"graphs"``."""
        return cls(compile=how is not None, graphs=how == "graphs")

    @property
    def split(self) -> bool:
        """Run blocks after L on their own (every saving but ``reference_once`` needs this)."""
        return self.prefix_cache or self.response_logits_only or self.share_prompt or self.compile or self.graphs

    @property
    def bucket(self) -> int:
        """Row lengths and target counts are rounded up to multiples of this. Why: a CUDA graph
        replays one fixed shape, so every new shape costs a compilation and a capture; buckets of
        ``GRAPH_BUCKET`` tokens bound them to a handful per run, for a little padding."""
        return GRAPH_BUCKET if self.graphs else 1


GRAPH_BUCKET = 64


def cache_tier(cache_bytes: int, device: torch.device, device_budget: int | None,
               host_budget: int | None) -> str:
    """Where the layer-L activations of a training set live: ``"device"`` (within ``device_budget``),
    ``"host"`` (an accelerator's inputs kept in pinned CPU memory within ``host_budget``, streamed
    per batch: a few MiB per step against the recompute of blocks 0..L) or ``"recompute"`` (blocks
    0..L run again each step, without gradient). ``None``: no limit. On a CPU the host is the device."""
    if cache_bytes <= (device_budget if device_budget is not None else float("inf")):
        return "device"
    if device.type != "cpu" and cache_bytes <= (host_budget if host_budget is not None else float("inf")):
        return "host"
    return "recompute"


def default_host_budget() -> int:
    """Half the memory the machine has free now."""
    import psutil

    return psutil.virtual_memory().available // 2


class PairScorer:
    """Summed response log-probs of every sequence of a set of pairs, under ``d * v``."""

    def __init__(self, model, encoded: list[tuple[Sequence, Sequence]], layer: int, fast: FastPath,
                 cache_budget_bytes: int | None, host_budget_bytes: int | None = None):
        self.model, self.layer, self.fast = model, layer, fast
        self.encoded = encoded
        self.sequences = [seq for pair in encoded for seq in pair]  # 2i: matching, 2i+1: not
        self.device = device_of(model)
        self.pad = model.tokenizer.pad_token_id or 0
        self.cached: list[Tensor] | None = None
        self.tier = "recompute"
        if fast.prefix_cache:
            host = host_budget_bytes if host_budget_bytes is not None else default_host_budget()
            self.tier = cache_tier(self.cache_bytes(), self.device, cache_budget_bytes, host)
        if self.tier != "recompute":
            self.cached = pair_residuals(model, encoded, layer, store="host" if self.tier == "host" else None)
        self.reference = self.logps(range(len(encoded)), None, 0.0).detach() if fast.reference_once else None

    def cache_bytes(self) -> int:
        element = torch.finfo(next(self.model.original_model.parameters()).dtype).bits // 8
        return sum(len(s.ids) for s in self.sequences) * info(self.model).d_model * element

    def reference_logps(self, pair_indices) -> Float[Tensor, "pairs 2"]:
        if self.reference is not None:
            return self.reference[to_device(list(pair_indices), self.device)]
        with torch.no_grad():
            return self.logps(pair_indices, None, 0.0)

    def logps(self, pair_indices, vector: Tensor | None, d: float) -> Float[Tensor, "pairs 2"]:
        """Per pair: (log p(matching), log p(not_matching)), each summed over response tokens."""
        indices = list(pair_indices)
        out = []
        if self.fast.graphs and self.device.type == "cuda":  # a new step: earlier replays' outputs are done with
            torch.compiler.cudagraph_mark_step_begin()
        # One graph for a training step; bounded memory wherever no gradient is needed.
        chunk = len(indices) if vector is not None and torch.is_grad_enabled() else 8
        for start in range(0, len(indices), chunk):
            part = indices[start : start + chunk]
            forward = self._split_forward if self.fast.split else self._hooked_forward
            batch, logprobs = forward(part, vector, d)
            out.append(einops.rearrange(batch.sum_per_slot(logprobs), "(pairs side) -> pairs side", side=2))
        return torch.cat(out)

    def sequence_logps(
        self, sequence_indices: list[int],
        intervene: Callable[[Float[Tensor, "row pos d_model"]], Float[Tensor, "row pos d_model"]],
    ) -> Float[Tensor, " row"]:
        """Summed response log-probs of the listed sequences (``2i``: matching, ``2i+1``: not), one
        row each (no shared prompt), with ``intervene`` applied to their layer-L residuals (rows right-
        padded, in the order given) before the later blocks. For interventions that differ per
        sequence, prompt included, such as RePS's factor drawn for each sequence."""
        sequences = [self.sequences[j] for j in sequence_indices]
        if self.cached is not None:
            rows = [self.cached[j].to(self.device, non_blocking=True) for j in sequence_indices]
        else:
            pairs = sorted({j // 2 for j in sequence_indices})
            found = dict(zip(_sides(pairs), pair_residuals(self.model, [self.encoded[i] for i in pairs], self.layer)))
            rows = [found[j] for j in sequence_indices]
        batch = make_batch(sequences, self.pad, self.device)
        logprobs = self._later_blocks(batch, intervene(torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)))
        return batch.sum_per_slot(logprobs)

    def _hooked_forward(self, part: list[int], vector: Tensor | None, d: float) -> tuple[TokenBatch, Tensor]:
        """The naive path, as the paper's trl-based code computes it: a full forward through the
        steering hook, log-softmax at every position, then the response tokens' log-probs."""
        batch = make_batch([self.sequences[j] for j in _sides(part)], self.pad, self.device)
        if vector is None:
            logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        else:
            with steer_tensors(self.model, [(self.layer, vector, d)]):
                logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        # float32 from the logits on: bf16/fp16 sums of ~30 log-probs near -100 round to 0.5 steps
        logprobs = logits.to(self.device).float().log_softmax(-1)[batch.target_rows, batch.target_positions]
        return batch, logprobs.gather(-1, batch.targets[:, None])[:, 0]

    def _split_forward(self, part: list[int], vector: Tensor | None, d: float) -> tuple[TokenBatch, Tensor]:
        """Residual at layer L (cached, or recomputed without grad) + d v, then only the later blocks."""
        sequences = [self.sequences[j] for j in _sides(part)]
        pairs = [self.encoded[i] for i in part]
        if self.cached is not None:  # the host tier's rows cross to the device here (no-op otherwise)
            resids = [self.cached[j].to(self.device, non_blocking=True) for j in _sides(part)]
        else:
            resids = pair_residuals(self.model, pairs, self.layer)
        if self.fast.share_prompt and packing_allowed(self.model, MAX_ROW_TOKENS):
            batch = make_packed_batch(pairs, self.pad, self.device, MAX_ROW_TOKENS, self.fast.bucket)
            segments = [torch.cat([rm[: len(m.ids)], rn[m.prompt_len :]])
                        for (m, _), rm, rn in zip(pairs, resids[0::2], resids[1::2])]
            rows = [torch.cat([segments[i] for i in members]) for members in batch.packing]
        else:
            batch, rows = make_batch(sequences, self.pad, self.device, self.fast.bucket), resids
        resid = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        resid = F.pad(resid, (0, 0, 0, batch.tokens.shape[1] - resid.shape[1]))  # to the bucket's length
        if vector is not None:
            resid = add_steering(resid, vector, d)
        return batch, self._later_blocks(batch, resid)

    def _later_blocks(self, batch: TokenBatch, resid: Float[Tensor, "row pos d_model"]) -> Float[Tensor, " n_targets"]:
        """Each response token's log-prob, from the (steered) layer-L residual through the blocks after L."""
        compiled = "graphs" if self.fast.graphs else "fused" if self.fast.compile else None
        hidden = run_from_layer(self.model, resid, self.layer, batch.attention_mask, batch.position_ids, compiled)
        if self.fast.response_logits_only:
            logits = unembed(self.model, hidden[batch.target_rows, batch.target_positions])
        else:
            logits = unembed(self.model, hidden)[batch.target_rows, batch.target_positions]
        return logits.float().log_softmax(-1).gather(-1, batch.targets[:, None])[:, 0]


def _sides(pair_indices: list[int]) -> list[int]:
    """Sequence indices of the pairs, matching then not-matching: 2i, 2i+1."""
    return [2 * i + side for i in pair_indices for side in (0, 1)]
