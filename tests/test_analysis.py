"""The analyses on the real model: similarity, layer sweeps, transfer maps, composition."""

import json
import time
from dataclasses import replace

import pytest
import torch
from jaxtyping import TypeCheckError

from bipo_lens.analysis import (
    BehaviourConfig,
    SweepConfig,
    compose,
    cosine,
    fit_linear_map,
    logit_lens,
    paired_activations,
    recommend_layer,
    retained_efficacy,
    study_behaviour,
    sweep_layers,
    transfer_vector,
)
from bipo_lens.analysis.claims import scaled
from bipo_lens.analysis.transfer import corresponding_layer, pair_texts
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation import MarginScorer
from bipo_lens.model_names import peek
from bipo_lens.models import load_model, run_from_layer, run_to_layer, unembed
from bipo_lens.pairs import load_pairs, split_pairs
from bipo_lens.steering import steer
from bipo_lens.training import train_caa
from bipo_lens.tokens import encode_pairs
from bipo_lens.scoring import FastPath, PairScorer
from bipo_lens.vectors import SteeringVector


@pytest.fixture(scope="module")
def pairs():
    return split_pairs(load_pairs("power_seeking"), 0.25, seed=0)


@pytest.fixture(scope="module")
def caa15(model, pairs):
    return train_caa(model, pairs[0][:16], 15)


def _random_vector(layer: int, seed: int, norm: float = 4.0) -> SteeringVector:
    v = torch.randn(576, generator=torch.Generator().manual_seed(seed))
    return SteeringVector(v / v.norm() * norm, layer, "smollm2-135m-instruct")


def test_margins_with_vectors_at_two_layers_match_the_hooked_bridge(model, pairs):
    """The scorer's split path (cached layer-5 residual, a raw hook at layer 20) computes what the
    bridge computes with both vectors hooked on blocks.{L}.hook_resid_post."""
    test = pairs[1][:4]
    a, b = _random_vector(5, 0), _random_vector(20, 1, norm=8.0)
    fast = MarginScorer(model, test).logps([(a, 1.5), (b, -1.0)])
    full = PairScorer(model, encode_pairs(model, test), 0, FastPath.naive(), None)
    with torch.no_grad(), steer(model, [a, b], [1.5, -1.0]):
        reference = full.logps(range(len(test)), None, 0.0)
    unsteered = MarginScorer(model, test).logps([])
    assert (fast - unsteered).abs().max() > 0.05  # the vectors do move the log-probs
    torch.testing.assert_close(fast, reference.cpu(), atol=2e-3, rtol=1e-4)


def test_cosine_and_logit_lens(model, caa15):
    assert cosine(caa15, caa15) == pytest.approx(1.0)
    assert cosine(caa15, -caa15.vector) == pytest.approx(-1.0)
    # A direction that the final norm maps onto the unembedding row of " power" promotes " power".
    token = model.tokenizer(" power", add_special_tokens=False)["input_ids"][0]
    row = model.lens_raw.lm_head.weight[token] / model.lens_raw.model.norm.weight
    lens = logit_lens(model, SteeringVector(row.detach().clone(), 15, "smollm2-135m-instruct"), k=5)
    assert " power" in [t for t, _ in lens["promoted"]]
    assert " power" not in [t for t, _ in lens["suppressed"]]
    assert len(lens["promoted"]) == len(lens["suppressed"]) == 5
    promoted, suppressed = [v for _, v in lens["promoted"]], [v for _, v in lens["suppressed"]]
    assert promoted == sorted(promoted, reverse=True) and suppressed == sorted(suppressed)  # strongest first
    assert promoted[-1] > 0 > suppressed[-1]  # centred logits: above the vocabulary's mean, and below it


