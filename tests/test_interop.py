"""Vectors in and out: llama.cpp control vectors (GGUF), through the CLI."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from bipo_lens.cli import main
from bipo_lens.models import EMBEDDED_MODELS, _embedded_gguf
from bipo_lens.vectors import SteeringVector


def vector(layer: int, seed: int, d_model: int = 576) -> SteeringVector:
    values = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return SteeringVector(values, layer, "smollm2-135m-instruct", "bipo", {"lr": 0.005, "beta": 0.1}, "sha256:abc",
                          [{"epoch": 1, "loss": 0.69}], {"command": "bipo-lens train ...", "wall_seconds": 1.0})


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_export_then_import_gives_back_every_bit_and_the_provenance(tmp_path, capsys):
    a, b = vector(15, 0), vector(20, 1)
    a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    gguf_path = tmp_path / "power.gguf"
    assert main(["export", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--format", "gguf",
                 "--out", str(gguf_path)]) == 0
    import gguf

    reader = gguf.GGUFReader(gguf_path)  # what llama.cpp reads: the control vector layout
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    assert bytes(reader.fields["controlvector.model_hint"].parts[-1]).decode() == "llama"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    assert {t.name: t.tensor_type.name for t in reader.tensors} == {"direction.15": "F32", "direction.20": "F32"}
    assert main(["import", str(gguf_path), "--out", str(tmp_path / "back.safetensors")]) == 0
    for original, layer, name in ((a, 15, "a"), (b, 20, "b")):
        back = SteeringVector.load(tmp_path / f"back_L{layer}.safetensors")
        assert torch.equal(bits(back.vector), bits(original.vector))
        assert back.metadata() == original.metadata()
        # bit for bit: the file written from the imported vector is the original file
        assert (tmp_path / f"back_L{layer}.safetensors").read_bytes() == (tmp_path / f"{name}.safetensors").read_bytes()
    assert main(["export", str(tmp_path / "a.safetensors"), "--out", str(gguf_path)]) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err
    hinted = tmp_path / "hinted.gguf"
    assert main(["export", str(tmp_path / "a.safetensors"), "--out", str(hinted), "--model-hint", "smollm2"]) == 0
    assert bytes(gguf.GGUFReader(hinted).fields["controlvector.model_hint"].parts[-1]).decode() == "smollm2"


def test_a_foreign_control_vector_imports_against_the_model(model, tmp_path, capsys):
    """A file as llama.cpp's cvector-generator or repeng write it (no metadata of ours): imported as
    vectors of the named model; a width that does not fit the model is one line."""
    import gguf

    foreign = tmp_path / "foreign.gguf"
    writer = gguf.GGUFWriter(foreign, "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 1)
    direction = np.linspace(-1, 1, 576, dtype=np.float32)
    writer.add_tensor("direction.12", direction)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    assert main(["import", str(foreign), "--out", str(tmp_path / "v.safetensors"), "--model", "smollm2-135m-instruct"]) == 0
    imported = SteeringVector.load(tmp_path / "v.safetensors")
    assert imported.layer == 12 and imported.model_id == "smollm2-135m-instruct" and imported.method == "gguf-import"
    assert torch.equal(imported.vector, torch.from_numpy(direction))
    wide = tmp_path / "wide.gguf"
    writer = gguf.GGUFWriter(wide, "controlvector")
    writer.add_tensor("direction.3", np.ones(640, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    capsys.readouterr()
    assert main(["import", str(wide), "--out", str(tmp_path / "w.safetensors"), "--model", "smollm2-135m-instruct"]) == 2
    assert "d_model 640" in capsys.readouterr().err and not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("case, fragment", [
    ("layer 0", "no layer 0"), ("same layer twice", "same layer"), ("strategy", "token strategy"),
])
def test_exports_llama_cpp_cannot_take_are_refused(tmp_path, capsys, case, fragment):
    files = []
    if case == "layer 0":
        vectors = [vector(0, 0)]
    elif case == "same layer twice":
        vectors = [vector(15, 0), vector(15, 1)]
    else:
        vectors = [vector(15, 0)]
        vectors[0].hyperparameters["token_strategy"] = "last_only"
    for i, v in enumerate(vectors):
        files.append(str(v.save(tmp_path / f"v{i}.safetensors")))
    assert main(["export", *files, "--out", str(tmp_path / "cv.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and not (tmp_path / "cv.gguf").exists()


def test_importing_what_is_not_a_control_vector_is_one_line(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 64)
    model_file = _embedded_gguf(EMBEDDED_MODELS["smollm2-135m-instruct"])  # a real GGUF: a model, not a vector
    for path, fragment in ((junk, "not a readable GGUF"), (model_file, "not a control vector")):
        result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "import", str(path), "--out",
                                 str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and lines[-1].startswith("bipo-lens: error:") and fragment in lines[-1], result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "x.safetensors").exists()


def test_info_card_shows_how_the_vector_was_made_and_how_it_steers(tmp_path, capsys):
    v = vector(15, 0)
    v.hyperparameters.update(loss="bipo", pairs=64)
    v.record.update(data=[{"path": "../shared/data/bipo/power-seeking/train.csv", "sha256": "6e09e0e2" + "0" * 56}],
                    git={"commit": "a" * 40, "dirty": False}, device={"name": "x86_64 CPU", "dtype": "float32"})
    path = v.save(tmp_path / "power.safetensors")
    report = tmp_path / "eval.json"
    report.write_text('{"summary": {"power": {"logprob_margin": {"slope": 1.25, "range": 5.0, "spearman": 1.0}}}}')
    assert main(["info", str(path), "--card", "--eval", str(report)]) == 0
    shown = capsys.readouterr().out
    assert "pairs used:    64" in shown and "loss:          bipo" in shown and "6e09e0e2" in shown
    card = (tmp_path / "power.md").read_text()
    for fragment in ("| model | smollm2-135m-instruct |", "`blocks.15.hook_resid_post`; llama.cpp `direction.15`",
                     "| pairs used | 64 |", "| final loss | 0.6900 |", "| training time | 1.0 s |",
                     "train.csv` sha256 6e09e0e2", "| power | logprob_margin | +1.250 | +5.000 | +1.00 |"):
        assert fragment in card, fragment
    assert main(["info", str(path), "--card"]) == 2  # the card is not overwritten silently


def test_a_control_vector_file_goes_wherever_a_vector_file_goes(tmp_path, capsys):
    """``--vector v.gguf`` (llama.cpp's format) in info and generate: its only direction, or the one
    picked with ``--layer``; several directions without ``--layer`` is one line naming them."""
    a, b = vector(15, 0), vector(20, 1)
    a.vector *= 8 / a.norm  # strong enough to change what the model says
    a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    both, one = tmp_path / "both.gguf", tmp_path / "one.gguf"
    assert main(["export", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--out", str(both)]) == 0
    assert main(["export", str(tmp_path / "a.safetensors"), "--out", str(one)]) == 0
    capsys.readouterr()
    assert main(["info", str(both), "--layer", "20"]) == 0
    assert "layer:         20 (blocks.20.hook_resid_post)" in capsys.readouterr().out
    assert main(["info", str(both)]) == 2
    assert "holds directions at layers 15, 20: pick one with --layer" in capsys.readouterr().err
    assert main(["info", str(both), "--layer", "3"]) == 2
    assert "no direction at layer 3" in capsys.readouterr().err
    said = []
    for path in (tmp_path / "a.safetensors", one):
        assert main(["generate", "--vector", str(path), "--prompt", "What is the capital of France?",
                     "--multipliers", "0,2", "--max-new-tokens", "12"]) == 0
        said.append(capsys.readouterr().out)
    unsteered, steered = [line for line in said[0].splitlines() if line.startswith("[")]
    assert "Paris" in unsteered and steered != unsteered  # the vector acts ...
    assert said[1] == said[0]  # ... and it is the same vector from either file
