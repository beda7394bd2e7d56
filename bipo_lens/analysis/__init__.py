"""Studies of steering vectors: similarity, layer choice, cross-model transfer, composition,
every behaviour.

Each analysis is a function that returns results as plain data (dicts and lists, JSON-ready);
``bipo_lens.plots`` draws them and ``bipo_lens.figures`` runs them all.
"""

from bipo_lens.analysis.behaviours import BehaviourConfig, study_behaviour
from bipo_lens.analysis.composition import compose
from bipo_lens.analysis.layers import SweepConfig, recommend_layer, sweep_layers
from bipo_lens.analysis.similarity import cosine, logit_lens, similarity_rows
from bipo_lens.analysis.transfer import (
    LinearMap,
    corresponding_layer,
    fit_linear_map,
    paired_activations,
    retained_efficacy,
    transfer_vector,
)

__all__ = [
    "BehaviourConfig",
    "LinearMap",
    "SweepConfig",
    "compose",
    "corresponding_layer",
    "cosine",
    "fit_linear_map",
    "logit_lens",
    "paired_activations",
    "recommend_layer",
    "retained_efficacy",
    "similarity_rows",
    "study_behaviour",
    "sweep_layers",
    "transfer_vector",
]
