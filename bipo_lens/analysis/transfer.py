"""Apply a vector trained on one model to another.

Same ``d_model`` (a sibling such as the weight-quantised ``smollm2-135m-instruct@int4`` that
``load_model`` makes): the vector is used as it is. Different
``d_model``: a linear map between the two residual spaces is learned from activations of both
models on the same texts, and the vector is mapped through it.

The two tokenisers cut a text differently, so activations are paired per text, not per token:
each text gives two samples, the mean residual over its tokens (the first excluded: it carries the
attention-sink outliers) and the residual at its last token.

Two maps, both fitted on centred activations (a steering vector is a difference of activations, so
only the linear part of an affine map applies to it):

- ``lstsq`` (default): ridge least squares, ``W = argmin |X_s W - X_t|^2 + ridge * |X_s|_F^2/d_s |W|^2``.
  It predicts the target activation best, rescales per direction (the two models' residual norms
  differ by orders of magnitude), and is what the retained-efficacy numbers favour here. The ridge
  is chosen by cross-validation over whole texts among the fitting rows (:data:`RIDGES`), as
  scikit-learn's ``RidgeCV`` would: the fixed 1e-2 used before overfitted (held-out R^2 0.784 on
  the 288 built-in texts where 0.1-1 reach 0.855-0.859; 0.708 against 0.780 on the figures' 704).
- ``procrustes``: scaled orthogonal Procrustes, ``W = s U V^T`` from the SVD ``X_s^T X_t = U S V^T``
  (semi-orthogonal when the widths differ). It keeps angles, so it cannot invent structure from
  few samples, but it forces one global scale on spaces whose directions are scaled very differently.
  Only the singular directions the fitting rows determine are kept (``U`` and ``V`` cut at the
  numerical rank of ``S``): with fewer rows than the source width, the rest of an SVD's bases is
  an arbitrary completion, which rotated a vector's unseen part to a different place for every
  resample of the texts (bootstrap maps on 50-100 texts moved one vector to cosine 0.14-0.41 of
  itself; cut, 0.58-0.73). Cut, that part maps to zero, as it does through ridge ``lstsq``.

Efficacy is the margin range (mean held-out margin at ``+m`` minus at ``-m``); retained efficacy is
the transferred vector's range on the target divided by a natively trained vector's range there.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

import torch
from jaxtyping import Float
from torch import Tensor

from bipo_lens.analysis.claims import scaled
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation.evaluate import MarginScorer
from bipo_lens.evaluation.intervals import crossed_ratio_ci
from bipo_lens.models import check_layer, info, run_to_layer
from bipo_lens.pairs import PreferencePair
from bipo_lens.activations import device_of
from bipo_lens.vectors import SteeringVector

METHODS = ("lstsq", "procrustes")
RIDGES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # the lstsq ridges cross-validation chooses among
FOLDS = 5


def corresponding_layer(layer: int, source_layers: int, target_layers: int) -> int:
    """The target layer at the same relative depth."""
    return round(layer / max(1, source_layers - 1) * (target_layers - 1))


def pair_texts(pairs: list[PreferencePair]) -> list[str]:
    """Plain texts both models can read: each question followed by each of its responses."""
    return [f"{p.question}\n{response}" for p in pairs for response in (p.matching, p.not_matching)]


@torch.no_grad()
def paired_activations(model, texts: list[str], layer: int, max_tokens: int = 128,
                       batch_size: int = 16) -> Float[Tensor, "samples d_model"]:
    """Two rows per text (mean over tokens after the first, then the last token's residual) at
    ``blocks.{layer}.hook_resid_post``; rows of two models on the same texts correspond."""
    check_layer(model, layer)
    rows = []
    pad = model.tokenizer.pad_token_id or 0
    for start in range(0, len(texts), batch_size):
        ids = [model.tokenizer(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts[start:start + batch_size]]
        if any(len(i) < 2 for i in ids):
            raise BipoLensError("a text for the activation map is shorter than two tokens")
        width = max(map(len, ids))
        tokens = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=device_of(model))
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=device_of(model))
        resid = run_to_layer(model, tokens, layer, mask).float()
        for row, i in enumerate(ids):
            rows += [resid[row, 1 : len(i)].mean(0), resid[row, len(i) - 1]]
    return torch.stack(rows).cpu()


@dataclass
class LinearMap:
    """``target ≈ (source - source_mean) @ weight + target_mean``; vectors map as ``v @ weight``."""

    weight: Float[Tensor, "d_source d_target"]
    source_mean: Float[Tensor, " d_source"]
    target_mean: Float[Tensor, " d_target"]
    method: str
    r2_train: float
    r2_test: float  # on held-out texts: how much of the target's variance the map explains
    seen: Float[Tensor, "d_source rank"]  # an orthonormal basis of what the fitting rows span (centred)
    ridge: float | None = None  # lstsq's ridge strength, as given or as cross-validation chose it

    @property
    def rank(self) -> int:
        """Source directions the fitting rows span: a vector's part outside them maps to (nearly) zero."""
        return self.seen.shape[1]

    def unseen_share(self, vector: Float[Tensor, " d_source"]) -> float:
        """The share of ``vector``'s squared norm outside the span of the fitting rows, which no fit
        could say where to send: 0 where the texts span every direction."""
        v = vector.float()
        return max(0.0, 1.0 - float((self.seen.T @ v).pow(2).sum() / v.pow(2).sum()))

    def __call__(self, x: Float[Tensor, "... d_source"]) -> Float[Tensor, "... d_target"]:
        return (x - self.source_mean) @ self.weight + self.target_mean


def _fit(xs: Tensor, xt: Tensor, method: str, ridge: float | None) -> Tensor:
    if method == "lstsq":
        penalty = ridge * xs.pow(2).sum() / xs.shape[1]
        gram = xs.T @ xs + penalty * torch.eye(xs.shape[1], dtype=xs.dtype)
        return torch.linalg.solve(gram, xs.T @ xt)
    u, s, vh = torch.linalg.svd(xs.T @ xt, full_matrices=False)
    seen = s > s[0] * max(xs.shape[1], xt.shape[1]) * torch.finfo(s.dtype).eps  # numpy's matrix_rank tolerance
    return (s.sum() / xs.pow(2).sum()) * (u[:, seen] @ vh[seen])


def _r2(prediction: Tensor, truth: Tensor) -> float:
    return float(1 - (truth - prediction).pow(2).sum() / (truth - truth.mean(0)).pow(2).sum())


def _choose_ridge(xs: Tensor, xt: Tensor, texts: Tensor, seed: int) -> float:
    """The ridge of :data:`RIDGES` with the least squared error on held-out folds of the fitting
    rows. ``texts[i]`` is row ``i``'s text: a text's rows (and a bootstrap's repeats of it) stay in
    one fold, so no fold is scored on a text it was fitted on. Each fold is centred on its own
    fitting part, as the map is."""
    distinct = texts.unique()
    folds = min(FOLDS, len(distinct))
    if folds < 2:
        raise BipoLensError("choosing the ridge by cross-validation needs at least two fitting texts: give a ridge")
    order = distinct[torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))]
    fold_of = torch.empty(int(texts.max()) + 1, dtype=torch.long)
    fold_of[order] = torch.arange(len(order)) % folds
    errors = torch.zeros(len(RIDGES), dtype=xs.dtype)
    for fold in range(folds):
        held = fold_of[texts] == fold
        fit_s, fit_t = xs[~held], xt[~held]
        ms, mt = fit_s.mean(0), fit_t.mean(0)
        for k, ridge in enumerate(RIDGES):
            w = _fit(fit_s - ms, fit_t - mt, "lstsq", ridge)
            errors[k] += ((xs[held] - ms) @ w + mt - xt[held]).pow(2).sum()
    return RIDGES[int(errors.argmin())]