def test_layer_sweep_writes_one_result_per_layer_and_resumes(model, pairs, tmp_path):
    config = SweepConfig(epochs=1, max_train_pairs=4, max_test_pairs=4)
    first = sweep_layers(model, pairs[0], pairs[1], [22, 27], tmp_path, config, progress=False)
    assert [r["layer"] for r in first] == [22, 27]
    for r in first:
        assert {"bipo", "caa"} <= r.keys() and r["caa"]["norm"] > 0 and r["bipo"]["norm"] > 0
        assert (tmp_path / f"layer_{r['layer']:02d}.json").is_file()
        assert (tmp_path / f"bipo_layer_{r['layer']:02d}.safetensors").is_file()
    assert recommend_layer(first, "caa") in (22, 27)
    (tmp_path / "layer_27.json").write_text("{half a fi")  # a crash mid-write
    stamp = (tmp_path / "layer_22.json").stat().st_mtime_ns
    started = time.time()
    again = sweep_layers(model, pairs[0], pairs[1], [22, 27], tmp_path, config, progress=False)
    assert (tmp_path / "layer_22.json").stat().st_mtime_ns == stamp  # finished layer: read back
    assert json.loads((tmp_path / "layer_27.json").read_text())["layer"] == 27  # broken one: redone
    assert again[0] == first[0]
    assert time.time() - started < 60
    assert "seeds" not in first[0]["key"]["config"]  # one seed keeps the keys of older sweeps
    low, high = first[0]["bipo"]["margin_range_ci"]
    assert low <= first[0]["bipo"]["margin_range"] + 1e-3 and first[0]["bipo"]["margin_range"] - 1e-3 <= high
    # Other settings (here two BiPO seeds) recompute the layer: the mean over seeds and an interval over both.
    seeded = sweep_layers(model, pairs[0], pairs[1], [22], tmp_path, SweepConfig(epochs=1, max_train_pairs=4,
                                                                                 max_test_pairs=4, seeds=2),
                          progress=False)[0]
    assert (tmp_path / "layer_22.json").stat().st_mtime_ns != stamp and seeded["key"]["config"]["seeds"] == 2
    bipo = seeded["bipo"]
    assert bipo["seeds"] == 2 and len(bipo["pair_ranges"]) == 2 and len(bipo["pair_ranges"][0]) == 4
    assert bipo["pair_ranges"][0] != bipo["pair_ranges"][1]  # two trainings, not one copied
    assert bipo["pair_ranges"][0] == pytest.approx(first[0]["bipo"]["pair_ranges"][0])  # seed 0 is the same run
    assert bipo["margin_range"] == pytest.approx(sum(map(sum, bipo["pair_ranges"])) / 8)
    assert bipo["margin_range_ci"][0] <= bipo["margin_range"] <= bipo["margin_range_ci"][1]
    assert seeded["caa"]["seeds"] == 1 and (tmp_path / "bipo_layer_22_seed1.safetensors").is_file()
    # One AdamW step from zero moves every coordinate by about lr, whatever the seed: the norms may tie,
    # so each is checked against its own saved vector, and the two vectors against each other.
    saved = [SteeringVector.load(tmp_path / f"bipo_layer_22{suffix}.safetensors") for suffix in ("", "_seed1")]
    assert bipo["seed_norms"] == pytest.approx([v.norm for v in saved]) and not torch.equal(saved[0].vector, saved[1].vector)
    with pytest.raises(BipoLensError, match="out of range"):
        sweep_layers(model, pairs[0], pairs[1], [30], tmp_path, config)


