"""How alike are BiPO and CAA vectors, and what does a vector say in the vocabulary?"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from bipo_lens.models import unembed
from bipo_lens.activations import device_of
from bipo_lens.vectors import SteeringVector


def cosine(a: SteeringVector | Tensor, b: SteeringVector | Tensor) -> float:
    """Cosine similarity of two vectors (NaN if either is zero)."""
    x = (a.vector if isinstance(a, SteeringVector) else a).double()
    y = (b.vector if isinstance(b, SteeringVector) else b).double()
    denominator = x.norm() * y.norm()
    return float(x @ y / denominator) if denominator > 0 else float("nan")


def similarity_rows(vectors: dict[str, dict[int, dict[str, SteeringVector]]]) -> list[dict]:
    """``vectors[behaviour][layer][method]`` -> one row per behaviour and layer with both methods:
    the BiPO-CAA cosine and both norms."""
    rows = []
    for behaviour, by_layer in vectors.items():
        for layer, by_method in sorted(by_layer.items()):
            if {"bipo", "caa"} <= by_method.keys():
                bipo, caa = by_method["bipo"], by_method["caa"]
                rows.append({"behaviour": behaviour, "layer": layer, "cosine": cosine(bipo, caa),
                             "bipo_norm": bipo.norm, "caa_norm": caa.norm})
    return rows


@torch.no_grad()
def direction_logits(model, vector: SteeringVector) -> Float[Tensor, " d_vocab"]:
    """The vector read through the final norm and the unembedding, centred over the vocabulary.

    This is the logit lens applied to a direction: what the vector would promote if it reached the
    output unchanged. RMS-type final norms only rescale a single vector before their gain, so the
    ranking does not depend on the vector's norm.
    """
    vector.check_compatible(model)
    final_norm = model.lens_raw.model.norm
    direction = vector.vector.to(device_of(model), next(final_norm.parameters()).dtype)
    logits = unembed(model, final_norm(direction[None, None]))[0, 0].float().cpu()
    return logits - logits.mean()


def logit_lens(model, vector: SteeringVector, k: int = 10) -> dict[str, list[tuple[str, float]]]:
    """The ``k`` tokens the vector promotes most and suppresses most: ``{"promoted": [(token, logit)],
    "suppressed": [...]}``."""
    logits = direction_logits(model, vector)
    decode = lambda ids: [model.tokenizer.decode([i]) for i in ids]  # noqa: E731
    top, bottom = logits.topk(k), (-logits).topk(k)
    return {
        "promoted": list(zip(decode(top.indices.tolist()), [round(v, 3) for v in top.values.tolist()])),
        "suppressed": list(zip(decode(bottom.indices.tolist()), [round(-v, 3) for v in bottom.values.tolist()])),
    }
