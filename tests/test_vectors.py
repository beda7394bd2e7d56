import pickle

import pytest
import torch

from bipo_lens import BipoLensError, SteeringVector


def vector(layer=15, d=576):
    return SteeringVector(torch.arange(d, dtype=torch.float32) / d, layer, "smollm2-135m-instruct", "bipo",
                          {"lr": 0.005}, "abc", [{"epoch": 1, "loss": 0.6}])


def test_safetensors_roundtrip_keeps_metadata(tmp_path):
    original = vector()
    loaded = SteeringVector.load(original.save(tmp_path / "v.safetensors"))
    assert torch.equal(loaded.vector, original.vector)
    assert (loaded.layer, loaded.model_id, loaded.method, loaded.hyperparameters, loaded.history) == (
        15, "smollm2-135m-instruct", "bipo", {"lr": 0.005}, [{"epoch": 1, "loss": 0.6}])
    assert loaded.hook_name == "blocks.15.hook_resid_post"


def test_bipo_model_card_checkpoint_roundtrip(tmp_path):
    path = vector(layer=7).save(tmp_path / "v.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"v", "config"} and raw["config"]["layer_idx"] == 7
    torch.save({"v": torch.ones(576), "config": {"layer_idx": 3}}, tmp_path / "theirs.pt")
    theirs = SteeringVector.load(tmp_path / "theirs.pt")
    assert theirs.layer == 3 and theirs.d_model == 576


def test_bare_tensor_needs_a_layer(tmp_path):
    torch.save(torch.ones(576), tmp_path / "bare.pt")
    with pytest.raises(BipoLensError, match="pass --layer"):
        SteeringVector.load(tmp_path / "bare.pt")
    assert SteeringVector.load(tmp_path / "bare.pt", layer=15).layer == 15


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/bipo_lens_pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    import os

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"v": Evil()}, f)
    with pytest.raises(BipoLensError, match="refused"):
        SteeringVector.load(path)
    assert not os.path.exists("/tmp/bipo_lens_pwned")


def test_nan_and_shape_are_checked(tmp_path):
    with pytest.raises(BipoLensError, match="NaN"):
        SteeringVector(torch.tensor([1.0, float("nan")]), 1)
    for name, tensor, message in [("nan.pt", torch.tensor([1.0, float("nan")]), "NaN"),
                                  ("matrix.pt", torch.ones(2, 3), "shape \\[d_model\\], found shape \\[2, 3\\]"),
                                  ("ints.pt", torch.ones(4, dtype=torch.long), "floating-point")]:
        torch.save({"v": tensor, "config": {"layer_idx": 1}}, tmp_path / name)
        with pytest.raises(BipoLensError, match=message):
            SteeringVector.load(tmp_path / name)


def test_no_silent_overwrite(tmp_path):
    path = vector().save(tmp_path / "v.safetensors")
    with pytest.raises(BipoLensError, match="exists"):
        vector(layer=2).save(path)
    assert SteeringVector.load(path).layer == 15


def test_incompatible_model(model):
    with pytest.raises(BipoLensError, match="d_model 640"):
        vector(d=640).check_compatible(model)
    with pytest.raises(BipoLensError, match="layers 0..29"):
        vector(layer=40).check_compatible(model)


def test_vector_of_another_model_with_the_same_width_warns_once(model, capsys):
    vector().check_compatible(model)  # its own model: silent
    assert capsys.readouterr().err == ""
    other = vector()
    other.model_id = "some-other-576-wide-model"
    other.check_compatible(model)
    other.check_compatible(model)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["bipo-lens: warning: a vector trained on some-other-576-wide-model is applied to smollm2-135m-instruct"]


def test_run_records_name_every_changed_file_whole(tmp_path):
    """The git state a record carries: the commit, and each changed path spelled out (tracked edits,
    then new files git does not ignore; ignored outputs are not changes)."""
    import subprocess

    from bipo_lens.records import git_state

    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")
    (tmp_path / "README.md").write_text("one\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["changed"] == []
    (tmp_path / "README.md").write_text("two\n")
    (tmp_path / "new_module.py").write_text("x = 1\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "out.json").write_text("{}")
    assert git_state(tmp_path) == {"commit": clean["commit"], "dirty": True, "changed": ["README.md", "new_module.py"]}
    assert git_state(tmp_path / "runs")["changed"] == ["README.md", "new_module.py"]
    assert git_state("/")["commit"] is None
