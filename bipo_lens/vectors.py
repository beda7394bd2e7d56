"""SteeringVector: a direction in one model's residual stream at one layer, plus its provenance.

Files are ``.safetensors`` with the metadata as JSON strings. The BiPO authors' formats are read
too: the model-card checkpoint ``{"v": tensor, "config": {"layer_idx": L, ...}}`` and bare tensors
in a ``.pt``; every ``torch.load`` uses ``weights_only=True``, so a file cannot run code.
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from bipo_lens.atomic import atomic_write
from bipo_lens.errors import BipoLensError


def _as_vector(tensor, path: Path) -> torch.Tensor:
    """A file's tensor as a float ``[d_model]`` vector (``[1, d_model]`` is accepted too)."""
    if not isinstance(tensor, torch.Tensor):
        raise BipoLensError(f"{path}: expected a tensor, found {type(tensor).__name__}")
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 1 or tensor.shape[0] == 0:
        raise BipoLensError(f"{path}: expected a vector of shape [d_model], found shape {list(tensor.shape)}")
    if not tensor.is_floating_point():
        raise BipoLensError(f"{path}: expected floating-point values, found {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        raise BipoLensError(f"{path}: the vector holds NaN or infinite values")
    return tensor.float()


def _canonical_safetensors(data: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata in hash-map
    order, which changes from process to process; sorted, equal vectors give byte-identical files
    (a file's SHA-256 then identifies the vector and its provenance). Offsets are relative to the
    data, so only the header changes; it stays padded to 8 bytes as the format asks."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


_WARNED: set[tuple[str, str]] = set()  # (vector's model, model applied to): warned once per process


@dataclass
class SteeringVector:
    vector: Float[torch.Tensor, " d_model"]
    layer: int
    model_id: str = "unknown"
    method: str = "unknown"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    history: list[dict[str, float | int]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # the run that made it (bipo_lens.records)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, torch.Tensor) or self.vector.ndim != 1:
            raise BipoLensError("a steering vector must be a 1-D tensor")
        if not self.vector.is_floating_point():
            raise BipoLensError(f"a steering vector must be floating point, got {self.vector.dtype}")
        if not torch.isfinite(self.vector).all():
            raise BipoLensError("the steering vector holds NaN or infinite values")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise BipoLensError(f"layer must be a non-negative integer, got {self.layer!r}")

    @property
    def d_model(self) -> int:
        return self.vector.shape[0]

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def metadata(self) -> dict[str, str]:
        from bipo_lens import __version__

        return {
            "model_id": self.model_id,
            "d_model": str(self.d_model),
            "layer": str(self.layer),
            "hook_name": self.hook_name,
            "method": self.method,
            "hyperparameters": json.dumps(self.hyperparameters),
            "data_fingerprint": self.data_fingerprint,
            "history": json.dumps(self.history),
            "record": json.dumps(self.record),
            "bipo_lens_version": __version__,
        }

    def check_compatible(self, model) -> None:
        """Clear errors for a vector that cannot be applied to ``model``."""
        from bipo_lens.models import info

        model_info = info(model)
        model_info.shape.check_vector(self.layer, self.d_model, self.model_id)
        if self.model_id not in ("unknown", model_info.model_id) and (self.model_id, model_info.model_id) not in _WARNED:
            # Same width, another model: it runs, but what it means there is a transfer question
            # (``bipo-lens transfer`` relabels a vector it moves on purpose, so this stays quiet).
            _WARNED.add((self.model_id, model_info.model_id))
            print(f"bipo-lens: warning: a vector trained on {self.model_id} is applied to {model_info.model_id}",
                  file=sys.stderr, flush=True)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write atomically; refuse to replace an existing file unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise BipoLensError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
        tensor = self.vector.detach().to("cpu", torch.float32).contiguous()
        if path.suffix == ".pt":
            payload = {"v": tensor, "config": {"layer_idx": self.layer, **self.metadata()}}
            atomic_write(path, lambda tmp: torch.save(payload, tmp))
        else:
            data = _canonical_safetensors(save({"vector": tensor}, metadata=self.metadata()))
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        return path

    @classmethod
    def load(cls, path: str | Path, layer: int | None = None) -> "SteeringVector":
        """Read ``.safetensors`` (ours) or ``.pt`` (BiPO checkpoint or bare tensor); GGUF control
        vectors: :func:`bipo_lens.interop.read_vector`.

        A bare tensor carries no layer: pass ``layer``.
        """
        path = Path(path)
        if not path.is_file():
            raise BipoLensError(f"vector file not found: {path}")
        if path.suffix == ".safetensors":
            return cls._load_safetensors(path)
        if path.suffix == ".gguf":
            raise BipoLensError(f"{path} is a GGUF control vector: read it with bipo_lens.interop.read_vector "
                                "(one direction) or import_gguf (all of them)")
        return cls._load_torch(path, layer)

    @classmethod
    def _load_safetensors(cls, path: Path) -> "SteeringVector":
        from safetensors import safe_open

        try:
            tensors = load_file(path)
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise BipoLensError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        except Exception as e:  # any other failure to parse a hostile file
            raise BipoLensError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None
        if set(tensors) != {"vector"}:
            raise BipoLensError(f"{path}: expected one tensor named 'vector', found {sorted(tensors)}")
        return cls.from_metadata(tensors["vector"], meta, path)

    @classmethod
    def from_metadata(cls, tensor: torch.Tensor, meta: dict[str, str], path: Path | str) -> "SteeringVector":
        """A vector from its tensor and the string metadata :meth:`metadata` wrote (any container:
        our safetensors files, or a GGUF control vector we exported)."""
        try:
            layer = int(meta["layer"])
            hyperparameters = json.loads(meta.get("hyperparameters", "{}"))
            history = json.loads(meta.get("history", "[]"))
            record = json.loads(meta.get("record", "{}"))
        except (KeyError, ValueError) as e:
            raise BipoLensError(f"{path}: missing or malformed metadata ({e})") from None
        if not isinstance(hyperparameters, dict) or not isinstance(history, list) or not isinstance(record, dict):
            raise BipoLensError(f"{path}: malformed metadata (hyperparameters or history)")
        vector = cls(
            vector=_as_vector(tensor, Path(path)),
            layer=layer,
            model_id=meta.get("model_id", "unknown"),
            method=meta.get("method", "unknown"),
            hyperparameters=hyperparameters,
            data_fingerprint=meta.get("data_fingerprint", ""),
            history=history,
            record=record,
        )
        if "d_model" in meta and meta["d_model"] != str(vector.d_model):
            raise BipoLensError(f"{path}: metadata says d_model {meta['d_model']} but the tensor has {vector.d_model}")
        return vector

    @classmethod
    def _load_torch(cls, path: Path, layer: int | None) -> "SteeringVector":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling refused"
            raise BipoLensError(f"{path}: refused to load: the file holds objects other than tensors ({first})") from None
        except Exception as e:  # torch's unpickler fails on junk with many types (IndexError, KeyError, ...)
            raise BipoLensError(f"{path}: not a readable PyTorch file ({type(e).__name__})") from None
        if isinstance(obj, torch.Tensor):
            if layer is None:
                raise BipoLensError(f"{path} holds a bare tensor with no layer: pass --layer")
            return cls(vector=_as_vector(obj, path), layer=layer, method="bipo")
        if isinstance(obj, dict) and "v" in obj:
            config = obj.get("config") or {}
            if not isinstance(config, dict):
                raise BipoLensError(f"{path}: 'config' must be a dict")
            found_layer = config.get("layer_idx", layer)
            if found_layer is None:
                raise BipoLensError(f"{path}: no layer_idx in config: pass --layer")
            try:
                found_layer = int(found_layer)
                hyperparameters = json.loads(config.get("hyperparameters", "{}"))
                history = json.loads(config.get("history", "[]"))  # ours write the same metadata as .safetensors
                record = json.loads(config.get("record", "{}"))
            except (TypeError, ValueError):
                raise BipoLensError(f"{path}: malformed config") from None
            return cls(
                vector=_as_vector(obj["v"], path),
                layer=found_layer,
                model_id=str(config.get("model_id", config.get("model_name", "unknown"))),
                method=str(config.get("method", "bipo")),
                hyperparameters=hyperparameters if isinstance(hyperparameters, dict) else {},
                data_fingerprint=str(config.get("data_fingerprint", "")),
                history=history if isinstance(history, list) else [],
                record=record if isinstance(record, dict) else {},
            )
        raise BipoLensError(f"{path}: expected a tensor or a dict with 'v', found {type(obj).__name__}")

    def card(self, name: str = "vector", evaluation: dict | None = None) -> str:
        """A Markdown card: what the vector is, how it was made, from what, and (given an ``eval``
        report) how well it steers; written beside the file by ``bipo-lens info --card``."""
        h, record = self.hyperparameters, self.record
        last = self.history[-1] if self.history else {}
        rows = [
            ("model", self.model_id), ("layer", f"{self.layer} (`{self.hook_name}`; llama.cpp `direction.{self.layer}`)"),
            ("d_model", self.d_model), ("method", self.method), ("loss", h.get("loss", "-")),
            ("norm", f"{self.norm:.4f}"), ("pairs used", h.get("pairs", "-")),
            ("epochs", len(self.history) or h.get("epochs", "-")),
            ("final loss", f"{last['loss']:.4f}" if "loss" in last else "-"),
            ("training time", f"{record['wall_seconds']} s" if record.get("wall_seconds") is not None else "-"),
            ("data fingerprint", self.data_fingerprint or "-"),
        ]
        for item in record.get("data", []):
            rows.append(("data file", f"`{item.get('path', item.get('builtin'))}` sha256 {item.get('sha256', '-')}"))
        if record:
            rows += [("command", f"`{record.get('command')}`"), ("commit", (record.get("git") or {}).get("commit") or "-"),
                     ("device", f"{(record.get('device') or {}).get('name')}, {(record.get('device') or {}).get('dtype')}")]
        lines = [f"# Steering vector card: {name}", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        lines += ["", "Hyper-parameters:", "", "```json", json.dumps(h, indent=2, sort_keys=True), "```"]
        if evaluation is not None:
            summary = evaluation.get("summary", {})
            lines += ["", "Efficacy (`bipo-lens eval`; slope and range against the multiplier, Spearman rho):", "",
                      "| vector | metric | slope | range | spearman |", "| --- | --- | ---: | ---: | ---: |"]
            for vector_name, metrics in summary.items():
                for metric, m in metrics.items():
                    lines.append(f"| {vector_name} | {metric} | {m['slope']:+.3f} | {m['range']:+.3f} | {m['spearman']:+.2f} |")
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        lines = [
            f"method:        {self.method}",
            f"model:         {self.model_id}",
            f"layer:         {self.layer} ({self.hook_name})",
            f"d_model:       {self.d_model}",
            f"norm:          {self.norm:.4f}",
            f"loss:          {self.hyperparameters.get('loss', '-')}",
            f"pairs used:    {self.hyperparameters.get('pairs', '-')}",
            f"data:          {self.data_fingerprint or '-'}",
            f"hyperparams:   {json.dumps(self.hyperparameters)}",
        ]
        if self.record:
            from bipo_lens.records import describe

            lines.append(f"recorded:      {self.record.get('command')} ({self.record.get('wall_seconds')} s; "
                         f"{describe(self.record)})")
        for item in self.record.get("data", []):
            lines.append(f"data file:     {item.get('path', item.get('builtin'))} (sha256 {item.get('sha256', '-')})")
        if self.history:
            last = self.history[-1]
            lines.append(f"epochs:        {len(self.history)} (last: {json.dumps(last)})")
        return "\n".join(lines)