def test_behaviour_study_tests_the_claims_and_resumes(model, pairs, tmp_path):
    """One behaviour, two BiPO seeds and CAA: the claims' three tests with intervals; asked again with
    the same settings and data it is read back (files untouched), with other settings computed anew."""
    config = BehaviourConfig(layer=22, epochs=1, max_train_pairs=4, max_test_pairs=4, seeds=2)
    found = study_behaviour(model, "power_seeking", pairs[0], pairs[1], tmp_path, config)
    assert found["train_pairs"] == 4 and found["test_pairs"] == 4 and len(found["norms"]["bipo"]) == 2
    for key in ("both_ways", "beats_caa_own_scale", "beats_caa_equal_norm"):
        assert found[key]["seeds"] == 2 and found[key]["pairs"] == 4
        assert found[key]["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    both = found["both_ways"]
    assert both["value"] in (both["up"], both["down"])  # the weaker direction's
    equal = found["beats_caa_equal_norm"]
    assert equal["rival_norms"] == pytest.approx(equal["norms"])  # CAA rescaled to each seed's norm
    assert found["beats_caa_own_scale"]["rival_norms"] == [pytest.approx(found["norms"]["caa"])] * 2
    seeds = [SteeringVector.load(tmp_path / f"power_seeking_bipo_seed{k}.safetensors") for k in (0, 1)]
    assert [v.norm for v in seeds] == pytest.approx(found["norms"]["bipo"]) and seeds[0].layer == 22
    stamp = (tmp_path / "power_seeking.json").stat().st_mtime_ns
    assert study_behaviour(model, "power_seeking", pairs[0], pairs[1], tmp_path, config) == found
    assert (tmp_path / "power_seeking.json").stat().st_mtime_ns == stamp
    other = study_behaviour(model, "power_seeking", pairs[0], pairs[1], tmp_path, replace(config, seeds=1))
    assert other["both_ways"]["verdict"] == "inconclusive" and other["both_ways"]["seeds"] == 1  # one seed: never more
    assert other["norms"]["bipo"][0] == pytest.approx(found["norms"]["bipo"][0])  # seed 0 is the same training
    with pytest.raises(BipoLensError, match="out of range"):
        study_behaviour(model, "x", pairs[0], pairs[1], tmp_path, replace(config, layer=30))


def test_linear_maps_recover_a_known_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 24, generator=g) * torch.linspace(0.5, 3, 24)
    w = torch.randn(24, 32, generator=g)
    y = x @ w + 5.0 + 0.01 * torch.randn(600, 32, generator=g)
    fitted = fit_linear_map(x, y, "lstsq", ridge=1e-6)
    assert fitted.r2_test > 0.999
    torch.testing.assert_close(fitted.weight, w, atol=2e-2, rtol=2e-2)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=g))
    rotated = fit_linear_map(x, 3.0 * x @ q, "procrustes")
    torch.testing.assert_close(rotated.weight, 3.0 * q, atol=1e-3, rtol=1e-3)
    assert fitted.rank == rotated.rank == 24
    # Fewer texts than dimensions: the map keeps what the rows determine (the rotation, within their
    # span) and sends the rest to zero, where a full SVD would rotate it by an arbitrary completion.
    few = fit_linear_map(x[:16], 3.0 * x[:16] @ q, "procrustes")
    basis = torch.linalg.svd((x[:16] - x[:16].mean(0)).T, full_matrices=False).U[:, :15]  # centred: 15 directions
    inside, outside = basis @ torch.randn(15, generator=g), torch.randn(24, generator=g)
    outside -= basis @ (basis.T @ outside)
    assert few.rank == 15
    torch.testing.assert_close(inside @ few.weight, 3.0 * inside @ q, atol=1e-3, rtol=1e-3)
    assert (outside @ few.weight).norm() < 1e-4 * outside.norm()
    assert few.unseen_share(inside) < 1e-6 and few.unseen_share(outside) > 1 - 1e-6 and rotated.unseen_share(outside) < 1e-6
    assert few.unseen_share(inside + outside) == pytest.approx(float(outside.pow(2).sum() / (inside + outside).pow(2).sum()), rel=1e-4)
    with pytest.raises((BipoLensError, TypeCheckError)):  # the shape check fires first under beartype
        fit_linear_map(x, y[:10])
    with pytest.raises(BipoLensError, match="unknown map"):
        fit_linear_map(x, y, "cca")
    assert corresponding_layer(15, 30, 18) == 9 and corresponding_layer(29, 30, 18) == 17
    # Bootstrap refits: each seed a different resample, R^2 on the texts it left out, all near the true map.
    refits = [fit_linear_map(x, y, "lstsq", ridge=1e-6, seed=k, bootstrap=True) for k in range(3)]
    assert not torch.equal(refits[0].weight, refits[1].weight) and all(f.r2_test > 0.999 for f in refits)
    assert torch.equal(refits[2].weight, fit_linear_map(x, y, "lstsq", ridge=1e-6, seed=2, bootstrap=True).weight)
    for f in refits:
        torch.testing.assert_close(f.weight, w, atol=3e-2, rtol=3e-2)
    assert torch.equal(fitted.weight, fit_linear_map(x, y, "lstsq", ridge=1e-6).weight)  # without: refitted on all rows


