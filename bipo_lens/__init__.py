"""bipo-lens: train, apply, compare and study BiPO steering vectors on TransformerLens bridges."""

__version__ = "0.1.0"

from bipo_lens.errors import BipoLensError
from bipo_lens.models import DEFAULT_MODEL, build_prompt, load_model
from bipo_lens.pairs import PreferencePair, builtin_pair_sets, load_pairs, split_pairs
from bipo_lens.generation import Sampling, generate, generate_batch, generate_grid, generate_samples
from bipo_lens.steering import TokenStrategy, steer
from bipo_lens.vectors import SteeringVector

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
    "split_pairs",
    "steer",
]
