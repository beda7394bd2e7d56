"""CAA (contrastive activation addition): the mean activation difference, BiPO's baseline.

Positions averaged: for each sequence, the residual at ``blocks.{L}.hook_resid_post`` is averaged
over the response tokens (the prompt is identical on both sides, so it would only cancel); the
vector is the mean over pairs of (matching - not_matching).
"""

from __future__ import annotations

from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.activations import response_deltas
from bipo_lens.tokens import encode_pairs
from bipo_lens.vectors import SteeringVector


def train_caa(model, pairs: list[PreferencePair], layer: int, max_response_tokens: int | None = 64,
              response_format: str = "eot") -> SteeringVector:
    check_layer(model, layer)
    encoded = encode_pairs(model, pairs, max_response_tokens, response_format=response_format)
    vector = response_deltas(model, encoded, layer).mean(dim=0)
    return SteeringVector(
        vector=vector.float().cpu(),
        layer=layer,
        model_id=info(model).model_id,
        method="caa",
        hyperparameters={"positions": "response_mean", "max_response_tokens": max_response_tokens,
                         "response_format": response_format, "pairs": len(pairs)},
        data_fingerprint=fingerprint(pairs),
    )