def fit_linear_map(source: Float[Tensor, "n d_source"], target: Float[Tensor, "n d_target"], method: str = "lstsq",
                   ridge: float | None = None, test_fraction: float = 0.2, seed: int = 0,
                   bootstrap: bool = False) -> LinearMap:
    """Fit on a seeded ``1 - test_fraction`` of the rows (whole texts: rows come in pairs) and report
    R^2 on the rest; the returned map is refitted on all rows with the same ridge.

    ``ridge`` (``lstsq`` only): None chooses it by cross-validation on the fitting rows alone
    (:func:`_choose_ridge`), so the held-out R^2 stays a fair estimate.

    ``bootstrap``: fit on a seeded resample of the texts drawn with replacement instead, report R^2
    on the texts it left out, and return that fit, not a refit. One such map per training seed lets
    an interval over seeds cover the map's own noise as well (a map is fitted on a few hundred texts)."""
    if method not in METHODS:
        raise BipoLensError(f"unknown map {method!r}: use {' or '.join(METHODS)}")
    if source.shape[0] != target.shape[0]:
        raise BipoLensError(f"{source.shape[0]} source rows but {target.shape[0]} target rows")
    xs, xt = source.double(), target.double()
    n_texts, generator = xs.shape[0] // 2, torch.Generator().manual_seed(seed)
    if bootstrap:
        fit_texts = torch.randint(n_texts, (n_texts,), generator=generator)
        left_out = torch.ones(n_texts, dtype=torch.bool)
        left_out[fit_texts] = False
        test_texts = left_out.nonzero().flatten()
    else:
        texts = torch.randperm(n_texts, generator=generator)
        n_test = int(n_texts * test_fraction)
        fit_texts, test_texts = texts[n_test:], texts[:n_test]
    rows = lambda texts: torch.cat([2 * texts, 2 * texts + 1])  # noqa: E731  (a text's two rows)
    train, test = rows(fit_texts), rows(test_texts)
    if method != "lstsq":
        ridge = None
    elif ridge is None:
        ridge = _choose_ridge(xs[train], xt[train], train // 2, seed)
    elif not ridge > 0:
        raise BipoLensError(f"the ridge must be a positive number, not {ridge}")
    ms, mt = xs[train].mean(0), xt[train].mean(0)
    w = _fit(xs[train] - ms, xt[train] - mt, method, ridge)
    r2_train = _r2((xs[train] - ms) @ w + mt, xt[train])
    r2_test = _r2((xs[test] - ms) @ w + mt, xt[test]) if len(test_texts) else float("nan")
    if not bootstrap:
        train = torch.arange(xs.shape[0])  # refitted on all rows
        ms, mt = xs.mean(0), xt.mean(0)
        w = _fit(xs - ms, xt - mt, method, ridge)
    directions, sizes, _ = torch.linalg.svd((xs[train] - ms).T, full_matrices=False)
    rank = int((sizes > sizes[0] * max(len(train), xs.shape[1]) * torch.finfo(sizes.dtype).eps).sum())  # matrix_rank's
    return LinearMap(w.float(), ms.float(), mt.float(), method, r2_train, r2_test, directions[:, :rank].float(), ridge)


def transfer_vector(vector: SteeringVector, target_model, target_layer: int | None = None,
                    linear_map: LinearMap | None = None) -> SteeringVector:
    """The vector for ``target_model``: as it is where the widths match and no map is given, else
    mapped through ``linear_map``. Its metadata records where it came from."""
    target = info(target_model)
    layer = vector.layer if target_layer is None else target_layer
    check_layer(target_model, layer)
    if linear_map is None:
        if vector.d_model != target.d_model:
            raise BipoLensError(f"the vector has d_model {vector.d_model} but {target.model_id} has {target.d_model}: "
                                f"fit a linear map between the two residual spaces")
        mapped, how = vector.vector.clone(), "direct"
    else:
        if linear_map.weight.shape != (vector.d_model, target.d_model):
            raise BipoLensError(f"the map is {tuple(linear_map.weight.shape)}, the vector has d_model {vector.d_model} "
                                f"and the target {target.d_model}")
        mapped, how = vector.vector.float() @ linear_map.weight, linear_map.method
    ridge = {} if linear_map is None or linear_map.ridge is None else {"transfer_ridge": linear_map.ridge}
    return SteeringVector(
        vector=mapped, layer=layer, model_id=target.model_id, method=vector.method,
        hyperparameters={**vector.hyperparameters, "transferred_from": vector.model_id,
                         "source_layer": vector.layer, "transfer": how, **ridge},
        data_fingerprint=vector.data_fingerprint,
    )


def retained_efficacy(target_model, transferred: SteeringVector | list[SteeringVector],
                      native: SteeringVector | list[SteeringVector], test_pairs: list[PreferencePair],
                      multiplier: float = 1.0, scorer: MarginScorer | None = None) -> dict:
    """Margin ranges on the target of the transferred and the native vector, and their ratio with
    its 95% interval (``retained_ci``) over the held-out pairs.

    ``transferred`` may be a list, one vector per training seed, with ``native`` one vector or a list
    beside it (``native[k]`` for ``transferred[k]``): ranges, norms and cosines are then means over
    the seeds and the interval resamples pairs and seeds.

    Steering strength grows with a vector's norm, so a transferred vector longer than the native
    one can retain more than 1 by its length alone (a map between residual spaces of different
    scales can change the norm tenfold, as it does between SmolLM2 and Gemma): ``retained_at_native_norm`` (with ``_ci``) is the same ratio
    with each transferred vector rescaled to its native vector's norm, which asks whether the
    direction carried over. The norms are reported beside both."""
    moved = transferred if isinstance(transferred, list) else [transferred]
    natives = native if isinstance(native, list) else [native] * len(moved)
    if len(natives) != len(moved):
        raise BipoLensError(f"{len(moved)} transferred vectors but {len(natives)} native ones: give one, or one per seed")
    scorer = scorer or MarginScorer(target_model, test_pairs)
    above = [scorer.pair_ranges(v, multiplier).tolist() for v in moved]
    below = [scorer.pair_ranges(v, multiplier).tolist() for v in natives]
    at_native = [scorer.pair_ranges(scaled(v, n.norm), multiplier).tolist() for v, n in zip(moved, natives)]
    moved_range, native_range = fmean(x for r in above for x in r), fmean(x for r in below for x in r)
    at_native_range = fmean(x for r in at_native for x in r)
    ci = crossed_ratio_ci(above, below)  # over the held-out pairs (and seeds)
    ci_at_native = crossed_ratio_ci(at_native, below)
    return {"transferred_range": moved_range, "native_range": native_range,
            "retained": moved_range / native_range if native_range else float("nan"),
            "retained_ci": list(ci) if ci else None, "seeds": len(moved),
            "multiplier": float(multiplier), "pairs": len(test_pairs),
            "transferred_range_at_native_norm": at_native_range,
            "retained_at_native_norm": at_native_range / native_range if native_range else float("nan"),
            "retained_at_native_norm_ci": list(ci_at_native) if ci_at_native else None,
            "transferred_norm": fmean(v.norm for v in moved), "native_norm": fmean(v.norm for v in natives),
            "cosine_to_native": fmean(float(torch.nn.functional.cosine_similarity(
                a.vector.float(), b.vector.float(), dim=0)) for a, b in zip(moved, natives))}
