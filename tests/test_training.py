import math

import pytest
import torch

from bipo_lens import PreferencePair, load_pairs, split_pairs
from bipo_lens.errors import BipoLensError
from bipo_lens.activations import first_divergence, response_deltas
from bipo_lens.evaluation import MarginScorer
from bipo_lens.steering import null_out
from bipo_lens.training import FastPath, train_bipo, train_caa, train_pca, train_reps
from bipo_lens.training.reps import STEERING_FACTORS, RepsConfig, reps_objective
from bipo_lens.training.bipo import BipoConfig, bipo_objective, cosine_with_warmup
from bipo_lens.tokens import encode_pairs


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_fast_and_naive_paths_give_the_same_vector(model):
    pairs = load_pairs("power_seeking")[:8]
    kwargs = dict(epochs=1, lr=5e-3, batch_size=4, progress=False, seed=1)
    fast = train_bipo(model, pairs, 15, fast=FastPath(), **kwargs)
    naive = train_bipo(model, pairs, 15, fast=FastPath.naive(), **kwargs)
    no_cache = train_bipo(model, pairs, 15, fast=FastPath(prefix_cache=False), **kwargs)
    assert fast.norm > 0.05
    assert cosine(fast.vector, naive.vector) >= 0.999
    assert cosine(fast.vector, no_cache.vector) >= 0.999


def test_same_seed_is_bit_identical(model):
    pairs = load_pairs("optimism")[:4]
    a = train_bipo(model, pairs, 10, epochs=1, lr=5e-3, progress=False, seed=7)
    b = train_bipo(model, pairs, 10, epochs=1, lr=5e-3, progress=False, seed=7)
    assert torch.equal(a.vector, b.vector)
    assert [(r["loss"], r["norm"]) for r in a.history] == [(r["loss"], r["norm"]) for r in b.history]


def test_training_learns_the_behaviour(model):
    """Held-out reward accuracy under +v rises above chance and the loss falls."""
    train, test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    v = train_bipo(model, train[:16], 15, test_pairs=test, epochs=4, lr=5e-3, max_response_tokens=32, progress=False)
    assert v.history[-1]["loss"] < v.history[0]["loss"] < 0.6932
    assert v.history[-1]["reward_accuracy"] >= 0.75
    assert v.method == "bipo" and v.hyperparameters["beta"] == 0.1 and len(v.history) == 4


def test_the_objective_and_the_optimiser_are_the_paper_s(model):
    """Algorithm 1's loss, number for number: -log sigmoid(d * beta * (ratio_T - ratio_O)); the paper's
    defaults; AdamW's weight decay reaches the vector (decoupled: it shrinks v, whatever the gradient)."""
    ratios = torch.tensor([[0.5, -1.5], [-1.0, 1.0]])  # log pi(r | A + dv) / pi(r | A): matching, not
    def softplus(x: float) -> float:  # -log sigmoid(x)
        return math.log1p(math.exp(-x))

    assert bipo_objective(ratios, 1.0, 0.1).tolist() == pytest.approx([softplus(0.2), softplus(-0.2)])
    assert bipo_objective(ratios, -1.0, 0.5).tolist() == pytest.approx([softplus(-1.0), softplus(1.0)])
    paper = BipoConfig(layer=15)
    assert (paper.beta, paper.lr, paper.batch_size, paper.weight_decay, paper.warmup_steps) == (0.1, 5e-4, 4, 0.05, 100)
    pairs = load_pairs("power_seeking")[:4]
    kwargs = dict(epochs=3, lr=5e-2, warmup_steps=0, max_response_tokens=12, progress=False)
    plain = train_bipo(model, pairs, 15, weight_decay=0.0, **kwargs)
    decayed = train_bipo(model, pairs, 15, weight_decay=2.0, **kwargs)  # v *= 1 - 0.05 * 2 at each step
    assert decayed.norm < 0.97 * plain.norm and cosine(decayed.vector, plain.vector) > 0.9, (decayed.norm, plain.norm)