def test_lstsq_chooses_its_ridge_by_cross_validation_over_whole_texts():
    from bipo_lens.analysis.transfer import RIDGES

    g = torch.Generator().manual_seed(1)
    x = torch.randn(800, 24, generator=g)
    w = torch.randn(24, 16, generator=g)
    clean = fit_linear_map(x, x @ w + 0.01 * torch.randn(800, 16, generator=g))
    assert clean.ridge == min(RIDGES) and clean.r2_test > 0.999  # plenty of clean rows: the least shrinkage
    # Few noisy texts in many dimensions: a small ridge fits the noise; the chosen one predicts the
    # held-out texts better than the least and the old fixed 1e-2 do.
    x, w = torch.randn(120, 96, generator=g), torch.randn(96, 16, generator=g) / 10
    y = x @ w + torch.randn(120, 16, generator=g)
    chosen = fit_linear_map(x, y)
    assert chosen.ridge >= 0.1
    assert chosen.r2_test > fit_linear_map(x, y, ridge=1e-2).r2_test > fit_linear_map(x, y, ridge=min(RIDGES)).r2_test
    assert fit_linear_map(x, y, ridge=0.5).ridge == 0.5 and fit_linear_map(x, y, "procrustes").ridge is None
    # A text's two rows are one fold's: here they are copies and the target is noise, so scoring a row
    # whose twin was fitted would reward memorising it (the least ridge); whole texts find no signal.
    x = torch.randn(60, 200, generator=g).repeat_interleave(2, 0)
    noise = torch.randn(60, 8, generator=g).repeat_interleave(2, 0)
    assert fit_linear_map(x, noise).ridge == max(RIDGES)
    assert fit_linear_map(x, noise, seed=3, bootstrap=True).ridge == max(RIDGES)  # and a resample's repeats
    with pytest.raises(BipoLensError, match="positive"):
        fit_linear_map(x, noise, ridge=0.0)
    with pytest.raises(BipoLensError, match="at least two fitting texts"):  # one text: nothing to hold out
        fit_linear_map(x[:2], noise[:2])


def test_a_cross_family_transfer_must_hold_both_ways_through_one_map():
    from bipo_lens.analysis import claims

    way = lambda lo, hi: {"verdict": claims.verdict((lo, hi), claims.TRANSFER_KEEPS, 3)[0],  # noqa: E731
                          "why": claims.verdict((lo, hi), claims.TRANSFER_KEEPS, 3)[1]}
    good, bad, unsure = way(0.6, 0.9), way(0.1, 0.3), way(0.3, 0.7)
    assert claims.transfers_both_ways({"lstsq": (good, good), "procrustes": (bad, bad)})[0] == "reproduced"
    assert claims.transfers_both_ways({"lstsq": (good, bad), "procrustes": (bad, good)})[0] == "not reproduced"
    found, why = claims.transfers_both_ways({"lstsq": (bad, unsure), "procrustes": (good, unsure)})
    assert found == "inconclusive" and why == ("lstsq: there interval below 0.5, back interval contains 0.5; "
                                               "procrustes: there interval above 0.5, back interval contains 0.5")
    assert claims.transfers_both_ways({})[0] == "inconclusive"


def test_quantised_sibling_and_direct_transfer(model, caa15, pairs):
    sibling = load_model("smollm2-135m-instruct@int4", device="cpu")
    assert sibling.lens_info.model_id == "smollm2-135m-instruct@int4"
    original = model.lens_raw.model.layers[3].mlp.down_proj.weight
    rounded = sibling.lens_raw.model.layers[3].mlp.down_proj.weight
    assert 0 < (original - rounded).abs().max() < 0.5 * original.abs().max()
    assert rounded[0].unique().numel() <= 15  # 4 bits: at most 15 levels per output row
    moved = transfer_vector(caa15, sibling)
    assert torch.equal(moved.vector, caa15.vector) and moved.hyperparameters["transferred_from"] == "smollm2-135m-instruct"
    native = train_caa(sibling, pairs[0][:16], 15)  # the sibling's own vector: close to, but not, the original
    assert 0.9 < cosine(native, caa15) < 0.99999
    test = pairs[1][:4]
    found = retained_efficacy(sibling, moved, native, test)
    on_sibling = MarginScorer(sibling, test)
    assert found["transferred_range"] == pytest.approx(on_sibling.margin_range(moved), abs=1e-4)
    assert found["native_range"] == pytest.approx(on_sibling.margin_range(native), abs=1e-4)
    assert found["transferred_range"] != pytest.approx(MarginScorer(model, test).margin_range(caa15), abs=1e-3)
    assert found["retained"] == pytest.approx(found["transferred_range"] / found["native_range"])
    assert 0.5 < found["retained"] < 2 and found["retained"] != pytest.approx(1.0, abs=1e-4)
    assert found["retained_ci"][0] <= found["retained"] <= found["retained_ci"][1]
    assert found["transferred_range_at_native_norm"] == pytest.approx(
        on_sibling.margin_range(scaled(moved, native.norm)), abs=1e-4)
    # The native direction made 3x longer retains more than 1 by length alone; at the native norm it is the native vector.
    longer = retained_efficacy(sibling, scaled(native, 3 * native.norm), native, test, scorer=on_sibling)
    assert longer["retained"] > 1.5 and longer["retained_at_native_norm"] == pytest.approx(1.0, abs=1e-4)
    assert longer["retained_at_native_norm_ci"][0] <= 1.0 + 1e-4 and longer["retained_at_native_norm_ci"][1] >= 1.0 - 1e-4
    with pytest.raises(BipoLensError, match="@int2"):
        load_model("smollm2-135m-instruct@int9")


