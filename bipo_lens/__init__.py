"""bipo-lens: train, apply, compare and study BiPO steering vectors on TransformerLens bridges."""

__version__ = "0.1.0"

from bipo_lens.errors import BipoLensError

# The public names, imported on first use (PEP 562): ``bipo-lens --help`` and a bad flag answer
# without importing torch and transformers, which take seconds.
_LAZY = {
    "DEFAULT_MODEL": "bipo_lens.models", "build_prompt": "bipo_lens.models", "load_model": "bipo_lens.models",
    "PreferencePair": "bipo_lens.pairs", "builtin_pair_sets": "bipo_lens.pairs", "load_pairs": "bipo_lens.pairs",
    "split_pairs": "bipo_lens.pairs", "Sampling": "bipo_lens.generation", "generate": "bipo_lens.generation",
    "generate_batch": "bipo_lens.generation", "generate_grid": "bipo_lens.generation",
    "generate_samples": "bipo_lens.generation", "score_tokens": "bipo_lens.generation", "TokenStrategy": "bipo_lens.steering", "steer": "bipo_lens.steering",
    "SteeringVector": "bipo_lens.vectors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bipo_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BipoLensError",
    "DEFAULT_MODEL",
    "PreferencePair",
    "SteeringVector",
    "TokenStrategy",
    "build_prompt",
    "builtin_pair_sets",
    "Sampling",
    "generate",
    "generate_batch",
    "generate_grid",
    "generate_samples",
    "load_model",
    "load_pairs",
    "score_tokens",
    "split_pairs",
    "steer",
]