def test_early_stopping_keeps_the_best_epoch_and_resumes_to_it(model, tmp_path):
    """With ``patience``, training stops once the held-out BiPO loss has not fallen for that many
    epochs and returns the vector of the epoch where it was lowest, not the last one; the checkpoint
    of a stopped run resumes to that same vector, and never another run's."""
    train, test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    kwargs = dict(test_pairs=test[:6], epochs=10, lr=0.2, patience=2, warmup_steps=0, max_response_tokens=8,
                  progress=False)
    v = train_bipo(model, train[:8], 15, checkpoint_dir=tmp_path, **kwargs)
    losses = [r["held_out_loss"] for r in v.history]
    best = v.hyperparameters["best_epoch"]
    assert len(losses) == v.hyperparameters["epochs_run"] < 10, losses  # it stopped
    assert best == losses.index(min(losses)) + 1 and len(losses) - best == 2
    assert v.norm == pytest.approx(v.history[best - 1]["norm"]) and v.norm != pytest.approx(v.history[-1]["norm"])
    again = train_bipo(model, train[:8], 15, checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert torch.equal(again.vector, v.vector) and again.history == v.history
    # A checkpoint resumes only its own run, and only when asked: each is one line, the file kept as it was.
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(BipoLensError, match=r"belongs to another run \(differs in: lr\)"):
        train_bipo(model, train[:8], 15, checkpoint_dir=tmp_path, resume=True, **{**kwargs, "lr": 0.1})
    with pytest.raises(BipoLensError, match=r"belongs to another run \(differs in: data\)"):
        train_bipo(model, train[:7], 15, checkpoint_dir=tmp_path, resume=True, **kwargs)
    with pytest.raises(BipoLensError, match="holds a checkpoint of this run: pass --resume"):
        train_bipo(model, train[:8], 15, checkpoint_dir=tmp_path, **kwargs)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    with pytest.raises(BipoLensError, match="held-out pairs"):
        train_bipo(model, train[:8], 15, epochs=2, patience=2, progress=False)


def test_caa_is_the_mean_response_activation_difference(model):
    """Checked against the bridge's own hook, one unpadded sequence at a time."""
    pairs = load_pairs("formality")[:6]
    v = train_caa(model, pairs, 9)
    seqs = [s for pair in encode_pairs(model, pairs) for s in pair]
    means = []
    with torch.no_grad():
        for s in seqs:
            _, cache = model.run_with_cache(torch.tensor([s.ids]), names_filter="blocks.9.hook_resid_post")
            means.append(cache["blocks.9.hook_resid_post"][0, s.prompt_len:].mean(0))
    means = torch.stack(means)
    assert torch.allclose(v.vector, (means[0::2] - means[1::2]).mean(0), atol=1e-4)


def test_caa_on_the_answer_token_reads_the_answer_letter(model):
    """Rimsky et al.'s CAA: the activation at the A/B letter, checked against the bridge's own hook at
    the token that decodes to the letter; on free text, where the answers part ways."""
    questions = ["Would you take control of the lab?", "Should you have more resources?", "Do you want to be shut down?"]
    ab = [PreferencePair(f"{q}\n\nChoices:\n(A) Yes.\n(B) No.", f"({x})", f"({y})")
          for q, (x, y) in zip(questions, ["AB", "BA", "BA"])]
    v = train_caa(model, ab, 9, positions="answer_token")
    diffs = []
    with torch.no_grad():
        for pair in encode_pairs(model, ab):
            acts = []
            for s in pair:
                at = next(i for i in range(s.prompt_len, len(s.ids)) if model.tokenizer.decode([s.ids[i]]).strip() in "AB")
                _, cache = model.run_with_cache(torch.tensor([s.ids]), names_filter="blocks.9.hook_resid_post")
                acts.append(cache["blocks.9.hook_resid_post"][0, at])
            diffs.append(acts[0] - acts[1])
    assert torch.allclose(v.vector, torch.stack(diffs).mean(0), atol=1e-4)
    assert v.hyperparameters["positions"] == "answer_token"
    assert cosine(v.vector, train_caa(model, ab, 9).vector) < 0.99  # not the response mean
    free = load_pairs("formality")[:4]
    diverging = [(m, n) for m, n in encode_pairs(model, free) if m.ids[m.prompt_len] != n.ids[n.prompt_len]]
    assert diverging and all(first_divergence(m, n) == m.prompt_len for m, n in diverging)


def test_pca_baseline_is_the_first_component_of_the_differences_and_steers(model):
    """repeng's pca_diff: the centred differences' first principal component (checked against an
    eigendecomposition of their scatter matrix), signed by the majority of pairs, on CAA's scale; it moves held-out margins."""
    train, test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    pca, caa = train_pca(model, train[:24], 15), train_caa(model, train[:24], 15)
    deltas = response_deltas(model, encode_pairs(model, train[:24]), 15).float()
    direction = pca.vector / pca.norm
    centred = (deltas - deltas.mean(dim=0)).double()
    top = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]  # the scatter matrix's top eigenvector
    assert abs(cosine(direction.double(), top)) > 0.9999
    projections = deltas @ direction
    assert (projections > 0).float().mean() > 0.5 and pca.norm == pytest.approx(float(projections.mean()), rel=1e-4)
    assert pca.method == "pca" and 0 < cosine(pca.vector, caa.vector) < 0.999  # related to CAA, not CAA
    assert MarginScorer(model, test[:8]).margin_range(pca) > 0


def test_reps_trains_with_the_authors_settings_and_steers(model):
    """RePS as the authors train it: their defaults, v and b both trained, the loss falls, the saved
    vector is (mean factor + b) v, and it moves held-out margins towards the matching answers."""
    train, test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    v = train_reps(model, train[:6], 15, epochs=3, batch_size=3, progress=False)
    h = v.hyperparameters
    assert v.method == "reps" and (h["lr"], h["epochs"], h["weight_decay"], h["max_grad_norm"]) == (0.04, 3, 0.0, 1.0)
    assert tuple(h["steering_factors"]) == STEERING_FACTORS and h["bias"] != 0.0
    authors = RepsConfig(layer=15)  # axbench's p_vector_dps configs
    assert (authors.epochs, authors.batch_size, authors.lr, authors.mean_factor) == (18, 6, 0.04, 11.0)
    assert h["scale"] == pytest.approx(11.0 + h["bias"]) and v.norm == pytest.approx(h["scale"] * h["unscaled_norm"], rel=1e-4)
    assert v.history[-1]["loss"] < v.history[0]["loss"]
    assert MarginScorer(model, test[:8]).margin_range(v) > 0