def test_llama_cpp_quantised_sibling_is_on_the_gguf_grid_and_still_answers(model):
    """``@q4_0`` is llama.cpp's Q4_0 (record gguf-py-legacy-types-match-llama-cpp: byte for byte): every
    linear weight a Q4_0 block value, the tied embedding Q8_0, and the model still knows Paris."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    from bipo_lens.generation import generate

    sibling = load_model("smollm2-135m-instruct@q4_0", device="cpu")
    assert sibling.lens_info.model_id == "smollm2-135m-instruct@q4_0"

    def on_grid(weight: torch.Tensor, kind: T) -> bool:
        rows = weight.detach().numpy()
        return bool((dequantize(quantize(rows, kind), kind) == rows).all())

    for layer, part in ((0, "self_attn.q_proj"), (15, "mlp.down_proj"), (29, "mlp.up_proj")):
        rounded = sibling.lens_raw.model.layers[layer].get_submodule(part).weight
        original = model.lens_raw.model.layers[layer].get_submodule(part).weight
        assert on_grid(rounded, T.Q4_0) and not on_grid(original, T.Q4_0)  # the default model is Q4_1
        blocks = rounded.reshape(-1, 32)  # a scale per 32 weights along the input: at most 16 levels each
        assert max(len(set(b.tolist())) for b in blocks[:200]) <= 16
        assert 0 < (original - rounded).abs().max() < 0.5 * original.abs().max()
    assert on_grid(sibling.lens_raw.get_input_embeddings().weight, T.Q8_0)
    answer = generate(sibling, "What is the capital of France?", [], [0.0], max_new_tokens=16)[0]
    assert "Paris" in answer, answer
    with pytest.raises(BipoLensError, match="@q4_0, @q4_1, @q5_0, @q5_1, @q8_0"):
        load_model("smollm2-135m-instruct@q4_k")


def test_cross_model_map_to_gemma(model, gemma, caa15, pairs):
    assert peek("gemma-3-270m") == gemma.lens_info.shape  # the embedded table, checked against the file
    tokens = torch.tensor([gemma.tokenizer("Question: Would you like more power?\nAnswer: No")["input_ids"]])
    with torch.no_grad():  # sliced runs agree with the bridge (Gemma mixes sliding and full attention)
        torch.testing.assert_close(unembed(gemma, run_from_layer(gemma, run_to_layer(gemma, tokens, 9), 9)),
                                   gemma(tokens), atol=1e-3, rtol=1e-4)
    with pytest.raises(BipoLensError, match="linear map"):
        transfer_vector(caa15, gemma, 9)
    texts = pair_texts(load_pairs("optimism")[:40])
    source, target = paired_activations(model, texts, 15), paired_activations(gemma, texts, 9)
    assert source.shape == (160, 576) and target.shape == (160, 640)
    fitted = fit_linear_map(source, target)
    assert fitted.r2_train > fitted.r2_test and fitted.r2_test > 0.3
    moved = transfer_vector(caa15, gemma, 9, fitted)
    assert moved.d_model == 640 and moved.layer == 9 and moved.model_id == "gemma-3-270m"
    moved.check_compatible(gemma)
    torch.testing.assert_close(moved.vector, caa15.vector @ fitted.weight)  # the map, applied
    # Mapped, SmolLM2's power-seeking CAA points where Gemma's own CAA points, and steers the same way.
    native = train_caa(gemma, pairs[0][:16], 9)
    found = retained_efficacy(gemma, moved, native, pairs[1][:4])
    assert found["cosine_to_native"] > 0.3 and found["native_range"] > 0 and found["transferred_range"] > 0


def test_composition_adds_two_different_vectors(model, caa15, pairs):
    """Each grid cell is the model steered by both weighted vectors at once: at one layer, exactly
    their weighted sum applied as one vector, scored on each behaviour's own held-out pairs."""
    test, other_test = pairs[1][:4], load_pairs("optimism")[:4]
    optimism = train_caa(model, load_pairs("optimism")[8:24], 15)
    found = compose(model, {"a": caa15, "b": optimism}, {"a": test, "b": other_test}, weights=[-1.0, 0.0, 1.0])
    assert found["cosines"]["a|b"] == pytest.approx(cosine(caa15, optimism)) and abs(found["cosines"]["a|b"]) < 0.9
    scorers = {"a": MarginScorer(model, test), "b": MarginScorer(model, other_test)}
    for cell in [g for g in found["grid"] if (g["weights"]["a"], g["weights"]["b"]) in {(1.0, 1.0), (-1.0, 1.0), (0.0, -1.0)}]:
        wa, wb = cell["weights"]["a"], cell["weights"]["b"]
        summed = SteeringVector(wa * caa15.vector + wb * optimism.vector, 15, caa15.model_id)
        for k, scorer in scorers.items():
            expected = float(scorer.margins([(summed, 1.0)]).mean())
            assert cell["margins"][k] == pytest.approx(expected, abs=2e-3), (cell, k)
    grid = {(g["weights"]["a"], g["weights"]["b"]): g["margins"]["a"] for g in found["grid"]}
    assert grid[(1.0, 1.0)] != pytest.approx(grid[(1.0, 0.0)], abs=1e-2)  # b does reach a's pairs
    zero = SteeringVector(torch.zeros(576), 20, "smollm2-135m-instruct")
    alone = compose(model, {"a": caa15, "zero": zero}, {"a": test, "zero": test}, weights=[0.0, 1.0])
    assert alone["behaviours"]["a"]["retained"] == pytest.approx(1.0, abs=1e-4)
    assert alone["behaviours"]["a"]["crosstalk"] == pytest.approx(0.0, abs=1e-4)
    assert alone["behaviours"]["a"]["retained_ci"] == pytest.approx([1.0, 1.0], abs=1e-4)  # a zero partner: no spread
    for m in found["behaviours"].values():
        assert m["retained_ci"][0] <= m["retained"] <= m["retained_ci"][1]
    with pytest.raises(BipoLensError, match="at least two"):
        compose(model, {"a": caa15}, {"a": test})
    # Seeds: seed k of each composed together; a second seed equal to the first changes no mean.
    seeded = compose(model, {"a": caa15, "b": optimism}, {"a": test, "b": other_test}, weights=[0.0, 1.0],
                     seeds={"a": [caa15], "b": [optimism]})
    for k, m in seeded["behaviours"].items():
        assert m["seeds"] == 2 and m["retained"] == pytest.approx(found["behaviours"][k]["retained"], abs=1e-4)
        assert m["retained_ci"][0] <= m["retained"] <= m["retained_ci"][1]
    with pytest.raises(BipoLensError, match="same number of further seeds"):
        compose(model, {"a": caa15, "b": optimism}, {"a": test, "b": other_test}, seeds={"a": [caa15], "b": []})


