"""Baselines from activation differences: CAA (BiPO's baseline) and repeng-style PCA.

Positions: by default, for each sequence, the residual at ``blocks.{L}.hook_resid_post`` is averaged
over the response tokens (the prompt is identical on both sides, so it would only cancel);
``positions="answer_token"`` reads it where the two responses first differ instead (the answer
letter of A/B pairs, as Rimsky et al.'s CAA does). The vector is the mean over pairs of
(matching - not_matching). :func:`train_pca` reads the same
per-pair differences differently (their first principal component), as repeng's ``pca_diff`` does.
"""

from __future__ import annotations

import torch

from bipo_lens.errors import BipoLensError
from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.activations import response_deltas
from bipo_lens.tokens import encode_pairs
from bipo_lens.vectors import SteeringVector


def train_caa(model, pairs: list[PreferencePair], layer: int, max_response_tokens: int | None = 64,
              response_format: str = "eot", positions: str = "response_mean") -> SteeringVector:
    check_layer(model, layer)
    encoded = encode_pairs(model, pairs, max_response_tokens, response_format=response_format)
    vector = response_deltas(model, encoded, layer, positions).mean(dim=0)
    return SteeringVector(
        vector=vector.float().cpu(),
        layer=layer,
        model_id=info(model).model_id,
        method="caa",
        hyperparameters={"positions": positions, "max_response_tokens": max_response_tokens,
                         "response_format": response_format, "pairs": len(pairs)},
        data_fingerprint=fingerprint(pairs),
    )


def train_pca(model, pairs: list[PreferencePair], layer: int, max_response_tokens: int | None = 64,
              response_format: str = "eot", positions: str = "response_mean") -> SteeringVector:
    """repeng's ``pca_diff``: the first principal component of the per-pair differences (centred, as
    scikit-learn's PCA centres them), signed so that most pairs' matching response projects above its
    not-matching one (repeng's vote). repeng keeps it unit-length; here it is scaled by the mean
    projection of the differences onto it, which puts it on CAA's scale (CAA's own direction gets
    exactly CAA's norm that way), so the two compare at one multiplier."""
    check_layer(model, layer)
    if len(pairs) < 2:
        raise BipoLensError("PCA needs at least two pairs")
    encoded = encode_pairs(model, pairs, max_response_tokens, response_format=response_format)
    deltas = response_deltas(model, encoded, layer, positions).float().cpu()
    direction = torch.linalg.svd(deltas - deltas.mean(dim=0), full_matrices=False).Vh[0]
    projections = deltas @ direction
    if (projections > 0).float().mean() < 0.5:
        direction, projections = -direction, -projections
    return SteeringVector(
        vector=direction * projections.mean().abs(),
        layer=layer,
        model_id=info(model).model_id,
        method="pca",
        hyperparameters={"positions": positions, "components": "first, centred (repeng pca_diff)",
                         "max_response_tokens": max_response_tokens, "response_format": response_format,
                         "pairs": len(pairs)},
        data_fingerprint=fingerprint(pairs),
    )