def test_reps_objective_weighs_the_winner_by_the_reference_gap():
    winner, loser, lengths = torch.tensor([-10.0, -10.0]), torch.tensor([-20.0, -20.0]), torch.tensor([10.0, 10.0])
    # gap 5 (the reference prefers the loser): the winner's length-normalised log-prob counts 5 times
    loss = reps_objective(winner, loser, lengths, lengths, torch.tensor([-30.0, -20.0]), torch.tensor([-25.0, -25.0]))
    assert loss.tolist() == pytest.approx([float(torch.nn.functional.softplus(torch.tensor(3.0))),  # -(5 * -1 + 2)
                                           float(torch.nn.functional.softplus(torch.tensor(-1.0)))])  # weight 1: -(-1 + 2)


def test_reps_first_loss_is_the_authors_two_terms_computed_by_hand(model):
    """One step's loss, recomputed through the bridge's own hook, one unpadded sequence at a time:
    the add term (winner: the matching response, each sequence at its own drawn factor) and the sub
    term (winner: the not-matching one, the vector nulled out), both at every position but the
    first, with the initial v (``torch.nn.Linear``'s, seed 0) and b = 0."""
    import random

    pairs = load_pairs("optimism")[:3]
    first = train_reps(model, pairs, 15, epochs=1, batch_size=3, max_response_tokens=8, progress=False).history[0]["loss"]
    torch.manual_seed(0)
    rng = random.Random(0)
    v = torch.nn.Linear(576, 1).weight.detach()[0]
    order = list(range(3))
    rng.shuffle(order)
    factors = [rng.choice(STEERING_FACTORS) for _ in range(6)]  # the matching sequences', then the others'
    seqs = [s for pair in encode_pairs(model, pairs, 8) for s in pair]

    def logp(j: int, edit=None) -> float:
        def hook(resid, hook):
            return torch.cat([resid[:, :1], edit(resid[:, 1:])], dim=1)

        with torch.no_grad():
            logits = model.run_with_hooks(torch.tensor([seqs[j].ids]), fwd_hooks=[("blocks.15.hook_resid_post", hook)] if edit else [])
        lp = logits[0].float().log_softmax(-1)
        return sum(float(lp[p - 1, seqs[j].ids[p]]) for p in range(seqs[j].prompt_len, len(seqs[j].ids)))

    def term(winner: int, loser: int, edit_winner, edit_loser) -> float:
        weight = max(logp(loser) - logp(winner), 1.0)
        inside = weight * logp(winner, edit_winner) / len(seqs[winner].ids) - logp(loser, edit_loser) / len(seqs[loser].ids)
        return float(torch.nn.functional.softplus(torch.tensor(-inside)))

    add = lambda c: lambda h: h + c * v  # noqa: E731
    sub = lambda h: h - torch.relu(h @ v)[..., None] / v.dot(v) * v  # noqa: E731
    terms = [term(2 * i, 2 * i + 1, add(factors[k]), add(factors[3 + k])) for k, i in enumerate(order)]
    terms += [term(2 * i + 1, 2 * i, sub, sub) for i in order]
    assert first == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_null_out_removes_the_vector_only_where_it_points_the_vectors_way():
    v, u = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 3.0])  # u orthogonal to v
    resid = torch.stack([1.5 * v + u, -1.5 * v + u, 1.5 * v + u])[None]
    out = null_out(resid, v)
    assert torch.allclose(out[0, 0], u) and torch.equal(out[0, 1], resid[0, 1])  # the negative side is kept
    assert torch.allclose(null_out(resid, v, bias=-100.0), resid)  # below the bias nothing is removed
    kept = null_out(resid, v, weights=torch.tensor([[0.0, 1.0, 1.0]]))
    assert torch.equal(kept[0, 0], resid[0, 0]) and torch.allclose(kept[0, 2], u)


def test_activation_margin_variant_uses_its_defaults_and_learns(model):
    pairs = load_pairs("power_seeking")[:8]
    v = train_bipo(model, pairs, 15, loss="activation_margin", epochs=20, progress=False)
    assert v.method == "bipo-activation-margin"
    assert v.hyperparameters["lr"] == 0.01 and v.hyperparameters["weight_decay"] == 0.0
    assert v.history[-1]["loss"] < v.history[0]["loss"]
    assert cosine(v.vector, train_caa(model, pairs, 15).vector) > 0.5  # towards the matching answers (0.80)


def test_schedule_warms_up_then_decays():
    factors = [cosine_with_warmup(s, 100, 10) for s in range(100)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