def test_methods_compared_at_their_own_norm_and_at_the_references(model, pairs, caa15, tmp_path):
    """The same direction at half the norm: half the range at its own norm, the reference's range at
    the reference's norm (difference 0); another direction differs; the bars are drawn."""
    from bipo_lens import plots
    from bipo_lens.analysis.baselines import compare_methods

    other = SteeringVector(vector=torch.roll(caa15.vector, 1), layer=15, model_id=caa15.model_id, method="pca")
    rows = compare_methods(MarginScorer(model, pairs[1][:5]),
                           {"caa": caa15, "pca": scaled(caa15, caa15.norm / 2), "reps": other}, "caa")
    ref, half, rolled = rows
    assert [r["method"] for r in rows] == ["caa", "pca", "reps"] and ref["reference_minus_this_ci"] is None
    assert ref["range"] > 0 and ref["range_ci"][0] <= ref["range"] <= ref["range_ci"][1]
    assert half["norm"] == pytest.approx(ref["norm"] / 2, rel=1e-5) and 0 < half["range"] < ref["range"]
    assert half["range_at_reference_norm"] == pytest.approx(ref["range"], abs=1e-3)
    assert half["reference_minus_this_ci"][0] <= 0 <= half["reference_minus_this_ci"][1]
    assert abs(rolled["cosine_to_reference"]) < 0.5 and rolled["range_at_reference_norm"] < ref["range"]
    assert plots.method_bars(rows, tmp_path / "bars.png").stat().st_size > 10_000


def test_methods_compared_at_equal_fluency(model, pairs, caa15, tmp_path):
    """A vector blown up 16x stops giving language where CAA does not: its collapse multiplier is
    found and it is read at a smaller multiplier (or none); each shift is the per-pair margin shift
    at the chosen multiplier; the third panel is drawn. The claim reads seeds the same way."""
    from bipo_lens import plots
    from bipo_lens.analysis import claims
    from bipo_lens.analysis.baselines import compare_at_equal_fluency, compare_methods
    from bipo_lens.evaluation import evaluate

    test = pairs[1][:5]
    vectors = {"caa": caa15, "reps": scaled(caa15, caa15.norm * 16)}
    scorer = MarginScorer(model, test)
    answered = evaluate(model, vectors, test, [-1.0, 0.0, 1.0, 2.0], max_questions=5, max_generations=5,
                        max_new_tokens=16, progress=False, scorer=scorer)["results"]
    caa, blown = compare_at_equal_fluency(scorer, answered, vectors, "caa")
    assert blown["collapse_multiplier"]["+"] == 1.0 and blown["multiplier_at_budget"] is None and blown["shift"] is None
    assert caa["multiplier_at_budget"] in (1.0, 2.0) and caa["reference_minus_this"] == 0.0
    expected = claims.pair_shifts(scorer, caa15, caa["multiplier_at_budget"])
    assert caa["shift"] == pytest.approx(sum(expected) / len(expected)) and caa["shift"] > 0
    assert caa["shift_ci"][0] <= caa["shift"] <= caa["shift_ci"][1]
    assert blown["reference_minus_this_ci"] is None and blown["budget_resampled"] is None
    # A weaker twin answering exactly as CAA does: read where CAA is in every resample of the answered
    # questions, and CAA moves the margin further there; resamples whose answers leave room for a
    # larger multiplier widen the interval beyond the one held at the chosen multipliers.
    quarter = scaled(caa15, caa15.norm / 4)
    twinned = answered + [{**r, "vector": "twin"} for r in answered if r["vector"] == "caa"]
    twin = compare_at_equal_fluency(scorer, twinned, {"caa": caa15, "twin": quarter}, "caa")[1]
    reads = twin["budget_resampled"]["read_at"]
    assert reads[0] == reads[1] and sum(reads[0].values()) == 2000 and twin["budget_resampled"]["questions"] == 5
    assert twin["multiplier_at_budget"] == caa["multiplier_at_budget"] and twin["reference_minus_this"] > 0
    fixed = twin["reference_minus_this_ci_at_fixed_budget"]
    assert 0 < fixed[0] <= twin["reference_minus_this"] <= fixed[1] and twin["reference_minus_this_ci"][0] > 0
    assert len(reads[0]) == 1 or twin["reference_minus_this_ci"][1] > fixed[1]
    rows = compare_methods(scorer, vectors, "caa")
    assert plots.method_bars(rows, tmp_path / "bars.png", fluency=[caa, blown]).stat().st_size > 10_000
    # The claim, with seeds: each read at its own multiplier within the budget, ours minus theirs.
    tie = claims.beats_at_equal_fluency(scorer, answered, [("caa", caa15)] * 2, ("caa", caa15))
    assert tie["value"] == 0 and tie["ci"] == [0, 0] and tie["seeds"] == 2 and tie["verdict"] == "inconclusive"
    assert tie["multipliers"] == {"ours": [caa["multiplier_at_budget"]] * 2, "theirs": caa["multiplier_at_budget"]}
    lost = claims.beats_at_equal_fluency(scorer, answered, [("caa", quarter)] * 2, ("caa", caa15))
    weaker = claims.pair_shifts(scorer, quarter, caa["multiplier_at_budget"])
    assert lost["value"] == pytest.approx(sum(weaker) / len(weaker) - caa["shift"]) and lost["ci"][1] < 0
    top = caa["multiplier_at_budget"] == 2.0  # within the budget at the largest multiplier: a lower bound
    assert lost["unbounded"] == {"ours": [top, top], "theirs": top}
    assert lost["verdict"] == ("inconclusive" if top else "not reproduced") and ("lower bound" in lost["why"]) == top
    assert lost["brackets"]["theirs"] == ((2.0, None) if top else (1.0, 2.0))
    if not top:  # the verdict held with ours read at its first multiplier beyond the budget, too
        beyond = claims.pair_shifts(scorer, quarter, 2.0)
        assert lost["at_bracket_edge"]["value"] == pytest.approx(sum(beyond) / len(beyond) - caa["shift"])
        assert lost["at_bracket_edge"]["ci"][1] < 0
    none = claims.beats_at_equal_fluency(scorer, answered, [("reps", vectors["reps"])], ("caa", caa15))
    assert none["verdict"] == "inconclusive" and "no multiplier within the perplexity budget" in none["why"]


def test_claims_read_intervals_against_the_paper_side(model, pairs, caa15):
    """Claims on known answers: a CAA vector beats itself at a quarter of its norm (interval above 0;
    one seed is inconclusive, two seeds reproduce), steers both ways, keeps all of its efficacy
    when 'transferred' to the same model (ratio and interval exactly 1), and half its norm keeps
    less than all of it."""
    from bipo_lens.analysis import claims

    scorer = MarginScorer(model, pairs[1][:5])
    quarter = scaled(caa15, caa15.norm / 4)
    assert quarter.norm == pytest.approx(caa15.norm / 4, rel=1e-5) and cosine(quarter, caa15) == pytest.approx(1.0, abs=1e-5)
    one = claims.beats(scorer, [caa15], [quarter])
    assert one["value"] > 0 and one["ci"][0] > 0 and one["verdict"] == "inconclusive" and "one training seed" in one["why"]
    two = claims.beats(scorer, [caa15, caa15], [quarter, quarter])
    assert two["verdict"] == "reproduced" and two["seeds"] == 2 and two["pairs"] == 5
    assert claims.beats(scorer, [quarter] * 2, [caa15] * 2)["verdict"] == "not reproduced"
    both = claims.steers_both_ways(scorer, [caa15, caa15])
    assert both["up"] > 0 and both["down"] > 0 and both["up_ci"][0] > 0 and both["down_ci"][0] > 0
    assert both["verdict"] == "reproduced" and both["ci"][0] == min(both["up_ci"][0], both["down_ci"][0])
    same = claims.retained(scorer, [caa15, caa15], [caa15, caa15])
    assert same["value"] == pytest.approx(1.0) and same["ci"] == pytest.approx([1.0, 1.0])
    assert same["verdict"] == "reproduced"  # 1 > 0.5
    half = claims.retained(scorer, [scaled(caa15, caa15.norm / 2)], [caa15])
    assert 0 < half["value"] < 1 and half["ci"][0] <= half["value"] <= half["ci"][1]
    direction = claims.retained_direction(scorer, [scaled(caa15, caa15.norm / 2)] * 2, [caa15] * 2)
    assert direction["value"] == pytest.approx(1.0, abs=1e-4) and direction["verdict"] == "reproduced"  # same direction


def test_best_layer_claim_counts_the_layers_it_cannot_tell_apart():
    """Per-pair ranges as data: a clear middle winner, a tie with a shallow layer, a shallow winner."""
    from bipo_lens.analysis import claims

    noise = [0.01 * ((i * 7) % 5 - 2) for i in range(20)]
    grid = lambda level, sign=1, seeds=1: [[level + sign * e for e in noise]] * seeds  # noqa: E731
    clear = claims.best_layer({2: grid(0.1), 15: grid(1.0), 28: grid(0.2)}, 30)
    assert clear["value"] == 15 and clear["tied"] == [15] and clear["seeds"] == 1 and clear["pairs"] == 20
    assert clear["verdict"] == "inconclusive" and "middle half" in clear["why"] and "one training seed" in clear["why"]
    assert claims.best_layer({2: grid(0.1, seeds=3), 15: grid(1.0, seeds=3)}, 30)["verdict"] == "reproduced"
    tie = claims.best_layer({2: grid(1.0, -1), 15: grid(1.0)}, 30)
    assert tie["tied"] == [2, 15] and "outside the middle half" in tie["why"]
    shallow = claims.best_layer({2: grid(2.0, seeds=2), 15: grid(1.0, seeds=2)}, 30)
    assert shallow["value"] == 2 and shallow["verdict"] == "not reproduced" and "no layer in the middle half" in shallow["why"]
    assert claims.verdict((0.1, 0.3), 0.0, 2) == ("reproduced", "interval above 0")
    assert claims.verdict((0.1, 0.3), 0.0, 1) == ("inconclusive", "interval above 0, but one training seed")
    assert claims.verdict((-0.3, -0.1), 0.0, 3)[0] == "not reproduced"
    assert claims.verdict((-0.1, 0.3), 0.0, 3)[0] == "inconclusive" and claims.verdict(None, 0.0, 3)[0] == "inconclusive"
